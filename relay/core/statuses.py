"""The statuses the relay stores and shows, one enumeration each. They are `StrEnum`s, so a
stored row, a JSON body and a query parameter hold the same plain string as before."""

from __future__ import annotations

from enum import StrEnum


class DeliveryStatus(StrEnum):
    """A delivery in the delivery log (`GET /api/subscriptions/{id}/deliveries?status=`)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class SubscriptionStatus(StrEnum):
    """Whether a subscription receives events (`disabled` ones carry a `disabledReason`; `paused`
    ones have their deliveries held until resumed, relay.pipeline.pause)."""

    ACTIVE = "active"
    DISABLED = "disabled"
    PAUSED = "paused"


class OperationStatus(StrEnum):
    """An asynchronous operation (a replay) behind `GET /api/operations/{id}`."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
