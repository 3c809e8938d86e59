"""The event-type catalogue: names, descriptions and optional JSON Schemas for `data`.

Publishing does not need a registered type; when a type has a schema, `data` must match it.
The catalogue is read whole and kept for a few seconds per process, so validation costs no
storage transaction per publish; a change made elsewhere applies within that time.
"""

from __future__ import annotations

import json
import threading
import time
from functools import lru_cache
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from . import schemabounds
from .errors import BadRequest, FieldError, invalid
from .matching import NAME_RULE, is_name
from .models import EventIn, EventTypeRequest
from .storage import EVENT_TYPES_TABLE, Storage

PARTITION = "type"
CACHE_SECONDS = 30.0

_lock = threading.Lock()
_refresh = threading.Lock()
_cache: tuple[float, dict[str, dict[str, Any]]] | None = None


def check_name(name: str) -> str:
    if not is_name(name):
        raise invalid("name", f"must be {NAME_RULE}")
    return name


# An empty registry: a schema's `$ref`s resolve inside the schema or not at all. The default
# would fetch remote references, letting anyone who can register a type make the relay call
# any URL (internal ones included) on every publish.
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


@lru_cache(maxsize=256)
def _compiled(schema_text: str) -> Any:
    """One validator per distinct schema, not one per published event."""
    schema = json.loads(schema_text)
    _check_bounds(schema)  # a schema stored before these checks existed is refused, not run
    return _validator_for(schema)


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
            if len(row["schema"]) > 30_000:
                raise invalid("schema", "is larger than 30,000 characters of JSON")
            check_schema(body.schema_)
        created = self.get(name) is None
        if body.description is not None:
            row["description"] = body.description
        self._table.upsert_entity(row, mode=UpdateMode.REPLACE)
        forget()
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
        forget()

    def all(self) -> dict[str, dict[str, Any]]:
        rows = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION}, results_per_page=1000)
        return {r["RowKey"]: view(r) for r in rows}


def forget() -> None:
    global _cache
    with _lock:
        _cache = None


def catalogue(storage: Storage) -> dict[str, dict[str, Any]]:
    global _cache
    with _lock:
        if _cache is not None and time.monotonic() - _cache[0] < CACHE_SECONDS:
            return _cache[1]
    with _refresh:
        # One reader refreshes while concurrent publishes wait for its answer, not a query each.
        with _lock:
            if _cache is not None and time.monotonic() - _cache[0] < CACHE_SECONDS:
                return _cache[1]
        types = EventTypes(storage).all()
        with _lock:
            _cache = (time.monotonic(), types)
        return types


def validate_data(storage: Storage, events: list[EventIn], batch: bool) -> None:
    """400 naming the failing path when an event's data does not match its type's schema."""
    types = catalogue(storage)
    errors: list[FieldError] = []
    with schemabounds.deadline():  # one budget for the whole publish, however many events it holds
        for index, event in enumerate(events):
            schema = types.get(event.type, {}).get("schema")
            if schema is None:
                continue
            prefix = f"[{index}]." if batch else ""
            try:
                validator = _compiled(json.dumps(schema, sort_keys=True))
                found = sorted(validator.iter_errors(event.data), key=lambda e: list(e.path))[:10]
            except schemabounds.BudgetExceeded:
                errors.append(
                    FieldError(
                        f"{prefix}data",
                        f"checking it against the schema of {event.type} took longer than "
                        f"{schemabounds.VALIDATION_SECONDS:g} s; the data or the schema is too costly",
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
