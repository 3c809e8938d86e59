"""The connector's two triggers: the webhook trigger (subscribe) and the polling trigger."""

from __future__ import annotations

from typing import Any

from relay.core.models import SubscriptionRequest
from relay.http.connector.filterparts import connector_filters
from relay.http.connector.parts import (
    LOCATION,
    PATTERN_MAX,
    PATTERN_PATTERN,
    RETRY_AFTER,
    body_param,
    cloudevent_schema,
    data_typed_by,
    described,
    event_type_dropdown,
    model_schema,
    obj,
    operation,
    prop,
    query_param,
    response,
    subscription_schema,
)


def subscribe_trigger() -> dict[str, Any]:
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
    body["properties"]["filters"] = connector_filters()  # optional and advanced: released flows save as before
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


def poll_trigger() -> dict[str, Any]:
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
