"""The delivery log: what happened to each delivery, listed per subscription.

Two kinds of row, because a row per successful delivery was the relay's dominant cost (about
one storage transaction and half the CPU of every delivery, measured by `python -m relay_dev.bench`):

- a **row per (subscription, event)**, in the subscription's partition, for every delivery that
  needed more than one attempt, failed, or was replayed: written after each of its attempts;
- a **receipt** per delivery batch for the deliveries that succeeded at the first attempt: one
  row naming up to a hundred subscriptions, in a partition per day (`r:{day}`).

Failures and retries, the part an operator looks for, stay one cheap partition query away.
Listing successes also reads the receipts of the retention window, a bounded slice per page.
Nothing is written before an attempt: the queue message, not a row, keeps unfinished work.

| partition  | row key                          | what                                             |
|------------|----------------------------------|--------------------------------------------------|
| `{sub id}` | `{inverted time}_{event id}`     | one subscription's delivery of one event         |
| `r:{day}`  | `{time}_{event id}_{random}`     | a receipt: a batch's first-try successes         |
| `c:{hour}` | `m{MM}_{process}`, `h_{process}` | a process's counters for a minute or the hour    |
|            |                                  | (`relay.pipeline.stats`, for the console's overview)      |

Counter rows carry `lastAttemptAt` and a `status`, so `sweep` forgets them with the rest. This
module alone builds and reads these keys and columns; callers get `Delivery` and `CounterRow`
records.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from azure.core.paging import ItemPaged, PageIterator
from azure.data.tables import TableClient, TableEntity, UpdateMode

from relay.core import clock
from relay.core.errors import invalid
from relay.core.statuses import DeliveryStatus
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


def _time(text: str | None) -> datetime | None:
    return clock.parse_rfc3339(text) if text else None


@dataclass(frozen=True)
class Delivery:
    """What happened to the delivery of one event to one subscription."""

    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_attempt_at: datetime | None
    log: LogKey | None = None  # where the event is logged (not read for a listing)
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Delivery:
        code = row.get("lastStatusCode")
        return cls(
            event_id=row["eventId"],
            event_type=row["eventType"],
            status=DeliveryStatus(row["status"]),
            attempts=int(row["attempts"]),
            last_attempt_at=_time(row.get("lastAttemptAt")),
            log=LogKey(row["logPk"], row["logRk"]) if row.get("logPk") and row.get("logRk") else None,
            last_status_code=int(code) if code is not None else None,
            last_error=row.get("lastError"),
            next_attempt_at=_time(row.get("nextAttemptAt")),
        )

    def view(self) -> dict[str, Any]:
        """The delivery as the API lists it."""
        view: dict[str, Any] = {
            "eventId": self.event_id,
            "eventType": self.event_type,
            "status": self.status,
            "attempts": self.attempts,
        }
        if self.last_status_code is not None:
            view["lastStatusCode"] = self.last_status_code
        if self.last_error is not None:
            view["lastError"] = self.last_error
        if self.last_attempt_at is not None:
            view["lastAttemptAt"] = clock.rfc3339(self.last_attempt_at)
        if self.next_attempt_at is not None:
            view["nextAttemptAt"] = clock.rfc3339(self.next_attempt_at)
        return view


@dataclass
class Attempt:
    status: DeliveryStatus
    attempts: int
    attempted_at: datetime
    status_code: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class FirstTry:
    """A delivery that succeeded at its first attempt, for the batch's receipt."""

    sub: str
    status_code: int


def _encode(doc: dict[str, Any]) -> str:
    return get_codec().seal(Purpose.DELIVERIES_PAGE, doc)


def _decode(text: str | None) -> dict[str, Any]:
    if not text:
        return {"phase": "rows"}
    # The codec checks the MAC before anything is decoded; the shape is checked still, as a
    # token of an older shape (signed with the same key) would be.
    doc = get_codec().open(Purpose.DELIVERIES_PAGE, text, "continuationToken")
    try:
        phase = doc["phase"]
        ok = (
            phase == "rows"
            and _table_token(doc.get("token"))
            or phase == "receipts"
            and isinstance(doc.get("day"), str)
            and len(doc["day"]) == 8
            and doc["day"].isdigit()
            and isinstance(doc.get("skip", 0), int)
            and _table_token(doc.get("token"))
        )
        if phase == "receipts":
            clock.from_time_key(doc["day"] + "T000000.000000Z")
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise invalid("continuationToken", "is not a token this API issued")
    return doc


def _table_token(token: Any) -> bool:
    return token is None or (
        isinstance(token, dict)
        and set(token) <= {"PartitionKey", "RowKey"}
        and all(isinstance(v, str) for v in token.values())
    )


def _pages(items: ItemPaged[TableEntity], token: Any) -> PageIterator[TableEntity]:
    """A query's pages from a continuation token. The tables SDK's pages are a PageIterator
    whose token is a dict of next keys, which azure-core's types call `str`."""
    return cast("PageIterator[TableEntity]", items.by_page(continuation_token=token))


# Names of their own for annotations inside the class, where `list` is the method.
Deliveries = list[Delivery]
Page = tuple[Deliveries, str | None]


class DeliveryLog:
    def __init__(self, storage: Storage, retention_days: float) -> None:
        self._table: TableClient = storage.table(DELIVERIES_TABLE)
        self._retention = retention_days

    def write(self, sub_id: str, event_id: str, event_type: str, log: tuple[str, str], attempt: Attempt) -> None:
        entity: dict[str, Any] = {
            "PartitionKey": sub_id,
            "RowKey": _row_key(log, event_id),
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
        self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def receipt(
        self, event_id: str, event_type: str, log: tuple[str, str], at: datetime, first_tries: list[FirstTry]
    ) -> None:
        """One row for a batch's first-attempt successes (a batch holds at most 100 targets)."""
        if not first_tries:
            return
        self._table.create_entity(
            {
                "PartitionKey": RECEIPT_PREFIX + clock.day_bucket(at),
                "RowKey": f"{clock.time_key(at)}_{event_id}_{uuid.uuid4().hex[:8]}",
                "eventId": event_id,
                "eventType": event_type,
                "status": DeliveryStatus.SUCCEEDED,
                "lastAttemptAt": clock.rfc3339(at),
                "logPk": log[0],
                "logRk": log[1],
                "subs": ",".join(f.sub for f in first_tries),
                "codes": ",".join(str(f.status_code) for f in first_tries),
            }
        )

    def list(self, sub_id: str, *, status: str | None, limit: int, token: str | None) -> Page:
        """One page: the subscription's own rows first, then (for successes) its receipts."""
        state = _decode(token)
        if state["phase"] == "rows":
            flt, params = "PartitionKey eq @pk", {"pk": sub_id}
            if status:
                flt += " and status eq @status"
                params["status"] = status
            pages = _pages(
                self._table.query_entities(flt, parameters=params, results_per_page=limit), state.get("token")
            )
            rows = [Delivery.from_row(r) for r in next(pages, [])]
            if pages.continuation_token:
                return rows, _encode({"phase": "rows", "token": pages.continuation_token})
            if status not in (None, DeliveryStatus.SUCCEEDED):
                return rows, None
            state = {"phase": "receipts", "day": clock.day_bucket(clock.utcnow()), "token": None, "skip": 0}
            if len(rows) >= limit:
                return rows, _encode(state)
            found, next_state = self._receipts(sub_id, state, limit - len(rows))
            return rows + found, _encode(next_state) if next_state else None
        found, next_state = self._receipts(sub_id, state, limit)
        return found, _encode(next_state) if next_state else None

    def _receipts(self, sub_id: str, state: dict[str, Any], wanted: int) -> tuple[Deliveries, dict[str, Any] | None]:
        """Receipts naming the subscription, newest day first, resuming where `state` says."""
        oldest = clock.day_bucket(clock.utcnow() - timedelta(days=self._retention + 1))
        day, token, skip = (
            min(state["day"], clock.day_bucket(clock.utcnow())),
            state.get("token"),
            max(int(state.get("skip") or 0), 0),
        )
        found: list[Delivery] = []
        scanned = 0
        queries = 0
        while day >= oldest:
            queries += 1
            pages = _pages(
                self._table.query_entities(
                    "PartitionKey eq @pk",
                    parameters={"pk": RECEIPT_PREFIX + day},
                    results_per_page=1000,
                    select=["eventId", "eventType", "subs", "codes", "lastAttemptAt"],
                ),
                token,
            )
            page = list(next(pages, []))
            for index, row in enumerate(page[skip:], start=skip):
                scanned += 1
                subs = row["subs"].split(",")
                if sub_id in subs:
                    found.append(
                        Delivery(
                            event_id=row["eventId"],
                            event_type=row["eventType"],
                            status=DeliveryStatus.SUCCEEDED,
                            attempts=1,
                            last_attempt_at=_time(row["lastAttemptAt"]),
                            last_status_code=int(row["codes"].split(",")[subs.index(sub_id)]),
                        )
                    )
                    if len(found) >= wanted:
                        return found, {"phase": "receipts", "day": day, "token": token, "skip": index + 1}
            skip = 0
            if pages.continuation_token:
                token = pages.continuation_token
            else:
                token = None
                day = clock.day_bucket(clock.from_time_key(day + "T000000.000000Z") - timedelta(days=1))
            if scanned >= SCAN_BUDGET or queries >= QUERY_BUDGET:
                return found, ({"phase": "receipts", "day": day, "token": token, "skip": 0} if day >= oldest else None)
        return found, None

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


# ---- delivery counters (relay.pipeline.stats) --------------------------------------------------------

COUNTER_PREFIX = "c:"
_HOUR_FORMAT = "%Y%m%d%H"


@dataclass(frozen=True)
class CounterRow:
    """One process's running totals of attempt outcomes for a minute or a whole hour."""

    hour: datetime  # the hour counted (UTC, on the hour)
    minute: int | None  # the minute of that hour, or None for the hour's row
    process: str
    totals: Mapping[str, int]  # outcome -> attempts
    untracked: int  # attempts of subscriptions beyond what a row keeps per subscription
    subs: Mapping[str, list[Any]]  # subscription id -> its figures (relay.pipeline.stats.SubCounts)

    @property
    def start(self) -> datetime:
        return self.hour if self.minute is None else self.hour.replace(minute=self.minute)


class Counters:
    """The counter rows of the delivery log table: a partition per hour, a row per process and
    minute or hour, written whole (so a repeated write counts nothing twice)."""

    def __init__(self, storage: Storage) -> None:
        self._table: TableClient = storage.table(DELIVERIES_TABLE)

    def write(self, rows: Iterable[CounterRow], at: datetime) -> None:
        """Replace the given rows; one table transaction per hour."""
        batches: dict[str, list[Any]] = {}
        for row in rows:
            part = "h" if row.minute is None else f"m{row.minute:02d}"
            partition = COUNTER_PREFIX + row.hour.strftime(_HOUR_FORMAT)
            entity = {
                "PartitionKey": partition,
                "RowKey": f"{part}_{row.process}",
                **row.totals,
                "untracked": row.untracked,
                "subs": json.dumps(row.subs, separators=(",", ":")),
                # The retention sweep removes delivery log rows by these two.
                "lastAttemptAt": clock.rfc3339(at),
                "status": "counted",
            }
            batches.setdefault(partition, []).append(("upsert", entity, {"mode": UpdateMode.REPLACE}))
        for ops in batches.values():
            self._table.submit_transaction(ops)  # one partition, usually two rows: one transaction

    def read(self, unit: str, first: datetime, last: datetime, outcomes: Iterable[str]) -> Iterator[CounterRow]:
        """Every process's rows of a unit (`minute` or `hour`) whose hour is that of `first`,
        of `last`, or (for hours) between them."""
        hours = {"a": COUNTER_PREFIX + first.strftime(_HOUR_FORMAT), "b": COUNTER_PREFIX + last.strftime(_HOUR_FORMAT)}
        if unit == "minute":
            flt = "( PartitionKey eq @a or PartitionKey eq @b ) and RowKey ge 'm' and RowKey lt 'n'"
        else:
            flt = "PartitionKey ge @a and PartitionKey le @b and RowKey ge 'h_' and RowKey lt 'h`'"
        names = list(outcomes)
        for row in self._table.query_entities(flt, parameters=hours, results_per_page=1000):
            hour = datetime.strptime(row["PartitionKey"][len(COUNTER_PREFIX) :], _HOUR_FORMAT)
            part, process = row["RowKey"].split("_", 1)
            yield CounterRow(
                hour=hour.replace(tzinfo=UTC),
                minute=None if part == "h" else int(part[1:3]),
                process=process,
                totals={name: int(row.get(name) or 0) for name in names},
                untracked=int(row.get("untracked") or 0),
                subs=json.loads(row.get("subs") or "{}"),
            )
