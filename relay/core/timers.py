"""Calls due later, started by one thread of the runtime's (relay.core.runtime) on a pool it owns.

Why: a batch whose targets come back later sends them when the first of them is due, while the
batch's other attempts still run (relay.pipeline.later). A `threading.Timer` per batch was a thread
per batch that nothing owned: a runtime that closed could not stop them or wait for them. Here one
thread keeps every pending call in a heap and hands each, once due, to a small pool; closing the
runtime cancels what has not started and waits for what has.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from relay.core import runtime

__all__ = ["Scheduled", "Timers", "timers"]

# Threads that run due calls. A call is short (a queue send of a retry's work item): a few suffice
# for every batch of an instance, and one that waits on storage delays the others by that wait only.
TIMER_THREADS = 4

_PENDING, _RUNNING, _FINISHED, _CANCELLED = "pending", "running", "finished", "cancelled"


class Scheduled:
    """One call that `Timers.call_later` will make: cancel it, or wait until it has been made."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._state = _PENDING
        self._over = threading.Event()  # made, or cancelled before it started

    def cancel(self) -> bool:
        """True when the call will not be made; False when it has started (or is done)."""
        with self._lock:
            if self._state != _PENDING:
                return self._state == _CANCELLED
            self._state = _CANCELLED
        self._over.set()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Until the call has been made or cancelled; False if `timeout` ran out first."""
        return self._over.wait(timeout)

    def _run(self) -> None:
        with self._lock:
            if self._state != _PENDING:
                return
            self._state = _RUNNING
        try:
            self._fn()
        finally:
            with self._lock:
                self._state = _FINISHED
            self._over.set()


class Timers:
    """Calls made when due, each on a thread of the pool, never sooner than its delay."""

    def __init__(self, threads: int = TIMER_THREADS, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Scheduled]] = []
        self._order = itertools.count()  # equal due times keep the order they were asked in
        self._thread: threading.Thread | None = None  # started by the first call, not at build
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="timers-call")
        self._closed = False

    def call_later(self, delay: float, fn: Callable[[], None]) -> Scheduled:
        """Make `fn()` once `delay` seconds have passed; raises RuntimeError once closed."""
        call = Scheduled(fn)
        with self._cond:
            if self._closed:
                raise RuntimeError("the timers are closed")
            heapq.heappush(self._heap, (self._monotonic() + max(delay, 0.0), next(self._order), call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="timers", daemon=True)
                self._thread.start()
            self._cond.notify()
        return call

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._heap:
                        wait = self._heap[0][0] - self._monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                _, _, call = heapq.heappop(self._heap)
            # Outside the lock: `close` joins this thread before it shuts the pool, so this submit
            # always finds the pool open.
            self._pool.submit(call._run)

    def close(self) -> None:
        """Cancel every call not yet started; wait for those under way."""
        with self._cond:
            self._closed = True
            pending = [call for _, _, call in self._heap]
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        for call in pending:
            call.cancel()
        if thread is not None:
            thread.join()
        self._pool.shutdown(wait=True)


def timers() -> Timers:
    """The process's timers, a part of its runtime."""
    return runtime.current().part("timers", Timers, Timers.close)
