"""Delivery counters for the console's overview: attempt outcomes per minute and per hour, and
per subscription, at a bounded cost to write and to read.

Scanning the delivery log for a chart would cost O(deliveries), and a counter row updated by
every attempt would be a hot row fought over by every instance. Instead each process adds up
what its own attempts came to, in memory, and every `FLUSH_SECONDS` (when anything changed)
writes its running totals for the current minute and hour as two rows of one partition (the
hour's) of the delivery log table, in one table transaction (`relay.store.deliverylog.Counters` keeps
those rows).

A write replaces the process's own rows with its running totals, so a failed or repeated flush
is corrected by the next one and no two writers ever touch one row. What is lost is at most the
last `FLUSH_SECONDS` of counts of an instance that is killed: the delivery log stays the record
of every delivery, these rows are a gauge. Rows carry `lastAttemptAt` and a `status`, so the
retention sweep removes them with the delivery log.

Reading `window=1h` reads the minute rows of two hour partitions, `window=24h` the hour rows of
25: at most 120 or 25 rows per instance that delivered in the window.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from relay.core import clock, runtime
from relay.store.counters import CounterRow, Counters
from relay.store.storage import Storage
from relay.store.subscriptions import SubscriptionStore

log = logging.getLogger("relay.stats")

OUTCOMES = ("succeeded", "retrying", "failed")
FLUSH_SECONDS = 2.0
# Per-subscription figures kept per row: a row stays far below the 64 KiB a property may hold.
MAX_SUBS_PER_ROW = 300
# Subscriptions counted by status per stats call (a page of 1,000 per query).
MAX_SUBSCRIPTIONS_COUNTED = 5000
TOP = 5
WINDOWS = {"1h": ("minute", 60), "24h": ("hour", 24)}
HOUR = -1  # the bucket of a whole hour (the others are minutes 0 to 59)

PROCESS = uuid.uuid4().hex[:12]

# Upper bounds (ms) of the answer-time histogram kept per subscription for its p50 and p95: a
# percentile is given as the bound of the bucket it falls in (at most the slowest answer seen).
HIST_BOUNDS_MS = (
    10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000, 15000, 30000, 60000,
)  # fmt: skip


def _hist_bucket(elapsed_ms: int) -> int:
    return next((i for i, bound in enumerate(HIST_BOUNDS_MS) if elapsed_ms <= bound), len(HIST_BOUNDS_MS))


@dataclass
class SubCounts:
    succeeded: int = 0
    retrying: int = 0
    failed: int = 0
    total_ms: int = 0
    timed: int = 0
    max_ms: int = 0
    last_success: str | None = None

    def to_list(self) -> list[Any]:
        return [self.succeeded, self.retrying, self.failed, self.total_ms, self.timed, self.max_ms, self.last_success]

    @classmethod
    def from_list(cls, raw: list[Any]) -> SubCounts:
        return cls(*raw[:7])

    def add(self, other: SubCounts) -> None:
        self.succeeded += other.succeeded
        self.retrying += other.retrying
        self.failed += other.failed
        self.total_ms += other.total_ms
        self.timed += other.timed
        self.max_ms = max(self.max_ms, other.max_ms)
        if other.last_success and (self.last_success is None or other.last_success > self.last_success):
            self.last_success = other.last_success


@dataclass
class Bucket:
    """One process's running totals for a minute or an hour."""

    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    subs: dict[str, SubCounts] = field(default_factory=dict)
    untracked: int = 0  # attempts of subscriptions beyond MAX_SUBS_PER_ROW
    hists: dict[str, dict[int, int]] = field(default_factory=dict)  # answer times: bucket -> attempts

    def record(self, sub_id: str, outcome: str, elapsed_ms: int | None, at: str, new_failure: bool = True) -> None:
        self.totals[outcome] += 1
        counts = self.subs.get(sub_id)
        if counts is None:
            if len(self.subs) >= MAX_SUBS_PER_ROW:
                self.untracked += 1
                return
            counts = self.subs[sub_id] = SubCounts()
        # A subscription's `failed` counts events that failed ("Failures (day)"), not failed
        # attempts: a replay that fails again adds an attempt, not a failure.
        if outcome != "failed" or new_failure:
            setattr(counts, outcome, getattr(counts, outcome) + 1)
        if elapsed_ms is not None:
            counts.total_ms += elapsed_ms
            counts.timed += 1
            counts.max_ms = max(counts.max_ms, elapsed_ms)
            hist = self.hists.setdefault(sub_id, {})
            bucket = _hist_bucket(elapsed_ms)
            hist[bucket] = hist.get(bucket, 0) + 1
        if outcome == "succeeded":
            counts.last_success = at

    def row(self, hour: datetime, minute: int | None, process: str) -> CounterRow:
        return CounterRow(
            hour=hour,
            minute=minute,
            process=process,
            totals=dict(self.totals),
            untracked=self.untracked,
            subs={k: v.to_list() for k, v in self.subs.items()},
            hists={k: dict(v) for k, v in self.hists.items()},
        )


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


class Recorder:
    """This process's counters and the thread that writes them.

    An attempt only appends what it came to to a queue (`deque.append` takes no lock); the
    flush folds the queue into the buckets, under the lock, before it writes them. A lock taken
    by every attempt thread for every attempt was 3-4 % of the relay's CPU at fan-out 100 in
    py-spy profiles: with 64 threads it was often held by one that had lost the interpreter.
    """

    def __init__(self, process: str = PROCESS) -> None:
        self.process = process
        self._lock = threading.Lock()
        self._buckets: dict[tuple[datetime, int], Bucket] = {}  # (hour, minute or HOUR) -> bucket
        self._dirty: set[tuple[datetime, int]] = set()  # buckets changed since the last flush
        self._pending: deque[tuple[str, str, int | None, datetime, bool]] = deque()  # not yet folded in
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._storage: Storage | None = None
        self._stopped = False

    def record(
        self,
        storage: Storage,
        sub_id: str,
        outcome: str,
        elapsed: float | None = None,
        at: datetime | None = None,
        new_failure: bool = True,
    ) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"not an outcome: {outcome}")
        self._pending.append(
            (sub_id, outcome, None if elapsed is None else int(elapsed * 1000), at or clock.utcnow(), new_failure)
        )
        if self._thread is None or self._storage is not storage:
            with self._lock:
                self._storage = storage
                if self._thread is None and not self._stopped:
                    self._thread = threading.Thread(target=self._run, name="stats-flush", daemon=True)
                    self._thread.start()

    def _fold(self) -> None:
        """Add the queued attempts to their buckets (the caller holds the lock)."""
        pending = self._pending
        while pending:
            sub_id, outcome, elapsed_ms, at, new_failure = pending.popleft()
            hour = _hour(at)
            stamp = clock.rfc3339(at)
            for part in (at.minute, HOUR):
                self._buckets.setdefault((hour, part), Bucket()).record(sub_id, outcome, elapsed_ms, stamp, new_failure)
                self._dirty.add((hour, part))

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            if self._stopped:
                return
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - counters are a gauge: try again at the next tick
                log.warning("stats: flush failed (%s); retrying", type(exc).__name__)

    def flush(self) -> None:
        """Write the running totals of every bucket changed since the last flush."""
        with self._lock:
            self._fold()
            storage, dirty = self._storage, sorted(self._dirty)
            self._dirty.clear()
            rows = [
                self._buckets[(hour, part)].row(hour, None if part == HOUR else part, self.process)
                for hour, part in dirty
            ]
            # Older hours are final once written: keep only the current and the previous one.
            keep = {_hour(clock.utcnow()), _hour(clock.utcnow() - timedelta(hours=1))}
        if storage is None or not rows:
            return
        try:
            Counters(storage).write(rows, clock.utcnow())
        except Exception:
            with self._lock:
                self._dirty.update(dirty)
            raise
        with self._lock:
            for key in [k for k in self._buckets if k[0] not in keep and k not in self._dirty]:
                del self._buckets[key]

    def stop(self) -> None:
        """End the flush thread (what was counted since its last flush is not written: the
        counters are a gauge, and a flush at close could wait on a storage outage)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def recorder() -> Recorder:
    """This process's recorder, a part of the runtime, which stops its thread when it closes."""
    return runtime.current().part("stats", Recorder, Recorder.stop)


def record(
    storage: Storage, sub_id: str, outcome: str, elapsed: float | None = None, *, new_failure: bool = True
) -> None:
    """Count one attempt's outcome (`succeeded`, `retrying` or `failed`) for a subscription;
    `new_failure` False for a failure of an event already counted as failed for it."""
    try:
        recorder().record(storage, sub_id, outcome, elapsed, new_failure=new_failure)
    except Exception:
        log.exception("stats: could not count an attempt")


def flush() -> None:
    recorder().flush()


# ---- reading --------------------------------------------------------------------------------------


def _floor(moment: datetime, unit: str) -> datetime:
    moment = moment.replace(second=0, microsecond=0)
    return moment.replace(minute=0) if unit == "hour" else moment


def _count_subscriptions(storage: Storage) -> dict[str, Any]:
    counts, complete = SubscriptionStore(storage).count_by_status(MAX_SUBSCRIPTIONS_COUNTED)
    return {**counts, "complete": complete}


def read(storage: Storage, window: str, now: datetime | None = None) -> dict[str, Any]:
    """The figures of the overview for the last hour (per minute) or day (per hour)."""
    unit, count = WINDOWS[window]
    now = now or clock.utcnow()
    last = _floor(now, unit)
    step = timedelta(minutes=1) if unit == "minute" else timedelta(hours=1)
    first = last - step * (count - 1)
    series = {first + step * i: dict.fromkeys(OUTCOMES, 0) for i in range(count)}
    subs: dict[str, SubCounts] = {}
    untracked = 0
    for row in Counters(storage).read(unit, first, last, OUTCOMES):
        start = row.start
        if start not in series:
            continue
        for outcome in OUTCOMES:
            series[start][outcome] += row.totals[outcome]
        untracked += row.untracked
        for sub_id, raw in row.subs.items():
            subs.setdefault(sub_id, SubCounts()).add(SubCounts.from_list(raw))
    totals = {o: sum(point[o] for point in series.values()) for o in OUTCOMES}
    by_sub = {sub_id: _sub_view(c) for sub_id, c in subs.items()}
    slowest = sorted((s for s in by_sub.items() if s[1]["averageMs"] is not None), key=lambda s: -s[1]["averageMs"])[
        :TOP
    ]
    failing = sorted(
        (s for s in by_sub.items() if s[1]["failed"] + s[1]["retrying"]),
        key=lambda s: (-s[1]["failed"], -s[1]["retrying"]),
    )[:TOP]
    return {
        "window": window,
        "bucket": unit,
        "from": clock.rfc3339(first),
        "to": clock.rfc3339(last + step),
        "series": [{"start": clock.rfc3339(start), **point} for start, point in series.items()],
        "totals": totals,
        "subscriptions": _count_subscriptions(storage),
        "slowest": [{"id": k, **v} for k, v in slowest],
        "failing": [{"id": k, **v} for k, v in failing],
        "bySubscription": by_sub,
        "untracked": untracked,
    }


def _sub_view(counts: SubCounts) -> dict[str, Any]:
    view: dict[str, Any] = {
        "succeeded": counts.succeeded,
        "retrying": counts.retrying,
        "failed": counts.failed,
        "averageMs": round(counts.total_ms / counts.timed) if counts.timed else None,
        "maxMs": counts.max_ms,
    }
    if counts.last_success:
        view["lastSuccessAt"] = counts.last_success
    return view


# ---- endpoint health ------------------------------------------------------------------------------

HEALTH_WINDOWS = {"hour": "1h", "day": "24h"}


def _percentile(hist: dict[int, int], share: float, max_ms: int) -> int | None:
    total = sum(hist.values())
    if not total:
        return None
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= share * total:
            bound = HIST_BOUNDS_MS[bucket] if bucket < len(HIST_BOUNDS_MS) else max_ms
            return min(bound, max_ms) if max_ms else bound
    return max_ms


def _health_of(counts: SubCounts | None, hist: dict[int, int]) -> dict[str, Any]:
    attempts = counts.timed if counts else 0
    return {
        "attempts": attempts,
        "successRate": round(counts.succeeded / attempts, 4) if counts and attempts else None,
        "p50Ms": _percentile(hist, 0.5, counts.max_ms) if counts else None,
        "p95Ms": _percentile(hist, 0.95, counts.max_ms) if counts else None,
    }


@dataclass
class _HealthCache:
    """The last health read and when: a part of the runtime (a fresh runtime reads again)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    read_at: float = 0.0
    found: dict[str, dict[str, Any]] | None = None


def health(storage: Storage) -> dict[str, dict[str, Any]]:
    """`read_health`, read at most once per FLUSH_SECONDS per process (the counters change no
    faster): every subscription read and list page shows it."""
    cache = runtime.current().part("stats.health", _HealthCache)
    now = time.monotonic()
    with cache.lock:
        if cache.found is not None and now - cache.read_at < FLUSH_SECONDS:
            return cache.found
    found = read_health(storage)
    with cache.lock:
        cache.read_at, cache.found = now, found
    return found


def read_health(storage: Storage, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Per subscription that made attempts in the last day: its success rate (attempts that
    succeeded) and the p50 and p95 of its answer times over the last hour and the last day,
    from the counter rows (no scan of the delivery log). Each figure's window is the one the
    overview uses: 60 minutes by minute, 24 hours by hour."""
    now = now or clock.utcnow()
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for name, window in HEALTH_WINDOWS.items():
        unit, count = WINDOWS[window]
        last = _floor(now, unit)
        step = timedelta(minutes=1) if unit == "minute" else timedelta(hours=1)
        first = last - step * (count - 1)
        subs: dict[str, SubCounts] = {}
        hists: dict[str, dict[int, int]] = {}
        for row in Counters(storage).read(unit, first, last, OUTCOMES):
            if not first <= row.start <= last:
                continue
            for sub_id, raw in row.subs.items():
                subs.setdefault(sub_id, SubCounts()).add(SubCounts.from_list(raw))
            for sub_id, raw_hist in row.hists.items():
                into = hists.setdefault(sub_id, {})
                for bucket, n in raw_hist.items():
                    into[int(bucket)] = into.get(int(bucket), 0) + int(n)
        for sub_id, counts in subs.items():
            found.setdefault(sub_id, {})[name] = _health_of(counts, hists.get(sub_id, {}))
    return {
        sub_id: {name: views.get(name, _health_of(None, {})) for name in HEALTH_WINDOWS}
        for sub_id, views in found.items()
    }


def no_health() -> dict[str, Any]:
    """The health of a subscription without attempts in the last day."""
    return {name: _health_of(None, {}) for name in HEALTH_WINDOWS}
