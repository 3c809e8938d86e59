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
from datetime import timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from azure.data.tables import TableClient, UpdateMode

from relay.core import clock
from relay.core.models import SubscriptionRequest
from relay.pipeline.retention import sweep as retention_sweep
from relay.store.storage import SUBSCRIPTIONS_TABLE, Endpoints, Storage
from relay.store.subscriptions import SubscriptionStore, url_key
from tests.helpers import InProcessApp, Receiver, RelayProcess, problem_of, wait_until

TRIALS = 40


def race(*calls: Callable[[], Any]) -> list[Any]:
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
        other = SubscriptionRequest(notificationUrl=url, eventTypes=["store.other"])
        race(
            partial(store.subscribe, request),
            partial(store.rotate_secret, sub.id),
            partial(store.delete, sub.id),
            partial(store.subscribe, other),
        )
    receiving = {t.sub for page in store.matching(event_type, None) for t in page}
    present = {s.id for s in store.list_page(limit=1000, token=None, event_type=event_type)[0]}
    assert receiving == present
    assert index_orphans(storage.table(SUBSCRIPTIONS_TABLE)) == []


# ---- what an older version (or a caller that died between writes) left behind --------------


def _store(azurite: Any) -> tuple[Storage, SubscriptionStore]:
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    return storage, SubscriptionStore(storage)


def _index_of(table: TableClient, sub_id: str) -> list[str]:
    return sorted(
        r["PartitionKey"]
        for r in table.query_entities(
            "PartitionKey ge 'x:' and PartitionKey lt 'x;' and RowKey eq @id", parameters={"id": sub_id}
        )
    )


def test_fan_out_skips_and_removes_an_index_row_without_its_subscription(azurite: Any) -> None:
    """Index rows as the old code left them (the row and URL row gone, the index rows there):
    fan-out delivers nothing to them and removes them; one of a disabled subscription, or of an
    older generation, or under a pattern the row no longer lists, likewise."""
    storage, store = _store(azurite)
    table = storage.table(SUBSCRIPTIONS_TABLE)
    kind = f"ghost{uuid.uuid4().hex[:8]}"
    ghost, _ = store.subscribe(
        SubscriptionRequest(notificationUrl=f"https://ghost.example/{kind}", eventTypes=[f"{kind}.*"])
    )
    live, _ = store.subscribe(
        SubscriptionRequest(notificationUrl=f"https://live.example/{kind}", eventTypes=[f"{kind}.a"])
    )
    table.submit_transaction(
        [
            ("delete", {"PartitionKey": "s", "RowKey": f"i:{ghost.id}"}),
            ("delete", {"PartitionKey": "s", "RowKey": url_key(ghost.notification_url)}),
        ]
    )
    assert {t.sub for page in store.matching(f"{kind}.a", None) for t in page} == {live.id}
    assert _index_of(table, ghost.id) == []

    # A disabled one's row left behind (a disable that died before removing it), an index row of
    # an older generation, and one under a pattern the subscription no longer has.
    stale = dict(table.get_entity(f"x:{kind}.a", live.id))
    store.disable(live.id, "gone")
    table.upsert_entity(stale)
    assert [t for page in store.matching(f"{kind}.a", None) for t in page] == []
    assert _index_of(table, live.id) == []
    again = store.activate(live.id)
    assert again is not None and again.generation == live.generation + 1
    table.upsert_entity(stale)  # generation of before the disable
    assert [t for page in store.matching(f"{kind}.a", None) for t in page] == []
    store.subscribe(SubscriptionRequest(notificationUrl=live.notification_url, eventTypes=[f"{kind}.b"]))
    table.upsert_entity({**table.get_entity(f"x:{kind}.b", live.id), "PartitionKey": f"x:{kind}.a"})
    assert [t for page in store.matching(f"{kind}.a", None) for t in page] == []
    assert [t.sub for page in store.matching(f"{kind}.b", None) for t in page] == [live.id]
    assert _index_of(table, live.id) == [f"x:{kind}.b"]


def test_delete_and_a_410_remove_index_rows_whether_or_not_the_row_is_there(azurite: Any) -> None:
    """Index rows written again after their subscription was removed (a writer that died before
    it could clean up): a DELETE of the id, an unsubscribe-free 410 (disable), and the sweep
    remove them from the removal record, though the subscription row is gone."""
    storage, store = _store(azurite)
    table = storage.table(SUBSCRIPTIONS_TABLE)
    kind = f"left{uuid.uuid4().hex[:8]}"
    subs = [
        store.subscribe(
            SubscriptionRequest(notificationUrl=f"https://left.example/{kind}/{n}", eventTypes=[f"{kind}.*"])
        )[0]
        for n in range(3)
    ]
    left = []
    for sub in subs:
        row = dict(table.get_entity(f"x:{kind}.*", sub.id))
        assert store.delete(sub.id)
        table.upsert_entity(row)  # the late write of a caller that then died
        left.append(sub.id)
    assert all(_index_of(table, i) == [f"x:{kind}.*"] for i in left)

    assert not store.delete(left[0])  # nothing to remove, but its index rows go
    store.disable(left[1], "receiver answered 410")
    assert _index_of(table, left[0]) == [] and _index_of(table, left[1]) == []
    assert store.get(left[0]) is None and store.get(left[1]) is None

    counts = retention_sweep(storage, 7)
    assert counts["indexRepaired"] >= 1
    assert _index_of(table, left[2]) == []
    assert index_orphans(table) == []


def test_the_sweep_finishes_a_removal_that_died_mid_way_and_restores_missing_index_rows(azurite: Any) -> None:
    """A DELETE that died after its mark (the row `removing`, its index rows there) is finished
    by the sweep once it is old enough; a receiving subscription whose index rows went missing
    gets them back."""
    storage, store = _store(azurite)
    table = storage.table(SUBSCRIPTIONS_TABLE)
    kind = f"stuck{uuid.uuid4().hex[:8]}"
    stuck, _ = store.subscribe(
        SubscriptionRequest(notificationUrl=f"https://stuck.example/{kind}", eventTypes=[f"{kind}.a"])
    )
    bare, _ = store.subscribe(
        SubscriptionRequest(notificationUrl=f"https://bare.example/{kind}", eventTypes=[f"{kind}.a"])
    )
    table.update_entity({"PartitionKey": "s", "RowKey": f"i:{stuck.id}", "removing": True}, mode=UpdateMode.MERGE)
    table.delete_entity(f"x:{kind}.a", bare.id)
    assert store.get(stuck.id) is not None  # shown until its removal ends

    retention_sweep(storage, 7, now=clock.utcnow() + timedelta(hours=1))
    assert store.get(stuck.id) is None and _index_of(table, stuck.id) == []
    assert _index_of(table, bare.id) == [f"x:{kind}.a"]
    assert [t.sub for page in store.matching(f"{kind}.a", None) for t in page] == [bare.id]
    assert index_orphans(table) == []


# ---- registrations: a flow edited in either order keeps receiving (issue 19 item 1) ---------------


def _receiving(app_storage: Storage, event_type: str) -> set[str]:
    return {t.sub for page in SubscriptionStore(app_storage).matching(event_type, None) for t in page}


def _delete(app: InProcessApp, location: str) -> None:
    path = location.split("/api/", 1)[1]
    answer = app.delete(path)
    assert answer.status_code == 200, answer.text


def test_each_subscribe_is_a_registration_of_its_own(app: InProcessApp, app_storage: Storage) -> None:
    """Same id for the same URL, a different Location for each subscribe; a DELETE of a
    superseded one removes nothing, of the current one removes it, without one removes it."""
    kind = f"reg.{uuid.uuid4().hex[:8]}"
    url = f"http://127.0.0.1:9/{kind}?sig=s1"
    first = app.post("subscriptions", {"notificationUrl": url, "eventTypes": [kind]})
    second = app.post("subscriptions", {"notificationUrl": url, "eventTypes": [kind]})
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    loc1, loc2 = first.headers["location"], second.headers["location"]
    assert loc1 != loc2 and urlsplit(loc1).path == urlsplit(loc2).path
    sub_id = first.json()["id"]

    since = clock.time_key(clock.utcnow())
    _delete(app, loc1)  # superseded: 200, nothing removed
    assert app.get(f"subscriptions/{sub_id}").status_code == 200 and _receiving(app_storage, kind) == {sub_id}
    assert sub_id not in SubscriptionStore(app_storage).changes_since(since)[0]  # queued work goes on
    _delete(app, loc2)  # the current one: removed
    assert app.get(f"subscriptions/{sub_id}").status_code == 404 and _receiving(app_storage, kind) == set()
    _delete(app, loc2)  # again: 200

    third = app.subscribe(url, eventTypes=[kind])
    assert app.delete(f"subscriptions/{third['id']}").status_code == 200  # no registration: removed
    assert app.get(f"subscriptions/{third['id']}").status_code == 404

    for bad in ("abc", "0", "-1", "1%0A", "9" * 40, ""):
        problem_of(app.delete(f"subscriptions/{sub_id}?registration={bad}"), 400, "registration")


@pytest.mark.parametrize("same_url", [True, False], ids=["same-callback", "new-callback"])
@pytest.mark.parametrize("order", ["subscribe-then-delete", "delete-then-subscribe"])
def test_an_edited_trigger_keeps_receiving_in_either_order(
    app: InProcessApp, app_storage: Storage, order: str, same_url: bool
) -> None:
    kind = f"edit.{uuid.uuid4().hex[:8]}"
    old_url = f"http://127.0.0.1:9/{kind}/a?sig=s1"
    new_url = old_url if same_url else f"http://127.0.0.1:9/{kind}/b?sig=s2"
    first = app.post("subscriptions", {"notificationUrl": old_url, "eventTypes": [kind]})
    assert first.status_code == 201
    if order == "subscribe-then-delete":
        edited = app.post("subscriptions", {"notificationUrl": new_url, "eventTypes": [kind]})
        _delete(app, first.headers["location"])
    else:
        _delete(app, first.headers["location"])
        edited = app.post("subscriptions", {"notificationUrl": new_url, "eventTypes": [kind]})
    assert edited.status_code == 201, edited.text
    sub_id = edited.json()["id"]
    assert app.get(f"subscriptions/{sub_id}").status_code == 200
    assert _receiving(app_storage, kind) == {sub_id}
    listed = app.get(f"subscriptions?eventType={kind}").json()["value"]
    assert [s["id"] for s in listed] == [sub_id]
    if sub_id != first.json()["id"]:
        assert app.get(f"subscriptions/{first.json()['id']}").status_code == 404


def test_many_concurrent_subscribes_of_one_url_are_never_a_500(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver]
) -> None:
    """24 re-subscribes of one URL at the same moment (a burst of flow saves, a client retrying
    hard): each conditional write that loses starts over, and one that keeps losing is a 503 with
    `Retry-After` a client retries, never a 500 (16 at once answered 500 before)."""
    url = receiver_factory().url + "/" + uuid.uuid4().hex
    first = relay.subscribe(url, eventTypes=["burst.a"])
    answers = race(
        *[partial(relay.post, "subscriptions", {"notificationUrl": url, "eventTypes": ["burst.a"]}) for _ in range(24)]
    )
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 503}, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["Content-Type"].startswith("application/problem+json")
            assert int(answer.headers["Retry-After"]) >= 1
        else:
            assert answer.json()["id"] == first["id"]
    assert relay.get(f"subscriptions/{first['id']}").status_code == 200
