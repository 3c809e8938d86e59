"""The bodies of the queue-triggered functions: parse the message, then hand it to its concern."""

from __future__ import annotations

import azure.functions as func

from .fanout import deliver_item, fan_out
from .models import DeliveryMessage, FanoutMessage, ReplayMessage
from .queues import parse_or_poison
from .settings import get_settings
from .storage import DELIVERY_QUEUE, FANOUT_QUEUE, REPLAY_QUEUE, get_storage


def on_fanout(msg: func.QueueMessage) -> None:
    storage = get_storage()
    message = parse_or_poison(storage, FANOUT_QUEUE, FanoutMessage, msg.get_body())
    if message is not None:
        fan_out(storage, get_settings(), message, msg.id)


def on_delivery(msg: func.QueueMessage) -> None:
    storage = get_storage()
    message = parse_or_poison(storage, DELIVERY_QUEUE, DeliveryMessage, msg.get_body())
    if message is not None:
        deliver_item(storage, get_settings(), message)


def on_replay(msg: func.QueueMessage) -> None:
    from .replay import run_replay

    storage = get_storage()
    message = parse_or_poison(storage, REPLAY_QUEUE, ReplayMessage, msg.get_body())
    if message is not None:
        run_replay(storage, message)


def on_sweep(timer: func.TimerRequest) -> None:
    from .retention import sweep

    sweep(get_storage(), get_settings().event_retention_days)
