"""Pausing a subscription: its deliveries are held, neither attempted nor failed, and resuming
delivers them in the order their events were accepted (CONTRACT section 6, "Pause").

Fan-out still finds a paused subscription (its index rows stay, marked `paused`), and queued work
planned before the pause learns of it from the pause marker in the subscriptions' tombstone
partition (`SubscriptionStore.changes`). Either way the delivery is not attempted: it becomes a
held row, one per (subscription, event), and its delivery log row says `pending`, held.

| table             | partition      | row key                       | what                          |
|-------------------|----------------|-------------------------------|-------------------------------|
| `relayoperations` | `held:{sub}`   | `{accepted time}_{event id}`  | a delivery held while paused  |

Resuming sends one release message (on the replay queue, operation id `release-{sub}`); its
runner delivers the held rows one at a time, oldest first, each row deleted once its attempt is
recorded (a retry goes on as any retry does). A delivery held while a resume is under way is not
left behind: whoever holds re-reads the subscription after writing the row, and asks for a
release when it is no longer paused; the runner reads the partition again until it is empty.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError

from relay.core import clock
from relay.core.models import DeliveryMessage, ReplayMessage, Target
from relay.core.settings import Settings
from relay.core.statuses import DeliveryStatus, SubscriptionStatus
from relay.pipeline.delivery import Deliverer
from relay.pipeline.outbox import Outbox
from relay.store.deliverylog import DeliveryLog
from relay.store.deliveryrows import Attempt
from relay.store.eventlog import EventLog, LogKey
from relay.store.events import load_data
from relay.store.storage import OPERATIONS_TABLE, Storage, delete_rows
from relay.store.subscriptions import Subscription, SubscriptionStore

log = logging.getLogger("relay.pause")

HELD_PREFIX = "held:"
RELEASE_PREFIX = "release-"  # a replay-queue message whose operation id starts so is a release
HELD_REASON = "held: the subscription is paused"
# The same rows hold the work of a subscription the relay disabled itself (relay.pipeline.health):
# re-activating it releases them as resuming releases a paused one's.
DISABLED_REASON = "held: the relay disabled the subscription"
PAGE = 100


class Holds:
    def __init__(self, storage: Storage, settings: Settings) -> None:
        self._storage = storage
        self._settings = settings
        self._table = storage.table(OPERATIONS_TABLE)
        self._subs = SubscriptionStore(storage)

    def hold(
        self,
        event_id: str,
        event_type: str,
        log_key: tuple[str, str],
        accepted_at: datetime,
        targets: Iterable[Target],
        reason: str = HELD_REASON,
    ) -> None:
        """Hold the deliveries of one event to paused subscriptions (or ones the relay disabled)."""
        now = clock.utcnow()
        held = list(targets)
        for target in held:
            self._table.upsert_entity(
                {
                    "PartitionKey": HELD_PREFIX + target.sub,
                    "RowKey": f"{clock.time_key(accepted_at)}_{event_id}",
                    "eventId": event_id,
                    "eventType": event_type,
                    "logPk": log_key[0],
                    "logRk": log_key[1],
                    "attempt": target.attempt,
                    # Not `createdAt`/`status`: the operations sweep must not forget a held row. One
                    # held past retention is released as failed ("event is no longer retained").
                    "heldAt": clock.rfc3339(now),
                }
            )
            DeliveryLog(self._storage, self._settings.event_retention_days).write(
                target.sub,
                event_id,
                event_type,
                log_key,
                Attempt(
                    status=DeliveryStatus.PENDING,
                    attempts=max(target.attempt - 1, 0),
                    attempted_at=now,
                    error=reason,
                ),
            )
            log.info("delivery held event=%s subscription=%s", event_id, target.sub)
        # Resumed meanwhile: the release may have read the partition before this row was there.
        for sub_id in {t.sub for t in held}:
            sub = self._subs.get(sub_id)
            if sub is None or not holding(sub):
                self.release(sub_id)

    def hold_message(self, message: DeliveryMessage, targets: list[Target], reason: str = HELD_REASON) -> None:
        """Hold queued work (a retry, a work item, a replay) for paused subscriptions."""
        self.hold(message.eventId, message.eventType, message.log, LogKey(*message.log).at, targets, reason)

    def release(self, sub_id: str) -> None:
        """Ask for the held deliveries of a resumed subscription to be delivered."""
        Outbox(self._storage, self._settings).replay(ReplayMessage(operationId=RELEASE_PREFIX + sub_id))

    def run_release(self, sub_id: str) -> None:
        """Deliver the held rows one at a time, oldest first, until none is left or the
        subscription is paused (a later resume releases the rest) or gone."""
        deliverer = Deliverer(self._storage, self._settings)
        events = EventLog(self._storage)
        while True:
            rows = list(
                next(
                    self._table.query_entities(
                        "PartitionKey eq @pk", parameters={"pk": HELD_PREFIX + sub_id}, results_per_page=PAGE
                    ).by_page(),
                    [],
                )
            )
            if not rows:
                return
            for row in rows:
                sub = self._subs.get(sub_id)
                if sub is None:
                    self._forget(sub_id)
                    return
                if holding(sub):
                    return  # paused again, or disabled by the relay: its resume or activate releases the rest
                self._deliver(deliverer, events, sub, row)
                try:
                    self._table.delete_entity(row["PartitionKey"], row["RowKey"])
                except ResourceNotFoundError:
                    pass  # a concurrent release delivered it too: at least once

    def _deliver(self, deliverer: Deliverer, events: EventLog, sub: Subscription, row: dict[str, object]) -> None:
        key = LogKey(str(row["logPk"]), str(row["logRk"]))
        target = sub.replay_target().model_copy(update={"attempt": max(int(str(row.get("attempt") or 1)), 1)})
        since = clock.time_key(clock.utcnow())
        logged = events.get(key)
        if logged is None:
            message = DeliveryMessage(
                eventId=str(row["eventId"]), eventType=str(row["eventType"]), log=key, since=since, targets=[target]
            )
            deliverer.expired(message, [target])
            return
        deliverer.deliver(logged.record(), load_data(self._storage, logged), logged.key, since, [target])

    def _forget(self, sub_id: str) -> None:
        """The subscription is gone: its held rows go too (nothing is delivered to it any more)."""
        delete_rows(
            self._table,
            self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": HELD_PREFIX + sub_id}, select=["PartitionKey", "RowKey"]
            ),
        )


def forget_orphans(storage: Storage) -> int:
    """Delete the held rows of subscriptions that are gone; returns how many. A subscription
    deleted while paused (or while the relay had disabled it) is never resumed, so no release
    comes to find it gone (`Holds.run_release`), and its rows would stay for ever. The hourly sweep
    (relay.pipeline.retention) calls this. The held partitions sort together: one range query,
    keys only, read on from the start until it reaches a subscription that is still there, then
    asked again from just past that one's partition, so a long pause's rows are not all read every
    hour (a request per held subscription, and the orphans' rows)."""
    after = HELD_PREFIX[:-1] + chr(ord(HELD_PREFIX[-1]) + 1)  # the first key past every "held:..."
    table, subs = storage.table(OPERATIONS_TABLE), SubscriptionStore(storage)
    condition, start = "PartitionKey ge @start and PartitionKey lt @after", HELD_PREFIX
    orphans, gone = [], set()
    while True:
        rows = table.query_entities(
            condition, parameters={"start": start, "after": after}, select=["PartitionKey", "RowKey"]
        )
        present = None
        for row in rows:
            pk = str(row["PartitionKey"])
            if pk in gone:
                orphans.append(row)
            elif subs.get(pk[len(HELD_PREFIX) :]) is None:
                gone.add(pk)
                orphans.append(row)
            else:
                present = pk
                break
        if present is None:
            return delete_rows(table, orphans)
        condition, start = "PartitionKey gt @start and PartitionKey lt @after", present


def holding(sub: Subscription) -> bool:
    """Whether a subscription's deliveries are held: paused (resume releases them) or disabled by
    the relay itself (activate releases them)."""
    return sub.status == SubscriptionStatus.PAUSED or (
        sub.status == SubscriptionStatus.DISABLED and sub.disabled_by_relay
    )


def release_target(operation_id: str) -> str | None:
    """The subscription a replay-queue message releases, or None when it is not a release."""
    return operation_id[len(RELEASE_PREFIX) :] if operation_id.startswith(RELEASE_PREFIX) else None
