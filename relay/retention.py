"""Forgetting on time: events (with their type index rows), de-duplication rows, delivery log
rows, tombstones, finished operations (and replay locks) and claim-check blobs older than
RELAY_EVENT_RETENTION_DAYS are deleted hourly (event rows by whole days, and blobs a day later
than the rows that point to them).

Azure Tables has no time-to-live, so a timer does it. (In Azure the storage account's
lifecycle rule also deletes old blobs; this sweep covers Azurite and any account without one.)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime
from typing import Any, Iterable

from . import clock
from .events import INDEX_PREFIX
from .storage import DELIVERIES_TABLE, EVENTS_TABLE, OPERATIONS_TABLE, SUBSCRIPTIONS_TABLE, Storage

log = logging.getLogger("relay.retention")

BATCH = 100  # a table transaction holds at most 100 operations, all in one partition


def _delete_rows(table: Any, rows: Iterable[dict[str, Any]]) -> int:
    by_partition: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_partition[row["PartitionKey"]].append(row["RowKey"])
    count = 0
    for pk, keys in by_partition.items():
        for start in range(0, len(keys), BATCH):
            chunk = keys[start:start + BATCH]
            table.submit_transaction([("delete", {"PartitionKey": pk, "RowKey": rk}) for rk in chunk])
            count += len(chunk)
    return count


def sweep(storage: Storage, retention_days: float, now: datetime | None = None) -> dict[str, int]:
    """Delete everything past retention; returns counts by kind."""
    now = now or clock.utcnow()
    cutoff = now - clock.days(retention_days)
    cut_text, cut_key = clock.rfc3339(cutoff), clock.time_key(cutoff)
    events = storage.table(EVENTS_TABLE)
    select = ["PartitionKey", "RowKey"]
    # Whole day partitions: the event rows and, in the same partitions, their type index rows.
    old_events = list(events.query_entities(
        "PartitionKey ge 'e:' and PartitionKey lt @day", parameters={"day": f"e:{clock.day_bucket(cutoff)}"},
        select=select))
    index_rows = sum(1 for row in old_events if row["RowKey"].startswith(INDEX_PREFIX))
    counts = {
        "events": _delete_rows(events, old_events) - index_rows,
        "eventIndex": index_rows,
        "dedupe": _delete_rows(events, events.query_entities(
            "PartitionKey ge 'd:' and PartitionKey lt 'd;' and acceptedAt lt @cut", parameters={"cut": cut_text},
            select=select)),
        "deliveries": _delete_rows(storage.table(DELIVERIES_TABLE), storage.table(DELIVERIES_TABLE).query_entities(
            "lastAttemptAt lt @cut and status ne 'pending'", parameters={"cut": cut_text}, select=select)),
        "tombstones": _delete_rows(storage.table(SUBSCRIPTIONS_TABLE), storage.table(SUBSCRIPTIONS_TABLE)
                                   .query_entities("PartitionKey eq 't' and RowKey lt @key",
                                                   parameters={"key": cut_key}, select=select)),
        "operations": _delete_rows(storage.table(OPERATIONS_TABLE), storage.table(OPERATIONS_TABLE).query_entities(
            "createdAt lt @cut and status ne 'running'", parameters={"cut": cut_text}, select=select)),
    }
    # Event rows go by whole days, so a row can outlive the cutoff by up to a day; its blob must too.
    blob_cutoff = cutoff - clock.days(1)
    container = storage.container()
    old_blobs = [b.name for b in container.list_blobs() if b.last_modified and b.last_modified < blob_cutoff]
    for name in old_blobs:
        container.delete_blob(name, delete_snapshots="include")
    counts["blobs"] = len(old_blobs)
    log.info("retention sweep: %s", ", ".join(f"{k}={v}" for k, v in counts.items()))
    return counts
