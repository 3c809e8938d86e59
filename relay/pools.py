"""The process's pools, owned by one object: the threads that make delivery attempts, the threads
that send queue messages or read rows side by side, and the one HTTP sender the attempts share.

The attempt threads are not a `ThreadPoolExecutor`: they take attempts from one shared queue,
and a batch of them (a fan-out's hundred targets) is handed over as one queue entry per target
and waited for as a whole (`AttemptThreads.start`, `Batch.wait`). A future per attempt (its
condition, its lock, its wake-up of the waiter) and the executor's per-task semaphore were a
tenth of the relay's CPU at fan-out 100 in py-spy profiles of the benchmark.

Rules that keep them from starving:
- work running on a pool thread never submits to a pool and waits: an attempt sends its retry
  message itself, a queue send is one call. Only a function's own thread (a host invocation) or
  a kick (a fan-out started by a publish, relay.kick) submits, and waits for what it submitted,
  always to another pool than its own;
- the sender's connection pool holds as many connections as there are attempt threads, so an
  attempt never waits for a connection another attempt holds.

`get_pools()` builds them on first use (an invocation, not an import); `close_pools()` shuts them
down at host stop (the dev host calls it; in Azure the worker process exits, and `atexit` runs
it). A later `get_pools()` builds new ones.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from queue import SimpleQueue
from typing import Any, Generic, ParamSpec, TypeVar

from . import signing
from .outbound import Sender
from .settings import Settings

# Delivery attempts (threads) and the share of them one receiver may hold are settings
# (RELAY_ATTEMPT_THREADS, RELAY_ORIGIN_SLOTS): they depend on the receivers an operator serves. The
# pools below serve storage requests the relay makes itself, sized to what one instance's own work
# needs, whoever the receivers are.
log = logging.getLogger("relay.pools")

# Threads for queue sends done side by side (a batch of events, work items, a replay's messages).
SEND_THREADS = 16
# Threads for storage point reads done side by side (one owner's page of subscriptions).
READ_THREADS = 8
# Threads fanning out just-published events in the publishing process (relay.kick). A kick is an
# invocation of its own: it submits to the attempt and send pools, never to this one.
KICK_THREADS = 16

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
    """Up to `threads` threads taking calls from one shared queue, first in first out; threads
    start as work arrives (as many as there are calls not yet finished) and stay."""

    def __init__(self, threads: int, name: str = "deliver") -> None:
        self._max, self._name = threads, name
        self._queue: SimpleQueue[tuple[Batch[Any, Any], int] | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._queued = 0  # calls queued so far, under the lock
        self._finished = itertools.count(1)  # calls finished so far, counted without one
        # A finished count some thread drew lately: a late write can leave it behind the true one,
        # never ahead, so "unfinished" is never underestimated and enough threads are started.
        self._done = 0
        self._closed = False

    def start(self, fn: Callable[[T], R], items: Sequence[T]) -> Batch[T, R]:
        """Queue one call of `fn` per item and return at once; the batch's `wait()` waits."""
        batch = Batch(fn, items)
        self._enter(len(items))
        put = self._queue.put
        for index in range(len(items)):
            put((batch, index))
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

        self._enter(1)
        self._queue.put((Batch(run, [None]), 0))
        return future

    def _enter(self, count: int) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new attempts after shutdown")
            self._queued += count
            unfinished = self._queued - self._done
            while len(self._threads) < min(self._max, unfinished):
                thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        get, finished = self._queue.get, self._finished
        while True:
            job = get()
            if job is None:
                return
            batch, index = job
            batch._run(index)
            self._done = next(finished)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Run what was queued, then stop the threads (a `None` each, behind the queued work)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()


class Pools:
    def __init__(self, settings: Settings, send_threads: int = SEND_THREADS) -> None:
        attempt_threads = settings.attempt_threads
        self.attempts = AttemptThreads(attempt_threads)
        self.sends = ThreadPoolExecutor(max_workers=send_threads, thread_name_prefix="send")
        self.reads = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="read")
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
        self.reads.shutdown(wait=True)
        self.sender.close()


_lock = threading.Lock()
_pools: Pools | None = None


def get_pools(settings: Settings) -> Pools:
    """The process's pools, built on first use from the settings of that moment."""
    global _pools
    with _lock:
        if _pools is None:
            _pools = Pools(settings)
        return _pools


@atexit.register
def close_pools() -> None:
    """Shut the process's pools down (host stop); the next `get_pools` builds new ones."""
    global _pools
    with _lock:
        pools, _pools = _pools, None
    if pools is not None:
        pools.close()
