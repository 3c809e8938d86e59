"""Pydantic models at the edges: HTTP request bodies and queue messages.

Validation errors become problem+json naming each field (`relay.http.api.validation_problem`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
)

from relay.core.clock import parse_rfc3339, rfc3339_precise
from relay.core.filters import Filters
from relay.core.limits import MAX_URL_LENGTH
from relay.core.matching import ID_RULE, NAME_RULE, is_event_id, is_name, is_pattern

# RFC 3986 URI-reference: only these characters, and `%` only as the start of an escape.
_URI_REFERENCE = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")
MAX_SOURCE_LENGTH = 1024


def is_uri_reference(text: str) -> bool:
    if not _URI_REFERENCE.fullmatch(text):
        return False
    try:
        urlsplit(text)  # an unbalanced "[" in the authority is not a URI
    except ValueError:
        return False
    return True


# `maxPerSecond` (a subscription's rate limit, relay.pipeline.pacing): its bounds.
MIN_PER_SECOND, MAX_PER_SECOND = 0.1, 1000.0

# The CloudEvents HTTP binding's modes, plus `json`: structured content as plain application/json.
ContentMode = Literal["json", "structured", "binary"]


class _Edge(BaseModel):
    # Unknown fields are ignored, not refused: Power Automate and newer clients may send more.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    # Fields where JSON `null` is a value. Everywhere else `null` is a 400, never "absent":
    # `{"eventType": null}` read as absent would subscribe to every event.
    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.NULLABLE:
            raise ValueError("must not be null; leave the field out to use its default")
        return value


class SubscriptionRequest(_Edge):
    notificationUrl: StrictStr = Field(
        min_length=1, max_length=MAX_URL_LENGTH, description="Callback URL that receives each matching event."
    )
    eventTypes: list[StrictStr] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Event types to receive: names, * for all, or prefixes such as order.*.",
    )
    eventType: StrictStr | None = Field(
        default=None, description="One event type name, a prefix pattern such as order.*, or * for all."
    )
    subjectBeginsWith: StrictStr | None = Field(
        default=None, max_length=1024, description="Deliver only events whose subject begins with this."
    )
    subjectEndsWith: StrictStr | None = Field(
        default=None, max_length=1024, description="Deliver only events whose subject ends with this."
    )
    filters: Filters | None = Field(
        default=None,
        description="Conditions on each event's data (path, op, value), all of which must hold for it to be delivered.",
    )
    description: StrictStr | None = Field(default=None, max_length=1024, description="What this subscription is for.")
    once: StrictBool = Field(default=False, description="Remove the subscription after its first successful delivery.")
    contentMode: ContentMode = Field(
        default="json",
        # No product names and no Markdown: the designer shows this text as it is (certification).
        description="How each event is sent: json (the CloudEvent as application/json, what flows "
        "need), structured (application/cloudevents+json) or binary (attributes as ce-* headers, "
        "the body is data alone).",
    )
    maxPerSecond: Annotated[float, Field(strict=True, ge=MIN_PER_SECOND, le=MAX_PER_SECOND)] | None = Field(
        default=None,
        description="Most deliveries to start in any one second (0.1 to 1000); the rest wait. Unlimited when absent.",
    )

    @field_validator("eventTypes")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for item in value:
                if not is_pattern(item):
                    raise ValueError(f"{item[:140]!r} is not '*', a type name ({NAME_RULE}) or a prefix ending in '.*'")
        return value

    @field_validator("eventType")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None and not is_pattern(value):
            raise ValueError(f"not '*', a type name ({NAME_RULE}) or a prefix ending in '.*'")
        return value

    def patterns(self) -> list[str]:
        if self.eventType is not None:
            return [self.eventType]
        # Order kept, repeats dropped: the index gets one row per distinct pattern.
        return list(dict.fromkeys(self.eventTypes or ["*"]))


class UnsubscribeRequest(_Edge):
    # Optional: a Logic Apps HTTP Webhook cannot send its callback URL when it unsubscribes, and is
    # found by its x-ms-workflow-* headers instead.
    notificationUrl: StrictStr | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)


class EventIn(_Edge):
    NULLABLE = frozenset({"data"})
    type: StrictStr = Field(description="The event type.")
    data: Any = Field(description="The event's payload, any JSON.")
    id: StrictStr | None = Field(default=None, description="Unique id; generated when absent.")
    source: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SOURCE_LENGTH,
        description="URI-reference of the system the event comes from; the relay's events URL when absent.",
    )
    subject: StrictStr | None = Field(
        default=None, min_length=1, max_length=1024, description="What the event is about."
    )
    time: StrictStr | None = Field(default=None, max_length=64, description="When it happened (RFC 3339).")

    @field_validator("type")
    @classmethod
    def _name(cls, value: str) -> str:
        if not is_name(value):
            raise ValueError(f"must be {NAME_RULE}")
        return value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not is_event_id(value):
            raise ValueError(f"must be {ID_RULE}")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and not is_uri_reference(value):
            raise ValueError(
                "must be a URI-reference (RFC 3986): no spaces or control characters, `%` only as an escape"
            )
        return value

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rfc3339(value)
        return value


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string")
    return parse_rfc3339(value)


# An RFC 3339 instant, read once at the edge into an aware UTC datetime, so the code behind it
# compares times rather than re-parsing text. On the wire (and in the connector) still a string.
Instant = Annotated[datetime, BeforeValidator(_instant), WithJsonSchema({"type": "string"})]


class ReplayRequest(_Edge):
    since: Instant = Field(description="Replay events from this time on (RFC 3339).")
    until: Instant | None = Field(
        default=None, description="Replay events up to this time (RFC 3339); now when absent."
    )
    status: Literal["failed", "all"] = Field(
        default="failed", description="Which deliveries to replay: failed ones only, or all matching events."
    )
    eventType: StrictStr | None = Field(
        default=None, description="Replay only events of this type: a name, a prefix pattern such as order.*, or *."
    )

    @field_validator("eventType")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None and not is_pattern(value):
            raise ValueError(f"not '*', a type name ({NAME_RULE}) or a prefix ending in '.*'")
        return value


class TestRequest(_Edge):
    __test__ = False  # not a pytest class
    type: StrictStr | None = Field(
        default=None, description="One of the subscription's event types; relay.test when absent."
    )
    data: Any = Field(default=None, description="The test event's data; an example when absent.")
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"data"})


class EventTypeRequest(_Edge):
    description: StrictStr | None = Field(default=None, max_length=1024, description="What events of this type mean.")
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="JSON Schema that the data of events of this type must match."
    )


# ---- queue messages -------------------------------------------------------------------------


# An instant inside the relay's own messages: an aware datetime in the code, RFC 3339 to the
# microsecond on the wire (what earlier versions wrote, so messages already queued still parse).
StoredInstant = Annotated[datetime, BeforeValidator(_instant), PlainSerializer(rfc3339_precise, return_type=str)]


class EventRecord(BaseModel):
    """An accepted event as it travels: the data inline, or a blob name when it is large."""

    model_config = ConfigDict(extra="ignore")
    id: str
    type: str
    source: str
    time: str
    subject: str | None = None
    data: Any = None
    blob: str | None = None
    acceptedAt: StoredInstant
    # The relay made the id up: no other publish can carry it, so there is nothing to de-duplicate.
    generated: bool = False
    # Entra mode: the publishing principal's owner key. Part of the event's identity for
    # de-duplication, so one publisher cannot claim another's (source, type, id) in advance.
    publisher: str | None = None
    # CloudEvents attributes the relay has no field for, as a producer sent them (relay.http.cloudevents_in):
    # `datacontenttype`, `dataschema` and extensions; delivered in every content mode.
    ext: dict[str, Any] | None = None

    @model_serializer(mode="wrap")
    def _without_unset_publisher(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Keys mode writes messages exactly as before the field existed (older instances read them).
        data = handler(self)
        if isinstance(data, dict):
            for name in ("publisher", "ext"):
                if getattr(self, name) is None:
                    data.pop(name, None)
        return data


class FanoutMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    v: Literal[1] = 1
    event: EventRecord
    # The id of the first queue message of this publish, kept when an outage re-enqueues it, so
    # fan-out still recognises its own event rather than taking it for a duplicate publish.
    origin: str | None = None
    # Sent for the publishing process to fan out itself (relay.pipeline.kick): when the queue trigger gets
    # it, that kick did not finish, so the event may be logged already.
    kicked: bool = False


AttemptKind = Literal["delivery", "replay", "resend", "test"]


class Target(BaseModel):
    """One subscriber of one delivery work item, with what is needed to sign and send."""

    model_config = ConfigDict(extra="ignore")
    sub: str
    url: str
    secret: str
    once: bool = False
    gen: int = 0
    attempt: int = 1  # the attempt this message will make
    # A per-subscription log row exists (retries, replays): success updates it rather than
    # going into the batch's receipt.
    logged: bool = False
    # Times this attempt was handed back unsent because its origin had no free slot (not counted
    # as attempts; bounded by delivery.MAX_DEFERRALS).
    deferred: int = 0
    mode: ContentMode = "json"  # the subscription's contentMode
    # What started this chain of attempts, as the delivery record marks its first attempt (the
    # later ones are `retry`): a live fan-out, a replay, a resend or a test delivery.
    kind: AttemptKind = "delivery"
    # Read from a paused subscription's index row at fan-out: held, not attempted (relay.pipeline.pause).
    # Never sent in a message: queued work learns of a pause from the tombstone partition.
    paused: bool = Field(default=False, exclude=True)
    # A rotation with a grace period: the secret it replaced, which also signs until `previousUntil`
    # (decided at each attempt, so a retry sent after the grace carries the new signature only).
    previous: str | None = None
    previousUntil: StoredInstant | None = None
    # The subscription's maxPerSecond (None: unlimited), and the start time (epoch seconds) this
    # attempt has reserved under it while it waits (relay.store.pacing).
    rate: float | None = None
    slot: float | None = None

    @model_serializer(mode="wrap")
    def _without_unset_optionals(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Outside a grace, and for an unlimited subscription, a target is written as before the
        # fields existed: smaller work items.
        data = handler(self)
        if isinstance(data, dict):
            if self.previous is None:
                data.pop("previous", None)
                data.pop("previousUntil", None)
            for name in ("rate", "slot"):
                if data.get(name) is None:
                    data.pop(name, None)
        return data


class RotateRequest(_Edge):
    graceSeconds: int = Field(
        default=86_400,
        ge=0,
        le=604_800,
        strict=True,
        description="Seconds the previous secret keeps signing beside the new one (0 to 604800; "
        "0 switches at once, for a leaked secret).",
    )


class DeliveryMessage(BaseModel):
    """Deliveries of one event to up to a hundred subscribers, or a retry for one."""

    model_config = ConfigDict(extra="ignore")
    v: Literal[1] = 1
    eventId: str
    eventType: str
    log: tuple[str, str]  # the event log row holding the event
    since: str  # time key before the subscriptions were read: deletions after it are honoured
    targets: list[Target] = Field(min_length=1)


class ReplayMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    v: Literal[1] = 1
    operationId: str
