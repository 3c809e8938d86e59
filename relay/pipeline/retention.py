"""Forgetting on time: events (with their type index rows), de-duplication rows, delivery log
rows, tombstones (and removal records of subscriptions), finished operations (and replay locks)
and claim-check blobs older than RELAY_EVENT_RETENTION_DAYS are deleted hourly (event rows by
whole days, and blobs a day later than the rows that point to them), and so are the held
deliveries of subscriptions deleted while paused.

Azure Tables has no time-to-live, so a timer does it. (In Azure the storage account's
lifecycle rule also deletes old blobs; this sweep covers Azurite and any account without one.)
Each store sweeps its own rows: this module knows only the order and the cutoffs.
"""

from __future__ import annotations

import logging
from datetime import datetime

from relay.core import clock
from relay.pipeline import pause
from relay.pipeline.replay import Operations
from relay.store.deliverylog import DeliveryLog
from relay.store.eventlog import EventLog
from relay.store.events import forget_blobs
from relay.store.storage import Storage
from relay.store.subscriptions import SubscriptionStore

log = logging.getLogger("relay.retention")


def sweep(storage: Storage, retention_days: float, now: datetime | None = None) -> dict[str, int]:
    """Delete everything past retention; returns counts by kind."""
    now = now or clock.utcnow()
    cutoff = now - clock.days(retention_days)
    counts = {
        **EventLog(storage).sweep(cutoff),
        "deliveries": DeliveryLog(storage, retention_days).sweep(cutoff),
        "tombstones": SubscriptionStore(storage).forget_tombstones(cutoff),
        "operations": Operations(storage).sweep(cutoff),
        "heldOfDeleted": pause.forget_orphans(storage),
        # Event rows go by whole days, so a row can outlive the cutoff by up to a day; its blob must too.
        "blobs": forget_blobs(storage, cutoff - clock.days(1)),
    }
    # Not retention, but hourly too: presence rows of a store that predates them, and fan-out
    # index rows that disagree with their subscription (relay.store.subscriptions).
    SubscriptionStore(storage).complete_layout(now)
    counts["indexRepaired"] = SubscriptionStore(storage).repair_index(now)
    log.info("retention sweep: %s", ", ".join(f"{k}={v}" for k, v in counts.items()))
    return counts
