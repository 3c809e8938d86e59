"""The delivery log: what happened to each delivery, listed per subscription.

Two kinds of row, because a row per successful delivery was the relay's dominant cost (about
one storage transaction and half the CPU of every delivery, measured by `python -m relay_dev.bench`):

- a **row per (subscription, event)**, in the subscription's partition, for every delivery that
  needed more than one attempt, failed, or was replayed: written after each of its attempts,
  each write adding its attempt to the ones the row keeps (`x{seq}` columns: the first and the
  last `KEEP_LAST`, each with the receiver's first 4 KiB, masked by the caller), on the row's
  ETag, so an attempt is never lost to a concurrent write nor rewritten;
- a **receipt** per delivery batch for the deliveries that succeeded at the first attempt: one
  row naming up to a hundred subscriptions, each with its own start and duration (`t0`, `ats`,
  `durs`: a slow neighbour does not make a fast delivery look late), in a partition per day the
  event was logged (`r:{day}`), keyed as the subscription rows are, so a listing reads both in
  one order (newest first) from where its last page ended.

Failures and retries, the part an operator looks for, stay one cheap partition query away.
Listing successes also reads the receipts of the retention window, a bounded slice per page.
Nothing is written before an attempt: the queue message, not a row, keeps unfinished work.

| partition  | row key                                 | what                                             |
|------------|-----------------------------------------|--------------------------------------------------|
| `{sub id}` | `{inverted time}_{event id}`            | one subscription's delivery of one event         |
| `r:{day}`  | `{inverted time}_{event id}_{random}`   | a receipt: a batch's first-try successes         |
| `c:{hour}` | `m{MM}_{process}`, `h_{process}`        | a process's counters for a minute or the hour    |
|            |                                         | (`relay.pipeline.stats`, for the console's overview) |

The time in both keys is when the event was logged (fanned out). Receipts written before this
layout (`{time}_{event id}_{random}`, under the day they were written) sort before every new
key: a listing shows them on its first page only, until retention forgets them.

Counter rows carry `lastAttemptAt` and a `status`, so `sweep` forgets them with the rest. This
module alone builds and reads these keys and columns; callers get `Delivery` and `CounterRow`
records.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from relay.core import clock
from relay.core.errors import invalid
from relay.core.statuses import DeliveryStatus

# The records (and the counters that share the table) live beside: callers import them from here.
from relay.store.deliveryrows import (
    _ATTEMPT_COLUMN,
    _RECEIPT_COLUMNS,
    Attempt,
    AttemptRecord,
    Delivery,
    FirstTry,
    Record,
    _bounded,
    _kept,
    _time,
)
from relay.store.eventlog import LogKey
from relay.store.storage import DELIVERIES_TABLE, Storage, delete_rows
from relay.store.tokens import Purpose, get_codec

STATUSES = tuple(DeliveryStatus)
RECEIPT_PREFIX = "r:"
# Receipt rows read at most per listing request, so a page costs a bounded amount of work.
SCAN_BUDGET = 5000
QUERY_BUDGET = 20


def _row_key(log: tuple[str, str], event_id: str) -> str:
    """Newest first, by when the event was fanned out (taken from its event log key)."""
    return f"{clock.inverted_key(LogKey(*log).at)}_{event_id}"


def _receipt_firsts(row: Mapping[str, Any], sub_id: str) -> tuple[datetime | None, int, int | None]:
    """(start, duration ms, status code) of a subscription's first-try success in a receipt row.
    Receipts from before attempts had their own times give the batch's time."""
    subs = str(row["subs"]).split(",")
    index = subs.index(sub_id)
    code = int(str(row["codes"]).split(",")[index])
    at = _time(row.get("lastAttemptAt"))
    duration = 0
    if row.get("t0") and row.get("ats"):
        base = clock.parse_rfc3339(row["t0"])
        at = base + timedelta(milliseconds=int(str(row["ats"]).split(",")[index]))
        duration = int(str(row.get("durs") or "").split(",")[index] or 0)
    return at, duration, code


def _encode(doc: dict[str, Any]) -> str:
    return get_codec().seal(Purpose.DELIVERIES_PAGE, doc)


def _decode(text: str | None) -> dict[str, Any]:
    """A listing's position: `after` (the sort key of the last row given, None for the start)
    and `day` (the newest receipt partition still to read)."""
    if not text:
        return {"after": None, "day": None}
    # The codec checks the MAC before anything is decoded; the shape is checked still, as a
    # token of an older shape (signed with the same key) would be.
    doc = get_codec().open(Purpose.DELIVERIES_PAGE, text, "continuationToken")
    try:
        after, day = doc["after"], doc["day"]
        ok = (after is None or isinstance(after, str) and len(after) <= 600) and (
            day is None or isinstance(day, str) and len(day) == 8 and day.isdigit()
        )
        if day is not None:
            clock.from_time_key(day + "T000000.000000Z")
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise invalid("continuationToken", "is not a token this API issued")
    return {"after": after, "day": day}


def _sort_key(delivery: Delivery) -> str:
    """Where a delivery sorts in a listing: its row key, newest first by when the event was logged."""
    return _row_key(delivery.log, delivery.event_id) if delivery.log is not None else "~"


# Row key bounds of a listing, as filter parameters: past the cursor, and the time range (a key
# starts with the inverted logging time, so `until` is a lower bound and `since` an upper one).
_RANGE_OPS = {"after": "gt", "newest": "ge", "oldest": "lt"}


def _key_range(after: str | None, since: datetime | None, until: datetime | None) -> dict[str, str]:
    bounds = {}
    if after:
        bounds["after"] = after
    if until is not None:
        bounds["newest"] = clock.inverted_key(until)
    if since is not None:
        bounds["oldest"] = clock.inverted_key(since) + "~"
    return bounds


def _day_end_key(day: str) -> str:
    """The sort key just before the first of a day (the newest moment of that day sorts first)."""
    start = clock.from_time_key(day + "T000000.000000Z")
    return clock.inverted_key(start + timedelta(days=1))


def _day_of(delivery: Delivery, fallback: str | None) -> str | None:
    return clock.day_bucket(delivery.log.at) if delivery.log is not None else fallback


def _receipt_delivery(row: Mapping[str, Any], sub_id: str) -> Delivery:
    at, _, code = _receipt_firsts(row, sub_id)
    return Delivery(
        event_id=row["eventId"],
        event_type=row["eventType"],
        status=DeliveryStatus.SUCCEEDED,
        attempts=1,
        last_attempt_at=at,
        log=LogKey(row["logPk"], row["logRk"]) if row.get("logPk") and row.get("logRk") else None,
        last_status_code=code,
    )


# Names of their own for annotations inside the class, where `list` is the method.
Deliveries = list[Delivery]
Page = tuple[Deliveries, str | None]


class DeliveryLog:
    def __init__(self, storage: Storage, retention_days: float) -> None:
        self._table: TableClient = storage.table(DELIVERIES_TABLE)
        self._retention = retention_days

    def write(
        self, sub_id: str, event_id: str, event_type: str, log: tuple[str, str], attempt: Attempt
    ) -> DeliveryStatus | None:
        """Record where a delivery stands, appending `attempt.record` to the attempts its row
        keeps (read, then written on that read's ETag, so a concurrent write is not lost: an
        attempt is added, never rewritten). Returns the status the row had before, or None."""
        key = _row_key(log, event_id)
        for _ in range(8):
            try:
                current: TableEntity | None = self._table.get_entity(sub_id, key)
            except ResourceNotFoundError:
                current = None
            entity = self._entity(sub_id, key, event_id, event_type, log, attempt, current)
            try:
                if current is None:
                    self._table.create_entity(entity)
                else:
                    self._table.update_entity(
                        entity,
                        mode=UpdateMode.REPLACE,
                        etag=current.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another write to this delivery came first: add to what it wrote
            return DeliveryStatus(current["status"]) if current is not None else None
        raise RuntimeError(f"the delivery log row of event {event_id} kept changing under this write")

    @staticmethod
    def _entity(
        sub_id: str,
        key: str,
        event_id: str,
        event_type: str,
        log: tuple[str, str],
        attempt: Attempt,
        current: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "PartitionKey": sub_id,
            "RowKey": key,
            "eventId": event_id,
            "eventType": event_type,
            "status": attempt.status,
            "attempts": attempt.attempts,
            "lastAttemptAt": clock.rfc3339(attempt.attempted_at),
            "logPk": log[0],
            "logRk": log[1],
        }
        if attempt.status_code is not None:
            entity["lastStatusCode"] = attempt.status_code
        if attempt.error:
            entity["lastError"] = attempt.error[:1024]
        if attempt.next_attempt_at is not None:
            entity["nextAttemptAt"] = clock.rfc3339(attempt.next_attempt_at)
        history = _kept(current) if current is not None else []
        recorded = int((current or {}).get("recorded") or 0)
        if attempt.record is not None:
            history.append((recorded, attempt.record))
            recorded += 1
        for seq, record in _bounded(history):
            entity[f"{_ATTEMPT_COLUMN}{seq:05d}"] = record.dump()
        entity["recorded"] = recorded
        # The list's count is every attempt made, a replay's and a resend's included.
        entity["attempts"] = max(attempt.attempts, recorded)
        return entity

    def receipt(
        self, event_id: str, event_type: str, log: tuple[str, str], at: datetime, first_tries: list[FirstTry]
    ) -> None:
        """One row for a batch's first-attempt successes (a batch holds at most 100 targets),
        with each attempt's own start and duration: a slow neighbour in the batch does not make
        a fast receiver's delivery look late."""
        if not first_tries:
            return
        base = min((f.at or at) for f in first_tries)
        self._table.create_entity(
            {
                # Filed under the day the event was logged, in the order a listing reads (newest
                # first), so a listing merges receipts and rows as it reads them.
                "PartitionKey": RECEIPT_PREFIX + clock.day_bucket(LogKey(*log).at),
                "RowKey": f"{_row_key(log, event_id)}_{uuid.uuid4().hex[:8]}",
                "eventId": event_id,
                "eventType": event_type,
                "status": DeliveryStatus.SUCCEEDED,
                "lastAttemptAt": clock.rfc3339(at),
                "logPk": log[0],
                "logRk": log[1],
                "subs": ",".join(f.sub for f in first_tries),
                "codes": ",".join(str(f.status_code) for f in first_tries),
                "t0": clock.rfc3339_precise(base),
                "ats": ",".join(str(int(((f.at or at) - base).total_seconds() * 1000)) for f in first_tries),
                "durs": ",".join(str(f.duration_ms) for f in first_tries),
            }
        )

    def list(
        self,
        sub_id: str,
        *,
        status: str | None,
        limit: int,
        token: str | None,
        event_type: str | None = None,
        event_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page:
        """One page of a subscription's deliveries, newest first by when each event was logged:
        its own rows and the receipts naming it, merged by one sort key (a row's key; a receipt's
        without its suffix), both read in that order from where the last page ended."""
        state = _decode(token)
        after: str | None = state["after"]
        flt, params = "PartitionKey eq @pk", {"pk": sub_id, **_key_range(after, since, until)}
        flt += "".join(f" and RowKey {op} @{name}" for name, op in _RANGE_OPS.items() if name in params)
        for name, value in (("status", status), ("eventType", event_type), ("eventId", event_id)):
            if value is not None:
                flt += f" and {name} eq @{name}"
                params[name] = value
        rows = [
            Delivery.from_row(r)
            for r in islice(self._table.query_entities(flt, parameters=params, results_per_page=limit + 1), limit + 1)
        ]
        found: dict[str, Delivery] = {}
        for row in rows:
            found.setdefault(row.event_id, row)
        horizon: tuple[str, str] | None = None
        if status in (None, DeliveryStatus.SUCCEEDED):
            receipts, horizon = self._receipts(
                sub_id, state, limit + 1, event_type=event_type, event_id=event_id, since=since, until=until
            )
            for receipt in receipts:
                found.setdefault(receipt.event_id, receipt)
        ordered = sorted(found.values(), key=_sort_key)
        if horizon is not None:  # the receipts were read up to here: nothing past it is certain yet
            ordered = [d for d in ordered if _sort_key(d) <= horizon[0]]
        page = ordered[:limit]
        if len(ordered) > limit:
            last = page[-1]
            return page, _encode({"after": _sort_key(last), "day": _day_of(last, state["day"])})
        if horizon is not None:
            return page, _encode({"after": horizon[0], "day": horizon[1]})
        return page, None

    def _receipts(
        self,
        sub_id: str,
        state: dict[str, Any],
        wanted: int,
        *,
        event_type: str | None,
        event_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> tuple[Deliveries, tuple[str, str] | None]:
        """Up to `wanted` receipts naming the subscription that sort after `state["after"]`, in
        order: partitions by the day the event was logged, newest first, each in row key order
        (newest first too). When the scan budget runs out first, also where the scan stopped
        (sort key and day): every receipt up to there was read."""
        now = clock.utcnow()
        oldest = clock.day_bucket(now - timedelta(days=self._retention + 1))
        if since is not None:
            oldest = max(oldest, clock.day_bucket(since))
        after: str | None = state["after"]
        day = clock.day_bucket(now)
        if state["day"]:
            day = min(day, state["day"])
        if until is not None:
            day = min(day, clock.day_bucket(until))
        # A receipt's key is its sort key and a suffix: past the last one given means past every
        # receipt of that sort key.
        ranges = _key_range(after + "_~" if after else None, since, until)
        flt = "PartitionKey eq @pk" + "".join(
            f" and RowKey {op} @{name}" for name, op in _RANGE_OPS.items() if name in ranges
        )
        params: dict[str, Any] = dict(ranges)
        for name, value in (("eventType", event_type), ("eventId", event_id)):
            if value is not None:
                flt += f" and {name} eq @{name}"
                params[name] = value
        found: list[Delivery] = []
        scanned = queries = 0
        while day >= oldest:
            queries += 1
            for row in self._table.query_entities(
                flt, parameters={**params, "pk": RECEIPT_PREFIX + day}, results_per_page=1000, select=_RECEIPT_COLUMNS
            ):
                scanned += 1
                if sub_id in str(row["subs"]).split(","):
                    found.append(_receipt_delivery(row, sub_id))
                    if len(found) >= wanted:
                        return found, None
                if scanned >= SCAN_BUDGET:
                    return found, (str(row["RowKey"]).rsplit("_", 1)[0], day)
            day = clock.day_bucket(clock.from_time_key(day + "T000000.000000Z") - timedelta(days=1))
            if queries >= QUERY_BUDGET and day >= oldest:
                # Every receipt of the days read was read: the next page starts at the next day.
                return found, (_day_end_key(day), day)
        return found, None

    def record(self, sub_id: str, event_id: str) -> Record | None:
        """Everything about the delivery of one event to one subscription, or None: its row (if
        it needed one) and its first-try receipt (if it had one), attempts oldest first."""
        rows = list(
            islice(
                self._table.query_entities(
                    "PartitionKey eq @pk and eventId eq @id", parameters={"pk": sub_id, "id": event_id}
                ),
                1,
            )
        )
        row = rows[0] if rows else None
        delivery = Delivery.from_row(row) if row is not None else None
        now = clock.utcnow()
        queries: list[tuple[str, dict[str, Any]]] = []
        if delivery is not None and delivery.log is not None:
            # Its receipt, if any, is in the day it was logged, under its own sort key.
            key = _row_key((delivery.log.partition, delivery.log.row), event_id)
            queries.append(
                (
                    "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi",
                    {"pk": RECEIPT_PREFIX + clock.day_bucket(delivery.log.at), "lo": key + "_", "hi": key + "_~"},
                )
            )
        else:  # one query per day of the retention window, newest first
            for n in range(int(self._retention) + 2):
                day = clock.day_bucket(now - timedelta(days=n))
                queries.append(("PartitionKey eq @pk and eventId eq @id", {"pk": RECEIPT_PREFIX + day, "id": event_id}))
        receipt: Delivery | None = None
        first_try: AttemptRecord | None = None
        for flt, params in queries:
            for found in self._table.query_entities(flt, parameters=params, select=_RECEIPT_COLUMNS):
                if sub_id in str(found["subs"]).split(","):
                    receipt = _receipt_delivery(found, sub_id)
                    at, duration, code = _receipt_firsts(found, sub_id)
                    if at is not None:
                        first_try = AttemptRecord(at=at, duration_ms=duration, status_code=code, kind="delivery")
                    break
            if receipt is not None:
                break
        if delivery is None and receipt is None:
            return None
        attempts = [record for _, record in _kept(row)] if row is not None else []
        if first_try is not None:
            attempts.append(first_try)
        attempts.sort(key=lambda a: a.at)
        chosen = delivery or receipt
        assert chosen is not None
        if delivery is not None and receipt is not None and delivery.log is None:
            chosen = replace(delivery, log=receipt.log)
        return Record(chosen, attempts)

    def find(self, sub_id: str, event_id: str) -> Delivery | None:
        """The subscription's delivery of one event (its own row, else a receipt naming it in the
        retention window), with where the event is logged; None when there is none."""
        for row in self._table.query_entities(
            "PartitionKey eq @pk and eventId eq @id", parameters={"pk": sub_id, "id": event_id}
        ):
            return Delivery.from_row(row)
        day = clock.utcnow()
        oldest = day - timedelta(days=self._retention + 1)
        while day >= oldest:
            for row in self._table.query_entities(
                "PartitionKey eq @pk and eventId eq @id",
                parameters={"pk": RECEIPT_PREFIX + clock.day_bucket(day), "id": event_id},
            ):
                subs = row["subs"].split(",")
                if sub_id in subs:
                    return Delivery(
                        event_id=row["eventId"],
                        event_type=row["eventType"],
                        status=DeliveryStatus.SUCCEEDED,
                        attempts=1,
                        last_attempt_at=_time(row["lastAttemptAt"]),
                        log=LogKey(row["logPk"], row["logRk"]),
                        last_status_code=int(row["codes"].split(",")[subs.index(sub_id)]),
                    )
            day -= timedelta(days=1)
        return None

    def failed(self, sub_id: str, since: datetime, until: datetime) -> Iterator[Delivery]:
        """The subscription's failed deliveries of events logged between two moments."""
        rows = self._table.query_entities(
            "PartitionKey eq @pk and status eq @status",
            parameters={"pk": sub_id, "status": DeliveryStatus.FAILED},
            results_per_page=1000,
        )
        for row in rows:
            delivery = Delivery.from_row(row)
            if delivery.log is not None and since <= delivery.log.at <= until:
                yield delivery

    def sweep(self, cutoff: datetime) -> int:
        """Forget every finished row (deliveries, receipts, counters) last attempted before the
        cutoff; returns how many. A pending row stays: its retry is still on its way."""
        return delete_rows(
            self._table,
            self._table.query_entities(
                "lastAttemptAt lt @cut and status ne @pending",
                parameters={"cut": clock.rfc3339(cutoff), "pending": DeliveryStatus.PENDING},
                select=["PartitionKey", "RowKey"],
            ),
        )
