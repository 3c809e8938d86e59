"""Resending one event to one subscription (`POST /api/subscriptions/{id}/deliveries/{eventId}/resend`):
the delivery the log holds is queued again for that subscription alone, with the event's
original id, as a replay would; answered as an operation that is done once the work is queued.
A paused subscription's resend is held with its other deliveries (relay.pipeline.pause)."""

from __future__ import annotations

import logging

from relay.core import clock
from relay.core.errors import Conflict, NotFound
from relay.core.models import DeliveryMessage
from relay.core.settings import Settings
from relay.core.statuses import SubscriptionStatus
from relay.pipeline.outbox import Outbox
from relay.pipeline.pause import Holds
from relay.pipeline.replay import Operations
from relay.store.deliverylog import DeliveryLog
from relay.store.eventlog import EventLog
from relay.store.storage import Storage
from relay.store.subscriptions import SubscriptionStore

log = logging.getLogger("relay.resend")


def resend(storage: Storage, settings: Settings, sub_id: str, event_id: str) -> str:
    """Queue the delivery again; returns the operation's id. NotFound when the subscription has
    no delivery of that event, Conflict when it is disabled (it would be skipped)."""
    # Taken before the subscription's status is read: a pause after it is seen by the delivery.
    since = clock.time_key(clock.utcnow())
    sub = SubscriptionStore(storage).get(sub_id)
    if sub is None:
        raise NotFound("no subscription has this id")
    if sub.status == SubscriptionStatus.DISABLED:
        raise Conflict("the subscription is disabled; re-activate it before resending")
    found = DeliveryLog(storage, settings.event_retention_days).find(sub.id, event_id)
    if found is None or found.log is None:
        raise NotFound("this subscription has no delivery of this event")
    message = DeliveryMessage(
        eventId=found.event_id,
        eventType=found.event_type,
        log=found.log,
        since=since,
        targets=[sub.replay_target()],
    )
    if sub.status == SubscriptionStatus.PAUSED:
        logged = EventLog(storage).get(found.log)
        accepted = logged.accepted_at if logged is not None else found.log.at
        Holds(storage, settings).hold(message.eventId, message.eventType, found.log, accepted, message.targets)
    else:
        Outbox(storage, settings).deliveries([message])
    log.info("resend queued event=%s subscription=%s", event_id, sub.id)
    return Operations(storage).record_done(sub.id, 1, "resend")
