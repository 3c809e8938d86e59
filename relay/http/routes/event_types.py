"""Routes of the event types group: the catalogue of event types and their data schemas."""

from __future__ import annotations

from typing import Any

import azure.functions as func

from relay.core.errors import NotFound, invalid
from relay.core.matching import NAME_RULE, is_name
from relay.core.models import EventTypeRequest
from relay.http.access import ADMIN_ONLY, PUBLISHER, SUBSCRIBER, rule
from relay.http.api import Reply, Request, http
from relay.http.swaggerschema import to_swagger
from relay.store.eventtypes import EventTypes
from relay.store.storage import get_storage

bp = func.Blueprint()

# The longest value `eventTypes` takes: a 128-character name and `.*`.
MAX_PATTERN_LENGTH = 130


# ---- event types -------------------------------------------------------------------------------


def list_event_types(request: Request) -> Reply:
    """A page of the catalogue in name order, as the subscriptions list pages (`limit`,
    `continuationToken`, `nextLink` while more remain); a page also ends before its schemas pass
    about a mebibyte. The connector's dropdown and the console read the first page."""
    limit = request.int_param("limit", 100, 1, 1000)
    items, next_token = EventTypes(get_storage("fast")).page(
        limit=limit, token=request.params.get("continuationToken") or None
    )
    body: dict[str, Any] = {"value": items}
    if next_token:
        body["nextLink"] = request.link("event-types", {"limit": str(limit), "continuationToken": next_token})
    return Reply(200, body)


def put_event_type(request: Request) -> Reply:
    raw = request.json(limit=256 * 1024)
    body: EventTypeRequest = request.model(EventTypeRequest, raw)
    view, created = EventTypes(get_storage("fast")).put(request.route.get("name", ""), body)
    return Reply(201 if created else 200, view)


def get_event_type(request: Request) -> Reply:
    found = EventTypes(get_storage("fast")).get(request.route.get("name", ""))
    if found is None:
        raise NotFound("no event type has this name")
    return Reply(200, found)


def event_data_schema(request: Request) -> Reply:
    """The dynamic-schema source: 200 for whatever the designer passes (`*`, `order.*`, a type
    nobody registered, one without a schema), with `schema: null` where there is none, and a
    registered schema in the Swagger 2.0 form the designer reads. A 4xx here can stop a flow
    from saving."""
    name = request.route.get("name", "")
    if len(name) > MAX_PATTERN_LENGTH or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        # Nothing the designer can offer (no event type or pattern is this long, or holds a control
        # character): refused as GET /event-types/{name} refuses it.
        raise invalid("name", f"must be {NAME_RULE}, '*' or a prefix pattern such as order.*")
    schema = None
    if is_name(name):
        found = EventTypes(get_storage("fast")).get(name)
        schema = to_swagger(found.get("schema")) if found else None
    return Reply(200, {"name": name, "schema": schema})


def delete_event_type(request: Request) -> Reply:
    EventTypes(get_storage("fast")).delete(request.route.get("name", ""))
    return Reply(200, {})


http(bp, "event_types", "event-types", {"GET": (list_event_types, rule(PUBLISHER, SUBSCRIBER))})
http(
    bp,
    "event_type",
    "event-types/{name}",
    {
        "GET": (get_event_type, rule(PUBLISHER, SUBSCRIBER)),
        "PUT": (put_event_type, ADMIN_ONLY),
        "DELETE": (delete_event_type, ADMIN_ONLY),
    },
)
# The designer's dynamic-schema source: whoever may publish or subscribe reads it.
http(bp, "event_data_schema", "event-types/{name}/schema", {"GET": (event_data_schema, rule(PUBLISHER, SUBSCRIBER))})
