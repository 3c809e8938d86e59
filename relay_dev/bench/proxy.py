"""A counting reverse proxy for Azurite's blob, queue and table endpoints.

Each client connection gets its own upstream keep-alive connection, and requests and answers
are forwarded byte for byte (framing read from `Content-Length` or chunked encoding, nothing
rewritten), so the storage SDKs see Azurite exactly as they would directly. On the way through,
every request is counted by service and kind (queue receive/send/delete/update, table
insert/upsert/merge/get/query/`$batch`, blob put/get, ...) and by resource (queue or table name).
A queue receive is counted as `receive` when it returned messages and `receive-empty` when it
returned none, so idle polling can be told apart from work.

Run it as its own process (it then competes with no one for a GIL):

    python -m relay_dev.bench.proxy --blob 127.0.0.1:10000 --queue 127.0.0.1:10001 --table 127.0.0.1:10002

It prints one JSON line with the ports it listens on (`blob`, `queue`, `table`, `control`) and
serves until SIGTERM, SIGINT or the end of its standard input. `GET /counts` on the control port
answers the counters so far (they only ever grow: take differences between snapshots).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, cast

SERVICES = ("blob", "queue", "table")
_MAX_LINE = 65536
_BATCH_OP = re.compile(rb"^(GET|POST|PUT|MERGE|PATCH|DELETE) \S*?/([A-Za-z][A-Za-z0-9]*)(?:\(|\?| )", re.M)


# ---- classification -----------------------------------------------------------------------------


def classify(service: str, method: str, target: str) -> tuple[str, str]:
    """(kind, resource) of one storage request, from its method and request target."""
    path, _, query = target.partition("?")
    query = query.lower()
    segments = path.split("/")
    rest = segments[2:] if len(segments) > 2 else []  # after "/{account}"
    if rest and rest[-1] == "":
        rest = rest[:-1]
    if service == "queue":
        if len(rest) >= 2 and rest[1] == "messages":
            queue = rest[0]
            if len(rest) == 2:
                if method == "GET":
                    return ("peek" if "peekonly=true" in query else "receive"), queue
                if method == "POST":
                    return "send", queue
                if method == "DELETE":
                    return "clear", queue
            elif method == "PUT":
                return "update", queue
            elif method == "DELETE":
                return "delete", queue
            return f"{method.lower()}-message", queue
        if len(rest) == 1:
            if "comp=metadata" in query:
                return ("set-metadata" if method == "PUT" else "properties"), rest[0]
            return {"PUT": "create-queue", "DELETE": "delete-queue"}.get(method, method.lower()), rest[0]
        return ("list-queues" if "comp=list" in query else f"service-{method.lower()}"), ""
    if service == "table":
        first = rest[0] if rest else ""
        if first == "$batch":
            return "batch", ""
        name, paren, keys = first.partition("(")
        if name == "Tables":
            return {"POST": "create-table", "GET": "list-tables", "DELETE": "delete-table"}.get(
                method, f"tables-{method.lower()}"
            ), keys.strip("')")
        if method == "GET":
            return ("get" if "PartitionKey=" in keys or "partitionkey=" in keys.lower() else "query"), name
        return {"POST": "insert", "PUT": "upsert-replace", "MERGE": "merge", "PATCH": "merge", "DELETE": "delete"}.get(
            method, method.lower()
        ), name
    # blob
    container = rest[0] if rest else ""
    if "restype=container" in query:
        if "comp=list" in query:
            return "list-blobs", container
        return {"PUT": "create-container", "DELETE": "delete-container"}.get(method, "container-properties"), container
    if len(rest) <= 1:
        return ("list-containers" if "comp=list" in query else f"service-{method.lower()}"), container
    return {"PUT": "put-blob", "GET": "get-blob", "HEAD": "blob-properties", "DELETE": "delete-blob"}.get(
        method, method.lower()
    ), container


# ---- table query filters ------------------------------------------------------------------------

_LITERAL = re.compile(r"'(?:[^']|'')*'")


def query_filter(target: str) -> str | None:
    """The OData `$filter` of a table query's request target, decoded; None when it has none."""
    from urllib.parse import parse_qs, urlsplit

    values = parse_qs(urlsplit(target).query).get("$filter")
    return values[0] if values else None


def filter_shape(flt: str) -> str:
    """The filter with its literals folded (`PartitionKey eq '…'`): how it reads, not what for."""
    return _LITERAL.sub("'…'", flt)


def within_one_partition(flt: str | None) -> bool:
    """True when the filter pins exactly one partition: `PartitionKey eq '…'` anded, at the top
    level, with anything that names no other PartitionKey (an `or` of RowKeys inside one partition
    is fine: at worst a scan of that partition). Azure Tables serves anything else, an `or` of
    partitions included, as a range scan across partitions: the cost this check exists to catch."""
    if not flt:
        return False
    terms = _top_level_and(filter_shape(flt))
    if terms is None:
        return False
    pinned = [t for t in terms if _unwrap(t) == "PartitionKey eq '…'"]
    return len(pinned) == 1 and sum("PartitionKey" in t for t in terms) == 1


def _unwrap(term: str) -> str:
    """A term without the parentheses that wrap it whole."""
    term = term.strip()
    while term.startswith("(") and _top_level_and(term[1:-1]) is not None and _closes_at_end(term):
        term = term[1:-1].strip()
    return " ".join(term.split())


def _closes_at_end(term: str) -> bool:
    depth = 0
    for i, ch in enumerate(term):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(term) - 1:
            return False
    return depth == 0


def _top_level_and(shape: str) -> list[str] | None:
    """The conjuncts of a filter shape (literals folded), split on `and` outside parentheses;
    None when the top level has an `or`, or the parentheses do not balance."""
    terms, depth, start = [], 0, 0
    words = re.finditer(r"\(|\)|\b(and|or)\b", shape, re.IGNORECASE)
    for m in words:
        if m.group() == "(":
            depth += 1
        elif m.group() == ")":
            depth -= 1
            if depth < 0:
                return None
        elif depth == 0:
            word = m.group().lower()
            if word != "and":
                return None
            terms.append(shape[start : m.start()])
            start = m.end()
    if depth != 0:
        return None
    terms.append(shape[start:])
    return [t for t in (t.strip() for t in terms) if t]


# ---- counters -----------------------------------------------------------------------------------


class Counts:
    """Transactions by `service kind resource`, plus failures and a few non-billed facts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.transactions: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # answered >= 400, by key and status
        self.info: Counter[str] = Counter()  # connections, messages received, batch operations
        self.queries: Counter[str] = Counter()  # table queries by `table filter-shape`

    def request(self, key: str, status: int) -> None:
        with self.lock:
            self.transactions[key] += 1
            if status >= 400:
                self.failures[f"{key} {status}"] += 1

    def note(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.info[key] += n

    def query(self, table: str, flt: str | None) -> None:
        with self.lock:
            self.queries[f"{table} {filter_shape(flt) if flt else '(no filter)'}"] += 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "at": time.monotonic(),
                "transactions": dict(self.transactions),
                "failures": dict(self.failures),
                "info": dict(self.info),
                "queries": dict(self.queries),
            }


# ---- forwarding ---------------------------------------------------------------------------------


def _read_head(f: BinaryIO, first: bytes) -> tuple[list[bytes], int | None, bool, bool] | None:
    """The header lines after `first`; (lines, content-length, chunked, close) or None on EOF."""
    lines = [first]
    length: int | None = None
    chunked = close = False
    while True:
        line = f.readline(_MAX_LINE)
        if not line:
            return None
        lines.append(line)
        if line == b"\r\n" or line == b"\n":
            return lines, length, chunked, close
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()


def _read_chunked(f: BinaryIO) -> bytes:
    parts = []
    while True:
        size_line = f.readline(_MAX_LINE)
        if not size_line:
            raise ConnectionError("chunked body cut short")
        parts.append(size_line)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:  # trailers, then the blank line
                trailer = f.readline(_MAX_LINE)
                parts.append(trailer)
                if trailer in (b"\r\n", b"\n", b""):
                    return b"".join(parts)
        data = f.read(size + 2)
        if len(data) < size + 2:
            raise ConnectionError("chunked body cut short")
        parts.append(data)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n) if n else b""
    if len(data) < n:
        raise ConnectionError("body cut short")
    return data


class _Upstream:
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock: socket.socket | None = None
        self.file: BinaryIO | None = None

    def connect(self) -> None:
        self.sock = socket.create_connection(self.address, timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A buffered binary reader; typeshed types makefile() with a buffering argument as IOBase.
        self.file = cast(BinaryIO, self.sock.makefile("rb", buffering=65536))

    def close(self) -> None:
        for closable in (self.file, self.sock):
            try:
                if closable is not None:
                    closable.close()
            except OSError:
                pass
        self.sock = self.file = None


class CountingProxy:
    """Three listening sockets (one per service) forwarding to Azurite, counting as they go."""

    def __init__(self, upstreams: dict[str, tuple[str, int]], host: str = "127.0.0.1") -> None:
        self.upstreams = upstreams
        self.counts = Counts()
        self.ports: dict[str, int] = {}
        self._listeners: list[socket.socket] = []
        self._stopped = threading.Event()
        for service in upstreams:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
            sock.listen(1024)
            self.ports[service] = sock.getsockname()[1]
            self._listeners.append(sock)
            threading.Thread(target=self._accept, args=(sock, service), name=f"accept-{service}", daemon=True).start()

    def _accept(self, sock: socket.socket, service: str) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = sock.accept()
            except OSError:
                return
            self.counts.note(f"{service} connections")
            threading.Thread(target=self._serve, args=(client, service), daemon=True).start()

    def _serve(self, client: socket.socket, service: str) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cf = cast(BinaryIO, client.makefile("rb", buffering=65536))
        up = _Upstream(self.upstreams[service])
        try:
            while True:
                first = cf.readline(_MAX_LINE)
                if not first:
                    return
                if first in (b"\r\n", b"\n"):
                    continue
                head = _read_head(cf, first)
                if head is None:
                    return
                lines, length, chunked, client_close = head
                body = _read_chunked(cf) if chunked else _read_exact(cf, length or 0)
                request = b"".join(lines) + body
                method, target = first.split(b" ", 2)[:2]
                status, response, upstream_close = self._exchange(up, request, method == b"HEAD")
                self._count(service, method.decode("latin-1"), target.decode("latin-1"), status, body, response)
                client.sendall(response)
                if upstream_close:
                    up.close()
                    return
                if client_close:
                    return
        except (OSError, ValueError, ConnectionError):
            return
        finally:
            up.close()
            try:
                cf.close()
                client.close()
            except OSError:
                pass

    def _exchange(self, up: _Upstream, request: bytes, head_only: bool) -> tuple[int, bytes, bool]:
        """Send one request upstream and read the whole answer; a stale keep-alive is redialled once."""
        for attempt in (0, 1):
            if up.sock is None:
                up.connect()
            assert up.sock is not None and up.file is not None
            try:
                up.sock.sendall(request)
                status_line = up.file.readline(_MAX_LINE)
            except OSError:
                status_line = b""
            if status_line:
                break
            up.close()
            if attempt:
                raise ConnectionError("upstream closed the connection")
        upstream = up.file
        assert upstream is not None  # connected above
        parts: list[bytes] = []
        while True:
            head = _read_head(upstream, status_line)
            if head is None:
                raise ConnectionError("upstream closed mid-answer")
            lines, length, chunked, close = head
            status = int(status_line.split(b" ", 2)[1])
            parts.extend(lines)
            if 100 <= status < 200:  # an interim answer: pass it on and read the real one
                status_line = upstream.readline(_MAX_LINE)
                continue
            break
        if head_only or status in (204, 304):
            pass
        elif chunked:
            parts.append(_read_chunked(upstream))
        elif length is not None:
            parts.append(_read_exact(upstream, length))
        else:  # delimited by the end of the connection
            parts.append(upstream.read())
            close = True
        return status, b"".join(parts), close

    def _count(self, service: str, method: str, target: str, status: int, body: bytes, response: bytes) -> None:
        kind, resource = classify(service, method, target)
        if kind == "receive":
            messages = response.count(b"<QueueMessage>")
            if messages == 0 and status < 400:
                kind = "receive-empty"
            else:
                self.counts.note(f"queue messages-received {resource}", messages)
        elif kind == "batch":
            ops = _BATCH_OP.findall(body)
            if ops:
                resource = ops[0][1].decode("latin-1")
            self.counts.note(f"table batch-operations {resource}", len(ops))
        elif kind == "query":
            self.counts.query(resource, query_filter(target))
        self.counts.request(f"{service} {kind} {resource}".rstrip(), status)

    def close(self) -> None:
        self._stopped.set()
        for sock in self._listeners:
            try:
                sock.close()
            except OSError:
                pass


# ---- control endpoint and process entry point --------------------------------------------------


def serve_control(proxy: CountingProxy, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/counts":
                body, status = b'{"error": "not found"}', 404
            else:
                body, status = json.dumps(proxy.counts.snapshot()).encode(), 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
    return server


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay_dev.bench.proxy", description=__doc__.split("\n\n")[0])
    for service in SERVICES:
        parser.add_argument(
            f"--{service}", type=_address, required=True, metavar="HOST:PORT", help=f"Azurite's {service} endpoint"
        )
    args = parser.parse_args(argv)
    proxy = CountingProxy({s: getattr(args, s) for s in SERVICES})
    control = serve_control(proxy)
    print(json.dumps({**proxy.ports, "control": control.server_address[1]}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def watch_stdin() -> None:
        try:
            sys.stdin.buffer.read()
        finally:
            stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.wait(1.0):
        pass
    proxy.close()
    control.shutdown()
    sys.stdout.flush()
    # A daemon thread is still blocked reading stdin: leave without interpreter finalisation.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
