"""Outbound HTTP for deliveries: the address guard, and the one pooled client that obeys it.

Notification URLs come from strangers, so a URL is judged twice: when it is subscribed, and
again before every attempt. The attempt then connects to exactly the address it judged, so a
name that resolves somewhere public at check time and somewhere private a moment later (DNS
rebinding) cannot reach the private side. The `Host` header, TLS SNI and certificate check still
use the URL's own host name.

Other promises kept here, because receivers and logs depend on them:

* the request target (path and query) goes on the wire exactly as the subscriber wrote it;
  Power Automate callback URLs carry a signature in the query that breaks on any re-encoding;
* redirects are never followed;
* `timeout` bounds the whole attempt, not just each socket operation, and at most
  `max_response_bytes` of an answer are read;
* no message or exception raised here contains the URL's query string, where the secrets live;
* one origin (scheme, host, port) cannot take every thread: attempts to it share a few slots, an
  attempt that cannot get one soon is handed back (`OriginBusy`) instead of waiting, and an
  origin that keeps timing out is not connected to for a while (a circuit breaker);
* the DNS lookup runs inside the attempt's deadline.
"""

from __future__ import annotations

import errno
import heapq
import http.client
import http.cookiejar
import ipaddress
import itertools
import os
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias
from urllib.parse import SplitResult, urlsplit

import requests
import urllib3.exceptions as u3
from urllib3.util import parse_url
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .errors import RelayError, TargetRefused

__all__ = [
    "MAX_URL_LENGTH", "DeliveryError", "IPAddress", "OriginBusy", "Reply", "Resolver", "Sender", "Target",
    "check_target", "is_public_address", "parse_host_literal", "redact_url", "system_resolver",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

# (host, port) -> IP address strings, in the order to try them.
Resolver: TypeAlias = Callable[[str, int], list[str]]

MAX_URL_LENGTH = 16_384

_DEFAULT_PORTS = {"http": 80, "https": 443}

# Address ranges refused on top of what `ipaddress` calls non-global, spelled out so the list
# does not shift with the Python version's idea of "private".
_DENIED_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8",          # "this network"; connecting to 0.0.0.0 reaches the local host
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10",      # shared address space (carrier-grade NAT)
    "127.0.0.0/8",
    "169.254.0.0/16",     # link-local, including the instance metadata service 169.254.169.254
    "168.63.129.16/32",   # Azure platform address: DNS, health probes, WireServer
    "192.0.0.0/24",       # IETF protocol assignments
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation
    "198.18.0.0/15",      # benchmarking
    "192.88.99.0/24",     # former 6to4 relay anycast
    "224.0.0.0/4",        # multicast
    "240.0.0.0/4",        # reserved, including the broadcast address
))
_DENIED_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/96",              # unspecified, loopback and the deprecated IPv4-compatible form
    "64:ff9b:1::/48",     # local-use NAT64
    "100::/64",           # discard-only
    "2001::/23",          # IETF protocol assignments, including Teredo 2001::/32
    "2001:db8::/32", "3fff::/20",  # documentation
    "fc00::/7",           # unique local
    "fe80::/10",          # link-local
    "fec0::/10",          # site-local (deprecated)
    "ff00::/8",           # multicast
))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]*")
_DNS_NAME = re.compile(
    r"(?=.{1,253}\.?\Z)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?")
# One part of an IPv4 address as inet_aton reads it: hex, octal (leading 0) or decimal.
_V4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
# WHATWG: a host whose last label is a number is meant as an IPv4 address, valid or not.
_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")


# ---- address checks (no I/O) --------------------------------------------------------------------

def parse_host_literal(host: str) -> IPAddress | None:
    """The IP address a URL host spells, in any form a resolver or inet_aton accepts; None for a name.

    Besides dotted decimal and IPv6 (bracketed or not) this reads the forms inet_aton still
    accepts, which resolvers hand to it before ever asking DNS: `2130706433`, `0x7f000001`,
    `0177.0.0.1`, `0x7f.0.0.1`, `127.1`, `127.0.1`, and mixtures.
    """
    text = host
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if ":" not in text:
            return None
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _parse_ipv4_loosely(text)


def _parse_ipv4_loosely(text: str) -> ipaddress.IPv4Address | None:
    if text.endswith("."):
        # "127.0.0.1." still means 127.0.0.1 to a browser-style parser; reading it as an address
        # is the cautious side.
        text = text[:-1]
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.fullmatch(p) for p in parts):
        return None
    values = [_v4_part_value(p) for p in parts]
    *leading, last = values
    # Each leading part is one byte; the last one fills every byte that remains.
    if any(v > 0xFF for v in leading) or last >= 256 ** (5 - len(values)):
        return None
    number = last
    for index, value in enumerate(leading):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _v4_part_value(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part)


def is_public_address(ip: IPAddress) -> bool:
    """True only for an ordinary, globally routed unicast address a webhook may be sent to."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            # Mapped, 6to4 and NAT64 addresses lead to the IPv4 address inside them.
            return is_public_address(embedded)
        if any(ip in net for net in _DENIED_V6):
            return False
    elif any(ip in net for net in _DENIED_V4):
        return False
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


# ---- resolution and the target check ------------------------------------------------------------

# getaddrinfo errors that mean "this name has no address", as opposed to "DNS is unwell".
_NO_SUCH_NAME = {code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
                 if code is not None}


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver; [] when the name does not exist.

    Other resolver failures (a DNS outage) raise `OSError`, so they can be retried later.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        if exc.errno in _NO_SUCH_NAME:
            return []
        raise
    addresses: list[str] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    return addresses


@dataclass(frozen=True)
class Target:
    """A URL that passed the guard, and the one address it may be reached at."""
    url: str
    scheme: str
    host: str     # as in the URL, lower-cased, without IPv6 brackets
    port: int
    address: str  # the IP to connect to


class _Unresolvable(Exception):
    """The resolver failed (rather than answering "no such name"); callers decide what that means."""


def check_target(url: str, *, allow_private: bool, resolver: Resolver = system_resolver) -> Target:
    """Judge a notification URL; raises `TargetRefused` with a short reason, or returns where to connect.

    Without `allow_private` only https is accepted and every address the host resolves to must be
    public. With it (local work only) http and non-public addresses are fine too.
    """
    try:
        target, _addresses = _inspect(url, allow_private, resolver)
    except _Unresolvable:
        raise TargetRefused("the host name could not be resolved right now") from None
    return target


def _inspect(url: str, allow_private: bool, resolver: Resolver) -> tuple[Target, tuple[str, ...]]:
    """Everything `check_target` does, also returning every acceptable address in resolver order."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if not _PRINTABLE_ASCII.fullmatch(url):
        # Anything else would have to be re-encoded before sending, and then the request would not
        # be the one the subscriber wrote (or signed).
        raise TargetRefused("the URL must be printable ASCII: percent-encode the path and query, "
                            "and write international host names in punycode")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("the URL could not be parsed (check the host and port)") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise TargetRefused("the URL scheme must be " + " or ".join(schemes))
    if not url[len(parts.scheme):].startswith("://"):
        raise TargetRefused("the URL must start with " + parts.scheme + "://")
    if "@" in parts.netloc:
        raise TargetRefused("the URL must not contain a user name or password")
    host = parts.hostname
    if not host:
        raise TargetRefused("the URL has no host")
    if port == 0:
        raise TargetRefused("the URL's port must not be 0")
    port = port or _DEFAULT_PORTS[parts.scheme]
    _check_sendable(url, host, port, parts.scheme)

    literal = parse_host_literal(host)
    if parts.netloc.startswith("[") and not isinstance(literal, ipaddress.IPv6Address):
        raise TargetRefused("the URL's bracketed host is not an IPv6 address")
    if literal is not None:
        if isinstance(literal, ipaddress.IPv6Address) and literal.scope_id:
            raise TargetRefused("IPv6 zone identifiers are not supported")
        found: list[IPAddress] = [literal]
    else:
        if not _DNS_NAME.fullmatch(host) or _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
            raise TargetRefused("the URL's host is neither a valid host name nor a valid IP address")
        if not allow_private and (host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost")):
            raise TargetRefused("the host name refers to this machine")
        try:
            answers = resolver(host, port)
        except OSError as exc:
            raise _Unresolvable(host) from exc
        if not answers:
            raise TargetRefused("the host name does not resolve to any address")
        found = []
        for answer in answers:
            try:
                found.append(ipaddress.ip_address(answer))
            except ValueError:
                raise TargetRefused("the host name resolved to something that is not an IP address") from None

    if not allow_private and not all(is_public_address(ip) for ip in found):
        raise TargetRefused("the address is not public" if literal is not None
                            else "the host name resolves to an address that is not public")
    addresses = tuple(dict.fromkeys(_dialable(ip) for ip in found))
    return Target(url=url, scheme=parts.scheme, host=host, port=port, address=addresses[0]), addresses


def _check_sendable(url: str, host: str, port: int, scheme: str) -> None:
    """Refuse a URL the sender's own parser (requests' prepare, urllib3's parse_url) cannot send,
    or reads with another host or port than `urlsplit` did.

    `urlsplit` is lenient: `https://[2606:4700:4700::1111]!/` has a host for it, while requests
    raises `InvalidURL` on every attempt. Judging with the parser that sends means a URL that
    passes here can be sent, and the host checked is the host connected to.
    """
    try:
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        sent = parse_url(prepared.url or "")
    except (requests.RequestException, u3.LocationParseError, ValueError):
        # The exception texts quote the URL (and its query): only our own words go out.
        raise TargetRefused("the URL could not be parsed (check the host and port)") from None
    sent_host = (sent.host or "").lower()
    if sent_host.startswith("[") and sent_host.endswith("]"):
        sent_host = sent_host[1:-1]
    if sent.scheme != scheme or sent_host != host or (sent.port or _DEFAULT_PORTS[scheme]) != port:
        raise TargetRefused("the URL's host or port is ambiguous (URL parsers disagree about it)")


def _dialable(ip: IPAddress) -> str:
    # An IPv4-mapped address is an IPv4 destination; dialing it as such works without dual-stack.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _request_target(url: str, parts: SplitResult) -> str:
    """The path and query exactly as written in the URL (only the fragment, never sent, is dropped)."""
    rest = url[len(parts.scheme) + 3 + len(parts.netloc):]
    rest = rest.split("#", 1)[0]
    return rest if rest.startswith("/") else "/" + rest


def redact_url(url: str) -> str:
    """The URL fit for logs: its query, fragment and any user name or password replaced."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    head, tail = url[:cut], url[cut:]
    marker = ""
    if tail.startswith("?"):
        marker = "?…redacted"
    elif tail:
        marker = "#…redacted"
    scheme_end = head.find("://")
    if scheme_end >= 0:
        authority_start = scheme_end + 3
        slash = head.find("/", authority_start)
        authority_end = len(head) if slash < 0 else slash
        at = head.rfind("@", authority_start, authority_end)
        if at >= 0:
            head = head[:authority_start] + "…redacted@" + head[at + 1:]
    return head + marker


MASK = "***"


def mask_url(url: str) -> str:
    """The URL as reads and lists show it after the 201 that created it: every query value (a
    Power Automate `sig` starts the flow), a fragment and a password replaced by `***`, parameter
    names kept so people can still tell callbacks apart. A query part without `=` may itself be a
    token, so it is masked whole."""
    cut = url.find("#")
    head, fragment = (url, None) if cut < 0 else (url[:cut], url[cut + 1:])
    base, sep, query = head.partition("?")
    scheme_end = base.find("://")
    if scheme_end >= 0:
        start = scheme_end + 3
        slash = base.find("/", start)
        end = len(base) if slash < 0 else slash
        at = base.rfind("@", start, end)
        colon = base.find(":", start, at) if at >= 0 else -1
        if colon >= 0:
            base = base[:colon + 1] + MASK + base[at:]
    if sep:
        parts = [p.split("=", 1)[0] + "=" + MASK if "=" in p else (MASK if p else p) for p in query.split("&")]
        base += "?" + "&".join(parts)
    if fragment is not None:
        base += "#" + (MASK if fragment else "")
    return base


def scrub(text: str | None, url: str) -> str | None:
    """`text` (an error, a reason) with every query value of `url` masked: what is stored or
    logged about an attempt must not carry the callback's `sig`, whatever produced the text."""
    if not text:
        return text
    query = urlsplit(url).query
    for part in sorted((p.split("=", 1)[-1] for p in query.split("&")), key=len, reverse=True):
        if len(part) >= 4:  # shorter values (`1`, `true`) are not secrets and are everywhere
            text = text.replace(part, MASK)
    return text


# ---- delivery -----------------------------------------------------------------------------------

class DeliveryError(RelayError):
    """An attempt that got no HTTP answer; `kind` says roughly why, `message` says it for people.

    Kind "breaker": nothing was sent because the origin's circuit breaker is open (it timed out
    repeatedly just before); it is worth retrying on the schedule like a timeout.
    """

    KINDS = ("timeout", "connect", "reset", "tls", "breaker", "other")

    def __init__(self, kind: str, message: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown delivery error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message


class OriginBusy(RelayError):
    """Nothing was sent: every slot of the origin is taken by attempts that are not finishing.
    Not an attempt; the caller puts the delivery back in its queue for a little while."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Reply:
    """The receiver's answer; `body` is cut at the sender's `max_response_bytes`."""
    status: int
    headers: dict[str, str]  # keys lower-cased
    body: bytes


# ---- fairness between origins --------------------------------------------------------------------

Origin: TypeAlias = tuple[str, str, int]  # (scheme, host, port), the unit of fairness


@dataclass
class _OriginState:
    cond: threading.Condition      # on the gate's one lock; wakes only this origin's waiters
    in_flight: int = 0
    waiters: int = 0
    full_since: float = 0.0        # when the slots last became all taken
    timeouts: deque[float] = field(default_factory=deque)
    open_until: float = 0.0        # breaker: no connection before this; 0 = closed
    probing: bool = False          # breaker half-open: one attempt is finding out


# Origins remembered before idle ones are swept (each remembered one had a recent timeout).
_ORIGINS_KEPT = 4096


class _OriginGate:
    """Per-origin slots and circuit breaker, shared by every thread of one sender.

    Slots: at most `cap` attempts to one origin at a time. A thread that finds them all taken
    waits only while the origin is making progress (a slot was freed within `stall` seconds) and
    at most `wait` seconds; otherwise `OriginBusy` hands the delivery back at once, so a receiver
    that never answers holds `cap` threads and no more.

    Breaker: `trip` timeouts within `window` seconds open it for `cooloff` seconds, during which
    attempts fail at once with kind "breaker" without connecting. After that one attempt (a probe)
    goes through; its success closes the breaker, another timeout opens it again.
    """

    def __init__(self, *, cap: int, wait: float, stall: float, trip: int, window: float, cooloff: float,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.cap, self.wait, self.stall = cap, wait, stall
        self.trip, self.window, self.cooloff = trip, window, cooloff
        self._now = now
        self._lock = threading.Lock()
        self._origins: dict[Origin, _OriginState] = {}

    def acquire(self, origin: Origin, label: str) -> bool:
        """Take a slot; True when this attempt is the breaker's probe. Raises `OriginBusy` or a
        "breaker" `DeliveryError` when nothing may be sent now."""
        with self._lock:
            now = self._now()
            state = self._origins.get(origin)
            if state is None:
                if len(self._origins) >= _ORIGINS_KEPT:
                    self._forget_idle(now)
                state = self._origins[origin] = _OriginState(threading.Condition(self._lock))
            give_up_at = now + self.wait
            while True:
                if state.open_until:
                    if now < state.open_until or state.probing:
                        raise DeliveryError("breaker", f"not sent: {label} timed out {self.trip} times within "
                                                       f"{self.window:g} s, so it is left alone for a while")
                    state.probing = True  # half-open: this attempt finds out whether it is back
                    self._take(state, now)
                    return True
                if state.in_flight < self.cap:
                    self._take(state, now)
                    return False
                stalled_at = state.full_since + self.stall
                if now >= stalled_at or now >= give_up_at:
                    raise OriginBusy(f"not sent: {state.in_flight} attempts to {label} are in flight and "
                                     f"none finished within {self.stall:g} s")
                # While this thread waits, the entry stays (release keeps entries with waiters).
                state.waiters += 1
                try:
                    state.cond.wait(min(stalled_at, give_up_at) - now)
                finally:
                    state.waiters -= 1
                now = self._now()

    def _forget_idle(self, now: float) -> None:
        """Drop origins with nothing in flight whose timeouts and breaker have all expired."""
        for origin, state in list(self._origins.items()):
            if (not state.in_flight and not state.waiters and now >= state.open_until
                    and not state.probing and all(t <= now - self.window for t in state.timeouts)):
                del self._origins[origin]

    def _take(self, state: _OriginState, now: float) -> None:
        state.in_flight += 1
        if state.in_flight >= self.cap:
            state.full_since = now

    def release(self, origin: Origin, probe: bool, timed_out: bool) -> None:
        with self._lock:
            state = self._origins[origin]
            now = self._now()
            state.in_flight -= 1
            if timed_out:
                state.timeouts.append(now)
            while state.timeouts and state.timeouts[0] <= now - self.window:
                state.timeouts.popleft()
            was_open = bool(state.open_until)
            if probe:
                state.probing = False
                if timed_out:
                    state.open_until = now + self.cooloff
                else:
                    state.open_until = 0.0
                    state.timeouts.clear()
            elif timed_out and not state.open_until and len(state.timeouts) >= self.trip:
                state.open_until = now + self.cooloff
            if bool(state.open_until) != was_open:
                state.cond.notify_all()  # waiters learn of the breaker now, not at their deadline
            else:
                state.cond.notify()  # one slot freed: one waiter
            if not (state.in_flight or state.waiters or state.timeouts or state.open_until):
                del self._origins[origin]  # keep the table to origins with something to remember


def _origin_of(url: str) -> Origin | None:
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None  # the guard refuses it with a reason
    return parts.scheme, host, port or _DEFAULT_PORTS.get(parts.scheme, 0)


class _ResolveTimeout(Exception):
    """The resolver did not answer before the attempt's deadline (not an OSError: not "unwell")."""


# Headers the sender owns: the pinned Host, and the framing of the body it sends.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_READ_CHUNK = 16_384
# Checked addresses tried in turn when connecting to one fails (say an IPv6 address on a host
# without IPv6 routing); all of them share the attempt's one deadline.
_ADDRESSES_TRIED = 4


class Sender:
    """The process's one pooled HTTP client for deliveries; safe to call from many threads."""

    def __init__(self, *, allow_private: bool, timeout: float, user_agent: str,
                 resolver: Resolver | None = None, max_response_bytes: int = 65536,
                 pool_size: int = 100, verify: bool | str = True,
                 origin_slots: int = 32, slot_wait: float = 2.0, stall: float = 1.0,
                 breaker_timeouts: int = 5, breaker_window: float = 60.0,
                 breaker_cooloff: float = 30.0) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_response_bytes < 0 or pool_size < 1:
            raise ValueError("max_response_bytes must be >= 0 and pool_size >= 1")
        if isinstance(verify, str) and not os.path.exists(verify):
            raise ValueError(f"no CA bundle at {verify}")
        self._allow_private = allow_private
        self._timeout = timeout
        self._user_agent = user_agent
        self._resolver = resolver or system_resolver
        self._max_response_bytes = max_response_bytes
        self._deadlines = _Deadlines()
        self._closed = False
        self._gate = _OriginGate(cap=origin_slots, wait=slot_wait, stall=stall, trip=breaker_timeouts,
                                 window=breaker_window, cooloff=breaker_cooloff)
        # Lookups run here so the attempt can stop waiting at its deadline; a lookup that hangs
        # keeps its thread, the attempt does not.
        self._dns = ThreadPoolExecutor(max_workers=8, thread_name_prefix="relay-dns")

        session = _DeliverySession()
        # No proxies or .netrc credentials from the environment: the connection goes to the
        # checked address, and nothing of ours is handed to a stranger.
        session.trust_env = False
        # Cookies set by one receiver must not pile up in a process-wide jar.
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        adapter = _PinnedAdapter(_tls_pool_kwargs(verify), pool_connections=max(pool_size, 100),
                                 pool_maxsize=pool_size)
        session.adapters.clear()
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self._session = session

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """POST `body` to `url` after the guard passes it; raises `TargetRefused`, `DeliveryError`,
        or `OriginBusy` (nothing sent, not an attempt)."""
        if self._closed:
            raise DeliveryError("other", "the HTTP client has been closed")
        origin = _origin_of(url)
        if origin is None:
            return self._post(url, body, headers)  # the guard refuses it
        probe = self._gate.acquire(origin, f"{_bracketed(origin[1])}:{origin[2]}")
        timed_out = False
        try:
            return self._post(url, body, headers)
        except DeliveryError as exc:
            timed_out = exc.kind == "timeout"
            raise
        finally:
            self._gate.release(origin, probe, timed_out)

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
            target, addresses = _inspect(url, self._allow_private, self._resolve_by(deadline))
        except _Unresolvable:
            raise DeliveryError("connect", f"the host name {urlsplit(url).hostname} could not be "
                                           "resolved right now") from None
        except _ResolveTimeout:
            raise DeliveryError("timeout", f"the host name {urlsplit(url).hostname} was not resolved "
                                           f"within {self._timeout:g} s") from None
        failure: DeliveryError | None = None
        for address in addresses[:_ADDRESSES_TRIED]:
            try:
                return self._attempt(replace(target, address=address), body, headers, deadline)
            except DeliveryError as exc:
                # Only a failed TCP connect is safe to try at the next address: nothing was sent.
                if exc.kind != "connect" or time.monotonic() >= deadline:
                    raise
                failure = exc
        assert failure is not None
        raise failure

    def close(self) -> None:
        """Close pooled connections and stop the deadline thread; later posts fail with kind "other"."""
        self._closed = True
        self._session.close()
        self._deadlines.stop()
        self._dns.shutdown(wait=False, cancel_futures=True)

    def _attempt(self, target: Target, body: bytes, headers: Mapping[str, str], deadline: float) -> Reply:
        request = self._prepare(target, body, headers)
        exchange = _Exchange(target, _request_target(target.url, urlsplit(target.url)), deadline)
        self._deadlines.watch(exchange)
        _local.exchange = exchange
        response: requests.Response | None = None
        try:
            remaining = max(deadline - time.monotonic(), 0.001)
            response = self._session.send(request, stream=True, timeout=(remaining, remaining),
                                          allow_redirects=False, proxies={})
            if exchange.expired:
                # Cutting the socket can end a header block early, and http.client takes that EOF
                # for the end of the headers: what was parsed is not the receiver's answer.
                raise _delivery_error(TimeoutError(), target, True, self._timeout)
            status = response.status_code
            reply_headers = {name.lower(): value for name, value in response.headers.items()}
            return Reply(status, reply_headers, _read_capped(response.raw, self._max_response_bytes))
        except (requests.RequestException, u3.HTTPError, http.client.HTTPException, OSError) as exc:
            raise _delivery_error(exc, target, exchange.expired, self._timeout) from None
        finally:
            _local.exchange = None
            if response is not None:
                # Closes the connection unless the whole answer was read (then it is back in the pool).
                response.close()
            exchange.finish()

    def _prepare(self, target: Target, body: bytes, headers: Mapping[str, str]) -> requests.PreparedRequest:
        merged: CaseInsensitiveDict[str] = CaseInsensitiveDict(
            {"User-Agent": self._user_agent, "Accept": "*/*",
             # The body is only kept for the delivery log; reading it compressed would let a small
             # answer inflate past max_response_bytes.
             "Accept-Encoding": "identity"})
        for name, value in headers.items():
            if name.lower() not in _OWN_HEADERS:
                merged[name] = value
        host = _bracketed(target.host)
        merged["Host"] = host if target.port == _DEFAULT_PORTS[target.scheme] else f"{host}:{target.port}"
        request = requests.PreparedRequest()
        request.prepare(method="POST", url=target.url, headers=merged, data=body)
        # prepare() "requotes" the URL. The connection sends the exchange's own copy of the request
        # target regardless; keep the URL as given here too so nothing else sees a rewritten one.
        request.url = target.url
        return request


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _read_capped(raw: Any, limit: int) -> bytes:
    """Up to `limit` bytes of the answer body; a body that breaks off keeps what arrived.

    The status has been received by then, so the receiver's verdict stands: a stalled, reset or
    endless body ends the read (the deadline thread sees to the stalled kind), it does not turn
    the attempt into an error.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        # One byte past the limit tells a body that fits from one that was cut.
        while size <= limit:
            chunk = raw.read(min(_READ_CHUNK, limit + 1 - size), decode_content=False)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (u3.HTTPError, http.client.HTTPException, OSError):
        pass
    return b"".join(chunks)[:limit]


def _tls_pool_kwargs(verify: bool | str) -> dict[str, Any]:
    if verify is False:
        return {"cert_reqs": "CERT_NONE"}
    if verify is True:
        return {"cert_reqs": "CERT_REQUIRED", "ca_certs": DEFAULT_CA_BUNDLE_PATH}
    if os.path.isdir(verify):
        return {"cert_reqs": "CERT_REQUIRED", "ca_cert_dir": verify}
    return {"cert_reqs": "CERT_REQUIRED", "ca_certs": verify}


# ---- error classification -----------------------------------------------------------------------

def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests wraps urllib3, which wraps socket and ssl)."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__, *current.args]
        pending.extend(e for e in linked if isinstance(e, BaseException))


def _delivery_error(exc: BaseException, target: Target, expired: bool, timeout: float) -> DeliveryError:
    causes = list(_causes(exc))

    def has(*types: type[BaseException]) -> bool:
        return any(isinstance(c, types) for c in causes)

    where = f"{_bracketed(target.host)}:{target.port}"
    if target.address != target.host:
        where += f" ({target.address})"
    if expired:
        error = DeliveryError("timeout", f"no complete answer from {where} within {timeout:g} s")
    elif has(u3.NewConnectionError, ConnectionRefusedError):
        # NewConnectionError subclasses ConnectTimeoutError, so it is told apart before timeouts.
        error = DeliveryError("connect", f"could not connect to {where}: {_describe(causes)}")
    elif has(TimeoutError, u3.TimeoutError, requests.Timeout):
        error = DeliveryError("timeout", f"no answer from {where} within {timeout:g} s")
    elif has(ssl.SSLCertVerificationError, ssl.CertificateError):
        error = DeliveryError("tls", f"TLS with {where} failed: {_describe(causes)}")
    elif has(ssl.SSLEOFError, ssl.SSLZeroReturnError):
        error = DeliveryError("reset", f"{where} closed the TLS connection without answering")
    elif has(ssl.SSLError, u3.SSLError, requests.exceptions.SSLError):
        error = DeliveryError("tls", f"TLS with {where} failed: {_describe(causes)}")
    elif has(ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.IncompleteRead):
        error = DeliveryError("reset", f"the connection to {where} broke: {_describe(causes)}")
    elif has(http.client.HTTPException, u3.HeaderParsingError):
        # Not the server's text: it could echo anything back, the query included.
        error = DeliveryError("other", f"{where} did not answer with valid HTTP")
    elif any(_is_unreachable(c) for c in causes):
        error = DeliveryError("connect", f"could not connect to {where}: {_describe(causes)}")
    elif has(u3.ProtocolError, requests.ConnectionError):
        error = DeliveryError("reset", f"the connection to {where} broke")
    else:
        error = DeliveryError("other", f"the exchange with {where} failed ({type(exc).__name__})")
    return _scrubbed(error, target.url)


def _is_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED)


def _describe(causes: list[BaseException]) -> str:
    """A few words about the lowest-level cause, taken from socket or ssl only: urllib3's and
    requests' own texts quote the request URL."""
    for candidate in causes:
        if isinstance(candidate, ssl.SSLCertVerificationError) and candidate.verify_message:
            return str(candidate.verify_message)
    for candidate in causes:
        if isinstance(candidate, ssl.SSLError) and candidate.reason:
            return str(candidate.reason)
    for candidate in causes:
        if isinstance(candidate, http.client.RemoteDisconnected):
            return "the server closed the connection without answering"
    for candidate in causes:
        if (isinstance(candidate, OSError) and not isinstance(candidate, requests.RequestException)
                and candidate.strerror):
            return str(candidate.strerror)
    return type(causes[-1]).__name__


def _scrubbed(error: DeliveryError, url: str) -> DeliveryError:
    # The messages above are built from our own words plus socket/ssl text, so this should never
    # change anything; it is the last line of defence for the one thing that must not leak.
    query = urlsplit(url).query
    if query and query in error.message:
        return DeliveryError(error.kind, error.message.replace(query, "…redacted"))
    return error


# ---- the pinned transport -----------------------------------------------------------------------
#
# requests decides which pool serves a request, and urllib3 re-encodes the request target and
# connects to the pool's host. An `_Exchange`, visible to the code running on the posting thread,
# carries what this attempt checked: the adapter picks a pool keyed by the checked address (and by
# the URL host as TLS server name), and the connection writes the URL's own request target.

_local = threading.local()


class _Exchange:
    """One attempt: its pinned target, its request target, and the sockets to cut at its deadline."""

    def __init__(self, target: Target, request_target: str, deadline: float) -> None:
        self.target = target
        self.request_target = request_target
        self.deadline = deadline
        self._lock = threading.Lock()
        # Duplicates of the attempt's sockets: shutting a duplicate down stops a blocked read or TLS
        # handshake on the original from another thread, at any stage of the exchange.
        self._twins: dict[HTTPConnection, socket.socket] = {}
        self._expired = False
        self._finished = False

    @property
    def expired(self) -> bool:
        with self._lock:
            return self._expired

    def attach(self, conn: HTTPConnection, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if self._finished or conn in self._twins:
                return
            twin = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
            self._twins[conn] = twin
            conn._relay_exchange = self  # type: ignore[attr-defined]
            if self._expired:
                _cut(twin)

    def release(self, conn: HTTPConnection) -> None:
        """The connection goes back to the pool: from now on it belongs to whoever takes it next."""
        with self._lock:
            twin = self._twins.pop(conn, None)
        if twin is not None:
            twin.close()

    def expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._expired = True
            for twin in self._twins.values():
                _cut(twin)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            twins, self._twins = list(self._twins.values()), {}
        for twin in twins:
            twin.close()


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _current_exchange() -> _Exchange:
    exchange: _Exchange | None = getattr(_local, "exchange", None)
    if exchange is None:
        raise RuntimeError("the pinned transport is only used from Sender.post")
    return exchange


class _Deadlines:
    """One daemon thread per sender that cuts off attempts still running at their deadline.

    Socket timeouts bound each read, but a receiver trickling a byte at a time could hold an
    attempt (and a delivery thread) for ever; this bounds the attempt as a whole.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Exchange]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def watch(self, exchange: _Exchange) -> None:
        with self._cond:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="relay-outbound-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (exchange.deadline, next(self._order), exchange))
            if self._heap[0][2] is exchange:
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for exchange in due:
                exchange.expire()


class _PinnedConnectionMixin:
    """Connects where the exchange was checked to go, and sends the exchange's request target."""

    host: str
    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        _current_exchange().attach(self, sock)  # type: ignore[arg-type]
        return sock

    def putrequest(self, method: str, url: str, skip_host: bool = False,
                   skip_accept_encoding: bool = False) -> None:
        exchange = _current_exchange()
        if ipaddress.ip_address(self.host.strip("[]")) != ipaddress.ip_address(exchange.target.address):
            raise RuntimeError("connection does not lead to the checked address")
        exchange.attach(self, self.sock)  # type: ignore[arg-type]  # a reused connection
        # `url` is urllib3's re-encoded placeholder (see _PinnedAdapter.request_url); the wire gets
        # the request target byte for byte as the subscriber wrote it.
        super().putrequest(method, exchange.request_target,  # type: ignore[misc]
                           skip_host=skip_host, skip_accept_encoding=skip_accept_encoding)


class _PinnedHTTPConnection(_PinnedConnectionMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedConnectionMixin, HTTPSConnection):
    pass


class _ReleasingPoolMixin:
    def _put_conn(self, conn: HTTPConnection | None) -> None:
        exchange: _Exchange | None = getattr(conn, "_relay_exchange", None)
        if conn is not None and exchange is not None:
            exchange.release(conn)
            conn._relay_exchange = None  # type: ignore[attr-defined]
        super()._put_conn(conn)  # type: ignore[misc]


class _PinnedHTTPPool(_ReleasingPoolMixin, HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(_ReleasingPoolMixin, HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class _PinnedAdapter(HTTPAdapter):
    def __init__(self, tls: dict[str, Any], **kwargs: Any) -> None:
        self._tls = tls
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: Any = None, cert: Any = None) -> HTTPConnectionPool:
        target = _current_exchange().target
        pool_kwargs: dict[str, Any] = {}
        if target.scheme == "https":
            # Pools are keyed by every one of these, so each (address, port, server name) has its own.
            pool_kwargs = {**self._tls, "server_hostname": target.host}
        return self.poolmanager.connection_from_host(target.address, target.port, target.scheme,
                                                     pool_kwargs=pool_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # TLS settings are fixed per sender and part of the pool key; requests would otherwise
        # rewrite them on pools other threads are using.
        pass

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        # What urllib3 and requests get to see (and may put in log lines and exception text):
        # the path only. The real target is written by _PinnedConnectionMixin.putrequest.
        path, query_mark, _query = _current_exchange().request_target.partition("?")
        return path + query_mark + ("redacted" if query_mark else "")


class _DeliverySession(requests.Session):
    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # Never follow a redirect. This also keeps Session.send from reading a 3xx body whole
        # while it prepares the redirect it would not send anyway.
        return None
