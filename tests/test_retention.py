"""Retention: what is older than RELAY_EVENT_RETENTION_DAYS is forgotten, the rest is kept."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from relay.core import clock
from relay.pipeline.retention import sweep
from relay.store.eventlog import INDEX_PREFIX, indexed_patterns
from relay.store.storage import EVENTS_TABLE, Endpoints, Storage
from tests.helpers import wait_until


def test_sweep_forgets_only_what_is_past_retention(relay, receiver_factory, unique_type, azurite) -> None:
    """Events, dedupe rows and delivery rows survive a sweep within retention and go after it."""
    receiver = receiver_factory()
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    relay.publish({"type": unique_type, "id": f"keep-{unique_type}", "data": {"big": "z" * 40_000}})
    receiver.wait_for(1)
    storage = Storage(Endpoints(connection_string=azurite.connection_string))

    def listed() -> list[dict[str, Any]]:
        return relay.get(f"subscriptions/{sub['id']}/deliveries").json()["value"]

    def logged() -> list[Any]:
        return [
            e
            for e in storage.table(EVENTS_TABLE).list_entities()
            if e.get("id") == f"keep-{unique_type}" and not e["RowKey"].startswith(INDEX_PREFIX)
        ]

    def indexed() -> list[Any]:
        return [
            e
            for e in storage.table(EVENTS_TABLE).list_entities()
            if e.get("id") == f"keep-{unique_type}" and e["RowKey"].startswith(INDEX_PREFIX)
        ]

    wait_until(listed, 10, "the delivery's receipt")
    assert len(logged()) == 1 and len(indexed()) == len(indexed_patterns(unique_type))

    assert sweep(storage, 7)["events"] == 0
    assert listed() and logged()

    counts = sweep(storage, 7, now=clock.utcnow() + timedelta(days=8))
    assert (
        counts["events"] >= 1
        and counts["eventIndex"] >= 3
        and counts["dedupe"] >= 1
        and counts["deliveries"] >= 1
        and counts["blobs"] >= 1
    )
    assert listed() == [] and logged() == [] and indexed() == []
