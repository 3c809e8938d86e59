"""The per-subscription delivery log: one row per (subscription, event), newest first.

A row is written after an attempt, never before: a first attempt that succeeds costs one write,
and the queue message, not the row, is what keeps unfinished work from being lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from azure.data.tables import UpdateMode

from . import clock
from .storage import DELIVERIES_TABLE, Storage
from .paging import decode_token, encode_token

STATUSES = ("pending", "succeeded", "failed")


def row_key(log: tuple[str, str], event_id: str) -> str:
    """Newest first, by when the event was fanned out (taken from its event log key)."""
    fanned_out = clock.from_time_key(log[1].split("_", 1)[0])
    return f"{clock.inverted_key(fanned_out)}_{event_id}"


@dataclass
class Attempt:
    status: str
    attempts: int
    attempted_at: datetime
    status_code: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None


class DeliveryLog:
    def __init__(self, storage: Storage) -> None:
        self._table = storage.table(DELIVERIES_TABLE)

    def write(self, sub_id: str, event_id: str, event_type: str, log: tuple[str, str], attempt: Attempt) -> None:
        entity: dict[str, Any] = {
            "PartitionKey": sub_id, "RowKey": row_key(log, event_id),
            "eventId": event_id, "eventType": event_type, "status": attempt.status,
            "attempts": attempt.attempts, "lastAttemptAt": clock.rfc3339(attempt.attempted_at),
            "logPk": log[0], "logRk": log[1],
        }
        if attempt.status_code is not None:
            entity["lastStatusCode"] = attempt.status_code
        if attempt.error:
            entity["lastError"] = attempt.error[:1024]
        if attempt.next_attempt_at is not None:
            entity["nextAttemptAt"] = clock.rfc3339(attempt.next_attempt_at)
        self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def list(self, sub_id: str, *, status: str | None, limit: int,
             token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        flt = "PartitionKey eq @pk"
        params = {"pk": sub_id}
        if status:
            flt += " and status eq @status"
            params["status"] = status
        pages = self._table.query_entities(flt, parameters=params, results_per_page=limit).by_page(
            continuation_token=decode_token(token))
        rows = [public_row(r) for r in next(pages, [])]
        return rows, encode_token(pages.continuation_token)

    def rows(self, sub_id: str, status: str | None = None) -> Iterator[dict[str, Any]]:
        flt = "PartitionKey eq @pk" + (" and status eq @status" if status else "")
        return iter(self._table.query_entities(flt, parameters={"pk": sub_id, "status": status or ""},
                                               results_per_page=1000))


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    view = {"eventId": row["eventId"], "eventType": row["eventType"], "status": row["status"],
            "attempts": int(row["attempts"])}
    for name in ("lastStatusCode", "lastError", "lastAttemptAt", "nextAttemptAt"):
        if row.get(name) is not None:
            view[name] = row[name]
    return view
