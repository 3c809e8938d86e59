"""Routes of the subscriptions group: subscribe, list, read, delete, unsubscribe, rotate a secret,
activate, and a subscription's delivery log. What they store is `relay.store.subscriptions`'s."""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func

from relay.core.errors import NotFound, TargetRefused, invalid
from relay.core.matching import NAME_RULE, is_name
from relay.core.models import SubscriptionRequest, UnsubscribeRequest
from relay.core.settings import get_settings
from relay.http import access
from relay.http.api import Reply, Request, http
from relay.outbound.sender import check_target
from relay.pipeline import health
from relay.store.deliverylog import STATUSES, DeliveryLog
from relay.store.storage import get_storage
from relay.store.subscriptions import CALLER_HEADERS, ID_RE, Caller, SubscriptionStore

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
    sub, created = SubscriptionStore(get_storage("fast")).subscribe(
        body, _caller(request), owner=owner, scope=access.owner_scope(request)
    )
    # Each subscribe is a registration of its own: a platform that deletes the one it replaced
    # after subscribing again (a flow edited and saved) deletes that one only (see delete_subscription).
    location = request.link(f"subscriptions/{sub.id}", {"registration": str(sub.registration)})
    # Subscribing a URL again must not hand its secret to whoever holds a key and read the URL
    # in a list: the secret and the whole URL go only to the call that created it.
    return Reply(201, sub.view(with_secret=created, full_url=created), {"Location": location})


def rotate_secret(request: Request) -> Reply:
    """A new signing secret for a subscriber that lost its own; the old one signs nothing more."""
    sub = SubscriptionStore(get_storage("fast")).rotate_secret(request.route.get("id", ""))
    if sub is None:
        raise NotFound("no subscription has this id")
    log.info("signing secret rotated subscription=%s", sub.id)
    return Reply(200, sub.view(with_secret=True))


def get_subscription(request: Request) -> Reply:
    sub = SubscriptionStore(get_storage("fast")).get(request.route.get("id", ""))
    if sub is None:
        raise NotFound("no subscription has this id")
    return Reply(200, sub.view())


def list_subscriptions(request: Request) -> Reply:
    limit = request.int_param("limit", 100, 1, 1000)
    event_type = request.text_param("eventType")
    if event_type is not None and not is_name(event_type):
        raise invalid("eventType", f"must be {NAME_RULE}")
    token = request.params.get("continuationToken") or None
    items, next_token = SubscriptionStore(get_storage("fast")).list_page(
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


def _caller(request: Request) -> Caller:
    """The Logic Apps headers that identify who subscribes (workflow, operation, tracking id).
    Values that are empty, too long or hold control characters are not an identity: ignored."""

    def value(header: str) -> str | None:
        text = (request.headers.get(header) or "").strip()
        return text if text and len(text) <= MAX_CALLER_HEADER and text.isprintable() else None

    return Caller(**{name: value(header) for header, name in CALLER_HEADERS.items()})


def unsubscribe(request: Request) -> Reply:
    # The HTTP Webhook's unsubscribe may carry no body at all; it is found by its headers then.
    raw = request.json() if request.body.strip() else {}
    body: UnsubscribeRequest = request.model(UnsubscribeRequest, raw)
    store = SubscriptionStore(get_storage("fast"))
    if body.notificationUrl is not None:
        store.unsubscribe(body.notificationUrl, scope=access.owner_scope(request))
        return Reply(200, {})
    caller = _caller(request)
    if not caller.identifies:
        raise invalid(
            "notificationUrl",
            "is required unless the call carries x-ms-workflow-id and "
            "x-ms-workflow-operation-name, or x-ms-client-tracking-id",
        )
    store.unsubscribe_caller(caller, scope=access.owner_scope(request))
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
    # One the relay disabled gets its held work back, and `relay.subscription.recovered` goes out.
    sub = health.reactivate(get_storage("fast"), get_settings(), request.route.get("id", ""))
    if sub is None:
        raise NotFound("no subscription has this id")
    return Reply(200, sub.view())


http(bp, "subscriptions", "subscriptions", {"POST": create_subscription, "GET": list_subscriptions})
http(bp, "subscription", "subscriptions/{id}", {"GET": get_subscription, "DELETE": delete_subscription})
http(bp, "deliveries", "subscriptions/{id}/deliveries", {"GET": list_deliveries})
http(bp, "secret", "subscriptions/{id}/secret", {"POST": rotate_secret})
http(bp, "unsubscribe", "unsubscribe", {"POST": unsubscribe})
http(bp, "activate", "subscriptions/{id}/activate", {"POST": activate_subscription})
