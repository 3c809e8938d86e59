"""Replay as an asynchronous operation: accepted with 202 and a Location to poll, run by a queue
function, and delivered again with each event's original id (so receivers can dedupe).

A replay never reaches back before its subscription was created, and one runs per subscription
at a time: a lock row per subscription (partition `lock`) names the running operation and a
lease. The runner renews the lease as it goes; finishing or failing deletes the row; a replay
whose process died stops holding it when the lease runs out, and the next replay takes over
(the lost one, should it come back, finds the lock gone and stops).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from relay.core import clock, filters
from relay.core.errors import RelayError
from relay.core.matching import subject_matches, type_matches
from relay.core.models import DeliveryMessage, ReplayMessage, ReplayRequest
from relay.core.settings import get_settings
from relay.core.statuses import OperationStatus, SubscriptionStatus
from relay.pipeline.outbox import Outbox
from relay.pipeline.pause import Holds
from relay.store.deliverylog import DeliveryLog
from relay.store.eventlog import EventLog, LoggedEvent, LogKey, position, position_after
from relay.store.events import load_data
from relay.store.storage import OPERATIONS_TABLE, Storage, delete_rows
from relay.store.subscriptions import Subscription, SubscriptionStore

PARTITION = "op"
LOCK_PARTITION = "lock"
RETRY_AFTER = 1
# How long a replay holds its subscription's lock without renewing it. It renews between
# batches of sends, so only a replay whose process is gone (or whose message waits this long
# to be picked up) loses it.
LEASE = timedelta(minutes=5)
RENEW_EVERY = 200  # messages sent between lease renewals
# Why a replay failed, and so how GET /api/operations/{id} answers it (see relay.http.api).
GONE, SUPERSEDED, CRASHED = "subscription-gone", "superseded", "crashed"


class ReplayRunning(RelayError):
    """Another replay of the subscription is running: the caller answers 409 naming it."""

    def __init__(self, operation_id: str) -> None:
        super().__init__(operation_id)
        self.operation_id = operation_id


@dataclass(frozen=True, kw_only=True)
class Operation:
    """A replay operation as the operations table keeps it; only `Operations` reads and writes
    its rows. Times are aware datetimes, parsed once where the row is read."""

    id: str
    subscription_id: str
    status: OperationStatus
    since: datetime
    until: datetime | None  # None: up to when it runs
    filter: Literal["failed", "all"]
    created_at: datetime
    event_type: str | None = None  # a name or pattern: only events of a matching type
    replayed: int = 0
    code: str | None = None  # why it failed: GONE, SUPERSEDED or CRASHED
    error: str | None = None

    def view(self, now: datetime | None = None) -> dict[str, Any]:
        """What GET /api/operations/{id} shows. A replay still running long after it began was lost
        (see ABANDONED_AFTER) and is shown as failed."""
        status, code, error = self.status, self.code, self.error
        if status == OperationStatus.RUNNING and (now or clock.utcnow()) - self.created_at > ABANDONED_AFTER:
            status, code, error = OperationStatus.FAILED, CRASHED, "the replay did not finish; start it again"
        out: dict[str, Any] = {"id": self.id, "status": status}
        if status == OperationStatus.SUCCEEDED:
            out["replayed"] = self.replayed
        if status == OperationStatus.FAILED:
            out["error"] = error or "the replay could not finish"
            out["code"] = code or CRASHED
        return out


def _operation(row: Mapping[str, Any]) -> Operation:
    return Operation(
        id=row["RowKey"],
        subscription_id=row["subscriptionId"],
        status=OperationStatus(row["status"]),
        since=clock.parse_rfc3339(row["since"]),
        until=clock.parse_rfc3339(row["until"]) if row.get("until") else None,
        filter=row.get("filter") or "failed",
        created_at=clock.parse_rfc3339(row["createdAt"]),
        event_type=row.get("eventType") or None,
        replayed=int(row.get("replayed") or 0),
        code=row.get("code"),
        error=row.get("error"),
    )


class Operations:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._table = storage.table(OPERATIONS_TABLE)

    def start(self, sub_id: str, request: ReplayRequest, now: datetime | None = None) -> str:
        """Record and queue a replay; raises ReplayRunning while another holds the subscription."""
        now = now or clock.utcnow()
        op_id = uuid.uuid4().hex
        # The lock first: a replay that cannot get it leaves nothing behind. Until the operation
        # row exists, the lock (within its lease) counts as held, so a racing start waits its turn.
        self._acquire(sub_id, op_id, now)
        self._table.create_entity(
            {
                "PartitionKey": PARTITION,
                "RowKey": op_id,
                "subscriptionId": sub_id,
                "status": OperationStatus.RUNNING,
                "since": clock.rfc3339_precise(request.since),
                "until": clock.rfc3339_precise(request.until) if request.until else "",
                "filter": request.status,
                "eventType": request.eventType or "",
                "createdAt": clock.rfc3339(now),
            }
        )
        Outbox(self._storage).replay(ReplayMessage(operationId=op_id))
        return op_id

    def record_done(self, sub_id: str, sent: int, kind: str, now: datetime | None = None) -> str:
        """An operation that is done once started (a resend queues its one delivery at once), so
        its Location answers 200 as a finished replay's does. Takes no lock: a resend runs beside
        a replay."""
        now = now or clock.utcnow()
        op_id = uuid.uuid4().hex
        self._table.create_entity(
            {
                "PartitionKey": PARTITION,
                "RowKey": op_id,
                "subscriptionId": sub_id,
                "status": OperationStatus.SUCCEEDED,
                "since": clock.rfc3339_precise(now),
                "until": "",
                "filter": "all",
                "kind": kind,
                "replayed": sent,
                "createdAt": clock.rfc3339(now),
                "finishedAt": clock.rfc3339(now),
            }
        )
        return op_id

    def get(self, op_id: str) -> Operation | None:
        try:
            return _operation(self._table.get_entity(PARTITION, op_id))
        except ResourceNotFoundError:
            return None

    def finish(
        self,
        op_id: str,
        status: OperationStatus,
        *,
        code: str | None = None,
        error: str | None = None,
        replayed: int | None = None,
    ) -> None:
        """Record how the operation ended (`replayed`: how many events it sent) and free its
        subscription for the next replay."""
        fields: dict[str, Any] = {"status": status, "code": code, "error": error, "replayed": replayed}
        if status == OperationStatus.SUCCEEDED:
            fields["finishedAt"] = clock.rfc3339(clock.utcnow())
        self._table.update_entity(
            {"PartitionKey": PARTITION, "RowKey": op_id, **{k: v for k, v in fields.items() if v is not None}},
            mode=UpdateMode.MERGE,
        )
        if status != OperationStatus.RUNNING:
            op = self.get(op_id)
            if op is not None:
                self.release(op.subscription_id, op_id)

    # ---- the per-subscription lock ------------------------------------------------------------

    def _lock_row(self, sub_id: str, op_id: str, now: datetime) -> dict[str, Any]:
        # createdAt and a status other than `running` let the retention sweep forget a lock
        # row a crashed replay left behind, as it does finished operations.
        return {
            "PartitionKey": LOCK_PARTITION,
            "RowKey": sub_id,
            "operationId": op_id,
            "expiresAt": clock.rfc3339(now + LEASE),
            "createdAt": clock.rfc3339(now),
            "status": "lock",
        }

    def _acquire(self, sub_id: str, op_id: str, now: datetime) -> None:
        row = self._lock_row(sub_id, op_id, now)
        for _ in range(5):
            try:
                self._table.create_entity(row)
                return
            except ResourceExistsError:
                pass
            try:
                held = self._table.get_entity(LOCK_PARTITION, sub_id)
            except ResourceNotFoundError:
                continue  # released meanwhile: try to create it again
            holder = held["operationId"]
            if self._held(held, now):
                raise ReplayRunning(holder)
            try:
                self._table.update_entity(
                    row,
                    mode=UpdateMode.REPLACE,
                    etag=held.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # another start got there first: look again
            old = self.get(holder)
            if old is not None and old.status == OperationStatus.RUNNING:
                self._table.update_entity(
                    {
                        "PartitionKey": PARTITION,
                        "RowKey": holder,
                        "status": OperationStatus.FAILED,
                        "code": SUPERSEDED,
                        "error": "the replay stopped without finishing "
                        "(its lease ran out) and a newer replay took over",
                    },
                    mode=UpdateMode.MERGE,
                )
            return
        raise ReplayRunning(self._table.get_entity(LOCK_PARTITION, sub_id)["operationId"])

    def _held(self, lock: dict[str, Any], now: datetime) -> bool:
        if now >= clock.parse_rfc3339(lock["expiresAt"]):
            return False
        op = self.get(lock["operationId"])
        return op is None or op.status == OperationStatus.RUNNING  # None: its start is still under way

    def renew(self, sub_id: str, op_id: str, now: datetime | None = None) -> bool:
        """Extend this replay's lease; False when it no longer holds the lock (it must stop)."""
        now = now or clock.utcnow()
        try:
            held = self._table.get_entity(LOCK_PARTITION, sub_id)
        except ResourceNotFoundError:
            try:  # a replay started before locks existed, or whose row was swept: take it
                self._table.create_entity(self._lock_row(sub_id, op_id, now))
                return True
            except ResourceExistsError:
                return False
        if held["operationId"] != op_id:
            return False
        try:
            self._table.update_entity(
                {"PartitionKey": LOCK_PARTITION, "RowKey": sub_id, "expiresAt": clock.rfc3339(now + LEASE)},
                mode=UpdateMode.MERGE,
                etag=held.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def sweep(self, cutoff: datetime) -> int:
        """Forget operations (and lock rows) created before the cutoff that are not running;
        returns how many."""
        return delete_rows(
            self._table,
            self._table.query_entities(
                "createdAt lt @cut and status ne @running",
                parameters={"cut": clock.rfc3339(cutoff), "running": OperationStatus.RUNNING},
                select=["PartitionKey", "RowKey"],
            ),
        )

    def release(self, sub_id: str, op_id: str) -> None:
        try:
            held = self._table.get_entity(LOCK_PARTITION, sub_id)
            if held["operationId"] == op_id:
                self._table.delete_entity(
                    LOCK_PARTITION, sub_id, etag=held.metadata["etag"], match_condition=MatchConditions.IfNotModified
                )
        except (ResourceNotFoundError, ResourceModifiedError):
            pass  # gone already, or taken over: either way no longer ours


# Longer than the function timeout (30 min): a replay still "running" after this was lost (its
# message poisoned, or its process gone before it was queued) and is reported as failed.
ABANDONED_AFTER = timedelta(minutes=45)


class Replayed(NamedTuple):
    """An event a replay sends again, and where the log holds it."""

    event_id: str
    event_type: str
    log: LogKey


def _failed(log: DeliveryLog, sub_id: str, since: datetime, until: datetime) -> Iterator[Replayed]:
    for delivery in log.failed(sub_id, since, until):
        if delivery.log is not None:  # always, for a failed delivery's row
            yield Replayed(delivery.event_id, delivery.event_type, delivery.log)


def replayed_events(storage: Storage, sub: Subscription, since: datetime, until: datetime) -> Iterator[Replayed]:
    """Each logged event `sub` matches between the two times, in log order, each once: what a
    replay of everything sends again."""
    for day in EventLog(storage).walk(sub.event_types, position(since), position_after(until)):
        for event in day.events:
            if _wants(storage, sub, event):
                yield Replayed(event.id, event.type, event.key)


def _wants(storage: Storage, sub: Subscription, event: LoggedEvent) -> bool:
    """Whether `sub`'s subject and data filters let `event` through, as fan-out decided it."""
    if not subject_matches(event.subject, sub.subject_begins_with, sub.subject_ends_with):
        return False
    return filters.matches(sub.filters, lambda: load_data(storage, event))


def run_replay(storage: Storage, message: ReplayMessage, retention_days: float) -> None:
    ops = Operations(storage)
    op_id = message.operationId
    op = ops.get(op_id)
    if op is None or op.status != OperationStatus.RUNNING:
        return
    # Planned before the subscription is read: a pause after this is seen by each delivery.
    planned = clock.time_key(clock.utcnow())
    sub = SubscriptionStore(storage).get(op.subscription_id)
    if sub is None or sub.status == SubscriptionStatus.DISABLED:
        ops.finish(op_id, status=OperationStatus.FAILED, code=GONE, error="the subscription was deleted or disabled")
        return
    if not ops.renew(sub.id, op_id):
        ops.finish(
            op_id,
            status=OperationStatus.FAILED,
            code=SUPERSEDED,
            error="another replay of this subscription took over before this one could run",
        )
        return
    now = clock.utcnow()
    # Nothing older than retention, newer than now, or from before the subscription existed.
    since = max(
        op.since,
        now - timedelta(days=retention_days + 1),
        sub.created_at,
    )
    until = min(op.until, now) if op.until is not None else now
    found = (
        _failed(DeliveryLog(storage, retention_days), sub.id, since, until)
        if op.filter == "failed"
        else replayed_events(storage, sub, since, until)
    )
    if op.event_type is not None:
        wanted = op.event_type
        found = (f for f in found if type_matches([wanted], f.event_type))
    target = sub.replay_target().model_copy(update={"kind": "replay"})  # its attempts say so
    outbox = Outbox(storage)
    holds = Holds(storage, get_settings()) if sub.status == SubscriptionStatus.PAUSED else None
    sent = 0
    batch: list[DeliveryMessage] = []

    def flush() -> bool:
        nonlocal sent, batch
        if holds is not None:  # paused: held with its other deliveries, released in order on resume
            for item in batch:
                holds.hold_message(item, item.targets)
        else:
            outbox.deliveries(batch)
        sent, batch = sent + len(batch), []
        return ops.renew(sub.id, op_id)

    for found_event in found:
        batch.append(
            DeliveryMessage(
                eventId=found_event.event_id,
                eventType=found_event.event_type,
                log=found_event.log,
                since=planned,
                targets=[target],
            )
        )
        if len(batch) >= RENEW_EVERY and not flush():
            ops.finish(
                op_id,
                status=OperationStatus.FAILED,
                code=SUPERSEDED,
                replayed=sent,
                error="the replay lost its lease and a newer replay took over",
            )
            return
    flush()
    ops.finish(op_id, status=OperationStatus.SUCCEEDED, replayed=sent)
