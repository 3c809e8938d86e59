"""Routes of the subscriptions group: subscribe, list, read, delete, unsubscribe, rotate a secret,
activate, and a subscription's delivery log. What they store is `relay.subscriptions`'s."""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func

from .. import access
from ..api import Reply, Request, http
from ..deliverylog import STATUSES, DeliveryLog
from ..errors import NotFound, TargetRefused, invalid
from ..matching import NAME_RULE, is_name
from ..models import RotateRequest, SubscriptionRequest, UnsubscribeRequest
from ..outbound import check_target
from ..settings import get_settings
from ..storage import get_storage
from ..subscriptions import CALLER_HEADERS, ID_RE, SubscriptionStore

log = logging.getLogger("relay.api")
bp = func.Blueprint()


# ---- subscriptions -----------------------------------------------------------------------------


def create_subscription(request: Request) -> Reply:
    raw = request.json()
    if isinstance(raw, dict) and "eventType" in raw and "eventTypes" in raw:
        raise invalid("eventType", "send eventTypes or eventType, not both")
    body: SubscriptionRequest = request.model(SubscriptionRequest, raw)
    settings = get_settings()
    try:
        check_target(body.notificationUrl, allow_private=settings.allow_private_targets)
    except TargetRefused as exc:
        raise invalid("notificationUrl", exc.reason) from None
    owner = request.principal.id if request.principal else None
    entity, created = SubscriptionStore(get_storage("fast")).subscribe(
        body, _caller(request), owner=owner, scope=access.owner_scope(request)
    )
    # Each subscribe is a registration of its own: a platform that deletes the one it replaced
    # after subscribing again (a flow edited and saved) deletes that one only (see delete_subscription).
    location = request.link(f"subscriptions/{entity.id}", {"registration": str(entity.registration)})
    # Subscribing a URL again must not hand its secret to whoever holds a key and read the URL
    # in a list: the secret and the whole URL go only to the call that created it.
    return Reply(201, entity.view(with_secret=created, full_url=created), {"Location": location})


def rotate_secret(request: Request) -> Reply:
    """A new signing secret. The old one keeps signing beside it for `graceSeconds` (default a day,
    so receivers can be given the new one without missing a delivery); 0 ends it at once (a leak).
    The body is optional: the console and older clients send none."""
    body: RotateRequest = request.model(RotateRequest, request.json()) if request.body.strip() else RotateRequest()
    entity = SubscriptionStore(get_storage("fast")).rotate_secret(request.route.get("id", ""), body.graceSeconds)
    if entity is None:
        raise NotFound("no subscription has this id")
    log.info("signing secret rotated subscription=%s graceSeconds=%d", entity.id, body.graceSeconds)
    return Reply(200, entity.view(with_secret=True))


def get_subscription(request: Request) -> Reply:
    entity = SubscriptionStore(get_storage("fast")).get(request.route.get("id", ""))
    if entity is None:
        raise NotFound("no subscription has this id")
    return Reply(200, entity.view())


def list_subscriptions(request: Request) -> Reply:
    limit = request.int_param("limit", 100, 1, 1000)
    event_type = request.text_param("eventType")
    if event_type is not None and not is_name(event_type):
        raise invalid("eventType", f"must be {NAME_RULE}")
    token = request.params.get("continuationToken") or None
    items, next_token = SubscriptionStore(get_storage("fast")).list(
        limit=limit, token=token, event_type=event_type, owner=access.owner_scope(request)
    )
    body: dict[str, Any] = {"value": [e.view() for e in items]}
    if next_token:
        query = {k: v for k, v in (("eventType", event_type), ("limit", str(limit))) if v}
        body["nextLink"] = request.link("subscriptions", {**query, "continuationToken": next_token})
    return Reply(200, body)


def delete_subscription(request: Request) -> Reply:
    """Remove a subscription; a `registration` (from a subscribe's `Location`) that a later
    subscribe has superseded removes nothing, and is answered 200 all the same."""
    registration: int | None = None
    given = request.params.get("registration")
    if given is not None:
        if not (len(given) <= 15 and given.isascii() and given.isdigit() and int(given) > 0):
            raise invalid("registration", "must be the registration number of a subscribe's Location")
        registration = int(given)
    SubscriptionStore(get_storage("fast")).delete(
        request.route.get("id", ""), registration, access.owner_scope(request)
    )
    return Reply(200, {})


MAX_CALLER_HEADER = 512


def _caller(request: Request) -> dict[str, str]:
    """The Logic Apps headers that identify who subscribes (workflow, operation, tracking id).
    Values that are empty, too long or hold control characters are not an identity: ignored."""
    found = {}
    for header, name in CALLER_HEADERS.items():
        value = (request.headers.get(header) or "").strip()
        if value and len(value) <= MAX_CALLER_HEADER and value.isprintable():
            found[name] = value
    return found


def unsubscribe(request: Request) -> Reply:
    # The HTTP Webhook's unsubscribe may carry no body at all; it is found by its headers then.
    raw = request.json() if request.body.strip() else {}
    body: UnsubscribeRequest = request.model(UnsubscribeRequest, raw)
    store = SubscriptionStore(get_storage("fast"))
    if body.notificationUrl is not None:
        store.unsubscribe(body.notificationUrl, scope=access.owner_scope(request))
        return Reply(200, {})
    caller = _caller(request)
    if not (("workflow_id" in caller and "workflow_operation_name" in caller) or "client_tracking_id" in caller):
        raise invalid(
            "notificationUrl",
            "is required unless the call carries x-ms-workflow-id and "
            "x-ms-workflow-operation-name, or x-ms-client-tracking-id",
        )
    store.unsubscribe_caller(
        caller.get("workflow_id"),
        caller.get("workflow_operation_name"),
        caller.get("client_tracking_id"),
        scope=access.owner_scope(request),
    )
    return Reply(200, {})


def list_deliveries(request: Request) -> Reply:
    sub_id = request.route.get("id", "")
    status = request.text_param("status")
    if status is not None and status not in STATUSES:
        raise invalid("status", "must be pending, succeeded or failed")
    limit = request.int_param("limit", 100, 1, 1000)
    if not ID_RE.fullmatch(sub_id) or SubscriptionStore(get_storage("fast")).get(sub_id) is None:
        raise NotFound("no subscription has this id")
    rows, next_token = DeliveryLog(get_storage("fast"), get_settings().event_retention_days).list(
        sub_id, status=status, limit=limit, token=request.params.get("continuationToken") or None
    )
    body: dict[str, Any] = {"value": [row.view() for row in rows]}
    if next_token:
        query = {k: v for k, v in (("status", status), ("limit", str(limit))) if v}
        body["nextLink"] = request.link(
            f"subscriptions/{sub_id}/deliveries", {**query, "continuationToken": next_token}
        )
    return Reply(200, body)


def activate_subscription(request: Request) -> Reply:
    entity = SubscriptionStore(get_storage("fast")).activate(request.route.get("id", ""))
    if entity is None:
        raise NotFound("no subscription has this id")
    return Reply(200, entity.view())


http(bp, "subscriptions", "subscriptions", {"POST": create_subscription, "GET": list_subscriptions})
http(bp, "subscription", "subscriptions/{id}", {"GET": get_subscription, "DELETE": delete_subscription})
http(bp, "deliveries", "subscriptions/{id}/deliveries", {"GET": list_deliveries})
http(bp, "secret", "subscriptions/{id}/secret", {"POST": rotate_secret})
http(bp, "unsubscribe", "unsubscribe", {"POST": unsubscribe})
http(bp, "activate", "subscriptions/{id}/activate", {"POST": activate_subscription})
