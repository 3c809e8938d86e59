"""One dead receiver cannot hold up the others: per-origin slots, the circuit breaker, the DNS
lookup inside the attempt's deadline, and the whole relay with 150 subscriptions on a receiver
that accepts and never answers."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from relay.core.errors import ConfigurationError
from relay.core.settings import Settings
from relay.outbound.origins import ORIGINS_KEPT, OriginGate
from relay.outbound.sender import BreakerOpen, DeliveryError, DeliveryTimeout, OriginBusy, Sender
from relay.pipeline.pools import AttemptThreads, Pools
from tests.helpers import wait_until

SECRET = "s3cr3tSIG"


class HangingServer:
    """Accepts every connection, reads nothing, answers nothing; counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port: int = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def accepted(self) -> int:
        with self.lock:
            return len(self.held)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.held.append(conn)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for conn in self.held:
                conn.close()


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hanging() -> Iterator[HangingServer]:
    server = HangingServer()
    yield server
    server.close()


@pytest.fixture
def healthy() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


# ---- the gate alone, on a clock the test moves ------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


A = ("http", "a.example.test", 80)
B = ("http", "b.example.test", 80)


def test_full_origin_that_stalls_hands_attempts_back_and_other_origins_go_on() -> None:
    """With every slot of A held and none freed for `stall` seconds, an attempt to A is handed back
    at once (OriginBusy), while B still gets a slot."""
    clock = FakeClock()
    gate = OriginGate(cap=2, wait=2.0, stall=1.0, trip=3, window=60, cooloff=30, now=clock)
    assert gate.acquire(A, "a") is False and gate.acquire(A, "a") is False
    clock.now += 1.5
    with pytest.raises(OriginBusy, match="in flight"):
        gate.acquire(A, "a")
    assert gate.acquire(B, "b") is False
    gate.release(A, False, False)
    assert gate.acquire(A, "a") is False  # a freed slot is taken again


def test_a_waiting_attempt_is_not_overtaken_while_the_origin_answers() -> None:
    """Eight threads share two slots of a quick origin for two seconds, each taking a slot again as
    soon as it frees one: a freed slot goes to the thread that has waited longest, so none waits
    out the gate's 0.5 s and is handed back while attempts keep finishing. (Taken by whoever asked
    last, it let waiters starve: the benchmark saw 64 hand-backs per run of a healthy receiver.)"""
    gate = OriginGate(cap=2, wait=0.5, stall=0.5, trip=3, window=60, cooloff=30)
    handed_back, finished = [0], [0]
    lock = threading.Lock()
    until = time.monotonic() + 2.0

    def attempts() -> None:
        while time.monotonic() < until:
            try:
                gate.acquire(A, "a")
            except OriginBusy:
                with lock:
                    handed_back[0] += 1
                continue
            time.sleep(0.001)  # the attempt itself
            gate.release(A, False, False, 0.001)
            with lock:
                finished[0] += 1

    threads = [threading.Thread(target=attempts) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert finished[0] > 100
    assert handed_back[0] == 0


@pytest.mark.timeout(20)
def test_a_slot_handed_to_a_waiter_that_fails_as_it_wakes_goes_on() -> None:
    """The slot freed for a waiting attempt is counted as its own at once; if that attempt leaves
    with an exception instead (here its clock fails as it wakes), the slot is freed again, not
    lost to the origin for good."""
    inside = threading.Event()

    class FailingOnWake(FakeClock):
        calls = 0

        def __call__(self) -> float:
            if threading.current_thread().name == "waiter":
                self.calls += 1
                if self.calls == 1:
                    inside.set()  # the waiter holds the gate's lock until it waits
                else:
                    raise RuntimeError("clock failed")
            return self.now

    gate = OriginGate(cap=1, wait=5.0, stall=5.0, trip=3, window=60, cooloff=30, now=FailingOnWake())
    assert gate.acquire(A, "a") is False
    failures: list[BaseException] = []

    def wait_for_slot() -> None:
        try:
            gate.acquire(A, "a")
        except RuntimeError as exc:
            failures.append(exc)

    waiter = threading.Thread(target=wait_for_slot, name="waiter")
    waiter.start()
    inside.wait(5)
    gate.release(A, False, False, 0.01)  # handed to the waiter, which fails as it wakes
    waiter.join(5)
    assert [str(f) for f in failures] == ["clock failed"]
    assert gate.acquire(A, "a") is False  # the slot is free again (before: held forever)


def test_breaker_opens_after_timeouts_and_one_probe_closes_it() -> None:
    """`trip` timeouts within the window open the breaker (BreakerOpen, nothing sent); after the
    cool-off one probe goes through, the others are still held off; its success closes it."""
    clock = FakeClock()
    gate = OriginGate(cap=4, wait=2.0, stall=1.0, trip=2, window=60, cooloff=30, now=clock)
    for _ in range(2):
        gate.acquire(A, "a")
        gate.release(A, False, timed_out=True)
    with pytest.raises(DeliveryError) as held_off:
        gate.acquire(A, "a")
    assert isinstance(held_off.value, BreakerOpen)
    assert gate.acquire(B, "b") is False  # only A is affected
    clock.now += 31
    assert gate.acquire(A, "a") is True  # the probe
    with pytest.raises(DeliveryError, match="timed out"):
        gate.acquire(A, "a")
    gate.release(A, True, timed_out=False)
    assert gate.acquire(A, "a") is False


def test_breaker_probe_that_times_out_opens_it_again_and_old_timeouts_expire() -> None:
    clock = FakeClock()
    gate = OriginGate(cap=4, wait=2.0, stall=1.0, trip=2, window=60, cooloff=30, now=clock)
    gate.acquire(A, "a")
    gate.release(A, False, timed_out=True)
    clock.now += 61  # the first timeout has left the window: one more does not trip it
    gate.acquire(A, "a")
    gate.release(A, False, timed_out=True)
    assert gate.acquire(A, "a") is False
    gate.release(A, False, timed_out=True)  # second within the window: open
    clock.now += 31
    assert gate.acquire(A, "a") is True
    gate.release(A, True, timed_out=True)
    with pytest.raises(DeliveryError):
        gate.acquire(A, "a")


def test_gate_forgets_origins_whose_timeouts_have_expired() -> None:
    """Each origin that timed out is remembered for the window; thousands of them do not pile up."""
    clock = FakeClock()
    gate = OriginGate(cap=4, wait=2.0, stall=1.0, trip=5, window=60, cooloff=30, now=clock)
    for n in range(ORIGINS_KEPT):
        gate.acquire(("http", f"h{n}.example.test", 80), "h")
        gate.release(("http", f"h{n}.example.test", 80), False, timed_out=True)
    assert gate.remembered() == ORIGINS_KEPT
    clock.now += 61
    gate.acquire(A, "a")
    assert gate.remembered() == 1  # A, in flight; the expired ones are forgotten


# ---- the sender against real loopback sockets -------------------------------------------------


@pytest.mark.timeout(30)
def test_dead_origin_holds_only_its_slots(
    senders: Callable[..., Sender], hanging: HangingServer, healthy: ThreadingHTTPServer
) -> None:
    """An attempt hangs on a receiver that has never answered (so it may hold one slot until it
    does); another to it is handed back within a second without connecting, and a healthy
    receiver on another port is served meanwhile."""
    sender = senders(origin_slots=2, stall=0.3, timeout=5.0)
    dead = f"http://127.0.0.1:{hanging.port}/hook?sig={SECRET}"
    with ThreadPoolExecutor(2) as pool:
        stuck = [pool.submit(sender.post, dead, b"{}", {}) for _ in range(1)]
        wait_until(lambda: hanging.accepted == 1, 5, "a connection to the dead receiver")
        started = time.monotonic()
        with pytest.raises(OriginBusy) as busy:
            sender.post(dead, b"{}", {})
        assert time.monotonic() - started < 1.5
        assert SECRET not in busy.value.message
        started = time.monotonic()
        assert sender.post(f"http://127.0.0.1:{healthy.server_address[1]}/hook", b"{}", {}).status == 200
        assert time.monotonic() - started < 1.0
        assert hanging.accepted == 1
        for future in stuck:
            assert isinstance(future.exception(), DeliveryError)


class SlowServer:
    """Answers POSTs 200 after `first` seconds the first time and `then` seconds afterwards; counts
    requests as they arrive."""

    def __init__(self, first: float, then: float) -> None:
        outer = self
        self.arrived = 0
        self.lock = threading.Lock()

        class Handler(_Ok):
            def do_POST(self) -> None:
                with outer.lock:
                    outer.arrived += 1
                    n = outer.arrived
                time.sleep(first if n == 1 else then)  # the receiver's own slowness, the test's subject
                super().do_POST()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.timeout(30)
def test_origin_slower_than_the_stall_is_waited_for_not_handed_back(senders: Callable[..., Sender]) -> None:
    """A receiver that answered in 1 s and now takes 0.6 s, both its slots taken: a third attempt
    waits for the first answer, because the origin's own recent answers set how long "no progress"
    must last (2 s here: a slow flow, or Power Automate's shared callback host under a burst), not
    the fixed 0.3 s."""
    slow = SlowServer(first=1.0, then=0.6)
    sender = senders(origin_slots=2, stall=0.3, slot_wait=3.0)
    try:
        assert sender.post(slow.url, b"{}", {}).status == 200  # the origin's pace, learned
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(sender.post, slow.url, b"{}", {}) for _ in range(2)]
            wait_until(lambda: slow.arrived == 3, 5, "both slots taken")
            assert sender.post(slow.url, b"{}", {}).status == 200
            assert [future.result(10).status for future in held] == [200, 200]
    finally:
        slow.close()


@pytest.mark.timeout(30)
def test_breaker_stops_connecting_to_an_origin_that_keeps_timing_out(
    senders: Callable[..., Sender], hanging: HangingServer
) -> None:
    sender = senders(timeout=1.0, breaker_timeouts=2, breaker_first_timeouts=2)
    dead = f"http://127.0.0.1:{hanging.port}/hook"
    for _ in range(2):
        with pytest.raises(DeliveryError) as failed:
            sender.post(dead, b"{}", {})
        assert isinstance(failed.value, DeliveryTimeout)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as held_off:
        sender.post(dead, b"{}", {})
    assert isinstance(held_off.value, BreakerOpen)
    assert time.monotonic() - started < 0.5  # at once, not after the 1 s timeout
    assert hanging.accepted == 2


@pytest.mark.timeout(30)
def test_dns_lookup_is_inside_the_attempts_deadline(senders: Callable[..., Sender]) -> None:
    """A resolver that never answers ends the attempt at its deadline with DeliveryTimeout."""
    unblock = threading.Event()

    def stuck_resolver(host: str, port: int) -> list[str]:
        unblock.wait(30)
        return ["127.0.0.1"]

    sender = senders(timeout=0.5, resolver=stuck_resolver)
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError) as failed:
            sender.post(f"http://slow-dns.example.test/hook?sig={SECRET}", b"{}", {})
    finally:
        unblock.set()
    assert isinstance(failed.value, DeliveryTimeout) and "resolved" in failed.value.message
    assert SECRET not in failed.value.message
    assert 0.4 <= time.monotonic() - started < 2.0


def test_handed_back_attempt_comes_back_within_seconds_then_less_often(
    app_storage, senders: Callable[..., Sender], hanging: HangingServer
) -> None:
    """An attempt handed back unsent (its origin's one slot held) is pending in the delivery log,
    not counted, and due again after 2 s, then 4, 8, 16, and at most one delivery timeout: a busy
    origin is asked again soon, one whose slots are held until the timeout once per timeout."""
    from relay.core.models import EventRecord, Target
    from relay.pipeline.delivery import Deliverer
    from relay.store.deliverylog import DeliveryLog

    sender = senders(origin_slots=1, stall=0.1, timeout=20.0)
    url = f"http://127.0.0.1:{hanging.port}/hook"
    settings = Settings.from_environ({"RELAY_DELIVERY_TIMEOUT": "20"})
    deliverer = Deliverer(app_storage, settings, sender, rand=lambda: 0.0)  # no jitter
    event = EventRecord(
        id="e-busy", type="t.x", source="s", time="2026-01-01T00:00:00Z", data=1, acceptedAt="2026-01-01T00:00:00Z"
    )
    log_key = ("e:20260101", "20260101T000000.000000Z_e-busy")
    sub_id = uuid.uuid4().hex
    waits = []
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(sender.post, url, b"{}", {})  # holds the origin's only slot
        wait_until(lambda: hanging.accepted == 1, 5, "the slot to be taken")
        for handed_back in range(6):
            target = Target(sub=sub_id, url=url, secret="whsec_" + "A" * 32, attempt=1, deferred=handed_back)
            deliverer.deliver(event, 1, log_key, log_key[1][:23], [target])
            row = DeliveryLog(app_storage, 7).list(sub_id, status="pending", limit=1, token=None)[0][0]
            assert row.attempts == 0 and "in flight" in (row.last_error or "")
            assert row.next_attempt_at is not None and row.last_attempt_at is not None
            waits.append(round((row.next_attempt_at - row.last_attempt_at).total_seconds(), 1))
        hanging.close()  # ends the stuck attempt
        assert isinstance(stuck.exception(30), DeliveryError)
    assert waits == [2.0, 4.0, 8.0, 16.0, 20.0, 20.0]


# ---- end to end ----------------------------------------------------------------------------------


@pytest.mark.timeout(400)
def test_healthy_receiver_is_served_while_150_subscriptions_hang(
    hanging: HangingServer, relay_factory, receiver_factory, unique_type: str
) -> None:
    """150 subscriptions on a receiver that accepts and never answers, one healthy receiver on another
    port: the healthy one gets its event well before the hanging attempts' timeout (15 s), and
    every hanging delivery ends failed in the delivery log after the whole schedule, none lost,
    without a connection per attempt."""
    relay = relay_factory({"RELAY_DELIVERY_TIMEOUT": "15"})
    good = receiver_factory()
    dead_type, good_type = unique_type, unique_type + ".other"
    subs = [
        relay.subscribe(f"http://127.0.0.1:{hanging.port}/hook/{i}?sig={SECRET}", eventTypes=[dead_type])["id"]
        for i in range(150)
    ]
    relay.subscribe(good.url, eventTypes=[good_type])

    relay.publish({"type": dead_type, "data": {"n": 1}})
    wait_until(lambda: hanging.accepted > 0, 30, "the relay to reach the dead receiver")
    relay.publish({"type": good_type, "data": {"n": 2}})
    good.wait_for(1, timeout=10)  # not queued behind the hanging attempts, which end only at 15 s

    remaining = list(subs)

    def all_failed() -> bool:
        while remaining:
            rows = relay.get(f"subscriptions/{remaining[-1]}/deliveries?status=failed").json()["value"]
            if not rows:
                return False
            assert rows[0]["attempts"] == 4, rows[0]  # 1 + RELAY_RETRY_SCHEDULE's three delays
            assert SECRET not in str(rows[0])
            remaining.pop()
        return True

    wait_until(all_failed, 240, "every hanging delivery to end failed")
    # The breaker: far fewer connections than the 600 attempts made.
    assert hanging.accepted <= 40


# ---- sized by settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"RELAY_ATTEMPT_THREADS": "0"}, "RELAY_ATTEMPT_THREADS"),
        ({"RELAY_ATTEMPT_THREADS": "many"}, "RELAY_ATTEMPT_THREADS"),
        ({"RELAY_ORIGIN_SLOTS": "1.5"}, "RELAY_ORIGIN_SLOTS"),
        ({"RELAY_ATTEMPT_THREADS": "8", "RELAY_ORIGIN_SLOTS": "9"}, "RELAY_ORIGIN_SLOTS"),
    ],
)
def test_attempt_threads_and_origin_slots_are_checked_settings(values: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Settings.from_environ(values)
    defaults = Settings.from_environ({})
    assert (defaults.attempt_threads, defaults.origin_slots) == (64, 32)


class Overlap:
    """Calls that each wait for `release`; `running` holds how many ran at once, as each call saw
    it when it started."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running: list[int] = []
        self._lock = threading.Lock()
        self._now = 0

    def hold(self) -> None:
        with self._lock:
            self._now += 1
            self.running.append(self._now)
        self.release.wait(10)
        with self._lock:
            self._now -= 1


@pytest.mark.timeout(30)
def test_pools_are_sized_by_the_settings() -> None:
    """RELAY_ATTEMPT_THREADS attempts run at a time, and RELAY_ORIGIN_SLOTS of them may go to one
    receiver that has answered before: the next attempt to a receiver holding them all is handed
    back."""
    pools = Pools(
        Settings.from_environ(
            {
                "RELAY_ATTEMPT_THREADS": "3",
                "RELAY_ORIGIN_SLOTS": "2",
                "RELAY_ALLOW_PRIVATE_TARGETS": "true",
                "RELAY_DELIVERY_TIMEOUT": "3",
            }
        )
    )
    try:
        overlap = Overlap()
        held = [pools.attempts.submit(overlap.hold) for _ in range(4)]
        wait_until(lambda: len(overlap.running) == 3, 5, "three attempts to start")
        overlap.release.set()
        for future in held:
            future.result(10)
        assert max(overlap.running) == 3 and len(overlap.running) == 4

        slow = SlowServer(first=0.0, then=5.0)  # answers at once, then past the 3 s timeout
        try:
            assert pools.sender.post(slow.url, b"{}", {}).status == 200
            stuck = [pools.attempts.submit(pools.sender.post, slow.url, b"{}", {}) for _ in range(2)]
            wait_until(lambda: slow.arrived == 3, 5, "two attempts in flight to the stalled receiver")
            with pytest.raises(OriginBusy):
                pools.sender.post(slow.url, b"{}", {})
            for future in stuck:
                assert isinstance(future.exception(10), DeliveryError)
        finally:
            slow.close()
    finally:
        pools.close()


@pytest.mark.timeout(30)
def test_a_batch_calls_its_completion_once_after_its_last_item_whenever_it_is_registered() -> None:
    """A fan-out's held work item is completed (receipt, message delete) by the callback of its
    batch: exactly once, only after every attempt, also when the batch finished before it was
    registered, and a failing callback does not take the attempt thread down."""
    pool = AttemptThreads(2)
    try:
        overlap = Overlap()
        calls: list[int] = []
        batch = pool.start(lambda _: overlap.hold(), [0, 1, 2])
        batch.when_done(lambda: calls.append(len(overlap.running)))
        wait_until(lambda: len(overlap.running) == 2, 5, "two calls to start")
        assert calls == []  # nothing finished yet
        overlap.release.set()
        wait_until(lambda: calls == [3], 5, "the callback after the third call")

        finished = pool.start(lambda item: item, [1])
        finished.wait()
        late: list[str] = []
        finished.when_done(lambda: late.append("now"))
        assert late == ["now"]  # already done: called at once, on the registering thread

        def boom() -> None:
            raise RuntimeError("callback")

        failing = pool.start(lambda _: overlap.hold(), [0])
        failing.when_done(boom)
        failing.wait()
        assert [r for r, _ in pool.start(lambda item: item * 2, [21]).wait()] == [42]  # threads still serve
    finally:
        pool.shutdown()


@pytest.mark.timeout(30)
def test_attempt_threads_run_a_batch_and_answer_each_item() -> None:
    """A batch runs on at most the pool's threads at once, and its wait answers every item in
    order: a result, or the exception that item raised (the others still ran)."""
    pool = AttemptThreads(3)
    try:
        overlap = Overlap()

        def work(item: int) -> int:
            overlap.hold()
            if item == 2:
                raise ValueError("item 2")
            return item * 10

        batch = pool.start(work, [0, 1, 2, 3, 4])
        wait_until(lambda: len(overlap.running) == 3, 5, "three calls to start")
        overlap.release.set()
        results = batch.wait()
        assert max(overlap.running) == 3 and len(overlap.running) == 5
        assert [r for r, _ in results] == [0, 10, None, 30, 40]
        error = results[2][1]
        assert isinstance(error, ValueError) and str(error) == "item 2"
        assert all(e is None for i, (_, e) in enumerate(results) if i != 2)
    finally:
        pool.shutdown()


@pytest.mark.timeout(30)
def test_attempt_threads_run_single_attempts_of_separate_callers_side_by_side() -> None:
    """Retries arrive as batches of one from separate invocations: each gets a thread of its own
    (up to the pool's size) rather than queuing behind the others on the first thread started."""
    pool = AttemptThreads(4)
    try:
        all_in = threading.Barrier(3, timeout=10)
        batches = [pool.start(lambda _: all_in.wait(), [None]) for _ in range(3)]
        for batch in batches:
            [(_, error)] = batch.wait()
            assert error is None  # a barrier that timed out would be BrokenBarrierError
        later = pool.submit(lambda: "done")
        assert later.result(10) == "done"
    finally:
        pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.start(lambda _: None, [None])
