"""Routes of the replay group: start a replay, and read the operation it runs as."""

from __future__ import annotations

import azure.functions as func

from relay.core.errors import UNTIL_BEFORE_SINCE, AlreadyRunning, NotFound, OperationFailed, invalid
from relay.core.models import ReplayRequest
from relay.core.statuses import OperationStatus
from relay.http.access import SUBSCRIBER, rule
from relay.http.api import Reply, Request, http
from relay.pipeline.replay import CRASHED, RETRY_AFTER, Operations, ReplayRunning
from relay.store.storage import get_storage
from relay.store.subscriptions import ID_RE, SubscriptionStore

bp = func.Blueprint()


# ---- replay ------------------------------------------------------------------------------------


def start_replay(request: Request) -> Reply:
    body: ReplayRequest = request.model(ReplayRequest)
    if body.until is not None and body.until < body.since:
        raise invalid("until", UNTIL_BEFORE_SINCE)
    sub_id = request.route.get("id", "")
    storage = get_storage("fast")
    if SubscriptionStore(storage).get(sub_id) is None:
        raise NotFound("no subscription has this id")
    try:
        op_id = Operations(storage).start(sub_id, body)
    except ReplayRunning as running:
        raise AlreadyRunning(
            "a replay of this subscription is already running; its status is at Location",
            request.link(f"operations/{running.operation_id}"),
            RETRY_AFTER,
        ) from None
    return Reply(
        202,
        {"id": op_id, "status": OperationStatus.RUNNING},
        {"Location": request.link(f"operations/{op_id}"), "Retry-After": str(RETRY_AFTER)},
    )


def get_operation(request: Request) -> Reply:
    op_id = request.route.get("operationId", "")
    op = Operations(get_storage("fast")).get(op_id) if ID_RE.fullmatch(op_id) else None
    if op is None:
        raise NotFound("no operation has this id")
    shown = op.view()
    if shown["status"] == OperationStatus.RUNNING:
        return Reply(202, shown, {"Location": request.link(f"operations/{op_id}"), "Retry-After": str(RETRY_AFTER)})
    if shown["status"] == OperationStatus.FAILED:
        raise OperationFailed(f"the replay could not finish: {shown['error']}", op_id, crashed=shown["code"] == CRASHED)
    return Reply(200, shown)


http(bp, "replay", "subscriptions/{id}/replay", {"POST": (start_replay, rule(SUBSCRIBER, owned="id"))})
http(bp, "operation", "operations/{operationId}", {"GET": (get_operation, rule(SUBSCRIBER, owned="operationId"))})
