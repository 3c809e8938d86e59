"""The polling trigger, replay as an async operation, and the event-type catalogue."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from relay.core import clock
from relay.core.models import EventRecord, ReplayRequest, SubscriptionRequest
from relay.core.statuses import OperationStatus
from relay.pipeline import polling, replay
from relay.store.eventlog import EventLog, indexed_patterns
from relay.store.storage import Endpoints, Storage
from relay.store.subscriptions import SubscriptionStore
from relay.store.tokens import TokenCodec, stored_key
from relay_dev.bench.pollcost import CountingStorage, log_events
from tests.helpers import InProcessApp, wait_until


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

    ids = [
        v["id"]
        for batch in range(2)
        for v in relay.publish([{"type": unique_type, "data": batch * 100 + i} for i in range(75)]).json()["value"]
    ]
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


def test_replay_redelivers_failed_events_with_their_original_id(relay_factory, receiver_factory, unique_type) -> None:
    """Failed deliveries replayed through 202 + Location + Retry-After arrive with their webhook-id."""
    relay = relay_factory({"RELAY_RETRY_SCHEDULE": "100ms"})
    healthy = {"now": False}
    receiver = receiver_factory(lambda req, i: (200, {}, b"") if healthy["now"] else (500, {}, b""))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    event_id = relay.publish({"type": unique_type, "data": 1}).json()["id"]
    wait_until(
        lambda: relay.get(f"subscriptions/{sub['id']}/deliveries?status=failed").json()["value"],
        30,
        "the delivery to fail",
    )
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
    wait_until(
        lambda: relay.get(f"subscriptions/{sub['id']}/deliveries?status=succeeded").json()["value"],
        30,
        "the replayed delivery to be logged",
    )
    assert relay.post(f"subscriptions/{'0' * 32}/replay", {"since": since}).status_code == 404
    assert relay.post(f"subscriptions/{sub['id']}/replay", {"since": "last week"}).status_code == 400


def test_event_types_validate_published_data(app: InProcessApp, unique_type: str) -> None:
    """A registered schema makes non-matching data a 400 naming the failing path; the catalogue round-trips."""
    schema = {
        "type": "object",
        "required": ["total"],
        "properties": {"total": {"type": "number"}, "lines": {"type": "array", "items": {"type": "string"}}},
    }
    put = app.put(f"event-types/{unique_type}", {"description": "An order.", "schema": schema})
    assert put.status_code == 201 and put.json()["schema"] == schema
    again = app.put(f"event-types/{unique_type}", {"description": "An order.", "schema": schema})
    assert again.status_code == 200
    assert unique_type in [t["name"] for t in app.get("event-types").json()["value"]]
    assert app.get(f"event-types/{unique_type}").json()["description"] == "An order."

    bad = app.post("events", {"type": unique_type, "data": {"total": "ten", "lines": ["a", 2]}})
    assert bad.status_code == 400
    assert {e["field"] for e in bad.json()["errors"]} == {"data.total", "data.lines[1]"}
    assert app.post("events", {"type": unique_type, "data": {"total": 10}}).status_code == 202
    assert app.post("events", {"type": "unregistered." + unique_type, "data": "anything"}).status_code == 202

    for broken in (
        {"type": 5},
        {"$schema": 5},
        {"$schema": {}},
        {"$ref": "#/$defs/missing"},
        {"$ref": "http://127.0.0.1:9/internal.json"},
        {"properties": {"a": {"$ref": "file:///etc/passwd"}}},
    ):
        answer = app.put(f"event-types/{unique_type}", {"schema": broken})
        assert answer.status_code == 400, (broken, answer.text)
        assert answer.json()["errors"][0]["field"].startswith("schema")
    local = {"$defs": {"money": {"type": "number"}}, "properties": {"total": {"$ref": "#/$defs/money"}}}
    assert app.put(f"event-types/{unique_type}", {"schema": local}).status_code == 200
    assert app.post("events", {"type": unique_type, "data": {"total": "x"}}).status_code == 400
    assert app.delete(f"event-types/{unique_type}").status_code == 200
    assert app.get(f"event-types/{unique_type}").status_code == 404
    assert app.post("events", {"type": unique_type, "data": {"total": "ten"}}).status_code == 202


# ---- what a poll or a replay reads, and where a chain starts ---------------------------------------


def test_poll_and_replay_read_only_matching_events(azurite) -> None:
    """A rare type among many others: a poll and a replay read its rows only, not the log window."""
    storage = CountingStorage(azurite.connection_string)
    storage.ensure()
    tag = uuid.uuid4().hex[:8]
    rare, noise = f"rare.{tag}.thing", f"noise.{tag}.x"
    started = clock.utcnow() - timedelta(seconds=1)
    types = [noise] * 300
    for at in (10, 150, 290):
        types[at] = rare
    ids = log_events(storage, types)
    rare_ids = [ids[10], ids[150], ids[290]]
    later = clock.utcnow() + polling.MARGIN + timedelta(seconds=1)
    state = polling.PollState(clock.time_key(started))

    for pattern in (rare, f"rare.{tag}.*"):
        result, read = storage.reads(functools.partial(polling.poll, storage, pattern, state, 7, now=later))
        assert sorted(e["id"] for e in result.events) == sorted(rare_ids)
        assert read == 3, f"{pattern}: read {read} rows for 3 matching events"
        assert {e["type"] for e in result.events} == {rare} and result.events[0]["data"] == {"t": rare}

    # `*` reads the event rows themselves (no index copies), a page at a time.
    result, read = storage.reads(lambda: polling.poll(storage, "*", state, 7, now=later))
    assert len(result.events) == polling.PAGE and read <= polling.PAGE + 1 and result.more
    assert len({e["id"] for e in result.events}) == polling.PAGE

    # Replay of everything a subscription to two overlapping patterns matches: each event once.
    sub, _ = SubscriptionStore(storage).subscribe(
        SubscriptionRequest(notificationUrl=f"https://replay.example/{tag}", eventTypes=[rare, f"rare.{tag}.*"])
    )
    found, read = storage.reads(lambda: list(replay.replayed_events(storage, sub, started, later)))
    assert sorted(f[0] for f in found) == sorted(rare_ids) and read == 6


def test_the_poll_cost_bench_measures_a_poll_and_a_replay(azurite) -> None:
    """`python -m relay_dev.bench.pollcost` runs through: its replay reads the rare events only."""
    from relay_dev.bench import pollcost

    storage = CountingStorage(azurite.connection_string)
    storage.ensure()
    out = pollcost.measure(storage, noise=40, rare=2)
    assert out["poll_rare"]["returned"] == 2 and out["poll_rare"]["rows_read"] == 2
    assert out["replay_all_rare"]["returned"] == 2 and out["replay_all_rare"]["rows_read"] == 2


def test_the_deepest_type_with_large_data_is_logged_and_polled(azurite) -> None:
    """A 61-segment type has 61 index rows: its event (28 KB of 4-byte characters, which the SDK
    escapes to 84 KB a row) still fits one transaction, and polls read it back whole."""
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    deep = f"d{uuid.uuid4().hex[:6]}" + ".y" * 60
    assert len(deep) <= 128 and len(indexed_patterns(deep)) == 61
    started = clock.utcnow() - timedelta(seconds=1)
    now = clock.utcnow()
    record = EventRecord(
        id=uuid.uuid4().hex,
        generated=True,
        type=deep,
        source="urn:test",
        time=clock.rfc3339(now),
        data="\U0001f600" * 7000,
        acceptedAt=now,
    )
    EventLog(storage).record(record, uuid.uuid4().hex, seen_before=False)
    later = clock.utcnow() + polling.MARGIN + timedelta(seconds=1)
    for pattern in (deep, deep.split(".")[0] + ".*"):
        result = polling.poll(storage, pattern, polling.PollState(clock.time_key(started)), 7, now=later)
        assert [e["data"] for e in result.events] == [record.data]


def test_a_poll_reads_a_bounded_slice(azurite, monkeypatch) -> None:
    """A forged old state with a type nothing matches: each poll reads a few day partitions and
    answers nothing new with the state advanced past them, until it reaches now."""
    storage = CountingStorage(azurite.connection_string)
    storage.ensure()
    tag = uuid.uuid4().hex[:8]
    started = clock.utcnow() - timedelta(seconds=1)
    log_events(storage, [f"noise.{tag}.x"] * 60)
    now = clock.utcnow() + polling.MARGIN + timedelta(seconds=1)
    state = polling.PollState(clock.time_key(now - timedelta(days=300)))
    polls = 0
    while True:
        result, read = storage.reads(functools.partial(polling.poll, storage, f"nothing.{tag}", state, 7, now=now))
        polls += 1
        assert result.events == [] and read == 0 and result.state.key > state.key
        state = result.state
        if not result.more:
            break
    assert polls <= 8 // polling.SLICE_DAYS + 2 and state.key == clock.time_key(now - polling.MARGIN)

    # Rows a chain skips (accepted before it started) count against the slice too.
    monkeypatch.setattr(polling, "READ_BUDGET", 25)
    chain = polling.PollState(clock.time_key(started), start=now)
    result, read = storage.reads(lambda: polling.poll(storage, f"noise.{tag}.x", chain, 7, now=now))
    assert result.events == [] and read == 25 and result.more and result.state.key > chain.key


def test_polling_chain_starts_exactly_at_the_first_call(relay, unique_type) -> None:
    """Publish, then the first poll, then publish: only the second is in the chain, however late
    the first reaches the log; a forged old state answers 202 with its state moved on."""
    before = relay.publish({"type": unique_type, "data": "before"}).json()["id"]
    location = relay.get(f"events/poll?eventType={unique_type}").headers["Location"]
    after = relay.publish({"type": unique_type, "data": "after"}).json()["id"]
    wait_until(relay.queue_idle, 30, "both events to be logged")
    # Logged after everything above, so once the chain returns it, it has read past both.
    last = relay.publish({"type": unique_type, "data": "last"}).json()["id"]
    seen: list[str] = []
    while last not in seen:
        page = _until_200(relay, location)
        location = page.headers["Location"]
        seen += [e["id"] for e in page.json()["value"]]
    assert seen == [after, last] and before not in seen

    # Signed with the relay's own key (as a state it issued long ago would be): only its age is odd.
    key = stored_key(Storage(Endpoints(connection_string=relay.azurite.connection_string)))
    forged = polling.PollState(clock.time_key(clock.utcnow() - timedelta(days=300))).encode(TokenCodec(key))
    answer = relay.get(f"events/poll?eventType=nothing.{unique_type}&triggerState={forged}")
    assert answer.status_code == 202 and answer.headers["Retry-After"] == "0"
    assert parse_qs(urlsplit(answer.headers["Location"]).query)["triggerState"] != [forged]


def _await_operation(relay, url: str) -> Any:
    def done() -> Any:
        response = relay.session.get(url, timeout=10)
        return [response] if response.status_code != 202 else None  # a 4xx Response is falsy

    return wait_until(done, 60, "the replay to finish")[0]


def test_replay_is_clamped_to_the_subscription_and_runs_one_at_a_time(relay, receiver_factory, unique_type) -> None:
    """Events from before the subscription are never replayed; a second replay while one runs is a
    409 naming the running one; once it is done the next is accepted."""
    relay.publish({"type": unique_type, "data": "before the subscription"})
    wait_until(relay.queue_idle, 30, "the early event to be logged")
    receiver = receiver_factory()
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    for batch in range(3):
        relay.publish([{"type": unique_type, "data": batch * 100 + i} for i in range(100)])
    receiver.wait_for(300, 60)
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")

    first = relay.post(f"subscriptions/{sub['id']}/replay", {"since": since, "status": "all"})
    assert first.status_code == 202
    second = relay.post(f"subscriptions/{sub['id']}/replay", {"since": since, "status": "all"})
    assert second.status_code == 409, second.text
    assert second.headers["Content-Type"].startswith("application/problem+json")
    assert second.headers["Location"] == first.headers["Location"]

    done = _await_operation(relay, first.headers["Location"])
    assert done.status_code == 200 and done.json()["replayed"] == 300, done.text
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    assert relay.post(f"subscriptions/{sub['id']}/replay", {"since": now, "status": "all"}).status_code == 202


def test_a_failed_replay_answers_a_problem_and_frees_the_subscription(relay, azurite) -> None:
    """A replay that could not finish (its subscription went away) is a problem+json, not a 200."""
    sub = relay.subscribe("http://127.0.0.1:9/gone")
    assert relay.delete(f"subscriptions/{sub['id']}").status_code == 200
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    request = ReplayRequest(since="2026-01-01T00:00:00Z")
    op_id = replay.Operations(storage).start(sub["id"], request)  # past the API's 404, as a race would be
    answer = _await_operation(relay, f"{relay.base}/operations/{op_id}")
    assert answer.status_code == 409 and answer.headers["Content-Type"].startswith("application/problem+json")
    assert answer.json()["status"] == 409 and answer.json()["id"] == op_id
    assert replay.Operations(storage).start(sub["id"], request)  # the failure released the lock


def test_a_crashed_replay_holds_its_subscription_only_for_its_lease(azurite) -> None:
    """Nothing runs these replays: the first holds the lock until its lease runs out, then the
    next takes over and the first is reported failed (and stops should it come back)."""
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    ops, sub_id, t0 = replay.Operations(storage), uuid.uuid4().hex, clock.utcnow()
    request = ReplayRequest(since="2026-01-01T00:00:00Z")
    first = ops.start(sub_id, request, now=t0)
    with pytest.raises(replay.ReplayRunning) as running:
        ops.start(sub_id, request, now=t0 + replay.LEASE - timedelta(seconds=1))
    assert running.value.operation_id == first
    second = ops.start(sub_id, request, now=t0 + replay.LEASE + timedelta(seconds=1))
    assert second != first and ops.get(first).status == "failed"
    assert ops.renew(sub_id, first) is False and ops.renew(sub_id, second) is True


def _v010_state(key: str) -> str:
    """A triggerState as the first released version (0.1.0) wrote it: unsigned base64url JSON."""
    import base64

    return base64.urlsafe_b64encode(json.dumps({"k": key}).encode()).decode().rstrip("=")


def test_a_flow_holding_a_state_from_the_first_release_keeps_polling(relay, unique_type) -> None:
    """Flows saved on 0.1.0 hold unsigned states in their trigger: after the upgrade their polls go
    on (the next Location carries a signed state) instead of failing until someone re-saves them.
    Unsigned, such a state cannot be verified, so it starts a fresh chain from the call (CONTRACT
    section 6): a forged or old one reads nothing from before it."""
    recent = _v010_state(clock.time_key(clock.utcnow() - timedelta(seconds=2)))
    first = relay.get(f"events/poll?eventType={unique_type}&triggerState={recent}")
    assert first.status_code == 202, first.text
    signed = parse_qs(urlsplit(first.headers["Location"]).query)["triggerState"][0]
    assert "." in signed and signed != recent
    fresh = relay.publish({"type": unique_type, "data": "after the upgrade"}).json()["id"]
    page = _until_200(relay, first.headers["Location"])
    assert [e["id"] for e in page.json()["value"]] == [fresh]

    # An event logged two hours ago (the log's clock set back for this one write, as a slow
    # instance's would be): a legacy state from last week must not reach it.
    from unittest import mock

    two_hours_ago = clock.utcnow() - timedelta(hours=2)
    stale = EventRecord(
        id=f"old-{uuid.uuid4().hex[:8]}",
        type=unique_type,
        source="urn:test",
        data=1,
        time=clock.rfc3339(two_hours_ago),
        acceptedAt=two_hours_ago,
    )
    with mock.patch("relay.core.clock.utcnow", return_value=two_hours_ago):
        EventLog(Storage(Endpoints(connection_string=relay.azurite.connection_string))).record(
            stale, uuid.uuid4().hex, seen_before=False
        )
    week_old = _v010_state(clock.time_key(clock.utcnow() - timedelta(days=7)))
    seen: list[str] = []
    url = f"{relay.base}/events/poll?eventType={unique_type}&triggerState={week_old}"
    for _ in range(5):
        answer = _poll(relay, url)
        url = answer.headers["Location"]
        if answer.status_code == 200:
            seen += [e["id"] for e in answer.json()["value"]]
    assert stale.id not in seen and fresh not in seen  # both were accepted before the call


def test_a_replay_lost_long_ago_is_a_crashed_problem_and_a_finished_one_says_how_many(
    app: InProcessApp, app_storage: Storage
) -> None:
    """A replay still `running` long after it began (its message poisoned, its process gone) is
    answered as a failed operation's 500 problem, not left running for ever; a finished one is a
    200 with how many it replayed."""
    sub_id = app.subscribe("http://127.0.0.1:9/lost")["id"]
    ops = replay.Operations(app_storage)
    request = ReplayRequest(since="2026-01-01T00:00:00Z")
    lost = ops.start(sub_id, request, now=clock.utcnow() - replay.ABANDONED_AFTER - timedelta(minutes=1))
    answer = app.get(f"operations/{lost}")
    assert answer.status_code == 500 and answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert (problem["id"], problem["operationStatus"]) == (lost, "failed") and "did not finish" in problem["detail"]

    ops.finish(lost, OperationStatus.SUCCEEDED, replayed=0)
    done = app.get(f"operations/{lost}")
    assert done.status_code == 200 and done.json() == {"id": lost, "status": "succeeded", "replayed": 0}


def test_a_poll_state_keeps_its_chain_start_to_the_microsecond() -> None:
    """A state carries its chain's start as the time key it always did (states already issued
    still open) and reads back the very same instant, microseconds and all."""
    from relay.store.tokens import Purpose

    codec = TokenCodec(b"k" * 32)
    now = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    state = polling.PollState.starting(now)
    token = state.encode(codec)
    assert codec.open(Purpose.TRIGGER_STATE, token, "triggerState")["s"] == "20260301T120000.123456Z"
    again = polling.PollState.decode(token, codec)
    assert again == state and again.start == now
