"""`python -m relay dev`: the function app run locally the way the Functions host runs it.

It imports `function_app`, calls `app.get_functions()` once and routes by each function's own
trigger: HTTP triggers by route template and methods under the `host.json` route prefix, queue
triggers by queue name with the `host.json` queue settings, timer triggers by schedule. It is
the stand-in for `func start` where Core Tools cannot be installed; both serve the same app.

One deliberate difference: a message is held invisible for at most 30 s at a time (renewed
while the function runs) instead of the host's ten minutes, so the work of a killed process is
picked up again within a minute of a restart.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import importlib
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from relay.core.errors import ConfigurationError
from relay.http import problems
from relay_dev.singleton import ListenerLock

log = logging.getLogger("relay.devhost")

LEASE_SECONDS = 30
RENEW_EVERY = 10.0
MIN_POLL = 0.1
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the Functions front end's own limit
UNREAD_DRAIN_BYTES = 64 * 1024  # a body the function left unread: drained up to this, else the connection closes
# Slow and idle connections (slowloris): each holds a thread, so none may hold it for long.
IDLE_SECONDS = 10.0  # a connection silent this long (before a request, or mid-body) is closed
HEAD_SECONDS = 10.0  # a request line and headers must be whole this long after they are awaited
MAX_CONNECTIONS = 512  # open connections (threads) at once; more are closed as they arrive


# ---- settings and host.json ---------------------------------------------------------------------


def load_local_settings(app_dir: Path, environ: MutableMapping[str, str] = os.environ) -> None:
    """Copy `local.settings.json` Values into the environment, never over what is already set
    (for what reads the environment directly: the function app's auth level, Easy Auth, keys)."""
    from relay.core.settings import local_settings_values

    for key, value in local_settings_values(app_dir).items():
        environ.setdefault(key, value)


def check_storage_answers(environ: Mapping[str, str], timeout: float = 3.0) -> None:
    """A ConfigurationError naming the address when a storage endpoint on this machine does not
    accept a connection (Azurite not started, or on other ports). Remote endpoints are left to the SDK."""
    from relay.store.storage import endpoints_from_settings

    endpoints = endpoints_from_settings(environ)
    urls = [endpoints.queue_url, endpoints.table_url]
    if endpoints.connection_string:
        fields = dict(part.split("=", 1) for part in endpoints.connection_string.split(";") if "=" in part)
        if fields.get("UseDevelopmentStorage", "").lower() == "true":
            urls = ["http://127.0.0.1:10001", "http://127.0.0.1:10002"]
        else:
            urls = [fields.get("QueueEndpoint"), fields.get("TableEndpoint")]
    for url in urls:
        if not url:
            continue
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError:
            raise ConfigurationError(
                f"storage at {parts.scheme}://{host}:{port} does not answer: start Azurite (make dev starts it) "
                "or point AzureWebJobsStorage at a storage account"
            ) from None


def parse_timespan(text: str) -> float:
    """host.json `hh:mm:ss[.fff]` (or `d.hh:mm:ss`) in seconds."""
    days = 0
    if text.count(":") == 2 and "." in text.split(":")[0]:
        d, text = text.split(".", 1)
        days = int(d)
    h, m, s = text.split(":")
    return days * 86400 + int(h) * 3600 + int(m) * 60 + float(s)


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0

    @classmethod
    def from_host_json(cls, host: dict[str, Any]) -> QueueOptions:
        q = host.get("extensions", {}).get("queues", {})
        batch = int(q.get("batchSize", 16))
        return cls(
            batch_size=batch,
            new_batch_threshold=int(q.get("newBatchThreshold", batch // 2)),
            max_dequeue_count=int(q.get("maxDequeueCount", 5)),
            visibility_timeout=parse_timespan(q.get("visibilityTimeout", "00:00:00")),
            max_polling_interval=max(MIN_POLL, parse_timespan(q.get("maxPollingInterval", "00:01:00"))),
        )


# ---- HTTP routing -------------------------------------------------------------------------------


@dataclass
class HttpRoute:
    name: str
    template: str
    pattern: re.Pattern[str]
    methods: set[str] | None
    needs_key: bool
    call: Callable[[func.HttpRequest], func.HttpResponse]

    @property
    def precedence(self) -> tuple[int, ...]:
        # ASP.NET-style: literal segments win over parameters, parameters over catch-alls.
        return tuple(2 if s.startswith("{*") else 1 if s.startswith("{") else 0 for s in self.template.split("/"))


def compile_template(template: str) -> re.Pattern[str]:
    """`subscriptions/{id}` -> a regex with named groups; `{name:constraint}` and `{*rest}` too."""
    parts = []
    for segment in template.strip("/").split("/"):
        m = re.fullmatch(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]*)?(\??)\}", segment)
        if not m:
            parts.append(re.escape(segment))
        elif m.group(1):
            parts.append(f"(?P<{m.group(2)}>.*)")
        else:
            parts.append(f"(?P<{m.group(2)}>[^/]+)" + ("?" if m.group(3) else ""))
    # \Z, not $: `$` also matches before a trailing newline.
    return re.compile("^" + "/".join(parts) + r"\Z", re.IGNORECASE)


def _problem(
    status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """The host's own answers (no function, no key, a malformed request) in the app's problem shape."""
    problem = problems.document(status, title, detail, errors=errors)
    return status, {"Content-Type": f"{problems.MEDIA_TYPE}; charset=utf-8"}, json.dumps(problem).encode()


# The methods the function app's routes take (function_app.ALL); anything else is a 405 here, as
# the relay answers it in Azure.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
TLS_HANDSHAKE = 0x16  # first byte of a TLS record carrying a ClientHello


def _split_host(value: str) -> tuple[str, int | None] | None:
    """`name`, `name:port`, `1.2.3.4:port`, `[::1]:port` -> (lower-case host, port or None)."""
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/@]+)(?::(\d{1,5}))?", value.strip())
    if not m:
        return None
    return m.group(1).lower().strip("[]"), int(m.group(2)) if m.group(2) else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class HostCheck:
    """Which `Host` headers the dev host answers: its own listen address with its port, or
    `localhost[:port]`. A web page can point a name of its own at 127.0.0.1 (DNS rebinding) and
    then read the relay's answers as same-origin; such a request carries the page's name in
    `Host`, so refusing foreign names closes that door. Bound to a wildcard address (0.0.0.0,
    `::`), the dev host answers on every address of the machine: any IP literal is then its own
    (a rebinding page can never send one, only a name)."""

    def __init__(self, listen_host: str, bound_address: str, port: int) -> None:
        self.port = port
        self.names = {"localhost", listen_host.lower().strip("[]"), bound_address.lower()}
        self.any_ip = bound_address in ("0.0.0.0", "::")

    def allows(self, header: str | None) -> bool:
        parsed = _split_host(header or "")
        if parsed is None:
            return False
        host, port = parsed
        if host != "localhost" and port is None and self.port != 80:
            return False  # a client omits the port only for 80
        if port is not None and port != self.port:
            return False
        return host in self.names or (self.any_ip and _is_ip(host))


class StreamedHttpRequest(func.HttpRequest):
    """A request whose body is read from the connection on the first `get_body()`, so a function
    can refuse a body by its Content-Length without the host taking it in first."""

    def __init__(self, *, body: bytes | Callable[[], bytes], **kwargs: Any) -> None:
        super().__init__(body=b"", **kwargs)
        self._reader = body if callable(body) else (lambda: body)
        self._read: bytes | None = None

    def get_body(self) -> bytes:
        if self._read is None:
            self._read = self._reader()
        return self._read

    def get_json(self) -> Any:
        return json.loads(self.get_body().decode("utf-8"))


class HttpDispatcher:
    def __init__(self, routes: list[HttpRoute], prefix: str, function_key: str | None, easy_auth: Any = None) -> None:
        self.routes = sorted(routes, key=lambda r: r.precedence)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.function_key = function_key
        self.easy_auth = easy_auth  # relay_dev.easyauth.EasyAuth when playing App Service Authentication

    def dispatch(
        self, method: str, raw_path: str, host: str, headers: dict[str, str], body: bytes | Callable[[], bytes]
    ) -> tuple[int, dict[str, str], bytes]:
        """`body` may be a reader: the function then reads it only if it asks for it."""
        split = urlsplit(raw_path)
        path = split.path
        if not path.lower().startswith(self.prefix.lower() + "/"):
            return _problem(404, "Not found", "no function answers this path")
        if self.easy_auth is not None:
            # Like the platform, before any function runs: a 401 here never reaches the app.
            refused = self.easy_auth.admit(path, headers)
            if refused is not None:
                status, out, text = _problem(401, "Unauthorized", refused)
                return status, {**out, "WWW-Authenticate": 'Bearer realm="relay"'}, text
        rel = path[len(self.prefix) + 1 :].strip("/")
        for route in self.routes:
            match = route.pattern.fullmatch(rel)
            if not match or (route.methods is not None and method not in route.methods):
                continue
            params = dict(parse_qsl(split.query, keep_blank_values=True))
            if route.needs_key and self.function_key and not self._key_ok(headers, params):
                return _problem(401, "Unauthorized", "send the function key in x-functions-key or ?code=")
            request = StreamedHttpRequest(
                method=method,
                url=f"http://{host}{raw_path}",
                headers=headers,
                params=params,
                route_params={k: unquote(v) for k, v in match.groupdict().items() if v is not None},
                body=body,
            )
            response = route.call(request)
            out_headers = {k: v for k, v in response.headers.items()}
            if response.mimetype and "content-type" not in {k.lower() for k in out_headers}:
                charset = f"; charset={response.charset}" if response.charset else ""
                out_headers["Content-Type"] = response.mimetype + charset
            return response.status_code, out_headers, response.get_body() or b""
        return _problem(404, "Not found", "no function answers this path")

    def _key_ok(self, headers: dict[str, str], params: dict[str, str]) -> bool:
        given = headers.get("x-functions-key") or params.get("code") or ""
        return hmac.compare_digest(given.encode(), (self.function_key or "").encode())


class HostCheckedHandler(BaseHTTPRequestHandler):
    host_check: HostCheck | None = None  # set once the server is bound (DevHost.start)
    # StreamRequestHandler applies this to the socket: every read or write that waits longer
    # raises TimeoutError, so a silent client cannot hold its thread.
    timeout = IDLE_SECONDS


def make_handler(dispatcher: HttpDispatcher) -> type[HostCheckedHandler]:
    class Handler(HostCheckedHandler):
        protocol_version = "HTTP/1.1"
        server_version = "relay-devhost"

        def handle(self) -> None:
            # A TLS ClientHello (https:// to this plain-http port) has no line end to wait for:
            # answer at once instead of blocking in readline until the client gives up.
            try:
                first = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:
                return
            if first and first[0] == TLS_HANDSHAKE:
                self.command, self.path, self.request_version = "", "", "HTTP/1.1"
                self.send_error(400, "TLS handshake on a plain HTTP port; use http://")
                return
            super().handle()

        def handle_one_request(self) -> None:
            # The base class answers a method without a do_* handler 501 text/html; the relay
            # (and so its dev host) answers every unknown method 405 problem+json.
            server = self.server if isinstance(self.server, DevHTTPServer) else None
            try:
                if server is not None:
                    # The socket timeout ends a silent client; this deadline ends one that sends
                    # its request line and headers a byte at a time (slowloris).
                    server.watch(self.connection, HEAD_SECONDS)
                try:
                    self.raw_requestline = self.rfile.readline(65537)
                    if len(self.raw_requestline) > 65536:
                        self.command, self.path, self.request_version = "", "", "HTTP/1.1"
                        self.send_error(414, "the request line is too long")
                        return
                    if not self.raw_requestline:
                        self.close_connection = True
                        return
                    parsed = self.parse_request()
                finally:
                    if server is not None:
                        server.unwatch(self.connection)
                if not parsed:
                    return
                if self.command not in METHODS:
                    self.send_error(405, f"method {self.command[:32]!r} is not allowed")
                    return
                self._serve()
                self.wfile.flush()
            except TimeoutError:
                self.close_connection = True

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """Every answer the HTTP layer itself gives (a malformed request line, bad headers, an
            unknown method, a TLS handshake) is a problem+json, logged in one line without the
            request line (its query may carry a key)."""
            if message:
                # The base class quotes the raw request line in parentheses: it may hold a key.
                message = message.split(" (", 1)[0]
            reason = self.responses.get(code, ("Error", ""))[0]
            status, headers, body = _problem(code, reason, message or reason)
            log.warning("%s %s from %s: %s", code, reason, self.client_address[0], message or reason)
            self.close_connection = True  # what follows on this connection cannot be trusted
            # A line without a version reads as HTTP/0.9, which has no status line: answer in 1.1.
            self.request_version = "HTTP/1.1"
            self.send_response_only(code)
            self.send_header("Server", self.version_string())
            self.send_header("Date", self.date_time_string())
            for key, value in headers.items():
                self.send_header(key, value)
            if code == 405:
                self.send_header("Allow", ", ".join(METHODS))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(body)

        def _serve(self) -> None:
            text = self.headers.get("Content-Length") or "0"
            length = int(text) if text.isascii() and text.isdigit() else -1
            if self.host_check is not None and not self.host_check.allows(self.headers.get("Host")):
                status, headers, body = _problem(
                    400,
                    "Host not allowed",
                    "the dev host answers only requests for its own address or localhost",
                    [{"field": "Host", "message": "must be the address the dev host listens on, or localhost"}],
                )
                self.close_connection = True  # the body is left unread
            elif self.headers.get("Transfer-Encoding") or length < 0:
                # The Functions front end takes chunked bodies; this stand-in asks for a length.
                status, headers, body = _problem(411, "Length required", "send a valid Content-Length")
                self.close_connection = True
            elif length > MAX_REQUEST_BYTES:
                status, headers, body = _problem(413, "Payload too large", "the request body is too large")
                self.close_connection = True
            else:
                # The body stays on the socket until the function asks for it: one that refuses a
                # request by its Content-Length (413) never has the body read at all.
                read: list[bytes] = []

                def reader() -> bytes:
                    if not read:
                        read.append(self.rfile.read(length) if length else b"")
                        if len(read[0]) < length:  # the client closed mid-body
                            self.close_connection = True
                    return read[0]

                headers_in = {k.lower(): v for k, v in self.headers.items()}
                try:
                    status, headers, body = dispatcher.dispatch(
                        self.command, self.path, self.headers.get("Host") or "localhost", headers_in, reader
                    )
                except Exception:  # the host answers 500 for a function that throws
                    log.exception("function failed")
                    status, headers, body = _problem(500, "Internal error", "the function failed")
                if length and not read:
                    if length <= UNREAD_DRAIN_BYTES:
                        reader()  # small: drain it so the connection can carry the next request
                    else:
                        self.close_connection = True  # the unread rest would be taken for a request
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in ("content-length", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:
            # The query may hold a function key or a callback signature: log the path only. Before
            # the request line is parsed there is neither a command nor a path.
            path = (getattr(self, "path", None) or "").split("?")[0]
            log.debug("%s %s -> %s", getattr(self, "command", None) or "-", path, args[1] if len(args) > 1 else "")

    return Handler


class DevHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 overflows when a client opens a few dozen connections at
    # once (a pool of subscribing threads), and the kernel then resets some of them.
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before binding: a bind that fails calls server_close(), which reads these.
        self._deadlines: dict[socket.socket, float] = {}
        self._open = 0
        self._lock = threading.Lock()
        self._refused_logged_at = 0.0
        self._closed = threading.Event()
        super().__init__(*args, **kwargs)
        threading.Thread(target=self._watchdog, name="http-deadlines", daemon=True).start()

    def watch(self, connection: socket.socket, seconds: float) -> None:
        with self._lock:
            self._deadlines[connection] = time.monotonic() + seconds

    def unwatch(self, connection: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(connection, None)

    def _watchdog(self) -> None:
        """Shut down the connections whose request head is late: the blocked read in their
        thread then returns, and the thread ends."""
        while not self._closed.wait(0.5):
            now = time.monotonic()
            with self._lock:
                late = [c for c, at in self._deadlines.items() if at <= now]
                for connection in late:
                    del self._deadlines[connection]
            for connection in late:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if late:
                log.info("closed %d connection(s) whose request did not arrive in %.0f s", len(late), HEAD_SECONDS)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = self._open >= MAX_CONNECTIONS
            if not full:
                self._open += 1
        if full:
            # A thread per connection: past the cap a new one is closed rather than given one.
            now = time.monotonic()
            if now - self._refused_logged_at > 10:
                self._refused_logged_at = now
                log.warning("%d connections open: closing new ones until some end", MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not socketserver's traceback on stderr: a client that went away (closed,
        reset, timed out) is routine, anything else is the host's error."""
        exc = sys.exc_info()[1]
        address = client_address[0] if isinstance(client_address, tuple) else client_address
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.info("client %s went away (%s)", address, type(exc).__name__)
        else:
            log.error("connection from %s failed: %s: %s", address, type(exc).__name__, exc)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()


# ---- queue triggers -----------------------------------------------------------------------------


class Lease:
    """A received message and its current pop receipt, renewed while the function runs."""

    def __init__(self, message: Any) -> None:
        self.message = message
        self.pop_receipt = message.pop_receipt
        self.renew_at = time.monotonic() + RENEW_EVERY
        self.lock = threading.Lock()


class QueueWorker:
    def __init__(
        self,
        name: str,
        queue_client: Any,
        poison_client: Any,
        call: Callable[[func.QueueMessage], Any],
        options: QueueOptions,
        stop: threading.Event,
    ) -> None:
        self.name = name
        self.queue = queue_client
        self.poison = poison_client
        self.call = call
        self.options = options
        self.stop = stop
        self.pool = ThreadPoolExecutor(
            max_workers=options.batch_size + options.new_batch_threshold, thread_name_prefix=f"q-{name}"
        )
        self.leases: dict[str, Lease] = {}
        self.leases_lock = threading.Lock()
        self.room = threading.Condition(self.leases_lock)
        self.threads = [
            threading.Thread(target=self._poll, name=f"poll-{name}", daemon=True),
            threading.Thread(target=self._renew, name=f"renew-{name}", daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _poll(self) -> None:
        interval = MIN_POLL
        while not self.stop.is_set():
            with self.room:
                # Like the host: fetch a new batch only when in-flight work falls to the threshold.
                while len(self.leases) > self.options.new_batch_threshold and not self.stop.is_set():
                    self.room.wait(0.5)
            if self.stop.is_set():
                return
            try:
                messages = list(
                    self.queue.receive_messages(max_messages=self.options.batch_size, visibility_timeout=LEASE_SECONDS)
                )
            except Exception as exc:  # noqa: BLE001 - storage down: wait and poll again
                log.warning("queue %s: receive failed (%s); retrying", self.name, type(exc).__name__)
                self.stop.wait(min(self.options.max_polling_interval, 2.0))
                continue
            if not messages:
                self.stop.wait(interval)
                interval = min(interval * 2, self.options.max_polling_interval)
                continue
            interval = MIN_POLL
            for message in messages:
                lease = Lease(message)
                with self.leases_lock:
                    self.leases[message.id] = lease
                self.pool.submit(self._process, lease)

    def _renew(self) -> None:
        while not self.stop.wait(1.0):
            with self.leases_lock:
                due = [held for held in self.leases.values() if held.renew_at <= time.monotonic()]
            for lease in due:
                with lease.lock:
                    try:
                        receipt = self.queue.update_message(
                            lease.message.id, lease.pop_receipt, visibility_timeout=LEASE_SECONDS
                        )
                        lease.pop_receipt = receipt.pop_receipt
                    except Exception as exc:  # noqa: BLE001 - the message will simply reappear
                        log.warning("queue %s: lease renewal failed (%s)", self.name, type(exc).__name__)
                    lease.renew_at = time.monotonic() + RENEW_EVERY

    def _process(self, lease: Lease) -> None:
        message = lease.message
        try:
            try:
                body = base64.b64decode(message.content, validate=True)
            except (binascii.Error, ValueError, TypeError):
                log.error("queue %s: message %s is not base64; moved to poison", self.name, message.id)
                self._to_poison(lease)
                return
            if message.dequeue_count > self.options.max_dequeue_count:
                self._to_poison(lease)
                return
            qm = QueueMessage(
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                insertion_time=message.inserted_on,
                expiration_time=message.expires_on,
                pop_receipt=lease.pop_receipt,
            )
            try:
                self.call(qm)
            except Exception:  # the host logs, then lets the message come back
                log.exception(
                    "queue %s: function failed on message %s (dequeue %s)", self.name, message.id, message.dequeue_count
                )
                if message.dequeue_count >= self.options.max_dequeue_count:
                    self._to_poison(lease)
                else:
                    with lease.lock:
                        self.queue.update_message(
                            message.id, lease.pop_receipt, visibility_timeout=int(self.options.visibility_timeout)
                        )
                return
            with lease.lock:
                self.queue.delete_message(message.id, lease.pop_receipt)
        except Exception as exc:  # noqa: BLE001 - storage trouble while settling: it reappears
            log.warning(
                "queue %s: could not settle message %s (%s: %s)", self.name, message.id, type(exc).__name__, exc
            )
        finally:
            with self.room:
                self.leases.pop(message.id, None)
                self.room.notify_all()

    def _to_poison(self, lease: Lease) -> None:
        self.poison.send_message(lease.message.content)
        with lease.lock:
            self.queue.delete_message(lease.message.id, lease.pop_receipt)
        log.error("queue %s: message %s moved to %s-poison", self.name, lease.message.id, self.name)

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.room:
            while self.leases and time.monotonic() < deadline:
                self.room.wait(0.2)
        self.pool.shutdown(wait=False, cancel_futures=True)


# ---- timer triggers -----------------------------------------------------------------------------


def _cron_field(spec: str, value: int, low: int) -> bool:
    for part in spec.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part == "*":
            start, end = low, 10**6
        elif "-" in part:
            start, end = (int(x) for x in part.split("-", 1))
        else:
            start = end = int(part)
            if step > 1:
                end = 10**6
        if start <= value <= end and (value - start) % step == 0:
            return True
    return False


def cron_matches(schedule: str, moment: datetime) -> bool:
    """NCRONTAB with six fields (second minute hour day month day-of-week)."""
    fields = schedule.split()
    if len(fields) != 6:
        raise ValueError(f"not a six-field NCRONTAB schedule: {schedule!r}")
    values = [
        (moment.second, 0),
        (moment.minute, 0),
        (moment.hour, 0),
        (moment.day, 1),
        (moment.month, 1),
        ((moment.weekday() + 1) % 7, 0),
    ]
    return all(_cron_field(f, v, low) for f, (v, low) in zip(fields, values, strict=True))


class TimerWorker:
    def __init__(
        self, name: str, schedule: str, call: Callable[[Any], Any], stop: threading.Event, lock: ListenerLock
    ) -> None:
        self.name, self.schedule, self.call, self.stop = name, schedule, call, stop
        self.lock = lock  # one instance of the app fires a timer at a time (relay_dev.singleton)
        cron_matches(schedule, datetime.now(UTC))  # refuse a bad schedule at start-up
        self.thread = threading.Thread(target=self._run, name=f"timer-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        last = datetime.now(UTC).replace(microsecond=0)
        while not self.stop.wait(0.2):
            now = datetime.now(UTC).replace(microsecond=0)
            due = 0
            while last < now:
                last += timedelta(seconds=1)
                due += cron_matches(self.schedule, last)
            if not self._may_fire():
                continue  # another instance fires it; this one keeps asking for the lock
            if due and not self.stop.is_set():
                # Ticks missed while a run took longer make one late run (past_due), as the
                # host's timer does, not a burst of runs back to back.
                try:
                    self.call(TimerRequest(past_due=due > 1))
                except Exception:  # a timer that throws runs again at its next tick
                    log.exception("timer %s failed", self.name)
        self.lock.release()

    def _may_fire(self) -> bool:
        try:
            return self.lock.held()
        except Exception:  # storage unreachable: the timer waits, as the host's listener does
            log.exception("timer %s: its lock could not be read", self.name)
            return False


# ---- the host -----------------------------------------------------------------------------------


class DevHost:
    def __init__(
        self, app_dir: Path, host: str = "127.0.0.1", port: int = 7071, function_key: str | None = None
    ) -> None:
        self.app_dir = app_dir.resolve()
        self.host, self.port = host, port
        self.function_key = function_key
        self.stop_event = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self.workers: list[QueueWorker] = []
        self.timers: list[TimerWorker] = []
        self._connections: dict[str, Any] = {}  # one set of storage clients per connection setting
        self._serving = False  # serve_forever running: shutdown() waits for it, so only then

    def start(self) -> None:
        load_local_settings(self.app_dir)
        if self.function_key is None:
            self.function_key = os.environ.get("RELAY_FUNCTION_KEY") or None
        from relay_dev.easyauth import EasyAuth

        easy_auth = EasyAuth.from_environ(os.environ)
        # Without a key every key is let in: tell the console, whose sign-in page says so.
        os.environ["RELAY_DEV_KEYS_UNCHECKED"] = "1" if not self.function_key and easy_auth is None else "0"
        if easy_auth is not None:
            # This host now is the platform's authentication: tell the app, as App Service does.
            os.environ["WEBSITE_AUTH_ENABLED"] = "True"
        elif (os.environ.get("RELAY_AUTH") or "").strip().lower() == "entra":
            # Locally nothing but this host can validate a token. Without signing keys the relay
            # would either admit nobody or, with WEBSITE_AUTH_ENABLED set by hand, trust whatever
            # X-MS-CLIENT-PRINCIPAL a caller forged: neither is a mode to run in.
            raise ConfigurationError(
                "RELAY_AUTH=entra needs RELAY_ENTRA_JWKS (with RELAY_ENTRA_ISSUER and RELAY_ENTRA_AUDIENCE) "
                "for the dev host to validate tokens; it never trusts a caller's X-MS-CLIENT-PRINCIPAL"
            )
        host_json = json.loads((self.app_dir / "host.json").read_text(encoding="utf-8"))
        prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
        options = QueueOptions.from_host_json(host_json)
        if str(self.app_dir) not in sys.path:
            sys.path.insert(0, str(self.app_dir))
        module = importlib.import_module("function_app")
        routes: list[HttpRoute] = []
        queue_triggers: list[tuple[Any, Callable[..., Any]]] = []
        timers: list[tuple[str, str, Callable[..., Any]]] = []
        for fn in module.app.get_functions():  # once per app object, as the worker does
            trigger = fn.get_trigger()
            kind = trigger.get_binding_name()
            call = fn.get_user_function()
            if kind == "httpTrigger":
                methods = {str(getattr(m, "value", m)).upper() for m in trigger.methods} if trigger.methods else None
                auth = str(getattr(trigger.auth_level, "value", trigger.auth_level) or "function").lower()
                template = trigger.route or fn.get_function_name()
                routes.append(
                    HttpRoute(
                        fn.get_function_name(), template, compile_template(template), methods, auth != "anonymous", call
                    )
                )
            elif kind == "queueTrigger":
                queue_triggers.append((trigger, call))
            elif kind == "timerTrigger":
                timers.append((fn.get_function_name(), trigger.schedule, call))
            else:
                raise RuntimeError(f"{fn.get_function_name()}: {kind} triggers are not supported by the dev host")
        dispatcher = HttpDispatcher(routes, prefix, self.function_key, easy_auth)
        handler = make_handler(dispatcher)
        try:
            self.server = DevHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ConfigurationError(
                f"port {self.port} on {self.host} is in use; run on another with "
                f'make dev ARGS="--port {self.port + 1}" (or python -m relay dev --port {self.port + 1})'
            ) from None
        self.port = self.server.server_address[1]
        # Before any storage call: the SDK retries an unreachable endpoint for minutes, silently.
        check_storage_answers(os.environ)
        for trigger, call in queue_triggers:
            self.workers.append(self._queue_worker(trigger, call, options))
        if timers:
            blobs = self._storage("AzureWebJobsStorage").blobs
            instance = f"{self.host}:{self.port}"
            for name, schedule, call in timers:
                lock = ListenerLock(blobs, name, instance)
                self.timers.append(TimerWorker(name, schedule, call, self.stop_event, lock))
        # Known only once bound: the address a name resolved to and the port 0 became.
        handler.host_check = HostCheck(self.host, str(self.server.server_address[0]), self.port)
        threading.Thread(target=self.server.serve_forever, name="http", daemon=True).start()
        self._serving = True
        for worker in self.workers:
            worker.start()
        for timer in self.timers:
            timer.start()
        log.info(
            "listening on http://%s:%s/%s (%d HTTP routes, %d queue triggers, %d timers)",
            self.host,
            self.port,
            prefix,
            len(routes),
            len(self.workers),
            len(self.timers),
        )

    def _storage(self, connection: str) -> Any:
        """The storage clients of one connection setting (`AzureWebJobsStorage` or another prefix)."""
        from relay.store.storage import Storage, endpoints_from_settings

        storage = self._connections.get(connection)
        if storage is None:
            settings = {
                ("AzureWebJobsStorage" + k[len(connection) :]): v
                for k, v in os.environ.items()
                if k == connection or k.startswith(connection + "__")
            }
            storage = self._connections[connection] = Storage(endpoints_from_settings(settings))
        return storage

    def _queue_worker(self, trigger: Any, call: Callable[..., Any], options: QueueOptions) -> QueueWorker:
        storage = self._storage(trigger.connection or "AzureWebJobsStorage")
        # Raw clients: the host decodes base64 itself, so a bad message poisons only itself.
        queue = storage.queues.get_queue_client(trigger.queue_name)
        poison = storage.queues.get_queue_client(trigger.queue_name + "-poison")
        for client in (queue, poison):
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
        return QueueWorker(trigger.queue_name, queue, poison, call, options, self.stop_event)

    def shutdown(self, drain_seconds: float = 10.0) -> None:
        self.stop_event.set()
        if self.server is not None:
            if self._serving:
                self.server.shutdown()
            self.server.server_close()
        for worker in self.workers:
            worker.drain(drain_seconds)
        for timer in self.timers:  # each hands its lock over as it ends
            if timer.thread.is_alive():
                timer.thread.join(drain_seconds)
        # The app's threads and HTTP connections end with the host, as a worker process's do.
        from relay.core import runtime

        runtime.reset()  # every pool, attempt thread and lease keeper


def run(
    app_dir: Path,
    host: str,
    port: int,
    function_key: str | None,
    azurite_port: int | None = None,
    azurite_data: Path | None = None,
) -> int:
    logging.basicConfig(
        level=os.environ.get("RELAY_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from relay_dev.azurite import Azurite, AzuriteError, ports_from

    azurite = None
    if azurite_port is not None:
        data = azurite_data or app_dir / ".azurite"
        data.mkdir(parents=True, exist_ok=True)
        azurite = Azurite(data, ports_from(azurite_port))
        try:
            azurite.start()
        except AzuriteError as exc:
            print(
                f"relay dev: Azurite did not start: {exc}; move it with make dev AZURITE_PORT=20000 "
                "(or --azurite-port 20000)",
                file=sys.stderr,
                flush=True,
            )
            return 2
        os.environ["AzureWebJobsStorage"] = azurite.connection_string
    dev = DevHost(app_dir, host, port, function_key)
    try:
        dev.start()
    except ConfigurationError as exc:
        # A setting that cannot work: one line saying which, and a non-zero exit, no traceback.
        print(f"relay dev: {exc}", file=sys.stderr, flush=True)
        dev.shutdown(drain_seconds=0)
        if azurite is not None:
            azurite.stop()
        return 2
    print(f"relay dev host: http://{dev.host}:{dev.port}/api (Ctrl+C to stop)", flush=True)
    stopped = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopped.wait(0.5):
        pass
    log.info("stopping")
    dev.shutdown()
    if azurite is not None:
        azurite.stop()
    return 0
