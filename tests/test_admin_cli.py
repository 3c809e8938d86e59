"""`python -m relay admin`, run as a separate process against the dev host (and, for the answers
a keys-mode relay never gives, against a loopback server that answers them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.helpers import FUNCTION_KEY, ROOT, Receiver, RelayProcess, wait_until


@pytest.fixture(scope="module")
def relay(azurite: Any) -> Iterator[RelayProcess]:
    process = RelayProcess(azurite, {"RELAY_RETRY_SCHEDULE": "100ms,100ms"}).start()
    yield process
    process.stop()


def admin(
    relay: RelayProcess | None,
    *args: str,
    key: str | None = FUNCTION_KEY,
    url: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("RELAY_URL", "RELAY_ADMIN_KEY")}
    command = [sys.executable, "-m", "relay", "admin"]
    if url or relay:
        command += ["--url", url or f"http://127.0.0.1:{relay.port}"]
    if key:
        command += ["--key", key]
    return subprocess.run(
        command + list(args), cwd=ROOT, env={**base, **(env or {})}, capture_output=True, text=True, timeout=60
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_subscriptions_list_show_delete(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    receiver = receiver_factory()
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type], description="CLI test")
    table = ok(admin(relay, "subscriptions", "list", "--event-type", unique_type))
    header, *rows = table.splitlines()
    assert header.split()[:4] == ["ID", "STATUS", "EVENT", "TYPES"]
    assert any(sub["id"] in row and receiver.url in row and "active" in row for row in rows)
    listed = json.loads(ok(admin(relay, "subscriptions", "list", "--event-type", unique_type, "--json")))
    assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]
    assert (
        json.loads(
            ok(admin(relay, "subscriptions", "list", "--status", "disabled", "--event-type", unique_type, "--json"))
        )
        == []
    )
    # --json after the command or before the group, as the contract writes it.
    shown = json.loads(ok(admin(relay, "--json", "subscriptions", "show", sub["id"])))
    assert shown["id"] == sub["id"] and shown["description"] == "CLI test"
    people = ok(admin(relay, "subscriptions", "show", sub["id"]))
    assert "id:" in people and sub["id"] in people and "CLI test" in people
    assert ok(admin(relay, "subscriptions", "delete", sub["id"])).strip() == f"deleted subscription {sub['id']}"
    one_line_error(admin(relay, "subscriptions", "show", sub["id"]), 1, "404", "no subscription has this id")


def test_rotate_secret_and_activate(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    state = {"gone": True}
    receiver = receiver_factory(lambda item, index: (410, {}, b"") if state["gone"] else (200, {}, b""))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    rotated = json.loads(ok(admin(relay, "subscriptions", "rotate-secret", sub["id"], "--json")))
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != sub["secret"]
    people = ok(admin(relay, "subscriptions", "rotate-secret", sub["id"]))
    assert "shown once" in people and people.strip().splitlines()[-1].startswith("whsec_")
    relay.publish({"type": unique_type, "data": {}})
    wait_until(lambda: relay.get(f"subscriptions/{sub['id']}").json()["status"] == "disabled", 30, "disable")
    assert "410" in ok(admin(relay, "subscriptions", "list", "--status", "disabled", "--event-type", unique_type))
    state["gone"] = False
    assert ok(admin(relay, "subscriptions", "activate", sub["id"])).strip() == f"subscription {sub['id']} is active"
    one_line_error(admin(relay, "subscriptions", "rotate-secret", uuid.uuid4().hex), 1, "404")


def test_rotate_secret_takes_a_grace(relay: RelayProcess, unique_type: str) -> None:
    """`--grace SECONDS`: how long the previous secret keeps signing (issue 23); 0 ends it at once,
    no flag leaves the relay's day, a value out of range is the relay's 400 naming graceSeconds."""
    sub = relay.subscribe(f"http://127.0.0.1:9/{uuid.uuid4().hex}", eventTypes=[unique_type])
    hour = json.loads(ok(admin(relay, "subscriptions", "rotate-secret", sub["id"], "--grace", "3600", "--json")))
    ends = datetime.fromisoformat(hour["previousSecretExpiresAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=58) < ends - datetime.now(UTC) <= timedelta(hours=1)
    people = ok(admin(relay, "subscriptions", "rotate-secret", sub["id"]))
    assert "also signs until" in people and people.strip().splitlines()[-1].startswith("whsec_")
    at_once = json.loads(ok(admin(relay, "subscriptions", "rotate-secret", sub["id"], "--grace", "0", "--json")))
    assert "previousSecretExpiresAt" not in at_once and at_once["secret"].startswith("whsec_")
    assert "signs nothing more" in ok(admin(relay, "subscriptions", "rotate-secret", sub["id"], "--grace", "0"))
    one_line_error(admin(relay, "subscriptions", "rotate-secret", sub["id"], "--grace", "604801"), 1, "graceSeconds")


def test_deliveries_and_replay_with_progress(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    state = {"healthy": False}
    receiver = receiver_factory(lambda item, index: (200, {}, b"") if state["healthy"] else (503, {}, b""))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    for n in range(2):
        relay.publish({"type": unique_type, "data": {"n": n}})
    wait_until(
        lambda: len(relay.get(f"subscriptions/{sub['id']}/deliveries?status=failed").json()["value"]) == 2,
        30,
        "two failed deliveries",
    )
    table = ok(admin(relay, "deliveries", "list", sub["id"], "--status", "failed"))
    header, *rows = table.splitlines()
    assert header.split()[:5] == ["EVENT", "TYPE", "STATUS", "ATTEMPTS", "CODE"]
    assert len(rows) == 2 and all("failed" in r and " 503 " in r and unique_type in r for r in rows)
    failed = json.loads(ok(admin(relay, "deliveries", "list", sub["id"], "--status", "failed", "--json")))
    assert {d["attempts"] for d in failed} == {3} and {d["lastStatusCode"] for d in failed} == {503}

    state["healthy"] = True
    result = admin(relay, "replay", sub["id"], "--since", "1h", "--wait")
    out = ok(result)
    assert "succeeded: 2 deliveries queued again" in out
    assert "replay" in result.stderr and "succeeded" in result.stderr  # the progress, on stderr
    receiver.wait_for(3 * 2 + 2)
    wait_until(
        lambda: json.loads(ok(admin(relay, "deliveries", "list", sub["id"], "--status", "failed", "--json"))) == [],
        30,
        "the failures to clear",
    )

    started = json.loads(ok(admin(relay, "replay", sub["id"], "--since", "2026-01-01T00:00:00Z", "--all", "--json")))
    assert started["location"].endswith(f"/api/operations/{started['id']}")
    one_line_error(admin(relay, "replay", uuid.uuid4().hex, "--since", "1h"), 1, "404")
    bad = admin(relay, "replay", sub["id"], "--since", "yesterday")
    assert bad.returncode == 2 and "RFC 3339" in bad.stderr and "Traceback" not in bad.stderr


def test_event_types_and_publish(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str, tmp_path: Any
) -> None:
    receiver = receiver_factory()
    relay.subscribe(receiver.url, eventTypes=[unique_type])
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}))
    assert (
        ok(
            admin(relay, "event-types", "put", unique_type, "--description", "CLI type", "--schema", str(schema))
        ).strip()
        == f"registered event type {unique_type}"
    )
    assert (
        ok(admin(relay, "event-types", "put", unique_type, "--schema", f"@{schema}")).strip()
        == f"updated event type {unique_type}"
    )
    line = [r for r in ok(admin(relay, "event-types", "list")).splitlines() if r.startswith(unique_type + " ")]
    assert len(line) == 1 and "yes" in line[0]
    types = json.loads(ok(admin(relay, "event-types", "list", "--json")))
    assert any(t["name"] == unique_type and t["schema"]["required"] == ["n"] for t in types)
    one_line_error(
        admin(relay, "event-types", "put", unique_type, "--schema", '{"type": "nummber"}'), 1, "400", "schema"
    )
    one_line_error(admin(relay, "event-types", "put", unique_type, "--schema", "{not json"), 2, "--schema")

    out = ok(admin(relay, "publish", unique_type, "--data", '{"n": 7}', "--subject", "cli"))
    assert out.startswith(f"published {unique_type} as event ")
    delivered = receiver.wait_for(1)[0].json()
    assert delivered["data"] == {"n": 7} and delivered["subject"] == "cli"
    published = json.loads(ok(admin(relay, "publish", unique_type, "--data", '{"n": 8}', "--json")))
    assert receiver.wait_for(2)[1].headers["webhook-id"] == published["id"]
    one_line_error(admin(relay, "publish", unique_type, "--data", '{"n": "seven"}'), 1, "400", "data.n")


def test_credentials_from_the_environment(relay: RelayProcess) -> None:
    result = admin(
        None,
        "event-types",
        "list",
        "--json",
        key=None,
        env={"RELAY_URL": f"http://127.0.0.1:{relay.port}/api", "RELAY_ADMIN_KEY": FUNCTION_KEY},
    )
    assert isinstance(json.loads(ok(result)), list)


def test_error_exits(relay: RelayProcess, refused_port: int) -> None:
    one_line_error(admin(relay, "subscriptions", "list", key="wrong-key"), 3, "401", "--key")
    one_line_error(admin(relay, "event-types", "list", key=None), 3, "401")
    one_line_error(
        admin(None, "subscriptions", "list", url=f"http://127.0.0.1:{refused_port}"), 5, "cannot reach the relay"
    )
    one_line_error(admin(None, "subscriptions", "list", url="ftp://example"), 2, "--url")
    usage = admin(relay, "subscriptions", "frobnicate")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


@pytest.fixture
def answering() -> Iterator[Callable[[int, bytes], str]]:
    """A loopback server that answers every request with one status (what keys mode never says)."""
    servers: list[ThreadingHTTPServer] = []

    def make(status: int, body: bytes) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def test_forbidden_and_server_errors(answering: Callable[[int, bytes], str]) -> None:
    forbidden = answering(403, json.dumps({"status": 403, "detail": "needs Relay.Admin"}).encode())
    one_line_error(
        admin(None, "subscriptions", "list", url=forbidden, key=None, env={"RELAY_ADMIN_KEY": ""}),
        3,
        "403",
        "needs Relay.Admin",
    )
    failing = answering(503, json.dumps({"status": 503, "detail": "storage is\nunavailable"}).encode())
    one_line_error(admin(None, "event-types", "list", url=failing), 4, "503", "storage is unavailable")
    not_json = answering(200, b"<html>hello</html>")
    one_line_error(admin(None, "event-types", "list", url=not_json), 4, "not JSON")


# ---- issue 22, item 13 --------------------------------------------------------------------------


def test_deliveries_list_is_newest_first_and_says_when_it_truncates(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    receiver = receiver_factory()
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    published = []
    for n in range(6):  # one at a time, so each delivery's attempt is later than the one before
        published.append(relay.publish({"type": unique_type, "data": {"n": n}}).json()["id"])
        receiver.wait_for(n + 1)
    wait_until(
        lambda: len(relay.get(f"subscriptions/{sub['id']}/deliveries?status=succeeded").json()["value"]) == 6,
        30,
        "six deliveries in the log",
    )
    listed = json.loads(ok(admin(relay, "deliveries", "list", sub["id"], "--json")))
    assert [d["eventId"] for d in listed] == published[::-1]
    times = [d["lastAttemptAt"] for d in listed]
    assert times == sorted(times, reverse=True)
    people = admin(relay, "deliveries", "list", sub["id"])
    assert [r.split()[0] for r in ok(people).splitlines()[1:]] == published[::-1]
    assert people.stderr == ""
    # --limit: the newest ones, and a line on stderr saying there is more (stdout stays JSON).
    cut = admin(relay, "deliveries", "list", sub["id"], "--limit", "2", "--json")
    assert [d["eventId"] for d in json.loads(ok(cut))] == published[:-3:-1]
    assert "showing 2 of 6" in cut.stderr and "--limit" in cut.stderr
    relay.subscribe(receiver_factory().url, eventTypes=[unique_type])  # a second one: a list longer than 1
    subs = admin(relay, "subscriptions", "list", "--limit", "1", "--json")
    assert len(json.loads(ok(subs))) == 1
    assert "showing the first 1" in subs.stderr and "--limit" in subs.stderr


def test_bad_status_and_pattern_are_explained(relay: RelayProcess) -> None:
    for command in (["deliveries", "list", uuid.uuid4().hex], ["subscriptions", "list"]):
        bad = admin(relay, *command, "--status", "bogus")
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert "Status." not in bad.stderr and "<" not in bad.stderr, bad.stderr
        assert "'active'" in bad.stderr or "'failed'" in bad.stderr, bad.stderr
    pattern = admin(relay, "subscriptions", "list", "--event-type", "order.*")
    assert pattern.returncode == 2 and "Traceback" not in pattern.stderr
    assert "patterns" in pattern.stderr and "order.*" in pattern.stderr, pattern.stderr


def test_deleting_what_is_not_there_says_so(relay: RelayProcess, unique_type: str) -> None:
    missing = uuid.uuid4().hex
    one_line_error(admin(relay, "subscriptions", "delete", missing), 1, "not found", missing)
    one_line_error(admin(relay, "event-types", "delete", unique_type), 1, "not found", unique_type)


def test_event_types_show_and_delete(relay: RelayProcess, unique_type: str) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    ok(admin(relay, "event-types", "put", unique_type, "--description", "shown", "--schema", json.dumps(schema)))
    shown = json.loads(ok(admin(relay, "event-types", "show", unique_type, "--json")))
    assert shown["name"] == unique_type and shown["description"] == "shown" and shown["schema"] == schema
    people = ok(admin(relay, "event-types", "show", unique_type))
    assert "name:" in people and unique_type in people and '"integer"' in people
    deleted = json.loads(ok(admin(relay, "event-types", "delete", unique_type, "--json")))
    assert deleted == {"name": unique_type, "deleted": True}
    assert relay.get(f"event-types/{unique_type}").status_code == 404
    one_line_error(admin(relay, "event-types", "show", unique_type), 1, "404")
    ok(admin(relay, "event-types", "put", unique_type))
    assert ok(admin(relay, "event-types", "delete", unique_type)).strip() == f"deleted event type {unique_type}"


def test_failures_across_the_relay(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    bad = receiver_factory(lambda item, index: (502, {}, b"bad gateway"))
    good = receiver_factory()
    bad_sub = relay.subscribe(bad.url, eventTypes=[unique_type])
    good_sub = relay.subscribe(good.url, eventTypes=[unique_type])
    event = relay.publish({"type": unique_type, "data": {}}).json()["id"]
    good.wait_for(1)

    def listed() -> list[dict[str, Any]]:
        return [f for f in json.loads(ok(admin(relay, "failures", "--since", "1h", "--json"))) if f["eventId"] == event]

    found = wait_until(listed, 60, "the failure to be listed")
    assert len(found) == 1
    failure = found[0]
    assert failure["subscriptionId"] == bad_sub["id"] and failure["notificationUrl"] == bad.url
    assert failure["eventType"] == unique_type and failure["lastStatusCode"] == 502 and failure["attempts"] == 3
    assert good_sub["id"] not in {f["subscriptionId"] for f in listed()}
    table = ok(admin(relay, "failures", "--since", "1h"))
    header, *rows = table.splitlines()
    assert header.split()[:3] == ["LAST", "ATTEMPT", "SUBSCRIPTION"]
    assert any(event in r and bad_sub["id"] in r and "502" in r for r in rows)
    # Older than the window: not listed.
    from datetime import datetime, timedelta

    after = datetime.fromisoformat(failure["lastAttemptAt"].replace("Z", "+00:00")) + timedelta(milliseconds=1)
    later = json.loads(ok(admin(relay, "failures", "--since", after.isoformat().replace("+00:00", "Z"), "--json")))
    assert event not in {f["eventId"] for f in later}
    usage = admin(relay, "failures", "--since", "last week")
    assert usage.returncode == 2 and "RFC 3339" in usage.stderr


def test_overview_as_the_console_shows_it(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    bad = receiver_factory(lambda item, index: (500, {}, b""))
    sub = relay.subscribe(bad.url, eventTypes=[unique_type])
    relay.publish({"type": unique_type, "data": {}})

    def counted() -> Any:
        doc = json.loads(ok(admin(relay, "overview", "--json")))
        return doc if doc["bySubscription"].get(sub["id"], {}).get("failed") else None

    doc = wait_until(counted, 60, "the failure to be counted")
    assert doc["window"] == "1h" and doc["subscriptions"]["active"] >= 1
    assert json.loads(ok(admin(relay, "overview", "--window", "24h", "--json")))["window"] == "24h"
    people = ok(admin(relay, "overview", "--window", "24h"))
    assert "failed" in people and "active subscriptions" in people
    assert any(sub["id"] in line and bad.url in line for line in people.splitlines())
    assert admin(relay, "overview", "--window", "7d").returncode == 2


def test_pause_resume_test_and_resend(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    """The controls of the console, from the shell: pause holds, resume delivers the held event,
    a test event reaches this subscription only, resend delivers one event again, replay filters."""
    receiver = receiver_factory()
    sub = relay.subscribe(receiver.url, eventTypes=[f"{unique_type}.*"])
    assert ok(admin(relay, "subscriptions", "pause", sub["id"])).startswith(f"subscription {sub['id']} is paused")
    event_id = relay.publish({"type": f"{unique_type}.a", "data": {"n": 1}}).json()["id"]
    wait_until(lambda: relay.get(f"subscriptions/{sub['id']}/deliveries?status=pending").json()["value"], 30, "held")
    assert receiver.requests == []
    resumed = json.loads(ok(admin(relay, "subscriptions", "resume", sub["id"], "--json")))
    assert resumed["status"] == "active"
    assert receiver.wait_for(1, 60)[0].headers["webhook-id"] == event_id

    sent = json.loads(ok(admin(relay, "subscriptions", "test", sub["id"], "--data", '{"hello": 1}', "--json")))
    got = receiver.wait_for(2, 60)[1]
    assert got.headers["webhook-id"] == sent["id"] and got.json()["data"] == {"hello": 1}
    assert got.json()["type"] == "relay.test"
    one_line_error(admin(relay, "subscriptions", "test", sub["id"], "--type", "other.type"), 1, "400", "type")

    out = ok(admin(relay, "deliveries", "resend", sub["id"], event_id))
    assert f"event {event_id} queued again" in out
    assert receiver.wait_for(3, 60)[2].headers["webhook-id"] == event_id
    one_line_error(admin(relay, "deliveries", "resend", sub["id"], "no-such-event"), 1, "404")

    relay.publish({"type": f"{unique_type}.b", "data": {"n": 2}})
    receiver.wait_for(4, 60)
    started = json.loads(
        ok(
            admin(
                relay,
                "replay",
                sub["id"],
                "--since",
                "1h",
                "--all",
                "--event-type",
                f"{unique_type}.a",
                "--wait",
                "--json",
            )
        )
    )
    assert started["replayed"] == 1
    assert receiver.wait_for(5, 60)[4].headers["webhook-id"] == event_id
