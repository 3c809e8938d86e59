"""UTC time, RFC 3339 text and sortable row keys: stored and compared in UTC, emitted with `Z`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_KEY_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_INVERT_BASE = 10**17  # microseconds since 1970 stay below this until the year 5138


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc3339_precise(moment: datetime) -> str:
    """RFC 3339 to the microsecond, for instants that are compared with others (a poll chain's
    start against an event's acceptance), where milliseconds would leave ties."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# RFC 3339 section 5.6, whole: date `T` time, optional fraction, `Z` or a numeric offset. Python's
# fromisoformat alone also takes ISO 8601 forms (week dates, `,5` fractions, no offset) that
# other readers of the event (the connector's `date-time`, CloudEvents SDKs) refuse.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))", re.ASCII
)


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 date-time (`2026-01-31T12:00:00.5Z`, `...+01:00`) in UTC; raises ValueError otherwise."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("not an RFC 3339 date-time such as 2026-01-31T12:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zulu, sign, off_h, off_m = match.groups()[6:]
    micros = int((fraction or "0").ljust(6, "0")[:6])
    if zulu:
        zone = UTC
    else:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError("has an offset out of range")
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        zone = timezone(-offset if sign == "-" else offset)
    try:
        moment = datetime(year, month, day, hour, minute, second, micros, tzinfo=zone)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("is not a date and time that exists (or is outside the range of dates)") from None


def time_key(moment: datetime) -> str:
    """Fixed-width text that sorts as the moment does (oldest first)."""
    return moment.astimezone(UTC).strftime(_KEY_FORMAT)


def from_time_key(key: str) -> datetime:
    return datetime.strptime(key, _KEY_FORMAT).replace(tzinfo=UTC)


def inverted_key(moment: datetime) -> str:
    """Fixed-width text that sorts newest first."""
    micros = int(moment.timestamp() * 1_000_000)
    return f"{_INVERT_BASE - micros:017d}"


def day_bucket(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d")


def days(n: float) -> timedelta:
    return timedelta(days=n)
