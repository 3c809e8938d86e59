"""A publish fans its events out itself (relay.pipeline.kick): the first delivery does not wait for the
fan-out queue's next poll. The queue message is the fallback: kept invisible while the kick
works, deleted when it is done, and taken over by the queue trigger when a kick never finishes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from azure.storage.queue import QueueServiceClient

from relay.core import settings
from relay.core.models import EventIn, SubscriptionRequest
from relay.pipeline import kick
from relay.pipeline.outbox import Outbox
from relay.store import events
from relay.store.leases import LEASE
from relay.store.storage import FANOUT_QUEUE
from relay.store.subscriptions import SubscriptionStore
from relay_dev.devhost import parse_timespan
from tests.helpers import wait_until


def _fanout_queue(azurite):
    return QueueServiceClient.from_connection_string(azurite.connection_string).get_queue_client(FANOUT_QUEUE)


def _count(queue) -> int:
    return queue.get_queue_properties().approximate_message_count


def test_a_publish_is_delivered_with_no_queue_worker_running(app, azurite, receiver_factory, unique_type) -> None:
    """In this process there is no host and no queue worker: only the publish's own kick can deliver,
    and it deletes the fan-out message once done."""
    receiver = receiver_factory()
    queue = _fanout_queue(azurite)
    queue.clear_messages()
    subscribed = app.request("POST", "subscriptions", {"notificationUrl": receiver.url, "eventTypes": [unique_type]})
    assert subscribed.status_code == 201
    answer = app.request("POST", "events", {"type": unique_type, "data": {"n": 1}})
    assert answer.status_code == 202
    (got,) = receiver.wait_for(1)
    assert got.headers["webhook-id"] == answer.json()["id"]
    wait_until(lambda: _count(queue) == 0, 30, "the kicked fan-out message to be deleted")


def test_the_lease_holds_the_message_while_a_slow_kick_works(
    app_storage, azurite, receiver_factory, unique_type
) -> None:
    """A kick that outlasts the lease keeps its message invisible (renewed), so the queue trigger of
    another instance cannot fan the event out a second time meanwhile."""
    release = threading.Event()
    receiver = receiver_factory(lambda item, n: (200, {}, b"") if release.wait(60) else (500, {}, b""))
    queue = _fanout_queue(azurite)
    queue.clear_messages()

    SubscriptionStore(app_storage).subscribe(
        SubscriptionRequest(notificationUrl=receiver.url, eventTypes=[unique_type])
    )
    current = settings.get_settings()
    record = events.accept(EventIn(type=unique_type, data=1), source="urn:test")
    # A 3 s lease renewed every 0.5 s: a pause of a few hundred ms (a loaded machine) cannot let the
    # message show, while eight renewals still outlast the first lease.
    sent = Outbox(app_storage, current).publish([record], lease=3)
    keeper = kick.Keeper(app_storage, lease=3, every=0.5)
    try:
        kick.Kicker(app_storage, current, keeper=keeper).start(sent)
        receiver.wait_for(1)  # the kick is now inside its delivery, which waits for `release`
        wait_until(lambda: keeper.renewals >= 8, 30, "the lease to be renewed past its first term")
        assert _count(queue) == 1 and not queue.peek_messages(max_messages=32)  # there, and invisible
        release.set()
        wait_until(lambda: _count(queue) == 0, 30, "the kicked fan-out message to be deleted")
        assert len(receiver.requests) == 1
    finally:
        release.set()
        keeper.stop()


def test_a_kick_that_never_finished_is_taken_over_by_the_queue_trigger(
    relay, app_storage, receiver_factory, unique_type
) -> None:
    """A message sent for a kick that died with its process: once its lease lapses, the host's
    fan-out trigger delivers the event, once."""
    receiver = receiver_factory()
    relay.subscribe(receiver.url, eventTypes=[unique_type])
    record = events.accept(EventIn(type=unique_type, data=1), source="urn:test")
    Outbox(app_storage, settings.get_settings()).publish([record], lease=1)  # no kick started
    (got,) = receiver.wait_for(1, timeout=60)
    assert got.headers["webhook-id"] == record.id
    wait_until(relay.queue_idle, 60, "the queues to drain")
    assert len(receiver.requests) == 1


def test_a_sigkill_right_after_the_202_delivers_every_event_within_the_lease_and_one_poll(
    relay_factory, receiver_factory, unique_type
) -> None:
    """The publish's fan-out runs after the function returned (an instance may be scaled in then,
    docs/scaling.md). Killed right after the 202, before any delivery was answered, the process
    loses no event: each is delivered by the fan-out trigger of the restarted host once its
    message's lease lapses, within LEASE + one poll (host.json maxPollingInterval) of the 202,
    plus a fan-out and an attempt on a loaded machine."""
    host = json.loads((Path(__file__).resolve().parents[1] / "host.json").read_text())
    poll = parse_timespan(host["extensions"]["queues"]["maxPollingInterval"])
    killed = threading.Event()

    def script(item, n):
        # A request of the process about to die is held until it is dead: nothing is delivered before.
        return (200, {}, b"") if killed.wait(60) and item.at > killed_at[0] else (500, {}, b"")

    killed_at = [float("inf")]
    receiver = receiver_factory(script)
    relay = relay_factory()
    relay.subscribe(receiver.url, eventTypes=[unique_type])
    answer = relay.publish([{"type": unique_type, "data": {"i": i}} for i in range(20)])
    accepted = time.monotonic()
    relay.kill()
    killed_at[0] = time.monotonic()
    killed.set()
    ids = {v["id"] for v in answer.json()["value"]}
    relay.start()

    def delivered() -> dict[str, float]:
        with receiver.cond:
            return {r.headers["webhook-id"]: r.at for r in receiver.requests if r.at > killed_at[0]}

    wait_until(lambda: set(delivered()) >= ids, LEASE + poll + 60, "every event after the restart")
    latest = max(delivered()[i] for i in ids) - accepted
    print(f"\nlast event delivered {latest:.1f} s after the 202 (lease {LEASE} s, poll {poll} s)")
    assert latest <= LEASE + poll + 5.0


def test_kick_threads_are_free_while_their_attempts_wait_on_receivers(
    app_storage, azurite, receiver_factory, unique_type
) -> None:
    """As many kicks as there are kick threads, each with an attempt to a receiver that holds its
    answer: the kick threads are free for the next publish meanwhile (before: each waited for its
    attempts, so slow receivers on many origins held every kick thread, and a healthy event's
    fan-out waited a whole timeout for one), and each message stays invisible until its attempts
    are done, then is deleted."""
    from relay.pipeline.pools import KICK_THREADS, get_pools

    release = threading.Event()
    receivers = [
        receiver_factory(lambda item, n: (200, {}, b"") if release.wait(60) else (500, {}, b""))
        for _ in range(KICK_THREADS)  # an origin each: the per-origin cap hands none back
    ]
    queue = _fanout_queue(azurite)
    queue.clear_messages()
    store = SubscriptionStore(app_storage)
    for n, receiver in enumerate(receivers):
        store.subscribe(SubscriptionRequest(notificationUrl=receiver.url, eventTypes=[f"{unique_type}.{n}"]))
    current = settings.get_settings()
    records = [
        events.accept(EventIn(type=f"{unique_type}.{n}", data=n), source="urn:test") for n in range(KICK_THREADS)
    ]
    sent = Outbox(app_storage, current).publish(records, lease=30)
    try:
        kick.Kicker(app_storage, current).start(sent)
        # Arrived (the receivers' answers wait for `release`; `wait_for` wakes at an answer).
        wait_until(lambda: all(r.requests for r in receivers), 30, "every kick's attempt to reach its receiver")
        assert get_pools(current).kicks.submit(lambda: "free").result(timeout=10) == "free"
        assert _count(queue) == KICK_THREADS and not queue.peek_messages(max_messages=32)  # kept, invisible
        release.set()
        wait_until(lambda: _count(queue) == 0, 30, "the kicked fan-out messages to be deleted")
        assert all(len(receiver.requests) == 1 for receiver in receivers)
    finally:
        release.set()
