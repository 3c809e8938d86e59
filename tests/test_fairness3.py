"""Fairness under continuing dead load (issue 18, item 3): dead receivers on many origins that share
the healthy receiver's event type, so that every event fans out to them too, cannot take the
relay's storage and queue work from the healthy deliveries."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from relay.outbound.sender import Sender
from tests.helpers import refused_ports, wait_until
from tests.test_fairness2 import ManyHanging

SECRET = "s3cr3tSIG"
# The default answer timeout (tests/helpers.RelayProcess sets 5 s); its retry schedule (three
# retries 100 ms apart) stays: every dead delivery is tried, handed back, retried and failed within
# the run, the most storage work per dead delivery.
SETTINGS = {"RELAY_DELIVERY_TIMEOUT": "30"}


@pytest.fixture
def dead_origins() -> Iterator[ManyHanging]:
    """Requested before relay_factory, so that it closes after the dev host stops: a port freed while
    the host still retries could be a parallel test's receiver, sent these events."""
    server = ManyHanging(150)
    yield server
    server.close()


@pytest.mark.timeout(600)
def test_healthy_receiver_keeps_p95_under_2s_while_its_events_also_go_to_150_dead_origins(
    dead_origins: ManyHanging, relay_factory: Callable[..., Any], receiver_factory: Callable[..., Any], unique_type: str
) -> None:
    """150 subscriptions on 150 receivers (one port each) that accept and never answer share the
    healthy subscription's event type: each of 40 events published one a second fans out to 151
    subscriptions. The healthy receiver gets all 40, with a p95 latency (publish call to arrival)
    under 2 s. (Before: the healthy attempt queued behind each event's 150 dead ones and their
    hand-backs and retries, each a queue message of its own: p95 2.7 s here, 34 of 41 delivered
    within 120 s on the reviewer's machine. Then, in 1 run of 3 to 5: p95 24-62 s, as the kicks
    whose attempts hung in the lane for doubtful origins held all 16 kick threads, and the next
    events' fan-outs waited a whole timeout for one: tests/test_kick.py has that case alone.)"""
    relay = relay_factory(SETTINGS)
    good = receiver_factory()
    relay.subscribe(good.url, eventTypes=[unique_type])
    relay.publish({"type": unique_type, "data": {"n": -1}, "id": "warm"})
    good.wait_for(1, timeout=30)  # the healthy origin has answered before, as a live one has
    for port in dead_origins.ports:
        relay.subscribe(f"http://127.0.0.1:{port}/hook?sig={SECRET}", eventTypes=[unique_type])

    sent: dict[str, float] = {}
    for n in range(40):
        event_id = f"good-{n}"
        sent[event_id] = time.monotonic()
        relay.publish({"type": unique_type, "data": {"n": n}, "id": event_id})
        time.sleep(max(0.0, sent[event_id] + 1.0 - time.monotonic()))  # one a second, the load itself
    try:
        good.wait_for(41, timeout=120)
    except AssertionError:
        pass  # judged below, with the numbers
    arrived = {r.headers["webhook-id"]: r.at for r in good.requests}
    missing = sorted(set(sent) - set(arrived))
    latencies = sorted(arrived[e] - t for e, t in sent.items() if e in arrived)
    assert not missing, (f"{len(missing)} of 40 not delivered within 120 s", latencies[-5:])
    p95 = latencies[int(0.95 * len(latencies)) - 1]
    print(f"\np95 {p95:.2f} s, median {statistics.median(latencies):.2f} s, worst {latencies[-1]:.2f} s")
    assert p95 < 2.0, (p95, statistics.median(latencies), latencies[-1])
    # The dead receivers were tried (through the lane for receivers not known to answer).
    wait_until(lambda: dead_origins.accepted >= 8, 30, "the relay to reach the dead receivers")


@pytest.mark.timeout(120)
def test_a_batchs_retries_go_out_as_one_work_item_per_hundred_not_a_message_each(
    app_storage: Any, senders: Callable[..., Sender]
) -> None:
    """150 targets on 150 origins that refuse connections: every one is retried (a pending row each,
    the retry schedule's delay), and the retries are two work items of the due table holding all
    150 targets, not 150. Nothing is lost: each target is in exactly one of them, at its next attempt."""
    from relay.core.models import EventRecord, Target
    from relay.core.settings import Settings
    from relay.pipeline.delivery import Deliverer
    from relay.store.deliverylog import DeliveryLog
    from relay.store.storage import DUE_TABLE

    settings = Settings.from_environ({"RELAY_RETRY_SCHEDULE": "10m"})  # due later than the due timer's period
    sender = senders(lane_slots=1000)  # every origin is tried now: none is handed back for the lane
    deliverer = Deliverer(app_storage, settings, sender, rand=lambda: 0.5)  # the schedule's own delay
    event_id = f"e-{uuid.uuid4().hex[:8]}"
    event = EventRecord(
        id=event_id, type="t.x", source="s", time="2026-01-01T00:00:00Z", data=1, acceptedAt="2026-01-01T00:00:00Z"
    )
    log_key = ("e:20260101", f"20260101T000000.000000Z_{event_id}")
    with refused_ports(150) as ports:
        targets = [
            Target(sub=uuid.uuid4().hex, url=f"http://127.0.0.1:{port}/hook?sig={SECRET}", secret="whsec_" + "A" * 32)
            for port in ports
        ]
        deliverer.deliver(event, 1, log_key, log_key[1][:23], targets)

    for target in targets[:5]:  # each has its pending row, as before
        row = DeliveryLog(app_storage, 7).list(target.sub, status="pending", limit=1, token=None)[0][0]
        assert row.attempts == 1 and row.next_attempt_at is not None
    items = [
        json.loads(row["Body"])
        for row in app_storage.table(DUE_TABLE).list_entities()
        if "Body" in row and event_id in row["Body"]
    ]
    assert len(items) == 2, len(items)
    retried = [t for item in items for t in item["targets"]]
    assert sorted(t["sub"] for t in retried) == sorted(t.sub for t in targets)
    assert all(t["attempt"] == 2 and t["logged"] for t in retried)
    assert SECRET in retried[0]["url"]  # the sender needs the whole URL; it is stored as any work item is


def test_gather_sends_no_target_before_it_is_due_and_late_by_at_most_its_slack() -> None:
    from datetime import UTC, datetime, timedelta

    from relay.core.models import Target
    from relay.pipeline.later import SLACK_MIN, SLACK_SHARE, Later, gather

    now = datetime(2026, 1, 1, tzinfo=UTC)
    dues = [2.0, 2.5, 2.9, 3.2, 4.0, 4.5, 100.0, 109.0, 111.0, 300.0]
    laters = [
        Later(Target(sub=f"s{n}", url=f"http://o{n}.example.test/", secret="x"), now + timedelta(seconds=due))
        for n, due in enumerate(dues)
    ]
    items = gather(list(reversed(laters)), now)
    by_sub = {t.sub: delay for delay, targets in items for t in targets}
    assert sorted(by_sub) == sorted(t.target.sub for t in laters)  # each exactly once
    for n, due in enumerate(dues):
        assert due <= by_sub[f"s{n}"] <= due + max(SLACK_MIN, SLACK_SHARE * due) + 1e-6
    assert [sorted(t.sub for t in targets) for _, targets in items] == [
        ["s0", "s1", "s2"],
        ["s3", "s4"],
        ["s5"],
        ["s6", "s7"],
        ["s8"],
        ["s9"],
    ]


@pytest.mark.timeout(30)
def test_attempts_to_doubtful_origins_are_one_flow_behind_which_a_healthy_attempt_does_not_wait() -> None:
    """One thread; an event's batch of six attempts to doubtful origins and one to a healthy one
    (last in the batch): the healthy one runs second, after one doubtful call, not after all six;
    two events' doubtful attempts share one flow, so a second event's healthy attempt is next."""
    import threading

    from relay.pipeline.delivery import DOUBTFUL
    from relay.pipeline.pools import AttemptThreads

    one = AttemptThreads(1)
    gate, order = threading.Event(), []
    try:

        def flow_of(name: str) -> Any:
            return DOUBTFUL if name.startswith("dead") else None

        blocker = one.start(lambda _: gate.wait(20), [None])
        first = one.start(order.append, [f"dead{i}" for i in range(6)] + ["good1"], key="e1", flow_of=flow_of)
        second = one.start(order.append, ["dead-x", "good2"], key="e2", flow_of=flow_of)
        gate.set()
        for batch in (blocker, first, second):
            batch.wait()
    finally:
        gate.set()
        one.shutdown()
    assert order.index("good1") <= 1 and order.index("good2") <= 3, order
    assert sorted(order) == sorted([f"dead{i}" for i in range(6)] + ["good1", "dead-x", "good2"])


@pytest.mark.timeout(30)
def test_a_retry_is_sent_when_due_while_the_batch_still_runs_and_a_failed_send_fails_the_batch() -> None:
    """A retry due in 0.5 s, added while the batch's other attempts run (one hangs to its timeout),
    is sent at its due time, not when the batch ends; two more due with it wait for it and go in
    the same send; one due later goes when the batch is done. A send that fails on the timer is
    raised when the batch is done, so its work item is done again (nothing lost)."""
    import threading
    from datetime import UTC, datetime, timedelta

    from relay.core.models import Target
    from relay.pipeline.later import Later, Laters

    def later(name: str, seconds: float) -> Later:
        target = Target(sub=name, url=f"http://{name}.example.test/", secret="x")
        return Later(target, datetime.now(UTC) + timedelta(seconds=seconds))

    sent: list[tuple[float, list[str]]] = []
    started = time.monotonic()
    one_sent = threading.Event()

    def send(laters: list[Later]) -> None:
        sent.append((time.monotonic() - started, sorted(one.target.sub for one in laters)))
        one_sent.set()

    laters = Laters(send, lambda: datetime.now(UTC))
    laters.add(later("a", 0.5))
    laters.add(later("b", 0.6))
    laters.add(later("c", 0.4))
    assert one_sent.wait(5)
    laters.add(later("d", 60.0))
    laters.close()  # the batch is done
    assert [names for _, names in sent] == [["a", "b", "c"], ["d"]]
    assert 0.3 <= sent[0][0] < 3.0

    tried = threading.Event()

    def failing(_: list[Later]) -> None:
        tried.set()
        raise OSError("storage is down")

    broken = Laters(failing, lambda: datetime.now(UTC))
    broken.add(later("e", 0.0))
    assert tried.wait(5)  # the timer's send (close waits for it to end)
    with pytest.raises(OSError, match="storage is down"):
        broken.close()
