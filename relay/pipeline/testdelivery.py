"""Test deliveries: one event sent to one subscription alone, marked as a test (CONTRACT section
6, "Test delivery"). It is never published: no other subscriber sees it, it is not in the event
log (so no poll or replay finds it), and it reaches a paused or disabled subscription too, since
that is when an operator checks a receiver.

The route records the event in the operations table and queues its id on the replay queue
(operation id `test-…`), so the answer does not wait for a slow receiver and the attempt
survives a restart. One attempt, no retries: its outcome is kept on the row and logged.

| table             | partition | row key    | what                                  |
|-------------------|-----------|------------|---------------------------------------|
| `relayoperations` | `test`    | `test-{…}` | the test event, and its attempt's end |

The receiver tells a test by the CloudEvents extension attribute `relaytest: true` (in binary
mode the header `ce-relaytest: true`), and by its id, which starts with `test-`.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from relay.core import clock
from relay.core.jsontext import compact
from relay.core.models import EventRecord, ReplayMessage, Target
from relay.core.outcomes import Outcome
from relay.core.settings import Settings
from relay.outbound import signing
from relay.outbound.sender import redact_url
from relay.pipeline.delivery import attempt
from relay.pipeline.outbox import Outbox
from relay.pipeline.pools import get_pools
from relay.store.storage import OPERATIONS_TABLE, Storage
from relay.store.subscriptions import Subscription, SubscriptionStore

log = logging.getLogger("relay.testdelivery")

PARTITION = "test"
ID_PREFIX = "test-"
TEST_TYPE = "relay.test"
# The test event is kept in one table property (64 KiB of UTF-16): its data is bounded below that.
MAX_DATA_BYTES = 30_000
MAX_DEPTH = 8


def example(schema: Any, depth: int = 0) -> Any:
    """A value that a JSON Schema describes, for a test event of a type with a schema: the
    schema's own `examples`/`example`/`default`/`const`/first `enum` where it gives one, else
    built from `type`, `properties` (every one of them) and `items`."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    for name in ("examples",):
        given = schema.get(name)
        if isinstance(given, list) and given:
            return given[0]
    for name in ("example", "default", "const"):
        if name in schema:
            return schema[name]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for name in ("allOf", "anyOf", "oneOf"):
        options = schema.get(name)
        if isinstance(options, list) and options:
            if name == "allOf" and all(isinstance(o, dict) for o in options):
                merged: dict[str, Any] = {}
                for option in options:
                    built = example(option, depth + 1)
                    if isinstance(built, dict):
                        merged.update(built)
                return merged if merged else example(options[0], depth + 1)
            return example(options[0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None and isinstance(schema.get("properties"), dict):
        kind = "object"
    if kind == "object":
        props = schema.get("properties")
        return {name: example(sub, depth + 1) for name, sub in props.items()} if isinstance(props, dict) else {}
    if kind == "array":
        count = max(int(schema.get("minItems") or 1), 1) if isinstance(schema.get("minItems", 1), int) else 1
        return [example(schema.get("items", {}), depth + 1) for _ in range(min(count, 3))]
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            return clock.rfc3339(clock.utcnow())
        if fmt == "date":
            return clock.rfc3339(clock.utcnow())[:10]
        if fmt == "email":
            return "someone@example.com"
        if fmt in ("uri", "url"):
            return "https://example.com/"
        if fmt == "uuid":
            return str(uuid.UUID(int=0))
        length = schema.get("minLength")
        length = length if isinstance(length, int) else 0
        text = "example"
        return text + "x" * max(length - len(text), 0)
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        if isinstance(low, int | float) and not isinstance(low, bool):
            return int(low) + 1 if kind == "integer" else low + 1
        return 0
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {}


def default_data(sub: Subscription) -> dict[str, Any]:
    return {"message": "A test event from the relay.", "subscriptionId": sub.id}


class TestDeliveries:
    __test__ = False  # not a pytest class

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self._storage = storage
        self._settings = settings
        self._table = storage.table(OPERATIONS_TABLE)

    def start(self, sub: Subscription, event_type: str, data: Any, source: str) -> str:
        """Record the test event and queue its delivery; returns the event id."""
        now = clock.utcnow()
        event_id = ID_PREFIX + uuid.uuid4().hex
        record = EventRecord(
            id=event_id, type=event_type, source=source, time=clock.rfc3339(now), data=data, acceptedAt=now
        )
        self._table.create_entity(
            {
                "PartitionKey": PARTITION,
                "RowKey": event_id,
                "subscriptionId": sub.id,
                "event": record.model_dump_json(),
                "createdAt": clock.rfc3339(now),
                "status": "running",
            }
        )
        Outbox(self._storage, self._settings).replay(ReplayMessage(operationId=event_id))
        return event_id

    def run(self, event_id: str) -> None:
        """Make the one attempt; a message seen again after its attempt was recorded is dropped."""
        try:
            row = self._table.get_entity(PARTITION, event_id)
        except ResourceNotFoundError:
            return
        if row.get("status") != "running":
            return
        sub = SubscriptionStore(self._storage).get(row["subscriptionId"])
        if sub is None:
            self._finish(event_id, "failed", None, "the subscription was deleted")
            return
        record = EventRecord.model_validate_json(row["event"])
        target = sub.replay_target()
        result = attempt(get_pools(self._settings).sender, target, event_id, notification(record, target))
        outcome = result.verdict.outcome
        status = "succeeded" if outcome is Outcome.DELIVERED else "failed"
        log.info(
            "test delivery %s event=%s subscription=%s status=%s url=%s reason=%s",
            status,
            event_id,
            sub.id,
            result.status_code,
            redact_url(sub.notification_url),
            result.verdict.reason or "-",
        )
        self._finish(event_id, status, result.status_code, result.verdict.reason)

    def _finish(self, event_id: str, status: str, code: int | None, error: str | None) -> None:
        fields: dict[str, Any] = {"PartitionKey": PARTITION, "RowKey": event_id, "status": status}
        if code is not None:
            fields["statusCode"] = code
        if error:
            fields["error"] = error[:1024]
        self._table.update_entity(fields, mode=UpdateMode.MERGE)

    def get(self, event_id: str) -> dict[str, Any] | None:
        """What became of a test delivery: `{id, subscriptionId, status, statusCode?, error?}`."""
        try:
            row = self._table.get_entity(PARTITION, event_id)
        except ResourceNotFoundError:
            return None
        shown = {"id": event_id, "subscriptionId": row["subscriptionId"], "status": row["status"]}
        for name in ("statusCode", "error"):
            if row.get(name) is not None:
                shown[name] = row[name]
        return shown


def notification(record: EventRecord, target: Target) -> signing.Notification:
    """The test event as the subscription's content mode sends it, with the test mark."""
    built = signing.Notifications(
        event_id=record.id,
        event_type=record.type,
        source=record.source,
        time=record.time,
        subject=record.subject,
        data=record.data,
    ).get(target.mode)
    if target.mode == "binary":
        return signing.Notification(built.body, {**built.headers, "ce-relaytest": "true"})
    doc = json.loads(built.body)
    doc["relaytest"] = True
    return signing.Notification(compact(doc).encode("utf-8"), built.headers)


def delivers_test(operation_id: str) -> bool:
    """Whether a replay-queue message is a test delivery's (its operation id is the event id)."""
    return operation_id.startswith(ID_PREFIX)
