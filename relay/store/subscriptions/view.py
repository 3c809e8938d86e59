"""A subscription as the API answers it: the view of a `Subscription` (its own module, beside the
row it shows, so that rows.py stays the row's (de)serialisation)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict, cast

from relay.core import clock, filters
from relay.core.models import ContentMode
from relay.core.redaction import mask_url
from relay.core.statuses import SubscriptionStatus


class SubscriptionView(TypedDict):
    """A subscription as the API answers it (`Subscription.view`)."""

    id: str
    notificationUrl: str
    eventTypes: list[str]
    subjectBeginsWith: NotRequired[str]
    subjectEndsWith: NotRequired[str]
    filters: NotRequired[dict[str, Any]]
    description: NotRequired[str]
    once: bool
    contentMode: ContentMode
    status: SubscriptionStatus
    disabledReason: NotRequired[str]
    disabledBy: NotRequired[str]
    disabledAt: NotRequired[str]
    maxPerSecond: NotRequired[float]
    createdAt: str
    previousSecretExpiresAt: NotRequired[str]
    secret: NotRequired[str]


def view_of(self: Any, *, with_secret: bool = False, full_url: bool = False) -> SubscriptionView:
    """The subscription as the API shows it. The secret only to the call that created it (or
    rotated it); the callback URL whole only to the call that created it, every query value
    masked afterwards: a Power Automate callback's `sig` is enough to start the flow."""
    shown: dict[str, Any] = {
        "id": self.id,
        "notificationUrl": self.notification_url if full_url else mask_url(self.notification_url),
        "eventTypes": list(self.event_types),
    }
    for name, value in (
        ("subjectBeginsWith", self.subject_begins_with),
        ("subjectEndsWith", self.subject_ends_with),
        ("filters", filters.shown(self.filters)),
        ("description", self.description),
    ):
        if value is not None:
            shown[name] = value
    shown.update(once=self.once)
    shown.update(contentMode=self.content_mode)
    shown.update(status=self.status)
    if self.status == SubscriptionStatus.DISABLED and self.disabled_reason:
        shown.update(disabledReason=self.disabled_reason)
    if self.status == SubscriptionStatus.DISABLED and self.disabled_by_relay:
        shown.update(disabledBy="relay")
    if self.status == SubscriptionStatus.DISABLED and self.disabled_at is not None:
        shown.update(disabledAt=clock.rfc3339(self.disabled_at))
    if self.max_per_second is not None:
        shown.update(maxPerSecond=self.max_per_second)
    shown.update(createdAt=clock.rfc3339(self.created_at))
    if self.in_grace(clock.utcnow()):
        # When deliveries stop carrying the previous secret's signature (never the secret).
        shown.update(previousSecretExpiresAt=clock.rfc3339(cast("datetime", self.previous_secret_expires_at)))
    if with_secret:
        shown.update(secret=self.secret)
    return cast(SubscriptionView, shown)  # built in the order the answers always had
