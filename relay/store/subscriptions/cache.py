"""What the store keeps between calls in one process, as a part of the runtime
(`relay.core.runtime`): a fresh runtime (a test's, a host restart's) starts without any of it.

- `IndexCache`: small fan-out index partitions, each under the presence token it was read with.
- `CheckedRows`: index row versions found to agree with their subscription's row.
- the tables whose layout marker this process has seen or written.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from relay.core import runtime
from relay.store.subscriptions.rows import IndexRow

PART = "store.subscriptions"


class CheckedRows:
    """Index row versions (table, pattern, id, ETag) this process found to agree with their
    subscription (`index.Index.checked`), least recently used first out. Bounded in count and in
    age: a check is made again after `MAX_AGE` whatever happened."""

    MAX_ENTRIES = 50_000
    MAX_AGE = 600.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str, str, str | None], float] = OrderedDict()

    def seen(self, key: tuple[str, str, str, str | None]) -> bool:
        if key[3] is None:
            return False
        with self._lock:
            at = self._entries.get(key)
            if at is None or time.monotonic() - at > self.MAX_AGE:
                return False
            self._entries.move_to_end(key)
            return True

    def add(self, key: tuple[str, str, str, str | None]) -> None:
        if key[3] is None:
            return
        with self._lock:
            self._entries[key] = time.monotonic()
            self._entries.move_to_end(key)
            while len(self._entries) > self.MAX_ENTRIES:
                self._entries.popitem(last=False)


class IndexCache:
    """Small index partitions this process has read, each under the presence token it had when
    read, least recently used first out.

    Every change to a partition's index rows is followed by a new token on its presence row
    (`Index.write`, `Index.delete`), and the token is read before the partition. So a cached copy
    whose token is still the current one was read after the last completed change: it is what
    storage holds, and the query is saved. A copy read while a change was under way sits under
    the token from before that change's closing write, which no longer matches."""

    MAX_ROWS = 100  # partitions of up to this many rows are kept
    MAX_BYTES = 8_000_000  # of URLs and secrets, roughly: the cache stays small beside the pools
    # A copy is read again after this long whatever its token says: if a change's closing token
    # write failed (storage down; the change's caller got an error and may not try again), no
    # copy outlives it longer. Events of a type published less often than this pay the read.
    MAX_AGE = 600.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[str, list[IndexRow], int, float]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, str], token: str) -> list[IndexRow] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != token or time.monotonic() - entry[3] > self.MAX_AGE:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: tuple[str, str], token: str, rows: list[IndexRow], read_at: float) -> None:
        """Keep rows read at `read_at` (time.monotonic(), taken before the read) under `token`."""
        size = sum(len(r.url) + len(r.secret) + 200 for r in rows)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            self._entries[key] = (token, rows, size, read_at)
            self._bytes += size
            while self._bytes > self.MAX_BYTES and self._entries:
                _, (_, _, dropped, _) = self._entries.popitem(last=False)
                self._bytes -= dropped


@dataclass
class Layouts:
    """Tables (by URL) whose layout marker this process has seen or written: the marker is never
    removed, so it is read once per runtime, not once per subscribe."""

    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, table: str) -> bool:
        with self._lock:
            return table in self._seen

    def add(self, table: str) -> None:
        with self._lock:
            self._seen.add(table)


@dataclass
class Caches:
    index: IndexCache = field(default_factory=IndexCache)
    checked: CheckedRows = field(default_factory=CheckedRows)
    layouts: Layouts = field(default_factory=Layouts)


def caches() -> Caches:
    """The current runtime's caches of the subscription store, made on first use."""
    return runtime.current().part(PART, Caches)
