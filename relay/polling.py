"""The polling trigger: read the event log forward from a state that lives only in the URL.

Event log keys are taken just before their row is written, so a row can become visible a
moment after a later key. Reading only up to `MARGIN` before now, and never moving the state
past that, keeps such a row from being skipped: every event appears in exactly one 200 of a
chain of states.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import clock
from .errors import invalid
from .events import load_data, row_to_record
from .matching import NAME_RULE, is_pattern, type_matches
from .signing import cloudevent
from .storage import EVENTS_TABLE, Storage

MARGIN = timedelta(seconds=5)
PAGE = 100
IDLE_RETRY_AFTER = 15


@dataclass(frozen=True)
class PollState:
    key: str  # everything at or below this log key has been returned

    def encode(self) -> str:
        return base64.urlsafe_b64encode(json.dumps({"k": self.key}).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "PollState":
        try:
            doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            key = doc["k"]
            clock.from_time_key(key.split("_", 1)[0])
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise invalid("triggerState", "is not a state this API issued") from None
        return cls(key)

    @classmethod
    def starting(cls, now: datetime) -> "PollState":
        return cls(clock.time_key(now - MARGIN))


def check_pattern(pattern: str) -> str:
    if not is_pattern(pattern):
        raise invalid("eventType", f"must be '*', a type name ({NAME_RULE}) or a prefix ending in '.*'")
    return pattern


@dataclass
class PollResult:
    events: list[dict[str, Any]]
    state: PollState
    more: bool


def poll(storage: Storage, pattern: str, state: PollState, retention_days: float,
         now: datetime | None = None) -> PollResult:
    now = now or clock.utcnow()
    upper = clock.time_key(now - MARGIN)
    table = storage.table(EVENTS_TABLE)
    # A state older than retention (or forged) starts at the oldest day still kept, not year 1.
    start_day = max(clock.from_time_key(state.key.split("_", 1)[0]), now - timedelta(days=retention_days + 1))
    found: list[tuple[str, dict[str, Any]]] = []
    day = start_day.replace(hour=0, minute=0, second=0, microsecond=0)
    while day <= now and len(found) <= PAGE:
        rows = table.query_entities(
            "PartitionKey eq @pk and RowKey gt @after and RowKey lt @upper",
            parameters={"pk": f"e:{clock.day_bucket(day)}", "after": state.key, "upper": upper},
            results_per_page=1000)
        for row in rows:
            if type_matches([pattern], row["type"]):
                found.append((row["RowKey"], row))
                if len(found) > PAGE:
                    break
        day += timedelta(days=1)
    more = len(found) > PAGE
    found = found[:PAGE]
    if more:
        next_state = PollState(found[-1][0])
    elif upper > state.key:
        next_state = PollState(upper)
    else:
        next_state = state
    return PollResult([as_cloudevent(storage, row) for _, row in found], next_state, more)


def as_cloudevent(storage: Storage, row: dict[str, Any]) -> dict[str, Any]:
    record = row_to_record(row)
    return json.loads(cloudevent(event_id=record.id, event_type=record.type, source=record.source,
                                 time=record.time, subject=record.subject, data=load_data(storage, record)))
