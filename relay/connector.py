"""The Power Platform custom connector: `apiDefinition.swagger.json` and `apiProperties.json`.

Generated, never hand-edited, so it cannot drift from the API: request bodies come from the
pydantic models the routes validate with (`relay.models`), their descriptions included, and the
committed files under `connector/` (the definition, `apiProperties.json` and `icon.png`) are
checked against this module by the tests. `python -m relay connector --host HOST --out connector/`
writes them (options: `--website`, `--privacy-policy`, `--contact-*`, `--certification`,
`--host-parameter`); `GET /api/openapi.json` serves the same definition with `host` and scheme
set to those the request came with.

Power Platform specifics (see the README, "Findings: typed `data` and asynchronous actions", for sources):

- webhook trigger: `x-ms-trigger: single` on `POST /subscriptions`, the notification body on the
  path item as `x-ms-notification-content`, the callback URL as a required, internal body property
  with `x-ms-notification-url`; Power Automate removes the subscription by sending `DELETE` to the
  `Location` of the 201, so `DELETE /subscriptions/{id}` is defined (internal);
- `data` of the notification is typed from the chosen event type's registered schema with
  `x-ms-dynamic-schema` (plus `x-ms-dynamic-properties`, which references a property inside the body
  parameter unambiguously);
- polling trigger: `x-ms-trigger: batch` on `GET /events/poll`; the state travels in `Location`;
- replay is asynchronous by the platform's polling action pattern (202 + `Location` +
  `Retry-After`), which needs no extension: `x-ms-long-running-operation` is an AutoRest extension
  that the Power Platform connector schema does not allow on an operation.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from . import __version__
from .models import EventIn, EventTypeRequest, ReplayRequest, SubscriptionRequest
from .statuses import DeliveryStatus, OperationStatus, SubscriptionStatus

TITLE = "Event Relay"
# Certification: the description names no product of the platform (the store says where it runs).
DESCRIPTION = (
    "Publish events and run flows when they happen: a serverless webhook relay that delivers "
    "each event as a CloudEvent to every subscribed flow, signed, retried and replayable."
)
SECURITY_NAME = "api_key"
KEY_HEADER = "x-functions-key"
BRAND_COLOR = "#3a5f8f"
PUBLISHER = "Event Relay"
# The host of the committed files under connector/ (a placeholder: regenerate with yours).
EXAMPLE_HOST = "your-relay.azurewebsites.net"
DEFINITION_FILE = "apiDefinition.swagger.json"
PROPERTIES_FILE = "apiProperties.json"
ICON_FILE = "icon.png"
ICON_SIZE = 230  # the largest the certification guide takes; square
# The connection parameter that holds the relay's host with --host-parameter.
HOST_PARAMETER = "hostName"
# `type` and `id` of an event, event type names (relay.matching.NAME_RE, as ECMAScript).
NAME_PATTERN = "^[A-Za-z0-9._:\\-]{1,128}$"
NAME_MAX = 128
# A name, a prefix pattern (`order.*`) or `*`, as subscriptions and polls take them.
PATTERN_PATTERN = "^(\\*|[A-Za-z0-9._:\\-]{1,128}(\\.\\*)?)$"
PATTERN_MAX = 130
SUBSCRIPTION_ID_PATTERN = "^[0-9a-f]{32}$"
MAX_BATCH = 100

# operationIds other parts of the definition refer to
LIST_EVENT_TYPES = "ListEventTypes"
GET_EVENT_TYPE = "GetEventType"
# The dynamic-schema source: 200 for any value the designer passes (0.1.0 named GetEventType,
# which answers 404 for `*`, patterns and unregistered types).
GET_DATA_SCHEMA = "GetEventDataSchema"
LIST_SUBSCRIPTIONS = "ListSubscriptions"


@dataclass(frozen=True)
class About:
    """Who publishes the connector: certification asks for a website, a privacy policy and a contact.

    Unset, they point at the relay itself (its console), which is right for a connector used
    inside one organisation; a connector submitted for certification names the publisher's pages.
    """

    website: str | None = None
    privacy_policy: str | None = None
    contact_name: str = TITLE
    contact_email: str | None = None

    def site(self, host: str) -> str:
        return self.website or f"https://{host}/api/console"

    def privacy(self, host: str) -> str:
        return self.privacy_policy or self.site(host)


# Display names (`x-ms-summary`, title case) for property and parameter names.
SUMMARIES = {
    "id": "ID",
    "eventId": "Event ID",
    "notificationUrl": "Notification URL",
    "eventType": "Event Type",
    "eventTypes": "Event Types",
    "specversion": "Spec Version",
    "datacontenttype": "Data Content Type",
    "createdAt": "Created At",
    "lastStatusCode": "Last Status Code",
    "lastError": "Last Error",
    "lastAttemptAt": "Last Attempt At",
    "nextAttemptAt": "Next Attempt At",
    "nextLink": "Next Link",
    "continuationToken": "Continuation Token",
    "triggerState": "Trigger State",
    "schema": "Schema",
    "disabledReason": "Disabled Reason",
    "subjectBeginsWith": "Subject Begins With",
    "subjectEndsWith": "Subject Ends With",
    "once": "Once",
    "value": "Value",
}


def summary_for(name: str) -> str:
    if name in SUMMARIES:
        return SUMMARIES[name]
    return " ".join(w.capitalize() for w in re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).split())


# ---- schemas ------------------------------------------------------------------------------------


def prop(type_: str | None, description: str, name: str, summary: str | None = None, **more: Any) -> dict[str, Any]:
    """One schema property with the description and display name Power Platform asks for."""
    schema: dict[str, Any] = {} if type_ is None else {"type": type_}
    schema.update(more)
    schema["description"] = description
    schema["x-ms-summary"] = summary or summary_for(name)
    return schema


def obj(
    properties: dict[str, dict[str, Any]], description: str, required: list[str] | None = None, **more: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "description": description}
    if required:
        schema["required"] = required
    schema["properties"] = properties
    schema.update(more)
    return schema


def _swagger_property(raw: dict[str, Any]) -> dict[str, Any]:
    """A pydantic (JSON Schema 2020-12) property as Swagger 2.0: optional unions collapse to their
    one non-null type (absence, not null, is how Swagger says optional); titles go."""
    schema = dict(raw)
    if "anyOf" in schema:
        options = [o for o in schema.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express {raw!r} in Swagger 2.0")
        schema = {**options[0], **schema}
    schema.pop("title", None)
    if "default" in schema and schema["default"] is None:
        del schema["default"]
    if schema.get("additionalProperties") is True:
        del schema["additionalProperties"]
    return schema


def model_fields(model: type[BaseModel]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The model's properties (by alias) as Swagger schemas, and its required names."""
    raw = model.model_json_schema(by_alias=True)
    return {name: _swagger_property(p) for name, p in raw["properties"].items()}, list(raw.get("required", []))


def described(model: type[BaseModel], name: str) -> str:
    """The description the model gives a field: the one source of these texts."""
    props, _ = model_fields(model)
    text = props[name].get("description")
    if not text:
        raise ValueError(f"{model.__name__}.{name} has no description")
    return str(text)


def model_schema(
    model: type[BaseModel],
    description: str,
    *,
    only: list[str] | None = None,
    required: list[str] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A body schema from a request model: its fields (or `only` these, in this order), their
    rules and descriptions, plus connector-only keys (`extra`: formats, dropdowns, visibility)."""
    props, model_required = model_fields(model)
    names = only or list(props)
    properties: dict[str, dict[str, Any]] = {}
    for name in names:
        schema = dict(props[name])
        if "description" not in schema:
            raise ValueError(f"{model.__name__}.{name} has no description")
        schema.update((extra or {}).get(name, {}))
        schema.setdefault("x-ms-summary", summary_for(name))
        # description and display name last, as in the schemas built by hand below
        schema["description"] = schema.pop("description")
        schema["x-ms-summary"] = schema.pop("x-ms-summary")
        properties[name] = schema
    needed = [n for n in (required if required is not None else model_required) if n in properties]
    return obj(properties, description, needed)


def event_type_dropdown() -> dict[str, Any]:
    """The event type picked from the registered types (a custom value, such as a pattern, too)."""
    return {
        "x-ms-dynamic-values": {
            "operationId": LIST_EVENT_TYPES,
            "value-collection": "value",
            "value-path": "name",
            "value-title": "name",
        },
        "x-ms-dynamic-list": {
            "operationId": LIST_EVENT_TYPES,
            "itemsPath": "value",
            "itemValuePath": "name",
            "itemTitlePath": "name",
        },
    }


def data_typed_by(parameter: str, reference: str) -> dict[str, Any]:
    """`data` typed from the registered schema of the event type chosen in `parameter`.

    `x-ms-dynamic-schema` names the caller's parameter; `x-ms-dynamic-properties` says the same
    with a full path (`body/eventType`), the only unambiguous way to point into a body parameter.
    """
    return {
        "x-ms-dynamic-schema": {
            "operationId": GET_DATA_SCHEMA,
            "parameters": {"name": {"parameter": parameter}},
            "value-path": "schema",
        },
        "x-ms-dynamic-properties": {
            "operationId": GET_DATA_SCHEMA,
            "parameters": {"name": {"parameterReference": reference}},
            "itemValuePath": "schema",
        },
    }


def cloudevent_schema(data_extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The notification body, CloudEvents 1.0 JSON, as `relay.signing.cloudevent` builds it."""
    return obj(
        {
            "specversion": prop("string", "The CloudEvents specification version, always 1.0.", "specversion"),
            "id": prop(
                "string",
                "The event's id: the same on every delivery and retry, and sent as the "
                "webhook-id header, so a flow can ignore repeats.",
                "id",
                "Event ID",
            ),
            "source": prop("string", "Where the event was published: the relay's events URL.", "source", format="uri"),
            "type": prop("string", described(EventIn, "type"), "type", "Event Type"),
            "subject": prop("string", described(EventIn, "subject"), "subject"),
            "time": prop("string", described(EventIn, "time"), "time", "Event Time", format="date-time"),
            "datacontenttype": prop("string", "The media type of data, always application/json.", "datacontenttype"),
            # No `type`: data is any JSON (object, array, string, number, boolean or null).
            "data": prop(
                None,
                described(EventIn, "data") + " Typed from the event type's registered schema.",
                "data",
                **(data_extensions or {}),
            ),
        },
        "An event as a CloudEvent (CloudEvents 1.0 JSON).",
        ["specversion", "id", "source", "type", "time", "datacontenttype", "data"],
    )


def subscription_schema() -> dict[str, Any]:
    props, _ = model_fields(SubscriptionRequest)

    def from_model(name: str) -> dict[str, Any]:
        return prop(
            None, props[name]["description"], name, **{k: v for k, v in props[name].items() if k in ("type", "items")}
        )

    return obj(
        {
            "id": prop("string", "The subscription's id.", "id", "Subscription ID"),
            "notificationUrl": from_model("notificationUrl"),
            "eventTypes": prop(
                "array", described(SubscriptionRequest, "eventTypes"), "eventTypes", items={"type": "string"}
            ),
            "subjectBeginsWith": from_model("subjectBeginsWith"),
            "subjectEndsWith": from_model("subjectEndsWith"),
            "description": from_model("description"),
            "once": from_model("once"),
            "contentMode": prop(
                "string",
                described(SubscriptionRequest, "contentMode"),
                "contentMode",
                enum=["json", "structured", "binary"],
            ),
            "status": prop(
                "string",
                "Whether it receives events: active, or disabled after its receiver said it is gone.",
                "status",
                enum=list(SubscriptionStatus),
            ),
            "disabledReason": prop("string", "Why it was disabled.", "disabledReason"),
            "createdAt": prop("string", "When it was created.", "createdAt", format="date-time"),
            "secret": prop(
                "string",
                "The key that signs its deliveries (webhook-signature); only in the "
                "answer that created the subscription.",
                "secret",
            ),
        },
        "A subscription: where matching events are delivered.",
        ["id", "notificationUrl", "eventTypes", "once", "status", "createdAt"],
    )


def event_type_schema() -> dict[str, Any]:
    return obj(
        {
            "name": prop("string", "The event type's name.", "name"),
            "description": prop("string", described(EventTypeRequest, "description"), "description"),
            "schema": prop("object", described(EventTypeRequest, "schema"), "schema"),
        },
        "A registered event type.",
        ["name"],
    )


def delivery_schema() -> dict[str, Any]:
    return obj(
        {
            "eventId": prop("string", "The event's id.", "eventId"),
            "eventType": prop("string", "The event's type.", "eventType"),
            "status": prop("string", "Where the delivery stands.", "status", enum=list(DeliveryStatus)),
            "attempts": prop("integer", "How many attempts were made.", "attempts", format="int32"),
            "lastStatusCode": prop("integer", "The HTTP status of the last attempt.", "lastStatusCode", format="int32"),
            "lastError": prop("string", "Why the last attempt did not succeed.", "lastError"),
            "lastAttemptAt": prop("string", "When the last attempt was made.", "lastAttemptAt", format="date-time"),
            "nextAttemptAt": prop("string", "When the next attempt is due.", "nextAttemptAt", format="date-time"),
        },
        "The delivery of one event to one subscription.",
        ["eventId", "eventType", "status", "attempts"],
    )


def operation_schema() -> dict[str, Any]:
    return obj(
        {
            "id": prop("string", "The replay operation's id.", "id"),
            "status": prop("string", "Where the replay stands.", "status", enum=list(OperationStatus)),
            "replayed": prop("integer", "How many events were sent again.", "replayed", format="int32"),
            "error": prop("string", "Why the replay could not finish.", "error"),
        },
        "A replay operation.",
        ["id", "status"],
    )


def page_of(item: dict[str, Any], what: str) -> dict[str, Any]:
    return obj(
        {
            "value": prop("array", f"The {what}.", "value", items=item),
            "nextLink": prop("string", "The URL of the next page; absent on the last page.", "nextLink", format="uri"),
        },
        f"A page of {what}.",
        ["value"],
    )


PROBLEM = obj(
    {
        "type": prop("string", "A URI naming the kind of problem.", "type"),
        "title": prop("string", "A short summary of the kind of problem.", "title"),
        "status": prop("integer", "The HTTP status code.", "status", format="int32"),
        "detail": prop("string", "What went wrong with this request.", "detail"),
        "errors": prop(
            "array",
            "Each field that is wrong.",
            "errors",
            items=obj(
                {
                    "field": prop("string", "The field's name or path.", "field"),
                    "message": prop("string", "What is wrong with it.", "message"),
                },
                "One wrong field.",
            ),
        ),
    },
    "An RFC 9457 problem.",
)


# ---- parameters and responses -------------------------------------------------------------------


def path_param(name: str, description: str, summary: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "type": "string",
        "x-ms-url-encoding": "single",
        "description": description,
        "x-ms-summary": summary or summary_for(name),
    }


def query_param(name: str, type_: str, description: str, **more: Any) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": False, "type": type_}
    param.update(more)
    param["description"] = description
    param["x-ms-summary"] = summary_for(name)
    return param


def body_param(schema: dict[str, Any], description: str, summary: str) -> dict[str, Any]:
    return {
        "name": "body",
        "in": "body",
        "required": True,
        "schema": schema,
        "description": description,
        "x-ms-summary": summary,
    }


SUBSCRIPTION_ID = {**path_param("id", "The subscription's id.", "Subscription ID"), "pattern": SUBSCRIPTION_ID_PATTERN}
EVENT_TYPE_NAME = {
    **path_param("name", "The event type's name.", "Event Type"),
    "pattern": NAME_PATTERN,
    "maxLength": NAME_MAX,
}
LIMIT = query_param(
    "limit",
    "integer",
    "How many items one page holds, 1 to 1000.",
    format="int32",
    minimum=1,
    maximum=1000,
    default=100,
    **{"x-ms-visibility": "advanced"},
)
CONTINUATION = query_param(
    "continuationToken",
    "string",
    "Where the previous page ended, from its nextLink.",
    **{"x-ms-visibility": "advanced"},
)

LOCATION = {"type": "string", "description": "The URL to ask next.", "x-ms-summary": "Location"}
RETRY_AFTER = {"type": "integer", "description": "Seconds to wait before asking again.", "x-ms-summary": "Retry After"}


def response(
    description: str, schema: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["schema"] = schema
    if headers:
        out["headers"] = headers
    return out


def failures() -> dict[str, Any]:
    # Certification: a `default` response carries no schema (the problem's shape is PROBLEM,
    # kept in code for the tests; `produces` names its media type).
    return {
        "default": response(
            "The request failed: an RFC 9457 problem (application/problem+json) whose errors name each wrong field."
        )
    }


def operation(
    operation_id: str,
    summary: str,
    description: str,
    parameters: list[dict[str, Any]],
    responses: dict[str, Any],
    *,
    visibility: str = "advanced",
    **extensions: Any,
) -> dict[str, Any]:
    """An operation; every one says how visible it is (certification), `advanced` unless told."""
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "description": description}
    op.update(extensions)
    op["x-ms-visibility"] = visibility
    op["parameters"] = parameters
    op["responses"] = {**responses, **failures()}
    return op


# ---- the definition -----------------------------------------------------------------------------


def _subscribe_trigger() -> dict[str, Any]:
    body = model_schema(
        SubscriptionRequest,
        "What to subscribe: the flow's callback URL and which events start it.",
        only=["notificationUrl", "eventType", "subjectBeginsWith", "subjectEndsWith", "description"],
        required=["notificationUrl", "eventType"],
        extra={
            "notificationUrl": {"x-ms-notification-url": True, "x-ms-visibility": "internal"},
            "eventType": {
                **event_type_dropdown(),
                "pattern": PATTERN_PATTERN,
                "maxLength": PATTERN_MAX,
                "x-ms-visibility": "important",
            },
            "subjectBeginsWith": {"x-ms-visibility": "advanced"},
            "subjectEndsWith": {"x-ms-visibility": "advanced"},
            "description": {"x-ms-visibility": "advanced"},
        },
    )
    return operation(
        "OnEventPublished",
        "When an event is published",
        "Starts the flow for each published event of the chosen type, delivered as a CloudEvent.",
        [body_param(body, "The subscription to register for this flow.", "Subscription")],
        {
            "201": response(
                "The subscription; its Location is what removes it.",
                subscription_schema(),
                {"Location": {"type": "string", "description": "The subscription's URL.", "x-ms-summary": "Location"}},
            )
        },
        visibility="important",
        **{"x-ms-trigger": "single", "x-ms-trigger-hint": "To see it work now, publish an event of the chosen type."},
    )


def _poll_trigger() -> dict[str, Any]:
    trigger: dict[str, Any] = {
        "x-ms-trigger": "batch",
        "x-ms-trigger-metadata": {"kind": "query", "mode": "polling"},
        "x-ms-trigger-hint": "To see it work now, publish an event of the chosen type.",
    }
    events = obj(
        {
            "value": prop(
                "array",
                "The new events, oldest first, at most 100.",
                "value",
                items=cloudevent_schema(data_typed_by("eventType", "eventType")),
            )
        },
        "Events published since the last poll.",
        ["value"],
    )
    return operation(
        "OnEventsPolled",
        "When an event is published (polling)",
        "Checks for new events of the chosen type on the flow's schedule, for when a webhook cannot reach the flow.",
        [
            query_param(
                "eventType",
                "string",
                described(SubscriptionRequest, "eventType"),
                default="*",
                pattern=PATTERN_PATTERN,
                maxLength=PATTERN_MAX,
                **event_type_dropdown(),
                **{"x-ms-visibility": "important"},
            ),
            query_param(
                "triggerState",
                "string",
                "Where the previous poll ended; the relay sends it in the Location "
                "header and the platform sends it back.",
                **{"x-ms-visibility": "internal"},
            ),
        ],
        {
            "200": response("New events.", events, {"Location": LOCATION, "Retry-After": RETRY_AFTER}),
            "202": response("Nothing new yet.", None, {"Location": LOCATION, "Retry-After": RETRY_AFTER}),
        },
        **trigger,
    )


def event_in_schema(description: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """An event to publish; `data` is any JSON, typed from the chosen type's schema where given."""
    name_rule = {"pattern": NAME_PATTERN, "minLength": 1, "maxLength": NAME_MAX}
    return model_schema(
        EventIn,
        description,
        extra={
            "type": {
                **event_type_dropdown(),
                **name_rule,
                "x-ms-visibility": "important",
                "x-ms-summary": "Event Type",
            },
            "data": {**(data or {}), "x-ms-visibility": "important"},
            "id": {**name_rule, "x-ms-visibility": "advanced"},
            "source": {"x-ms-visibility": "advanced"},
            "time": {"format": "date-time", "x-ms-visibility": "advanced"},
        },
    )


def _publish() -> dict[str, Any]:
    return operation(
        "PublishEvent",
        "Publish an event",
        "Publishes an event to every subscription that matches its type and subject.",
        [
            body_param(
                event_in_schema("The event to publish.", data_typed_by("type", "body/type")),
                "The event to publish.",
                "Event",
            )
        ],
        {
            "202": response(
                "Accepted: the event will be delivered.",
                obj({"id": prop("string", "The event's id.", "id")}, "The accepted event.", ["id"]),
            )
        },
        visibility="important",
    )


def _publish_batch() -> dict[str, Any]:
    # Swagger 2.0 has no oneOf, so the array form of POST /events is its own operation on a path
    # that takes only arrays (the relay serves both).
    batch = {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_BATCH,
        "items": event_in_schema("One event of the batch."),
        "description": f"The events to publish, 1 to {MAX_BATCH}.",
        "x-ms-summary": "Events",
    }
    accepted = obj(
        {
            "value": prop(
                "array",
                "The accepted events' ids, in the order sent.",
                "value",
                items=obj({"id": prop("string", "The event's id.", "id")}, "One accepted event.", ["id"]),
            )
        },
        "The accepted events.",
        ["value"],
    )
    return operation(
        "PublishEvents",
        "Publish several events",
        f"Publishes up to {MAX_BATCH} events in one call: all are accepted, or none.",
        [
            {
                "name": "body",
                "in": "body",
                "required": True,
                "schema": batch,
                "description": "The events to publish.",
                "x-ms-summary": "Events",
            }
        ],
        {"202": response("Accepted: the events will be delivered.", accepted)},
    )


def _data_schema() -> dict[str, Any]:
    nullable: dict[str, Any] = {"x-nullable": True}
    answer = obj(
        {
            "name": prop("string", "The event type or pattern asked about.", "name"),
            "schema": prop(
                "object",
                "The Swagger 2.0 form of the registered schema of data; null when the "
                "type has none, is not registered, or is a pattern.",
                "schema",
                **nullable,
            ),
        },
        "The schema of the data of an event type.",
        ["name", "schema"],
    )
    name = {
        **path_param("name", "An event type name, a prefix pattern such as order.*, or *.", "Event Type"),
        "maxLength": 1024,
    }
    return operation(
        GET_DATA_SCHEMA,
        "Get the data schema of an event type",
        "Gets the schema of data for the chosen event type, for typing it in the designer; answers for "
        "any value, with a null schema where there is none.",
        [name],
        {"200": response("The schema, or null.", answer)},
        visibility="internal",
    )


def definition(host: str, scheme: str = "https", about: About | None = None) -> dict[str, Any]:
    """The Swagger 2.0 connector definition for a relay reached at `scheme://host` (`name[:port]`)."""
    about = about or About()
    id_path = "/subscriptions/{id}"
    contact = {"name": about.contact_name, "url": about.site(host)}
    if about.contact_email:
        contact["email"] = about.contact_email
    return {
        "swagger": "2.0",
        "info": {"title": TITLE, "description": DESCRIPTION, "version": __version__, "contact": contact},
        "host": host,
        "basePath": "/api",
        "schemes": [scheme],
        "consumes": ["application/json"],
        "produces": ["application/json", "application/problem+json"],
        "paths": {
            "/subscriptions": {
                "x-ms-notification-content": {
                    "description": "The published event, as a CloudEvent.",
                    "schema": cloudevent_schema(data_typed_by("eventType", "body/eventType")),
                },
                "post": _subscribe_trigger(),
                "get": operation(
                    LIST_SUBSCRIPTIONS,
                    "List subscriptions",
                    "Lists the subscriptions, optionally only those for one event type.",
                    [
                        query_param(
                            "eventType",
                            "string",
                            "Only subscriptions that receive this event type.",
                            pattern=NAME_PATTERN,
                            maxLength=NAME_MAX,
                        ),
                        LIMIT,
                        CONTINUATION,
                    ],
                    {"200": response("A page of subscriptions.", page_of(subscription_schema(), "subscriptions"))},
                ),
            },
            id_path: {
                "get": operation(
                    "GetSubscription",
                    "Get a subscription",
                    "Gets a subscription: its filters and whether it is active.",
                    [SUBSCRIPTION_ID],
                    {"200": response("The subscription.", subscription_schema())},
                ),
                "delete": operation(
                    "DeleteSubscription",
                    "Delete a subscription",
                    "Removes a subscription; nothing more is delivered to it.",
                    [SUBSCRIPTION_ID],
                    {"200": response("Removed, or there was none.")},
                    visibility="internal",
                ),
            },
            id_path + "/secret": {
                "post": operation(
                    "RotateSubscriptionSecret",
                    "Rotate the secret of a subscription",
                    "Replaces the key that signs a subscription's deliveries and returns the new one, once.",
                    [SUBSCRIPTION_ID],
                    {
                        "200": response(
                            "The new secret.",
                            obj(
                                {
                                    "secret": prop(
                                        "string", "The new key that signs its deliveries (webhook-signature).", "secret"
                                    )
                                },
                                "The subscription's new secret.",
                                ["secret"],
                            ),
                        )
                    },
                ),
            },
            id_path + "/deliveries": {
                "get": operation(
                    "ListDeliveries",
                    "List deliveries of a subscription",
                    "Lists what was delivered to a subscription, newest first, with each attempt's outcome.",
                    [
                        SUBSCRIPTION_ID,
                        query_param("status", "string", "Only deliveries in this state.", enum=list(DeliveryStatus)),
                        LIMIT,
                        CONTINUATION,
                    ],
                    {"200": response("A page of deliveries.", page_of(delivery_schema(), "deliveries"))},
                ),
            },
            id_path + "/replay": {
                "post": operation(
                    "ReplayDeliveries",
                    "Replay deliveries of a subscription",
                    "Delivers events again, with their original ids, and waits until all are sent.",
                    [
                        SUBSCRIPTION_ID,
                        body_param(
                            model_schema(
                                ReplayRequest,
                                "Which events to deliver again.",
                                extra={"since": {"format": "date-time"}, "until": {"format": "date-time"}},
                            ),
                            "Which events to deliver again.",
                            "Replay",
                        ),
                    ],
                    {
                        "200": response("The replay finished.", operation_schema()),
                        "202": response(
                            "The replay is running; the platform polls Location until it ends.",
                            operation_schema(),
                            {"Location": LOCATION, "Retry-After": RETRY_AFTER},
                        ),
                    },
                ),
            },
            "/operations/{operationId}": {
                "get": operation(
                    "GetReplayOperation",
                    "Get a replay operation",
                    "Gets the state of a replay; the platform polls it after a replay is accepted.",
                    [path_param("operationId", "The replay operation's id.", "Operation ID")],
                    {
                        "200": response("The replay finished.", operation_schema()),
                        "202": response(
                            "The replay is still running.",
                            operation_schema(),
                            {"Location": LOCATION, "Retry-After": RETRY_AFTER},
                        ),
                    },
                    visibility="internal",
                ),
            },
            "/events": {"post": _publish()},
            "/events/batch": {"post": _publish_batch()},
            "/events/poll": {"get": _poll_trigger()},
            "/event-types": {
                "get": operation(
                    LIST_EVENT_TYPES,
                    "List event types",
                    "Lists the registered event types, for choosing one from a list.",
                    [],
                    {
                        "200": response(
                            "The event types.",
                            obj(
                                {"value": prop("array", "The event types.", "value", items=event_type_schema())},
                                "The registered event types.",
                                ["value"],
                            ),
                        )
                    },
                    visibility="internal",
                ),
            },
            "/event-types/{name}": {
                "get": operation(
                    GET_EVENT_TYPE,
                    "Get an event type",
                    "Gets an event type and the schema of its data.",
                    [EVENT_TYPE_NAME],
                    {"200": response("The event type.", event_type_schema())},
                    visibility="internal",
                ),
            },
            "/event-types/{name}/schema": {"get": _data_schema()},
        },
        "securityDefinitions": {
            SECURITY_NAME: {
                "type": "apiKey",
                "in": "header",
                "name": KEY_HEADER,
                "description": "A function key of the relay's function app.",
            },
        },
        "security": [{SECURITY_NAME: []}],
        "x-ms-connector-metadata": [
            {"propertyName": "Website", "propertyValue": about.site(host)},
            {"propertyName": "Privacy policy", "propertyValue": about.privacy(host)},
            {"propertyName": "Categories", "propertyValue": "IT Operations;Productivity"},
        ],
    }


def properties(
    *, certification: bool = False, publisher: str = PUBLISHER, host_parameter: bool = False
) -> dict[str, Any]:
    """`apiProperties.json`: the connection asks for a function key, sent as `x-functions-key`.

    `publisher`/`stackOwner` only for a certification submission: `paconn update` refuses a file
    that carries `stackOwner`. With `host_parameter`, the connection also asks for the relay's
    host and the `dynamichosturl` policy sends every call there, so one connector serves many relays.
    """
    parameters: dict[str, Any] = {}
    if host_parameter:
        parameters[HOST_PARAMETER] = {
            "type": "string",
            "uiDefinition": {
                "displayName": "Relay host",
                "description": "The host name of the relay's function app, such as myrelay.azurewebsites.net.",
                "tooltip": "The function app's default domain, or the custom domain in front of it.",
                "constraints": {"tabIndex": 1, "clearText": True, "required": "true"},
            },
        }
    parameters[SECURITY_NAME] = {
        "type": "securestring",
        "uiDefinition": {
            "displayName": "Function key",
            "description": "A function key of the relay's function app.",
            "tooltip": "In the Azure portal: the function app, App keys, then a host key such as "
            "default (or: az functionapp keys list).",
            "constraints": {"tabIndex": 2, "clearText": False, "required": "true"},
        },
    }
    props: dict[str, Any] = {"connectionParameters": parameters, "iconBrandColor": BRAND_COLOR, "capabilities": []}
    if host_parameter:
        # The template replaces the whole backend URL, host and basePath.
        props["policyTemplateInstances"] = [
            {
                "templateId": "dynamichosturl",
                "title": "Route to the connection's relay",
                "parameters": {
                    "x-ms-apimTemplateParameter.urlTemplate": f"https://@connectionParameters('{HOST_PARAMETER}')/api"
                },
            }
        ]
    if certification:
        props["publisher"] = publisher
        props["stackOwner"] = publisher
    return {"properties": props}


# ---- the icon -----------------------------------------------------------------------------------


def _png(width: int, height: int, rows: list[bytes]) -> bytes:
    """An 8-bit RGB PNG, written by hand so the bytes depend on nothing but this code and zlib."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + row for row in rows)  # filter 0 on every row
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def icon() -> bytes:
    """`icon.png`: square, the brand colour edge to edge, a white mark: a source dot sending an
    arrow to a ring (an event relayed to a subscriber)."""
    size = ICON_SIZE
    background = bytes.fromhex(BRAND_COLOR[1:])
    white = b"\xff\xff\xff"
    mid = size / 2

    def mark(x: float, y: float) -> bool:
        dot = (x - 62) ** 2 + (y - mid) ** 2 <= 22**2
        ring = 26**2 <= (x - 168) ** 2 + (y - mid) ** 2 <= 38**2
        shaft = 84 <= x <= 112 and abs(y - mid) <= 7
        head = 110 <= x <= 130 and abs(y - mid) <= (130 - x) * 1.1
        return dot or ring or shaft or head

    rows = [b"".join(white if mark(x + 0.5, y + 0.5) else background for x in range(size)) for y in range(size)]
    return _png(size, size, rows)


def render(document: dict[str, Any]) -> str:
    """The committed form: 2-space indent, keys in generation order, UTF-8, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_files(
    host: str,
    out: Path,
    *,
    about: About | None = None,
    certification: bool = False,
    publisher: str = PUBLISHER,
    host_parameter: bool = False,
) -> list[Path]:
    """Write `apiDefinition.swagger.json`, `apiProperties.json` and `icon.png` into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    documents = (
        (DEFINITION_FILE, definition(host, about=about)),
        (PROPERTIES_FILE, properties(certification=certification, publisher=publisher, host_parameter=host_parameter)),
    )
    for name, document in documents:
        path = out / name
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    path = out / ICON_FILE
    path.write_bytes(icon())
    written.append(path)
    return written


# ---- Microsoft Entra ID sign-in (RELAY_AUTH=entra) ------------------------------------------------
#
# `python -m relay connector --auth entra --client-id <id> --resource <application ID URI>`: the
# same operations, but the connection signs the maker in with Microsoft Entra ID (OAuth 2.0,
# identity provider `aad`), as certified connectors in front of App Service APIs do, so every
# operation (the webhook subscribe and its DELETE included) runs as the maker, with the maker's
# app roles. Kept apart from the key-based definition above: the committed files stay keys mode.

ENTRA_SECURITY_NAME = "oauth2-auth"
ENTRA_LOGIN = "https://login.microsoftonline.com"
ENTRA_SCOPE = "user_impersonation"  # the delegated scope infra/entra/api.json exposes
# Per-connector redirect URIs (https://global.consent.azure-apim.net/redirect/<connector>) are the
# platform's rule for new OAuth connectors; the exact URL is known once the connector exists.
ENTRA_REDIRECT_MODE = "GlobalPerConnector"


def entra_scope(resource: str) -> str:
    return f"{resource.rstrip('/')}/{ENTRA_SCOPE}"


def entra_definition(host: str, resource: str) -> dict[str, Any]:
    """The definition with OAuth 2.0 (Microsoft Entra ID) instead of the function key."""
    document = definition(host)
    document["securityDefinitions"] = {
        ENTRA_SECURITY_NAME: {
            "type": "oauth2",
            "flow": "accessCode",
            # The platform signs in through the `aad` provider of apiProperties; these name the
            # same endpoints for tools that read only the Swagger.
            "authorizationUrl": f"{ENTRA_LOGIN}/common/oauth2/authorize",
            "tokenUrl": f"{ENTRA_LOGIN}/common/oauth2/token",
            "scopes": {entra_scope(resource): "Call the relay as the signed-in user, with that user's relay roles."},
            "description": "Sign in with Microsoft Entra ID; the relay checks the user's app roles.",
        },
    }
    document["security"] = [{ENTRA_SECURITY_NAME: []}]
    return document


def entra_properties(client_id: str, resource: str, tenant: str = "common") -> dict[str, Any]:
    """`apiProperties.json` whose connection signs in with Microsoft Entra ID (`aad`)."""
    document = properties()
    document["properties"]["connectionParameters"] = {
        "token": {
            "type": "oauthSetting",
            "oAuthSettings": {
                "identityProvider": "aad",
                "clientId": client_id,
                "scopes": [entra_scope(resource)],
                "redirectMode": ENTRA_REDIRECT_MODE,
                "properties": {"IsFirstParty": "False"},
                "customParameters": {
                    "resourceUri": {"value": resource},
                    "loginUri": {"value": ENTRA_LOGIN},
                    "tenantId": {"value": tenant},
                },
            },
            "uiDefinition": {
                "displayName": "Sign in with Microsoft Entra ID",
                "description": "The account the connection acts as; its relay app roles decide what it may do.",
                "tooltip": "Sign in with your work account.",
                "constraints": {"required": "true"},
            },
        },
    }
    return document


def write_entra_files(host: str, out: Path, client_id: str, resource: str, tenant: str = "common") -> list[Path]:
    """Write the Entra ID sign-in variant of the two files into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in (
        (DEFINITION_FILE, entra_definition(host, resource)),
        (PROPERTIES_FILE, entra_properties(client_id, resource, tenant)),
    ):
        path = out / name
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written
