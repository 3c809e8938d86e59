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

from dataclasses import dataclass
from datetime import datetime

from .models import Target

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
