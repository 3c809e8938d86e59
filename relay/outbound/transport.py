"""The pinned transport: one attempt's POST, sent by `requests` to the address the guard checked.

`requests` stays the client (a `Session`, with its hooks and redirect rules), and its transport
adapter is where the connection is chosen. `PinnedAdapter` overrides only the adapter's public
`send` and `close`, and uses only urllib3's public connection API:

* the connection is a `urllib3.connection.HTTPConnection` / `HTTPSConnection` whose host is the
  checked IP address; for https its documented `server_hostname` is the URL's host, so SNI and
  the certificate check (OpenSSL's own hostname check, which urllib3 leaves on when
  `assert_hostname` is not given; it then checks `server_hostname`) use the name, not the IP;
* the `Host` header is the URL's host (the request carries it, so urllib3 adds none);
* the request target goes to `HTTPConnection.request` exactly as the subscriber wrote it. A pool's
  `urlopen` would re-encode it (`%2f` becomes `%2F`, `|` becomes `%7C`, `%zz` becomes `%25zz`),
  and Power Automate callback URLs carry a signature over their query, so the adapter keeps its
  own small set of idle keep-alive connections instead of a urllib3 pool;
* urllib3's connect and read timeouts bound each socket operation to what is left of the attempt.

Nothing here overrides an underscore method of urllib3 or requests (tests/test_outbound.py
checks that), so a urllib3 release that changes its internals cannot silently unpin an attempt.
"""

from __future__ import annotations

import errno
import heapq
import http.client
import http.cookiejar
import itertools
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions as u3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.response import BaseHTTPResponse
from urllib3.util.ssl_ import create_urllib3_context
from urllib3.util.ssl_match_hostname import CertificateError

from relay.outbound.errors import (
    ConnectError,
    ConnectionBroken,
    DeliveryError,
    DeliveryTimeout,
    ProtocolError,
    SenderClosed,
    TLSError,
)
from relay.outbound.guard import DEFAULT_PORTS, Target, bracketed, request_target

__all__ = ["PinnedAdapter", "Reply", "Transport"]

# Headers the sender owns: the pinned Host, and the framing of the body it sends.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_READ_CHUNK = 16_384


class _NoQueryInLogs(logging.Filter):
    """urllib3 names the request target in some log lines (a malformed header block is a warning
    with `url=`); the target goes to it as written, query included, so those lines lose the query
    and their long path segments (Slack, Teams and Discord put their token there) here
    (`logging.Filter` is the public way to rewrite another library's records)."""

    _QUERY = re.compile(r"\?[^\s)'\"]*")
    # A segment after a single `/` (the `//` of a scheme is followed by a host, which stays).
    _PATH_TOKEN = re.compile(r"(?:(?<=^/)|(?<=[^/]/))[^/\s?#)'\"]{16,}")

    def _clean(self, text: str) -> str:
        return self._PATH_TOKEN.sub("***", self._QUERY.sub("?redacted", text))

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(a) if isinstance(a, str) else a for a in record.args)
        return True


# Filters on a logger see only that logger's own records, so each urllib3 module logging a
# request gets it.
for _name in ("urllib3.connection", "urllib3.connectionpool", "urllib3.response"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _NoQueryInLogs) for f in _logger.filters):
        _logger.addFilter(_NoQueryInLogs())


@dataclass
class Reply:
    """The receiver's answer; `body` is cut at the sender's `max_response_bytes`."""

    status: int
    headers: dict[str, str]  # keys lower-cased
    body: bytes


_Key = tuple[str, str, int, str]  # (scheme, address, port, TLS server name or "")


# ---- one attempt and its deadline ---------------------------------------------------------------


class Exchange:
    """One attempt: the checked target, its deadline, and the socket the deadline thread may cut."""

    def __init__(self, target: Target, deadline: float) -> None:
        self.target = target
        self.request_target = request_target(target.url)
        self.deadline = deadline
        self.connected = False  # a connection was made: from here on the request may have been sent
        self.held: tuple[_Key, Line] | None = None  # set by the adapter once there is an answer
        self._lock = threading.Lock()
        # The twin of the connection's socket (see `Line`) while this attempt uses it: shutting it
        # down stops a blocked read on the original from another thread.
        self._twin: socket.socket | None = None
        self._expired = False
        self._finished = False

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    @property
    def expired(self) -> bool:
        with self._lock:
            return self._expired

    def attach(self, twin: socket.socket | None) -> None:
        """The connection whose socket `twin` duplicates carries this attempt from now on."""
        if twin is None:
            return
        with self._lock:
            if self._finished or self._twin is not None:
                return
            self._twin = twin
            if self._expired:
                _cut(twin)

    def detach(self) -> None:
        """The connection is no longer this attempt's (about to be closed, or back among the idle
        ones): from here on the deadline thread cannot cut it. The twin stays its line's."""
        with self._lock:
            self._twin = None

    def expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._expired = True
            if self._twin is not None:
                _cut(self._twin)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
        self.detach()


def _cut(sock: socket.socket) -> None:
    # A TLS handshake needs no cut: CPython's do_handshake holds the socket timeout (what was left
    # of the attempt at connect) for the whole handshake, not per read.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Deadlines:
    """One daemon thread per transport that cuts off attempts still running at their deadline.

    Why a watchdog remains: urllib3's timeouts bound each socket read, and http.client reads the
    status line and headers in many small reads, so a receiver that trickles a header byte more
    often than the read timeout would hold an attempt (and a delivery thread) for as long as it
    likes. Nothing in urllib3's or requests' API bounds that phase as a whole; shutting the
    attempt's socket from here does (the body is also read in chunks against the deadline).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Exchange]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def watch(self, exchange: Exchange) -> None:
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
        """Stop watching, and end the thread (it holds no lock while it cuts, so this is quick)."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

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


# ---- keep-alive connections ----------------------------------------------------------------------


class Line:
    """A connection and the twin of its socket: a duplicate descriptor made once, when the
    connection is first used, and closed only with the connection (`close`).

    The deadline thread cuts an attempt by shutting the twin down; since only the line closes it,
    and an attempt detaches (under the exchange's lock) before its line is closed, a cut can never
    land on a descriptor http.client closed and the process reused meanwhile. Duplicating the
    socket once per connection rather than once per attempt saves two system calls per attempt.
    """

    def __init__(self, conn: HTTPConnection) -> None:
        self.conn = conn
        self._twin: socket.socket | None = None

    def twin(self) -> socket.socket | None:
        sock = self.conn.sock
        if self._twin is None and sock is not None:
            self._twin = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        return self._twin

    def close(self) -> None:
        self.conn.close()
        twin, self._twin = self._twin, None
        if twin is not None:
            twin.close()


class _IdleConnections:
    """Connections whose last answer was read whole, by (scheme, address, port, server name).

    At most `per_key` are kept per key and `keys` keys at all (the least recently used go first);
    a connection is either here or owned by exactly one attempt.
    """

    def __init__(self, per_key: int, keys: int) -> None:
        self._per_key, self._keys = per_key, keys
        self._lock = threading.Lock()
        self._idle: OrderedDict[_Key, list[Line]] = OrderedDict()
        self._closed = False

    def take(self, key: _Key) -> Line | None:
        while True:
            with self._lock:
                conns = self._idle.get(key)
                if not conns:
                    return None
                line = conns.pop()
                self._idle.move_to_end(key)
            # A peer may have closed it while it sat here; `is_connected` is urllib3's own check.
            if line.conn.is_connected:
                return line
            line.close()

    def put(self, key: _Key, conn: Line) -> None:
        dropped: list[Line] = []
        with self._lock:
            conns = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            if self._closed or len(conns) >= self._per_key:
                dropped.append(conn)
            else:
                conns.append(conn)
            while len(self._idle) > self._keys:
                dropped.extend(self._idle.popitem(last=False)[1])
        for extra in dropped:
            extra.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            every = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in every:
            conn.close()


def _tls_options(verify: bool | str) -> dict[str, Any]:
    """urllib3's documented HTTPSConnection arguments for certificate checks: one SSL context for
    every connection (built by urllib3's public `create_urllib3_context`, the trust store loaded
    once rather than per connection), and `cert_reqs`."""
    cert_reqs = ssl.CERT_NONE if verify is False else ssl.CERT_REQUIRED
    context = create_urllib3_context(cert_reqs=cert_reqs)
    if verify is True:
        context.load_verify_locations(cafile=DEFAULT_CA_BUNDLE_PATH)
    elif isinstance(verify, str):
        if os.path.isdir(verify):
            context.load_verify_locations(capath=verify)
        else:
            context.load_verify_locations(cafile=verify)
    return {"ssl_context": context, "cert_reqs": cert_reqs}


class PinnedAdapter(HTTPAdapter):
    """A transport adapter that sends each request to its exchange's checked address.

    Only `send` (requests' documented hook for custom transports) and `close` are overridden;
    the exchange comes in as a keyword argument, which `Session.send` hands through to it.
    """

    def __init__(self, *, verify: bool | str, per_key: int, keys: int = 100, connect_timeout: float = 5.0) -> None:
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)  # its pools stay unused
        self.connect_timeout = connect_timeout
        self.tls_options = _tls_options(verify)
        self.idle = _IdleConnections(per_key, keys)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
        *,
        exchange: Exchange | None = None,
    ) -> requests.Response:
        """Send `request` on a connection to `exchange.target.address`; the answer's body is left
        unread (`response.raw`), and `release` decides what becomes of the connection."""
        if exchange is None:
            raise RuntimeError("the pinned adapter only sends for Transport.post")
        target = exchange.target
        key: _Key = (target.scheme, target.address, target.port, target.host if target.scheme == "https" else "")
        line = self.idle.take(key) or Line(self.connection_to(target))
        conn = line.conn
        try:
            if conn.is_closed:
                conn.timeout = min(exchange.remaining(), self.connect_timeout)
                conn.connect()
            exchange.attach(line.twin())
            exchange.connected = True
            conn.timeout = exchange.remaining()
            # Transport.prepare gave the request a bytes body (or none) and str headers.
            body = request.body if isinstance(request.body, bytes) else None
            headers = {name: str(value) for name, value in request.headers.items()}
            conn.request(
                request.method or "POST",
                exchange.request_target,
                body=body,
                headers=headers,
                preload_content=False,
                decode_content=False,
            )
            conn.timeout = exchange.remaining()
            raw = conn.getresponse()
        except BaseException:
            exchange.detach()
            line.close()
            raise
        exchange.held = (key, line)
        return self.build_response(request, raw)

    def connection_to(self, target: Target) -> HTTPConnection:
        """A new connection to the checked address. For https, TLS names the URL's host: the
        documented `server_hostname` sets SNI, and with `assert_hostname` left unset urllib3 keeps
        OpenSSL's hostname check on, against that same name."""
        if target.scheme == "https":
            return HTTPSConnection(target.address, target.port, server_hostname=target.host, **self.tls_options)
        return HTTPConnection(target.address, target.port)

    def release(self, exchange: Exchange, response: requests.Response, reusable: bool) -> None:
        """The attempt is done: its connection goes back to the idle set when the answer was read
        whole on a connection the receiver keeps open, and is closed otherwise."""
        response.raw.close()
        exchange.detach()
        if exchange.held is None:
            return
        key, line = exchange.held
        exchange.held = None
        if reusable and not line.conn.is_closed:  # http.client closes it when the answer said "close"
            self.idle.put(key, line)
        else:
            line.close()

    def close(self) -> None:
        self.idle.close()
        super().close()


# ---- the transport -------------------------------------------------------------------------------


class Transport:
    """Sends one attempt to one checked target: the `requests.Session`, the adapter, the deadlines."""

    def __init__(
        self,
        *,
        user_agent: str,
        max_response_bytes: int,
        pool_size: int,
        verify: bool | str,
        connect_timeout: float = 5.0,
    ) -> None:
        self._user_agent = user_agent
        self._max_response_bytes = max_response_bytes
        self._deadlines = Deadlines()
        self._closed = False
        self._adapter = PinnedAdapter(verify=verify, per_key=pool_size, connect_timeout=connect_timeout)
        session = _DeliverySession()
        # No proxies or .netrc credentials from the environment: the connection goes to the
        # checked address, and nothing of ours is handed to a stranger.
        session.trust_env = False
        # Cookies set by one receiver must not pile up in a process-wide jar.
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        session.adapters.clear()
        session.mount("https://", self._adapter)
        session.mount("http://", self._adapter)
        self._session = session

    def close(self) -> None:
        self._closed = True
        self._session.close()
        self._deadlines.stop()

    def post(self, target: Target, body: bytes, headers: Mapping[str, str], deadline: float, timeout: float) -> Reply:
        """POST `body` to the checked `target` by `deadline` (`timeout` is only for messages);
        raises a `DeliveryError` subclass, whose message never quotes the URL's query."""
        if self._closed:
            raise SenderClosed("the HTTP client has been closed")
        request = self._prepare(target, body, headers)
        exchange = Exchange(target, deadline)
        self._deadlines.watch(exchange)
        response: requests.Response | None = None
        reusable = False
        try:
            response = self._session.send(request, stream=True, allow_redirects=False, proxies={}, exchange=exchange)
            if exchange.expired:
                # Cutting the socket can end a header block early, and http.client takes that EOF
                # for the end of the headers: what was parsed is not the receiver's answer.
                raise TimeoutError()
            reply_headers = {name.lower(): value for name, value in response.headers.items()}
            content, reusable = self._read_capped(response.raw, exchange)
            return Reply(response.status_code, reply_headers, content)
        except (
            requests.RequestException,
            u3.HTTPError,
            http.client.HTTPException,
            OSError,
            ValueError,
            CertificateError,
        ) as exc:
            raise classify(exc, target, exchange.expired, timeout, connected=exchange.connected) from None
        finally:
            exchange.finish()
            if response is not None:
                self._adapter.release(exchange, response, reusable)

    def _read_capped(self, raw: BaseHTTPResponse, exchange: Exchange) -> tuple[bytes, bool]:
        """Up to `max_response_bytes` of the answer body, and whether it was read whole.

        The status has been received by then, so the receiver's verdict stands: a stalled, reset or
        endless body ends the read at the cap or the deadline, it does not turn the attempt into
        an error.
        """
        limit = self._max_response_bytes
        chunks: list[bytes] = []
        size = 0
        whole = False
        try:
            # One byte past the limit tells a body that fits from one that was cut.
            while size <= limit and time.monotonic() < exchange.deadline:
                chunk = raw.read(min(_READ_CHUNK, limit + 1 - size), decode_content=False)
                if not chunk:
                    whole = not exchange.expired
                    break
                chunks.append(chunk)
                size += len(chunk)
        except (u3.HTTPError, http.client.HTTPException, OSError):
            pass
        return b"".join(chunks)[:limit], whole

    def _prepare(self, target: Target, body: bytes, headers: Mapping[str, str]) -> requests.PreparedRequest:
        merged: CaseInsensitiveDict[str] = CaseInsensitiveDict(
            {
                "User-Agent": self._user_agent,
                "Accept": "*/*",
                # The body is only kept for the delivery log; reading it compressed would let a small
                # answer inflate past max_response_bytes.
                "Accept-Encoding": "identity",
            }
        )
        for name, value in headers.items():
            if name.lower() not in _OWN_HEADERS:
                merged[name] = value
        host = bracketed(target.host)
        merged["Host"] = host if target.port == DEFAULT_PORTS[target.scheme] else f"{host}:{target.port}"
        # The parts of `prepare()` a POST of bytes needs, by their public names. Its URL step is
        # left out: the guard already parsed the URL with requests' own parser (and remembers the
        # verdict), prepare_url "requotes" it, and the adapter sends the exchange's own copy of
        # the request target anyway; parsing it again was a few per cent of an attempt's CPU. No
        # auth or cookies are ever sent, so their steps are left out too.
        request = requests.PreparedRequest()
        request.prepare_method("POST")
        request.url = target.url
        request.prepare_headers(merged)
        request.prepare_body(body, None)
        return request


class _DeliverySession(requests.Session):
    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # Never follow a redirect (a public Session hook). This also keeps Session.send from
        # reading a 3xx body whole while it prepares the redirect it would not send anyway.
        return None


# ---- what went wrong: the one table ---------------------------------------------------------------

# Checked in order, first match wins; each row: the exception types, the class raised, and its
# message, said about `where`. Only socket/ssl texts are quoted ({why}): urllib3's and requests'
# own texts quote the request URL, and a server's bytes could echo anything back.
_TABLE: tuple[tuple[tuple[type[BaseException], ...], type[DeliveryError], str], ...] = (
    ((u3.NewConnectionError, ConnectionRefusedError), ConnectError, "could not connect to {where}: {why}"),
    ((TimeoutError, u3.TimeoutError), DeliveryTimeout, "no answer from {where} within {timeout:g} s"),
    ((ssl.SSLCertVerificationError, CertificateError), TLSError, "TLS with {where} failed: {why}"),
    (
        (ssl.SSLEOFError, ssl.SSLZeroReturnError),
        ConnectionBroken,
        "{where} closed the TLS connection without answering",
    ),
    ((ssl.SSLError,), TLSError, "TLS with {where} failed: {why}"),
    (
        (
            http.client.RemoteDisconnected,
            ConnectionResetError,
            ConnectionAbortedError,
            BrokenPipeError,
            http.client.IncompleteRead,
        ),
        ConnectionBroken,
        "the connection to {where} broke: {why}",
    ),
    ((http.client.HTTPException, u3.HTTPError, ValueError), ProtocolError, "{where} did not answer with valid HTTP"),
)
_UNREACHABLE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED)


def classify(exc: BaseException, target: Target, expired: bool, timeout: float, *, connected: bool) -> DeliveryError:
    """The `DeliveryError` for what `exc` says went wrong talking to `target`.

    `expired`: the deadline thread cut the attempt (whatever the exception says, it is a timeout).
    `connected`: the request may have been sent; before that, any socket error is a connect error.
    """
    where = f"{bracketed(target.host)}:{target.port}"
    if target.address != target.host:
        where += f" ({target.address})"
    if expired:
        return DeliveryTimeout(f"no complete answer from {where} within {timeout:g} s")
    # urllib3 wraps the socket error it connected with; that is the one to describe.
    cause = exc.__cause__ if isinstance(exc, u3.NewConnectionError) and exc.__cause__ else exc
    for types, error, text in _TABLE:
        if isinstance(exc, types) or isinstance(cause, types):
            return error(text.format(where=where, why=_describe(cause), timeout=timeout))
    if isinstance(cause, OSError) and (cause.errno in _UNREACHABLE or not connected):
        return ConnectError(f"could not connect to {where}: {_describe(cause)}")
    if isinstance(cause, OSError):
        return ConnectionBroken(f"the connection to {where} broke: {_describe(cause)}")
    return DeliveryError(f"the exchange with {where} failed ({type(exc).__name__})")


def _describe(exc: BaseException) -> str:
    """A few words from socket or ssl only."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, CertificateError):
        return "the certificate is not valid for the host name"
    if isinstance(exc, OSError) and not isinstance(exc, requests.RequestException) and exc.strerror:
        return str(exc.strerror)
    return type(exc).__name__
