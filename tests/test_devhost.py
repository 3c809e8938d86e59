"""The dev host behaves as the Functions host does for this app: routes, queue semantics, signals."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timezone

import pytest
import requests
from azure.storage.queue import QueueServiceClient
from standardwebhooks.webhooks import Webhook

from conftest import ROOT, free_port, wait_until
from relay.devhost import QueueOptions, QueueWorker, compile_template, cron_matches, parse_timespan


def test_route_templates_and_precedence() -> None:
    """Route templates match like the host's: parameters, constraints, optional and catch-all parts."""
    assert compile_template("subscriptions/{id}").match("subscriptions/abc").group("id") == "abc"
    assert not compile_template("subscriptions/{id}").match("subscriptions/a/b")
    assert compile_template("items/{id:int}").match("items/7")
    assert compile_template("files/{*rest}").match("files/a/b/c").group("rest") == "a/b/c"


def test_host_json_settings_are_read() -> None:
    """host.json's queue settings and timespans are understood as the host reads them."""
    assert parse_timespan("00:00:01") == 1 and parse_timespan("1.02:00:00") == 93600
    opts = QueueOptions.from_host_json({"extensions": {"queues": {"batchSize": 4, "maxDequeueCount": 2,
                                                                  "maxPollingInterval": "00:00:02"}}})
    assert (opts.batch_size, opts.new_batch_threshold, opts.max_dequeue_count, opts.max_polling_interval) == \
        (4, 2, 2, 2.0)


def test_ncrontab_schedules() -> None:
    """Six-field NCRONTAB schedules fire at the right seconds."""
    at = datetime(2026, 11, 22, 10, 5, 0, tzinfo=timezone.utc)
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
    worker = QueueWorker(name, queue, poison, failing, QueueOptions(batch_size=2, new_batch_threshold=1,
                                                                    max_dequeue_count=3, max_polling_interval=0.2),
                         stop)
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
        proc = subprocess.Popen([sys.executable, "-m", "relay", "receive", "--port", str(port), "--secret", secret],
                                cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "receiving on" in out.read_text(), 30, "the receiver to start")
        body = '{"specversion":"1.0","id":"e1"}'
        now = datetime.now(timezone.utc)
        headers = {"webhook-id": "e1", "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": Webhook(secret).sign("e1", now, body)}
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
