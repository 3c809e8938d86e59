"""Routes of the events group: publish one event or a batch, and the polling trigger. What they
store is `relay.store.events`'s; what the polling trigger reads, `relay.pipeline.polling`'s."""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func

from relay.core import clock
from relay.core.errors import BadRequest, FieldError, PayloadTooLarge, invalid
from relay.core.models import EventIn
from relay.core.settings import Settings, get_settings
from relay.http import cloudevents_in
from relay.http.access import PUBLISHER, SUBSCRIBER, rule
from relay.http.api import Reply, Request, http
from relay.pipeline import kick, polling
from relay.pipeline.outbox import Outbox, Sent
from relay.pipeline.pools import get_pools
from relay.store import events as events_mod
from relay.store.eventlog import EventLog
from relay.store.eventtypes import validate_data
from relay.store.storage import FANOUT_QUEUE, Storage, get_storage

log = logging.getLogger("relay.publishing")

MAX_BATCH = 100
bp = func.Blueprint()


# ---- events ------------------------------------------------------------------------------------


def publish_events(request: Request) -> Reply:
    settings = get_settings()
    # CloudEvents (structured, batched or binary mode) become the relay's own JSON plus the
    # attributes it has no field for; from there on both are one path.
    incoming = cloudevents_in.read(request, settings)
    if incoming is not None:
        items, extensions, batch = incoming.items, incoming.ext, incoming.batch
    else:
        # The whole body is bounded first (RELAY_MAX_BATCH_BYTES); the per-event limit is below.
        raw = request.json(limit=settings.max_batch_bytes)
        batch = isinstance(raw, list)
        items = raw if batch else [raw]
        if batch and not 1 <= len(items) <= MAX_BATCH:
            raise invalid("body", f"an array must hold 1 to {MAX_BATCH} events")
        extensions = [None] * len(items)
    accepted: list[tuple[EventIn, dict[str, Any] | None]] = []
    errors: list[FieldError] = []
    for index, (item, ext) in enumerate(zip(items, extensions, strict=True)):
        prefix = f"[{index}]." if batch else ""
        if not isinstance(item, dict):
            errors.append(FieldError(prefix.rstrip(".") or "body", "must be a JSON object"))
            continue
        size = events_mod.event_size(item) + (events_mod.event_size(ext) if ext else 0)
        if size > settings.max_event_bytes:
            raise PayloadTooLarge(
                f"{prefix.rstrip('.') or 'the event'} is {size} bytes of JSON; the limit is {settings.max_event_bytes}"
            )
        if "data" not in item:  # `data: null` is valid data; only a missing member is an error
            errors.append(FieldError(prefix + "data", "is required"))
            continue
        try:
            accepted.append((request.model(EventIn, item, prefix), ext))
        except BadRequest as exc:
            errors.extend(exc.errors)
    if errors:
        raise BadRequest("; ".join(f"{e.field}: {e.message}" for e in errors[:5]), errors)
    storage = get_storage("fast")
    validate_data(storage, [e for e, _ in accepted], batch)
    # The default source is stored and sent to every subscriber: never with the caller's `?code=`.
    # In entra mode the publisher's principal is part of each event's identity.
    publisher = request.principal.id if request.principal is not None else None
    records = [
        events_mod.accept(e, source=request.public_link("events"), publisher=publisher, ext=ext) for e, ext in accepted
    ]
    sent = Outbox(storage, settings).publish(records, lease=kick.LEASE)
    duplicate = _claim(storage, settings, sent)
    # Fanned out here and now; the message, durable already, is the fallback (relay.pipeline.kick).
    kick.Kicker(get_storage(), settings).start([s for s, dup in zip(sent, duplicate, strict=True) if not dup])
    answers = [{"id": r.id, **({"duplicate": True} if dup else {})} for r, dup in zip(records, duplicate, strict=True)]
    if batch:
        return Reply(202, {"value": answers})
    return Reply(202, answers[0])


def _claim(storage: Storage, settings: Settings, sent: list[Sent]) -> list[bool]:
    """Which of the enqueued events are duplicates of an event accepted before (CONTRACT
    section 6: the answer says so). Each claims its de-duplication row; a duplicate's message is
    withdrawn (should that fail, its fan-out drops it all the same)."""
    event_log = EventLog(storage)

    def one(item: Sent) -> bool:
        if event_log.claim(item.message.event, item.message_id):
            return False
        try:
            storage.queue(FANOUT_QUEUE).delete_message(item.message_id, item.pop_receipt)
        except Exception as exc:  # noqa: BLE001 - its fan-out finds the row taken and drops it
            log.debug("publish: a duplicate's message stays for fan-out to drop (%s)", type(exc).__name__)
        return True

    claimable = [s for s in sent if not s.message.event.generated]
    if not claimable:
        return [False] * len(sent)
    if len(claimable) == 1:
        found = {claimable[0].message_id: one(claimable[0])}
    else:
        sends = get_pools(settings).sends
        futures = {s.message_id: sends.submit(one, s) for s in claimable}
        found = {key: future.result() for key, future in futures.items()}
    return [found.get(s.message_id, False) for s in sent]


def publish_batch(request: Request) -> Reply:
    """`POST /api/events/batch`: the array form of `POST /api/events` only, so the connector can
    describe it as an operation of its own (Swagger 2.0 has no "object or array")."""
    if not request.body.lstrip()[:1] == b"[":
        raise invalid("body", f"must be a JSON array of 1 to {MAX_BATCH} events")
    return publish_events(request)


# ---- polling trigger ---------------------------------------------------------------------------


def poll_events(request: Request) -> Reply:
    pattern = polling.check_pattern(request.text_param("eventType") or "*")
    text = request.params.get("triggerState")
    state = polling.PollState.verify(text) if text else None
    if state is None:
        if text:
            # Rotated key, lost keys table, tampering or an old unsigned state: a 400 would have
            # the engine retry this very URL for ever, so the flow goes on from now instead.
            log.warning("poll: a triggerState the relay cannot verify; a fresh chain starts from now")
        state = polling.PollState.starting(clock.utcnow())
        location = request.link("events/poll", {"eventType": pattern, "triggerState": state.encode()})
        return Reply(202, None, {"Location": location, "Retry-After": str(polling.IDLE_RETRY_AFTER)})
    result = polling.poll(get_storage("fast"), pattern, state, get_settings().event_retention_days)
    location = request.link("events/poll", {"eventType": pattern, "triggerState": result.state.encode()})
    if not result.events:
        # Nothing matched in this slice; when the slice ended before now, the rest is read at once.
        return Reply(
            202, None, {"Location": location, "Retry-After": "0" if result.more else str(polling.IDLE_RETRY_AFTER)}
        )
    headers = {"Location": location}
    if result.more:
        headers["Retry-After"] = "0"
    return Reply(200, {"value": result.events}, headers)


http(
    bp,
    "events",
    "events",
    {
        "POST": (publish_events, rule(PUBLISHER)),
        # The CloudEvents webhook validation handshake: a publisher's (Event Grid's) question.
        "OPTIONS": (cloudevents_in.handshake, rule(PUBLISHER)),
    },
)
http(bp, "events_batch", "events/batch", {"POST": (publish_batch, rule(PUBLISHER))})
http(bp, "poll", "events/poll", {"GET": (poll_events, rule(SUBSCRIBER))})
