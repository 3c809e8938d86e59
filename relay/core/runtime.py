"""The one object that owns the process's threads, pools, lease keepers and caches.

Everything long-lived that a module would otherwise keep in a global (a thread pool, the attempt
threads, a lease keeper, a cache of rows) is a *part* of the current `Runtime`: built on first use
(an invocation, never an import: the Functions host imports `function_app.py` to index it), and
closed by `Runtime.close()` in the reverse order of building, so a part may use the ones built
before it. Tests take a fresh runtime with `reset()`; the host's process closes its own at exit.

The runtime sits in `relay.core` so every layer can reach it, and knows nothing of the parts: each
owner says how to build and close its part (`relay.pipeline.pools`, `relay.store.leases`, ...).
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

__all__ = ["Runtime", "current", "reset"]

T = TypeVar("T")
# Threads that read table rows side by side (a fan-out's subscriptions, the pages of a list):
# reads wait on storage, not on CPU.
READ_THREADS = 8
_MISSING = object()
log = logging.getLogger("relay.runtime")


class Runtime:
    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: a part's builder may ask for the parts it uses
        self._parts: dict[str, Any] = {}
        self._closers: list[tuple[str, Callable[[], None]]] = []
        self._closed = False

    def part(self, name: str, build: Callable[[], T], close: Callable[[T], None] | None = None) -> T:
        """The part called `name`, built by `build` on first use; `close` releases it at `close()`.

        A builder runs under the runtime's lock (so once, however many threads ask at the same
        moment), and must therefore be quick and make no network call: a part that needs one (a
        key read from storage) is a small holder with its own lock, filled on its first use."""
        found = self._parts.get(name, _MISSING)  # a dict read is atomic: parts in use take no lock
        if found is not _MISSING:
            return cast(T, found)
        with self._lock:
            if name in self._parts:
                return cast(T, self._parts[name])
            if self._closed:
                raise RuntimeError("the runtime is closed")
            value = build()
            self._parts[name] = value
            if close is not None:
                self._closers.append((name, lambda: close(value)))
            return value

    def drop(self, name: str) -> None:
        """Close and forget one part (a later `part(name, ...)` builds it again): the settings after
        a test changed the environment, say."""
        with self._lock:
            self._parts.pop(name, None)
            closers = [closer for closer in self._closers if closer[0] == name]
            self._closers = [closer for closer in self._closers if closer[0] != name]
        for _, close in closers:
            close()

    def executor(self, name: str, workers: int) -> ThreadPoolExecutor:
        """A thread pool owned by the runtime (its threads are named after it)."""
        return self.part(
            f"executor:{name}",
            lambda: ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name),
            lambda pool: pool.shutdown(wait=True),
        )

    def reads(self) -> ThreadPoolExecutor:
        """The pool the store reads rows side by side on."""
        return self.executor("read", READ_THREADS)

    def close(self) -> None:
        """Close every part, the last built first, and refuse to build more."""
        self._close_parts()
        with self._lock:
            self._closed = True
        self._close_parts()  # what was built while the flag was not yet set

    def _close_parts(self) -> None:
        """Close the parts one at a time, the last built first; errors are logged so that the rest
        still close. A part asked for again while the others close (an attempt finishing on a
        closing pool counts its outcome) is built again and closed too, before this returns."""
        while True:
            with self._lock:
                if not self._closers:
                    self._parts.clear()
                    return
                name, close = self._closers.pop()
                self._parts.pop(name, None)
            try:
                close()
            except Exception:  # one part failing to close must not keep the others open
                log.exception("closing %s failed", name)

    @property
    def parts(self) -> list[str]:
        with self._lock:
            return list(self._parts)


_lock = threading.Lock()
_current = Runtime()


def current() -> Runtime:
    """The process's runtime."""
    return _current


def reset() -> Runtime:
    """Close the current runtime and start a fresh one (tests; a host restart)."""
    global _current
    with _lock:
        old = _current
        # Its parts close while it is still the current one: work finishing on its threads finds
        # its parts (or builds one that closes with them), never one of the next runtime.
        old._close_parts()
        _current = Runtime()
    old.close()
    return _current


@atexit.register
def _close_at_exit() -> None:
    _current.close()
