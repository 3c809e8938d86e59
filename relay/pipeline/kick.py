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

from relay.core.settings import Settings
from relay.pipeline.fanout import fan_out
from relay.pipeline.outbox import Sent
from relay.pipeline.pools import get_pools
from relay.store.leases import LEASE, RENEW_EVERY, Keeper, Lease, keeper_for
from relay.store.storage import FANOUT_QUEUE, Storage

log = logging.getLogger("relay.kick")

__all__ = ["LEASE", "RENEW_EVERY", "Keeper", "Kicker"]


class Kicker:
    """Start the fan-out of just-published events on this process's kick threads."""

    def __init__(self, storage: Storage, settings: Settings, keeper: Keeper | None = None) -> None:
        self._storage, self._settings = storage, settings
        self._pools = get_pools(settings)
        self._keeper = keeper or keeper_for(storage, FANOUT_QUEUE)

    def start(self, sent: list[Sent]) -> None:
        for one in sent:
            # Renewed from now on, even while the kick waits for a thread.
            lease = self._keeper.hold(one.message_id, one.pop_receipt)
            self._pools.kicks.submit(self._run, sent=one, lease=lease)

    def _run(self, sent: Sent, lease: Lease) -> None:
        event_id = sent.message.event.id

        def done(error: BaseException | None) -> None:
            # Once the attempts made here are recorded (on the attempt thread that made the last):
            # the kick thread went on to the next kick long before, whatever a receiver took.
            if error is not None:
                log.error("kicked fan-out failed event=%s; the queue trigger takes it over: %r", event_id, error)
            self._keeper.release(lease, delete=error is None)

        try:
            # This is the message's first working, whatever its `kicked` mark says to a later one.
            message = sent.message.model_copy(update={"kicked": False})
            fan_out(self._storage, self._settings, message, sent.message_id, 1, then=done)
        except Exception:
            log.exception("kicked fan-out failed event=%s; the queue trigger takes it over", event_id)
            self._keeper.release(lease, delete=False)
