"""Routes of the event types group: the catalogue of event types and their data schemas."""

from __future__ import annotations

import azure.functions as func

from ..api import Reply, Request, http
from ..errors import NotFound
from ..eventtypes import EventTypes
from ..matching import is_name
from ..models import EventTypeRequest
from ..storage import get_storage
from ..swaggerschema import to_swagger

bp = func.Blueprint()


# ---- event types -------------------------------------------------------------------------------


def list_event_types(request: Request) -> Reply:
    return Reply(200, {"value": sorted(EventTypes(get_storage("fast")).all().values(), key=lambda t: t["name"])})


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
    schema = None
    if is_name(name):
        found = EventTypes(get_storage("fast")).get(name)
        schema = to_swagger(found.get("schema")) if found else None
    return Reply(200, {"name": name, "schema": schema})


def delete_event_type(request: Request) -> Reply:
    EventTypes(get_storage("fast")).delete(request.route.get("name", ""))
    return Reply(200, {})


http(bp, "event_types", "event-types", {"GET": list_event_types})
http(
    bp, "event_type", "event-types/{name}", {"GET": get_event_type, "PUT": put_event_type, "DELETE": delete_event_type}
)
http(bp, "event_data_schema", "event-types/{name}/schema", {"GET": event_data_schema})
