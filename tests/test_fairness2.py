"""Fairness that holds against many origins (issue 18, items 3 and 4): dead receivers spread over
many origins, a busy origin and a replay storm cannot take the sender from the others."""

from __future__ import annotations

import selectors
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from relay.outbound.origins import OriginGate
from relay.outbound.sender import BreakerOpen, DeliveryError, DeliveryTimeout, OriginBusy, Sender
from tests.helpers import wait_until

SECRET = "s3cr3tSIG"
SINCE = "20260101T000000.000000Z"  # a time key: deletions after it are honoured


class ManyHanging:
    """`count` listening sockets on 127.0.0.1 (as many origins: one port each); every connection is
    accepted and then left unanswered. One thread serves them all."""

    def __init__(self, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.listeners: list[socket.socket] = []
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.listeners.append(sock)
        self.ports = [s.getsockname()[1] for s in self.listeners]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def accepted(self) -> int:
        with self.lock:
            return len(self.held)

    def _accept(self) -> None:
        while not self.stopped.is_set():
            for key, _ in self.selector.select(0.2):
                try:
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue
                with self.lock:
                    self.held.append(conn)

    def close(self) -> None:
        self.stopped.set()
        for sock in self.listeners:
            sock.close()
        with self.lock:
            for conn in self.held:
                conn.close()


@pytest.fixture
def many_hanging() -> Iterator[ManyHanging]:
    """Requested before relay_factory, so that it closes after the dev host stops: a port freed while
    the host still retries could be a parallel test's receiver, sent these events."""
    server = ManyHanging(150)
    yield server
    server.close()


# ---- the gate: a lane for origins that are failing or not known --------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def origin(n: int) -> tuple[str, str, int]:
    return ("http", f"o{n}.example.test", 80)


def test_unknown_and_failing_origins_share_a_small_lane_and_known_ones_keep_the_rest() -> None:
    """With the lane's two slots taken by origins that never answered, a third such origin is handed
    back at once (OriginBusy), while an origin that answered lately still gets slots; an origin
    whose last attempt timed out is back in the lane."""
    clock = FakeClock()
    gate = OriginGate(cap=4, wait=2.0, stall=1.0, trip=5, window=60, cooloff=30, lane=2, now=clock)
    known = origin(0)
    gate.acquire(known, "known")
    gate.release(known, False, False, took=0.01)  # it answered: known from now on
    gate.acquire(origin(1), "o1")
    gate.acquire(origin(2), "o2")
    with pytest.raises(OriginBusy, match="not answered"):
        gate.acquire(origin(3), "o3")
    for _ in range(3):
        gate.acquire(known, "known")
    gate.release(origin(1), False, False, took=0.01)  # o1 answers: it leaves the lane
    gate.acquire(origin(3), "o3")  # the lane's freed slot
    gate.release(known, False, True)  # known times out: its next attempt goes through the lane
    gate.release(known, False, False)  # (no answer either way: a refused connection, say)
    gate.release(known, False, False)
    with pytest.raises(OriginBusy, match="not answered"):
        gate.acquire(known, "known")


def test_an_origin_that_never_answered_opens_its_breaker_on_its_first_timeout() -> None:
    clock = FakeClock()
    gate = OriginGate(cap=4, wait=2.0, stall=1.0, trip=5, window=60, cooloff=30, first_trip=1, now=clock)
    gate.acquire(origin(1), "o1")
    gate.release(origin(1), False, True)
    with pytest.raises(BreakerOpen):
        gate.acquire(origin(1), "o1")
    # One that has answered before is given `trip` timeouts.
    gate.acquire(origin(2), "o2")
    gate.release(origin(2), False, False, took=0.01)
    gate.acquire(origin(2), "o2")
    gate.release(origin(2), False, True)
    assert gate.acquire(origin(2), "o2") is False


@pytest.mark.timeout(30)
def test_connect_timeout_is_shorter_than_the_answer_timeout(senders: Callable[..., Sender]) -> None:
    """A listener whose backlog is full does not complete connections: the attempt ends at the
    connect timeout (1 s here), not at the 10 s answer timeout."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        port = full.getsockname()[1]
        # Fill the accept queue (never accepted): later SYNs are dropped by the kernel.
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)  # let the kernel finish the handshakes of the fillers it will take
        sender = senders(timeout=10.0, connect_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(DeliveryError) as failed:
            sender.post(f"http://127.0.0.1:{port}/hook?sig={SECRET}", b"{}", {})
        assert isinstance(failed.value, DeliveryTimeout)
        assert time.monotonic() - started < 5.0
        assert SECRET not in failed.value.message
    finally:
        for filler in fillers:
            filler.close()
        full.close()


# ---- end to end: 150 hanging origins, the dev host, the default 30 s timeout -------------------


@pytest.mark.timeout(400)
def test_healthy_receiver_p95_under_2s_while_150_origins_hang(
    many_hanging: ManyHanging, relay_factory: Callable[..., Any], receiver_factory: Callable[..., Any], unique_type: str
) -> None:
    """150 subscriptions on 150 receivers (one port each) that accept and never answer, at the
    default 30 s timeout; a healthy receiver gets 40 events published one a second meanwhile,
    through the first timeouts and the retries after them: its p95 latency (publish call to
    arrival) stays under 2 s. (Before: every attempt thread hung for 30 s each, and the healthy
    receiver's events waited up to a whole timeout.)"""
    relay = relay_factory({})
    good = receiver_factory()
    dead_type, good_type = unique_type, unique_type + ".other"
    for port in many_hanging.ports:
        relay.subscribe(f"http://127.0.0.1:{port}/hook?sig={SECRET}", eventTypes=[dead_type])
    relay.subscribe(good.url, eventTypes=[good_type])
    relay.publish({"type": good_type, "data": {"n": -1}, "id": "warm"})
    good.wait_for(1, timeout=30)  # the healthy origin has answered before, as a live one has

    relay.publish({"type": dead_type, "data": {"n": 0}})
    wait_until(lambda: many_hanging.accepted >= 8, 30, "the relay to reach the hanging receivers")
    sent: dict[str, float] = {}
    for n in range(40):
        event_id = f"good-{n}"
        sent[event_id] = time.monotonic()
        relay.publish({"type": good_type, "data": {"n": n}, "id": event_id})
        time.sleep(max(0.0, sent[event_id] + 1.0 - time.monotonic()))  # one a second, the load itself
    arrived = {r.headers["webhook-id"]: r.at for r in good.wait_for(41, timeout=120)}
    latencies = sorted(arrived[e] - t for e, t in sent.items())
    p95 = latencies[int(0.95 * len(latencies)) - 1]
    print(f"\np95 {p95:.2f} s, median {statistics.median(latencies):.2f} s, worst {latencies[-1]:.2f} s")
    assert p95 < 2.0, (p95, statistics.median(latencies), latencies[-1], many_hanging.accepted)
    assert many_hanging.accepted >= 8


# ---- item 4: a busy origin, a large fan-out and a replay storm leave room for live traffic -------


def _event(event_id: str) -> Any:
    from relay.core.models import EventRecord

    return EventRecord(
        id=event_id, type="t.x", source="s", time="2026-01-01T00:00:00Z", data=1, acceptedAt="2026-01-01T00:00:00Z"
    )


def _target(sub: str, url: str, **kw: Any) -> Any:
    from relay.core.models import Target

    return Target(sub=sub, url=url, secret="whsec_" + "A" * 32, **kw)


def _slow(_: Any, __: int) -> tuple[int, dict[str, str], bytes]:
    time.sleep(0.2)  # the receiver's own pace (a flow answering in 0.2 s), the test's subject
    return 200, {}, b""


def _live_latency(deliverer: Any, other: Any, event_id: str) -> float:
    """Seconds from handing an unrelated event to the sender to its arrival at `other`."""
    before = len(other.requests)
    started = time.monotonic()
    attempts = deliverer.start(
        _event(event_id), 1, ("e:20260101", f"{SINCE}_{event_id}"), SINCE, [_target("live", other.url)]
    )
    arrived = other.wait_for(before + 1, timeout=60)[before].at
    attempts.finish()
    return arrived - started


@pytest.mark.timeout(300)
def test_a_thousand_targets_on_a_busy_origin_do_not_hold_back_an_unrelated_event(
    app_storage: Any, receiver_factory: Callable[..., Any]
) -> None:
    """1,000 subscriptions on one receiver that answers in 0.2 s, handed to the sender as ten work
    items of a hundred (a fan-out), then an unrelated event for another receiver: it arrives
    within 2 s, not after the thousand (about 6 s at 32 slots; the reviewer saw 5.6 s)."""
    from relay.core.settings import get_settings
    from relay.pipeline.delivery import Deliverer

    busy, other = receiver_factory(_slow), receiver_factory()
    deliverer = Deliverer(app_storage, get_settings())
    _live_latency(deliverer, busy, "warm-busy")  # both receivers have answered before
    _live_latency(deliverer, other, "warm-other")
    targets = [_target(f"s{i}", f"{busy.url}/{i}") for i in range(1000)]
    log_key = ("e:20260101", f"{SINCE}_fanout")
    items = [deliverer.start(_event("fanout"), 1, log_key, SINCE, targets[i : i + 100]) for i in range(0, 1000, 100)]
    busy.wait_for(1 + 40, timeout=60)  # the fan-out is under way
    latency = _live_latency(deliverer, other, "unrelated")
    for item in items:
        item.finish()
    assert latency < 2.0, latency
    assert len(busy.requests) >= 1000


@pytest.mark.timeout(300)
def test_a_replay_storm_leaves_room_for_live_deliveries(app_storage: Any, receiver_factory: Callable[..., Any]) -> None:
    """Seven replays of 100 events each (700 extra deliveries, each a work item of its own, as a
    replay sends them) to a receiver answering in 0.2 s, then a live event for another receiver:
    it arrives within 2 s (first in first out, it waited for the 700: about 4.4 s at 32 slots)."""
    from relay.core.settings import get_settings
    from relay.pipeline.delivery import Deliverer

    busy, other = receiver_factory(_slow), receiver_factory()
    deliverer = Deliverer(app_storage, get_settings())
    _live_latency(deliverer, busy, "warm-busy")
    _live_latency(deliverer, other, "warm-other")
    replays = []
    for replay in range(7):
        sub = f"replayed-{replay}"
        for n in range(100):
            event_id = f"r{replay}-{n}"
            target = _target(sub, f"{busy.url}/{replay}", logged=True)  # as Subscription.replay_target
            replays.append(deliverer.start(_event(event_id), 1, ("e:20260101", f"{SINCE}_{event_id}"), SINCE, [target]))
    busy.wait_for(1 + 40, timeout=60)  # the storm is under way
    latency = _live_latency(deliverer, other, "live")
    for item in replays:
        item.finish()
    assert latency < 2.0, latency
    assert len(busy.requests) >= 700


@pytest.mark.timeout(30)
def test_attempt_threads_take_turns_and_keep_bulk_work_to_its_share() -> None:
    """Four threads, bulk work on at most two: ten blocked replay calls hold two threads, and a
    live call queued after them runs at once on a third; flows take turns, and a steady live
    queue still lets a bulk call through within BULK_TURN calls."""
    from relay.pipeline.pools import BULK_TURN, AttemptThreads

    threads = AttemptThreads(4, bulk_share=0.5)
    release = threading.Event()
    running: list[str] = []
    lock = threading.Lock()

    def hold(name: str) -> None:
        with lock:
            running.append(name)
        release.wait(20)

    try:
        bulk = threads.start(hold, [f"bulk{i}" for i in range(10)], key="replay", bulk=True)
        wait_until(lambda: len(running) == 2, 5, "two bulk calls to run")
        live = threads.start(lambda _: "done", ["live"], key="event")
        assert live.wait() == [("done", None)]
        with lock:
            assert sorted(running) == ["bulk0", "bulk1"]  # still two: the cap holds
        release.set()
        assert len(bulk.wait()) == 10
    finally:
        release.set()
        threads.shutdown()

    one = AttemptThreads(1)
    gate, order = threading.Event(), []
    try:
        blocker = one.start(lambda _: gate.wait(20), [None])
        big = one.start(order.append, [f"a{i}" for i in range(6)], key="a")
        small = one.start(order.append, ["b0"], key="b")
        replay = one.start(order.append, ["r0"], key="r", bulk=True)
        gate.set()
        for batch in (blocker, big, small, replay):
            batch.wait()
    finally:
        gate.set()
        one.shutdown()
    assert order.index("b0") == 1  # after one call of the big flow, not after all six
    assert order.index("r0") < BULK_TURN
