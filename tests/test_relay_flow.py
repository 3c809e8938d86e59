"""The relay end to end: the dev host on a real Azurite, delivering to real loopback receivers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.helpers import InProcessApp, Received, wait_until


def test_subscribe_publish_delivers_a_signed_cloudevent(relay, receiver_factory, unique_type) -> None:
    """A subscriber gets the event as a CloudEvent whose Standard Webhooks signature verifies."""
    receiver = receiver_factory()
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    assert sub["secret"].startswith("whsec_")
    assert sub["location"] == f"{relay.base}/subscriptions/{sub['id']}?registration=1"
    published = relay.publish({"type": unique_type, "subject": "orders/1", "data": {"n": 1, "s": "é"}})

    got = receiver.wait_for(1)[0]
    body = Webhook(sub["secret"]).verify(got.body, got.headers)
    assert body["specversion"] == "1.0"
    assert body["id"] == published.json()["id"] == got.headers["webhook-id"]
    assert body["type"] == unique_type and body["subject"] == "orders/1"
    assert body["data"] == {"n": 1, "s": "é"} and body["datacontenttype"] == "application/json"
    assert got.headers["content-type"] == "application/json; charset=utf-8"
    assert got.headers["user-agent"].startswith("event-relay/")
    assert got.path == "/hook"


def test_delete_stops_deliveries_and_is_idempotent(relay, receiver_factory, unique_type) -> None:
    """After DELETE answers, nothing more reaches that URL; a second DELETE is also 200."""
    gone, control = receiver_factory(), receiver_factory()
    sub = relay.subscribe(gone.url, eventTypes=[unique_type])
    relay.subscribe(control.url, eventTypes=[unique_type])
    relay.publish({"type": unique_type, "data": 1})
    gone.wait_for(1)
    control.wait_for(1)

    assert relay.delete(f"subscriptions/{sub['id']}").status_code == 200
    assert relay.get(f"subscriptions/{sub['id']}").status_code == 404
    relay.publish({"type": unique_type, "data": 2})
    control.wait_for(2)  # fan-out reaches every subscriber in one pass: by now `gone` would have it
    wait_until(relay.queue_idle, 30, "work queues to drain")
    assert len(gone.requests) == 1
    assert relay.delete(f"subscriptions/{sub['id']}").status_code == 200
    assert relay.delete(f"subscriptions/{uuid.uuid4().hex}").status_code == 200


def test_repeated_subscribe_returns_the_same_subscription_and_delivers_once(
    relay, receiver_factory, unique_type
) -> None:
    """Subscribing a URL twice gives the same id (not the secret again) and a Location of its
    own registration (CONTRACT section 6), the new filters, one delivery."""
    receiver = receiver_factory()
    first = relay.subscribe(receiver.url, eventTypes=["other.type"])
    second = relay.subscribe(receiver.url, eventTypes=[unique_type])
    assert second["id"] == first["id"] and "secret" not in second
    assert second["location"] == first["location"].replace("registration=1", "registration=2")
    assert relay.get(f"subscriptions/{first['id']}").json()["eventTypes"] == [unique_type]

    relay.publish({"type": unique_type, "data": {}})
    receiver.wait_for(1)
    wait_until(relay.queue_idle, 30, "work queues to drain")
    assert len(receiver.requests) == 1


def test_patterns_and_subject_filters_select_events(relay, receiver_factory, unique_type) -> None:
    """Exact types, prefix patterns, `*` and subject filters each receive just their events."""
    prefix = unique_type.rsplit(".", 1)[0]
    exact, pattern, subject = receiver_factory(), receiver_factory(), receiver_factory()
    relay.subscribe(exact.url, eventType=unique_type)
    relay.subscribe(pattern.url, eventTypes=[f"{prefix}.*"])
    relay.subscribe(subject.url, eventTypes=[f"{prefix}.*"], subjectBeginsWith="orders/", subjectEndsWith=".json")
    relay.publish(
        [
            {"type": unique_type, "subject": "orders/1.json", "data": 1},
            {"type": f"{prefix}.other", "subject": "orders/2.xml", "data": 2},
        ]
    )
    pattern.wait_for(2)
    exact.wait_for(1)
    subject.wait_for(1)
    wait_until(relay.queue_idle, 30, "work queues to drain")
    assert [r.json()["data"] for r in exact.requests] == [1]
    assert sorted(r.json()["data"] for r in pattern.requests) == [1, 2]
    assert [r.json()["data"] for r in subject.requests] == [1]


def test_list_subscriptions_pages_with_next_links(relay, receiver_factory, unique_type) -> None:
    """Listing pages through every subscription by following nextLink."""
    receivers = [receiver_factory() for _ in range(3)]
    ids = {relay.subscribe(r.url, eventTypes=[unique_type])["id"] for r in receivers}
    seen, url = [], f"{relay.base}/subscriptions?limit=2&eventType={unique_type}"
    while url:
        page = relay.session.get(url, timeout=10).json()
        assert len(page["value"]) <= 2
        seen += [s["id"] for s in page["value"]]
        assert all("secret" not in s for s in page["value"])
        url = page.get("nextLink")
    assert ids <= set(seen)


def test_retries_until_delivered_and_logs_attempts(relay, receiver_factory, unique_type) -> None:
    """A receiver failing twice with 500 gets the event on the third attempt, logged as 3 attempts."""
    receiver = receiver_factory(lambda req, i: (500, {}, b"") if i < 2 else (200, {}, b""))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    event_id = relay.publish({"type": unique_type, "data": "x"}).json()["id"]
    got = receiver.wait_for(3)
    assert {r.headers["webhook-id"] for r in got} == {event_id}

    def logged():
        rows = relay.get(f"subscriptions/{sub['id']}/deliveries").json()["value"]
        return rows if rows and rows[0]["status"] == "succeeded" else None

    row = wait_until(logged, 30, "the delivery log to show success")[0]
    assert row["eventId"] == event_id and row["attempts"] == 3 and row["lastStatusCode"] == 200
    assert relay.get(f"subscriptions/{sub['id']}/deliveries?status=failed").json()["value"] == []


def test_retry_after_delays_the_next_attempt(relay, receiver_factory, unique_type) -> None:
    """A 429 with Retry-After: 2 is retried no sooner than two seconds later."""
    receiver = receiver_factory(lambda req, i: (429, {"Retry-After": "2"}, b"") if i == 0 else (200, {}, b""))
    relay.subscribe(receiver.url, eventTypes=[unique_type])
    relay.publish({"type": unique_type, "data": None})
    first, second = receiver.wait_for(2, timeout=30)[:2]
    assert second.at - first.at >= 2.0


def test_workflow_not_found_disables_the_subscription(relay, receiver_factory, unique_type) -> None:
    """A 404 WorkflowNotFound disables the subscription, with the reason, and stops deliveries."""
    body = json.dumps({"error": {"code": "WorkflowNotFound", "message": "gone"}}).encode()
    receiver = receiver_factory(lambda req, i: (404, {"Content-Type": "application/json"}, body))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    relay.publish({"type": unique_type, "data": 1})
    receiver.wait_for(1)
    view = wait_until(
        lambda: (v := relay.get(f"subscriptions/{sub['id']}").json())["status"] == "disabled" and v,
        30,
        "the subscription to be disabled",
    )
    assert "WorkflowNotFound" in view["disabledReason"]
    relay.publish({"type": unique_type, "data": 2})
    wait_until(relay.queue_idle, 30, "work queues to drain")
    assert len(receiver.requests) == 1
    # Subscribing again (a flow turned back on) re-activates it.
    again = relay.subscribe(receiver.url, eventTypes=[unique_type])
    assert again["id"] == sub["id"] and again["status"] == "active"


def test_exhausted_schedule_leaves_a_failed_delivery(relay_factory, receiver_factory, unique_type) -> None:
    """When every scheduled attempt fails, the delivery is listed as failed with its attempts."""
    relay = relay_factory({"RELAY_RETRY_SCHEDULE": "100ms,100ms"})
    receiver = receiver_factory(lambda req, i: (503, {}, b"busy"))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    event_id = relay.publish({"type": unique_type, "data": 1}).json()["id"]
    receiver.wait_for(3)

    def failed():
        return relay.get(f"subscriptions/{sub['id']}/deliveries?status=failed").json()["value"]

    row = wait_until(failed, 30, "a failed delivery")[0]
    assert row["eventId"] == event_id and row["attempts"] == 3 and row["lastStatusCode"] == 503
    wait_until(relay.queue_idle, 30, "work queues to drain")
    assert len(receiver.requests) == 3


def test_repeated_event_id_is_delivered_once(relay, receiver_factory, unique_type) -> None:
    """Publishing the same event id twice delivers it once; both publishes answer 202 with that id,
    the second saying it was a duplicate."""
    receiver = receiver_factory()
    relay.subscribe(receiver.url, eventTypes=[unique_type])
    event = {"type": unique_type, "id": f"evt-{uuid.uuid4().hex}", "data": 1}
    assert relay.publish(event).json() == {"id": event["id"]}
    assert relay.publish(event).json() == {"id": event["id"], "duplicate": True}
    receiver.wait_for(1)
    wait_until(relay.queue_idle, 30, "work queues to drain")
    assert receiver.ids() == [event["id"]]


def test_large_event_arrives_intact_and_oversized_is_413(relay, receiver_factory, unique_type) -> None:
    """A 300 KB event (beyond a queue message) arrives byte-identical; a 2 MB one is refused 413."""
    receiver = receiver_factory()
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    data = {"blob": "x" * 300_000, "nested": [{"i": i} for i in range(100)]}
    relay.publish({"type": unique_type, "data": data})
    got = receiver.wait_for(1)[0]
    assert Webhook(sub["secret"]).verify(got.body, got.headers)["data"] == data

    too_big = relay.post("events", {"type": unique_type, "data": "y" * 2_000_000})
    assert too_big.status_code == 413
    assert too_big.headers["content-type"].startswith("application/problem+json")


def test_batch_publish_answers_each_id(relay, receiver_factory, unique_type) -> None:
    """An array of events is accepted whole and each event gets its id."""
    receiver = receiver_factory()
    relay.subscribe(receiver.url, eventTypes=[unique_type])
    response = relay.publish([{"type": unique_type, "data": i} for i in range(5)])
    ids = [v["id"] for v in response.json()["value"]]
    assert len(set(ids)) == 5
    receiver.wait_for(5)
    assert sorted(receiver.ids()) == sorted(ids)


def _problem(response, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    doc = response.json()
    assert doc["status"] == status and doc["title"] and doc["detail"]
    assert field in [e["field"] for e in doc["errors"]], doc


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("subscriptions", {}, "notificationUrl"),
        ("subscriptions", {"notificationUrl": "ftp://x.example/"}, "notificationUrl"),
        ("subscriptions", {"notificationUrl": "not a url"}, "notificationUrl"),
        ("subscriptions", {"notificationUrl": "https://x.example/" + "a" * 16_400}, "notificationUrl"),
        ("subscriptions", {"notificationUrl": "https://x.example/", "eventTypes": ["bad type"]}, "eventTypes"),
        (
            "subscriptions",
            {"notificationUrl": "https://x.example/", "eventType": "a", "eventTypes": ["b"]},
            "eventType",
        ),
        ("subscriptions", {"notificationUrl": "https://x.example/", "once": "yes"}, "once"),
        ("events", {"data": 1}, "type"),
        ("events", {"type": "ok"}, "data"),
        ("events", {"type": "no spaces", "data": 1}, "type"),
        ("events", {"type": "ok", "data": 1, "time": "yesterday"}, "time"),
        ("events", [{"type": "ok", "data": 1}, {"type": "", "data": 1}], "[1].type"),
        ("events", [], "body"),
        ("events", b"{nope", "body"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(app: InProcessApp, path: str, body: Any, field: str) -> None:
    """Bad bodies, URLs and event types answer 400 problem+json naming the field (the app's own
    answer, in-process)."""
    if isinstance(body, bytes):
        response = app.post(path, data=body, headers={"Content-Type": "application/json"})
    else:
        response = app.post(path, body)
    _problem(response, 400, field)


def test_delivery_log_lists_first_try_and_retried_successes_across_pages(relay, receiver_factory, unique_type) -> None:
    """First-attempt successes (batch receipts) and a retried one (its own row) are each listed once."""
    flaky_event = f"evt-{uuid.uuid4().hex}"
    seen_flaky: list[int] = []

    def script(req: Received, i: int):
        if req.headers["webhook-id"] == flaky_event and not seen_flaky:
            seen_flaky.append(i)
            return 503, {}, b""
        return 200, {}, b""

    receiver = receiver_factory(script)
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    ids = [v["id"] for v in relay.publish([{"type": unique_type, "data": i} for i in range(5)]).json()["value"]]
    relay.publish({"type": unique_type, "id": flaky_event, "data": "flaky"})
    receiver.wait_for(7)
    wait_until(relay.queue_idle, 30, "work queues to drain")

    listed, url = [], f"{relay.base}/subscriptions/{sub['id']}/deliveries?limit=2"
    while url:
        page = relay.session.get(url, timeout=10).json()
        assert len(page["value"]) <= 2
        listed += page["value"]
        url = page.get("nextLink")
    assert sorted(d["eventId"] for d in listed) == sorted(ids + [flaky_event])
    by_id = {d["eventId"]: d for d in listed}
    assert by_id[flaky_event]["attempts"] == 2 and all(by_id[i]["attempts"] == 1 for i in ids)
    assert all(d["status"] == "succeeded" and d["lastStatusCode"] == 200 for d in listed)
    succeeded = relay.get(f"subscriptions/{sub['id']}/deliveries?status=succeeded&limit=100").json()["value"]
    assert len(succeeded) == 6
    assert relay.get(f"subscriptions/{sub['id']}/deliveries?status=failed").json()["value"] == []
    assert relay.get(f"subscriptions/{sub['id']}/deliveries?continuationToken=bogus").status_code == 400


def test_fan_out_beyond_one_hundred_uses_work_items(relay, receiver_factory, unique_type) -> None:
    """An event for 250 subscribers reaches each once: 100 delivered inline by the fan-out, the rest
    as two work items (which this idle host's fan-out holds and delivers itself, tests/test_held.py)."""
    receiver = receiver_factory()
    for n in range(250):
        relay.subscribe(f"{receiver.url}/{n}", eventTypes=[unique_type])
    event_id = relay.publish({"type": unique_type, "data": "wide"}).json()["id"]
    receiver.wait_for(250, timeout=60)
    wait_until(relay.queue_idle, 30, "work queues to drain")
    assert sorted(r.path for r in receiver.requests) == sorted(f"/hook/{n}" for n in range(250))
    assert {r.headers["webhook-id"] for r in receiver.requests} == {event_id}
