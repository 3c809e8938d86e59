"""Building blocks of both API documents: the connector definition (`relay.http.connector.definition`,
Swagger 2.0 with the Power Platform extensions) and the full API document (`relay.http.connector.full`).

Request bodies come from the pydantic models the routes validate with (`relay.core.models`), their
rules and descriptions included, so neither document can drift from what the relay accepts.
Descriptions are plain text: the flow designer shows Markdown (backticks) literally, and the
certification rules refuse product names of the platform anywhere in the definition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from relay.core.models import EventIn, EventTypeRequest, SubscriptionRequest
from relay.core.statuses import DeliveryStatus, OperationStatus, SubscriptionStatus

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
# The host of the committed files under connector/: a placeholder under the `.example` top-level
# domain, which RFC 2606/6761 reserve and no resolver answers, so a connector imported unchanged
# sends its key nowhere (a name under azurewebsites.net could be registered by anyone).
EXAMPLE_HOST = "your-relay.example"
# The connection parameter that holds the relay's host with --host-parameter.
HOST_PARAMETER = "hostName"
# `type` and `id` of an event, event type names (relay.core.matching.NAME_RE, as ECMAScript).
NAME_PATTERN = "^[A-Za-z0-9._:\\-]{1,128}$"
NAME_MAX = 128
# A name, a prefix pattern (`order.*`) or `*`, as subscriptions and polls take them.
PATTERN_PATTERN = "^(\\*|[A-Za-z0-9._:\\-]{1,128}(\\.\\*)?)$"
PATTERN_MAX = 130
SUBSCRIPTION_ID_PATTERN = "^[0-9a-f]{32}$"
# RFC 3986 URI-reference (relay.core.models.is_uri_reference): these characters, `%` only in an escape.
URI_REFERENCE = "^([A-Za-z0-9\\-._~:/?#@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+$"
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

    Unset, the website and privacy policy point at the relay itself (its console), which serves a
    connector used inside one organisation; a certification submission must name the publisher's
    own pages and a contact email (`missing_for_certification`, which the command line enforces).
    """

    website: str | None = None
    privacy_policy: str | None = None
    contact_name: str = TITLE
    contact_email: str | None = None

    def site(self, host: str) -> str:
        return self.website or f"https://{host}/api/console"

    def privacy(self, host: str) -> str:
        return self.privacy_policy or self.site(host)

    def missing_for_certification(self) -> list[str]:
        """The command-line options a certification submission needs and this leaves unset."""
        given = (("--website", self.website), ("--privacy-policy", self.privacy_policy))
        return [name for name, value in (*given, ("--contact-email", self.contact_email)) if not value]


# Display names (x-ms-summary, title case) for property and parameter names.
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
    "disabledBy": "Disabled By",
    "disabledAt": "Disabled At",
    "maxPerSecond": "Max Per Second",
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
    """The notification body, CloudEvents 1.0 JSON, as `relay.outbound.signing.cloudevent` builds it."""
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
            # A URI-reference (/erp/orders, urn:...), as publishers may send: not format uri.
            "source": prop("string", described(EventIn, "source"), "source"),
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


GRACE_ENDS = "When the previous secret stops signing beside the new one (a rotation's grace); absent without one."
SECRET_SHOWN = "The key that signs its deliveries (webhook-signature); only in the answer that created it."


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
            # Its conditions as subscribed (path, op, value): see the trigger's Filters input.
            "filters": prop("object", described(SubscriptionRequest, "filters"), "filters"),
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
            "disabledBy": prop(
                "string", "Who disabled it: relay when its deliveries all failed for too long.", "disabledBy"
            ),
            "disabledAt": prop("string", "When it was disabled.", "disabledAt", format="date-time"),
            "maxPerSecond": prop("number", described(SubscriptionRequest, "maxPerSecond"), "maxPerSecond"),
            "createdAt": prop("string", "When it was created.", "createdAt", format="date-time"),
            "previousSecretExpiresAt": prop("string", GRACE_ENDS, "previousSecretExpiresAt", format="date-time"),
            "secret": prop("string", SECRET_SHOWN, "secret"),
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
