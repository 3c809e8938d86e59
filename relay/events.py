"""Accepting events, and the durable event log behind polling, replay and de-duplication.

Publishing only enqueues: the queue message is the durable record behind the 202. Fan-out is
the idempotent step. For an id the publisher supplied it inserts a de-duplication row carrying
the queue message's id: the same message coming back after a crash finds its own id and carries
on, while a second publish of the same event (the same source, type and id) finds another
message's id and is dropped. A
publish that died before its message was enqueued was never acknowledged, so nothing is
swallowed. An id the relay generated cannot come from another publish: such events skip that
row, and only a message that comes back looks for the log row it may already have written.

Event log rows (`e:{day}` / `{time}_{id}`) are written at fan-out time, in time order, so the
polling trigger can read forward from a key.

The log is indexed by type: next to each event row, in the same day partition and the same
table transaction, sits a copy under `t:{pattern}|{time}_{id}` for every pattern the event's
type matches except `*` (`order.created` -> `order.created` and `order.*`). A poll or replay of
a pattern then reads one key range of that pattern's rows, so its cost follows the matching
events rather than the whole log; `*` reads the event rows themselves. One transaction per
publish keeps the index exactly as durable as the row (never one without the other), and
retention, which drops whole day partitions, forgets both together.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import datetime
from typing import Any, Iterator

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from . import clock
from .matching import patterns_for_type
from .models import EventIn, EventRecord
from .storage import EVENTS_TABLE, Storage

# Data up to this many bytes of JSON travels inline in queue messages (48 KiB of data after
# base64) and in table rows (64 KiB per string property); larger data goes to a blob.
INLINE_DATA_BYTES = 30_000
# Inline data (UTF-8 bytes) of all the rows of one event-log transaction together.
TRANSACTION_DATA_BYTES = 1_000_000
# Pollers read up to five seconds before now (polling.MARGIN); a log key older than this when its
# row is about to be written is taken again.
REKEY_AFTER = 1.0
# Index rows sort after event rows (whose keys start with a digit), so range reads of one never
# meet the other.
INDEX_PREFIX = "t:"
EVENT_ROWS_BELOW = ":"  # every event row key is less than this, every index row key is not


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_size(raw: Any) -> int:
    """The size the contract's RELAY_MAX_EVENT_BYTES limits: the event's JSON, compact, in UTF-8."""
    return len(compact(raw).encode("utf-8"))


def accept(event: EventIn, source: str) -> EventRecord:
    now = clock.utcnow()
    return EventRecord(
        id=event.id or uuid.uuid4().hex,
        generated=event.id is None,
        type=event.type,
        source=event.source or source,
        time=event.time or clock.rfc3339(now),
        subject=event.subject,
        data=event.data,
        # To the microsecond: a polling chain holds exactly the events accepted after its start.
        acceptedAt=clock.rfc3339_precise(now),
    )


def dedupe_key_of(record: EventRecord) -> str:
    """The de-duplication row of an event: CloudEvents identifies an event by (source, type, id),
    so an id reused with another type or source is another event, not a repeat of the first.
    Hashed, because a source may hold characters (`/`, `?`, `#`) that table keys refuse."""
    identity = json.dumps([record.source, record.type, record.id], ensure_ascii=False)
    return "d:" + hashlib.sha256(identity.encode("utf-8")).hexdigest()


def claim_check(storage: Storage, record: EventRecord, limit: int = INLINE_DATA_BYTES) -> EventRecord:
    """Move large data to a blob and carry its name instead."""
    if record.blob is not None:
        return record
    data = compact(record.data).encode("utf-8")
    if len(data) <= limit:
        return record
    # Named by nothing the publisher chose: an id such as `..` must not become a path.
    name = f"{clock.day_bucket(clock.utcnow())}/{uuid.uuid4().hex}.json"
    storage.container().upload_blob(name, data, overwrite=True)
    return record.model_copy(update={"data": None, "blob": name})


def load_data(storage: Storage, record: EventRecord) -> Any:
    if record.blob is None:
        return record.data
    return json.loads(storage.container().download_blob(record.blob).readall())


class EventLog:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._table = storage.table(EVENTS_TABLE)

    def record(self, record: EventRecord, message_id: str, seen_before: bool = True) -> tuple[str, str] | None:
        """Log a fanned-out event once; returns its log row, or None for a duplicate publish.

        `seen_before` is false when this message is certainly on its first try (the first
        dequeue of a message that was never put back), which spares generated ids any lookup.
        """
        if record.generated:
            # Only a crash can bring such an event back, and only then is its log row looked for.
            found = self._find(record) if seen_before else None
            if found is not None:
                return found
            log = self._new_log_key(record)
            self._write(log, record)
            return log
        dedupe_key = dedupe_key_of(record)
        log = self._new_log_key(record)
        keyed_at = time.monotonic()
        try:
            self._table.create_entity({"PartitionKey": dedupe_key, "RowKey": "", "messageId": message_id,
                                       "logPk": log[0], "logRk": log[1], "acceptedAt": record.acceptedAt})
        except ResourceExistsError:
            seen = self._table.get_entity(dedupe_key, "")
            if seen.get("messageId") != message_id:
                return None
            # Our own message again, after a crash: make sure its log row exists. A row written
            # now gets a fresh key, or pollers that already read past the old one would miss it.
            if self._exists(seen["logPk"], seen["logRk"]):
                return seen["logPk"], seen["logRk"]
            self._repoint(dedupe_key, log)
        if time.monotonic() - keyed_at > REKEY_AFTER:
            # Storage was slow (retrying): a key this old could already be behind pollers.
            log = self._new_log_key(record)
            self._repoint(dedupe_key, log)
        self._write(log, record)
        return log

    def _repoint(self, dedupe_key: str, log: tuple[str, str]) -> None:
        self._table.update_entity({"PartitionKey": dedupe_key, "RowKey": "", "logPk": log[0], "logRk": log[1]},
                                  mode=UpdateMode.MERGE)

    def _find(self, record: EventRecord) -> tuple[str, str] | None:
        """The log row of an event, searched from the day it was accepted (a rare, bounded scan)."""
        since = clock.parse_rfc3339(record.acceptedAt)
        rows = self._table.query_entities(
            "PartitionKey ge @lo and PartitionKey le @hi and RowKey lt @rows and id eq @id",
            parameters={"lo": f"e:{clock.day_bucket(since)}", "hi": f"e:{clock.day_bucket(clock.utcnow())}",
                        "rows": EVENT_ROWS_BELOW, "id": record.id}, select=["PartitionKey", "RowKey"])
        for row in rows:
            return row["PartitionKey"], row["RowKey"]
        return None

    @staticmethod
    def _new_log_key(record: EventRecord) -> tuple[str, str]:
        now = clock.utcnow()
        return f"e:{clock.day_bucket(now)}", f"{clock.time_key(now)}_{record.id}"

    def _exists(self, pk: str, rk: str) -> bool:
        try:
            self._table.get_entity(pk, rk, select=["PartitionKey"])
            return True
        except ResourceNotFoundError:
            return False

    def _write(self, log: tuple[str, str], record: EventRecord) -> None:
        patterns = indexed_patterns(record.type)
        # A transaction carries at most 4 MiB, and the SDK escapes non-ASCII text (up to three
        # times its UTF-8 size): a type with many patterns keeps less data inline per row.
        record = claim_check(self._storage, record,
                             min(INLINE_DATA_BYTES, TRANSACTION_DATA_BYTES // (1 + len(patterns))))
        entity = {"PartitionKey": log[0], "RowKey": log[1], "id": record.id, "type": record.type,
                  "source": record.source, "time": record.time, "acceptedAt": record.acceptedAt}
        if record.subject is not None:
            entity["subject"] = record.subject
        if record.blob is not None:
            entity["blob"] = record.blob
        else:
            entity["data"] = compact(record.data)
        # The row and its index rows in one transaction (one partition, at most 65 rows: a
        # 128-character type has at most 64 patterns besides `*`).
        rows = [entity] + [{**entity, "RowKey": index_key(p, log[1])} for p in patterns]
        self._table.submit_transaction([("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows])

    def get(self, log: tuple[str, str]) -> EventRecord | None:
        try:
            row = self._table.get_entity(log[0], log[1])
        except ResourceNotFoundError:
            return None
        return row_to_record(row)


def indexed_patterns(event_type: str) -> list[str]:
    """The patterns an event type gets index rows under: all it matches except `*`."""
    return [p for p in patterns_for_type(event_type) if p != "*"]


def index_key(pattern: str, log_key: str) -> str:
    return f"{INDEX_PREFIX}{pattern}|{log_key}"


def read_log(storage: Storage, pattern: str, day: datetime, after: str, before: str,
             page: int = 1000) -> Iterator[tuple[str, dict[str, Any]]]:
    """Events of one day whose type matches `pattern`, with log keys strictly between `after`
    and `before`, oldest first, as (log key, row). Reads only matching rows: `*` the event
    rows, any other pattern its own index rows (the row's `RowKey` is the index key)."""
    prefix = "" if pattern == "*" else index_key(pattern, "")
    rows = storage.table(EVENTS_TABLE).query_entities(
        "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi",
        parameters={"pk": f"e:{clock.day_bucket(day)}", "lo": prefix + after,
                    "hi": prefix + (before if pattern != "*" else min(before, EVENT_ROWS_BELOW))},
        results_per_page=page)
    for row in rows:
        yield row["RowKey"][len(prefix):], row


def row_to_record(row: dict[str, Any]) -> EventRecord:
    return EventRecord(
        id=row["id"], type=row["type"], source=row["source"], time=row["time"],
        subject=row.get("subject"), acceptedAt=row["acceptedAt"], blob=row.get("blob"),
        data=json.loads(row["data"]) if "data" in row and row.get("blob") is None else None,
    )
