"""Hardening, end to end: hostile URLs, receiver faults, bad input, missing keys, storage
outages and a process killed three times, each ending as the contract says."""

from __future__ import annotations

import base64
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from azure.storage.queue import QueueServiceClient

from tests.helpers import FUNCTION_KEY, Azurite, InProcessApp, RelayProcess, problem_of, wait_until


def test_rebinding_name_is_refused_at_delivery(azurite, receiver_factory) -> None:
    """A name public at subscribe and 127.0.0.1 at delivery is refused at delivery, nothing is sent.

    The resolver is injected (the relay's own seam for this) because no public DNS is reachable here.
    """
    from relay.core.models import EventRecord, Target
    from relay.core.settings import Settings
    from relay.outbound.sender import Sender, check_target
    from relay.pipeline.delivery import Deliverer
    from relay.store.storage import Endpoints, Storage

    receiver = receiver_factory()
    port = receiver.server.server_address[1]
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    def resolver(host: str, port: int) -> list[str]:
        return next(answers)

    url = f"https://rebind.example.test:{port}/hook"
    check_target(url, allow_private=False, resolver=resolver)  # what subscribe does: public, accepted
    settings = Settings.from_environ({"RELAY_RETRY_SCHEDULE": ""})
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    sender = Sender(allow_private=False, timeout=2, user_agent="t", resolver=resolver)
    deliverer = Deliverer(storage, settings, sender=sender)
    event = EventRecord(
        id="e1", type="t.x", source="s", time="2026-01-01T00:00:00Z", data=1, acceptedAt="2026-01-01T00:00:00Z"
    )
    sub_id = uuid.uuid4().hex
    log = ("e:20260101", "20260101T000000.000000Z_e1")
    deliverer.deliver(event, 1, log, log[1][:23], [Target(sub=sub_id, url=url, secret="whsec_" + "A" * 32)])
    rows = list(storage.table("relaydeliveries").query_entities("PartitionKey eq @p", parameters={"p": sub_id}))
    assert rows[0]["status"] == "failed" and "outbound guard" in rows[0]["lastError"]
    assert receiver.requests == []


def _last_delivery(relay, sub_id: str, status: str) -> dict:
    return wait_until(
        lambda: next(iter(relay.get(f"subscriptions/{sub_id}/deliveries?status={status}").json()["value"]), None),
        60,
        f"a {status} delivery",
    )


def _silent_server() -> tuple[int, socket.socket]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(sock.accept()[0]) for _ in range(16)], daemon=True).start()
    return sock.getsockname()[1], sock


def _resetting_server() -> tuple[int, socket.socket]:
    """Accepts, reads the request, and resets the connection."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1], sock


def test_receiver_faults_end_as_the_contract_says(relay_factory, receiver_factory, unique_type, refused_port) -> None:
    """500, 503+Retry-After, 429, silence, a refused port, a reset and a 10 MB body each end as
    specified, while the relay keeps answering."""
    # 3 s: long enough that no answer from a loopback receiver times out on a loaded machine (the
    # 500 must end with its code, the 429 and 503 must succeed on their second attempt).
    relay = relay_factory({"RELAY_RETRY_SCHEDULE": "100ms", "RELAY_DELIVERY_TIMEOUT": "3"})
    big = b"x" * (10 * 1024 * 1024)
    r500 = receiver_factory(lambda req, i: (500, {}, b"oops"))
    r503 = receiver_factory(lambda req, i: (503, {"Retry-After": "1"}, b"") if i == 0 else (200, {}, b""))
    r429 = receiver_factory(lambda req, i: (429, {}, b"") if i == 0 else (200, {}, b""))
    rbig = receiver_factory(lambda req, i: (200, {"Content-Type": "text/plain"}, big))
    silent_port, silent = _silent_server()
    reset_port, resetting = _resetting_server()
    subs = {
        name: relay.subscribe(url, eventTypes=[unique_type])["id"]
        for name, url in {
            "500": r500.url,
            "503": r503.url,
            "429": r429.url,
            "big": rbig.url,
            "silent": f"http://127.0.0.1:{silent_port}/hook",
            "reset": f"http://127.0.0.1:{reset_port}/hook",
            "refused": f"http://127.0.0.1:{refused_port}/hook",
        }.items()
    }
    relay.publish({"type": unique_type, "data": "fault"})

    assert relay.get("health").status_code == 200  # responsive while attempts are under way
    failed = {name: _last_delivery(relay, subs[name], "failed") for name in ("500", "silent", "reset", "refused")}
    assert failed["500"]["attempts"] == 2 and failed["500"]["lastStatusCode"] == 500
    assert failed["silent"]["attempts"] == 2 and "timeout" in failed["silent"]["lastError"]
    assert failed["reset"]["attempts"] == 2
    assert failed["refused"]["attempts"] == 2 and "connect" in failed["refused"]["lastError"]
    for name in ("503", "429", "big"):
        assert _last_delivery(relay, subs[name], "succeeded")["attempts"] == (1 if name == "big" else 2)
    first, second = r503.wait_for(2)[:2]
    assert second.at - first.at >= 1.0
    silent.close()
    resetting.close()


def test_redirects_are_not_followed(relay, receiver_factory, unique_type) -> None:
    """A receiver redirecting to a loopback address is not followed: the delivery fails, no retry."""
    target = receiver_factory()
    redirector = receiver_factory(lambda req, i: (302, {"Location": target.url}, b""))
    sub = relay.subscribe(redirector.url, eventTypes=[unique_type])
    relay.publish({"type": unique_type, "data": 1})
    row = _last_delivery(relay, sub["id"], "failed")
    assert row["attempts"] == 1 and row["lastStatusCode"] == 302
    assert target.requests == []


# ---- input ------------------------------------------------------------------------------------

FUNCTION_ROUTES = [
    ("POST", "subscriptions"),
    ("GET", "subscriptions"),
    ("GET", f"subscriptions/{'a' * 32}"),
    ("DELETE", f"subscriptions/{'a' * 32}"),
    ("POST", "unsubscribe"),
    ("POST", "events"),
    ("GET", f"subscriptions/{'a' * 32}/deliveries"),
    ("POST", f"subscriptions/{'a' * 32}/replay"),
    ("GET", f"operations/{'a' * 32}"),
    ("GET", "events/poll"),
    ("GET", "event-types"),
    ("PUT", "event-types/x"),
    ("GET", "event-types/x"),
    ("DELETE", "event-types/x"),
    ("GET", "event-types/x/schema"),
    ("POST", "events/batch"),
]


@pytest.fixture(scope="module")
def keyed_relay(azurite: Azurite) -> Iterator[RelayProcess]:
    """One dev host for the key cases: they only read its answers, so they can share it."""
    relay = RelayProcess(azurite, {}).start()
    yield relay
    relay.stop()


@pytest.mark.parametrize("method, path", FUNCTION_ROUTES)
@pytest.mark.parametrize("key", [None, "wrong"])
def test_function_routes_need_the_key(keyed_relay: RelayProcess, method: str, path: str, key: str | None) -> None:
    """Without the function key, or with a wrong one, every function-level route is 401 (the host's check)."""
    headers = {"x-functions-key": key} if key else {}
    response = requests.request(method, f"{keyed_relay.base}/{path}", json={}, timeout=10, headers=headers)
    assert response.status_code == 401, (method, path)


def test_health_and_a_key_in_the_query_are_let_through(keyed_relay: RelayProcess) -> None:
    """health and openapi stay open; the key is also taken from ?code=."""
    assert requests.get(f"{keyed_relay.base}/health", timeout=10).status_code == 200
    assert requests.get(f"{keyed_relay.base}/openapi.json", timeout=10).status_code == 200
    assert requests.get(f"{keyed_relay.base}/subscriptions?code={FUNCTION_KEY}", timeout=10).status_code == 200


JSON = {"Content-Type": "application/json"}

# (method, path after /api/, body bytes or None, headers, status): each answered by the app itself.
BAD_REQUESTS = [
    pytest.param("POST", "subscriptions", b"x" * 70_000, JSON, 413, id="oversized"),
    pytest.param(
        "POST",
        "subscriptions",
        b"notificationUrl=x",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        id="form-encoded",
    ),
    pytest.param("POST", "events", b'{"type": "a", "data": ', JSON, 400, id="truncated-json"),
    pytest.param("POST", "events", b"\xff\xfe", JSON, 400, id="not-utf8"),
    pytest.param("PUT", "events", b"{}", JSON, 405, id="put-events"),
    pytest.param("GET", "subscriptions/not-an-id", None, {}, 404, id="malformed-id"),
    pytest.param("GET", f"subscriptions/{'f' * 500}", None, {}, 404, id="long-id"),
    pytest.param("GET", f"subscriptions/{'a' * 32}/deliveries", None, {}, 404, id="deliveries-of-nobody"),
    pytest.param("GET", "operations/..%2f..%2fx", None, {}, 404, id="operation-traversal"),
    pytest.param("GET", f"event-types/{'n' * 200}", None, {}, 400, id="long-type-name"),
    pytest.param("PUT", "event-types/bad%20name", b"{}", JSON, 400, id="type-name-with-space"),
    pytest.param("GET", "subscriptions?limit=0", None, {}, 400, id="limit-zero"),
    pytest.param("GET", "subscriptions?limit=abc", None, {}, 400, id="limit-text"),
    pytest.param("GET", "subscriptions?continuationToken=garbage!!", None, {}, 400, id="garbage-token"),
    pytest.param("GET", "subscriptions?eventType=bad%20type", None, {}, 400, id="bad-type-filter"),
    pytest.param("GET", "events/poll?eventType=a*", None, {}, 400, id="bad-poll-pattern"),
    pytest.param("GET", "subscriptions?limit=%C2%B2", None, {}, 400, id="superscript-limit"),
    pytest.param(
        "POST", "events", b'{"type": "a", "data": ' + b"[" * 300 + b"]" * 300 + b"}", JSON, 400, id="deep-300"
    ),
    pytest.param(
        "POST",
        "events",
        b'{"type": "a", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        JSON,
        400,
        id="deep-100000",
    ),
    pytest.param("POST", "events", b'{"type": "a", "data": NaN}', JSON, 400, id="nan"),
    pytest.param("POST", "events", b'{"type": "a", "data": Infinity}', JSON, 400, id="infinity"),
    pytest.param("POST", "events", b'{"type": "a", "data": "\\ud800"}', JSON, 400, id="lone-surrogate"),
    pytest.param(
        "POST",
        "events",
        b'{"type": "a", "data": 1, "time": "0001-01-01T00:00:00+01:00"}',
        JSON,
        400,
        id="time-before-year-1",
    ),
]


@pytest.mark.parametrize("method, path, body, headers, status", BAD_REQUESTS)
def test_bad_requests_get_the_right_status(
    app: InProcessApp, method: str, path: str, body: bytes | None, headers: dict[str, str], status: int
) -> None:
    """Oversized, wrongly typed, malformed, wrong-method and ill-formed requests each get their
    status as problem+json, with no key or traceback in it."""
    problem_of(app.request(method, path, data=body, headers=headers), status)


def test_a_wrong_method_names_the_allowed_ones(app: InProcessApp) -> None:
    doc = problem_of(app.request("PATCH", "subscriptions", {}), 405)
    assert "POST" in doc["detail"]


def test_a_replay_ending_before_it_starts_is_400(app: InProcessApp) -> None:
    sub = app.subscribe("http://127.0.0.1:9/unused")["id"]
    problem_of(
        app.post(f"subscriptions/{sub}/replay", {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}), 400
    )


def test_secrets_are_shown_once_and_never_logged(relay, receiver_factory, unique_type) -> None:
    """The secret is in the 201 only: not in GET, list, a repeated subscribe's log, or the host's logs."""
    receiver = receiver_factory()
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    assert "secret" not in relay.get(f"subscriptions/{sub['id']}").json()
    assert all("secret" not in s for s in relay.get("subscriptions").json()["value"])
    relay.publish({"type": unique_type, "data": 1})
    receiver.wait_for(1)
    assert sub["secret"] not in relay.logs() and sub["secret"].split("_", 1)[1] not in relay.logs()


def test_unreadable_queue_message_goes_to_poison_once() -> None:
    """A fan-out message that cannot be parsed is moved to the poison queue with its reason logged."""
    # An Azurite of its own: another dev host on the module's (the module-scoped `keyed_relay`)
    # could take the message first, and then this host would have nothing to log.
    own = Azurite()
    own.start()
    relay = RelayProcess(own, {}).start()
    try:
        service = QueueServiceClient.from_connection_string(own.connection_string)
        marker = f"garbage-{uuid.uuid4().hex}"
        service.get_queue_client("relay-fanout").send_message(base64.b64encode(marker.encode()).decode())
        poison = service.get_queue_client("relay-fanout-poison")
        found = wait_until(
            lambda: [
                m
                for m in poison.peek_messages(max_messages=32)
                if marker in base64.b64decode(m.content).decode(errors="replace")
            ],
            30,
            "the message in the poison queue",
        )
        assert len(found) == 1
        # The line is written once the move is done, so it may trail the message by a moment.
        wait_until(lambda: "moved to relay-fanout-poison" in relay.logs(), 10, "the poison move to be logged")
    finally:
        relay.stop()
        own.stop()


# ---- storage outages and kills ------------------------------------------------------------------


def test_storage_down_during_publish_is_503_never_202(relay_factory, tmp_path: Path) -> None:
    """With storage unreachable, publish answers 503 with a short Retry-After, and health is 503."""
    own = Azurite(location=tmp_path)
    own.start()
    relay = RelayProcess(own, {}).start()
    try:
        own.stop()
        response = relay.post("events", {"type": "a.b", "data": 1})
        doc = problem_of(response, 503)
        assert 0 < int(response.headers["Retry-After"]) <= 30 and doc["detail"]
        assert requests.get(f"{relay.base}/health", timeout=30).status_code == 503
    finally:
        relay.stop()
        own.stop()


def test_storage_restart_during_delivery_loses_nothing(receiver_factory, tmp_path: Path, unique_type) -> None:
    """Azurite stopped mid-delivery and restarted with its data: every accepted event arrives."""
    own = Azurite(location=tmp_path)
    own.start()
    relay = RelayProcess(own, {}).start()
    receiver = receiver_factory()
    try:
        for n in range(5):
            relay.subscribe(f"{receiver.url}/{n}", eventTypes=[unique_type])
        ids = [v["id"] for v in relay.publish([{"type": unique_type, "data": i} for i in range(40)]).json()["value"]]
        receiver.wait_for(10)
        own.stop()
        own.start()
        expected = {(f"/hook/{n}", i) for n in range(5) for i in ids}
        wait_until(
            lambda: {(r.path, r.headers["webhook-id"]) for r in receiver.requests} >= expected,
            180,
            "every delivery after storage came back",
        )
    finally:
        relay.stop()
        own.stop()


def test_three_sigkills_during_two_thousand_deliveries(relay_factory, receiver_factory, unique_type) -> None:
    """The dev host SIGKILLed three times during 2,000 deliveries: every delivery arrives."""
    receiver = receiver_factory()
    relay = relay_factory()
    for n in range(20):
        relay.subscribe(f"{receiver.url}/{n}", eventTypes=[unique_type])
    ids = []
    for _ in range(2):
        ids += [
            v["id"] for v in relay.publish([{"type": unique_type, "data": {"i": i}} for i in range(50)]).json()["value"]
        ]
    expected = {(f"/hook/{n}", i) for n in range(20) for i in ids}

    def delivered() -> set[tuple[str, str]]:
        return {(r.path, r.headers["webhook-id"]) for r in list(receiver.requests)}

    # Kill at fixed marks of what has arrived, not "150 more than now": a restarted host can deliver
    # most of what is left while it starts, and a mark past what remains would never be reached.
    at_kill = []
    for mark in (150, 700, 1250):
        receiver.wait_for(mark, timeout=120)
        relay.kill()
        at_kill.append(len(delivered()))
        relay.start()
    assert at_kill[0] < len(expected), "the first kill came after every delivery: the test proves nothing"
    wait_until(lambda: delivered() >= expected, 240, "all 2,000 deliveries")
    duplicates = len(receiver.requests) - len(expected)
    print(f"\n2,000 deliveries, SIGKILLs after {at_kill} had arrived: {duplicates} duplicates (at least once)")
    assert delivered() == expected
