"""The Power Platform custom connector definition, `apiDefinition.swagger.json` (Swagger 2.0).

Generated, never hand-edited: `python -m relay connector` writes it (`relay.http.connector.files`),
`GET /api/openapi.json` serves it for the running auth mode, and the tests hold the committed
copy under `connector/` to this module.

Power Platform specifics (docs/power-platform.md has the sources):

- webhook trigger: `x-ms-trigger: single` on `POST /subscriptions`, the notification body on the
  path item as `x-ms-notification-content`, the callback URL as a required, internal body property
  with `x-ms-notification-url`; the platform removes the subscription by sending `DELETE` to the
  `Location` of the 201, so `DELETE /subscriptions/{id}` is defined (internal);
- `data` of the notification is typed from the chosen event type's registered schema with
  `x-ms-dynamic-schema` (plus `x-ms-dynamic-properties`, which references a property inside the body
  parameter unambiguously);
- polling trigger: `x-ms-trigger: batch` on `GET /events/poll`; the state travels in `Location`;
- replay is asynchronous by the platform's polling action pattern (202 + `Location` +
  `Retry-After`), which needs no extension: `x-ms-long-running-operation` is an AutoRest extension
  that the Power Platform connector schema does not allow on an operation;
- certification validator rules the schema cannot say: one response with a schema per operation
  (OperationHasManyResponsesWithSchema), a dynamic call's required input fed by a required
  parameter (OperationParameterRequiredMismatch), `x-ms-capabilities.testConnection`, and
  `x-ms-pageable` on the operations that answer a `nextLink`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay import __version__
from relay.core.models import EventIn, ReplayRequest, SubscriptionRequest
from relay.core.statuses import DeliveryStatus
from relay.http.connector.parts import (
    CONTINUATION,
    DESCRIPTION,
    EVENT_TYPE_NAME,
    GET_DATA_SCHEMA,
    GET_EVENT_TYPE,
    KEY_HEADER,
    LIMIT,
    LIST_EVENT_TYPES,
    LIST_SUBSCRIPTIONS,
    LOCATION,
    MAX_BATCH,
    NAME_MAX,
    NAME_PATTERN,
    PATTERN_MAX,
    PATTERN_PATTERN,
    RETRY_AFTER,
    SECURITY_NAME,
    SUBSCRIPTION_ID,
    TITLE,
    URI_REFERENCE,
    About,
    body_param,
    cloudevent_schema,
    data_typed_by,
    delivery_schema,
    described,
    event_type_dropdown,
    event_type_schema,
    model_schema,
    obj,
    operation,
    operation_schema,
    page_of,
    path_param,
    prop,
    query_param,
    response,
    subscription_schema,
)

# The operation the platform calls when a connection is made, so a wrong key or a sign-in without
# a relay role fails there and then, not later as a 401 in a dropdown: cheap, no inputs, and open
# to every role (publishers and subscribers may both read event types).
TEST_CONNECTION = LIST_EVENT_TYPES
# The operations that answer a page with `nextLink` (x-ms-pageable, and the updatenextlink policy
# of apiProperties.json, which points the link back through the connector).
PAGEABLE = (LIST_SUBSCRIPTIONS, "ListDeliveries")
NEXT_LINK = "nextLink"

# ---- Microsoft Entra ID sign-in (RELAY_AUTH=entra) ------------------------------------------------
#
# `python -m relay connector --auth entra --client-id <id> --resource <application ID URI>
# --tenant <tenant>`: the same operations, but the connection signs the maker in with Microsoft
# Entra ID (OAuth 2.0, identity provider `aad`), as certified connectors in front of App Service
# APIs do, so every operation (the webhook subscribe and its DELETE included) runs as the maker,
# with the maker's app roles.

ENTRA_SECURITY_NAME = "oauth2-auth"
ENTRA_LOGIN = "https://login.microsoftonline.com"
ENTRA_SCOPE = "user_impersonation"  # the delegated scope infra/entra/api.json exposes


@dataclass(frozen=True)
class EntraSignIn:
    """What the OAuth 2.0 variant needs: the relay's Application ID URI (the token's resource), the
    tenant whose accounts sign in, and the connector's own app registration (apiProperties.json
    only; the served definition does not need it). The tenant is never `common`: the relay's app
    is single-tenant (az ad app create --sign-in-audience AzureADMyOrg), and signing in to it
    through the common endpoint fails with AADSTS50194."""

    resource: str
    tenant: str
    client_id: str = ""

    @property
    def scope(self) -> str:
        return entra_scope(self.resource)

    @property
    def authorization_url(self) -> str:
        return f"{ENTRA_LOGIN}/{self.tenant}/oauth2/authorize"

    @property
    def token_url(self) -> str:
        return f"{ENTRA_LOGIN}/{self.tenant}/oauth2/token"


def entra_scope(resource: str) -> str:
    return f"{resource.rstrip('/')}/{ENTRA_SCOPE}"


def security(entra: EntraSignIn | None) -> dict[str, Any]:
    """`securityDefinitions` and `security`: the function key, or Entra ID sign-in."""
    if entra is None:
        definitions: dict[str, Any] = {
            SECURITY_NAME: {
                "type": "apiKey",
                "in": "header",
                "name": KEY_HEADER,
                "description": "A function key of the relay's function app.",
            },
        }
        name = SECURITY_NAME
    else:
        definitions = {
            ENTRA_SECURITY_NAME: {
                "type": "oauth2",
                "flow": "accessCode",
                # The platform signs in through the `aad` provider of apiProperties; these name the
                # same endpoints, of the relay's tenant, for tools that read only the Swagger.
                "authorizationUrl": entra.authorization_url,
                "tokenUrl": entra.token_url,
                "scopes": {entra.scope: "Call the relay as the signed-in user, with that user's relay roles."},
                "description": "Sign in with Microsoft Entra ID; the relay checks the user's app roles.",
            },
        }
        name = ENTRA_SECURITY_NAME
    return {"securityDefinitions": definitions, "security": [{name: []}]}


def _subscribe_trigger() -> dict[str, Any]:
    body = model_schema(
        SubscriptionRequest,
        "What to subscribe: the flow's callback URL and which events start it.",
        only=["notificationUrl", "eventType", "subjectBeginsWith", "subjectEndsWith", "description", "maxPerSecond"],
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
            # A flow that must not be started faster than its plan allows (docs/api.md).
            "maxPerSecond": {"x-ms-visibility": "advanced"},
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
            # Required (with a default, so the designer fills it in): it feeds the required name
            # of the dynamic-schema call (validator rule OperationParameterRequiredMismatch).
            query_param(
                "eventType",
                "string",
                described(SubscriptionRequest, "eventType"),
                required=True,
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
            "source": {"pattern": URI_REFERENCE, "x-ms-visibility": "advanced"},
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


def definition(
    host: str, scheme: str = "https", about: About | None = None, entra: EntraSignIn | None = None
) -> dict[str, Any]:
    """The Swagger 2.0 connector definition for a relay reached at `scheme://host` (`name[:port]`):
    with a function key, or with Entra ID sign-in when `entra` is given (RELAY_AUTH=entra)."""
    about = about or About()
    pageable: dict[str, Any] = {"x-ms-pageable": {"nextLinkName": NEXT_LINK}}
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
                    **pageable,
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
                    **pageable,
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
                        # One response with a schema (OperationHasManyResponsesWithSchema): the
                        # action's output is the finished operation, the 202 only says where to poll.
                        "200": response("The replay finished.", operation_schema()),
                        "202": response(
                            "The replay is running; the platform polls Location until it ends.",
                            None,
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
                            "The replay is still running.", None, {"Location": LOCATION, "Retry-After": RETRY_AFTER}
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
        **security(entra),
        "x-ms-capabilities": {"testConnection": {"operationId": TEST_CONNECTION, "parameters": {}}},
        "x-ms-connector-metadata": [
            {"propertyName": "Website", "propertyValue": about.site(host)},
            {"propertyName": "Privacy policy", "propertyValue": about.privacy(host)},
            {"propertyName": "Categories", "propertyValue": "IT Operations;Productivity"},
        ],
    }
