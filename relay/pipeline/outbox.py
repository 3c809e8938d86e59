"""Every queue message the relay sends, and how: the one module that calls `send_message`.

How a message is sent is decided here for all of them:
- the text is base64 (the encode policy `Storage.queue` sets; the Functions host expects it);
- work never expires (a time-to-live of -1): a message waits for the relay however long it is down;
- a message due within one due-timer period (a short retry, a deferral, a put-back) is sent
  invisible until then; one due later is written to the due table (relay.store.due) and sent by the
  `due` timer once due, so no triggered queue holds work that is not due (docs/scaling.md);
- several messages go out side by side on the pools' send threads, and the caller waits for them.
"""

from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from relay.core.models import DeliveryMessage, EventRecord, FanoutMessage, ReplayMessage
from relay.core.settings import Settings, get_settings
from relay.pipeline.pools import get_pools
from relay.store.due import MAX_TEXT, DueTable
from relay.store.events import claim_check
from relay.store.storage import DELIVERY_QUEUE, FANOUT_QUEUE, NEVER_EXPIRE, POISON_SUFFIX, REPLAY_QUEUE, Storage


@dataclass
class Sent:
    """A fan-out message as sent: what a kick needs to work on it and then delete it."""

    message_id: str
    pop_receipt: str
    message: FanoutMessage


class Outbox:
    def __init__(self, storage: Storage, settings: Settings | None = None) -> None:
        self._storage = storage
        self._settings = settings

    def _send(self, queue: str, text: str, delay: float = 0) -> Any:
        return self._storage.queue(queue).send_message(
            text, visibility_timeout=math.ceil(delay) or None, time_to_live=NEVER_EXPIRE
        )

    def _submit(self, queue: str, texts: list[str], delay: float = 0) -> list[Future[Any]]:
        sends = get_pools(self._settings or get_settings()).sends
        return [sends.submit(self._send, queue, text, delay) for text in texts]

    # ---- fan-out --------------------------------------------------------------------------

    def publish(self, records: list[EventRecord], lease: float = 0) -> list[Sent]:
        """Make accepted events durable: after this returns, each will be fanned out. Large data
        goes to a blob first (its claim check); events are stored and sent side by side. With a
        `lease`, the messages are sent `kicked` and invisible that long: the caller fans them
        out itself (relay.pipeline.kick) and the queue trigger sees them only if that does not finish."""

        def one(record: EventRecord) -> Sent:
            message = FanoutMessage(event=claim_check(self._storage, record), kicked=bool(lease))
            answer = self._send(FANOUT_QUEUE, message.model_dump_json(exclude_none=True), lease)
            return Sent(answer.id, answer.pop_receipt, message)

        if len(records) == 1:
            return [one(records[0])]  # the common case: no thread hand-off
        sends = get_pools(self._settings or get_settings()).sends
        futures = [sends.submit(one, record) for record in records]
        wait(futures)
        return [future.result() for future in futures]

    # ---- deliveries -----------------------------------------------------------------------

    def submit_deliveries(self, items: list[DeliveryMessage], lease: float = 0) -> list[Future[Any]]:
        """Start sending work items; the caller waits for the futures (see `wait`), whose results
        carry each message's id and pop receipt. With a `lease`, the items are invisible that
        long: the caller delivers them itself (relay.pipeline.held) and the queue trigger sees them only
        if that does not finish."""
        return self._submit(DELIVERY_QUEUE, [item.model_dump_json() for item in items], lease)

    def deliveries(self, items: list[DeliveryMessage]) -> None:
        wait(self.submit_deliveries(items))

    def delivery_later(self, item: DeliveryMessage, delay: float) -> None:
        """A retry or a deferred attempt, due in `delay` seconds: invisible in the queue when that
        is less than a due-timer period (the timer could not move it sooner), else a row of the
        due table, which the scale controller does not count."""
        text = item.model_dump_json()
        if delay < (self._settings or get_settings()).due_period or len(text) > MAX_TEXT:
            self._send(DELIVERY_QUEUE, text, delay)
        else:
            DueTable(self._storage).add(DELIVERY_QUEUE, text, delay)

    def move_due(self) -> int:
        """The `due` timer's run: send what the due table holds that is due now (relay.store.due)."""
        sends = get_pools(self._settings or get_settings()).sends
        return DueTable(self._storage).move(lambda queue, text: sends.submit(self._send, queue, text))

    # ---- replays --------------------------------------------------------------------------

    def replay(self, message: ReplayMessage) -> None:
        self._send(REPLAY_QUEUE, message.model_dump_json())

    # ---- the queue triggers' own messages -------------------------------------------------

    def put_back(self, queue: str, text: str, delay: float) -> None:
        """A message taken off `queue` sent again as a fresh one, due in `delay` seconds."""
        self._send(queue, text, delay)

    def poison(self, queue: str, text: str) -> None:
        """A message nobody can read, set aside as the host would after its last try (no TTL:
        the host's own poison messages keep the storage default)."""
        self._storage.queue(queue + POISON_SUFFIX).send_message(text)


def wait(futures: list[Future[Any]]) -> None:
    """Wait for every send; raise the first failure."""
    for future in futures:
        future.result()
