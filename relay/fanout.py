"""Fan-out: from one accepted event to the deliveries it needs.

Up to a hundred matching subscribers are delivered right here, in the same execution that read
the index (one function execution and no extra message for the common case); more are packed
into delivery work items of up to a hundred targets each.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from . import clock
from .delivery import Deliverer
from .events import EventLog, load_data
from .models import DeliveryMessage, FanoutMessage, Target
from .settings import Settings
from .storage import DELIVERY_QUEUE, NEVER_EXPIRE, Storage
from .subscriptions import SubscriptionStore

DIRECT_LIMIT = 100
ITEM_TARGETS = 100
# Bytes of targets per work item, leaving room for the envelope inside 48 KiB of message data.
ITEM_BYTES = 40_000

_enqueue_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fanout")


def pack(targets: list[Target]) -> list[list[Target]]:
    """Split targets into work items bounded by count and by message size."""
    items: list[list[Target]] = []
    current: list[Target] = []
    size = 0
    for target in targets:
        cost = len(target.model_dump_json()) + 1
        if current and (len(current) >= ITEM_TARGETS or size + cost > ITEM_BYTES):
            items.append(current)
            current, size = [], 0
        current.append(target)
        size += cost
    if current:
        items.append(current)
    return items


def fan_out(storage: Storage, settings: Settings, message: FanoutMessage, message_id: str) -> None:
    event = message.event
    log_key = EventLog(storage).record(event, message.origin or message_id)
    if log_key is None:
        return  # the same event id was published before: delivered once, not again
    since = clock.time_key(clock.utcnow())
    targets = SubscriptionStore(storage).matching(event.type, event.subject)
    if not targets:
        return
    if len(targets) <= DIRECT_LIMIT:
        Deliverer(storage, settings).deliver(event, load_data(storage, event), log_key, since, targets)
        return
    queue = storage.queue(DELIVERY_QUEUE)
    items = [DeliveryMessage(eventId=event.id, eventType=event.type, log=log_key, since=since, targets=chunk)
             for chunk in pack(targets)]
    for future in [_enqueue_pool.submit(queue.send_message, item.model_dump_json(), time_to_live=NEVER_EXPIRE)
                   for item in items]:
        future.result()


def deliver_item(storage: Storage, settings: Settings, message: DeliveryMessage) -> None:
    deliverer = Deliverer(storage, settings)
    targets = deliverer.skip_removed(message)
    if not targets:
        return
    record = EventLog(storage).get(message.log)
    if record is None:
        deliverer.expired(message, targets)
        return
    deliverer.deliver(record, load_data(storage, record), message.log, message.since, targets)
