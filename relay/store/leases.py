"""Queue messages this process holds invisible while it works on them itself, outside any queue
trigger: a publish's own fan-out message (relay.pipeline.kick) and the work items a fan-out delivers
itself (relay.pipeline.held). Each is sent invisible for `LEASE` seconds; one keeper thread per queue
renews every lease it holds every `RENEW_EVERY` seconds, and the message is deleted when the work
is done. If the process dies, or the work fails, the lease lapses, the message appears, and the
queue trigger (of any instance) takes it over.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from relay.core import runtime
from relay.store.storage import FANOUT_QUEUE, Storage

log = logging.getLogger("relay.leases")

# How long a held message stays invisible without renewal, and how often the keeper renews.
LEASE = 30
RENEW_EVERY = 10.0


@dataclass
class Lease:
    """One held queue message. The lock orders renewals and the delete, and is never held across
    a storage call: the thread that releases a lease (an attempt thread) must not wait on a
    renewal that hangs."""

    message_id: str
    pop_receipt: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    renewing: bool = False  # a renewal's storage call is in flight
    delete: bool = False  # released for deletion while renewing: the renewal deletes it after


class Keeper:
    """The one thread that renews the leases of the messages of one queue held in this process."""

    def __init__(
        self, storage: Storage, lease: int = LEASE, every: float = RENEW_EVERY, queue: str = FANOUT_QUEUE
    ) -> None:
        self._queue = storage.queue(queue)
        self._name = queue
        self._lease, self._every = lease, every
        self._leases: dict[int, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.renewals = 0  # leases renewed so far: what a test can await
        self._thread = threading.Thread(target=self._run, name=f"leases-{queue}", daemon=True)
        self._thread.start()

    def hold(self, message_id: str, pop_receipt: str) -> Lease:
        lease = Lease(message_id, pop_receipt)
        with self._lock:
            self._leases[id(lease)] = lease
        return lease

    def release(self, lease: Lease, delete: bool) -> None:
        """Stop renewing; with `delete`, the work is done and the message goes."""
        with self._lock:
            self._leases.pop(id(lease), None)
        with lease.lock:
            lease.done = True
            if lease.renewing:
                # The renewal in flight changes the receipt, and a delete with the old one would
                # fail: the keeper deletes with the new one once its call returns.
                lease.delete = delete
                return
            receipt = lease.pop_receipt
        if delete:
            self._delete(lease, receipt)

    def _delete(self, lease: Lease, receipt: str) -> None:
        try:
            self._queue.delete_message(lease.message_id, receipt)
        except (ResourceNotFoundError, HttpResponseError) as exc:
            # Already gone, or its receipt outdated by a renewal that failed: the message
            # will come back once and be taken for what it is, work maybe done before.
            log.warning("held %s message not deleted: %s", self._name, type(exc).__name__)

    def _renew(self, lease: Lease) -> None:
        with lease.lock:
            if lease.done:
                return
            lease.renewing = True
            receipt = lease.pop_receipt
        try:
            renewed = self._queue.update_message(lease.message_id, receipt, visibility_timeout=self._lease)
            receipt = renewed.pop_receipt or receipt
            self.renewals += 1
        except Exception as exc:  # noqa: BLE001 - a lapsed lease is recovered by the trigger
            log.warning("held %s lease not renewed: %s", self._name, type(exc).__name__)
        with lease.lock:
            lease.pop_receipt = receipt
            lease.renewing = False
            delete = lease.delete  # set only by a release that came while this call was out
        if delete:
            self._delete(lease, receipt)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            with self._lock:
                leases = list(self._leases.values())
            for lease in leases:
                if self._stop.is_set():
                    return
                self._renew(lease)

    def stop(self) -> None:
        """End the thread (after the renewal in flight, if one is)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


def keeper_for(storage: Storage, queue: str) -> Keeper:
    """One keeper per storage client set and queue (one per queue in a process, in practice),
    owned by the runtime, which stops its thread when it closes."""
    return runtime.current().part(
        f"lease-keeper:{id(storage)}:{queue}", lambda: Keeper(storage, queue=queue), Keeper.stop
    )
