"""The runtime (relay.core.runtime) owns every thread, pool, lease keeper and cache of the app:
nothing starts at import, everything it started ends when it closes, a part is built once, and
parts close in the reverse order of building. And a lease keeper holds no lock across a storage
call, so a renewal that hangs does not hold up the work that releases its lease."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.storage.queue import QueueServiceClient

from relay.core import runtime
from relay.store.leases import Keeper
from tests.helpers import ROOT


def test_importing_the_app_starts_no_thread_and_no_pool() -> None:
    """The Functions host imports function_app.py to index it: that must start nothing."""
    script = (
        "import threading, concurrent.futures.thread as cft\n"
        "before = [t.name for t in threading.enumerate()]\n"
        "import function_app\n"
        "from relay.core import runtime\n"
        "after = [t.name for t in threading.enumerate()]\n"
        # The settings are read at import (the due timer's schedule is one): a value, not a thread.
        "print(before == after, len(cft._threads_queues), sorted(set(runtime.current().parts) - {'settings'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "True 0 []", out


def _relay_threads(baseline: set[threading.Thread]) -> list[threading.Thread]:
    # The receiver (the test's) answers each request on a thread of its own, named so by socketserver.
    return [
        t
        for t in threading.enumerate()
        if t not in baseline and t.is_alive() and not t.name.endswith("(process_request_thread)")
    ]


def test_reset_ends_every_thread_the_app_started(app, receiver_factory, unique_type) -> None:  # type: ignore[no-untyped-def]
    """A publish delivered in this process starts pools, attempt threads, lease keepers and the
    stats thread; `runtime.reset()` ends all of them, and each was named after what it does."""
    receiver = receiver_factory()  # its server thread is the test's, not the app's
    runtime.reset()
    baseline = set(threading.enumerate())
    answer = app.request("POST", "subscriptions", {"notificationUrl": receiver.url, "eventTypes": [unique_type]})
    assert answer.status_code == 201, answer.text
    assert app.request("POST", "events", {"type": unique_type, "data": "x"}).status_code == 202
    receiver.wait_for(1, timeout=60)
    started = _relay_threads(baseline)
    assert started, "the publish started no thread: the test proves nothing"
    unnamed = [t.name for t in started if t.name.startswith("Thread-")]
    assert not unnamed, f"threads the app started without a name: {unnamed}"
    runtime.reset()
    # Idle DNS threads end once they see their pool's shutdown (which does not wait for a lookup
    # that hangs); join gives each a generous moment rather than a sleep.
    for thread in _relay_threads(baseline):
        thread.join(timeout=30)
    assert [t.name for t in _relay_threads(baseline)] == []


def _race_for_one_part(threads: int) -> tuple[list[object], list[object]]:
    """`threads` threads ask a fresh runtime for one part at the same moment: (built, got)."""
    rt = runtime.Runtime()
    built: list[object] = []
    got: list[object] = []
    go = threading.Barrier(threads)

    def build() -> object:
        value = object()
        built.append(value)
        return value

    def ask() -> None:
        go.wait()
        got.append(rt.part("thing", build))

    started = [threading.Thread(target=ask, name=f"test-ask-{n}") for n in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    rt.close()
    return built, got


def test_a_part_is_built_once_however_many_threads_ask() -> None:
    for _ in range(50):
        built, got = _race_for_one_part(16)
        assert len(built) == 1
        assert got == built * 16


def test_parts_close_in_the_reverse_order_of_building() -> None:
    rt = runtime.Runtime()
    closed: list[str] = []
    for name in ("first", "second", "third"):
        rt.part(name, lambda name=name: name, closed.append)  # type: ignore[misc]
    rt.drop("second")  # a dropped part closes at once, and not again
    rt.part("fourth", lambda: "fourth", closed.append)
    rt.close()
    assert closed == ["second", "fourth", "third", "first"]


def test_a_part_asked_for_while_the_runtime_closes_is_closed_too() -> None:
    """Work finishing on a closing pool may ask for a part already closed (the stats recorder):
    it is built again in the runtime that closes, and closed with it, not left running."""
    rt = runtime.Runtime()
    closed: list[str] = []
    rt.part("pool", lambda: "pool", lambda _: rt.part("recorder", lambda: "again", closed.append) and None)
    rt.part("recorder", lambda: "recorder", closed.append)
    rt.close()
    assert closed == ["recorder", "again"]
    assert rt.parts == []


class _HangingRenewals:
    """A real queue client (Azurite) whose renewals wait until the test lets them through: a
    storage call that hangs, as one does when the account is slow."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.renewing = threading.Event()
        self.go = threading.Event()
        self.deleted = threading.Event()
        self.delete_failures: list[BaseException] = []

    def update_message(self, *args: Any, **kwargs: Any) -> Any:
        self.renewing.set()
        assert self.go.wait(120)
        return self._queue.update_message(*args, **kwargs)

    def delete_message(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._queue.delete_message(*args, **kwargs)
        except BaseException as exc:
            self.delete_failures.append(exc)
            raise
        finally:
            self.deleted.set()


class _Storage:
    def __init__(self, queue: _HangingRenewals) -> None:
        self._queue = queue

    def queue(self, name: str) -> _HangingRenewals:
        return self._queue


def test_a_release_does_not_wait_for_a_renewal_in_flight(azurite) -> None:  # type: ignore[no-untyped-def]
    """The work that is done (an attempt thread) releases its lease while the keeper's renewal of
    it hangs on storage: the release returns at once, and the message is still deleted, with the
    receipt the renewal brought back."""
    name = f"leases-{uuid.uuid4().hex[:10]}"
    client = QueueServiceClient.from_connection_string(azurite.connection_string).get_queue_client(name)
    client.create_queue()
    hanging = _HangingRenewals(client)
    keeper = Keeper(_Storage(hanging), lease=30, every=0.05, queue=name)  # type: ignore[arg-type]
    try:
        sent = client.send_message("work", visibility_timeout=30)
        lease = keeper.hold(sent.id, sent.pop_receipt)
        assert hanging.renewing.wait(60), "the keeper never renewed"
        released = threading.Event()

        def release() -> None:
            keeper.release(lease, delete=True)
            released.set()

        threading.Thread(target=release, name="test-release", daemon=True).start()
        assert released.wait(10), "the release waited for the renewal's storage call"
        hanging.go.set()
        assert hanging.deleted.wait(60), "the message was never deleted"
        assert hanging.delete_failures == []
        assert client.get_queue_properties().approximate_message_count == 0
    finally:
        hanging.go.set()
        keeper.stop()
        client.delete_queue()


def test_a_send_due_later_is_a_call_of_the_runtimes_timers_which_reset_ends() -> None:
    """A batch's retry due in a minute waits as a call of the runtime's timers, not on a thread of
    its own: a reset ends every thread it started. The batch, done after the reset, still sends it."""
    from datetime import UTC, datetime, timedelta

    from relay.core.models import Target
    from relay.pipeline.later import Later, Laters

    runtime.reset()
    baseline = set(threading.enumerate())
    sent: list[list[str]] = []
    laters = Laters(lambda items: sent.append([one.target.sub for one in items]), lambda: datetime.now(UTC))
    due = datetime.now(UTC) + timedelta(seconds=60)
    laters.add(Later(Target(sub="a", url="http://a.example.test/", secret="x"), due))
    assert "timers" in runtime.current().parts
    runtime.reset()
    for thread in _relay_threads(baseline):
        thread.join(timeout=30)
    assert [t.name for t in _relay_threads(baseline)] == []
    assert sent == []  # not due yet, and the reset made no call
    laters.close()  # the batch is done: what comes back later goes now, with the rest
    assert sent == [["a"]]


def test_timers_make_each_call_once_due_in_order_and_never_a_cancelled_one() -> None:
    from relay.core.timers import Timers

    clock = Timers()
    made: list[tuple[str, float]] = []
    done = threading.Event()
    started = time.monotonic()

    def call(name: str) -> Callable[[], None]:
        return lambda: made.append((name, time.monotonic() - started))

    delays = {"b": 0.3, "a": 0.1, "c": 0.3}
    for name, delay in delays.items():
        clock.call_later(delay, call(name))
    dropped = clock.call_later(0.2, call("dropped"))
    assert dropped.cancel()
    clock.call_later(0.5, done.set)
    assert done.wait(10)
    clock.close()
    assert [name for name, _ in made] == ["a", "b", "c"]  # equal due times in the order asked
    assert all(at >= delays[name] for name, at in made), made  # never sooner than its delay
    with pytest.raises(RuntimeError):
        clock.call_later(0, call("late"))


def _close_during_a_call() -> None:
    from relay.core.timers import Timers

    clock = Timers()
    running, go, closed = threading.Event(), threading.Event(), threading.Event()
    finished: list[str] = []

    def slow() -> None:
        running.set()
        assert go.wait(10)
        finished.append("slow")

    def close() -> None:
        clock.close()
        closed.set()

    under_way = clock.call_later(0, slow)
    waiting = clock.call_later(60, lambda: finished.append("never"))
    assert running.wait(10)
    closer = threading.Thread(target=close, name="test-close")
    closer.start()
    assert not closed.wait(0.05)  # it waits for the call under way
    go.set()
    closer.join(10)
    assert closed.is_set() and under_way.wait(0) and waiting.wait(0)
    assert finished == ["slow"]


def test_closing_the_timers_waits_for_a_call_under_way_and_drops_the_rest() -> None:
    for _ in range(20):  # a race between the call starting and the close: run it many times
        _close_during_a_call()
