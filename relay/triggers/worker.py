"""The bodies of the queue-triggered functions: parse the message, hand it to its concern, and
outlast storage outages.

The host's own retry counts toward `maxDequeueCount`, and a storage outage longer than a few
retries would send good work to the poison queue. So when an execution fails because storage
is unreachable and the message has already come back a few times, the message is put back as a
fresh one, due in half a minute, and the execution ends normally. A real bug still fails every
time and ends in the poison queue.

The bindings are here too, beside their bodies: `queues` (one queue-triggered function per queue,
each queue named once, in `relay.store.storage`) and `timers` (the retention sweep, and the `due` timer
that moves work due later from the due table into its queue: relay.store.due).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import azure.functions as func

from relay.core.models import DeliveryMessage, FanoutMessage, ReplayMessage
from relay.core.settings import due_period, get_settings
from relay.core.statuses import OperationStatus
from relay.pipeline.delivery import Deliverer
from relay.pipeline.fanout import deliver_item, fan_out
from relay.pipeline.outbox import Outbox
from relay.pipeline.pause import Holds, release_target
from relay.pipeline.queues import parse_or_poison
from relay.pipeline.replay import Operations, run_replay
from relay.pipeline.retention import sweep
from relay.pipeline.testdelivery import TestDeliveries, delivers_test
from relay.store.due import due_schedule
from relay.store.storage import DELIVERY_QUEUE, FANOUT_QUEUE, REPLAY_QUEUE, Storage, get_storage, is_outage

log = logging.getLogger("relay.worker")
queues = func.Blueprint()
timers = func.Blueprint()
STORAGE_CONNECTION = "AzureWebJobsStorage"

REQUEUE_AFTER_DEQUEUES = 3
# host.json's queues.maxDequeueCount (a test keeps the two equal): the host's last try.
MAX_DEQUEUE_COUNT = 5
REQUEUE_DELAY = 30


def patiently(
    queue: str,
    msg: func.QueueMessage,
    work: Callable[[Storage], None],
    give_up: Callable[[Storage, Exception], None] | None = None,
) -> None:
    """Run a queue message's `work`, deciding what a failure becomes: the host's retry, a
    re-enqueued copy during a storage outage (after REQUEUE_AFTER_DEQUEUES tries, keeping the
    fan-out origin), or `give_up` on the host's last try."""
    storage = get_storage()
    try:
        work(storage)
    except Exception as exc:
        dequeues = msg.dequeue_count or 0
        if not is_outage(exc):
            if give_up is not None and dequeues >= MAX_DEQUEUE_COUNT:
                # The host's last try: record the failure where people look for it (the delivery
                # log, the operation) rather than leave the work to a poison queue nobody reads.
                log.error(
                    "queue %s: message %s failed %d times (%s); recorded as failed",
                    queue,
                    msg.id,
                    dequeues,
                    type(exc).__name__,
                )
                give_up(storage, exc)
                return
            raise
        if dequeues < REQUEUE_AFTER_DEQUEUES:
            raise
        body = json.loads(msg.get_body())
        if queue == FANOUT_QUEUE and not body.get("origin"):
            body["origin"] = msg.id
        Outbox(storage).put_back(queue, json.dumps(body), REQUEUE_DELAY)
        log.warning(
            "queue %s: storage unavailable (%s); message %s put back for %ss",
            queue,
            type(exc).__name__,
            msg.id,
            REQUEUE_DELAY,
        )


@queues.function_name("fanout")
@queues.queue_trigger(arg_name="msg", queue_name=FANOUT_QUEUE, connection=STORAGE_CONNECTION)
def on_fanout(msg: func.QueueMessage) -> None:
    def work(storage: Storage) -> None:
        message = parse_or_poison(storage, FANOUT_QUEUE, FanoutMessage, msg.get_body())
        if message is not None:
            # The host gives every message it triggers on an id; the type allows none for messages built by hand.
            fan_out(storage, get_settings(), message, msg.id or "", msg.dequeue_count or 1)

    patiently(FANOUT_QUEUE, msg, work)


@queues.function_name("deliver")
@queues.queue_trigger(arg_name="msg", queue_name=DELIVERY_QUEUE, connection=STORAGE_CONNECTION)
def on_delivery(msg: func.QueueMessage) -> None:
    def work(storage: Storage) -> None:
        message = parse_or_poison(storage, DELIVERY_QUEUE, DeliveryMessage, msg.get_body())
        if message is not None:
            deliver_item(storage, get_settings(), message)

    def give_up(storage: Storage, exc: Exception) -> None:
        message = DeliveryMessage.model_validate_json(msg.get_body())
        Deliverer(storage, get_settings()).abandon(message, f"delivery failed repeatedly: {type(exc).__name__}")

    patiently(DELIVERY_QUEUE, msg, work, give_up)


@queues.function_name("replayer")
@queues.queue_trigger(arg_name="msg", queue_name=REPLAY_QUEUE, connection=STORAGE_CONNECTION)
def on_replay(msg: func.QueueMessage) -> None:
    def work(storage: Storage) -> None:
        message = parse_or_poison(storage, REPLAY_QUEUE, ReplayMessage, msg.get_body())
        if message is None:
            return
        # The replay queue also carries the controls' work (relay.http.routes.controls).
        released = release_target(message.operationId)
        if released is not None:
            Holds(storage, get_settings()).run_release(released)
        elif delivers_test(message.operationId):
            TestDeliveries(storage, get_settings()).run(message.operationId)
        else:
            run_replay(storage, message, get_settings().event_retention_days)

    def give_up(storage: Storage, exc: Exception) -> None:
        message = ReplayMessage.model_validate_json(msg.get_body())
        if release_target(message.operationId) is not None or delivers_test(message.operationId):
            log.error("giving up on %s after repeated failures: %s", message.operationId, type(exc).__name__)
            return
        Operations(storage).finish(
            message.operationId,
            status=OperationStatus.FAILED,
            error=f"the replay failed repeatedly: {type(exc).__name__}",
        )

    patiently(REPLAY_QUEUE, msg, work, give_up)


@timers.function_name("retention")
@timers.timer_trigger(arg_name="timer", schedule="0 5 * * * *", run_on_startup=False)
def on_sweep(timer: func.TimerRequest) -> None:
    sweep(get_storage(), get_settings().event_retention_days)


# Every RELAY_DUE_PERIOD (a minute by default; read at import, as the host reads the schedule when
# it indexes the functions): a point read and a query per open minute when nothing is due.
@timers.function_name("due")
@timers.timer_trigger(arg_name="timer", schedule=due_schedule(due_period()), run_on_startup=False)
def on_due(timer: func.TimerRequest) -> None:
    started = time.monotonic()
    moved = Outbox(get_storage(), get_settings()).move_due()
    if moved:
        log.info("due: %d messages moved into their queues in %.2f s", moved, time.monotonic() - started)
