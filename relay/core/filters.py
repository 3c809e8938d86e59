"""Filters on an event's `data` (contract section 6, "Filters on data"): the request's shape, the
compact text a subscription keeps them as, and the predicate fan-out evaluates.

Pure: no storage, no clock. A subscription's filters are checked once at subscribe (`Filters`),
kept as one compact JSON text on its row and on each of its index rows (`Filters.stored`), and
compiled once per distinct text (`compiled`, an LRU), so fan-out pays a dictionary walk and a
comparison per condition, never a parse.

Semantics, in the manner of Event Grid's advanced filters: every condition must hold. A path
that is missing, or leads through something that is not an object (or an array, for a segment of
digits), holds only for `ne` and for `exists: false`. A comparison with a value of the wrong type
(`gt` on a string, `contains` on a number) is false, never an error. JSON's types are kept apart:
`true` is not `1`, `1` is `1.0`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationInfo, field_validator

MAX_CONDITIONS = 10
MAX_SEGMENTS = 8
MAX_PATH_LENGTH = 512
# JSON characters of one condition's value: a subscription's filters ride on each of its index
# rows (up to 100), and every fan-out of its types reads them.
MAX_VALUE_CHARS = 1024

_CONTROL = re.compile("[\u0000-\u001f\u007f-\u009f]")

Op = Literal["eq", "ne", "in", "gt", "ge", "lt", "le", "exists", "contains"]
OPS: tuple[str, ...] = ("eq", "ne", "in", "gt", "ge", "lt", "le", "exists", "contains")
_NUMERIC = ("gt", "ge", "lt", "le")

Predicate = Callable[[Any], bool]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class DataCondition(BaseModel):
    """One condition: the value at `path` in `data`, compared by `op` with `value`."""

    # Unknown keys are refused here (not ignored as elsewhere): a misspelt key would otherwise
    # widen the filter silently, and a flow would run for events it meant to skip.
    model_config = ConfigDict(extra="forbid")
    path: StrictStr = Field(
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description=f"Where in data, dotted (total, customer.country, lines.0.sku); at most {MAX_SEGMENTS} segments.",
    )
    op: Op = Field(description="eq, ne, in, gt, ge, lt, le, exists or contains.")
    value: Any = Field(
        description="What to compare with: an array for in, a number for gt, ge, lt and le, true or "
        "false for exists, a string for contains, any JSON for eq and ne."
    )

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        segments = path.split(".")
        if len(segments) > MAX_SEGMENTS:
            raise ValueError(f"has {len(segments)} segments; at most {MAX_SEGMENTS}")
        if any(not s for s in segments):
            raise ValueError("has an empty segment; name each level, separated by single dots")
        if _CONTROL.search(path):
            raise ValueError("must not contain control characters")
        return path

    @field_validator("value")
    @classmethod
    def _value(cls, value: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")  # absent when `op` itself was refused: that error names it
        if op == "in" and not isinstance(value, list):
            raise ValueError("must be an array for op in")
        if op in _NUMERIC and not (_is_number(value) and math.isfinite(value)):
            raise ValueError(f"must be a number for op {op}")
        if op == "exists" and not isinstance(value, bool):
            raise ValueError("must be true or false for op exists")
        if op == "contains" and not isinstance(value, str):
            raise ValueError("must be a string for op contains")
        if len(json.dumps(value, separators=(",", ":"), ensure_ascii=False)) > MAX_VALUE_CHARS:
            raise ValueError(f"is longer than {MAX_VALUE_CHARS} characters of JSON")
        return value


class Filters(BaseModel):
    """`filters` of a subscribe: `{"data": [conditions]}`, all of which must hold."""

    model_config = ConfigDict(extra="forbid")
    data: list[DataCondition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description=f"Conditions on the event's data, all of which must hold; at most {MAX_CONDITIONS}.",
    )

    def stored(self) -> str | None:
        """The compact text a subscription keeps; None when there is nothing to filter on."""
        if not self.data:
            return None
        return stored([c.model_dump() for c in self.data])


def stored(conditions: list[dict[str, Any]]) -> str:
    return json.dumps({"data": conditions}, separators=(",", ":"), ensure_ascii=False)


def shown(text: str | None) -> dict[str, Any] | None:
    """The filters as the API shows them (read, list), from the stored text."""
    if not text:
        return None
    found = json.loads(text)
    return found if isinstance(found, dict) else None


# ---- evaluation ---------------------------------------------------------------------------------

_MISSING = object()


def _at(data: Any, segments: tuple[str, ...]) -> Any:
    """The value at a path, or `_MISSING`."""
    current = data
    for segment in segments:
        kind = current.__class__  # parsed JSON: exact dicts and lists, no subclasses
        if kind is dict:
            current = current.get(segment, _MISSING)
            if current is _MISSING:
                return _MISSING
        elif kind is list and segment.isdigit():
            index = int(segment)
            if index >= len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


def same(left: Any, right: Any) -> bool:
    """JSON equality: booleans apart from numbers (Python's `True == 1` is not JSON's), numbers by
    value (`1` is `1.0`), arrays and objects member by member."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if _is_number(left) or _is_number(right):
        return _is_number(left) and _is_number(right) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(v, right[k]) for k, v in left.items())
    return type(left) is type(right) and bool(left == right)


def _equals(expected: Any) -> Callable[[Any], bool]:
    """`same(found, expected)`, specialised for the kind of `expected`: fan-out asks it for every
    subscription an event reaches, so a string or number compares without the general walk."""
    kind = type(expected)
    if kind is str or kind is bool:
        return lambda found: found.__class__ is kind and found == expected
    if kind is int or kind is float:
        return lambda found: (found.__class__ is int or found.__class__ is float) and found == expected
    if expected is None:
        return lambda found: found is None
    return lambda found: same(found, expected)


def _member(options: list[Any]) -> Callable[[Any], bool]:
    """Whether a value equals one of `options` (JSON equality): strings and numbers by a set."""
    texts = frozenset(o for o in options if type(o) is str)
    numbers = frozenset(o for o in options if type(o) is int or type(o) is float)
    others = [_equals(o) for o in options if not (type(o) is str or type(o) is int or type(o) is float)]

    def member(found: Any) -> bool:
        kind = found.__class__
        if kind is str:
            return found in texts
        if kind is int or kind is float:
            return found in numbers
        return any(test(found) for test in others)

    return member


def _test(op: str, expected: Any) -> Callable[[Any], bool]:
    """The check of one condition on the value found (`_MISSING` when absent)."""
    if op == "eq":
        return _equals(expected)  # `_MISSING` equals nothing
    if op == "ne":
        equals = _equals(expected)
        return lambda found: not equals(found)
    if op == "in":
        return _member(list(expected))
    if op == "exists":
        if expected:
            return lambda found: found is not _MISSING
        return lambda found: found is _MISSING
    if op == "contains":
        return lambda found: found.__class__ is str and expected in found
    number = (int, float)
    if op == "gt":
        return lambda found: found.__class__ in number and found > expected
    if op == "ge":
        return lambda found: found.__class__ in number and found >= expected
    if op == "lt":
        return lambda found: found.__class__ in number and found < expected
    return lambda found: found.__class__ in number and found <= expected


@lru_cache(maxsize=4096)
def compiled(text: str) -> Predicate:
    """The predicate of a stored filters text, parsed once per distinct text (fan-out asks for
    it per index row and event: the same text, the same predicate, from this cache)."""
    parsed = Filters.model_validate_json(text)  # rows are written by `Filters.stored`: valid
    checks = tuple((tuple(c.path.split(".")), _test(c.op, c.value)) for c in parsed.data)

    def predicate(data: Any) -> bool:
        for segments, test in checks:
            if not test(_at(data, segments)):
                return False
        return True

    return predicate


def matches(text: str | None, data: Callable[[], Any]) -> bool:
    """Whether an event whose data `data()` returns passes the stored filters `text` (no filters:
    always). `data` is called only when there is something to check: a large event's data is
    read from its blob only for a subscription that filters on it."""
    if not text:
        return True
    return compiled(text)(data())
