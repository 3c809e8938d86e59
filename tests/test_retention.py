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


def test_the_held_deliveries_of_a_subscription_deleted_while_paused_are_swept(
    relay, receiver_factory, unique_type, azurite
) -> None:
    """Three paused subscriptions hold two events each; one is deleted. The sweep deletes its held
    rows (no resume will ever come for it) and keeps the others' (before and after it in key
    order, as their random ids fall), which their resumes then deliver."""
    from relay.pipeline.pause import HELD_PREFIX
    from relay.store.storage import OPERATIONS_TABLE

    receivers = [receiver_factory() for _ in range(3)]
    subs = [relay.subscribe(r.url, eventTypes=[unique_type])["id"] for r in receivers]
    for sub in subs:
        assert relay.post(f"subscriptions/{sub}/pause").status_code == 200
    ids = [relay.publish({"type": unique_type, "data": {"n": n}}).json()["id"] for n in range(2)]
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    operations = storage.table(OPERATIONS_TABLE)

    def held(sub: str) -> list[str]:
        rows = operations.query_entities("PartitionKey eq @pk", parameters={"pk": HELD_PREFIX + sub})
        return sorted(str(row["eventId"]) for row in rows)

    wait_until(lambda: all(held(sub) == sorted(ids) for sub in subs), 60, "two held deliveries each")
    gone, kept = subs[1], [subs[0], subs[2]]
    assert relay.delete(f"subscriptions/{gone}").status_code == 200

    assert sweep(storage, 7)["heldOfDeleted"] == 2
    assert held(gone) == [] and all(held(sub) == sorted(ids) for sub in kept)
    assert sweep(storage, 7)["heldOfDeleted"] == 0
    for sub, receiver in zip(subs, receivers, strict=True):
        if sub in kept:
            assert relay.post(f"subscriptions/{sub}/resume").status_code == 200
            assert [r.headers["webhook-id"] for r in receiver.wait_for(2, 60)] == ids
    assert receivers[1].requests == []
