"""The subscription store keeps its rows consistent when a subscribe and a DELETE race."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path
from typing import Any

from azure.data.tables import TableClient

from relay.core import clock, runtime
from relay.core.models import SubscriptionRequest
from relay.store.storage import SUBSCRIPTIONS_TABLE, Endpoints, Storage
from relay.store.subscriptions import Caller, SubscriptionStore, url_key


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


def test_a_paused_subscription_keeps_its_index_rows_marked_through_the_sweep_and_a_resubscribe(azurite) -> None:
    """The pause ported onto the split store: fan-out finds a paused subscription marked `paused`,
    the repair sweep counts it as receiving (repairs nothing), a re-subscribe keeps it paused, the
    markers say what queued work must hold (newest wins) and a resume unmarks its rows."""
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    store = SubscriptionStore(storage)
    url = f"https://flow.example/pause-{uuid.uuid4().hex}?sig=abc"
    entity, _ = store.subscribe(SubscriptionRequest(notificationUrl=url, eventTypes=["pau.*"]))

    def found() -> list[tuple[str, bool]]:  # other tests' subscriptions (`*`) share the table
        return [(t.sub, t.paused) for page in store.matching("pau.x", None) for t in page if t.sub == entity.id]

    since = clock.time_key(entity.created_at)
    paused = store.set_paused(entity.id, True)
    assert paused is not None and paused.status == "paused" and paused.receives
    assert found() == [(entity.id, True)]
    store.repair_index()  # what other tests left behind
    assert store.repair_index() == 0 and found() == [(entity.id, True)]  # paused counts as receiving
    again, created = store.subscribe(SubscriptionRequest(notificationUrl=url, eventTypes=["pau.*"]))
    assert not created and again.status == "paused"
    changes = store.changes(since)
    assert changes.paused == {entity.id} and entity.id not in changes.removed  # a pause is not a removal
    assert store.set_paused(entity.id, True, scope="someone-else") is None  # not that owner's

    resumed = store.set_paused(entity.id, False)
    assert resumed is not None and resumed.status == "active"
    assert found() == [(entity.id, False)]
    assert store.changes(since).paused == set()  # the resume marker is the newest
    store.disable(entity.id, "gone")
    still = store.set_paused(entity.id, True)
    assert still is not None and still.status == "disabled"  # a disabled one stays disabled
    assert found() == []


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
        request, Caller(workflow_id="wf", workflow_operation_name="op"), owner="oid-1", scope="oid-1"
    )
    assert created and store.get(entity.id) == entity
    assert entity.event_types == ("rec.a", "rec.*") and entity.once and entity.content_mode == "binary"
    assert entity.owner == "oid-1" and (entity.workflow_id, entity.workflow_operation_name) == ("wf", "op")
    assert entity.created_at.tzinfo is not None and entity.created_at == entity.updated_at
    assert "topsecretsig" not in repr(entity) and entity.secret not in repr(entity)


class CountingIndexReads(Storage):
    """Storage whose subscriptions table counts the queries of one fan-out index partition."""

    def __init__(self, endpoints: Endpoints, pattern: str) -> None:
        super().__init__(endpoints)
        self.index_reads = 0
        table = super().table(SUBSCRIPTIONS_TABLE)
        outer = self

        class Counting:
            def __getattr__(self, name: str) -> Any:
                return getattr(table, name)

            def query_entities(self, query: str, **kwargs: Any) -> Any:
                if (kwargs.get("parameters") or {}).get("pk") == f"x:{pattern}":
                    outer.index_reads += 1
                return table.query_entities(query, **kwargs)

        self._counting = Counting()

    def table(self, name: str) -> Any:
        return self._counting if name == SUBSCRIPTIONS_TABLE else super().table(name)


def test_the_index_cache_belongs_to_the_runtime(azurite) -> None:
    """The process-wide copy of small index partitions is a part of the runtime: a fresh runtime
    (a test's, a host restart's) starts without one and reads the partition again."""
    kind = f"cached.{uuid.uuid4().hex[:8]}"
    storage = CountingIndexReads(Endpoints(connection_string=azurite.connection_string), kind)
    storage.ensure()
    store = SubscriptionStore(storage)
    sub, _ = store.subscribe(SubscriptionRequest(notificationUrl=f"https://r.example/{kind}", eventTypes=[kind]))

    def delivered_to() -> list[str]:
        return [t.sub for page in store.matching(kind, None) for t in page]

    runtime.reset()
    assert sub.id in delivered_to() and storage.index_reads == 1
    assert sub.id in delivered_to() and storage.index_reads == 1  # served from the runtime's copy
    runtime.reset()
    assert sub.id in delivered_to() and storage.index_reads == 2


# Columns of the subscriptions table's rows, and the fields of a subscription: only the rows
# modules (`rows`, `kinds`) read rows by name; everything past them holds typed records.
ROW_NAMES = {
    "id", "notificationUrl", "secret", "eventTypes", "createdAt", "updatedAt", "subjectBeginsWith",
    "subjectEndsWith", "description", "once", "contentMode", "status", "disabledReason", "gen", "owner",
    "workflowId", "workflowOperationName", "clientTrackingId", "ver", "reg", "removing", "url", "patterns",
    "removedAt", "kind", "layout", "since", "v", "workflow_id", "workflow_operation_name", "client_tracking_id",
}  # fmt: skip


def test_subscription_rows_are_read_by_name_only_in_the_rows_modules() -> None:
    root = Path(__file__).resolve().parent.parent
    package = root / "relay" / "store" / "subscriptions"
    assert package.is_dir()
    files = [p for p in package.glob("*.py") if p.name not in {"rows.py", "kinds.py"}]
    files += [root / "relay" / "http" / "routes" / "subscriptions.py"]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and not (isinstance(node.func.value, ast.Attribute) and node.func.value.attr in ("route", "params"))
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):  # a route's `{id}` or a query parameter is not a row's
                key = node.args[0].value
            if key in ROW_NAMES:
                found.append(f"{path.relative_to(root)}:{node.lineno} {key}")
    assert found == []
