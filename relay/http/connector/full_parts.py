"""The parts the full API document (`relay.http.connector.full`) is built from: the patterns the
routes enforce, the `Route` record, parameters, answers and request bodies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from relay.core.models import MAX_SOURCE_LENGTH, EventIn, SubscriptionRequest
from relay.core.statuses import DeliveryStatus
from relay.http.cloudevents_in import MAX_ATTRIBUTE_LENGTH, MAX_MEDIA_TYPE, MAX_MEMBERS, MEDIA_TYPE_PATTERN
from relay.http.connector.filterparts import full_filters
from relay.http.connector.parts import (
    NAME_MAX,
    NAME_PATTERN,
    PATTERN_MAX,
    PATTERN_PATTERN,
    URI_REFERENCE,
    cloudevent_schema,
    event_type_schema,
    model_fields,
    obj,
    prop,
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


def openapi3(schema: Any) -> Any:
    """A Swagger 2.0 schema of `parts` as OpenAPI 3.0 says it: `x-nullable` is `nullable`, and the
    designer's `x-ms-*` keys go (they mean nothing to other clients)."""
    if isinstance(schema, list):
        return [openapi3(s) for s in schema]
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
            out[key] = {name: openapi3(sub) for name, sub in value.items()}
        else:
            out[key] = openapi3(value) if isinstance(value, (dict, list)) and key not in ("enum", "required") else value
    return out


def body_of(model: type[BaseModel], rules: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A request body from the model the route validates with: every field, its limits and its
    description, plus the rules its validators apply (`rules`: patterns, formats)."""
    fields, required = model_fields(model)
    properties = {}
    for name, schema in fields.items():
        schema = {**schema, **(rules or {}).get(name, {})}
        properties[name] = openapi3(schema)
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
    # Other media types the body may come as, each with its schema (CloudEvents on /events).
    more_content: dict[str, dict[str, Any]] = field(default_factory=dict)


def param(where: str, name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": openapi3(schema),
    }


def path_id(name: str, description: str, **rules: Any) -> dict[str, Any]:
    return param("path", name, {"type": "string", "pattern": NO_CONTROL, **rules}, description)


def ok(description: str, schema: dict[str, Any] | None = None, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": openapi3(schema)}}
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
    {
        "secret": prop("string", "The new signing secret.", "secret"),
        "previousSecretExpiresAt": prop(
            "string", "When the previous secret stops signing.", "previousSecretExpiresAt", format="date-time"
        ),
    },
    "The subscription with its new secret.",
    ["secret"],
)
HEALTH = obj(
    {"status": prop("string", "ok when storage answers.", "status", enum=["ok"])}, "The relay's health.", ["status"]
)
STATS = {"type": "object", "description": "Delivery counts of the window, for the console."}
DOCUMENT = {"type": "object", "description": "An API document."}


def event_rules() -> dict[str, dict[str, Any]]:
    return {
        "type": {"pattern": NAME_PATTERN, "minLength": 1, "maxLength": NAME_MAX},
        "id": {"pattern": ID_PATTERN, "maxLength": NAME_MAX},
        "source": {"pattern": URI_REFERENCE, "maxLength": MAX_SOURCE_LENGTH},
        "time": DATE_TIME,
        "data": {"nullable": True},
    }


def event_body() -> dict[str, Any]:
    return body_of(EventIn, event_rules())


def cloudevent_in_body() -> dict[str, Any]:
    """One event of the CloudEvents HTTP binding's structured and batched modes, as the relay
    reads it (relay.http.cloudevents_in): attribute names other than these are extensions, whose names
    (lower-case letters and digits) no OpenAPI 3.0 schema can state (tests/schemathesis_hooks.py)."""
    own = event_body()["properties"]
    properties = {
        "specversion": {"type": "string", "enum": ["1.0"], "description": "The CloudEvents version."},
        **{name: own[name] for name in ("id", "source", "type", "subject", "time")},
        "datacontenttype": {
            "type": "string",
            "pattern": f"^{MEDIA_TYPE_PATTERN}$",
            "minLength": 3,
            "maxLength": MAX_MEDIA_TYPE,
            "description": "The media type of data.",
        },
        "dataschema": {"type": "string", "maxLength": MAX_ATTRIBUTE_LENGTH, "description": "The schema of data."},
        "data": {"nullable": True, "description": "The event's payload."},
        "data_base64": {"type": "string", "format": "byte", "description": "The payload as base64 (bytes)."},
    }
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type"],
        "properties": properties,
        "not": {"required": ["data", "data_base64"]},
        "maxProperties": MAX_MEMBERS,
        # Extensions: a string, an integer or a boolean each.
        "additionalProperties": {
            "oneOf": [
                {"type": "string", "maxLength": MAX_ATTRIBUTE_LENGTH},
                {"type": "integer"},
                {"type": "boolean"},
            ]
        },
    }


def subscription_body() -> dict[str, Any]:
    body = body_of(
        SubscriptionRequest,
        {
            "notificationUrl": {"pattern": NOTIFICATION_URL, "maxLength": MAX_URL_LENGTH},
            "eventTypes": {"items": {"type": "string", "pattern": PATTERN_PATTERN, "maxLength": PATTERN_MAX}},
            "eventType": {"pattern": PATTERN_PATTERN, "maxLength": PATTERN_MAX},
        },
    )
    body["properties"]["filters"] = full_filters()  # op by op, not the model's $ref
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


def _nullable(type_: str, description: str, name: str, **more: Any) -> dict[str, Any]:
    return {**prop(type_, description, name, **more), "x-nullable": True}


ATTEMPT = obj(
    {
        "at": prop("string", "When the attempt started.", "at", format="date-time"),
        "durationMs": prop("integer", "How long it took, in milliseconds.", "durationMs"),
        "statusCode": _nullable("integer", "The receiver's HTTP status, or null without an answer.", "statusCode"),
        "error": _nullable("string", "Why it did not succeed, or null.", "error"),
        "response": {
            **obj(
                {
                    "contentType": prop("string", "The answer's content type.", "contentType"),
                    "body": prop("string", "The first 4 KiB of the answer, masked.", "body"),
                },
                "The receiver's answer, or null.",
                ["contentType", "body"],
            ),
            "x-nullable": True,
        },
        "kind": prop("string", "What made it.", "kind", enum=["delivery", "retry", "replay", "resend", "test"]),
    },
    "One attempt.",
    ["at", "durationMs", "statusCode", "error", "response", "kind"],
)
DELIVERY_RECORD = obj(
    {
        "eventId": prop("string", "The event's id.", "eventId"),
        "type": prop("string", "The event's type.", "type"),
        "status": prop("string", "Where the delivery stands.", "status", enum=list(DeliveryStatus)),
        "attempts": prop("array", "Every attempt kept, oldest first.", "attempts", items=ATTEMPT),
        "event": {
            **prop("object", "The event as delivered (a CloudEvent), or null once forgotten.", "event"),
            "x-nullable": True,
        },
        "headers": prop("object", "The content headers it was delivered with.", "headers"),
    },
    "The record of one delivery.",
    ["eventId", "type", "status", "attempts", "event"],
)
