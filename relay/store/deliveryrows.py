"""The delivery log's records (relay.store.deliverylog keeps them): a delivery as the API shows it,
the attempts its row keeps (the first and the last KEEP_LAST, each with up to 4 KiB of the
receiver's answer), and what a first-try success leaves in a batch's receipt."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay.core import clock
from relay.core.statuses import DeliveryStatus
from relay.store.eventlog import LogKey


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


# Attempts a delivery's row keeps: its first (often the real cause) and the last KEEP_LAST.
KEEP_LAST = 20
# Bytes of a receiver's answer kept with an attempt (CONTRACT section 6: at most 4 KiB).
RESPONSE_BYTES = 4096
ATTEMPT_KINDS = ("delivery", "retry", "replay", "resend", "test")
_RECEIPT_COLUMNS = [
    "RowKey",
    "eventId",
    "eventType",
    "subs",
    "codes",
    "lastAttemptAt",
    "logPk",
    "logRk",
    "t0",
    "ats",
    "durs",
]
_ATTEMPT_COLUMN = "x"  # `x{seq:05d}`: one column per kept attempt, its JSON


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt as the delivery record shows it: when it started, how long it took, what
    the receiver answered (masked by the caller) or why there was no answer, and what made it."""

    at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    response: tuple[str, str] | None = None  # (content type, body), at most RESPONSE_BYTES
    kind: str = "delivery"

    def dump(self) -> str:
        return json.dumps(
            [
                clock.rfc3339_precise(self.at),
                self.duration_ms,
                self.status_code,
                self.error,
                list(self.response) if self.response else None,
                self.kind,
            ],
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def load(cls, text: str) -> AttemptRecord:
        at, duration, code, error, response, kind = json.loads(text)
        return cls(
            at=clock.parse_rfc3339(at),
            duration_ms=int(duration),
            status_code=code,
            error=error,
            response=(response[0], response[1]) if response else None,
            kind=kind,
        )

    def view(self) -> dict[str, Any]:
        return {
            "at": clock.rfc3339(self.at),
            "durationMs": self.duration_ms,
            "statusCode": self.status_code,
            "error": self.error,
            "response": {"contentType": self.response[0], "body": self.response[1]} if self.response else None,
            "kind": self.kind,
        }


@dataclass
class Attempt:
    status: DeliveryStatus
    attempts: int
    attempted_at: datetime
    status_code: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    # The attempt this write records, appended to the row's attempts; None for a write that made
    # no attempt (a hand-back, a give-up).
    record: AttemptRecord | None = None


@dataclass(frozen=True)
class FirstTry:
    """A delivery that succeeded at its first attempt, for the batch's receipt."""

    sub: str
    status_code: int
    at: datetime | None = None  # when this attempt started (its own time, not the batch's)
    duration_ms: int = 0


@dataclass(frozen=True)
class Record:
    """Everything the log holds about one delivery: its row and its receipt, attempts oldest first."""

    delivery: Delivery
    attempts: list[AttemptRecord]


def _kept(row: Mapping[str, Any]) -> list[tuple[int, AttemptRecord]]:
    """The attempts a delivery row keeps, by sequence number."""
    found = []
    for name, value in row.items():
        if name.startswith(_ATTEMPT_COLUMN) and name[1:].isdigit() and isinstance(value, str):
            try:
                found.append((int(name[1:]), AttemptRecord.load(value)))
            except (ValueError, TypeError, KeyError):
                continue  # a column this version cannot read is not worth failing a read for
    return sorted(found, key=lambda item: item[0])


def _bounded(history: list[tuple[int, AttemptRecord]]) -> list[tuple[int, AttemptRecord]]:
    """The first attempt and the last KEEP_LAST: a delivery retried for days stays one row."""
    if len(history) <= KEEP_LAST + 1:
        return history
    return [history[0], *history[-KEEP_LAST:]]
