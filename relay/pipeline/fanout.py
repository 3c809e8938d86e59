"""Fan-out: from one accepted event to the deliveries it needs.

The first hundred matching subscribers are delivered right here, in the same execution that
read the index (one function execution and no extra message for the common case); the others
are packed into delivery work items of up to a hundred targets each. While this process has room,
the fan-out delivers the first of those items itself, sent leased (relay.pipeline.held); the rest are sent
for the delivery trigger of any instance.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from relay.core import clock
from relay.core.models import DeliveryMessage, FanoutMessage, Target
from relay.core.settings import Settings
from relay.pipeline.delivery import Attempts, Deliverer
from relay.pipeline.held import Holder, room
from relay.pipeline.later import ITEM_BYTES, ITEM_TARGETS, pack
from relay.pipeline.outbox import Outbox, wait
from relay.pipeline.pause import DISABLED_REASON, Holds
from relay.pipeline.pools import get_pools
from relay.store.eventlog import EventLog
from relay.store.events import load_data
from relay.store.storage import Storage
from relay.store.subscriptions import SubscriptionStore

DIRECT_LIMIT = 100
__all__ = ["DIRECT_LIMIT", "ITEM_BYTES", "ITEM_TARGETS", "deliver_item", "fan_out", "pack"]


def fan_out(
    storage: Storage,
    settings: Settings,
    message: FanoutMessage,
    message_id: str,
    dequeue_count: int = 1,
    then: Callable[[BaseException | None], None] | None = None,
) -> None:
    """Fan `message`'s event out. Without `then` (a queue trigger's invocation), returns once the
    attempts made here are recorded. With `then` (a kick), returns once they are started, and
    `then` gets None, or what failed, once they are recorded, on the attempt thread that made the
    last of them: a kick thread does not wait while a receiver that hangs takes a whole timeout.
    If this raises, `then` is never called."""
    event = message.event
    seen_before = dequeue_count > 1 or message.origin is not None or message.kicked
    # The event is logged (and de-duplicated) on a send thread while this one reads the index:
    # neither waits for the other, and nothing is delivered or sent before the log key is known.
    # Tombstones count from before the index read.
    since = clock.time_key(clock.utcnow())
    logging_ = get_pools(settings).sends.submit(
        EventLog(storage).record, event, message.origin or message_id, seen_before
    )
    loaded: list[Any] = []

    def data() -> Any:
        # Read at most once, and only when needed: by the first subscription that filters on
        # data (the index lookup), else by the first delivery.
        if not loaded:
            loaded.append(load_data(storage, event))
        return loaded[0]

    pages = SubscriptionStore(storage).matching(event.type, event.subject, data)
    try:
        first = next(pages, None)
    finally:
        log_key = logging_.result()  # waited for even when the read failed: no work left behind
    if log_key is None:
        if then is not None:
            then(None)
        return  # the same event id was published before: delivered once, not again
    outbox = Outbox(storage, settings)
    direct: list[Target] = []
    rest: list[Target] = []
    inline: Attempts | None = None
    sends: list[Future[Any]] = []
    holder = Holder(storage, settings, event, data, log_key, since)
    paused: list[Target] = []  # held, not attempted (relay.pipeline.pause)

    def start_inline() -> Attempts:
        # The attempts start on the attempt threads from this (the invocation's) thread, which
        # reads on and then waits for them: no pool thread waits on another pool's work.
        return Deliverer(storage, settings).start(event, data(), log_key, since, direct)

    def send(chunks: list[list[Target]]) -> None:
        held, others = holder.split(chunks)
        sends.extend(outbox.submit_deliveries([holder.item(chunk) for chunk in others]))
        holder.deliver(held)

    # The first hundred are delivered here while the index is still being read; the others go
    # out as work items page by page, so deliveries start before a large index is read whole.
    # Receivers known to answer come first: when many dead ones share an event type with a
    # healthy one, the healthy one is attempted here, not in a work item that waits its turn.
    answers = get_pools(settings).sender.answers
    for page in itertools.chain([first] if first is not None else [], pages):
        doubtful: list[Target] = []
        for target in page:
            if target.paused:
                paused.append(target)
            elif answers(target.url):
                (direct if len(direct) < DIRECT_LIMIT else rest).append(target)
            else:
                doubtful.append(target)
        for target in doubtful:
            (direct if len(direct) < DIRECT_LIMIT else rest).append(target)
        if inline is None and len(direct) == DIRECT_LIMIT and rest:
            inline = start_inline()
        if len(rest) >= ITEM_TARGETS:
            chunks = pack(rest)
            send(chunks[:-1])
            rest = chunks[-1]
    send(pack(rest) if rest else [])
    if paused:
        Holds(storage, settings).hold(event.id, event.type, log_key, event.acceptedAt, paused)
    if inline is None and direct:
        inline = start_inline()
    try:
        wait(sends)
    except BaseException:
        if inline is not None:
            if then is None:
                inline.finish()
            else:
                inline.batch.when_done(partial(_record, inline, lambda error: None))
        raise
    if inline is None or then is None:
        if inline is not None:
            inline.finish()
        if then is not None:
            then(None)
        return
    inline.batch.when_done(partial(_record, inline, then))


def _record(inline: Attempts, then: Callable[[BaseException | None], None]) -> None:
    """The inline attempts' receipt and what comes back later, once the last of them is done (on
    its attempt thread: one storage request or two, nothing submitted to a pool and waited for)."""
    try:
        inline.finish()
    except Exception as exc:  # noqa: BLE001 - handed to `then`, which decides what it means
        then(exc)
        return
    then(None)


def deliver_item(storage: Storage, settings: Settings, message: DeliveryMessage) -> None:
    with room().working():  # while the trigger delivers here, fan-outs hold less
        _deliver_item(storage, settings, message)


def _deliver_item(storage: Storage, settings: Settings, message: DeliveryMessage) -> None:
    deliverer = Deliverer(storage, settings)
    paused: list[Target] = []
    disabled: list[Target] = []
    targets = deliverer.skip_removed(message, paused, disabled)
    if paused:
        Holds(storage, settings).hold_message(message, paused)
    if disabled:  # by the relay itself (relay.pipeline.health): the same held rows, released by activate
        Holds(storage, settings).hold_message(message, disabled, DISABLED_REASON)
    if not targets:
        return
    logged = EventLog(storage).get(message.log)
    if logged is None:
        deliverer.expired(message, targets)
        return
    deliverer.deliver(logged.record(), load_data(storage, logged), logged.key, message.since, targets)
