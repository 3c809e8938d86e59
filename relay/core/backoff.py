"""When to try a delivery again: a pure function of the schedule, the attempts made and the
receiver's Retry-After, so it is tested without waiting."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

JITTER = 0.2
RETRY_AFTER_CAP = 3600.0
# An Azure queue message can stay invisible for at most seven days.
MAX_VISIBILITY = 7 * 24 * 3600


def retry_delay(
    schedule: Sequence[float],
    attempts_made: int,
    *,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the schedule is used up.

    `attempts_made` counts the attempts so far (1 after the first). The scheduled delay gets
    up to +/-20 % jitter so that receivers that failed together are not retried together; a
    longer Retry-After wins, up to an hour.
    """
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    delay = schedule[attempts_made - 1] * (1 - JITTER + 2 * JITTER * rand())
    if retry_after is not None:
        # Never sooner than scheduled: a Retry-After only ever lengthens the wait, to an hour at most.
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return min(delay, MAX_VISIBILITY)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent or odd."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(seconds, 0.0)
