"""The event-type catalogue: names, descriptions and optional JSON Schemas for `data`.

Publishing does not need a registered type; when a type has a schema, `data` must match it.

Bounded, because a catalogue of 600 types with 30 KB schemas read whole into every process (and
again after every write) took a process from 75 MB to 721 MB: at most `MAX_EVENT_TYPES` types of
at most `MAX_SCHEMA_CHARS` characters of schema each; the list is paged (`limit`,
`continuationToken`, `nextLink`, and at most about `PAGE_BYTES` of schemas a page). A process
keeps the set of registered names (small) and, for the types it is publishing, their schemas
(`TYPES_KEPT`) and compiled validators (`VALIDATORS_KEPT`), least recently used first out, each
for at most `CACHE_SECONDS`: validation costs no storage transaction per publish, and a change
made elsewhere applies within that time.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import OrderedDict
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from relay.core import runtime, schemabounds
from relay.core.errors import BadRequest, Conflict, FieldError, invalid
from relay.core.matching import NAME_RULE, is_name
from relay.core.models import EventIn, EventTypeRequest
from relay.store.paging import decode_token, encode_token
from relay.store.storage import EVENT_TYPES_TABLE, Storage

PARTITION = "type"
CACHE_SECONDS = 30.0
# The catalogue's bounds: registered types, and characters of one type's schema as compact JSON.
MAX_EVENT_TYPES = 1000
MAX_SCHEMA_CHARS = 30_000
# A page of the list ends before its schemas pass this many characters (one type always fits).
PAGE_BYTES = 1_048_576
# Per process: the schemas of types being published, and their compiled validators.
TYPES_KEPT = 256
VALIDATORS_KEPT = 64


class Kept:
    """What this process keeps of the catalogue: a part of the runtime (`_kept()`), so a test's
    fresh runtime starts with none of it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refresh = threading.Lock()  # one reader refreshes the name set; the others wait for it
        self.names: tuple[float, frozenset[str]] | None = None  # registered names, and when they were read
        self.types: OrderedDict[str, tuple[float, str | None]] = OrderedDict()  # name -> (read at, schema text)
        self.validators: OrderedDict[str, Any] = OrderedDict()  # schema text -> compiled validator


def _kept() -> Kept:
    return runtime.current().part("eventtypes", Kept)


def check_name(name: str) -> str:
    if not is_name(name):
        raise invalid("name", f"must be {NAME_RULE}")
    return name


# An empty registry: a schema's `$ref`s resolve inside the schema or not at all. The default
# would fetch remote references, letting anyone who can register a type make the relay call
# any URL (internal ones included) on every publish. A constant, not a cache: a `Registry` is
# immutable (`with_resource` returns a new one), so it stays a module value.
_NO_REMOTE = Registry()


def _validator_for(schema: dict[str, Any]) -> Any:
    cls = validators.validator_for(schema, default=Draft202012Validator)
    # Bounded: regexes on RE2 and every keyword evaluation counted against the publish's deadline.
    return schemabounds.bounded(cls)(schema, registry=_NO_REMOTE)


def _check_bounds(schema: dict[str, Any]) -> None:
    """SchemaRefused unless every regex runs on RE2 and the $ref graph does not fan out."""
    schemabounds.check_regexes(schema)
    resolver = _NO_REMOTE.with_resource("", Resource.from_contents(schema, DRAFT202012)).resolver()

    def lookup(ref: str) -> Any:
        try:
            return resolver.lookup(ref).contents
        except Exception:  # noqa: BLE001 - $ref is checked elsewhere; an unresolved $dynamicRef costs nothing
            return None

    schemabounds.check_paths(schema, lookup)


def _compiled(schema_text: str) -> Any:
    """One validator per distinct schema, not one per published event; the least recently used go
    once `VALIDATORS_KEPT` are kept (a validator holds its schema parsed, ten times its text)."""
    kept = _kept()
    with kept.lock:
        found = kept.validators.get(schema_text)
        if found is not None:
            kept.validators.move_to_end(schema_text)
            return found
    schema = json.loads(schema_text)
    _check_bounds(schema)  # a schema stored before these checks existed is refused, not run
    validator = _validator_for(schema)
    with kept.lock:
        kept.validators[schema_text] = validator
        while len(kept.validators) > VALIDATORS_KEPT:
            kept.validators.popitem(last=False)
    return validator


def validators_kept() -> int:
    kept = _kept()
    with kept.lock:
        return len(kept.validators)


def types_kept() -> int:
    kept = _kept()
    with kept.lock:
        return len(kept.types)


def _local_refs(node: Any, path: str = "schema") -> list[str]:
    refs: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:
            if not (isinstance(ref, str) and ref.startswith("#")):
                raise invalid(path, "may only use $ref within the schema itself (#/...)")
            refs.append(ref)
        for key, child in node.items():
            refs += _local_refs(child, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            refs += _local_refs(child, f"{path}[{index}]")
    return refs


def check_schema(schema: dict[str, Any]) -> None:
    """400 naming `schema` unless it is a valid JSON Schema that needs nothing from outside."""
    refs = _local_refs(schema)
    try:
        _validator_for(schema).check_schema(schema)
        # Every $ref resolved now, so a dangling one is refused here rather than at publish.
        resolver = _NO_REMOTE.with_resource("", Resource.from_contents(schema, DRAFT202012)).resolver()
        for ref in refs:
            resolver.lookup(ref)
        _check_bounds(schema)
    except schemabounds.SchemaRefused as exc:
        raise invalid(exc.field, exc.message) from None
    except SchemaError as exc:
        raise invalid("schema", f"is not a valid JSON Schema: {exc.message[:300]}") from None
    except Exception as exc:  # noqa: BLE001 - any other failure means the schema cannot be used
        raise invalid("schema", f"cannot be used: {type(exc).__name__}") from None


def view(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": row["RowKey"]}
    if row.get("description"):
        out["description"] = row["description"]
    if row.get("schema"):
        out["schema"] = json.loads(row["schema"])
    return out


class EventTypes:
    def __init__(self, storage: Storage) -> None:
        self._table = storage.table(EVENT_TYPES_TABLE)

    def put(self, name: str, body: EventTypeRequest) -> tuple[dict[str, Any], bool]:
        check_name(name)
        row: dict[str, Any] = {"PartitionKey": PARTITION, "RowKey": name}
        if body.schema_ is not None:
            row["schema"] = json.dumps(body.schema_, separators=(",", ":"))
            # Size first: the checks below walk the schema, so they only ever see a bounded one.
            if len(row["schema"]) > MAX_SCHEMA_CHARS:
                raise invalid("schema", f"is larger than {MAX_SCHEMA_CHARS:,} characters of JSON")
            check_schema(body.schema_)
        created = self.get(name) is None
        if created and len(self.names()) >= MAX_EVENT_TYPES:
            # Two creates racing may both pass; the bound is on what a careless or hostile writer
            # can pile up, not an exact count.
            raise Conflict(
                f"name: the catalogue holds its limit of {MAX_EVENT_TYPES} event types; delete one first",
                [FieldError("name", f"would be type {MAX_EVENT_TYPES + 1}; at most {MAX_EVENT_TYPES} are kept")],
            )
        if body.description is not None:
            row["description"] = body.description
        self._table.upsert_entity(row, mode=UpdateMode.REPLACE)
        forget(name)
        return view(row), created

    def get(self, name: str) -> dict[str, Any] | None:
        check_name(name)
        try:
            return view(self._table.get_entity(PARTITION, name))
        except ResourceNotFoundError:
            return None

    def delete(self, name: str) -> None:
        check_name(name)
        self._table.delete_entity(PARTITION, name)
        forget(name)

    def names(self) -> frozenset[str]:
        """Every registered name (the row keys alone: at most MAX_EVENT_TYPES short strings)."""
        rows = self._table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": PARTITION}, select=["RowKey"], results_per_page=1000
        )
        return frozenset(r["RowKey"] for r in rows)

    def schema_text(self, name: str) -> str | None:
        """The type's schema as stored (compact JSON), or None: no such type, or no schema."""
        try:
            row = self._table.get_entity(PARTITION, name, select=["schema"])
        except ResourceNotFoundError:
            return None
        text = row.get("schema")
        return text if isinstance(text, str) and text else None

    def page(self, *, limit: int, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of types in name order: at most `limit`, and no more once their schemas pass
        PAGE_BYTES; the token names the first type of the next page (a sealed token of its own:
        the table's continuation cannot be made to start at a row chosen here)."""
        start = ""
        if token:
            opened = decode_token(token)
            if set(opened) != {"RowKey"}:
                raise invalid("continuationToken", "is not a token this list issued")
            start = opened["RowKey"]
        rows = list(
            itertools.islice(
                self._table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @start",
                    parameters={"pk": PARTITION, "start": start},
                    results_per_page=limit + 1,
                ),
                limit + 1,
            )
        )
        out: list[dict[str, Any]] = []
        size = 0
        for row in rows:
            schema_size = len(row.get("schema") or "")
            if len(out) == limit or (out and size + schema_size > PAGE_BYTES):
                return out, encode_token({"RowKey": row["RowKey"]})
            size += schema_size
            out.append(view(row))
        return out, None


def forget(name: str | None = None) -> None:
    """Drop what this process keeps of the catalogue (after a write here): the name set, and the
    type's schema (every type's without a name)."""
    kept = _kept()
    with kept.lock:
        kept.names = None
        if name is None:
            kept.types.clear()
        else:
            kept.types.pop(name, None)


def _registered(storage: Storage) -> frozenset[str]:
    kept = _kept()
    with kept.lock:
        if kept.names is not None and time.monotonic() - kept.names[0] < CACHE_SECONDS:
            return kept.names[1]
    with kept.refresh:
        # One reader refreshes while concurrent publishes wait for its answer, not a query each.
        with kept.lock:
            if kept.names is not None and time.monotonic() - kept.names[0] < CACHE_SECONDS:
                return kept.names[1]
        names = EventTypes(storage).names()
        with kept.lock:
            kept.names = (time.monotonic(), names)
        return names


def schema_text(storage: Storage, name: str) -> str | None:
    """The registered schema of `name` as compact JSON, or None; read once per CACHE_SECONDS per
    type, and only for registered types (an unregistered one costs no storage transaction)."""
    if name not in _registered(storage):
        return None
    now = time.monotonic()
    kept = _kept()
    with kept.lock:
        found = kept.types.get(name)
        if found is not None and now - found[0] < CACHE_SECONDS:
            kept.types.move_to_end(name)
            return found[1]
    text = EventTypes(storage).schema_text(name)
    with kept.lock:
        kept.types[name] = (now, text)
        kept.types.move_to_end(name)
        while len(kept.types) > TYPES_KEPT:
            kept.types.popitem(last=False)
    return text


def validate_data(storage: Storage, events: list[EventIn], batch: bool) -> None:
    """400 naming the failing path when an event's data does not match its type's schema."""
    errors: list[FieldError] = []
    with schemabounds.deadline():  # one budget for the whole publish, however many events it holds
        for index, event in enumerate(events):
            text = schema_text(storage, event.type)
            if text is None:
                continue
            prefix = f"[{index}]." if batch else ""
            try:
                validator = _compiled(text)
                found = sorted(validator.iter_errors(event.data), key=lambda e: list(e.path))[:10]
            except schemabounds.BudgetExceeded as exc:
                why = (
                    f"took longer than {schemabounds.VALIDATION_SECONDS:g} s"
                    if exc.reason == "time"
                    else f"would match more than {schemabounds.MATCH_BUDGET:,} units of pattern work "
                    "(program size times characters)"
                )
                errors.append(
                    FieldError(
                        f"{prefix}data",
                        f"checking it against the schema of {event.type} {why}; the data or the schema is too costly",
                    )
                )
                break  # the budget is spent: no further event can be checked in time
            except Exception:  # noqa: BLE001 - a schema registered before the checks above were added
                errors.append(FieldError(f"{prefix}type", "its registered schema cannot be applied; register it again"))
                continue
            for err in found:
                path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.path)
                errors.append(FieldError(f"{prefix}data{path}", err.message[:300]))
    if errors:
        raise BadRequest("; ".join(f"{e.field}: {e.message}" for e in errors[:5]), errors)
