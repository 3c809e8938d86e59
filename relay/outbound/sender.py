"""Outbound HTTP for deliveries: the one sender, which calls a URL only after the guard passes it.

The sender puts the pieces together, each in its own module:

* `relay.outbound.guard` judges the URL and resolves it to checked addresses (again before every attempt:
  a name that was public at subscribe time may point elsewhere now);
* `relay.outbound.origins` keeps one origin from taking every thread (slots) and leaves an origin that
  keeps timing out alone for a while (the breaker);
* `relay.outbound.transport` sends the POST with `requests` to exactly the checked address, with the
  URL's host as `Host` and TLS name, the request target byte for byte, redirects not followed,
  at most `max_response_bytes` of the answer read, and the whole attempt bounded by `timeout`;
* `relay.outbound.errors` is the class tree of what can go wrong; `relay.core.redaction` the forms of a
  URL fit for logs. No message or exception raised here contains the URL's query string.

The DNS lookup runs inside the attempt's deadline. The names other modules use from here
(`check_target`, `redact_url`, `mask_url`, `scrub`, `MAX_URL_LENGTH`, …) are re-exported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from urllib.parse import urlsplit

from relay.core.redaction import MASK, mask_url, redact_url, scrub
from relay.outbound.errors import (
    BreakerOpen,
    ConnectError,
    ConnectionBroken,
    DeliveryError,
    DeliveryTimeout,
    NetworkError,
    OriginBusy,
    ProtocolError,
    SenderClosed,
    TLSError,
    TransportError,
)
from relay.outbound.guard import (
    MAX_URL_LENGTH,
    IPAddress,
    Resolver,
    Target,
    Unresolvable,
    bracketed,
    check_target,
    inspect_target,
    is_public_address,
    origin_of,
    parse_host_literal,
    system_resolver,
)
from relay.outbound.origins import OriginGate
from relay.outbound.transport import Reply, Transport

__all__ = [
    "MASK",
    "MAX_URL_LENGTH",
    "BreakerOpen",
    "ConnectError",
    "ConnectionBroken",
    "DeliveryError",
    "DeliveryTimeout",
    "IPAddress",
    "NetworkError",
    "OriginBusy",
    "ProtocolError",
    "Reply",
    "Resolver",
    "Sender",
    "SenderClosed",
    "TLSError",
    "Target",
    "TransportError",
    "check_target",
    "is_public_address",
    "mask_url",
    "parse_host_literal",
    "redact_url",
    "scrub",
    "system_resolver",
]

# Checked addresses tried in turn when connecting to one fails (say an IPv6 address on a host
# without IPv6 routing); all of them share the attempt's one deadline.
_ADDRESSES_TRIED = 4
# Seconds a TCP connect (and TLS handshake) may take, within the attempt's timeout: an address that
# drops SYNs is given up on this soon, not after the whole answer timeout (a flow may take 30 s to
# answer; a connection to a live host does not).
CONNECT_TIMEOUT = 5.0


class _ResolveTimeout(Exception):
    """The resolver did not answer before the attempt's deadline (not an OSError: not "unwell")."""


class Sender:
    """The process's one pooled HTTP client for deliveries; safe to call from many threads."""

    def __init__(
        self,
        *,
        allow_private: bool,
        timeout: float,
        user_agent: str,
        resolver: Resolver | None = None,
        max_response_bytes: int = 65536,
        pool_size: int = 100,
        verify: bool | str = True,
        origin_slots: int = 32,
        slot_wait: float = 2.0,
        stall: float = 1.0,
        breaker_timeouts: int = 5,
        breaker_window: float = 60.0,
        breaker_cooloff: float = 30.0,
        breaker_first_timeouts: int = 1,
        lane_slots: int | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_response_bytes < 0 or pool_size < 1:
            raise ValueError("max_response_bytes must be >= 0 and pool_size >= 1")
        if isinstance(verify, str) and not os.path.exists(verify):
            raise ValueError(f"no CA bundle at {verify}")
        self._allow_private = allow_private
        self._timeout = timeout
        self._resolver = resolver or system_resolver
        self._closed = False
        self._gate = OriginGate(
            cap=origin_slots,
            wait=slot_wait,
            stall=stall,
            trip=breaker_timeouts,
            window=breaker_window,
            cooloff=breaker_cooloff,
            # Origins not known to answer share a quarter of the threads unless told otherwise.
            lane=lane_slots if lane_slots is not None else max(1, pool_size // 4),
            first_trip=breaker_first_timeouts,
        )
        # Lookups run here so the attempt can stop waiting at its deadline; a lookup that hangs
        # keeps its thread, the attempt does not.
        self._dns = ThreadPoolExecutor(max_workers=8, thread_name_prefix="relay-dns")
        self._transport = Transport(
            user_agent=user_agent,
            max_response_bytes=max_response_bytes,
            pool_size=pool_size,
            verify=verify,
            connect_timeout=min(connect_timeout, timeout),
        )

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def answers(self, url: str) -> bool:
        """Whether the URL's origin is known to answer (its last attempt got an answer, its breaker
        is closed): attempts to the others are doubtful, and wait their turn (relay.delivery)."""
        origin = origin_of(url)
        return origin is not None and self._gate.answers(origin)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """POST `body` to `url` after the guard passes it; raises `TargetRefused`, a `DeliveryError`
        subclass, or `OriginBusy` (nothing sent, not an attempt)."""
        if self._closed:
            raise SenderClosed("the HTTP client has been closed")
        origin = origin_of(url)
        if origin is None:
            return self._post(url, body, headers)  # the guard refuses it
        probe = self._gate.acquire(origin, f"{bracketed(origin[1])}:{origin[2]}")
        timed_out = False
        took: float | None = None
        started = time.monotonic()
        try:
            reply = self._post(url, body, headers)
            took = time.monotonic() - started
            return reply
        except DeliveryTimeout:
            timed_out = True
            raise
        finally:
            self._gate.release(origin, probe, timed_out, took)

    def _resolve_by(self, deadline: float) -> Resolver:
        def resolve(host: str, port: int) -> list[str]:
            future = self._dns.submit(self._resolver, host, port)
            try:
                return future.result(timeout=max(deadline - time.monotonic(), 0.001))
            except FutureTimeout:
                future.cancel()
                raise _ResolveTimeout() from None

        return resolve

    def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        deadline = time.monotonic() + self._timeout
        try:
            target, addresses = inspect_target(url, self._allow_private, self._resolve_by(deadline))
        except Unresolvable:
            raise ConnectError(f"the host name {urlsplit(url).hostname} could not be resolved right now") from None
        except _ResolveTimeout:
            raise DeliveryTimeout(
                f"the host name {urlsplit(url).hostname} was not resolved within {self._timeout:g} s"
            ) from None
        failure: ConnectError | None = None
        for address in addresses[:_ADDRESSES_TRIED]:
            try:
                return self._transport.post(replace(target, address=address), body, headers, deadline, self._timeout)
            except ConnectError as exc:
                # Only a failed TCP connect is safe to try at the next address: nothing was sent.
                if time.monotonic() >= deadline:
                    raise
                failure = exc
        assert failure is not None
        raise failure

    def close(self) -> None:
        """Close pooled connections and stop the deadline thread; later posts raise `SenderClosed`."""
        self._closed = True
        self._transport.close()
        # Not waited for: a lookup that hangs keeps its thread until the resolver gives up; the
        # idle ones end as soon as they see the shutdown.
        self._dns.shutdown(wait=False, cancel_futures=True)
