"""The polling trigger: read the event log forward from a state that lives only in the URL.

Event log keys are taken just before their row is written, so a row can become visible a
moment after a later key. Reading only up to `MARGIN` before now, and never moving the state
past that, keeps such a row from being skipped: every event appears in exactly one 200 of a
chain of states.

A chain starts exactly at its first call: the state carries that instant, and an event accepted
before it is never part of the chain, even when it reaches the log (fan-out is asynchronous)
after the call. Each poll reads a bounded slice: the pattern's own index rows (so only matching
events), at most `PAGE + 1` of them, from at most `SLICE_DAYS` day partitions. A slice that
ends before now leaves the state at its end and asks to be called again at once.
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
from .events import load_data, read_log, row_to_record
from .matching import NAME_RULE, is_pattern
from .signing import cloudevent
from .storage import Storage
from .tokens import Purpose, TokenCodec, get_codec

MARGIN = timedelta(seconds=5)
PAGE = 100
IDLE_RETRY_AFTER = 15
# Day partitions one poll may read. A live chain reads one (two across midnight); a chain left
# idle for days, or a forged old state, catches up a few days per call instead of in one call.
SLICE_DAYS = 3
# Rows one poll may read (every row read matches the pattern; some may predate the chain).
READ_BUDGET = 4 * PAGE


# Unsigned states of the first release: how far back their position is trusted, and their size.
LEGACY_WINDOW = timedelta(hours=1)
LEGACY_MAX_CHARS = 200


@dataclass(frozen=True)
class PollState:
    key: str  # everything at or below this log key has been returned
    start: str | None = None  # the chain's first call (time key): events accepted before it are not in it

    def encode(self, codec: TokenCodec | None = None) -> str:
        doc = {"k": self.key, **({"s": self.start} if self.start else {})}
        return (codec or get_codec()).seal(Purpose.TRIGGER_STATE, doc)

    @classmethod
    def decode(cls, text: str, codec: TokenCodec | None = None, now: datetime | None = None) -> "PollState":
        if "." not in text:
            return cls._first_release(text, now or clock.utcnow())
        # The codec checks the MAC before anything is decoded, so a forged state never gets here.
        doc = (codec or get_codec()).open(Purpose.TRIGGER_STATE, text, "triggerState")
        try:
            key, start = doc["k"], doc.get("s")
            clock.from_time_key(key.split("_", 1)[0])
            if start is not None:
                clock.from_time_key(start)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise invalid("triggerState", "is not a state this API issued") from None
        return cls(key, start)

    @classmethod
    def _first_release(cls, text: str, now: datetime) -> "PollState":
        """A state the first release (0.1.0) issued: unsigned base64url JSON `{"k": key}` (a signed
        token always holds a `.`, which base64url never does). Flows saved then hold such states,
        and must keep polling after an upgrade. Unsigned, its position is trusted only within
        LEGACY_WINDOW: an older (or forged) one starts that far back, so it can never reach into
        history; a flow that polled within the window loses nothing."""
        try:
            if len(text) > LEGACY_MAX_CHARS:
                raise ValueError("too long")
            doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            if set(doc) != {"k"}:  # exactly what 0.1.0 wrote: a signed state stripped of its MAC is not
                raise ValueError("not a first-release state")
            key = doc["k"]
            clock.from_time_key(key.split("_", 1)[0])
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise invalid("triggerState", "is not a state this API issued") from None
        return cls(max(key, clock.time_key(now - LEGACY_WINDOW)))

    @classmethod
    def starting(cls, now: datetime) -> "PollState":
        # The key starts MARGIN early (an event accepted after `now` on an instance whose clock
        # is a little behind still has a key after it); `start` decides what belongs to the chain.
        return cls(clock.time_key(now - MARGIN), clock.time_key(now))

    def admits(self, row: dict[str, Any]) -> bool:
        """Whether an event was accepted after this chain started (old states admit everything)."""
        if self.start is None:
            return True
        try:
            return clock.time_key(clock.parse_rfc3339(row["acceptedAt"])) > self.start
        except (KeyError, ValueError):
            return True


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
    if upper <= state.key:
        return PollResult([], state, False)
    # A state older than retention (or forged) starts at the oldest day still kept, not year 1.
    start = max(clock.from_time_key(state.key.split("_", 1)[0]), now - timedelta(days=retention_days + 1))
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    found: list[tuple[str, dict[str, Any]]] = []
    read = 0
    last = read_to = state.key  # the last key read; the end of the slice read so far
    full = False
    for _ in range(SLICE_DAYS):
        next_day = day + timedelta(days=1)
        before = min(upper, clock.time_key(next_day))
        for key, row in read_log(storage, pattern, day, state.key, before, page=PAGE + 1):
            read, last = read + 1, key
            if state.admits(row):
                found.append((key, row))
            # Rows the chain does not admit (accepted before its start) count against the
            # slice too, so a backlog of them is read a bounded part at a time.
            if len(found) > PAGE or read >= READ_BUDGET:
                full = True
                break
        if full:
            break
        read_to = before
        if before == upper:
            break
        day = next_day
    if len(found) > PAGE:
        found = found[:PAGE]
        next_state, more = PollState(found[-1][0], state.start), True
    elif full:
        next_state, more = PollState(last, state.start), True
    else:
        next_state, more = PollState(max(read_to, state.key), state.start), read_to < upper
    return PollResult([as_cloudevent(storage, row) for _, row in found], next_state, more)


def as_cloudevent(storage: Storage, row: dict[str, Any]) -> dict[str, Any]:
    record = row_to_record(row)
    return json.loads(cloudevent(event_id=record.id, event_type=record.type, source=record.source,
                                 time=record.time, subject=record.subject, data=load_data(storage, record)))
