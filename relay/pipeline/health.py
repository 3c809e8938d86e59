"""Subscriptions that disable themselves: one whose deliveries have all failed for
`RELAY_DISABLE_AFTER` is disabled by the relay, its pending work held, and the relay publishes
`relay.subscription.disabled`; re-activating it publishes `relay.subscription.recovered` and
sends the held work again.

Cheap on the delivery path: since when every attempt has failed is kept on the subscription's
row (`failingSince`), written only when that changes (the first failure after a success, the
first success after a failure). Each process remembers for `MEMO_AGE` what it last read or
wrote of it, so a run of successes (or of failures) costs no storage at all; a success on one
instance clears a failure another recorded within that age.

Held work: an attempt planned before the disable (a retry, a deferred or queued work item) finds
the tombstone the disable wrote; instead of failing it, `hold` keeps it as a paused subscription's
work is kept (relay.pipeline.pause: a row in `held:{id}` of the operations table), and the
activate route asks for the same release a resume does. The release stops while the subscription is paused or
disabled by the relay, so a resume never sends a disabled subscription's work, nor an activate a
paused one's.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from relay.core import clock, runtime
from relay.core.models import EventRecord, Target
from relay.core.redaction import mask_url
from relay.core.settings import Settings
from relay.core.statuses import SubscriptionStatus
from relay.pipeline.outbox import Outbox
from relay.store.storage import Storage
from relay.store.subscriptions import Subscription, SubscriptionStore

log = logging.getLogger("relay.health")

DISABLED_TYPE = "relay.subscription.disabled"
RECOVERED_TYPE = "relay.subscription.recovered"
# The source of the relay's own events (a URI-reference: the relay's events route).
SOURCE = "/api/events"
MEMO_AGE = 30.0


class Memo:
    """Per subscription: since when it fails as this process last knew (None: it succeeds), and
    when that was learnt."""

    MAX_ENTRIES = 50_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[datetime | None, float]] = {}

    def get(self, sub_id: str) -> tuple[bool, datetime | None]:
        """(known, failing since)."""
        with self._lock:
            entry = self._known.get(sub_id)
        if entry is None or time.monotonic() - entry[1] > MEMO_AGE:
            return False, None
        return True, entry[0]

    def put(self, sub_id: str, failing_since: datetime | None) -> None:
        with self._lock:
            if len(self._known) >= self.MAX_ENTRIES:
                self._known.clear()
            self._known[sub_id] = (failing_since, time.monotonic())

    def forget(self, sub_id: str) -> None:
        with self._lock:
            self._known.pop(sub_id, None)


def memo() -> Memo:
    return runtime.current().part("pipeline.health", Memo)


def succeeded(storage: Storage, sub_id: str) -> None:
    """An attempt to this subscription succeeded: it no longer fails."""
    known, since = memo().get(sub_id)
    if known and since is None:
        return
    store = SubscriptionStore(storage)
    sub = store.get(sub_id)
    if sub is not None and sub.failing_since is not None:
        store.record_health(sub_id, None, None)
    memo().put(sub_id, None)


def failed(storage: Storage, settings: Settings, target: Target, error: str) -> None:
    """An attempt to this subscription failed: note since when it fails, and disable it once
    every attempt has failed for `RELAY_DISABLE_AFTER`."""
    now = clock.utcnow()
    known, since = memo().get(target.sub)
    store = SubscriptionStore(storage)
    if not known or since is None:
        sub = store.get(target.sub)
        if sub is None or sub.status != SubscriptionStatus.ACTIVE:
            return
        since = sub.failing_since
        if since is None:
            since = now
            if not store.record_health(target.sub, since, error):
                memo().forget(target.sub)  # changed meanwhile: read again next time
                return
        memo().put(target.sub, since)
    if (now - since).total_seconds() < settings.disable_after:
        return
    reason = (
        f"every delivery failed since {clock.rfc3339(since)} (RELAY_DISABLE_AFTER {_span(settings.disable_after)}); "
        f"last error: {error}"
    )
    disabled = store.disable(target.sub, reason, by_relay=True)
    memo().forget(target.sub)
    if disabled is None:
        return  # disabled already (by another instance, or for another reason)
    log.warning("subscription disabled by the relay subscription=%s", target.sub)
    publish(
        storage,
        settings,
        DISABLED_TYPE,
        f"{disabled.id}.disabled.{disabled.generation}",
        {
            "subscriptionId": disabled.id,
            "notificationUrl": mask_url(disabled.notification_url),
            "lastError": error,
            "disabledAt": clock.rfc3339(disabled.disabled_at or now),
        },
    )


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def publish(storage: Storage, settings: Settings, event_type: str, event_id: str, data: dict[str, str]) -> None:
    """One of the relay's own events, through the normal publish path (the fan-out queue): every
    subscription of its type gets it, polling and replay see it."""
    now = clock.utcnow()
    record = EventRecord(
        id=event_id,
        type=event_type,
        source=(settings.public_url or "") + SOURCE,
        time=clock.rfc3339(now),
        subject=f"subscriptions/{data['subscriptionId']}",
        data=data,
        acceptedAt=now,
    )
    Outbox(storage, settings).publish([record])


# ---- held work -----------------------------------------------------------------------------


def held(storage: Storage, target: Target, subs: dict[str, Subscription | None]) -> bool:
    """Whether a target whose subscription was disabled after it was planned is to be held (the
    relay disabled that generation): its caller holds it as a paused subscription's work is
    (relay.pipeline.pause, reason `DISABLED_REASON`), and the activate route releases it. False:
    not held (fail or skip it). `subs`: the records read for this message so far."""
    if target.sub not in subs:
        subs[target.sub] = SubscriptionStore(storage).get(target.sub)
    sub = subs[target.sub]
    return sub is not None and sub.disabled_by_relay and sub.generation == target.gen


def reactivate(storage: Storage, settings: Settings, sub_id: str) -> Subscription | None:
    """Re-activate a subscription (the activate route, which then releases its held work as a
    resume does); one the relay disabled has `relay.subscription.recovered` published."""
    store = SubscriptionStore(storage)
    before = store.get(sub_id)
    sub = store.activate(sub_id)
    memo().forget(sub_id)
    if sub is None or before is None or not (before.status == SubscriptionStatus.DISABLED and before.disabled_by_relay):
        return sub
    recovered(storage, settings, sub)
    return sub


def recovered(storage: Storage, settings: Settings, sub: Subscription) -> None:
    """A subscription the relay had disabled is active again (activated, or its URL subscribed
    again): forget what this process knew of its failures, and publish
    `relay.subscription.recovered`. Its caller releases the held work."""
    memo().forget(sub.id)
    publish(
        storage,
        settings,
        RECOVERED_TYPE,
        f"{sub.id}.recovered.{sub.generation}",
        {"subscriptionId": sub.id, "notificationUrl": mask_url(sub.notification_url)},
    )
    log.info("subscription re-activated subscription=%s", sub.id)
