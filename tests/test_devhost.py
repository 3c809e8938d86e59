"""The dev host behaves as the Functions host does for this app: routes, queue semantics, signals."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime

import pytest
import requests
from azure.storage.queue import QueueServiceClient
from standardwebhooks.webhooks import Webhook

from relay_dev.devhost import QueueOptions, QueueWorker, compile_template, cron_matches, parse_timespan
from tests.helpers import ROOT, free_port, wait_until


def test_route_templates_and_precedence() -> None:
    """Route templates match like the host's: parameters, constraints, optional and catch-all parts."""
    assert compile_template("subscriptions/{id}").match("subscriptions/abc").group("id") == "abc"
    assert not compile_template("subscriptions/{id}").match("subscriptions/a/b")
    assert compile_template("items/{id:int}").match("items/7")
    assert compile_template("files/{*rest}").match("files/a/b/c").group("rest") == "a/b/c"


def test_host_json_settings_are_read() -> None:
    """host.json's queue settings and timespans are understood as the host reads them."""
    assert parse_timespan("00:00:01") == 1 and parse_timespan("1.02:00:00") == 93600
    opts = QueueOptions.from_host_json(
        {"extensions": {"queues": {"batchSize": 4, "maxDequeueCount": 2, "maxPollingInterval": "00:00:02"}}}
    )
    assert (opts.batch_size, opts.new_batch_threshold, opts.max_dequeue_count, opts.max_polling_interval) == (
        4,
        2,
        2,
        2.0,
    )


def test_ncrontab_schedules() -> None:
    """Six-field NCRONTAB schedules fire at the right seconds."""
    at = datetime(2026, 11, 22, 10, 5, 0, tzinfo=UTC)
    assert cron_matches("0 5 * * * *", at)
    assert not cron_matches("0 5 * * * *", at.replace(minute=6))
    assert cron_matches("*/15 * * * * *", at.replace(second=45))
    assert cron_matches("0 0-10 10 * * 0", at)  # 22 Nov 2026 is a Sunday


def test_failing_function_retries_then_poisons(azurite) -> None:
    """A function that keeps failing is retried up to maxDequeueCount, then its message is poisoned."""
    service = QueueServiceClient.from_connection_string(azurite.connection_string)
    name = f"t{uuid.uuid4().hex[:12]}"
    queue, poison = service.get_queue_client(name), service.get_queue_client(name + "-poison")
    queue.create_queue()
    poison.create_queue()
    queue.send_message(base64.b64encode(b"payload").decode())
    calls: list[tuple[bytes, int]] = []

    def failing(msg) -> None:
        calls.append((msg.get_body(), msg.dequeue_count))
        raise RuntimeError("always fails")

    stop = threading.Event()
    worker = QueueWorker(
        name,
        queue,
        poison,
        failing,
        QueueOptions(batch_size=2, new_batch_threshold=1, max_dequeue_count=3, max_polling_interval=0.2),
        stop,
    )
    worker.start()
    try:
        poisoned = wait_until(lambda: list(poison.peek_messages()), 30, "the poison queue")
    finally:
        stop.set()
        worker.drain(5)
    assert calls == [(b"payload", 1), (b"payload", 2), (b"payload", 3)]
    assert base64.b64decode(poisoned[0].content) == b"payload"
    assert queue.get_queue_properties().approximate_message_count == 0


def test_sigterm_stops_the_dev_host_cleanly(relay) -> None:
    """SIGTERM ends `python -m relay dev` with exit status 0."""
    relay.proc.send_signal(signal.SIGTERM)
    assert relay.proc.wait(30) == 0
    relay.proc = None


def test_receive_command_verifies_signatures(tmp_path) -> None:
    """`python -m relay receive --secret` prints each webhook and whether its signature is valid."""
    port, secret = free_port(), "whsec_" + base64.b64encode(b"k" * 32).decode()
    out = tmp_path / "out.txt"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "receive", "--port", str(port), "--secret", secret],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "receiving on" in out.read_text(), 30, "the receiver to start")
        body = '{"specversion":"1.0","id":"e1"}'
        now = datetime.now(UTC)
        headers = {
            "webhook-id": "e1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign("e1", now, body),
        }
        assert requests.post(f"http://127.0.0.1:{port}/x", data=body, headers=headers, timeout=10).status_code == 202
        headers["webhook-signature"] = "v1,AAAA"
        requests.post(f"http://127.0.0.1:{port}/x", data=body, headers=headers, timeout=10)
        wait_until(lambda: "INVALID" in out.read_text(), 10, "the second webhook")
        assert "signature valid" in out.read_text()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("path", ["/api/nope", "/elsewhere", "/api/subscriptions/a/b/c"])
def test_unknown_paths_are_404_problems(relay, path) -> None:
    """A path no function answers is a 404 problem, as on Azure."""
    response = relay.session.get(f"http://127.0.0.1:{relay.port}{path}", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


# ---- what a browser or a stray client can send to the dev host ---------------------------------


def _raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to the dev host; the status, headers and body of its answer (it closes)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_host_check_rules() -> None:
    """Own address with its port, or localhost[:port]; on a wildcard bind any IP literal; never a name."""
    from relay_dev.devhost import HostCheck

    check = HostCheck("127.0.0.1", "127.0.0.1", 7071)
    assert check.allows("127.0.0.1:7071") and check.allows("localhost:7071") and check.allows("LOCALHOST")
    for foreign in (
        "evil.example:7071",
        "evil.example",
        "127.0.0.1:7072",
        "localhost:80",
        "127.0.0.1",
        "127.0.0.1.nip.io:7071",
        "",
        None,
        "127.0.0.1:7071 x",
        "user@127.0.0.1:7071",
        "[::1]:7071",
    ):
        assert not check.allows(foreign), foreign
    wildcard = HostCheck("0.0.0.0", "0.0.0.0", 7071)
    assert wildcard.allows("192.168.1.20:7071") and wildcard.allows("[fe80::1]:7071")
    assert not wildcard.allows("rebind.example:7071")
    named = HostCheck("devbox.local", "10.0.0.5", 7071)
    assert named.allows("devbox.local:7071") and named.allows("10.0.0.5:7071")
    assert not named.allows("other.local:7071")


def test_foreign_host_header_is_refused(relay) -> None:
    """DNS rebinding: a request whose Host names another site is a 400 problem naming Host; own
    address and localhost are answered."""
    import http.client

    for host in (f"rebind.attacker.example:{relay.port}", f"127.0.0.1:{relay.port + 1}"):
        conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
        conn.putrequest("GET", "/api/health", skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        problem = json.loads(response.read())
        conn.close()
        assert response.status == 400, host
        assert response.getheader("Content-Type").startswith("application/problem+json")
        assert problem["errors"][0]["field"] == "Host"
    status, headers, body = _raw(relay.port, b"GET /api/health HTTP/1.1\r\n\r\n")  # no Host at all
    assert status == 400 and headers["content-type"].startswith("application/problem+json")
    for host in (f"localhost:{relay.port}", f"127.0.0.1:{relay.port}"):
        assert (
            requests.get(f"http://127.0.0.1:{relay.port}/api/health", headers={"Host": host}, timeout=10).status_code
            == 200
        )


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"TRACE /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n", 405),
        (b"BREW /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc", 405),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /api/health?code=SECRETKEY HTTP/9.x\r\n\r\n", 400),
        (bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00" * 140, 400),  # a TLS ClientHello
    ],
    ids=["trace", "unknown-method", "no-version", "bad-version", "tls-handshake"],
)
def test_odd_requests_get_a_problem_and_one_log_line(relay, request_bytes: bytes, status: int) -> None:
    """Unknown methods are 405 problem+json with Allow, a malformed request line or a TLS handshake
    on the plain port a 400 problem+json; one log line, no traceback, no query; the host goes on."""
    before = relay.logs()
    got, headers, body = _raw(relay.port, request_bytes)
    assert got == status
    assert headers["content-type"].startswith("application/problem+json")
    assert json.loads(body)["status"] == status
    if status == 405:
        assert "POST" in headers["allow"] and "TRACE" not in headers["allow"]
    assert relay.get("health").status_code == 200
    new = wait_until(lambda: relay.logs()[len(before) :].strip(), 10, "the log line")
    assert "Traceback" not in new and "AttributeError" not in new and "SECRETKEY" not in new
    assert len([line for line in new.splitlines() if f" {status} " in line]) == 1, new


def test_a_burst_of_new_connections_is_served(relay) -> None:
    """Dozens of clients connecting at the same moment (a pool of threads subscribing) are all
    answered at once: none is reset or left waiting because the listen backlog overflowed."""
    rounds, clients = 5, 64
    failures: list[str] = []
    for _ in range(rounds):
        barrier = threading.Barrier(clients)

        def one(barrier: threading.Barrier) -> None:
            barrier.wait()
            try:
                status, _, _ = _raw(
                    relay.port, b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                )
                if status != 200:
                    failures.append(str(status))
            except OSError as exc:
                failures.append(repr(exc))

        threads = [threading.Thread(target=one, args=(barrier,)) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
