"""UTC time, RFC 3339 text and sortable row keys: stored and compared in UTC, emitted with `Z`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

_KEY_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_INVERT_BASE = 10**17  # microseconds since 1970 stay below this until the year 5138


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc3339_precise(moment: datetime) -> str:
    """RFC 3339 to the microsecond, for instants that are compared with others (a poll chain's
    start against an event's acceptance), where milliseconds would leave ties."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    """Strict enough for RFC 3339 (a date, `T`, a time, and an offset or `Z`); raises ValueError."""
    if len(text) < 20 or text[10] not in "Tt" or not (text[-1] in "Zz" or text[-6] in "+-"):
        raise ValueError("not an RFC 3339 date-time such as 2026-01-31T12:00:00Z")
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("is outside the range of dates") from None


def time_key(moment: datetime) -> str:
    """Fixed-width text that sorts as the moment does (oldest first)."""
    return moment.astimezone(timezone.utc).strftime(_KEY_FORMAT)


def from_time_key(key: str) -> datetime:
    return datetime.strptime(key, _KEY_FORMAT).replace(tzinfo=timezone.utc)


def inverted_key(moment: datetime) -> str:
    """Fixed-width text that sorts newest first."""
    micros = int(moment.timestamp() * 1_000_000)
    return f"{_INVERT_BASE - micros:017d}"


def day_bucket(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%d")


def days(n: float) -> timedelta:
    return timedelta(days=n)
