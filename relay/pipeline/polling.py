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

A state the relay cannot verify (garbage, tampered, signed with a key it no longer has, or an
unsigned state of the first release) is not an error the engine could recover from: a 400
without a `Location` would be retried with the same URL at every recurrence, for ever. Such a
state starts a fresh chain from now instead (CONTRACT section 6), as a first call would; it
never reads anything from before that call, so a forged state reaches no history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from relay.core import clock
from relay.core.errors import BadRequest, invalid
from relay.core.matching import NAME_RULE, is_pattern
from relay.outbound.signing import cloudevent
from relay.store.eventlog import EventLog, LoggedEvent, position, position_time
from relay.store.events import load_data
from relay.store.storage import Storage
from relay.store.tokens import Purpose, TokenCodec, get_codec

MARGIN = timedelta(seconds=5)
PAGE = 100
IDLE_RETRY_AFTER = 15
# Day partitions one poll may read. A live chain reads one (two across midnight); a chain left
# idle for days, or a forged old state, catches up a few days per call instead of in one call.
SLICE_DAYS = 3
# Rows one poll may read (every row read matches the pattern; some may predate the chain).
READ_BUDGET = 4 * PAGE


@dataclass(frozen=True)
class PollState:
    key: str  # everything at or below this log position has been returned
    # The chain's first call: events accepted before it are not in it. A time key in the token,
    # parsed once where the token is opened.
    start: datetime | None = None

    def encode(self, codec: TokenCodec | None = None) -> str:
        doc = {"k": self.key, **({"s": clock.time_key(self.start)} if self.start else {})}
        return (codec or get_codec()).seal(Purpose.TRIGGER_STATE, doc)

    @classmethod
    def decode(cls, text: str, codec: TokenCodec | None = None) -> PollState:
        """The state sealed in `text`; a 400 naming `triggerState` when it is not one the relay
        signed (an unsigned state of the first release included)."""
        # The codec checks the MAC before anything is decoded, so a forged state never gets here.
        doc = (codec or get_codec()).open(Purpose.TRIGGER_STATE, text, "triggerState")
        try:
            key, start = doc["k"], doc.get("s")
            position_time(key)
            started = clock.from_time_key(start) if start is not None else None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise invalid("triggerState", "is not a state this API issued") from None
        return cls(key, started)

    @classmethod
    def verify(cls, text: str, codec: TokenCodec | None = None) -> PollState | None:
        """The state sealed in `text`, or None when the relay cannot verify it (the caller
        starts a fresh chain)."""
        try:
            return cls.decode(text, codec)
        except BadRequest:
            return None

    @classmethod
    def starting(cls, now: datetime) -> PollState:
        # The key starts MARGIN early (an event accepted after `now` on an instance whose clock
        # is a little behind still has a key after it); `start` decides what belongs to the chain.
        return cls(position(now - MARGIN), now)

    def admits(self, event: LoggedEvent) -> bool:
        """Whether an event was accepted after this chain started (old states admit everything)."""
        return self.start is None or event.accepted_at > self.start


def check_pattern(pattern: str) -> str:
    if not is_pattern(pattern):
        raise invalid("eventType", f"must be '*', a type name ({NAME_RULE}) or a prefix ending in '.*'")
    return pattern


@dataclass
class PollResult:
    events: list[dict[str, Any]]
    state: PollState
    more: bool


def poll(
    storage: Storage, pattern: str, state: PollState, retention_days: float, now: datetime | None = None
) -> PollResult:
    now = now or clock.utcnow()
    upper = position(now - MARGIN)
    if upper <= state.key:
        return PollResult([], state, False)
    found: list[LoggedEvent] = []
    read = 0
    last = read_to = state.key  # the last position read; the end of the slice read so far
    full = False
    # A state older than retention (or forged) starts at the oldest day still kept, not year 1.
    days = EventLog(storage).walk(
        [pattern], state.key, upper, first_day=now - timedelta(days=retention_days + 1), page=PAGE + 1
    )
    for day in islice(days, SLICE_DAYS):
        for event in day.events:
            read, last = read + 1, event.key.row
            if state.admits(event):
                found.append(event)
            # Rows the chain does not admit (accepted before its start) count against the
            # slice too, so a backlog of them is read a bounded part at a time.
            if len(found) > PAGE or read >= READ_BUDGET:
                full = True
                break
        if full:
            break
        read_to = day.end
    if len(found) > PAGE:
        found = found[:PAGE]
        next_state, more = PollState(found[-1].key.row, state.start), True
    elif full:
        next_state, more = PollState(last, state.start), True
    else:
        next_state, more = PollState(max(read_to, state.key), state.start), read_to < upper
    return PollResult([as_cloudevent(storage, event) for event in found], next_state, more)


def as_cloudevent(storage: Storage, event: LoggedEvent) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        cloudevent(
            event_id=event.id,
            event_type=event.type,
            source=event.source,
            time=event.time,
            subject=event.subject,
            data=load_data(storage, event),
            ext=event.ext,
        )
    )
    return body
