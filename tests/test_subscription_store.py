"""The subscription store keeps its rows consistent when a subscribe and a DELETE race."""

from __future__ import annotations

from typing import Any

from azure.data.tables import TableClient

from relay.core import clock
from relay.core.models import SubscriptionRequest
from relay.store.storage import SUBSCRIPTIONS_TABLE, Endpoints, Storage
from relay.store.subscriptions import SubscriptionStore, url_key


class DeleteAfterUrlLookup:
    """The subscriptions table, with a DELETE of the URL's subscription landing right after the
    first lookup of a URL row: between a subscribe's read of the URL and its write."""

    def __init__(self, table: TableClient, other: SubscriptionStore) -> None:
        self._table, self._other, self.fired = table, other, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def get_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> Any:
        found = self._table.get_entity(partition_key, row_key, **kwargs)
        if row_key.startswith("u:") and not self.fired:
            self.fired = True
            self._other.delete(found["id"])
        return found


class InterleavedStorage(Storage):
    def __init__(self, endpoints: Endpoints, other: SubscriptionStore) -> None:
        super().__init__(endpoints)
        self.subscriptions = DeleteAfterUrlLookup(super().table(SUBSCRIPTIONS_TABLE), other)

    def table(self, name: str) -> Any:
        return self.subscriptions if name == SUBSCRIPTIONS_TABLE else super().table(name)


def test_update_after_a_concurrent_delete_does_not_resurrect(azurite) -> None:
    """A subscribe whose subscription is deleted between its read of the URL and its write does
    not bring the deleted one back: it starts afresh, under a new id the URL row points to."""
    endpoints = Endpoints(connection_string=azurite.connection_string)
    storage = Storage(endpoints)
    storage.ensure()
    store = SubscriptionStore(storage)
    url = "https://flow.example/callback?sig=abc"
    entity, created = store.subscribe(SubscriptionRequest(notificationUrl=url, eventTypes=["race.*"]))
    assert created

    racing = InterleavedStorage(endpoints, other=store)
    again, created = SubscriptionStore(racing).subscribe(
        SubscriptionRequest(notificationUrl=url, eventTypes=["race.*"])
    )
    assert racing.subscriptions.fired  # the DELETE did land in between
    assert created and again.id != entity.id
    assert store.get(entity.id) is None
    table = storage.table(SUBSCRIPTIONS_TABLE)
    assert table.get_entity("s", url_key(url))["id"] == again.id
    assert [t.sub for page in store.matching("race.x", None) for t in page] == [again.id]


def test_rotation_reaches_the_index_and_never_revives_a_subscription(azurite) -> None:
    """A rotated secret is what fan-out reads; rotating a deleted subscription is None, a disabled
    one gets no index rows back; a URL row that outlived its subscription is made anew (created)."""
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    store = SubscriptionStore(storage)
    url = "https://flow.example/rotate?sig=abc"
    entity, _ = store.subscribe(SubscriptionRequest(notificationUrl=url, eventTypes=["rot.*"]))
    rotated = store.rotate_secret(entity.id)
    assert rotated is not None and rotated.secret != entity.secret
    assert store.get(entity.id) == rotated  # what rotate returns is what a read finds
    assert [t.secret for page in store.matching("rot.x", None) for t in page] == [rotated.secret]
    since = clock.time_key(entity.created_at)
    removed, rotated_ids = store.changes_since(since)
    assert entity.id in rotated_ids and entity.id not in removed  # a rotation is not a removal

    store.disable(entity.id, "gone")
    assert store.rotate_secret(entity.id) is not None
    assert [t for page in store.matching("rot.x", None) for t in page] == []

    store.delete(entity.id)
    assert store.rotate_secret(entity.id) is None and store.get(entity.id) is None

    other = "https://flow.example/orphan?sig=def"
    first, _ = store.subscribe(SubscriptionRequest(notificationUrl=other))
    storage.table(SUBSCRIPTIONS_TABLE).delete_entity("s", f"i:{first.id}")  # a crash between writes
    again, created = store.subscribe(SubscriptionRequest(notificationUrl=other))
    assert created and again.id == first.id and again.secret != first.secret


def test_a_record_reads_back_as_written_and_its_repr_holds_no_credential(azurite) -> None:
    """What subscribe returns is what a read finds (every field, times aware), and a record can be
    logged: neither the callback URL (its `sig` starts the flow) nor the secret is in its repr."""
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    store = SubscriptionStore(storage)
    url = "https://flow.example/record?sig=topsecretsig"
    request = SubscriptionRequest(
        notificationUrl=url,
        eventTypes=["rec.a", "rec.*"],
        subjectBeginsWith="orders/",
        description="typed",
        once=True,
        contentMode="binary",
    )
    entity, created = store.subscribe(
        request, {"workflow_id": "wf", "workflow_operation_name": "op"}, owner="oid-1", scope="oid-1"
    )
    assert created and store.get(entity.id) == entity
    assert entity.event_types == ("rec.a", "rec.*") and entity.once and entity.content_mode == "binary"
    assert entity.owner == "oid-1" and (entity.workflow_id, entity.workflow_operation_name) == ("wf", "op")
    assert entity.created_at.tzinfo is not None and entity.created_at == entity.updated_at
    assert "topsecretsig" not in repr(entity) and entity.secret not in repr(entity)
