"""The bodies of the queue-triggered functions: parse the message, hand it to its concern, and
outlast storage outages.

The host's own retry counts toward `maxDequeueCount`, and a storage outage longer than a few
retries would send good work to the poison queue. So when an execution fails because storage
is unreachable and the message has already come back a few times, the message is put back as a
fresh one, due in half a minute, and the execution ends normally. A real bug still fails every
time and ends in the poison queue.
"""

from __future__ import annotations

import json
import logging
from typing import Callable

import azure.functions as func

from .fanout import deliver_item, fan_out
from .models import DeliveryMessage, FanoutMessage, ReplayMessage
from .queues import parse_or_poison
from .replay import run_replay
from .retention import sweep
from .settings import get_settings
from .storage import (
    DELIVERY_QUEUE, FANOUT_QUEUE, NEVER_EXPIRE, REPLAY_QUEUE, Storage, get_storage, is_outage,
)

log = logging.getLogger("relay.worker")

REQUEUE_AFTER_DEQUEUES = 3
REQUEUE_DELAY = 30


def _patiently(queue: str, msg: func.QueueMessage, work: Callable[[Storage], None]) -> None:
    storage = get_storage()
    try:
        work(storage)
    except Exception as exc:
        if not is_outage(exc) or (msg.dequeue_count or 0) < REQUEUE_AFTER_DEQUEUES:
            raise
        body = json.loads(msg.get_body())
        if queue == FANOUT_QUEUE and not body.get("origin"):
            body["origin"] = msg.id
        storage.queue(queue).send_message(json.dumps(body), visibility_timeout=REQUEUE_DELAY,
                                          time_to_live=NEVER_EXPIRE)
        log.warning("queue %s: storage unavailable (%s); message %s put back for %ss",
                    queue, type(exc).__name__, msg.id, REQUEUE_DELAY)


def on_fanout(msg: func.QueueMessage) -> None:
    def work(storage: Storage) -> None:
        message = parse_or_poison(storage, FANOUT_QUEUE, FanoutMessage, msg.get_body())
        if message is not None:
            fan_out(storage, get_settings(), message, msg.id, msg.dequeue_count or 1)
    _patiently(FANOUT_QUEUE, msg, work)


def on_delivery(msg: func.QueueMessage) -> None:
    def work(storage: Storage) -> None:
        message = parse_or_poison(storage, DELIVERY_QUEUE, DeliveryMessage, msg.get_body())
        if message is not None:
            deliver_item(storage, get_settings(), message)
    _patiently(DELIVERY_QUEUE, msg, work)


def on_replay(msg: func.QueueMessage) -> None:
    def work(storage: Storage) -> None:
        message = parse_or_poison(storage, REPLAY_QUEUE, ReplayMessage, msg.get_body())
        if message is not None:
            run_replay(storage, message)
    _patiently(REPLAY_QUEUE, msg, work)


def on_sweep(timer: func.TimerRequest) -> None:
    sweep(get_storage(), get_settings().event_retention_days)
