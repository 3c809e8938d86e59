"""The event log: the one module that knows how the events table is laid out.

| partition    | row key                    | what                                                  |
|--------------|----------------------------|-------------------------------------------------------|
| `e:{day}`    | `{time}_{id}`              | an event, logged at fan-out time, in time order       |
| `e:{day}`    | `t:{pattern}\\|{time}_{id}` | a copy per pattern the type matches except `*`        |
| `d:{sha256}` | (empty)                    | de-duplication: the queue message that claimed an id  |

Event rows are written at fan-out time, in time order, so the polling trigger can read forward
from a position (`{time}` text sorts as the moment does, and an event's row key is its position).

The log is indexed by type: next to each event row, in the same day partition and the same
table transaction, sits a copy under `t:{pattern}|{time}_{id}` for every pattern the event's
type matches except `*` (`order.created` -> `order.created` and `order.*`). A poll or replay of
a pattern then reads one key range of that pattern's rows, so its cost follows the matching
events rather than the whole log; `*` reads the event rows themselves. One transaction per
publish keeps the index exactly as durable as the row (never one without the other), and
retention, which drops whole day partitions, forgets both together.

Fan-out is the idempotent step. For an id the publisher supplied, the de-duplication row carries
the queue message's id: the same message coming back after a crash finds its own id and carries
on, while a second publish of the same event (the same source, type and id; in entra mode also
the same publishing principal) finds another message's id and is dropped. The publish claims
the row itself right after its message is enqueued (`claim`), so a repeat is told so in its own
answer (`"duplicate": true`) and its message is withdrawn; a publish that died between the two
leaves a message whose fan-out claims the row as before. A publish that died before its message
was enqueued was never acknowledged, and claimed nothing, so nothing is swallowed. An id the
relay generated cannot come from another publish: such events skip that row, and only a message
that comes back looks for the log row it may already have written.

Everything else sees positions (opaque, sortable text), `LogKey`s (where an event row is; they
travel in delivery messages) and `LoggedEvent` records, never a row key or a row.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from relay.core import clock
from relay.core.jsontext import compact
from relay.core.matching import patterns_for_type
from relay.core.models import EventRecord
from relay.store.events import INLINE_DATA_BYTES, claim_check
from relay.store.storage import EVENTS_TABLE, Storage, delete_rows

# Inline data (UTF-8 bytes) of all the rows of one event-log transaction together.
TRANSACTION_DATA_BYTES = 1_000_000
# Pollers read up to five seconds before now (polling.MARGIN); a log key older than this when its
# row is about to be written is taken again.
REKEY_AFTER = 1.0
EVENT_PREFIX = "e:"
DEDUPE_PREFIX = "d:"
# Index rows sort after event rows (whose keys start with a digit), so range reads of one never
# meet the other.
INDEX_PREFIX = "t:"
EVENT_ROWS_BELOW = ":"  # every event row key is less than this, every index row key is not


# ---- positions and keys ---------------------------------------------------------------------


def position(moment: datetime) -> str:
    """The position in the log before every event logged at `moment` or later."""
    return clock.time_key(moment)


def position_after(moment: datetime) -> str:
    """The position in the log after every event logged at `moment` or earlier."""
    return clock.time_key(moment) + "~"


def position_time(at: str) -> datetime:
    """The moment a position (or an event's position) stands for; ValueError if it is none."""
    return clock.from_time_key(at.split("_", 1)[0])


class LogKey(NamedTuple):
    """Where an event row is: its day partition and its row key (which is its position)."""

    partition: str
    row: str

    @property
    def at(self) -> datetime:
        """When the event was logged (fanned out)."""
        return position_time(self.row)


def _day_partition(moment: datetime) -> str:
    return EVENT_PREFIX + clock.day_bucket(moment)


def _new_key(event_id: str) -> LogKey:
    now = clock.utcnow()
    return LogKey(_day_partition(now), f"{clock.time_key(now)}_{event_id}")


def indexed_patterns(event_type: str) -> list[str]:
    """The patterns an event type gets index rows under: all it matches except `*`."""
    return [p for p in patterns_for_type(event_type) if p != "*"]


def _index_key(pattern: str, row: str) -> str:
    return f"{INDEX_PREFIX}{pattern}|{row}"


def dedupe_key_of(record: EventRecord) -> str:
    """The de-duplication row of an event: CloudEvents identifies an event by (source, type, id),
    so an id reused with another type or source is another event, not a repeat of the first.
    Hashed, because a source may hold characters (`/`, `?`, `#`) that table keys refuse."""
    identity = json.dumps([record.source, record.type, record.id], ensure_ascii=False)
    if record.publisher is not None:
        # Entra mode: the publisher's principal is part of the identity (CONTRACT section 6), so
        # nobody can pre-publish another system's next (source, type, id) and have it dropped.
        identity = json.dumps([record.publisher, record.source, record.type, record.id], ensure_ascii=False)
    return DEDUPE_PREFIX + hashlib.sha256(identity.encode("utf-8")).hexdigest()


# ---- records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedEvent:
    """An event as the log holds it."""

    key: LogKey
    id: str
    type: str
    source: str
    time: str  # the publisher's time, as it is shown
    subject: str | None
    data: Any  # None when the data is in `blob`
    blob: str | None
    accepted_at: datetime
    ext: dict[str, Any] | None = None  # the CloudEvents attributes the relay has no field for

    @classmethod
    def from_row(cls, row: dict[str, Any], key: LogKey) -> LoggedEvent:
        blob = row.get("blob")
        return cls(
            key=key,
            id=row["id"],
            type=row["type"],
            source=row["source"],
            time=row["time"],
            subject=row.get("subject"),
            data=json.loads(row["data"]) if "data" in row and blob is None else None,
            blob=blob,
            accepted_at=clock.parse_rfc3339(row["acceptedAt"]),
            ext=json.loads(row["ext"]) if row.get("ext") else None,
        )

    def record(self) -> EventRecord:
        """The event as delivery and the polling trigger send it."""
        return EventRecord(
            id=self.id,
            type=self.type,
            source=self.source,
            time=self.time,
            subject=self.subject,
            data=self.data,
            blob=self.blob,
            acceptedAt=self.accepted_at,
            ext=self.ext,
        )


@dataclass(frozen=True)
class Day:
    """One day partition's slice of a walk: `events` (read lazily, oldest first) are everything
    the patterns match up to, not including, the position `end`."""

    end: str
    events: Iterator[LoggedEvent]


# ---- the store ------------------------------------------------------------------------------


class EventLog:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._table: TableClient = storage.table(EVENTS_TABLE)
        self._batch = storage.table_batch(EVENTS_TABLE)  # the per-event write, at a fifth of the SDK's CPU

    def record(self, record: EventRecord, message_id: str, seen_before: bool = True) -> LogKey | None:
        """Log a fanned-out event once; returns its log key, or None for a duplicate publish.

        `seen_before` is false when this message is certainly on its first try (the first
        dequeue of a message that was never put back), which spares generated ids any lookup.
        """
        if record.generated:
            # Only a crash can bring such an event back, and only then is its log row looked for.
            found = self._find(record) if seen_before else None
            if found is not None:
                return found
            log = _new_key(record.id)
            self._write(log, record)
            return log
        dedupe_key = dedupe_key_of(record)
        log = _new_key(record.id)
        keyed_at = time.monotonic()
        try:
            self._table.create_entity(
                {
                    "PartitionKey": dedupe_key,
                    "RowKey": "",
                    "messageId": message_id,
                    "logPk": log.partition,
                    "logRk": log.row,
                    "acceptedAt": clock.rfc3339_precise(record.acceptedAt),
                }
            )
        except ResourceExistsError:
            seen = self._table.get_entity(dedupe_key, "")
            if seen.get("messageId") != message_id:
                return None
            # Our own message again, after a crash: make sure its log row exists. A row written
            # now gets a fresh key, or pollers that already read past the old one would miss it.
            # A row the publish claimed (`claim`) names no log row yet.
            logged = LogKey(seen["logPk"], seen["logRk"]) if seen.get("logPk") else None
            if logged is not None and self._exists(logged):
                return logged
            self._repoint(dedupe_key, log)
        if time.monotonic() - keyed_at > REKEY_AFTER:
            # Storage was slow (retrying): a key this old could already be behind pollers.
            log = _new_key(record.id)
            self._repoint(dedupe_key, log)
        self._write(log, record)
        return log

    def claim(self, record: EventRecord, message_id: str) -> bool:
        """At publish, after the event's message is enqueued: take the event's de-duplication row
        for that message. False when another message holds it (the event was accepted before:
        this publish is a duplicate, and its fan-out would drop it)."""
        if record.generated:
            return True
        dedupe_key = dedupe_key_of(record)
        try:
            self._table.create_entity(
                {
                    "PartitionKey": dedupe_key,
                    "RowKey": "",
                    "messageId": message_id,
                    "acceptedAt": clock.rfc3339_precise(record.acceptedAt),
                }
            )
            return True
        except ResourceExistsError:
            pass
        try:
            return bool(self._table.get_entity(dedupe_key, "").get("messageId") == message_id)
        except ResourceNotFoundError:
            return True  # swept by retention meanwhile: the earlier event is past its window

    def _repoint(self, dedupe_key: str, log: LogKey) -> None:
        self._table.update_entity(
            {"PartitionKey": dedupe_key, "RowKey": "", "logPk": log.partition, "logRk": log.row},
            mode=UpdateMode.MERGE,
        )

    def _find(self, record: EventRecord) -> LogKey | None:
        """The log row of an event, searched from the day it was accepted (a rare, bounded scan)."""
        since = record.acceptedAt
        rows = self._table.query_entities(
            "PartitionKey ge @lo and PartitionKey le @hi and RowKey lt @rows and id eq @id",
            parameters={
                "lo": _day_partition(since),
                "hi": _day_partition(clock.utcnow()),
                "rows": EVENT_ROWS_BELOW,
                "id": record.id,
            },
            select=["PartitionKey", "RowKey"],
        )
        for row in rows:
            return LogKey(row["PartitionKey"], row["RowKey"])
        return None

    def _exists(self, log: LogKey) -> bool:
        try:
            self._table.get_entity(log.partition, log.row, select=["PartitionKey"])
            return True
        except ResourceNotFoundError:
            return False

    def _write(self, log: LogKey, record: EventRecord) -> None:
        patterns = indexed_patterns(record.type)
        # A transaction carries at most 4 MiB, and its JSON escapes non-ASCII text (up to three
        # times its UTF-8 size): a type with many patterns keeps less data inline per row.
        record = claim_check(
            self._storage, record, min(INLINE_DATA_BYTES, TRANSACTION_DATA_BYTES // (1 + len(patterns)))
        )
        entity: dict[str, str] = {
            "PartitionKey": log.partition,
            "RowKey": log.row,
            "id": record.id,
            "type": record.type,
            "source": record.source,
            "time": record.time,
            "acceptedAt": clock.rfc3339_precise(record.acceptedAt),
        }
        if record.subject is not None:
            entity["subject"] = record.subject
        if record.ext:
            entity["ext"] = compact(record.ext)
        if record.blob is not None:
            entity["blob"] = record.blob
        else:
            entity["data"] = compact(record.data)
        # The row and its index rows in one transaction (one partition, at most 65 rows: a
        # 128-character type has at most 64 patterns besides `*`).
        rows = [entity] + [{**entity, "RowKey": _index_key(p, log.row)} for p in patterns]
        self._batch.upsert(rows)

    def get(self, log: tuple[str, str]) -> LoggedEvent | None:
        """The event at a log key (as a delivery message carries it), or None once it is forgotten."""
        key = LogKey(*log)
        try:
            row = self._table.get_entity(key.partition, key.row)
        except ResourceNotFoundError:
            return None
        return LoggedEvent.from_row(row, key)

    # ---- reading forward ------------------------------------------------------------------

    def walk(
        self, patterns: Sequence[str], after: str, before: str, *, first_day: datetime | None = None, page: int = 1000
    ) -> Iterator[Day]:
        """The events some patterns match, logged strictly between two positions, a day partition
        at a time from the day of `after` (or `first_day`, when it is later) to the day of
        `before`, oldest first, each event once. Reads only matching rows: `*` the event rows,
        any other pattern its own index rows. A caller stops whenever it has read enough: a day
        is read only as its events are."""
        start = position_time(after)
        if first_day is not None:
            start = max(start, first_day)
        day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        wanted = ["*"] if "*" in patterns else sorted(set(patterns))
        while True:
            next_day = day + timedelta(days=1)
            end = min(before, position(next_day))
            yield Day(end, self._read_day(wanted, day, after, end, page))
            if end == before:
                return
            day = next_day

    def _read_day(
        self, patterns: list[str], day: datetime, after: str, before: str, page: int
    ) -> Iterator[LoggedEvent]:
        # Each pattern's rows in log order, merged; an event two patterns match
        # (`order.*` and `order.created`) comes once.
        previous = None
        for event in heapq.merge(*(self._read(p, day, after, before, page) for p in patterns), key=lambda e: e.key.row):
            if event.key.row != previous:
                previous = event.key.row
                yield event

    def _read(self, pattern: str, day: datetime, after: str, before: str, page: int) -> Iterator[LoggedEvent]:
        prefix = "" if pattern == "*" else _index_key(pattern, "")
        partition = _day_partition(day)
        rows = self._table.query_entities(
            "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi",
            parameters={
                "pk": partition,
                "lo": prefix + after,
                "hi": prefix + (before if pattern != "*" else min(before, EVENT_ROWS_BELOW)),
            },
            results_per_page=page,
        )
        for row in rows:
            yield LoggedEvent.from_row(row, LogKey(partition, row["RowKey"][len(prefix) :]))

    # ---- forgetting -----------------------------------------------------------------------

    def sweep(self, cutoff: datetime) -> dict[str, int]:
        """Forget the day partitions before the cutoff's day (event rows and their index rows
        together) and the de-duplication rows of events accepted before the cutoff; returns
        counts of `events`, `eventIndex` and `dedupe` rows deleted."""
        select = ["PartitionKey", "RowKey"]
        old_events = list(
            self._table.query_entities(
                "PartitionKey ge @lo and PartitionKey lt @day",
                parameters={"lo": EVENT_PREFIX, "day": _day_partition(cutoff)},
                select=select,
            )
        )
        index_rows = sum(1 for row in old_events if row["RowKey"].startswith(INDEX_PREFIX))
        dedupe = self._table.query_entities(
            "PartitionKey ge @lo and PartitionKey lt @hi and acceptedAt lt @cut",
            parameters={"lo": DEDUPE_PREFIX, "hi": _after_prefix(DEDUPE_PREFIX), "cut": clock.rfc3339(cutoff)},
            select=select,
        )
        return {
            "events": delete_rows(self._table, old_events) - index_rows,
            "eventIndex": index_rows,
            "dedupe": delete_rows(self._table, dedupe),
        }


def _after_prefix(prefix: str) -> str:
    """The smallest text above every key that starts with `prefix` (`d:` -> `d;`)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
