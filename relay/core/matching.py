"""Which events a subscription wants: type names, `prefix.*` patterns, `*`, subject filters.

Pure functions, so the rules are tested without storage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Matched with fullmatch, never `match` + `$`: `$` also matches before a trailing newline, and
# "x\n" as a table key or a blob name is refused by storage long after the 202 was sent.
NAME_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
NAME_RULE = "1 to 128 characters of letters, digits, '.', '_', '-' and ':'"
ID_RULE = NAME_RULE + ", not only dots"


def is_name(text: str) -> bool:
    return isinstance(text, str) and NAME_RE.fullmatch(text) is not None


def is_event_id(text: str) -> bool:
    """A name that is not `.` or `..` (or more dots): ids become parts of keys and paths."""
    return is_name(text) and text.strip(".") != ""


def is_pattern(text: str) -> bool:
    """`*`, an exact type name, or a name prefix ending in `.*` such as `order.*`."""
    if text == "*":
        return True
    if text.endswith(".*"):
        return is_name(text[:-2]) and len(text) <= 130
    return is_name(text)


def patterns_for_type(event_type: str) -> list[str]:
    """Every pattern an event of this type matches: `a.b.c` -> a.b.c, a.b.*, a.*, *.

    These are the index partitions fan-out reads, so its cost follows the matching
    subscriptions rather than all of them.
    """
    found = [event_type]
    parts = event_type.split(".")
    for end in range(len(parts) - 1, 0, -1):
        found.append(".".join(parts[:end]) + ".*")
    found.append("*")
    return found


def type_matches(patterns: Iterable[str], event_type: str) -> bool:
    wanted = set(patterns_for_type(event_type))
    return any(p in wanted for p in patterns)


def subject_matches(subject: str | None, begins: str | None, ends: str | None) -> bool:
    if not begins and not ends:
        return True
    if subject is None:
        return False
    return subject.startswith(begins or "") and subject.endswith(ends or "")
