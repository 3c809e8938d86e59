"""Routes of the subscriptions group: subscribe, list, read, delete, unsubscribe, rotate a secret,
activate, and a subscription's delivery log. What they store is `relay.store.subscriptions`'s."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import azure.functions as func

from relay.core import clock
from relay.core.errors import UNTIL_BEFORE_SINCE, NotFound, TargetRefused, invalid
from relay.core.matching import NAME_RULE, is_name
from relay.core.models import RotateRequest, SubscriptionRequest, UnsubscribeRequest
from relay.core.settings import get_settings
from relay.http import access
from relay.http.access import SUBSCRIBER, rule
from relay.http.api import Reply, Request, http
from relay.outbound import signing
from relay.outbound.sender import check_target
from relay.pipeline import health, stats
from relay.pipeline.pause import Holds
from relay.store.deliverylog import STATUSES, DeliveryLog
from relay.store.eventlog import EventLog
from relay.store.events import load_data
from relay.store.storage import get_storage
from relay.store.subscriptions import CALLER_HEADERS, ID_RE, Caller, Subscription, SubscriptionStore

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
    storage = get_storage("fast")
    done = SubscriptionStore(storage).subscribed(body, _caller(request), owner=owner, scope=access.owner_scope(request))
    sub, created = done.subscription, done.created
    if done.reactivated:
        # A subscribe of its URL (a flow saved again) re-activated a subscription the relay had
        # disabled: as after `activate`, `recovered` goes out, and so does what it held meanwhile,
        # oldest first.
        health.recovered(storage, settings, sub)
        Holds(storage, settings).release(sub.id)
    # Each subscribe is a registration of its own: a platform that deletes the one it replaced
    # after subscribing again (a flow edited and saved) deletes that one only (see delete_subscription).
    location = request.link(f"subscriptions/{sub.id}", {"registration": str(sub.registration)})
    # Subscribing a URL again must not hand its secret to whoever holds a key and read the URL
    # in a list: the secret and the whole URL go only to the call that created it.
    return Reply(201, sub.view(with_secret=created, full_url=created), {"Location": location})


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
    sub = SubscriptionStore(get_storage("fast")).get(request.route.get("id", ""))
    if sub is None:
        raise NotFound("no subscription has this id")
    return Reply(200, _with_health(sub, stats.health(get_storage("fast"))))


def _with_health(sub: Subscription, health: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A subscription's answer with its endpoint health (docs/api.md): success rate and answer
    times over the last hour and day, from the delivery counters."""
    return {**sub.view(), "health": health.get(sub.id) or stats.no_health()}


def list_subscriptions(request: Request) -> Reply:
    limit = request.int_param("limit", 100, 1, 1000)
    event_type = request.text_param("eventType")
    if event_type is not None and not is_name(event_type):
        raise invalid("eventType", f"must be {NAME_RULE}")
    token = request.params.get("continuationToken") or None
    items, next_token = SubscriptionStore(get_storage("fast")).list_page(
        limit=limit, token=token, event_type=event_type, owner=access.owner_scope(request)
    )
    health = stats.health(get_storage("fast")) if items else {}
    body: dict[str, Any] = {"value": [_with_health(e, health) for e in items]}
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


def _time_param(request: Request, name: str) -> datetime | None:
    text = request.text_param(name)
    if text is None:
        return None
    try:
        return clock.parse_rfc3339(text)
    except ValueError as exc:  # its words say which: not the syntax, or a date the calendar lacks
        raise invalid(name, str(exc)) from None


def _known_subscription(sub_id: str) -> None:
    if not ID_RE.fullmatch(sub_id) or SubscriptionStore(get_storage("fast")).get(sub_id) is None:
        raise NotFound("no subscription has this id")


MAX_EVENT_ID = 512


def list_deliveries(request: Request) -> Reply:
    sub_id = request.route.get("id", "")
    status = request.text_param("status")
    if status is not None and status not in STATUSES:
        raise invalid("status", "must be pending, succeeded or failed")
    event_type = request.text_param("eventType")
    if event_type is not None and not is_name(event_type):
        raise invalid("eventType", f"must be one event type ({NAME_RULE}); patterns are not allowed here")
    event_id = request.text_param("eventId")
    if event_id is not None and (len(event_id) > MAX_EVENT_ID or not event_id.isprintable()):
        raise invalid("eventId", f"must be an event id: printable, at most {MAX_EVENT_ID} characters")
    since, until = _time_param(request, "since"), _time_param(request, "until")
    if since is not None and until is not None and since > until:
        raise invalid("until", UNTIL_BEFORE_SINCE)
    limit = request.int_param("limit", 100, 1, 1000)
    _known_subscription(sub_id)
    rows, next_token = DeliveryLog(get_storage("fast"), get_settings().event_retention_days).list(
        sub_id,
        status=status,
        limit=limit,
        token=request.params.get("continuationToken") or None,
        event_type=event_type,
        event_id=event_id,
        since=since,
        until=until,
    )
    body: dict[str, Any] = {"value": [row.view() for row in rows]}
    if next_token:
        given = {
            "status": status,
            "eventType": event_type,
            "eventId": event_id,
            "since": request.params.get("since"),
            "until": request.params.get("until"),
            "limit": str(limit),
        }
        query = {k: v for k, v in given.items() if v}
        body["nextLink"] = request.link(
            f"subscriptions/{sub_id}/deliveries", {**query, "continuationToken": next_token}
        )
    return Reply(200, body)


def get_delivery(request: Request) -> Reply:
    """One delivery's record: every attempt kept (oldest first) and the event as delivered."""
    sub_id, event_id = request.route.get("id", ""), request.route.get("eventId", "")
    _known_subscription(sub_id)
    storage = get_storage("fast")
    record = DeliveryLog(storage, get_settings().event_retention_days).record(sub_id, event_id)
    if record is None:
        raise NotFound("this subscription has no delivery of this event")
    body: dict[str, Any] = {
        "eventId": record.delivery.event_id,
        "type": record.delivery.event_type,
        "status": record.delivery.status,
        "attempts": [attempt.view() for attempt in record.attempts],
        "event": None,
        **{k: v for k, v in record.delivery.view().items() if k.startswith(("last", "next"))},
    }
    logged = EventLog(storage).get(record.delivery.log) if record.delivery.log is not None else None
    if logged is not None:
        sub = SubscriptionStore(storage).get(sub_id)
        data = load_data(storage, logged)
        note = signing.Notifications(
            event_id=logged.id,
            event_type=logged.type,
            source=logged.source,
            time=logged.time,
            subject=logged.subject,
            data=data,
        ).get(sub.content_mode if sub is not None else "json")
        # The event as the receiver got it: the CloudEvent, and the content headers of the
        # subscription's mode (the signature headers are made per attempt and not kept).
        body["event"] = json.loads(
            signing.cloudevent(
                event_id=logged.id,
                event_type=logged.type,
                source=logged.source,
                time=logged.time,
                subject=logged.subject,
                data=data,
            )
        )
        body["headers"] = dict(note.headers)
    return Reply(200, body)


def activate_subscription(request: Request) -> Reply:
    # One the relay disabled gets its held work back, and `relay.subscription.recovered` goes out.
    storage, settings = get_storage("fast"), get_settings()
    sub = health.reactivate(storage, settings, request.route.get("id", ""))
    if sub is None:
        raise NotFound("no subscription has this id")
    # Its held work (held while the relay had disabled it, relay.pipeline.health) goes out oldest
    # first under the new generation: the release a resume asks for. Nothing held: it finds none.
    Holds(storage, settings).release(sub.id)
    return Reply(200, sub.view())


# Lists and unsubscribe are scoped to the caller's own subscriptions in the store (`access.owner_scope`).
http(
    bp,
    "subscriptions",
    "subscriptions",
    {
        "POST": (create_subscription, rule(SUBSCRIBER, mine=True)),
        "GET": (list_subscriptions, rule(SUBSCRIBER, mine=True)),
    },
)
http(
    bp,
    "subscription",
    "subscriptions/{id}",
    {
        "GET": (get_subscription, rule(SUBSCRIBER, owned="id")),
        # Another owner's subscription is answered as an unknown id would be: 200, nothing removed
        # (the store checks the owner on the row it removes). A 404 here failed the save of a flow
        # whose co-owner had re-pointed its connection (the platform deletes the old registration).
        "DELETE": (delete_subscription, rule(SUBSCRIBER, mine=True)),
    },
)
http(bp, "deliveries", "subscriptions/{id}/deliveries", {"GET": (list_deliveries, rule(SUBSCRIBER, owned="id"))})
http(bp, "delivery", "subscriptions/{id}/deliveries/{eventId}", {"GET": (get_delivery, rule(SUBSCRIBER, owned="id"))})
http(bp, "secret", "subscriptions/{id}/secret", {"POST": (rotate_secret, rule(SUBSCRIBER, owned="id"))})
http(bp, "unsubscribe", "unsubscribe", {"POST": (unsubscribe, rule(SUBSCRIBER, mine=True))})
http(bp, "activate", "subscriptions/{id}/activate", {"POST": (activate_subscription, rule(SUBSCRIBER, owned="id"))})
