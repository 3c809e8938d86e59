"""The polling trigger, replay as an async operation, and the event-type catalogue."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

from conftest import wait_until


def _poll(relay, url: str):
    response = relay.session.get(url, timeout=30)
    assert response.status_code in (200, 202), response.text
    return response


def _until_200(relay, url: str):
    """Poll the chain as a flow would until something new arrives."""
    state = {"url": url}

    def step():
        response = _poll(relay, state["url"])
        state["url"] = response.headers["Location"]
        return response if response.status_code == 200 else None
    return wait_until(step, 60, "new events from the polling trigger")


def test_polling_trigger_returns_each_event_once_oldest_first(relay, unique_type) -> None:
    """First poll is 202 from now; then 200s of at most 100, Retry-After 0 while more wait; no repeats."""
    first = relay.get(f"events/poll?eventType={unique_type}")
    assert first.status_code == 202 and int(first.headers["Retry-After"]) > 0
    location = first.headers["Location"]
    assert parse_qs(urlsplit(location).query)["triggerState"]

    early = relay.publish({"type": unique_type, "data": "first"}).json()["id"]
    wait_until(relay.queue_idle, 30, "the first event to be logged")
    later = relay.publish({"type": unique_type, "data": "second"}).json()["id"]
    relay.publish({"type": "unrelated.type", "data": "not mine"})
    wait_until(relay.queue_idle, 30, "the second event to be logged")
    page = _until_200(relay, location)
    events = page.json()["value"]
    location = page.headers["Location"]
    if len(events) == 1:  # the first became readable a moment before the second
        page = _until_200(relay, location)
        events += page.json()["value"]
        location = page.headers["Location"]
    assert [e["id"] for e in events] == [early, later]
    assert events[0]["specversion"] == "1.0" and events[0]["data"] == "first"

    ids = [v["id"] for batch in range(2) for v in relay.publish(
        [{"type": unique_type, "data": batch * 100 + i} for i in range(75)]).json()["value"]]
    wait_until(relay.queue_idle, 60, "150 events to be logged")
    seen: list[str] = []
    while not set(seen) >= set(ids):
        response = _until_200(relay, location)
        location = response.headers["Location"]
        batch = [e["id"] for e in response.json()["value"]]
        assert 0 < len(batch) <= 100
        if len(batch) == 100:
            assert response.headers["Retry-After"] == "0"
        seen += batch
    assert sorted(seen) == sorted(ids), "every event in exactly one 200 of the chain"


def test_replay_redelivers_failed_events_with_their_original_id(relay_factory, receiver_factory,
                                                                unique_type) -> None:
    """Failed deliveries replayed through 202 + Location + Retry-After arrive with their webhook-id."""
    relay = relay_factory({"RELAY_RETRY_SCHEDULE": "100ms"})
    healthy = {"now": False}
    receiver = receiver_factory(lambda req, i: (200, {}, b"") if healthy["now"] else (500, {}, b""))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    since = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    event_id = relay.publish({"type": unique_type, "data": 1}).json()["id"]
    wait_until(lambda: relay.get(f"subscriptions/{sub['id']}/deliveries?status=failed").json()["value"], 30,
               "the delivery to fail")
    healthy["now"] = True

    started = relay.post(f"subscriptions/{sub['id']}/replay", {"since": since})
    assert started.status_code == 202 and int(started.headers["Retry-After"]) >= 0
    operation = started.headers["Location"]
    assert operation.startswith(f"{relay.base}/operations/")

    def done():
        response = relay.session.get(operation, timeout=10)
        assert response.status_code in (200, 202)
        return response.json() if response.status_code == 200 else None
    result = wait_until(done, 30, "the replay to finish")
    assert result["status"] == "succeeded" and result["replayed"] == 1
    replayed = receiver.wait_for(3)[2]
    assert replayed.headers["webhook-id"] == event_id
    wait_until(lambda: relay.get(f"subscriptions/{sub['id']}/deliveries?status=succeeded").json()["value"], 30,
               "the replayed delivery to be logged")
    assert relay.post(f"subscriptions/{'0' * 32}/replay", {"since": since}).status_code == 404
    assert relay.post(f"subscriptions/{sub['id']}/replay", {"since": "last week"}).status_code == 400


def test_event_types_validate_published_data(relay, unique_type) -> None:
    """A registered schema makes non-matching data a 400 naming the failing path; the catalogue round-trips."""
    schema = {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"},
                                                                      "lines": {"type": "array",
                                                                                "items": {"type": "string"}}}}
    put = relay.session.put(f"{relay.base}/event-types/{unique_type}", json={"description": "An order.",
                                                                           "schema": schema}, timeout=10)
    assert put.status_code == 201 and put.json()["schema"] == schema
    again = relay.session.put(f"{relay.base}/event-types/{unique_type}", json={"description": "An order.",
                                                                             "schema": schema}, timeout=10)
    assert again.status_code == 200
    assert unique_type in [t["name"] for t in relay.get("event-types").json()["value"]]
    assert relay.get(f"event-types/{unique_type}").json()["description"] == "An order."

    bad = relay.post("events", {"type": unique_type, "data": {"total": "ten", "lines": ["a", 2]}})
    assert bad.status_code == 400
    assert {e["field"] for e in bad.json()["errors"]} == {"data.total", "data.lines[1]"}
    assert relay.post("events", {"type": unique_type, "data": {"total": 10}}).status_code == 202
    assert relay.post("events", {"type": "unregistered." + unique_type, "data": "anything"}).status_code == 202

    for broken in ({"type": 5}, {"$schema": 5}, {"$schema": {}}, {"$ref": "#/$defs/missing"},
                   {"$ref": "http://127.0.0.1:9/internal.json"}, {"properties": {"a": {"$ref": "file:///etc/passwd"}}}):
        answer = relay.session.put(f"{relay.base}/event-types/{unique_type}", json={"schema": broken}, timeout=10)
        assert answer.status_code == 400, (broken, answer.text)
        assert answer.json()["errors"][0]["field"].startswith("schema")
    local = {"$defs": {"money": {"type": "number"}}, "properties": {"total": {"$ref": "#/$defs/money"}}}
    assert relay.session.put(f"{relay.base}/event-types/{unique_type}", json={"schema": local},
                             timeout=10).status_code == 200
    assert relay.post("events", {"type": unique_type, "data": {"total": "x"}}).status_code == 400
    assert relay.delete(f"event-types/{unique_type}").status_code == 200
    assert relay.get(f"event-types/{unique_type}").status_code == 404
    assert relay.post("events", {"type": unique_type, "data": {"total": "ten"}}).status_code == 202
