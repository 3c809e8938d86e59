"""The record of what happened to a message (issue 22, items 1 to 4; CONTRACT section 6 "Delivery
log"): every attempt kept with the receiver's answer, each attempt's own times, the event as
delivered, the log's filters and order, and each subscription's endpoint health. Against the dev
host on a real Azurite, delivering to real loopback receivers."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.core.clock import parse_rfc3339
from tests.helpers import Received, RelayProcess, problem_of, wait_until
from tests.schemathesis_hooks import known_rule

SIG = "sigvalue0123456789"  # a Power Automate `sig`: a credential in the query
PATH_TOKEN = "T0KENinThePathABCDEF"  # a Slack-style token in the path (16 characters or more)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _delivery(relay: RelayProcess, sub_id: str, event_id: str) -> dict[str, Any]:
    response = relay.get(f"subscriptions/{sub_id}/deliveries/{event_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _finished(relay: RelayProcess, sub_id: str, event_id: str, status: str, attempts: int) -> dict[str, Any] | None:
    response = relay.get(f"subscriptions/{sub_id}/deliveries/{event_id}")
    if response.status_code != 200:
        return None
    body = response.json()
    return body if body["status"] == status and len(body["attempts"]) >= attempts else None


def _replay_failed(relay: RelayProcess, sub_id: str) -> None:
    since = _rfc3339(datetime.now(UTC) - timedelta(minutes=5))
    started = relay.post(f"subscriptions/{sub_id}/replay", {"since": since, "status": "failed"})
    assert started.status_code == 202, started.text
    operation = started.headers["Location"]

    def done() -> Any:
        answer = relay.session.get(operation, timeout=10)
        return answer.json() if answer.status_code == 200 else None

    assert wait_until(done, 60, "the replay to finish")["status"] == "succeeded"


def test_every_attempt_is_kept_with_the_answer_masked_and_a_replay_adds_attempts(
    relay_factory, receiver_factory, unique_type
) -> None:
    """A 503 then a 400 whose body explains itself: both attempts kept, oldest first, each with
    its status, error, kind and the first 4 KiB of the answer with the callback's credentials
    masked; a replay adds an attempt marked `replay` and rewrites none of them."""
    relay = relay_factory({"RELAY_RETRY_SCHEDULE": "100ms"})
    secret: dict[str, str] = {}
    mode = {"healthy": False}

    def answer(request: Received, index: int) -> tuple[int, dict[str, str], bytes]:
        if mode["healthy"]:
            return 200, {"Content-Type": "text/plain"}, b"thanks"
        if index == 0:
            return 503, {"Content-Type": "text/plain"}, b"busy, try later"
        # A receiver that echoes what it was sent: the URL's credentials and the signing secret.
        explained = {
            "error": "field total is required",
            "echo": f"{request.path} sig={SIG} secret={secret['value']}",
            "padding": "x" * 6000,
        }
        return 400, {"Content-Type": "application/problem+json"}, json.dumps(explained).encode()

    receiver = receiver_factory(answer)
    url = receiver.url + f"/{PATH_TOKEN}?sig={SIG}"
    sub = relay.subscribe(url, eventTypes=[unique_type])
    secret["value"] = sub["secret"]
    event_id = relay.publish({"type": unique_type, "data": {"total": None}}).json()["id"]

    failed = wait_until(lambda: _finished(relay, sub["id"], event_id, "failed", 2), 60, "the delivery to fail")
    assert failed["eventId"] == event_id and failed["type"] == unique_type
    first, second = failed["attempts"]
    assert [first["kind"], second["kind"]] == ["delivery", "retry"]
    assert first["statusCode"] == 503 and "503" in first["error"]
    assert first["response"] == {"contentType": "text/plain", "body": "busy, try later"}
    assert second["statusCode"] == 400 and "400" in second["error"]
    assert second["response"]["contentType"] == "application/problem+json"
    body = second["response"]["body"]
    assert "field total is required" in body and len(body.encode()) <= 4096
    assert SIG not in body and PATH_TOKEN not in body and secret["value"] not in body and "***" in body
    assert parse_rfc3339(first["at"]) <= parse_rfc3339(second["at"])
    assert all(a["durationMs"] >= 0 for a in failed["attempts"])
    # The event as it was delivered, reachable from the delivery.
    assert failed["event"]["id"] == event_id and failed["event"]["data"] == {"total": None}
    assert failed["event"]["type"] == unique_type and failed["event"]["specversion"] == "1.0"

    mode["healthy"] = True
    _replay_failed(relay, sub["id"])
    replayed = wait_until(
        lambda: _finished(relay, sub["id"], event_id, "succeeded", 3), 60, "the replayed delivery to be recorded"
    )
    assert replayed["attempts"][:2] == failed["attempts"]  # added to, never rewritten
    third = replayed["attempts"][2]
    assert third["kind"] == "replay" and third["statusCode"] == 200 and third["error"] is None
    assert third["response"] == {"contentType": "text/plain", "body": "thanks"}

    # Unknown events, and another subscription's, are 404s; so is an unknown subscription.
    assert relay.get(f"subscriptions/{sub['id']}/deliveries/no-such-event").status_code == 404
    other = relay.subscribe(receiver_factory().url, eventTypes=[unique_type + "x"])
    problem_of(relay.get(f"subscriptions/{other['id']}/deliveries/{event_id}"), 404)
    assert relay.get(f"subscriptions/{'0' * 32}/deliveries/{event_id}").status_code == 404
    assert SIG not in relay.logs() and PATH_TOKEN not in relay.logs()


def test_a_first_try_success_has_its_own_time_not_its_slowest_neighbours(relay, receiver_factory, unique_type) -> None:
    """Two subscribers in one fan-out, one answering at once and one after 3 s: the fast one's
    attempt is recorded when it was made and as short as it was (item 2)."""
    arrived: dict[str, datetime] = {}
    release = threading.Event()

    def fast(request: Received, index: int) -> tuple[int, dict[str, str], bytes]:
        arrived["fast"] = datetime.now(UTC)
        return 200, {}, b""

    def slow(request: Received, index: int) -> tuple[int, dict[str, str], bytes]:
        arrived["slow"] = datetime.now(UTC)
        release.wait(3)
        return 200, {}, b""

    quick, hanging = receiver_factory(fast), receiver_factory(slow)
    quick_sub = relay.subscribe(quick.url, eventTypes=[unique_type])
    slow_sub = relay.subscribe(hanging.url, eventTypes=[unique_type])
    event_id = relay.publish({"type": unique_type, "data": 1}).json()["id"]
    quick.wait_for(1)
    hanging.wait_for(1)

    def listed(sub_id: str) -> dict[str, Any] | None:
        rows = relay.get(f"subscriptions/{sub_id}/deliveries").json()["value"]
        return next((r for r in rows if r["eventId"] == event_id and r["status"] == "succeeded"), None)

    quick_row = wait_until(lambda: listed(quick_sub["id"]), 60, "the fast delivery to be logged")
    slow_row = wait_until(lambda: listed(slow_sub["id"]), 60, "the slow delivery to be logged")
    late = parse_rfc3339(quick_row["lastAttemptAt"]) - arrived["fast"]
    assert abs(late.total_seconds()) < 1.5, (quick_row, arrived)
    assert abs((parse_rfc3339(slow_row["lastAttemptAt"]) - arrived["slow"]).total_seconds()) < 1.5

    quick_attempts = _delivery(relay, quick_sub["id"], event_id)["attempts"]
    slow_attempts = _delivery(relay, slow_sub["id"], event_id)["attempts"]
    assert len(quick_attempts) == 1 and len(slow_attempts) == 1
    assert quick_attempts[0]["kind"] == "delivery" and quick_attempts[0]["statusCode"] == 200
    assert quick_attempts[0]["durationMs"] < 2000 <= 2500 < slow_attempts[0]["durationMs"]
    assert quick_attempts[0]["at"] == quick_row["lastAttemptAt"]


def test_the_log_lists_newest_first_and_filters_by_type_id_and_time(relay, receiver_factory, unique_type) -> None:
    """First-try successes (receipts) and a failure (a row of its own) come newest first by
    the event's acceptance, and `eventType`, `eventId`, `since`, `until` and `status` narrow
    the list; pages follow the same order."""
    other_type = unique_type + ".other"
    receiver = receiver_factory(lambda request, index: (400, {}, b"no") if index == 1 else (200, {}, b""))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type, other_type])
    ids: list[str] = []
    marks: list[datetime] = []
    for n, event_type in enumerate([unique_type, other_type, unique_type]):
        marks.append(datetime.now(UTC))
        ids.append(relay.publish({"type": event_type, "data": n}).json()["id"])
        receiver.wait_for(n + 1)
        wait_until(
            lambda: any(
                r["eventId"] == ids[-1] and r["status"] != "pending"
                for r in relay.get(f"subscriptions/{sub['id']}/deliveries").json()["value"]
            ),
            60,
            "the delivery to be logged",
        )
    base = f"subscriptions/{sub['id']}/deliveries"

    def listed(query: str = "") -> list[str]:
        response = relay.get(base + query)
        assert response.status_code == 200, response.text
        return [row["eventId"] for row in response.json()["value"]]

    newest_first = list(reversed(ids))
    assert listed() == newest_first
    assert listed(f"?eventType={unique_type}") == [ids[2], ids[0]]
    assert listed(f"?eventType={other_type}") == [ids[1]]
    assert listed(f"?eventId={ids[1]}") == [ids[1]] and listed(f"?eventId={ids[0]}") == [ids[0]]
    assert listed("?status=failed") == [ids[1]]
    assert listed("?status=succeeded") == [ids[2], ids[0]]
    since, until = _rfc3339(marks[1]), _rfc3339(marks[2])
    assert listed(f"?since={since}") == [ids[2], ids[1]]
    assert listed(f"?until={until}") == [ids[1], ids[0]]
    assert listed(f"?since={since}&until={until}") == [ids[1]]
    assert listed(f"?since={since}&eventType={unique_type}") == [ids[2]]

    pages: list[str] = []
    link: str | None = f"{relay.base}/{base}?limit=1"
    while link:
        page = relay.session.get(link, timeout=30).json()
        pages += [row["eventId"] for row in page["value"]]
        link = page.get("nextLink")
        assert len(pages) <= 5, pages
    assert pages == newest_first

    for query, field in (
        ("?since=yesterday", "since"),
        ("?until=2026-13-01T00:00:00Z", "until"),
        ("?eventType=order.*", "eventType"),
        ("?eventType=", "eventType"),
        ("?eventId=", "eventId"),
        (f"?since={until}&until={since}", "until"),
    ):
        problem_of(relay.get(base + query), 400, field)
    # The same words as a replay's window, so one documented rule (docs/power-platform.md) explains both.
    assert known_rule(relay.get(f"{base}?since={until}&until={since}")) is not None
    # A date-time the schema's format allows but the calendar lacks: the documented rule, too.
    for query in ("?since=2026-02-30T00:00:00Z", "?until=2026-12-31T23:59:60Z"):
        assert known_rule(relay.get(base + query)) is not None, query


def test_endpoint_health_and_failures_count_events_not_attempts(relay_factory, receiver_factory, unique_type) -> None:
    """A subscription's read and list answers carry its success rate and p50/p95 answer times
    over the last hour and day; an event that fails again when replayed is still one failure."""
    relay = relay_factory({"RELAY_RETRY_SCHEDULE": "100ms"})
    receiver = receiver_factory(lambda request, index: (400, {}, b"no") if index < 4 else (200, {}, b""))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    for n in range(2):
        event_id = relay.publish({"type": unique_type, "data": n}).json()["id"]
        wait_until(
            lambda event_id=event_id: [
                r
                for r in relay.get(f"subscriptions/{sub['id']}/deliveries?status=failed").json()["value"]
                if r["eventId"] == event_id
            ],
            60,
            "the delivery to fail",
        )
    _replay_failed(relay, sub["id"])  # both fail again (answers 3 and 4)
    wait_until(lambda: len(receiver.requests) >= 4, 60, "the replays to be attempted")
    relay.publish({"type": unique_type, "data": 3})  # answer 5: a success
    receiver.wait_for(5)

    def counted() -> dict[str, Any] | None:
        figures = relay.get("stats?window=24h").json()["bySubscription"].get(sub["id"])
        return figures if figures and figures["succeeded"] >= 1 and figures["failed"] >= 1 else None

    # The success was counted after the replays' failures (one process, in order): all are in.
    figures = wait_until(counted, 60, "the counters to be written")
    assert figures["failed"] == 2, figures  # two events failed, whatever their replays did

    read = relay.get(f"subscriptions/{sub['id']}").json()["health"]
    for window in ("hour", "day"):
        health = read[window]
        assert health["attempts"] == 5 and health["successRate"] == 0.2
        assert 0 <= health["p50Ms"] <= health["p95Ms"]
    listed = relay.get(f"subscriptions?eventType={unique_type}").json()["value"]
    assert [item["health"] for item in listed if item["id"] == sub["id"]] == [read]

    quiet = relay.subscribe(receiver_factory().url, eventTypes=[unique_type + ".quiet"])
    assert relay.get(f"subscriptions/{quiet['id']}").json()["health"] == {
        "hour": {"attempts": 0, "successRate": None, "p50Ms": None, "p95Ms": None},
        "day": {"attempts": 0, "successRate": None, "p50Ms": None, "p95Ms": None},
    }


def _attempt(n: int, kind: str = "retry") -> Any:
    from relay.store.deliveryrows import AttemptRecord

    return AttemptRecord(
        at=datetime(2026, 12, 7, tzinfo=UTC) + timedelta(seconds=n), duration_ms=n, status_code=500, kind=kind
    )


def test_concurrent_writes_to_one_delivery_each_add_their_attempt(app_storage) -> None:
    """Attempts written at once to one delivery (a retry and a replay of the same event) are all
    kept: each write appends on the row's ETag and starts again when another came first."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from relay.core.statuses import DeliveryStatus
    from relay.store.deliverylog import DeliveryLog
    from relay.store.deliveryrows import Attempt

    log = DeliveryLog(app_storage, 7)
    key = ("e:20261207", "20261207T000000.000000Z_e-race")
    for round_ in range(5):
        sub = uuid.uuid4().hex

        def write(n: int, sub: str = sub) -> None:
            log.write(
                sub,
                "e-race",
                "t.x",
                key,
                Attempt(DeliveryStatus.PENDING, 1, _attempt(n).at, 500, "receiver answered 500", record=_attempt(n)),
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(8)))
        record = log.record(sub, "e-race")
        assert record is not None
        assert sorted(a.duration_ms for a in record.attempts) == list(range(8)), round_
        assert [a.at for a in record.attempts] == sorted(a.at for a in record.attempts)
        assert record.delivery.attempts == 8


def test_a_delivery_keeps_its_first_attempt_and_its_last_twenty(app_storage) -> None:
    """Retried for days, a delivery stays one row: its first attempt (often the real cause) and
    its last 20 are kept, oldest first."""
    import uuid

    from relay.core.statuses import DeliveryStatus
    from relay.store.deliverylog import DeliveryLog
    from relay.store.deliveryrows import KEEP_LAST, Attempt

    log = DeliveryLog(app_storage, 7)
    sub = uuid.uuid4().hex
    key = ("e:20261207", "20261207T000000.000000Z_e-long")
    for n in range(30):
        kind = "delivery" if n == 0 else "retry"
        status = DeliveryStatus.FAILED if n == 29 else DeliveryStatus.PENDING
        log.write(sub, "e-long", "t.x", key, Attempt(status, n + 1, _attempt(n).at, 500, record=_attempt(n, kind)))
    record = log.record(sub, "e-long")
    assert record is not None and record.delivery.status == DeliveryStatus.FAILED
    assert [a.duration_ms for a in record.attempts] == [0, *range(30 - KEEP_LAST, 30)]
    assert record.attempts[0].kind == "delivery" and record.delivery.attempts == 30


def test_pages_merge_rows_and_receipts_newest_first_within_the_scan_budget(app_storage, monkeypatch) -> None:
    """However small the scan budget, walking the pages gives every delivery once, newest first:
    a page stops where the receipts were read up to, and the next one carries on from there."""
    import uuid

    from relay.core import clock
    from relay.core.statuses import DeliveryStatus
    from relay.store import deliverylog
    from relay.store.deliverylog import DeliveryLog
    from relay.store.deliveryrows import Attempt, FirstTry

    log = DeliveryLog(app_storage, 7)
    sub, other = uuid.uuid4().hex, uuid.uuid4().hex
    base = clock.utcnow() - timedelta(hours=1)
    expected = []
    for n in range(30):
        at = base + timedelta(seconds=n)
        event_id = f"e{n:02d}-{uuid.uuid4().hex[:6]}"
        key = (f"e:{clock.day_bucket(at)}", f"{clock.time_key(at)}_{event_id}")
        if n % 3 == 0:
            log.write(sub, event_id, "t.x", key, Attempt(DeliveryStatus.FAILED, 1, at, 500, record=_attempt(n)))
        else:
            names = [other, sub] if n % 3 == 1 else [other]
            log.receipt(event_id, "t.x", key, at, [FirstTry(name, 200, at, 5) for name in names])
        if n % 3 != 2:
            expected.append(event_id)
    expected.reverse()

    monkeypatch.setattr(deliverylog, "SCAN_BUDGET", 4)
    seen: list[str] = []
    token = None
    for _ in range(60):
        rows, token = log.list(sub, status=None, limit=3, token=token)
        seen += [row.event_id for row in rows]
        if token is None:
            break
    assert seen == expected
    monkeypatch.setattr(deliverylog, "SCAN_BUDGET", 5000)
    rows, token = log.list(sub, status=None, limit=100, token=None)
    assert [row.event_id for row in rows] == expected and token is None
    succeeded, _ = log.list(sub, status="succeeded", limit=100, token=None)
    assert [row.event_id for row in succeeded] == [e for i, e in enumerate(expected) if int(e[1:3]) % 3 == 1]
