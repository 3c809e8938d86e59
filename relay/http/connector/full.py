"""The full API as an OpenAPI 3.0 document (`GET /api/openapi/full.json`): every route, what each
accepts and refuses, and what it answers, so a client (or a fuzzer) can hold the relay to it.

Built from the same parts as the connector definition: request bodies from the pydantic models the
routes validate with (`relay.core.models`), answers from the schemas of `relay.http.connector.parts`. The
rules a single schema cannot state (a host that must resolve, tokens only the relay can sign,
`until` not before `since`, a registered schema the data must match) are listed in
docs/power-platform.md, "The full API document".

Adding a route is one entry in `ROUTES` (a `Route`): its path, method, parameters, body and answers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from relay import __version__
from relay.core.models import (
    MAX_SOURCE_LENGTH,
    EventIn,
    EventTypeRequest,
    ReplayRequest,
    SubscriptionRequest,
    TestRequest,
)
from relay.core.statuses import DeliveryStatus
from relay.http.connector.parts import (
    DESCRIPTION,
    KEY_HEADER,
    MAX_BATCH,
    NAME_MAX,
    NAME_PATTERN,
    PATTERN_MAX,
    PATTERN_PATTERN,
    PROBLEM,
    TITLE,
    URI_REFERENCE,
    cloudevent_schema,
    delivery_schema,
    event_type_schema,
    model_fields,
    obj,
    operation_schema,
    page_of,
    prop,
    subscription_schema,
)
from relay.outbound.sender import MAX_URL_LENGTH

# Names and ids are matched whole: a control character (C0, DEL, C1) anywhere is a 400.
NO_CONTROL = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
# An event id: a name that is not only dots (relay.core.matching.is_event_id).
ID_PATTERN = "^(?!\\.+$)[A-Za-z0-9._:\\-]{1,128}$"
# RFC 3339 section 5.6 as relay.core.clock.parse_rfc3339 reads it (no leap second, offsets within a day).
RFC3339 = (
    "^(?!0000)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    "(\\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
# A notification URL as the relay takes it: printable ASCII, https (or http where private targets
# are allowed), no user information. That its host resolves (to a public address) no schema can say.
NOTIFICATION_URL = "^https?://[A-Za-z0-9.\\-]+(:[0-9]{1,5})?(/[!-~]*)?$"
DATE_TIME = {"type": "string", "format": "date-time", "pattern": RFC3339}
PROBLEM_MEDIA = "application/problem+json"


def exact(pattern: str) -> str:
    """A `^...$` pattern whose end is the end of the text in Python's `re` as in ECMAScript: Python
    tools (fuzzers among them) read `$` as "or before a final newline", which the relay refuses."""
    return pattern.removesuffix("$") + "(?![\\s\\S])" if pattern.endswith("$") else pattern


def _openapi3(schema: Any) -> Any:
    """A Swagger 2.0 schema of `parts` as OpenAPI 3.0 says it: `x-nullable` is `nullable`, and the
    designer's `x-ms-*` keys go (they mean nothing to other clients)."""
    if isinstance(schema, list):
        return [_openapi3(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "x-nullable":
            out["nullable"] = value
        elif key.startswith("x-ms-"):
            continue
        elif key == "pattern" and isinstance(value, str):
            out[key] = exact(value)
        elif key in ("properties",):
            out[key] = {name: _openapi3(sub) for name, sub in value.items()}
        else:
            out[key] = (
                _openapi3(value) if isinstance(value, (dict, list)) and key not in ("enum", "required") else value
            )
    return out


def body_of(model: type[BaseModel], rules: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A request body from the model the route validates with: every field, its limits and its
    description, plus the rules its validators apply (`rules`: patterns, formats)."""
    fields, required = model_fields(model)
    properties = {}
    for name, schema in fields.items():
        schema = {**schema, **(rules or {}).get(name, {})}
        properties[name] = _openapi3(schema)
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


@dataclass(frozen=True)
class Route:
    """One operation of the API."""

    method: str
    path: str
    operation_id: str
    summary: str
    responses: dict[str, Any]
    parameters: list[dict[str, Any]] = field(default_factory=list)
    body: dict[str, Any] | None = None
    body_required: bool = True
    anonymous: bool = False


def param(where: str, name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": _openapi3(schema),
    }


def path_id(name: str, description: str, **rules: Any) -> dict[str, Any]:
    return param("path", name, {"type": "string", "pattern": NO_CONTROL, **rules}, description)


def ok(description: str, schema: dict[str, Any] | None = None, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": _openapi3(schema)}}
    if headers:
        answer["headers"] = {
            name: {"required": True, "schema": {"type": "string"}, "description": text}
            for name, text in headers.items()
        }
    return answer


# ---- parameters shared by several routes ----------------------------------------------------------

SUBSCRIPTION_ID = path_id("id", "The subscription's id.")
LIMIT = param(
    "query",
    "limit",
    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    "How many items one page holds.",
)
CONTINUATION = param(
    "query",
    "continuationToken",
    {"type": "string"},  # empty or left out: the first page
    "Where the previous page ended: only a token this relay issued in a nextLink (signed).",
)
EVENT_TYPE_NAME = param(
    "path", "name", {"type": "string", "pattern": NAME_PATTERN, "maxLength": NAME_MAX}, "The event type's name."
)
LOCATION_RETRY = {"Location": "The URL to ask next.", "Retry-After": "Seconds to wait before asking again."}

ACCEPTED = obj({"id": prop("string", "The event's id.", "id")}, "The accepted event.", ["id"])
ACCEPTED_BATCH = obj(
    {"value": prop("array", "The accepted events' ids, in the order sent.", "value", items=ACCEPTED)},
    "The accepted events.",
    ["value"],
)
EMPTY = {"type": "object", "description": "Nothing more to say."}
EVENT_TYPES = obj(
    {
        "value": prop("array", "The event types, in name order.", "value", items=event_type_schema()),
        "nextLink": prop("string", "The URL of the next page, while more remain.", "nextLink"),
    },
    "A page of the registered event types.",
    ["value"],
)
SMOKE_RUN = obj(
    {
        "id": prop("string", "The run's id.", "id"),
        "notificationUrl": prop("string", "The hook URL to subscribe.", "notificationUrl"),
        "createdAt": prop("string", "When the run opened.", "createdAt"),
        "expiresAt": prop("string", "When the run and its hook close.", "expiresAt"),
        "receipts": prop(
            "array", "The signed deliveries the hook received (at most 3).", "receipts", items={"type": "object"}
        ),
    },
    "A smoke check's run.",
    ["id", "notificationUrl", "createdAt", "expiresAt", "receipts"],
)
DATA_SCHEMA = obj(
    {
        "name": prop("string", "The event type or pattern asked about.", "name"),
        "schema": {
            **prop("object", "The Swagger 2.0 form of the registered schema of data, or null.", "schema"),
            "x-nullable": True,
        },
    },
    "The schema of the data of an event type.",
    ["name", "schema"],
)
POLLED = obj(
    {"value": prop("array", "The new events, oldest first, at most 100.", "value", items=cloudevent_schema())},
    "Events published since the state's position.",
    ["value"],
)
SECRET = obj(
    {"secret": prop("string", "The new signing secret.", "secret")}, "The subscription with its new secret.", ["secret"]
)
HEALTH = obj(
    {"status": prop("string", "ok when storage answers.", "status", enum=["ok"])}, "The relay's health.", ["status"]
)
STATS = {"type": "object", "description": "Delivery counts of the window, for the console."}
DOCUMENT = {"type": "object", "description": "An API document."}


def _event_rules() -> dict[str, dict[str, Any]]:
    return {
        "type": {"pattern": NAME_PATTERN, "minLength": 1, "maxLength": NAME_MAX},
        "id": {"pattern": ID_PATTERN, "maxLength": NAME_MAX},
        "source": {"pattern": URI_REFERENCE, "maxLength": MAX_SOURCE_LENGTH},
        "time": DATE_TIME,
        "data": {"nullable": True},
    }


def event_body() -> dict[str, Any]:
    return body_of(EventIn, _event_rules())


def subscription_body() -> dict[str, Any]:
    body = body_of(
        SubscriptionRequest,
        {
            "notificationUrl": {"pattern": NOTIFICATION_URL, "maxLength": MAX_URL_LENGTH},
            "eventTypes": {"items": {"type": "string", "pattern": PATTERN_PATTERN, "maxLength": PATTERN_MAX}},
            "eventType": {"pattern": PATTERN_PATTERN, "maxLength": PATTERN_MAX},
        },
    )
    # eventType is the shorthand of eventTypes: sending both is a 400.
    body["not"] = {"required": ["eventType", "eventTypes"]}
    return body


def unsubscribe_body() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "notificationUrl": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_URL_LENGTH,
                "description": "The callback URL to unsubscribe.",
            }
        },
    }


# Any value is taken; one that is empty, longer than 512 characters or not printable is no
# identity and is ignored (relay.http.routes.subscriptions._caller), never refused.
WORKFLOW_HEADERS = [
    param("header", name, {"type": "string"}, text)
    for name, text in (
        ("x-ms-workflow-id", "The Logic Apps workflow that subscribed (recorded at subscribe)."),
        ("x-ms-workflow-operation-name", "The trigger's or action's name in that workflow."),
        ("x-ms-client-tracking-id", "The run's tracking id."),
    )
]


def routes() -> list[Route]:
    subs = "/subscriptions"
    one = "/subscriptions/{id}"
    return [
        Route(
            "post",
            subs,
            "Subscribe",
            "Register a callback URL for events.",
            {"201": ok("The subscription.", subscription_schema(), {"Location": "The subscription's URL."})},
            body=subscription_body(),
        ),
        Route(
            "get",
            subs,
            "ListSubscriptions",
            "List subscriptions.",
            {"200": ok("A page of subscriptions.", page_of(subscription_schema(), "subscriptions"))},
            [
                param(
                    "query",
                    "eventType",
                    {"type": "string", "pattern": NAME_PATTERN, "maxLength": NAME_MAX},
                    "Only subscriptions that receive this type.",
                ),
                LIMIT,
                CONTINUATION,
            ],
        ),
        Route(
            "get",
            one,
            "GetSubscription",
            "Get a subscription.",
            {"200": ok("The subscription.", subscription_schema())},
            [SUBSCRIPTION_ID],
        ),
        Route(
            "delete",
            one,
            "DeleteSubscription",
            "Delete a subscription (200 for an unknown id too).",
            {"200": ok("Removed.", EMPTY)},
            [
                SUBSCRIPTION_ID,
                param(
                    "query",
                    "registration",
                    {"type": "string", "pattern": "^[1-9][0-9]{0,14}$"},
                    "The registration a subscribe's Location named: a superseded one removes nothing.",
                ),
            ],
        ),
        Route(
            "get",
            one + "/deliveries",
            "ListDeliveries",
            "List a subscription's deliveries.",
            {"200": ok("A page of deliveries.", page_of(delivery_schema(), "deliveries"))},
            [
                SUBSCRIPTION_ID,
                param(
                    "query",
                    "status",
                    {"type": "string", "enum": list(DeliveryStatus)},
                    "Only deliveries in this state.",
                ),
                LIMIT,
                CONTINUATION,
            ],
        ),
        Route(
            "post",
            one + "/secret",
            "RotateSecret",
            "Replace the signing secret.",
            {"200": ok("The new secret.", SECRET)},
            [SUBSCRIPTION_ID],
        ),
        Route(
            "post",
            one + "/activate",
            "ActivateSubscription",
            "Re-activate a disabled subscription.",
            {"200": ok("The subscription.", subscription_schema())},
            [SUBSCRIPTION_ID],
        ),
        Route(
            "post",
            one + "/pause",
            "PauseSubscription",
            "Pause a subscription: its deliveries are held until it is resumed.",
            {"200": ok("The subscription, paused.", subscription_schema())},
            [SUBSCRIPTION_ID],
        ),
        Route(
            "post",
            one + "/resume",
            "ResumeSubscription",
            "Resume a paused subscription: the held deliveries are delivered, in order.",
            {"200": ok("The subscription, active.", subscription_schema())},
            [SUBSCRIPTION_ID],
        ),
        Route(
            "post",
            one + "/test",
            "TestSubscription",
            "Send one test event to this subscription alone.",
            {"202": ok("The test event is on its way.", ACCEPTED)},
            [SUBSCRIPTION_ID],
            body=body_of(TestRequest, {"type": {"pattern": NAME_PATTERN, "maxLength": NAME_MAX}}),
            body_required=False,
        ),
        Route(
            "post",
            one + "/deliveries/{eventId}/resend",
            "ResendDelivery",
            "Deliver one event again to this subscription alone.",
            {"202": ok("The resend is queued.", operation_schema(), LOCATION_RETRY)},
            [SUBSCRIPTION_ID, path_id("eventId", "The event's id.", pattern=ID_PATTERN)],
        ),
        Route(
            "post",
            one + "/replay",
            "Replay",
            "Deliver events again.",
            {"202": ok("The replay runs.", operation_schema(), LOCATION_RETRY)},
            [SUBSCRIPTION_ID],
            body=body_of(
                ReplayRequest,
                {
                    "since": DATE_TIME,
                    "until": DATE_TIME,
                    "eventType": {"pattern": PATTERN_PATTERN, "maxLength": PATTERN_MAX},
                },
            ),
        ),
        Route(
            "get",
            "/operations/{operationId}",
            "GetOperation",
            "Get a replay operation.",
            {
                "200": ok("The replay finished.", operation_schema()),
                "202": ok("The replay is running.", operation_schema(), LOCATION_RETRY),
            },
            [path_id("operationId", "The operation's id.")],
        ),
        Route(
            "post",
            "/unsubscribe",
            "Unsubscribe",
            "Remove a subscription by its callback URL, or by the Logic Apps workflow headers.",
            {"200": ok("Removed, or there was none.", EMPTY)},
            WORKFLOW_HEADERS,
            body=unsubscribe_body(),
            body_required=False,
        ),
        Route(
            "post",
            "/events",
            "Publish",
            "Publish one event, or an array of 1 to 100.",
            {"202": ok("Accepted.", {"oneOf": [ACCEPTED, ACCEPTED_BATCH]})},
            body={
                "oneOf": [
                    event_body(),
                    {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": event_body()},
                ]
            },
        ),
        Route(
            "post",
            "/events/batch",
            "PublishBatch",
            "Publish an array of 1 to 100 events.",
            {"202": ok("Accepted.", ACCEPTED_BATCH)},
            body={"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": event_body()},
        ),
        Route(
            "get",
            "/events/poll",
            "Poll",
            "The polling trigger: events since the state in Location.",
            {
                "200": ok("New events.", POLLED, {"Location": "The URL of the next poll."}),
                "202": ok("Nothing new yet.", None, LOCATION_RETRY),
            },
            [
                param(
                    "query",
                    "eventType",
                    {"type": "string", "pattern": PATTERN_PATTERN, "maxLength": PATTERN_MAX, "default": "*"},
                    "A type, a prefix pattern or *.",
                ),
                param(
                    "query",
                    "triggerState",
                    {"type": "string"},  # empty or left out: a chain that starts now
                    "The state of a Location this relay issued (signed).",
                ),
            ],
        ),
        Route(
            "get",
            "/event-types",
            "ListEventTypes",
            "List the event types.",
            {"200": ok("A page of event types.", EVENT_TYPES)},
            [LIMIT, CONTINUATION],
        ),
        Route(
            "get",
            "/event-types/{name}",
            "GetEventType",
            "Get an event type.",
            {"200": ok("The event type.", event_type_schema())},
            [EVENT_TYPE_NAME],
        ),
        Route(
            "put",
            "/event-types/{name}",
            "PutEventType",
            "Register or replace an event type.",
            {"200": ok("Replaced.", event_type_schema()), "201": ok("Registered.", event_type_schema())},
            [EVENT_TYPE_NAME],
            body=body_of(EventTypeRequest),
        ),
        Route(
            "delete",
            "/event-types/{name}",
            "DeleteEventType",
            "Delete an event type.",
            {"200": ok("Removed.", EMPTY)},
            [EVENT_TYPE_NAME],
        ),
        Route(
            "get",
            "/event-types/{name}/schema",
            "GetEventDataSchema",
            "The data schema of a type or pattern, for the flow designer (200 for any name).",
            {"200": ok("The schema, or null.", DATA_SCHEMA)},
            # Any name without control characters: the designer may pass a pattern or an unregistered type.
            [path_id("name", "A type name, a pattern or anything else.")],
        ),
        Route(
            "get",
            "/stats",
            "GetStats",
            "Delivery statistics for the console.",
            {"200": ok("The statistics.", STATS)},
            [param("query", "window", {"type": "string", "enum": ["1h", "24h"], "default": "1h"}, "The window.")],
        ),
        Route(
            "post",
            "/smoke/runs",
            "OpenSmokeRun",
            "Open a smoke check's run: a signed-receipt hook on the relay's own URL, for 15 minutes.",
            {"201": ok("The run.", SMOKE_RUN, {"Location": "The run's URL."})},
        ),
        Route(
            "get",
            "/smoke/runs/{id}",
            "GetSmokeRun",
            "Read a smoke check's run and its receipts.",
            {"200": ok("The run.", SMOKE_RUN)},
            [path_id("id", "The run's id.")],
        ),
        Route(
            "delete",
            "/smoke/runs/{id}",
            "DeleteSmokeRun",
            "Remove a smoke check's run (200 for an unknown id too).",
            {"200": ok("Removed.", EMPTY)},
            [path_id("id", "The run's id.")],
        ),
        Route(
            "post",
            "/smoke/hook/{id}",
            "SmokeHook",
            "A delivery to a smoke run's hook: recorded only when signed by the subscription of that hook.",
            {"200": ok("Recorded.", EMPTY)},
            [path_id("id", "The run's id.")],
            body={"type": "object"},
            anonymous=True,
        ),
        Route(
            "get", "/health", "GetHealth", "Whether storage answers.", {"200": ok("Healthy.", HEALTH)}, anonymous=True
        ),
        Route(
            "get",
            "/openapi.json",
            "GetConnectorDefinition",
            "The connector definition (Swagger 2.0).",
            {"200": ok("The definition.", DOCUMENT)},
            anonymous=True,
        ),
        Route(
            "get",
            "/openapi/full.json",
            "GetApiDocument",
            "This document.",
            {"200": ok("The document.", DOCUMENT)},
            anonymous=True,
        ),
    ]


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary}
    if route.parameters:
        op["parameters"] = copy.deepcopy(route.parameters)
    if route.body is not None:
        op["requestBody"] = {"required": route.body_required, "content": {"application/json": {"schema": route.body}}}
    problem = {
        "description": "An RFC 9457 problem naming each wrong field.",
        "content": {PROBLEM_MEDIA: {"schema": _openapi3(PROBLEM)}},
    }
    op["responses"] = {**copy.deepcopy(route.responses), "default": problem}
    if route.anonymous:
        op["security"] = []
    return op


def full_document(base: str, auth_mode: str = "keys") -> dict[str, Any]:
    """The OpenAPI 3.0 document of a relay at `base` (`scheme://host[:port]`) in `auth_mode`."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes():
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    if auth_mode == "entra":
        scheme: dict[str, Any] = {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An Entra ID access token for the relay.",
        }
    else:
        scheme = {
            "type": "apiKey",
            "in": "header",
            "name": KEY_HEADER,
            "description": "A function key of the relay's function app.",
        }
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{TITLE} API", "description": DESCRIPTION, "version": __version__},
        "servers": [{"url": f"{base}/api"}],
        "paths": paths,
        "components": {"securitySchemes": {"relay": scheme}},
        "security": [{"relay": []}],
    }
