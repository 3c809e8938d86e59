"""The subscription store keeps its rows consistent when a subscribe and a DELETE race."""

from __future__ import annotations

import json

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
