"""Routes of an operator's controls over one subscription (CONTRACT section 6): pause and
resume it, send it a test event, resend one of its deliveries. What they do is
`relay.pipeline.pause`'s, `relay.pipeline.testdelivery`'s and `relay.pipeline.resend`'s."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from relay.core.errors import NotFound, invalid
from relay.core.jsontext import compact
from relay.core.matching import is_event_id, is_name, type_matches
from relay.core.models import EventIn, TestRequest
from relay.core.settings import get_settings
from relay.core.statuses import OperationStatus
from relay.http import access
from relay.http.access import SUBSCRIBER, rule
from relay.http.api import Reply, Request, http
from relay.pipeline import testdelivery
from relay.pipeline.pause import Holds
from relay.pipeline.replay import RETRY_AFTER
from relay.pipeline.resend import resend
from relay.store.eventtypes import EventTypes, validate_data
from relay.store.storage import get_storage
from relay.store.subscriptions import ID_RE, Subscription, SubscriptionStore

log = logging.getLogger("relay.api")
bp = func.Blueprint()


def _sub_id(request: Request) -> str:
    sub_id = request.route.get("id", "")
    if not ID_RE.fullmatch(sub_id):
        raise NotFound("no subscription has this id")
    return sub_id


def _set_paused(request: Request, paused: bool) -> Reply:
    storage = get_storage("fast")
    entity = SubscriptionStore(storage).set_paused(_sub_id(request), paused, access.owner_scope(request))
    if entity is None:
        raise NotFound("no subscription has this id")
    if not paused:
        Holds(storage, get_settings()).release(entity.id)  # after the row says active
    log.info("subscription %s subscription=%s", "paused" if paused else "resumed", entity.id)
    return Reply(200, entity.view())


def pause_subscription(request: Request) -> Reply:
    return _set_paused(request, True)


def resume_subscription(request: Request) -> Reply:
    return _set_paused(request, False)


def _test_type(sub: Subscription, given: str | None) -> str:
    if given is None:
        return testdelivery.TEST_TYPE
    if not is_name(given) or not type_matches(sub.event_types, given):
        concrete = [t for t in sub.event_types if is_name(t)]
        raise invalid(
            "type",
            "must be an event type this subscription receives"
            + (f" ({', '.join(concrete[:10])})" if concrete else "")
            + f", or left out for {testdelivery.TEST_TYPE}",
        )
    return given


def test_subscription(request: Request) -> Reply:
    """One event, marked as a test, to this subscription alone."""
    raw = request.json() if request.body.strip() else {}
    body: TestRequest = request.model(TestRequest, raw)
    storage = get_storage("fast")
    sub = SubscriptionStore(storage).get(_sub_id(request))
    if sub is None or (access.owner_scope(request) is not None and sub.owner != access.owner_scope(request)):
        raise NotFound("no subscription has this id")
    event_type = _test_type(sub, body.type)
    given = isinstance(raw, dict) and "data" in raw
    data: Any
    if given:
        data = body.data
        if len(compact(data).encode("utf-8")) > testdelivery.MAX_DATA_BYTES:
            raise invalid("data", f"a test event's data is at most {testdelivery.MAX_DATA_BYTES:,} bytes of JSON")
        if event_type != testdelivery.TEST_TYPE:
            validate_data(storage, [EventIn.model_validate({"type": event_type, "data": data})], False)
    elif event_type == testdelivery.TEST_TYPE:
        data = testdelivery.default_data(sub)
    else:
        found = EventTypes(storage).get(event_type)
        schema = found.get("schema") if found else None
        data = testdelivery.example(schema) if isinstance(schema, dict) else {}
        if len(json.dumps(data)) > testdelivery.MAX_DATA_BYTES:
            data = {}
    event_id = testdelivery.TestDeliveries(storage, get_settings()).start(
        sub, event_type, data, request.public_link("events")
    )
    log.info("test delivery queued event=%s subscription=%s", event_id, sub.id)
    return Reply(202, {"id": event_id})


def resend_delivery(request: Request) -> Reply:
    sub_id = _sub_id(request)
    event_id = request.route.get("eventId", "")
    if not is_event_id(event_id):
        raise invalid("eventId", "is not an event id")
    op_id = resend(get_storage("fast"), get_settings(), sub_id, event_id)
    return Reply(
        202,
        {"id": op_id, "status": OperationStatus.RUNNING},
        {"Location": request.link(f"operations/{op_id}"), "Retry-After": str(RETRY_AFTER)},
    )


# A subscriber on their own subscriptions, an admin on all (as activate and rotate).
OWN = rule(SUBSCRIBER, owned="id")
http(bp, "pause", "subscriptions/{id}/pause", {"POST": (pause_subscription, OWN)})
http(bp, "resume", "subscriptions/{id}/resume", {"POST": (resume_subscription, OWN)})
http(bp, "test", "subscriptions/{id}/test", {"POST": (test_subscription, OWN)})
http(bp, "resend", "subscriptions/{id}/deliveries/{eventId}/resend", {"POST": (resend_delivery, OWN)})
