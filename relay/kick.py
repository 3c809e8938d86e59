"""Fan-out started by the publish itself, in the publishing process: the first delivery does not
wait for the fan-out queue's next poll (after an idle spell the host polls an empty queue only
every `maxPollingInterval`), and no idle polling is added to get there.

The fan-out message is still sent first, so a 202 is as durable as ever; it is sent invisible
for `LEASE` seconds, marked `kicked`. A kick then fans the event out on the kick threads, keeps
the message invisible while it works (one keeper thread renews every lease every `RENEW_EVERY`
seconds, from the moment the kick is queued) and deletes it when done: the queue trigger never
sees it, and its receive is saved. If the process dies, or the kick fails, the lease lapses, the
message appears, and the queue trigger fans it out as a message that may have been worked on
before (`kicked` counts as seen before, as a second dequeue does), so the event is delivered
once its log row is found, not lost and not logged twice.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from .fanout import fan_out
from .outbox import Sent
from .pools import get_pools
from .settings import Settings
from .storage import FANOUT_QUEUE, Storage

log = logging.getLogger("relay.kick")

# How long a kicked message stays invisible without renewal, and how often the keeper renews.
LEASE = 30
RENEW_EVERY = 10.0


@dataclass
class _Lease:
    """One kicked message's hold on its queue message; the lock orders renewals and the delete."""

    sent: Sent
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False


class Keeper:
    """The one thread that renews the leases of kicks queued or running in this process."""

    def __init__(self, storage: Storage, lease: int = LEASE, every: float = RENEW_EVERY) -> None:
        self._queue = storage.queue(FANOUT_QUEUE)
        self._lease, self._every = lease, every
        self._held: set[int] = set()
        self._leases: dict[int, _Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.renewals = 0  # leases renewed so far: what a test can await
        self._thread = threading.Thread(target=self._run, name="kick-leases", daemon=True)
        self._thread.start()

    def hold(self, sent: Sent) -> _Lease:
        lease = _Lease(sent)
        with self._lock:
            self._leases[id(lease)] = lease
        return lease

    def release(self, lease: _Lease, delete: bool) -> None:
        """Stop renewing; with `delete`, the work is done and the message goes."""
        with self._lock:
            self._leases.pop(id(lease), None)
        with lease.lock:
            lease.done = True
            if delete:
                try:
                    self._queue.delete_message(lease.sent.message_id, lease.sent.pop_receipt)
                except (ResourceNotFoundError, HttpResponseError) as exc:
                    # Already gone, or its receipt outdated by a renewal that failed: the message
                    # will come back once and be taken for what it is, a seen-before event.
                    log.warning("kicked fan-out message not deleted: %s", type(exc).__name__)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            with self._lock:
                leases = list(self._leases.values())
            for lease in leases:
                with lease.lock:
                    if lease.done:
                        continue
                    try:
                        renewed = self._queue.update_message(
                            lease.sent.message_id, lease.sent.pop_receipt, visibility_timeout=self._lease
                        )
                        lease.sent.pop_receipt = renewed.pop_receipt or lease.sent.pop_receipt
                        self.renewals += 1
                    except Exception as exc:  # noqa: BLE001 - a lapsed lease is recovered by the trigger
                        log.warning("kicked fan-out lease not renewed: %s", type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()


class Kicker:
    """Start the fan-out of just-published events on this process's kick threads."""

    def __init__(self, storage: Storage, settings: Settings, keeper: Keeper | None = None) -> None:
        self._storage, self._settings = storage, settings
        self._pools = get_pools(settings)
        self._keeper = keeper or _keeper(storage)

    def start(self, sent: list[Sent]) -> None:
        for one in sent:
            lease = self._keeper.hold(one)  # renewed from now on, even while the kick waits for a thread
            self._pools.kicks.submit(self._run, lease)

    def _run(self, lease: _Lease) -> None:
        sent = lease.sent
        try:
            # This is the message's first working, whatever its `kicked` mark says to a later one.
            fan_out(
                self._storage, self._settings, sent.message.model_copy(update={"kicked": False}), sent.message_id, 1
            )
        except Exception:
            log.exception("kicked fan-out failed event=%s; the queue trigger takes it over", sent.message.event.id)
            self._keeper.release(lease, delete=False)
            return
        self._keeper.release(lease, delete=True)


_keeper_lock = threading.Lock()
_keepers: dict[int, Keeper] = {}


def _keeper(storage: Storage) -> Keeper:
    """One keeper per storage client set (one in a process, in practice)."""
    with _keeper_lock:
        keeper = _keepers.get(id(storage))
        if keeper is None:
            keeper = _keepers[id(storage)] = Keeper(storage)
        return keeper
