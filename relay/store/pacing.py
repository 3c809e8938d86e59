"""A subscription's rate limit (`maxPerSecond`) and a receiver's `429` + `Retry-After`, kept where
every instance sees them: one row per limited subscription.

The row (operations table, partition `pace:{id}`) holds the start times of the subscription's
last `K` deliveries, the reservation horizon and the time a receiver asked to be left alone
until. A delivery may start when fewer than `K` started in the last `W` seconds (`K / W` is a
little below `maxPerSecond`, so that starts at most that many in any one second, also as the
receiver sees them after the network's jitter) and nothing is reserved ahead of it. One that
may not start reserves the next free start time (the horizon moves on by `W / K`) and waits for
it, so a burst of waiting deliveries spreads over the seconds ahead instead of all asking again
at once. Every decision is a conditional write on the row's ETag: instances that race read
again. A subscription without a limit has no row and costs nothing here; a `429` it gets is
remembered in this process only (`Backoffs`), where its next attempts look.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from relay.core import runtime
from relay.store.storage import OPERATIONS_TABLE, Storage

# `W` is this much longer than `K / maxPerSecond`, and `JITTER` seconds more: a start recorded
# here reaches the receiver after the row's write and the connection, which take longer on a busy
# instance than on an idle one, and no second of the receiver's clock may see more than the limit.
MARGIN = 0.05
JITTER = 0.25
# A start whose row write took longer than this is not made (its recorded time would be too far
# before the real one); the time stays taken and it claims again.
LATE_WRITE = 0.1
# A Retry-After longer than this is not kept (the retry schedule's own cap, relay.core.backoff).
MAX_BACKOFF = 3600.0
TRIES = 12
LOCK_WAIT = 0.05
# The `slot` of a delivery that waited for a start this process expected, not one it reserved in
# storage: it claims in storage when it comes back, behind the reserved ones.
WAITED = -1.0


def partition(sub_id: str) -> str:
    return f"pace:{sub_id}"


def window(rate: float) -> tuple[int, float]:
    """(K, W): at most K starts in any W seconds, W at least K / rate."""
    count = max(1, math.floor(rate))
    return count, count / rate * (1 + MARGIN) + JITTER


@dataclass
class Pace:
    """The row, as read."""

    starts: list[float] = field(default_factory=list)
    horizon: float = 0.0  # the next start time free to reserve
    until: float = 0.0  # a receiver's Retry-After: nothing starts before
    etag: str | None = None

    @classmethod
    def of(cls, row: Any) -> Pace:
        return cls(
            starts=[float(t) for t in json.loads(row.get("starts") or "[]")],
            horizon=float(row.get("horizon") or 0.0),
            until=float(row.get("until") or 0.0),
            etag=row.metadata.get("etag"),
        )

    def entity(self, sub_id: str) -> dict[str, Any]:
        return {
            "PartitionKey": partition(sub_id),
            "RowKey": "",
            "starts": json.dumps([round(t, 3) for t in self.starts]),
            "horizon": self.horizon,
            "until": self.until,
        }


@dataclass(frozen=True)
class Decision:
    """`wait` 0: start now (the start is recorded). Else wait that many seconds, holding `slot`
    (the reserved start time, epoch seconds) if one was reserved."""

    wait: float
    slot: float | None = None


class Pacer:
    def __init__(self, storage: Storage) -> None:
        self._table: TableClient = storage.table(OPERATIONS_TABLE)

    def _read(self, sub_id: str, fresh: bool = False) -> Pace:
        """The row as this process last wrote it (a write made from a stale copy fails on its
        ETag and reads again), else as stored."""
        if not fresh:
            known = backoffs().known(sub_id)
            if known is not None:
                return known
        try:
            return Pace.of(self._table.get_entity(partition(sub_id), ""))
        except ResourceNotFoundError:
            return Pace()

    def _write(self, sub_id: str, pace: Pace) -> bool:
        try:
            if pace.etag is None:
                answer = self._table.create_entity(pace.entity(sub_id))
            else:
                answer = self._table.update_entity(
                    pace.entity(sub_id),
                    mode=UpdateMode.REPLACE,
                    etag=pace.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            backoffs().remember(sub_id, None)
            return False
        written = Pace(pace.starts, pace.horizon, pace.until, answer.get("etag"))
        backoffs().remember(sub_id, written if written.etag else None)
        return True

    def claim(self, sub_id: str, rate: float, slot: float | None, now: float | None = None) -> Decision:
        """May a delivery to this subscription start now? `slot`: the start time it reserved
        before (it goes ahead of those that reserved none)."""
        # One claim per subscription at a time in this process: its threads take turns here rather
        # than race each other on the row (the races left are between instances). A first try
        # that does not get its turn soon does not wait for it (a fan-out's other deliveries wait
        # for this one): it comes back at the next start this process expects to be free.
        memo = backoffs()
        waited = slot == WAITED
        lock = memo.lock(sub_id)
        # Only a first try gives up its turn (a fan-out waits for it); one that waited already
        # waits for its turn, or every instance would keep sending its deliveries further off.
        if not lock.acquire(timeout=LOCK_WAIT if slot is None else -1):
            return Decision(memo.expect(sub_id, window(rate)), WAITED)
        try:
            decision = self._claim(sub_id, rate, None if waited else slot, now)
        finally:
            lock.release()
        if decision.slot is not None:
            memo.expected(sub_id, decision.slot)
        return decision

    def _claim(self, sub_id: str, rate: float, slot: float | None, now: float | None) -> Decision:
        count, span = window(rate)
        for attempt in range(TRIES):
            if attempt:
                time.sleep(random.uniform(0, 0.005 * attempt))
            at = time.time() if now is None else now
            pace = self._read(sub_id, fresh=attempt > 0)
            recent = [t for t in pace.starts if t > at - span]
            gate = max(pace.until, recent[-count] + span if len(recent) >= count else at)
            queued = slot is None and pace.horizon > at
            if gate <= at and not queued:
                pace.starts = (recent + [at])[-count:]
                if slot is None:
                    pace.horizon = max(pace.horizon, at + span / count)
                if self._write(sub_id, pace):
                    if time.time() - at <= LATE_WRITE:
                        return Decision(0.0)
                    if slot is None:
                        slot = at  # keep its place ahead of those that reserved nothing
                continue
            if slot is not None:
                return Decision(gate - at, slot)  # still ahead of the queue: ask again then
            reserved = max(pace.horizon, gate)
            pace.horizon = reserved + span / count
            pace.starts = recent[-count:]
            if self._write(sub_id, pace):
                return Decision(reserved - at, reserved)
        return Decision(span / count)  # kept losing races: try again a little later

    def back_off(self, sub_id: str, seconds: float) -> None:
        """A receiver's Retry-After: no delivery to this subscription starts before it passes."""
        until = time.time() + min(seconds, MAX_BACKOFF)
        backoffs().hold(sub_id, until)
        for attempt in range(TRIES):
            pace = self._read(sub_id, fresh=attempt > 0)
            if pace.until >= until:
                return
            pace.until = until
            if self._write(sub_id, pace):
                return


class Backoffs:
    """Receivers' Retry-After per subscription, in this process: what an unlimited subscription's
    attempts check (no storage read), bounded in size."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self._claims: dict[str, threading.Lock] = {}
        self._next: dict[str, float] = {}  # the last start reserved, as this process knows
        self._rows: dict[str, Pace] = {}  # limited subscriptions' rows as this process wrote them

    def expect(self, sub_id: str, window: tuple[int, float]) -> float:
        """Seconds until the next start this process expects free for a subscription, taking it."""
        count, span = window
        with self._lock:
            now = time.time()
            at = max(self._next.get(sub_id, 0.0), now) + span / count
            self._next[sub_id] = at
            return at - now

    def known(self, sub_id: str) -> Pace | None:
        with self._lock:
            row = self._rows.get(sub_id)
            return None if row is None else Pace(list(row.starts), row.horizon, row.until, row.etag)

    def remember(self, sub_id: str, row: Pace | None) -> None:
        with self._lock:
            if row is None:
                self._rows.pop(sub_id, None)
            else:
                if len(self._rows) >= self.MAX_ENTRIES:
                    self._rows.clear()
                self._rows[sub_id] = row

    def ahead(self, sub_id: str) -> float:
        """How far ahead this process knows starts to be reserved."""
        with self._lock:
            return self._next.get(sub_id, 0.0) - time.time()

    def expected(self, sub_id: str, slot: float) -> None:
        with self._lock:
            self._next[sub_id] = max(self._next.get(sub_id, 0.0), slot)

    def lock(self, sub_id: str) -> threading.Lock:
        """The lock this process's claims for one limited subscription take turns on."""
        with self._lock:
            if len(self._claims) >= self.MAX_ENTRIES:
                self._claims = {k: v for k, v in self._claims.items() if v.locked()}
                self._next.clear()
            return self._claims.setdefault(sub_id, threading.Lock())

    def hold(self, sub_id: str, until: float) -> None:
        with self._lock:
            if len(self._until) >= self.MAX_ENTRIES:
                now = time.time()
                self._until = {k: v for k, v in self._until.items() if v > now}
            self._until[sub_id] = max(until, self._until.get(sub_id, 0.0))

    def wait(self, sub_id: str) -> float:
        """Seconds an attempt to this subscription still waits (0: none)."""
        with self._lock:
            until = self._until.get(sub_id)
            if until is None:
                return 0.0
            left = until - time.time()
            if left <= 0:
                del self._until[sub_id]
                return 0.0
            return left


def backoffs() -> Backoffs:
    return runtime.current().part("store.pacing", Backoffs)


def forget(storage: Storage, sub_id: str) -> None:
    """Drop a subscription's row (it was deleted or its limit removed)."""
    try:
        storage.table(OPERATIONS_TABLE).delete_entity(partition(sub_id), "")
    except ResourceNotFoundError:
        pass
