"""Fan-out reads only the index partitions that hold subscribers (presence rows), and a store that
predates presence rows keeps delivering until the sweep has made them whole."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from relay.core import clock
from relay.core.models import SubscriptionRequest
from relay.store.storage import SUBSCRIPTIONS_TABLE, Endpoints, Storage
from relay.store.subscriptions import LAYOUT_COMPLETE, LAYOUT_PENDING, SubscriptionStore
from relay_dev.azurite import Azurite


class _RecordingTable:
    """A table client that records the filter of every query it is asked for."""

    def __init__(self, inner: Any, filters: list[str]) -> None:
        self._inner, self._filters = inner, filters

    def query_entities(self, query_filter: str, *args: Any, **kw: Any) -> Any:
        self._filters.append(query_filter)
        return self._inner.query_entities(query_filter, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RecordingStorage(Storage):
    def __init__(self, connection_string: str) -> None:
        super().__init__(Endpoints(connection_string=connection_string))
        self.filters: list[str] = []

    def table(self, name: str) -> Any:
        return _RecordingTable(super().table(name), self.filters)


def _targets(store: SubscriptionStore, event_type: str) -> list[str]:
    return [t.sub for page in store.matching(event_type, None) for t in page]


def test_fan_out_queries_the_presence_partition_then_only_present_patterns(azurite: Azurite) -> None:
    storage = RecordingStorage(azurite.connection_string)
    storage.ensure()
    store = SubscriptionStore(storage)
    kind = f"pres{uuid.uuid4().hex[:8]}"
    exact, _ = store.subscribe(
        SubscriptionRequest(notificationUrl=f"https://a.example/{kind}", eventTypes=[f"{kind}.b.c"])
    )
    prefix, _ = store.subscribe(
        SubscriptionRequest(notificationUrl=f"https://b.example/{kind}", eventTypes=[f"{kind}.*"])
    )
    assert store.layout() == LAYOUT_COMPLETE

    storage.filters.clear()
    assert sorted(_targets(store, f"{kind}.b.c")) == sorted([exact.id, prefix.id])
    # One query of the presence partition, then the two partitions that hold subscribers: not
    # `{kind}.b.*` nor `*` (this module's Azurite has no `*` subscriber), of four candidates.
    assert storage.filters[0].startswith("PartitionKey eq @pk and ( RowKey eq")
    assert storage.filters[1:] == ["PartitionKey eq @pk"] * 2

    # Nothing changed: the partitions read a moment ago are still what storage holds (their
    # presence tokens say so), and the presence query is the only read.
    storage.filters.clear()
    assert sorted(_targets(store, f"{kind}.b.c")) == sorted([exact.id, prefix.id])
    assert len(storage.filters) == 1

    # Every change gives the partition a new token, so fan-out reads it again: a rotated secret
    # is the one signed with at once, a deleted subscription gets nothing more.
    rotated = store.rotate_secret(exact.id)
    assert rotated is not None
    assert {t.sub: t.secret for page in store.matching(f"{kind}.b.c", None) for t in page}[exact.id] == rotated.secret
    # An unsubscribe leaves its presence row (never missing, at worst an empty read): nothing is delivered.
    store.delete(exact.id)
    assert _targets(store, f"{kind}.b.c") == [prefix.id]
    store.disable(prefix.id, "gone")
    assert _targets(store, f"{kind}.b.c") == []
    store.subscribe(SubscriptionRequest(notificationUrl=f"https://b.example/{kind}", eventTypes=[f"{kind}.*"]))
    assert _targets(store, f"{kind}.b.c") == [prefix.id]  # re-activated by subscribing again
    # Subscribe, then publish: the new pattern's presence row is written before its index row.
    late, _ = store.subscribe(
        SubscriptionRequest(notificationUrl=f"https://c.example/{kind}", eventTypes=[f"{kind}.b.*"])
    )
    assert sorted(_targets(store, f"{kind}.b.c")) == sorted([prefix.id, late.id])


def test_a_store_from_before_presence_rows_delivers_until_and_after_the_sweep_backfills(azurite: Azurite) -> None:
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    store = SubscriptionStore(storage)
    kind = f"old{uuid.uuid4().hex[:8]}"
    sub, _ = store.subscribe(
        SubscriptionRequest(notificationUrl=f"https://old.example/{kind}", eventTypes=[f"{kind}.*"])
    )
    # What an older version left: index rows, and neither presence rows nor a layout marker.
    table = storage.table(SUBSCRIPTIONS_TABLE)
    for row in list(table.query_entities("PartitionKey eq @pk", parameters={"pk": "p"})):
        table.delete_entity(row["PartitionKey"], row["RowKey"])
    assert store.layout() is None
    assert _targets(store, f"{kind}.x") == [sub.id]  # no marker: every candidate partition is read

    now = clock.utcnow()
    assert store.complete_layout(now) == LAYOUT_PENDING  # subscriptions exist: not whole yet
    assert _targets(store, f"{kind}.x") == [sub.id]
    assert store.complete_layout(now + timedelta(minutes=5)) == LAYOUT_PENDING  # older instances may still write
    assert _targets(store, f"{kind}.x") == [sub.id]

    assert store.complete_layout(now + timedelta(hours=2)) == LAYOUT_COMPLETE
    assert store.layout() == LAYOUT_COMPLETE
    assert _targets(store, f"{kind}.x") == [sub.id]  # found through its backfilled presence row
    presence = {row["RowKey"] for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": "p"})}
    assert f"{kind}.*" in presence
