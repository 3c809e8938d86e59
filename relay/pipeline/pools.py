"""The process's pools, owned by one object: the threads that make delivery attempts, the threads
that send queue messages or read rows side by side, and the one HTTP sender the attempts share.

The attempt threads are not a `ThreadPoolExecutor`: they take attempts from fair queues (one
per flow: an event's fan-out, a subscription's replay; see `AttemptThreads`), and a batch of
them (a fan-out's hundred targets) is handed over as one queue entry per target and waited for
as a whole (`AttemptThreads.start`, `Batch.wait`). A future per attempt (its
condition, its lock, its wake-up of the waiter) and the executor's per-task semaphore were a
tenth of the relay's CPU at fan-out 100 in py-spy profiles of the benchmark.

Rules that keep them from starving:
- work running on a pool thread never submits to a pool and waits: an attempt sends its retry
  message itself, a queue send is one call. Only a function's own thread (a host invocation) or
  a kick (a fan-out started by a publish, relay.pipeline.kick) submits, and waits for what it submitted,
  always to another pool than its own;
- the sender's connection pool holds as many connections as there are attempt threads, so an
  attempt never waits for a connection another attempt holds.

`get_pools()` builds them on first use (an invocation, not an import) as a part of the process's
runtime (relay.core.runtime), which shuts them down when it closes: at host stop, at exit, or
when a test resets it. A later `get_pools()` builds new ones in the new runtime.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Generic, ParamSpec, TypeVar

from relay.core import runtime
from relay.core.settings import Settings
from relay.outbound import signing
from relay.outbound.sender import Sender

# Delivery attempts (threads) and the share of them one receiver may hold are settings
# (RELAY_ATTEMPT_THREADS, RELAY_ORIGIN_SLOTS): they depend on the receivers an operator serves. The
# pools below serve storage requests the relay makes itself, sized to what one instance's own work
# needs, whoever the receivers are.
log = logging.getLogger("relay.pools")

# Threads for queue sends done side by side (a batch of events, work items, a replay's messages).
SEND_THREADS = 16
# Threads for storage point reads done side by side (one owner's page of subscriptions).
# Threads fanning out just-published events in the publishing process (relay.pipeline.kick). A kick is an
# invocation of its own: it submits to the attempt and send pools, never to this one.
KICK_THREADS = 16
# One call in this many is taken from the bulk flows (replays, resends) first when both kinds wait.
BULK_TURN = 4

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


class Batch(Generic[T, R]):
    """One call of `fn` per item, run on the attempt threads; `wait()` returns their results in
    the items' order, each as (result, None) or (None, the exception it raised)."""

    def __init__(self, fn: Callable[[T], R], items: Sequence[T]) -> None:
        self._fn, self._items = fn, items
        self._results: list[tuple[R | None, BaseException | None]] = [(None, None)] * len(items)
        # Finished calls, counted without a lock (a lock taken by each of 64 threads per attempt
        # showed in profiles): `next` on a count is one step under the interpreter lock, so
        # exactly one thread draws the last number.
        self._finished = itertools.count(1)
        self._done = threading.Event()
        # Taken once per batch (by the last finisher, and by `when_done`), never per attempt.
        self._then_lock = threading.Lock()
        self._then: Callable[[], None] | None = None
        if not items:
            self._done.set()

    def _run(self, index: int) -> None:
        try:
            self._results[index] = (self._fn(self._items[index]), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter, as a future would
            self._results[index] = (None, exc)
        if next(self._finished) == len(self._items):
            with self._then_lock:
                self._done.set()  # the one wake-up of the waiter, for the whole batch
                then = self._then
            if then is not None:
                try:
                    then()
                except Exception:  # the attempt thread goes on; the callback's owner logs its own
                    log.exception("a batch's completion callback failed")

    def when_done(self, then: Callable[[], None]) -> None:
        """Call `then` once every call has finished: on the attempt thread that finished the last
        one, or here if that has happened already. `then` must not submit to a pool and wait."""
        with self._then_lock:
            if not self._done.is_set():
                self._then = then
                return
        then()

    def wait(self) -> list[tuple[R | None, BaseException | None]]:
        self._done.wait()
        return self._results


class AttemptThreads(Executor):
    """Up to `threads` threads taking calls from fair queues; threads start as work arrives (as many
    as there are calls not yet finished) and stay.

    Fair, not first in first out: every batch belongs to a flow (`key`: one event's fan-out, one
    subscription's replay), and a free thread takes the next call of the next flow in turn, so a
    fan-out of a thousand targets queued first does not hold back an unrelated event queued after
    it (one flow per batch when no key is given). Bulk flows (replays, resends) go after live ones
    (but for one turn in BULK_TURN, so they are never starved), and at most `bulk_share` of the
    threads run them at a time: however many replays are running, live deliveries find a thread.
    """

    def __init__(self, threads: int, name: str = "deliver", bulk_share: float = 0.5) -> None:
        self._max, self._name = threads, name
        self._bulk_cap = max(1, int(threads * bulk_share))
        self._cond = threading.Condition(threading.Lock())
        # Flows with calls waiting, in turn order: key -> its calls, oldest first.
        self._live: OrderedDict[Hashable, deque[tuple[Batch[Any, Any], int]]] = OrderedDict()
        self._bulk: OrderedDict[Hashable, deque[tuple[Batch[Any, Any], int]]] = OrderedDict()
        self._bulk_running = 0
        self._turns = 0
        self._live_first = ((self._live, False), (self._bulk, True))
        self._bulk_first = ((self._bulk, True), (self._live, False))
        self._idle = 0  # threads waiting for work
        self._threads: list[threading.Thread] = []
        self._queued = 0  # calls queued so far, under the lock
        self._finished = itertools.count(1)  # calls finished so far, counted without one
        # A finished count some thread drew lately: a late write can leave it behind the true one,
        # never ahead, so "unfinished" is never underestimated and enough threads are started.
        self._done = 0
        self._closed = False

    def start(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        *,
        key: Hashable | None = None,
        bulk: bool = False,
        flow_of: Callable[[T], Hashable | None] | None = None,
    ) -> Batch[T, R]:
        """Queue one call of `fn` per item and return at once; the batch's `wait()` waits.
        `flow_of`: an item's own flow where it returns one (else the batch's `key`)."""
        batch = Batch(fn, items)
        if not items:
            return batch
        if flow_of is None:
            self._enter([(batch, index) for index in range(len(items))], key, bulk)
            return batch
        flows: dict[Hashable | None, list[tuple[Batch[Any, Any], int]]] = {}
        for index, item in enumerate(items):
            own = flow_of(item)
            flows.setdefault(key if own is None else own, []).append((batch, index))
        for flow, jobs in flows.items():
            self._enter(jobs, flow, bulk)
        return batch

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """One call with a future, as an `Executor` does (tests, and work that is not a batch)."""
        future: Future[R] = Future()

        def run(_: None) -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - the future carries it
                future.set_exception(exc)

        self._enter([(Batch(run, [None]), 0)], None, False)
        return future

    def _enter(self, jobs: list[tuple[Batch[Any, Any], int]], key: Hashable | None, bulk: bool) -> None:
        flows = self._bulk if bulk else self._live
        flow = key if key is not None else jobs[0][0]  # no key: the batch is a flow of its own
        with self._cond:
            if self._closed:
                raise RuntimeError("cannot schedule new attempts after shutdown")
            queued = flows.get(flow)
            if queued is None:
                flows[flow] = deque(jobs)
            else:
                queued.extend(jobs)
            self._queued += len(jobs)
            unfinished = self._queued - self._done
            while len(self._threads) < min(self._max, unfinished):
                thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)
            if self._idle:
                self._cond.notify(min(len(jobs), self._idle))

    def _take(self) -> tuple[Batch[Any, Any], int, bool] | None:
        """The next call in turn (under the lock): live flows first, then bulk ones within their
        cap; every BULK_TURN-th call bulk first, so a steady live load cannot starve a replay."""
        self._turns += 1
        order = self._bulk_first if self._turns % BULK_TURN == 0 else self._live_first
        for flows, bulk in order:
            if not flows or (bulk and self._bulk_running >= self._bulk_cap):
                continue
            flow, queued = next(iter(flows.items()))
            batch, index = queued.popleft()
            if queued:
                flows.move_to_end(flow)  # its next call waits for every other flow's turn
            else:
                del flows[flow]
            if bulk:
                self._bulk_running += 1
            return batch, index, bulk
        return None

    def _work(self) -> None:
        cond, finished = self._cond, self._finished
        bulk = False
        while True:
            with cond:
                if bulk:
                    self._bulk_running -= 1
                    if self._bulk and self._idle:
                        cond.notify()  # a bulk call held back by the cap may run now
                while (job := self._take()) is None:
                    if self._closed:
                        return
                    self._idle += 1
                    cond.wait()
                    self._idle -= 1
            batch, index, bulk = job
            batch._run(index)
            self._done = next(finished)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Run what was queued, then stop the threads."""
        with self._cond:
            self._closed = True
            threads = list(self._threads)
            self._cond.notify_all()
        if wait:
            for thread in threads:
                thread.join()


class Pools:
    def __init__(self, settings: Settings, send_threads: int = SEND_THREADS) -> None:
        attempt_threads = settings.attempt_threads
        self.attempts = AttemptThreads(attempt_threads)
        self.sends = ThreadPoolExecutor(max_workers=send_threads, thread_name_prefix="send")
        self.reads = runtime.current().reads()  # the store reads side by side too
        self.kicks = ThreadPoolExecutor(max_workers=KICK_THREADS, thread_name_prefix="kick")
        self.sender = Sender(
            allow_private=settings.allow_private_targets,
            timeout=settings.delivery_timeout,
            user_agent=signing.USER_AGENT,
            pool_size=attempt_threads,
            origin_slots=settings.origin_slots,
        )

    def close(self) -> None:
        """Finish what was submitted, then release the threads and connections."""
        self.kicks.shutdown(wait=True)  # first: kicks submit to the pools below
        self.attempts.shutdown(wait=True)
        self.sends.shutdown(wait=True)
        self.sender.close()


def get_pools(settings: Settings) -> Pools:
    """The process's pools, owned by the runtime: built on first use from the settings of that
    moment, closed with it (`relay.core.runtime.reset()`)."""
    return runtime.current().part("pools", lambda: Pools(settings), Pools.close)
