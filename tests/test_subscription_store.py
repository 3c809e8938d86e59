"""The subscription store keeps its rows consistent when a subscribe and a DELETE race."""

from __future__ import annotations

import json

from relay import clock
from relay.models import SubscriptionRequest
from relay.storage import SUBSCRIPTIONS_TABLE, Endpoints, Storage
from relay.subscriptions import SubscriptionStore, url_key


def test_update_after_a_concurrent_delete_does_not_resurrect(azurite) -> None:
    """An update whose subscription was deleted meanwhile writes nothing; subscribing again starts afresh."""
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    store = SubscriptionStore(storage)
    url = "https://flow.example/callback?sig=abc"
    entity, created = store.subscribe(SubscriptionRequest(notificationUrl=url, eventTypes=["race.*"]))
    assert created
    store.delete(entity["id"])  # the DELETE that lands between a subscribe's read and its write
    fields = {"eventTypes": json.dumps(["race.*"]), "status": "active", "updatedAt": entity["createdAt"]}
    assert store._update(entity["id"], url, fields, ["race.*"]) is None
    assert store.get(entity["id"]) is None

    again, created = store.subscribe(SubscriptionRequest(notificationUrl=url, eventTypes=["race.*"]))
    assert created and again["id"] != entity["id"]
    table = storage.table(SUBSCRIPTIONS_TABLE)
    assert table.get_entity("s", url_key(url))["id"] == again["id"]
    assert [t.sub for page in store.matching("race.x", None) for t in page] == [again["id"]]


def test_rotation_reaches_the_index_and_never_revives_a_subscription(azurite) -> None:
    """A rotated secret is what fan-out reads; rotating a deleted subscription is None, a disabled
    one gets no index rows back; a URL row that outlived its subscription is made anew (created)."""
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    store = SubscriptionStore(storage)
    url = "https://flow.example/rotate?sig=abc"
    entity, _ = store.subscribe(SubscriptionRequest(notificationUrl=url, eventTypes=["rot.*"]))
    rotated = store.rotate_secret(entity["id"])
    assert rotated is not None and rotated["secret"] != entity["secret"]
    assert [t.secret for page in store.matching("rot.x", None) for t in page] == [rotated["secret"]]
    since = clock.time_key(clock.parse_rfc3339(entity["createdAt"]))
    removed, rotated_ids = store.changes_since(since)
    assert entity["id"] in rotated_ids and entity["id"] not in removed  # a rotation is not a removal

    store.disable(entity["id"], "gone")
    assert store.rotate_secret(entity["id"]) is not None
    assert [t for page in store.matching("rot.x", None) for t in page] == []

    store.delete(entity["id"])
    assert store.rotate_secret(entity["id"]) is None and store.get(entity["id"]) is None

    other = "https://flow.example/orphan?sig=def"
    first, _ = store.subscribe(SubscriptionRequest(notificationUrl=other))
    storage.table(SUBSCRIPTIONS_TABLE).delete_entity("s", f"i:{first['id']}")  # a crash between writes
    again, created = store.subscribe(SubscriptionRequest(notificationUrl=other))
    assert created and again["id"] == first["id"] and again["secret"] != first["secret"]
