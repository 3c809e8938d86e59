"""A fan-out delivers the first work items it sends itself (relay.pipeline.held): a large fan-out does not
wait for the delivery queue's next poll. They are sent leased, so a process killed while it
delivers them leaves them to the delivery trigger; items beyond this process's room are sent
visible, for the trigger of any instance."""

from __future__ import annotations

import base64
import json
import threading

import pytest
from azure.storage.queue import QueueServiceClient

from relay.core import runtime, settings
from relay.pipeline import held
from relay.store.storage import DELIVERY_QUEUE, FANOUT_QUEUE
from tests.helpers import ROOT, wait_until


def _queue(azurite, name: str):
    return QueueServiceClient.from_connection_string(azurite.connection_string).get_queue_client(name)


def _count(queue) -> int:
    return queue.get_queue_properties().approximate_message_count


def _subscribe(app, receiver, unique_type, n: int) -> None:
    for i in range(n):
        body = {"notificationUrl": f"{receiver.url}/{i}", "eventTypes": [unique_type]}
        answer = app.request("POST", "subscriptions", body)
        assert answer.status_code == 201, answer.text


@pytest.fixture
def roomy(app_storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """As many slots for the one receiver as there are attempt threads: no attempt is ever handed
    back to the delivery queue, which nothing in this process reads."""
    monkeypatch.setenv("RELAY_ORIGIN_SLOTS", "64")
    settings.reset_settings()
    runtime.reset()


def test_work_items_are_delivered_with_no_delivery_trigger_running(
    app, roomy, azurite, receiver_factory, unique_type
) -> None:
    """250 subscribers: 100 inline and two work items. In this process no queue trigger runs, so
    only the fan-out itself can deliver the items; it does, and deletes their messages."""
    receiver = receiver_factory()
    deliveries = _queue(azurite, DELIVERY_QUEUE)
    deliveries.clear_messages()
    _subscribe(app, receiver, unique_type, 250)
    answer = app.request("POST", "events", {"type": unique_type, "data": "wide"})
    assert answer.status_code == 202
    receiver.wait_for(250, timeout=60)
    assert sorted(r.path for r in receiver.requests) == sorted(f"/hook/{n}" for n in range(250))
    assert {r.headers["webhook-id"] for r in receiver.requests} == {answer.json()["id"]}
    wait_until(lambda: _count(deliveries) == 0, 30, "the held work items' messages to be deleted")
    assert len(receiver.requests) == 250


def test_items_beyond_the_room_are_left_visible_for_any_instance(
    app, roomy, azurite, receiver_factory, unique_type, monkeypatch
) -> None:
    """With room for one held item, a fan-out of 250 delivers 100 inline and 100 itself, and sends
    the last 50 visible, for whichever instance's trigger polls first."""
    monkeypatch.setattr(held, "HELD_ITEMS", 1)
    release = threading.Event()
    # The last ten of the 200 answers wait (the held item's, started after the inline hundred),
    # so the held item is still in progress when the last one is sent, however the threads run.
    receiver = receiver_factory(lambda item, n: (200, {}, b"") if n < 190 or release.wait(30) else (500, {}, b""))
    deliveries = _queue(azurite, DELIVERY_QUEUE)
    deliveries.clear_messages()
    _subscribe(app, receiver, unique_type, 250)
    try:
        assert app.request("POST", "events", {"type": unique_type, "data": "wide"}).status_code == 202
        # Arrivals, not answers: the receiver wakes `wait_for` only once it has answered.
        wait_until(lambda: len(receiver.requests) >= 200, 60, "200 deliveries to arrive")
        visible = [json.loads(base64.b64decode(m.content)) for m in deliveries.peek_messages(max_messages=32)]
        (item,) = [v for v in visible if v["targets"][0]["attempt"] == 1]  # the held one is invisible
        assert len(item["targets"]) == 50
        release.set()
        wait_until(lambda: held.room().busy == 0, 60, "the held item to be done")
        # Nothing in this process delivers the visible item: it waits for a delivery trigger.
        left = {target["url"].rsplit("/hook", 1)[1] for target in item["targets"]}
        assert not left & {r.path.removeprefix("/hook") for r in receiver.requests}
        assert len({r.path for r in receiver.requests}) == 200
    finally:
        release.set()
        deliveries.clear_messages()


def test_the_room_is_one_poll_of_the_delivery_trigger() -> None:
    """A fan-out holds no more than the delivery trigger's first receive on this instance would take."""
    host = json.loads((ROOT / "host.json").read_text())
    assert held.HELD_ITEMS == host["extensions"]["queues"]["batchSize"]


def test_sigkill_while_delivering_held_items_loses_nothing(
    relay_factory, azurite, receiver_factory, unique_type
) -> None:
    """The dev host killed after its fan-out finished (its message deleted) while it still delivers
    the items it held: they reappear once their lease lapses and a new host delivers them. Only
    the held items' targets are repeated."""
    release = threading.Event()
    answered: set[str] = set()
    lock = threading.Lock()

    def script(item, n):
        if 240 <= n < 250:  # the last ten of the first round never get their answer to the relay
            release.wait(60)
            return 500, {}, b""
        with lock:
            answered.add(item.path)
        return 200, {}, b""

    receiver = receiver_factory(script)
    # The ten unanswered attempts must still be in flight when the host is killed, however slowly
    # the test reaches the kill: they time out only after 30 s.
    relay = relay_factory({"RELAY_DELIVERY_TIMEOUT": "30"})
    fanouts, deliveries = _queue(azurite, FANOUT_QUEUE), _queue(azurite, DELIVERY_QUEUE)
    for n in range(250):
        relay.subscribe(f"{receiver.url}/{n}", eventTypes=[unique_type])
    expected = {f"/hook/{n}" for n in range(250)}
    try:
        relay.publish({"type": unique_type, "data": "wide"})
        wait_until(lambda: len(receiver.requests) >= 250, 60, "every target's first attempt to arrive")
        wait_until(lambda: _count(fanouts) == 0, 30, "the fan-out to finish (its message deleted)")
        assert _count(deliveries) >= 1 and not deliveries.peek_messages(max_messages=32)  # held: invisible
        relay.kill()
        with lock:
            assert answered < expected, "the kill came too late to prove anything"
    finally:
        release.set()
    relay.start()
    wait_until(lambda: answered >= expected, 120, "every target answered after the held items' leases lapsed")
    wait_until(relay.queue_idle, 60, "the queues to drain")
    duplicates = len(receiver.requests) - len(expected)
    print(f"\n{duplicates} duplicate deliveries after the kill")
    assert duplicates <= 150  # the two held items' targets at most
