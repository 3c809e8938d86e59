"""The smoke check's receiving end (`python -m relay smoke`): a signed-receipt endpoint the relay
serves itself, so a round trip through publish, fan-out, the outbound guard and delivery can be
proven after a deploy without any receiver outside the relay.

- `POST /api/smoke/runs` (credentials needed, like subscribing) opens a run: a random id and the
  hook URL on the relay's own public URL (`RELAY_PUBLIC_URL`, else the request's host), which the
  caller then subscribes. A run lives `RUN_TTL`; at most `MAX_OPEN_RUNS` are open at a time.
- `POST /api/smoke/hook/{id}` is anonymous, as every webhook receiver must be (the relay's
  deliveries carry no credentials), and so it is no open sink: it answers only for an open run,
  only a body of at most `MAX_BODY_BYTES`, and only when the Standard Webhooks signature verifies
  with the secret of the subscription whose notification URL is that run's hook URL (and whose
  timestamp is within the library's five minutes). It forwards nothing and keeps at most
  `MAX_RECEIPTS` receipts per run: the headers and body as received, so the caller can verify the
  signature itself with the secret it was given.
- `GET /api/smoke/runs/{id}` reads the run and its receipts; `DELETE` removes it. In entra mode a
  run belongs to its creator: another principal's is a 404 (admins reach all).

Runs are rows of the operations table under their own partition; expired runs are swept when a
new one opens, and the retention sweep forgets any left behind (`createdAt`, a status that is
not `running`).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

import azure.functions as func
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relay.core import clock
from relay.core.errors import NotFound, PayloadTooLarge, Problem, TooManyRequests, Unauthorized
from relay.http.access import ANYONE, SUBSCRIBER, rule
from relay.http.api import Reply, Request, http
from relay.store.storage import OPERATIONS_TABLE, get_storage
from relay.store.subscriptions import Subscription, SubscriptionStore

log = logging.getLogger("relay.api")
bp = func.Blueprint()

PARTITION = "smoke"
STATUS = "smoke"  # not `running`: the retention sweep of operations forgets rows left behind
RUN_TTL = timedelta(minutes=15)
MAX_OPEN_RUNS = 50
MAX_RECEIPTS = 3
MAX_BODY_BYTES = 16 * 1024  # a smoke event is a few hundred bytes; the rows stay small
RUN_ID = re.compile(r"[0-9a-f]{32}")
SIGNED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type")
UPDATE_TRIES = 5


def _table() -> TableClient:
    return get_storage("fast").table(OPERATIONS_TABLE)


def _run_id(request: Request) -> str:
    run_id = request.route.get("id", "")
    if not RUN_ID.fullmatch(run_id):
        raise NotFound("no smoke run has this id")
    return run_id


def _expired(row: dict[str, Any], now: datetime) -> bool:
    return clock.parse_rfc3339(row["expiresAt"]) <= now


def _view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["RowKey"],
        "notificationUrl": row["url"],
        "createdAt": row["createdAt"],
        "expiresAt": row["expiresAt"],
        "receipts": json.loads(row.get("receipts") or "[]"),
    }


def _owned_run(request: Request) -> dict[str, Any]:
    """The caller's open run: 404 for none, an expired one, or (entra mode) another principal's."""
    run_id = _run_id(request)
    try:
        row: dict[str, Any] = _table().get_entity(PARTITION, run_id)
    except ResourceNotFoundError:
        raise NotFound("no smoke run has this id") from None
    principal = request.principal
    if principal is not None and not principal.is_admin and row.get("owner") != principal.id:
        raise NotFound("no smoke run has this id")
    if _expired(row, clock.utcnow()):
        raise NotFound("no smoke run has this id (it expired)")
    return row


def _sweep(table: TableClient, now: datetime) -> int:
    """Delete expired runs; returns how many runs are still open."""
    open_runs = 0
    for row in table.query_entities(
        "PartitionKey eq @p", parameters={"p": PARTITION}, select=["PartitionKey", "RowKey", "expiresAt"]
    ):
        if _expired(row, now):
            try:
                table.delete_entity(PARTITION, row["RowKey"])
            except ResourceNotFoundError:
                pass
        else:
            open_runs += 1
    return open_runs


def create_smoke_run(request: Request) -> Reply:
    table, now = _table(), clock.utcnow()
    if _sweep(table, now) >= MAX_OPEN_RUNS:
        raise TooManyRequests(
            f"{MAX_OPEN_RUNS} smoke runs are open; each expires {RUN_TTL.seconds // 60} minutes after it opened",
            retry_after=60,
        )
    run_id = secrets.token_hex(16)
    row = {
        "PartitionKey": PARTITION,
        "RowKey": run_id,
        # The relay's own public URL: the one its deliveries can reach it at.
        "url": request.public_link(f"smoke/hook/{run_id}"),
        "owner": request.principal.id if request.principal else "",
        "status": STATUS,
        "createdAt": clock.rfc3339(now),
        "expiresAt": clock.rfc3339(now + RUN_TTL),
        "receipts": "[]",
    }
    try:
        table.create_entity(row)
    except ResourceExistsError:  # 128 random bits: not in practice
        raise Problem("try again") from None
    return Reply(201, _view(row), {"Location": request.link(f"smoke/runs/{run_id}")})


def get_smoke_run(request: Request) -> Reply:
    return Reply(200, _view(_owned_run(request)))


def delete_smoke_run(request: Request) -> Reply:
    run_id = _run_id(request)
    try:
        _owned_run(request)
        _table().delete_entity(PARTITION, run_id)
    except (NotFound, ResourceNotFoundError):
        pass  # as DELETE of a subscription: 200 for one that is not there
    return Reply(200, {})


def smoke_hook(request: Request) -> Reply:
    """One delivery to a run's hook: verified with its subscription's secret, then recorded."""
    run_id = _run_id(request)
    declared = (request.headers.get("content-length") or "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"a smoke delivery is at most {MAX_BODY_BYTES} bytes")
    table, now = _table(), clock.utcnow()
    try:
        row: dict[str, Any] = table.get_entity(PARTITION, run_id)
    except ResourceNotFoundError:
        raise NotFound("no smoke run has this id") from None
    if _expired(row, now):
        raise NotFound("no smoke run has this id")
    body = request.body
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"a smoke delivery is at most {MAX_BODY_BYTES} bytes")
    # The secret of whatever subscription holds this run's URL (looked up by the URL the relay
    # wrote, not the one this request came in on, which a front end may have rewritten).
    sub = _subscription_of(row["url"])
    headers = {name: request.headers.get(name) or "" for name in SIGNED_HEADERS}
    if sub is None:
        raise Unauthorized("no subscription signs for this hook")
    try:
        Webhook(sub.secret).verify(body, headers, json_parse=False)
    except (WebhookVerificationError, ValueError):
        raise Unauthorized("the webhook signature does not verify") from None
    receipt = {
        "receivedAt": clock.rfc3339(now),
        "subscriptionId": sub.id,
        "headers": headers,
        "body": body.decode("utf-8", errors="replace"),
    }
    _record(table, run_id, receipt)
    return Reply(200, {})


def _subscription_of(url: str) -> Subscription | None:
    store = SubscriptionStore(get_storage("fast"))
    sub_id = store.id_for_url(url)
    return store.get(sub_id) if sub_id is not None else None


def _record(table: TableClient, run_id: str, receipt: dict[str, Any]) -> None:
    for _ in range(UPDATE_TRIES):
        try:
            row = table.get_entity(PARTITION, run_id)
        except ResourceNotFoundError:
            raise NotFound("no smoke run has this id") from None
        receipts = json.loads(row.get("receipts") or "[]")
        if len(receipts) >= MAX_RECEIPTS:
            return  # a retry or a duplicate beyond what the check reads: answered, not kept
        receipts.append(receipt)
        try:
            table.update_entity(
                {"PartitionKey": PARTITION, "RowKey": run_id, "receipts": json.dumps(receipts)},
                mode=UpdateMode.MERGE,
                etag=row.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
            return
        except ResourceModifiedError:
            continue  # another receipt came at the same time: read again
        except ResourceNotFoundError:
            raise NotFound("no smoke run has this id") from None
    log.warning("smoke hook: receipt not recorded after %d tries", UPDATE_TRIES)


# Opening a run is like subscribing; a run is its owner's (the handlers check the owner on the row).
http(bp, "smoke_runs", "smoke/runs", {"POST": (create_smoke_run, rule(SUBSCRIBER))})
http(
    bp,
    "smoke_run",
    "smoke/runs/{id}",
    {"GET": (get_smoke_run, rule(SUBSCRIBER)), "DELETE": (delete_smoke_run, rule(SUBSCRIBER))},
)
# The relay's own deliveries carry no token: the hook answers only to its run's signature.
http(bp, "smoke_hook", "smoke/hook/{id}", {"POST": (smoke_hook, ANYONE)}, anonymous=True)
