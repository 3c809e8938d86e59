"""Queue work outlasts storage outages without losing its identity or filling the poison queue."""

from __future__ import annotations

import json

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.functions.queue import QueueMessage

from relay.core import settings
from relay.core.models import EventIn, FanoutMessage
from relay.pipeline import fanout
from relay.pipeline.delivery import Deliverer
from relay.store.events import accept
from relay.store.storage import FANOUT_QUEUE, Storage
from relay.triggers import worker


def _message(dequeue_count: int) -> QueueMessage:
    body = FanoutMessage(event=accept(EventIn(type="t.outage", data=1), "urn:test")).model_dump_json()
    return QueueMessage(id="first-message-id", body=body.encode(), dequeue_count=dequeue_count)


def _down(_storage: Storage) -> None:
    raise ServiceRequestError("storage is unreachable")


def test_outage_puts_the_message_back_keeping_its_origin(app_storage, monkeypatch) -> None:
    """After a few failed tries during an outage, the message is re-enqueued with its origin, not poisoned."""
    monkeypatch.setattr(worker, "REQUEUE_DELAY", 0)
    queue = app_storage.queue(FANOUT_QUEUE)
    queue.clear_messages()
    worker.patiently(FANOUT_QUEUE, _message(dequeue_count=3), _down)
    again = [json.loads(m.content) for m in queue.peek_messages(max_messages=32)]
    assert [m["origin"] for m in again] == ["first-message-id"]


def test_early_outage_and_bugs_are_left_to_the_host(app_storage) -> None:
    """An outage on the first tries, and any other error, fail the execution so the host retries."""
    with pytest.raises(ServiceRequestError):
        worker.patiently(FANOUT_QUEUE, _message(dequeue_count=1), _down)
    with pytest.raises(ZeroDivisionError):
        worker.patiently(FANOUT_QUEUE, _message(dequeue_count=5), lambda s: 1 / 0)


def test_requeued_event_is_fanned_out_not_taken_for_a_duplicate(app_storage, receiver_factory, unique_type) -> None:
    """A re-enqueued fan-out message (new id, same origin) still logs and delivers its event;
    another publish of the same event does not."""
    from relay.core.models import SubscriptionRequest
    from relay.store.eventlog import EventLog
    from relay.store.subscriptions import SubscriptionStore

    receiver = receiver_factory()
    SubscriptionStore(app_storage).subscribe(
        SubscriptionRequest(notificationUrl=receiver.url, eventTypes=[unique_type])
    )
    record = accept(EventIn(type=unique_type, id="evt-origin", data=1), "urn:test")
    log = EventLog(app_storage)
    first = log.record(record, "first-message-id")  # the first try logged it, then storage went away
    assert first is not None
    requeued = FanoutMessage(event=record, origin="first-message-id")
    fanout.fan_out(app_storage, settings.get_settings(), requeued, "second-message-id")
    assert receiver.ids() == ["evt-origin"]  # delivered (inline: fan_out returns once it is sent)

    fanout.fan_out(app_storage, settings.get_settings(), FanoutMessage(event=record), "another-publish")
    assert receiver.ids() == ["evt-origin"]  # a second publish of the same event is a duplicate


def test_generated_ids_skip_dedupe_but_a_crash_retry_finds_its_log_row(app_storage) -> None:
    """An event whose id the relay made up is logged once, even when its message comes back after a crash."""
    from relay.store.eventlog import INDEX_PREFIX, EventLog, dedupe_key_of, indexed_patterns
    from relay.store.storage import EVENTS_TABLE

    record = accept(EventIn(type="t.generated", data=1), "urn:test")
    assert record.generated
    log = EventLog(app_storage)
    first = log.record(record, "m1", seen_before=False)
    assert log.record(record, "m1", seen_before=True) == first
    rows = [e for e in app_storage.table(EVENTS_TABLE).list_entities() if e.get("id") == record.id]
    index_rows = [e for e in rows if e["RowKey"].startswith(INDEX_PREFIX)]
    assert len(rows) - len(index_rows) == 1 and len(index_rows) == len(indexed_patterns(record.type))
    assert not [
        e for e in app_storage.table(EVENTS_TABLE).list_entities() if e["PartitionKey"] == dedupe_key_of(record)
    ]


def test_last_try_of_a_failing_delivery_is_recorded_as_failed(app_storage) -> None:
    """A work item that fails on the host's last try is written to the delivery log as failed."""
    import uuid
    from pathlib import Path

    from relay.core.models import DeliveryMessage, Target
    from relay.store.deliverylog import DeliveryLog

    host = json.loads((Path(__file__).resolve().parent.parent / "host.json").read_text())
    assert worker.MAX_DEQUEUE_COUNT == host["extensions"]["queues"]["maxDequeueCount"]
    sub = uuid.uuid4().hex
    item = DeliveryMessage(
        eventId="e-last",
        eventType="t.x",
        log=("e:20260101", "20260101T000000.000000Z_e-last"),
        since="20260101T000000.000000Z",
        targets=[Target(sub=sub, url="https://x.example/", secret="whsec_" + "A" * 43)],
    )
    msg = QueueMessage(id="m-last", body=item.model_dump_json().encode(), dequeue_count=worker.MAX_DEQUEUE_COUNT)
    worker.patiently(
        "relay-deliveries",
        msg,
        lambda s: 1 / 0,
        lambda s, exc: Deliverer(s, settings.get_settings()).abandon(item, f"failed: {type(exc).__name__}"),
    )
    rows, _ = DeliveryLog(app_storage, 7).list(sub, status="failed", limit=10, token=None)
    assert rows and rows[0].event_id == "e-last" and "ZeroDivisionError" in (rows[0].last_error or "")
