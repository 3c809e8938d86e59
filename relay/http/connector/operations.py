"""The operations of the connector definition (`relay.http.connector.definition`), by group of
paths: subscriptions (the webhook trigger among them), replay, events (publish and the polling
trigger), event types. Each function returns its `paths` entries in the definition's order."""

from __future__ import annotations

from typing import Any

from relay.core.models import EventIn, ReplayRequest, RotateRequest, SubscriptionRequest, TestRequest
from relay.core.statuses import DeliveryStatus
from relay.http.connector.parts import (
    CONTINUATION,
    EVENT_TYPE_NAME,
    GET_DATA_SCHEMA,
    GET_EVENT_TYPE,
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
    SUBSCRIPTION_ID,
    URI_REFERENCE,
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

NEXT_LINK = "nextLink"
PAGEABLE_EXTENSION: dict[str, Any] = {"x-ms-pageable": {"nextLinkName": NEXT_LINK}}
ID_PATH = "/subscriptions/{id}"


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


def subscription_paths() -> dict[str, Any]:
    """Subscribe (the webhook trigger), list, get, delete, rotate the secret, list deliveries."""
    pageable = PAGEABLE_EXTENSION
    id_path = ID_PATH
    return {
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
                "Replaces the key that signs a subscription's deliveries and returns the new one, once; "
                "the previous key keeps signing beside it for the grace period.",
                [
                    SUBSCRIPTION_ID,
                    {
                        **body_param(
                            model_schema(RotateRequest, "How long the previous key keeps signing."),
                            "How long the previous key keeps signing.",
                            "Rotation",
                        ),
                        # Optional: without it the previous key signs for a day.
                        "required": False,
                    },
                ],
                {
                    "200": response(
                        "The new secret.",
                        obj(
                            {
                                "secret": prop(
                                    "string", "The new key that signs its deliveries (webhook-signature).", "secret"
                                ),
                                "previousSecretExpiresAt": prop(
                                    "string",
                                    "When the previous key stops signing; absent when it stopped at once.",
                                    "previousSecretExpiresAt",
                                    format="date-time",
                                ),
                            },
                            "The subscription's new secret.",
                            ["secret"],
                        ),
                    )
                },
            ),
        },
        id_path + "/pause": {
            "post": operation(
                "PauseSubscription",
                "Pause a subscription",
                "Holds a subscription's deliveries, neither attempted nor failed, until it is resumed.",
                [SUBSCRIPTION_ID],
                {"200": response("The subscription, paused.", subscription_schema())},
            ),
        },
        id_path + "/resume": {
            "post": operation(
                "ResumeSubscription",
                "Resume a subscription",
                "Resumes a paused subscription; the deliveries held meanwhile are delivered in order.",
                [SUBSCRIPTION_ID],
                {"200": response("The subscription, active.", subscription_schema())},
            ),
        },
        id_path + "/test": {
            "post": operation(
                "SendTestEvent",
                "Send a test event to a subscription",
                "Sends one event marked as a test to this subscription alone; no one else receives it.",
                [
                    SUBSCRIPTION_ID,
                    {
                        **body_param(
                            model_schema(TestRequest, "The test event's type and data (both optional)."),
                            "The test event's type and data (both optional).",
                            "Test event",
                        ),
                        "required": False,
                    },
                ],
                {
                    "202": response(
                        "The test event is on its way.",
                        obj({"id": prop("string", "The test event's id.", "id")}, "The test event.", ["id"]),
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
                    query_param("eventType", "string", "Only deliveries of events of this type (not a pattern)."),
                    query_param("eventId", "string", "Only the delivery of this event."),
                    query_param("since", "string", "Only events logged at or after this time.", format="date-time"),
                    query_param("until", "string", "Only events logged at or before this time.", format="date-time"),
                    LIMIT,
                    CONTINUATION,
                ],
                {"200": response("A page of deliveries.", page_of(delivery_schema(), "deliveries"))},
                **pageable,
            ),
        },
    }


def replay_paths() -> dict[str, Any]:
    """Replay (asynchronous: 202 + Location + Retry-After) and the operation the platform polls."""
    id_path = ID_PATH
    return {
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
    }


def event_paths() -> dict[str, Any]:
    """Publish one event, publish a batch, and the polling trigger."""
    return {
        "/events": {"post": _publish()},
        "/events/batch": {"post": _publish_batch()},
        "/events/poll": {"get": _poll_trigger()},
    }


def event_type_paths() -> dict[str, Any]:
    """The event types, for the designer's dropdowns and the dynamic schema of `data`."""
    return {
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
    }
