"""Bounds on JSON Schema validation, so no registered schema can stall a publish.

Three ways a schema of a few KB runs away, and what answers each:

- A `pattern` (or a `patternProperties` name) with nested quantifiers, `^(a+)+$`, backtracks
  exponentially in Python's `re`, which holds the GIL meanwhile: every route of the process stops.
  Every schema regex runs on RE2 instead (linear in the text, no backtracking). RE2 has no
  backreferences or lookaround, so a schema that uses them is refused at `PUT`, naming the field.
- A `$ref` graph that fans out (`anyOf: [$ref next, $ref next]` forty deep) passes `check_schema`
  and evaluates 2^40 paths. At `PUT` the paths through the schema are counted (every `$ref`
  followed) and a schema above `MAX_SCHEMA_PATHS` is refused.
- RE2 is linear, but not cheap: a pattern whose automaton does not fit RE2's DFA cache (such as
  `a[ab]{1000}c`) runs on its slower NFA at about its program size in steps per byte, 17 s of CPU
  for 1 MiB of strings. So at `PUT` a schema holds at most `MAX_PATTERNS` regexes of at most
  `MAX_PATTERN_CHARS` characters and `MAX_PROGRAM_SIZE` RE2 instructions each, and at publish
  every match is charged its program size times the length of the text, against one budget of
  `MATCH_BUDGET` for the publish: a match that would pass it is not run, and the publish is a 400.
- Whatever the static count cannot see (a recursive `$ref` whose cost depends on the data, a huge
  document against a costly schema) is cut off at run time: every keyword evaluation is counted
  against a deadline, and the publish is answered 400 once `VALIDATION_SECONDS` have passed.

`uniqueItems` is replaced too: jsonschema compares unhashable items pairwise (quadratic), so an
array of 50,000 objects took hours; here each item gets a canonical key and a set finds repeats.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import Any

import re2
from jsonschema import validators
from jsonschema.exceptions import ValidationError

# Paths through a schema, counting each `$ref` as a copy of its target: a schema written out as a
# tree of this many subschemas is large but reasonable; a fan-out bomb is billions.
MAX_SCHEMA_PATHS = 20_000
# Time one publish may spend validating its events' data against their schemas, all of them.
VALIDATION_SECONDS = 1.0
# How many keyword evaluations pass between two looks at the clock.
_CLOCK_EVERY = 64
# Regexes in one schema (`pattern` values and `patternProperties` names), the characters of each,
# and the size of each one's RE2 program (its instructions: what one byte of text can cost).
MAX_PATTERNS = 256
MAX_PATTERN_CHARS = 1000
MAX_PROGRAM_SIZE = 2000
# Matching work one publish may do: the sum over matches of program size times text length. At
# the NFA's 5-8 ns a step this is under a tenth of a second of CPU at worst; a simple pattern
# (program size 10-50) still reads hundreds of kilobytes of text within it.
MATCH_BUDGET = 10_000_000

# Values of these keywords are data, not subschemas: nothing inside them is a regex or a $ref.
_DATA_KEYWORDS = frozenset({"enum", "const", "examples", "default"})
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is answered as a 400, not logged to stderr by RE2


class BudgetExceeded(Exception):
    """Validation ran past its deadline, or its matching work past `MATCH_BUDGET`; the publish is
    answered 400, saying which."""

    def __init__(self, reason: str = "time") -> None:
        super().__init__(reason)
        self.reason = reason  # "time" or "matching"


class SchemaRefused(ValueError):
    """A schema the relay will not evaluate; `field` names where in it (dotted from `schema`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


# ---- linear-time regexes ------------------------------------------------------------------------


# Pure memos here (no I/O, no thread, nothing to close): module values, not runtime parts.
@lru_cache(maxsize=1024)
def linear_regex(pattern: str) -> Any:
    """The pattern compiled by RE2; `re2.error` for what RE2 cannot run (backreferences, lookaround)."""
    return re2.compile(pattern, options=_OPTIONS)


def _search(regex: Any, text: str) -> bool:
    """`regex.search(text)`, charged to the publish's matching budget first (never run past it)."""
    if getattr(_budget, "until", None) is not None:
        _budget.units += len(text) * regex.programsize
        if _budget.units > MATCH_BUDGET:
            raise BudgetExceeded("matching")
    return regex.search(text) is not None


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(linear_regex(patrn), instance):
        yield ValidationError(f"{instance!r:.200} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = linear_regex(pattern)
        for key, value in instance.items():
            if _search(regex, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, ap: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # jsonschema's own, with the patternProperties test on RE2.
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    regexes = [linear_regex(p) for p in schema.get("patternProperties", {})]
    extras = [k for k in instance if k not in properties and not any(_search(r, k) for r in regexes)]
    if validator.is_type(ap, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], ap, path=extra)
    elif not ap and extras:
        shown = ", ".join(repr(k) for k in sorted(extras)[:20])
        yield ValidationError(f"Additional properties are not allowed ({shown} unexpected)")


def _canonical(value: Any) -> Any:
    """A hashable key equal for JSON-equal values: 1 == 1.0, but true != 1, as JSON Schema says."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return ("o", frozenset((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("a", tuple(_canonical(v) for v in value))
    return value


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not (unique and validator.is_type(instance, "array")):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"{instance!r:.200} has non-unique elements")
            return
        seen.add(key)


_REPLACED: dict[str, Callable[..., Any]] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}


# ---- the run-time budget ------------------------------------------------------------------------

_budget = threading.local()  # validators are shared between threads; each request has its own clock


@contextmanager
def deadline(seconds: float = VALIDATION_SECONDS) -> Iterator[None]:
    """Validation inside this block raises BudgetExceeded once `seconds` have passed."""
    _budget.until, _budget.calls, _budget.units = time.monotonic() + seconds, 0, 0
    try:
        yield
    finally:
        _budget.until = None


def _tick() -> None:
    until = getattr(_budget, "until", None)
    if until is None:
        return
    _budget.calls += 1
    if _budget.calls % _CLOCK_EVERY == 0 and time.monotonic() > until:
        raise BudgetExceeded()


def _counted(keyword: Callable[..., Any]) -> Callable[..., Any]:
    def evaluate(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        _tick()
        return keyword(validator, value, instance, schema)

    return evaluate


@cache
def bounded(cls: type[Any]) -> type[Any]:
    """The validator class `cls` with RE2 regexes, linear uniqueItems and every keyword counted."""
    keywords = {name: _REPLACED.get(name, fn) for name, fn in cls.VALIDATORS.items()}
    extended: type[Any] = validators.extend(cls, {name: _counted(fn) for name, fn in keywords.items()})
    return extended


# ---- checks at registration ---------------------------------------------------------------------


def _walk(node: Any, path: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every object of the schema outside data-valued keywords, with its dotted path."""
    if isinstance(node, dict):
        yield node, path
        for key, child in node.items():
            if key not in _DATA_KEYWORDS:
                yield from _walk(child, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _walk(child, f"{path}[{index}]")


def check_regexes(schema: Any) -> None:
    """SchemaRefused naming the first regex RE2 cannot run, or a combination it cannot bound."""
    uses_unevaluated = uses_patterns = False
    count = 0
    for node, path in _walk(schema, "schema"):
        found: list[tuple[str, str]] = []
        if isinstance(node.get("pattern"), str):
            found.append((f"{path}.pattern", node["pattern"]))
        if isinstance(node.get("patternProperties"), dict):
            uses_patterns = True
            found += [(f"{path}.patternProperties", p) for p in node["patternProperties"]]
        uses_unevaluated = uses_unevaluated or "unevaluatedProperties" in node
        count += len(found)
        if count > MAX_PATTERNS:
            raise SchemaRefused("schema", f"holds more than {MAX_PATTERNS} regexes (pattern, patternProperties)")
        for field, pattern in found:
            if len(pattern) > MAX_PATTERN_CHARS:
                raise SchemaRefused(field, f"is longer than {MAX_PATTERN_CHARS} characters")
            try:
                regex = linear_regex(pattern)
            except re2.error as exc:
                reason = (
                    exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
                )
                raise SchemaRefused(
                    field,
                    f"{pattern[:100]!r} cannot run in linear time "
                    f"(backreferences and lookaround are not supported): {reason[:200]}",
                ) from exc
            if regex.programsize > MAX_PROGRAM_SIZE:
                raise SchemaRefused(
                    field,
                    f"{pattern[:100]!r} compiles to {regex.programsize} RE2 instructions, more than "
                    f"{MAX_PROGRAM_SIZE}: matching it would cost too much per character",
                )
    if uses_unevaluated and uses_patterns:
        # jsonschema matches patternProperties with Python's `re` when working out which
        # properties are unevaluated; that path cannot be bounded, so the pair is refused.
        raise SchemaRefused("schema", "unevaluatedProperties cannot be combined with patternProperties here")


def count_paths(schema: Any, lookup: Callable[[str], Any], limit: int = MAX_SCHEMA_PATHS) -> int:
    """Subschemas the schema amounts to with every `$ref` written out in place (a reference back
    to an enclosing subschema counts once: its cost depends on the data and is left to the
    run-time budget). Stops counting past `limit`."""
    memo: dict[int, int] = {}
    open_nodes: set[int] = set()

    def visit(node: Any) -> int:
        if isinstance(node, list):
            return sum(visit(child) for child in node)
        if not isinstance(node, dict):
            return 0
        key = id(node)
        if key in memo:
            return memo[key]
        if key in open_nodes:
            return 1
        open_nodes.add(key)
        total = 1
        for name, child in node.items():
            if name in _DATA_KEYWORDS:
                continue
            if name in _REF_KEYWORDS and isinstance(child, str):
                target = lookup(child)
                total += visit(target) if target is not None else 0
            elif isinstance(child, (dict, list)):
                total += visit(child)
            if total > limit:
                break
        open_nodes.discard(key)
        memo[key] = total
        return total

    try:
        return visit(schema)
    except RecursionError:
        raise SchemaRefused("schema", "its $ref chains are too deep to evaluate") from None


def check_paths(schema: Any, lookup: Callable[[str], Any]) -> None:
    if count_paths(schema, lookup) > MAX_SCHEMA_PATHS:
        raise SchemaRefused(
            "schema",
            f"its $ref graph fans out to more than {MAX_SCHEMA_PATHS} subschemas; evaluating it could take years",
        )
