"""Work that comes back later (a retry, an attempt handed back unsent), sent a work item per group
rather than a queue message per target, and the packing of targets into work items.

Why: dead receivers spread over many origins make most of an event's targets come back later,
each several times (handed back while the lane for doubtful origins is full, then retried on the
schedule). As a message per target, 150 dead subscriptions sharing a healthy one's event type
were 150 queue sends, receives, event-log reads and deletes per event and round, and that
storage work crowded the healthy deliveries out. A batch's targets that are due at about the same
time go out as one work item instead (up to ITEM_TARGETS each): each is still due no sooner than
its own schedule says, and at most `SLACK_SHARE` of its delay (or `SLACK_MIN` seconds) later, so
retries keep their schedule's spacing and jitter within that slack.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from relay.core.models import Target
from relay.core.timers import Scheduled, Timers, timers

ITEM_TARGETS = 100
# Bytes of targets per work item, leaving room for the envelope inside 48 KiB of message data.
ITEM_BYTES = 40_000
# Bytes of targets per work item that comes back later: it may become a row of the due table,
# whose text holds 30,000 characters (relay.due.MAX_TEXT); a larger one would stay in the queue.
LATER_BYTES = 24_000
# How much later than its own due time a target may go, to share a work item with others.
SLACK_SHARE = 0.1
SLACK_MIN = 1.0


@dataclass(frozen=True)
class Later:
    """A target to send again as a work item, with the moment it is due (its own schedule's)."""

    target: Target
    due: datetime


def pack(targets: list[Target], max_bytes: int = ITEM_BYTES) -> list[list[Target]]:
    """Split targets into work items bounded by count and by message size."""
    items: list[list[Target]] = []
    current: list[Target] = []
    size = 0
    for target in targets:
        cost = len(target.model_dump_json()) + 1
        if current and (len(current) >= ITEM_TARGETS or size + cost > max_bytes):
            items.append(current)
            current, size = [], 0
        current.append(target)
        size += cost
    if current:
        items.append(current)
    return items


def gather(laters: list[Later], now: datetime) -> list[tuple[float, list[Target]]]:
    """Work items for `laters`, each as (seconds from `now` until it is due, its targets): targets
    whose due times lie within the slack of the group's first are due together, at the group's
    last due time (never sooner than any of them is due)."""
    items: list[tuple[float, list[Target]]] = []
    group: list[Later] = []

    def close() -> None:
        delay = max((group[-1].due - now).total_seconds(), 0.0)
        items.extend((delay, chunk) for chunk in pack([later.target for later in group], LATER_BYTES))

    for later in sorted(laters, key=lambda one: one.due):
        if group:
            first = group[0].due
            slack = max(SLACK_MIN, SLACK_SHARE * (first - now).total_seconds())
            if (later.due - first).total_seconds() > slack:
                close()
                group = []
        group.append(later)
    if group:
        close()
    return items


class Laters:
    """One batch's targets that come back later, sent (`gather`ed) by `send` when the first of them
    is due, and the rest when the batch is done (`close`). So a retry is not held back until the
    batch's slowest attempt ends (a receiver hanging to the timeout), yet what comes back while
    that attempt runs still travels together. The batch's own message (a work item, a fan-out
    message) stays until `close` returns: a send that fails is raised there, and the batch is
    done again, which is at-least-once. The sends on time are calls of the runtime's timers
    (relay.core.timers), not threads of the batch's own."""

    def __init__(
        self, send: Callable[[list[Later]], None], now: Callable[[], datetime], clock: Timers | None = None
    ) -> None:
        self._send, self._now = send, now
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: list[Later] = []
        self._next: int | None = None  # the number of the call that sends next
        self._next_due: datetime | None = None
        self._numbers = itertools.count()
        self._calls: list[Scheduled] = []  # every one asked for: `close` cancels them or waits for them
        self._failure: BaseException | None = None
        self._closed = False

    def add(self, later: Later) -> None:
        """Keep `later`, written down already (its pending row), for the next send."""
        with self._lock:
            self._waiting.append(later)
            if self._closed:
                return
            if self._next_due is not None and (later.due - self._next_due).total_seconds() > -SLACK_MIN:
                return  # due with what the next call sends, or after it
            if self._calls:
                self._calls[-1].cancel()  # one due sooner: the next send moves to it
            number = next(self._numbers)
            delay = max((later.due - self._now()).total_seconds(), 0.0)
            try:
                call = (self._clock or timers()).call_later(delay, lambda: self._flush(number))
            except RuntimeError:  # the runtime is closing: `close` sends it with the rest
                return
            self._next, self._next_due = number, later.due
            self._calls.append(call)

    def _flush(self, number: int) -> None:
        with self._lock:
            if self._closed:
                return  # `close` sends what is left
            if number == self._next:
                self._next, self._next_due = None, None
            waiting, self._waiting = self._waiting, []
        try:
            if waiting:
                self._send(waiting)
        except BaseException as exc:  # noqa: BLE001 - raised by `close`, on the batch's thread
            with self._lock:
                self._failure = self._failure or exc

    def close(self) -> None:
        """Send what is left (once the batch is done); raises the first send that failed."""
        with self._lock:
            self._closed = True
            calls, self._calls = self._calls, []
        for call in calls:
            call.cancel()
            call.wait()  # a send under way finishes (or fails) before the batch counts as done
        with self._lock:
            waiting, self._waiting = self._waiting, []
        if waiting:
            self._send(waiting)
        if self._failure is not None:
            raise self._failure
