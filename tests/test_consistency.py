"""Subscribe, re-subscribe, rotate and delete racing on one subscription (issue 18 item 1).

Once the racing calls are answered the subscription is either present (readable, listed,
receiving) or absent (404, not listed, receiving nothing), and no fan-out index row is left
without its subscription. Each race runs many times, as threads against the dev host on a real
Azurite, and the deliveries of one event published afterwards are what "receiving" means.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from azure.data.tables import TableClient

from relay.models import SubscriptionRequest
from relay.storage import SUBSCRIPTIONS_TABLE, Endpoints, Storage
from relay.subscriptions import SubscriptionStore
from tests.helpers import Receiver, RelayProcess, wait_until

TRIALS = 40


def race(*calls: Callable[[], requests.Response]) -> list[requests.Response]:
    """Run the calls at the same moment on threads of their own; their answers, in order."""
    barrier = threading.Barrier(len(calls))
    answers: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        answers[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


def index_orphans(table: TableClient) -> list[tuple[str, str]]:
    """Fan-out index rows whose subscription is gone, not active, or does not list the pattern."""
    subs = {
        row["id"]: row
        for row in table.query_entities(
            "PartitionKey eq 's' and RowKey ge 'i:' and RowKey lt 'i;'", select=["id", "status", "eventTypes"]
        )
    }
    orphans = []
    for row in table.query_entities("PartitionKey ge 'x:' and PartitionKey lt 'x;'", select=["PartitionKey", "RowKey"]):
        sub = subs.get(row["RowKey"])
        pattern = row["PartitionKey"][2:]
        if sub is None or sub.get("status") == "disabled" or pattern not in sub.get("eventTypes", ""):
            orphans.append((row["PartitionKey"], row["RowKey"]))
    return orphans


def settle(relay: RelayProcess, sentinel: Receiver, event_id: str) -> None:
    """Fan-out reaches every subscriber of an event in one pass: once the sentinel has it, every
    other delivery of it is planned; then the work queues drain."""
    wait_until(lambda: event_id in sentinel.ids(), 60, "the sentinel to receive the event")
    wait_until(relay.queue_idle, 60, "the work queues to drain")


@pytest.mark.parametrize("kind", ["resubscribe", "rotate"])
def test_a_change_racing_delete_leaves_it_present_or_absent_never_a_ghost(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver], kind: str
) -> None:
    event_type = f"race.{kind}.{uuid.uuid4().hex[:8]}"
    target = receiver_factory()
    sentinel = receiver_factory()
    relay.subscribe(sentinel.url, eventTypes=[event_type])
    outcomes: dict[str, bool] = {}  # callback path -> present after the race
    ids: dict[str, str] = {}
    for trial in range(TRIALS):
        url = f"{target.url}/{kind}/{trial}"
        sub = relay.subscribe(url, eventTypes=[event_type])
        change: Callable[[], requests.Response]
        if kind == "resubscribe":

            def change(url: str = url) -> requests.Response:
                return relay.post("subscriptions", {"notificationUrl": url, "eventTypes": [event_type]})
        else:

            def change(sub_id: str = sub["id"]) -> requests.Response:
                return relay.post(f"subscriptions/{sub_id}/secret")

        changed, deleted = race(change, lambda sub_id=sub["id"]: relay.delete(f"subscriptions/{sub_id}"))
        assert deleted.status_code == 200, deleted.text
        assert changed.status_code in (200, 201, 404), changed.text
        # Whatever the subscribe answered is what may be present now (a fresh id if it came second).
        sub_id = changed.json()["id"] if changed.status_code == 201 else sub["id"]
        read = relay.get(f"subscriptions/{sub_id}")
        assert read.status_code in (200, 404), read.text
        path = f"/hook/{kind}/{trial}"
        outcomes[path], ids[path] = read.status_code == 200, sub_id
        if sub_id != sub["id"]:
            assert relay.get(f"subscriptions/{sub['id']}").status_code == 404

    listed = {
        s["id"] for s in relay.get("subscriptions", params={"eventType": event_type, "limit": 1000}).json()["value"]
    }
    for path, present in outcomes.items():
        assert (ids[path] in listed) == present, f"{path}: read and list disagree"

    # Receiving: one event, published after every answer, reaches exactly the present ones.
    event_id = relay.publish({"type": event_type, "data": {}}).json()["id"]
    settle(relay, sentinel, event_id)
    delivered = {r.path for r in target.requests if r.headers.get("webhook-id") == event_id}
    assert delivered == {p for p, present in outcomes.items() if present}, (
        f"ghosts: {sorted(delivered - {p for p, present in outcomes.items() if present})}"
    )
    table = Storage(Endpoints(connection_string=relay.azurite.connection_string)).table(SUBSCRIPTIONS_TABLE)
    assert index_orphans(table) == []


def test_the_store_leaves_no_index_row_without_its_subscription(azurite: Any) -> None:
    """The same races through the store's own calls, many threads at once, then a sweep of the
    whole index: every row has its subscription, active, listing the pattern."""
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    store = SubscriptionStore(storage)
    event_type = f"store.race.{uuid.uuid4().hex[:8]}"
    for trial in range(TRIALS):
        url = f"https://flow.example/race/{trial}?sig=abc"
        request = SubscriptionRequest(notificationUrl=url, eventTypes=[event_type, "store.*"])
        sub, _ = store.subscribe(request)
        calls: list[Callable[[], Any]] = [
            lambda: store.subscribe(request),
            lambda: store.rotate_secret(sub.id),
            lambda: store.delete(sub.id),
            lambda: store.subscribe(SubscriptionRequest(notificationUrl=url, eventTypes=["store.other"])),
        ]
        race(*calls)  # type: ignore[arg-type]
    receiving = {t.sub for page in store.matching(event_type, None) for t in page}
    present = {s.id for s in store.list(limit=1000, token=None, event_type=event_type)[0]}
    assert receiving == present
    assert index_orphans(storage.table(SUBSCRIPTIONS_TABLE)) == []
