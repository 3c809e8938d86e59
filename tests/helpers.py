"""What the tests share besides fixtures: the dev host as a process, loopback webhook
receivers, and waiting for a condition that has no event to block on."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from relay.store.storage import DELIVERY_QUEUE, DUE_TABLE, FANOUT_QUEUE
from relay_dev.azurite import Azurite, free_port, stop_group
from relay_dev.azurite import wait_until as _wait_until

__all__ = [
    "FUNCTION_KEY",
    "ROOT",
    "Answer",
    "Azurite",
    "FakeResolver",
    "InProcessApp",
    "Received",
    "Receiver",
    "RelayProcess",
    "Reply",
    "free_port",
    "nullable_as_draft4",
    "problem_of",
    "refused_ports",
    "wait_until",
]

ROOT = Path(__file__).resolve().parent.parent
FUNCTION_KEY = "test-function-key"

# The tier of the test now running, set by tests/conftest.py (None outside pytest's run of a test).
running_tier: str | None = None
# This process's folder for the dev hosts' logs (each xdist worker has its own); conftest removes it
# when the session ends, so no log is left behind in /tmp.
log_dir: Path | None = None


def _log_dir() -> Path:
    global log_dir
    if log_dir is None:
        log_dir = Path(tempfile.mkdtemp(prefix="relay-test-logs-"))
    return log_dir


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Await a condition that has no event to block on (a queue draining, a process starting)."""
    return _wait_until(predicate, timeout, what, error=AssertionError)


class FakeResolver:
    """A resolver for the outbound client answering from a table; a name not in the table (an IP
    literal, say) fails the test outright."""

    def __init__(self, table: dict[str, list[str] | list[list[str]]], sequence: bool = False) -> None:
        self.table = table
        self.sequence = sequence
        self.calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> list[str]:
        with self._lock:
            self.calls.append((host, port))
            if host not in self.table:
                raise AssertionError(f"resolver asked about {host!r}, which it should never need")
            answers = self.table[host]
            if self.sequence:
                # One answer list per call, the last one repeating: a name that changes its mind.
                index = min(sum(1 for h, _ in self.calls if h == host) - 1, len(answers) - 1)
                return list(cast(list[str], answers[index]))
            return list(cast(list[str], answers))


class RelayProcess:
    """`python -m relay dev` in its own process group, so a test can SIGKILL it and restart it."""

    def __init__(self, azurite: Azurite, env: dict[str, str], function_key: str | None = FUNCTION_KEY) -> None:
        # 0 until the first start: the dev host binds a port the kernel picks and logs it. A port
        # found free here and bound seconds later by the host may meanwhile be a parallel test's
        # receiver (the host exits) or dev host (whose /health this one would then take for its own).
        # A restart keeps the port, as a restarted app keeps its address.
        self.port = 0
        self.azurite = azurite
        self.function_key = function_key
        self.env = {
            **os.environ,
            "AzureWebJobsStorage": azurite.connection_string,
            "RELAY_ALLOW_PRIVATE_TARGETS": "true",
            "RELAY_RETRY_SCHEDULE": "100ms,100ms,100ms",
            "RELAY_DELIVERY_TIMEOUT": "5",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._queues: list[Any] | None = None
        self.log_path = _log_dir() / f"relay-dev-{uuid.uuid4().hex[:8]}.log"
        self.session = requests.Session()
        if function_key:
            self.session.headers["x-functions-key"] = function_key

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> RelayProcess:
        if running_tier not in (None, "devhost"):
            raise AssertionError(
                f"a {running_tier} test started the dev host: tests/conftest.py must file it in the devhost tier"
            )
        args = [sys.executable, "-m", "relay", "dev", "--port", str(self.port)]
        if self.function_key:
            args += ["--function-key", self.function_key]
        self._log = open(self.log_path, "ab")
        offset = self._log.tell()
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group (killed as one), not its own session: a session is a scheduler
            # autogroup of its own, which would escape the parallel part's `nice -n 19` (Makefile).
            process_group=0,
        )
        if not self.port:
            self.port = wait_until(lambda: self._bound(offset), 60, "the dev host to listen")
        wait_until(self._healthy, 60, "the dev host to answer")
        return self

    def _bound(self, offset: int) -> int | None:
        """The port in this start's "listening on" line (relay_dev/devhost.py), once it is logged."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"dev host exited: {self.log_path.read_text()[-3000:]}")
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            found = re.search(rb"listening on http://127\.0\.0\.1:(\d+)/", log.read())
        return int(found.group(1)) if found else None

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"dev host exited: {self.log_path.read_text()[-3000:]}")
        try:
            return requests.get(f"{self.base}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, in-flight work is abandoned mid-way."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        stop_group(self.proc, 20)
        self.proc = None
        self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ---- API helpers --------------------------------------------------------------------------

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.session.post(f"{self.base}/{path}", json=body, timeout=30, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(f"{self.base}/{path}", timeout=30, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.session.delete(f"{self.base}/{path}", timeout=30, **kw)

    def subscribe(self, url: str, **fields: Any) -> dict[str, Any]:
        response = self.post("subscriptions", {"notificationUrl": url, **fields})
        assert response.status_code == 201, response.text
        return {**response.json(), "location": response.headers["Location"]}

    def publish(self, event: Any) -> requests.Response:
        response = self.post("events", event)
        assert response.status_code == 202, response.text
        return response

    def queue_idle(self) -> bool:
        """No fan-out or delivery work waiting or in flight (retries scheduled later count too:
        invisible messages, and rows of the due table, relay/store/due.py)."""
        if self._queues is None:
            service = QueueServiceClient.from_connection_string(self.azurite.connection_string)
            self._queues = [service.get_queue_client(q) for q in (FANOUT_QUEUE, DELIVERY_QUEUE)]
        if not all(q.get_queue_properties().approximate_message_count == 0 for q in self._queues):
            return False
        due = TableServiceClient.from_connection_string(self.azurite.connection_string).get_table_client(DUE_TABLE)
        try:
            return next(iter(due.query_entities("PartitionKey ne 'cursor'", results_per_page=1)), None) is None
        except ResourceNotFoundError:  # no relay of this Azurite has written a retry yet
            return True


# ---- receivers ----------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, dict[str, str], bytes]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # The relay opens up to 64 connections at once (its attempt threads); the socketserver default
    # backlog of 5 makes the kernel reset some of them, which a real receiver would not do.
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a sender killed mid-request (the SIGKILL tests) is expected, not news


@dataclass
class Receiver:
    """A loopback webhook receiver; `script` answers each request (default 200)."""

    script: Callable[[Received, int], Reply] | None = None
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                item = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    time.monotonic(),
                )
                with receiver.cond:
                    receiver.requests.append(item)
                    index = len(receiver.requests) - 1
                status, headers, body = receiver.script(item, index) if receiver.script else (200, {}, b"")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with receiver.cond:
                    receiver.cond.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"expected {count} requests, got {len(self.requests)} in {timeout}s")
            return list(self.requests)

    def ids(self) -> list[str]:
        with self.cond:
            return [r.headers.get("webhook-id", "") for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def nullable_as_draft4(schema: Any) -> Any:
    """A Swagger 2.0 schema as draft-4 says it, reading `x-nullable: true` as the designer does:
    this type (or one of these values), or null."""
    if isinstance(schema, list):
        return [nullable_as_draft4(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: (nullable_as_draft4(v) if isinstance(v, (dict, list)) and k not in ("enum", "required") else v)
        for k, v in schema.items()
    }
    if out.pop("x-nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


# ---- the function app in this process -----------------------------------------------------------


@dataclass
class Answer:
    """What a registered HTTP function answered, with the Content-Type the host would send."""

    status_code: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpFunction:
    name: str
    template: str
    call: Callable[[Any], Any]

    def match(self, path: str) -> dict[str, str] | None:
        """The route parameters if `path` (still percent-encoded) fits this function's route."""
        segments, parts = path.split("/"), self.template.strip("/").split("/")
        if len(segments) != len(parts):
            return None
        params: dict[str, str] = {}
        for segment, part in zip(segments, parts, strict=True):
            if part.startswith("{") and part.endswith("}"):
                if not segment:
                    return None
                params[part[1:-1].split(":")[0]] = unquote(segment)
            elif segment.lower() != part.lower():
                return None
        return params

    @property
    def precedence(self) -> tuple[int, ...]:
        # As the host routes: literal segments win over parameters.
        return tuple(1 if p.startswith("{") else 0 for p in self.template.split("/"))


_http_functions: list[HttpFunction] = []


def http_functions() -> list[HttpFunction]:
    """The app's HTTP functions, most literal route first. `get_functions()` builds the index
    once per app object (a second call refuses the names it has seen), as the worker calls it."""
    if not _http_functions:
        import function_app

        for fn in function_app.app.get_functions():
            trigger = fn.get_trigger()
            if trigger.get_binding_name() == "httpTrigger":
                _http_functions.append(
                    HttpFunction(
                        fn.get_function_name(), trigger.route or fn.get_function_name(), fn.get_user_function()
                    )
                )
        _http_functions.sort(key=lambda f: f.precedence)
    return _http_functions


class InProcessApp:
    """`function_app.app`'s HTTP functions called in this process with an `azure.functions.HttpRequest`,
    found by their registered route (wherever the handlers live: module or Blueprint). What the
    host itself does (the function key, body limits by Content-Length, Host checks) is not here:
    that is tested against the dev host."""

    base = "http://localhost/api"

    def __init__(self) -> None:
        import azure.functions as func

        self._request_type = func.HttpRequest
        self.functions = http_functions()

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """`path` as it follows /api/, query included and percent-encoded as on the wire;
        `json_body` is sent as application/json unless `data` is given."""
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        if data is None and json_body is not None:
            data = json.dumps(json_body).encode()
            headers.setdefault("content-type", "application/json")
        split = urlsplit(path)
        for function in self.functions:
            route_params = function.match(split.path.strip("/"))
            if route_params is None:
                continue
            request = self._request_type(
                method=method.upper(),
                url=f"{self.base}/{path}",
                headers=headers,
                params=dict(parse_qsl(split.query, keep_blank_values=True)),
                route_params=route_params,
                body=data or b"",
            )
            response = function.call(request)
            out = {k.lower(): v for k, v in response.headers.items()}
            if response.mimetype and "content-type" not in out:
                out["content-type"] = response.mimetype + (f"; charset={response.charset}" if response.charset else "")
            return Answer(response.status_code, out, response.get_body() or b"")
        raise AssertionError(f"no function's route fits {path}")

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("PUT", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Answer:
        return self.request("DELETE", path, **kw)

    def subscribe(self, url: str, **fields: Any) -> dict[str, Any]:
        response = self.post("subscriptions", {"notificationUrl": url, **fields})
        assert response.status_code == 201, response.text
        return response.json()


def problem_of(response: Answer | requests.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """The problem+json document of a refusal, after checking its shape; `field` must be named."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    doc = response.json()
    assert doc["status"] == status and doc["title"] and doc["type"].startswith("urn:event-relay:problem:")
    assert FUNCTION_KEY not in response.text and "Traceback" not in response.text
    if field is not None:
        assert field in [e["field"] for e in doc.get("errors", [])], response.text
    return doc


def autogroup(pid: int | str) -> str | None:
    """The scheduler autogroup `pid` runs in, or None: the file is missing where the kernel has no
    autogroups, and empty for a process in the default one, the root task group, which holds every
    session never started since boot (kernel/sched/autogroup.c prints nothing unless the task's
    group is an autogroup). On CI's machine the tests run there; so does PID 1 here."""
    try:
        words = Path(f"/proc/{pid}/autogroup").read_text().split()
    except OSError:
        return None
    return words[0] if words else None


@contextlib.contextmanager
def refused_ports(count: int = 1) -> Iterator[list[int]]:
    """Loopback ports that refuse a connection at once for as long as the block runs: each is bound
    and never listened on, so no other test's receiver or dev host can take it meanwhile. A port
    found free and closed again (free_port) may be a parallel test's receiver a moment later, and
    work sent there reaches that test instead (CI: a batch test's "dead" target answered 200)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        yield [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def share_our_priority() -> int:
    """Give every process below this one that runs in a session of its own this process's nice
    value (`make test` runs the parallel part at `nice -n 19`). A new session is a new scheduler
    autogroup, and the kernel shares the CPU between autogroups by the autogroup's own nice value
    (0) before a process's nice counts (sched(7), "The autogroup feature"): Chromium puts its
    processes in sessions of their own, so without this the browser tests would take the CPU from
    the serial tests beside them. Returns how many autogroups were changed."""
    ours, own = os.nice(0), autogroup("self")  # own is None in the default group: still share
    if ours <= 0 or not Path("/proc/self/autogroup").exists():
        return 0  # nothing to give, or no autogroups: nice values count as they are
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    changed, todo = 0, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            group = Path(f"/proc/{pid}/autogroup")
            name, _, nice = group.read_text().split()
            if name != own and int(nice) < ours:
                group.write_text(str(ours))
                changed += 1
        except (OSError, ValueError):
            continue  # gone meanwhile, not ours to change, or in the default group (empty file)
    return changed
