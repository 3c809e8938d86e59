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
from typing import Any

from relay import __version__
from relay.core.models import EventTypeRequest, ReplayRequest, RotateRequest, TestRequest
from relay.core.statuses import DeliveryStatus
from relay.http.cloudevents_in import BATCH, ORIGIN_PATTERN, STRUCTURED
from relay.http.connector.full_parts import (
    ACCEPTED,
    ACCEPTED_BATCH,
    CONTINUATION,
    DATA_SCHEMA,
    DATE_TIME,
    DELIVERY_RECORD,
    DOCUMENT,
    EMPTY,
    EVENT_TYPE_NAME,
    EVENT_TYPES,
    HEALTH,
    ID_PATTERN,
    LIMIT,
    LOCATION_RETRY,
    NO_CONTROL,
    POLLED,
    PROBLEM_MEDIA,
    SECRET,
    SMOKE_RUN,
    STATS,
    SUBSCRIPTION_ID,
    WORKFLOW_HEADERS,
    Route,
    body_of,
    cloudevent_in_body,
    event_body,
    ok,
    openapi3,
    param,
    path_id,
    subscription_body,
    unsubscribe_body,
)
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
    delivery_schema,
    event_type_schema,
    operation_schema,
    page_of,
    subscription_schema,
)


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
                param(
                    "query",
                    "eventType",
                    {"type": "string", "pattern": NAME_PATTERN, "maxLength": NAME_MAX},
                    "Only deliveries of events of this type.",
                ),
                param(
                    "query", "eventId", {"type": "string", "pattern": NO_CONTROL, "maxLength": 512}, "Only this event."
                ),
                param("query", "since", DATE_TIME, "Only events logged at or after this time."),
                param("query", "until", DATE_TIME, "Only events logged at or before this time."),
                LIMIT,
                CONTINUATION,
            ],
        ),
        Route(
            "get",
            one + "/deliveries/{eventId}",
            "GetDelivery",
            "One delivery's record: every attempt and the event as delivered.",
            {"200": ok("The delivery.", DELIVERY_RECORD)},
            [SUBSCRIPTION_ID, path_id("eventId", "The event's id.")],
        ),
        Route(
            "post",
            one + "/secret",
            "RotateSecret",
            "Replace the signing secret.",
            {"200": ok("The new secret.", SECRET)},
            [SUBSCRIPTION_ID],
            body=body_of(RotateRequest),
            body_required=False,
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
            # CloudEvents' structured and batched modes (binary mode is headers: docs/cloudevents.md).
            more_content={
                STRUCTURED: cloudevent_in_body(),
                BATCH: {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": cloudevent_in_body()},
            },
        ),
        Route(
            "options",
            "/events",
            "ValidateWebhook",
            "The CloudEvents webhook validation handshake (as Azure Event Grid sends it).",
            {
                "200": ok(
                    "The origin may deliver here.",
                    None,
                    {
                        "WebHook-Allowed-Origin": "The origin the request named.",
                        "WebHook-Allowed-Rate": "Requests per minute the origin may send; * for no limit.",
                    },
                )
            },
            [
                param(
                    "header",
                    "WebHook-Request-Origin",
                    {"type": "string", "pattern": f"^{ORIGIN_PATTERN}$", "maxLength": 259},
                    "The host name of the sender asking to deliver.",
                    required=True,
                )
            ],
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
        content = {"application/json": {"schema": route.body}}
        content.update({media: {"schema": schema} for media, schema in route.more_content.items()})
        op["requestBody"] = {"required": route.body_required, "content": content}
    problem = {
        "description": "An RFC 9457 problem naming each wrong field.",
        "content": {PROBLEM_MEDIA: {"schema": openapi3(PROBLEM)}},
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
