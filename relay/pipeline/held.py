"""Work items a fan-out delivers itself, so a large fan-out does not wait for the delivery
queue's next poll (after an idle spell the host polls an empty queue only every
`maxPollingInterval`), and no polling is added to get there.

While this process has room (fewer than `HELD_ITEMS` work items in progress here, held by
fan-outs or run by the delivery trigger), a fan-out sends its next work item invisible for a lease
(relay.store.leases) instead of visible, and starts its attempts at once on the attempt threads, as it
does the first hundred's. The item is complete when the last of its attempts is: its receipt is
written, and its message deleted; the fan-out itself does not wait for it, so a kick thread is free
again as soon as the fan-out has sent its items. Items beyond the room are sent visible, for the
delivery trigger of any instance: a fan-out of 10,000 holds at most 16 of its 99 items, and
the rest spread over the instances as before.

Durability is the message's, as for any work item: if the process dies, or recording fails, the
lease lapses and the delivery trigger delivers the item (checking tombstones, reading the event
log row) as one that may have been tried before. A killed instance repeats at most the targets of
the items it held, as one whose trigger had taken those items would.

`HELD_ITEMS` is host.json's `queues.batchSize` (a test keeps the two equal): what one poll of this
instance's delivery trigger would take anyway, so holding moves no more work to one instance
than its trigger's first receive could.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from relay.core import runtime
from relay.core.models import DeliveryMessage, EventRecord, Target
from relay.core.settings import Settings
from relay.pipeline.delivery import Attempts, Deliverer
from relay.pipeline.outbox import Outbox
from relay.store.leases import LEASE, Lease, keeper_for
from relay.store.storage import DELIVERY_QUEUE, Storage

log = logging.getLogger("relay.held")

HELD_ITEMS = 16


class Room:
    """The work items in progress in this process, and whether a fan-out may hold one more."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.busy = 0

    def claim(self) -> bool:
        """Take a place for a held item if there is one; `leave()` gives it back."""
        with self._lock:
            if self.busy >= HELD_ITEMS:
                return False
            self.busy += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.busy -= 1

    @contextmanager
    def working(self) -> Iterator[None]:
        """A work item the delivery trigger runs here: it fills the room as a held one does."""
        with self._lock:
            self.busy += 1
        try:
            yield
        finally:
            self.leave()


def room() -> Room:
    """This process's room, a part of the runtime (a test's fresh runtime starts with it empty)."""
    return runtime.current().part("held.room", Room)


class Holder:
    """One fan-out's held work items: which to hold, sending them leased, and delivering them."""

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        event: EventRecord,
        data: Callable[[], Any],
        log_key: tuple[str, str],
        since: str,
    ) -> None:
        self._storage, self._settings = storage, settings
        self._event, self._data, self._log_key, self._since = event, data, log_key, since
        self._outbox = Outbox(storage, settings)
        self._keeper = keeper_for(storage, DELIVERY_QUEUE)
        self._room = room()  # every place this holder claims is given back to the same room

    def split(self, chunks: list[list[Target]]) -> tuple[list[list[Target]], list[list[Target]]]:
        """The first chunks this process has room for (each holds a place in the room until it is
        delivered or given back), and the rest."""
        for n, _ in enumerate(chunks):
            if not self._room.claim():
                return chunks[:n], chunks[n:]
        return chunks, []

    def item(self, targets: list[Target]) -> DeliveryMessage:
        event = self._event
        return DeliveryMessage(
            eventId=event.id, eventType=event.type, log=self._log_key, since=self._since, targets=targets
        )

    def deliver(self, chunks: list[list[Target]]) -> None:
        """Send `chunks` (claimed by `split`) leased and start their attempts; returns once they
        are started. Called from the fan-out's own thread (an invocation or a kick)."""
        if not chunks:
            return
        sends = self._outbox.submit_deliveries([self.item(c) for c in chunks], lease=LEASE)
        pending = list(zip(sends, chunks, strict=True))
        try:
            while pending:
                answer = pending[0][0].result()  # attempts start only once their message is stored
                _, targets = pending.pop(0)
                self._start(targets, answer.id, answer.pop_receipt)
        finally:
            for _ in pending:  # a send failed: the fan-out fails, and the trigger fans it out again
                self._room.leave()

    def _start(self, targets: list[Target], message_id: str, pop_receipt: str) -> None:
        lease = self._keeper.hold(message_id, pop_receipt)
        try:
            attempts = Deliverer(self._storage, self._settings).start(
                self._event, self._data(), self._log_key, self._since, targets
            )
        except Exception:
            self._keeper.release(lease, delete=False)
            self._room.leave()
            raise
        attempts.batch.when_done(lambda: self._finish(attempts, lease))

    def _finish(self, attempts: Attempts, lease: Lease) -> None:
        # Runs on the attempt thread that made the item's last attempt: the receipt and the delete
        # are one storage request each, and nothing here submits to a pool.
        try:
            attempts.finish()
        except Exception:
            log.exception("held work item failed event=%s; the delivery trigger takes it over", self._event.id)
            self._keeper.release(lease, delete=False)
        else:
            self._keeper.release(lease, delete=True)
        finally:
            self._room.leave()
