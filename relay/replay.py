"""Replay as an asynchronous operation: accepted with 202 and a Location to poll, run by a queue
function, and delivered again with each event's original id (so receivers can dedupe)."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Iterator

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from . import clock
from .deliverylog import DeliveryLog
from .matching import subject_matches, type_matches
from .models import DeliveryMessage, ReplayMessage, ReplayRequest, Target
from .storage import DELIVERY_QUEUE, EVENTS_TABLE, NEVER_EXPIRE, OPERATIONS_TABLE, REPLAY_QUEUE, Storage
from .subscriptions import SubscriptionStore

PARTITION = "op"
RETRY_AFTER = 1

_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="replay")


class Operations:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._table = storage.table(OPERATIONS_TABLE)

    def start(self, sub_id: str, request: ReplayRequest) -> str:
        op_id = uuid.uuid4().hex
        self._table.create_entity({
            "PartitionKey": PARTITION, "RowKey": op_id, "subscriptionId": sub_id, "status": "running",
            "since": request.since, "until": request.until or "", "filter": request.status,
            "createdAt": clock.rfc3339(clock.utcnow()),
        })
        self._storage.queue(REPLAY_QUEUE).send_message(ReplayMessage(operationId=op_id).model_dump_json(),
                                                       time_to_live=NEVER_EXPIRE)
        return op_id

    def get(self, op_id: str) -> dict[str, Any] | None:
        try:
            return dict(self._table.get_entity(PARTITION, op_id))
        except ResourceNotFoundError:
            return None

    def finish(self, op_id: str, **fields: Any) -> None:
        self._table.update_entity({"PartitionKey": PARTITION, "RowKey": op_id, **fields}, mode=UpdateMode.MERGE)


# Longer than the function timeout (30 min): a replay still "running" after this was lost (its
# message poisoned, or its process gone before it was queued) and is reported as failed.
ABANDONED_AFTER = timedelta(minutes=45)


def view(op: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    if op["status"] == "running" and (now or clock.utcnow()) - clock.parse_rfc3339(op["createdAt"]) > ABANDONED_AFTER:
        op = {**op, "status": "failed", "error": "the replay did not finish; start it again"}
    out: dict[str, Any] = {"id": op["RowKey"], "status": op["status"]}
    if op["status"] == "succeeded":
        out["replayed"] = int(op.get("replayed") or 0)
    if op["status"] == "failed":
        out["error"] = op.get("error") or "the replay could not finish"
    return out


def _log_time(log_rk: str) -> datetime:
    return clock.from_time_key(log_rk.split("_", 1)[0])


def _failed(log: DeliveryLog, sub_id: str, since: datetime, until: datetime) -> Iterator[tuple[str, str, str, str]]:
    for row in log.rows(sub_id, "failed"):
        if since <= _log_time(row["logRk"]) <= until:
            yield row["eventId"], row["eventType"], row["logPk"], row["logRk"]


def _all(storage: Storage, sub: dict[str, Any], since: datetime,
         until: datetime) -> Iterator[tuple[str, str, str, str]]:
    patterns = json.loads(sub["eventTypes"])
    table = storage.table(EVENTS_TABLE)
    day = since.replace(hour=0, minute=0, second=0, microsecond=0)
    while day <= until:
        rows = table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi",
            parameters={"pk": f"e:{clock.day_bucket(day)}", "lo": clock.time_key(since),
                        "hi": clock.time_key(until) + "~"}, results_per_page=1000)
        for row in rows:
            if type_matches(patterns, row["type"]) and subject_matches(
                    row.get("subject"), sub.get("subjectBeginsWith"), sub.get("subjectEndsWith")):
                yield row["id"], row["type"], row["PartitionKey"], row["RowKey"]
        day += timedelta(days=1)


def run_replay(storage: Storage, message: ReplayMessage, retention_days: float) -> None:
    ops = Operations(storage)
    op = ops.get(message.operationId)
    if op is None or op["status"] != "running":
        return
    sub = SubscriptionStore(storage).get(op["subscriptionId"])
    if sub is None or sub.get("status") != "active":
        ops.finish(message.operationId, status="failed", error="the subscription was deleted or disabled")
        return
    now = clock.utcnow()
    # Nothing older than retention or newer than now exists: the scan never goes beyond them.
    since = max(clock.parse_rfc3339(op["since"]), now - timedelta(days=retention_days + 1))
    until = min(clock.parse_rfc3339(op["until"]), now) if op.get("until") else now
    found = _failed(DeliveryLog(storage, retention_days), sub["id"], since, until) if op["filter"] == "failed" \
        else _all(storage, sub, since, until)
    target = Target(sub=sub["id"], url=sub["notificationUrl"], secret=sub["secret"], once=bool(sub.get("once")),
                    gen=int(sub.get("gen") or 0), attempt=1, logged=True, mode=sub.get("contentMode") or "json")
    planned = clock.time_key(clock.utcnow())
    queue = storage.queue(DELIVERY_QUEUE)
    messages = [DeliveryMessage(eventId=eid, eventType=etype, log=(pk, rk), since=planned, targets=[target])
                for eid, etype, pk, rk in found]
    for future in [_pool.submit(queue.send_message, m.model_dump_json(), time_to_live=NEVER_EXPIRE)
                   for m in messages]:
        future.result()
    ops.finish(message.operationId, status="succeeded", replayed=len(messages),
               finishedAt=clock.rfc3339(clock.utcnow()))
