"""The rows of the subscriptions table as typed records, and their (de)serialisation.

Only this module knows the column names, the JSON the patterns are kept as and the text the
times are kept as: the rest of the store, the pipeline and the routes hold `Subscription`,
`IndexRow` and `Caller` records (the table of row kinds is in the package's docstring).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NotRequired, TypedDict, cast

from azure.data.tables import TableEntity, TableTransactionError

from relay.core import clock
from relay.core.models import ContentMode, SubscriptionRequest, Target
from relay.core.redaction import mask_url
from relay.core.statuses import SubscriptionStatus

ID_RE = re.compile(r"[0-9a-f]{32}")  # always fullmatch: `$` lets a trailing newline in
SUB_PARTITION = "s"
TOMB_PARTITION = "t"
PRESENCE_PARTITION = "p"
LAYOUT_ROW = ""  # in the presence partition; no pattern is empty
LAYOUT_COMPLETE, LAYOUT_PENDING = "complete", "pending"
# Reading only these spares parsing the rest (Timestamp, etag) of every index row.
INDEX_COLUMNS = (
    "RowKey",
    "url",
    "secret",
    "once",
    "gen",
    "ver",
    "subjectBeginsWith",
    "subjectEndsWith",
    "contentMode",
    "maxPerSecond",
)
# What the repair sweep and the layout backfill read of every subscription row.
STATE_COLUMNS = ["id", "status", "eventTypes", "gen", "ver", "removing", "updatedAt", "createdAt"]


class SubscriptionView(TypedDict):
    """A subscription as the API answers it (`Subscription.view`)."""

    id: str
    notificationUrl: str
    eventTypes: list[str]
    subjectBeginsWith: NotRequired[str]
    subjectEndsWith: NotRequired[str]
    description: NotRequired[str]
    once: bool
    contentMode: ContentMode
    status: SubscriptionStatus
    disabledReason: NotRequired[str]
    disabledBy: NotRequired[str]
    disabledAt: NotRequired[str]
    maxPerSecond: NotRequired[float]
    createdAt: str
    secret: NotRequired[str]


@dataclass(frozen=True, kw_only=True)
class Caller:
    """The Logic Apps caller a subscribe or an unsubscribe came from (`CALLER_HEADERS`): ids and
    names, not secrets. An HTTP Webhook's unsubscribe, which cannot send its callback URL, is
    matched to its subscription by these."""

    workflow_id: str | None = None
    workflow_operation_name: str | None = None
    client_tracking_id: str | None = None

    @property
    def identifies(self) -> bool:
        """Whether an unsubscribe can find its subscriptions by this caller alone."""
        return bool((self.workflow_id and self.workflow_operation_name) or self.client_tracking_id)


# The Logic Apps headers that identify a subscriber, and the `Caller` fields they are kept in.
CALLER_HEADERS = {
    "x-ms-workflow-id": "workflow_id",
    "x-ms-workflow-operation-name": "workflow_operation_name",
    "x-ms-client-tracking-id": "client_tracking_id",
}


@dataclass(frozen=True, kw_only=True)
class Subscription:
    """One subscription, as the store reads and writes it; only this module turns rows into
    these and back. Its callback URL and secret are credentials (a Power Automate callback's
    `sig` starts the flow), so neither is part of the repr: a record can be logged."""

    id: str
    notification_url: str = field(repr=False)
    secret: str = field(repr=False)
    event_types: tuple[str, ...]  # the patterns: names, prefixes (`order.*`) or `*`
    created_at: datetime
    updated_at: datetime | None = None
    subject_begins_with: str | None = None
    subject_ends_with: str | None = None
    description: str | None = None
    once: bool = False
    content_mode: ContentMode = "json"
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE
    disabled_reason: str | None = None
    # Raised when a disabled subscription is re-activated, so tombstones of the disabled one no
    # longer stop its deliveries (index rows, tombstones and queued targets carry it too).
    generation: int = 0
    owner: str | None = None  # entra mode: the principal id that manages it
    # The Logic Apps caller it was subscribed by, for a body-less unsubscribe.
    workflow_id: str | None = None
    workflow_operation_name: str | None = None
    client_tracking_id: str | None = None
    # Raised by every write of the row (index rows carry the version they were derived from, so
    # fan-out can tell one written from an older state of the row).
    version: int = 0
    # Raised by every subscribe of its URL: the `Location` of a subscribe names it, and a DELETE
    # of an older one (a flow edited subscribe-first) removes nothing.
    registration: int = 0
    # Set by a DELETE before it removes the index rows, cleared by nothing: the row is deleted
    # last. Until then the subscription is still shown (its index rows may still be read).
    removing: bool = False
    # Most deliveries to start in any one second (relay.pipeline.pacing); None: unlimited.
    max_per_second: float | None = None
    # Since when every attempt has failed (None: the last one succeeded), and the last error:
    # written only on a change from success to failure and back (relay.pipeline.health).
    failing_since: datetime | None = None
    last_error: str | None = None
    # Set when the relay itself disabled it (`RELAY_DISABLE_AFTER` of failures): its pending
    # work is held, not failed, and is delivered once it is re-activated.
    disabled_by_relay: bool = False
    disabled_at: datetime | None = None

    @property
    def receives(self) -> bool:
        """Whether this state has fan-out index rows: the one place that decides it (see
        `consistency.Lifecycle.reconcile`). A further state (`paused`) is decided here."""
        return not self.removing and self.status == SubscriptionStatus.ACTIVE

    @property
    def caller(self) -> Caller:
        return Caller(
            workflow_id=self.workflow_id,
            workflow_operation_name=self.workflow_operation_name,
            client_tracking_id=self.client_tracking_id,
        )

    def requested(self, request: SubscriptionRequest, caller: Caller | None, now: datetime) -> Subscription:
        """This subscription as a subscribe of its URL with `request` leaves it: active again,
        with the request's filters and the caller it came from (where it named one)."""
        changed = replace(
            self,
            event_types=tuple(request.patterns()),
            subject_begins_with=request.subjectBeginsWith,
            subject_ends_with=request.subjectEndsWith,
            description=request.description,
            once=request.once,
            content_mode=request.contentMode,
            max_per_second=request.maxPerSecond,
            status=SubscriptionStatus.ACTIVE,
            disabled_reason=None,
            disabled_by_relay=False,
            disabled_at=None,
            failing_since=None if self.status == SubscriptionStatus.DISABLED else self.failing_since,
            updated_at=now,
        )
        if caller is not None:
            changed = replace(
                changed,
                workflow_id=caller.workflow_id or changed.workflow_id,
                workflow_operation_name=caller.workflow_operation_name or changed.workflow_operation_name,
                client_tracking_id=caller.client_tracking_id or changed.client_tracking_id,
            )
        return changed

    def view(self, *, with_secret: bool = False, full_url: bool = False) -> SubscriptionView:
        """The subscription as the API shows it. The secret only to the call that created it (or
        rotated it); the callback URL whole only to the call that created it, every query value
        masked afterwards: a Power Automate callback's `sig` is enough to start the flow."""
        shown: dict[str, Any] = {
            "id": self.id,
            "notificationUrl": self.notification_url if full_url else mask_url(self.notification_url),
            "eventTypes": list(self.event_types),
        }
        for name, value in (
            ("subjectBeginsWith", self.subject_begins_with),
            ("subjectEndsWith", self.subject_ends_with),
            ("description", self.description),
        ):
            if value is not None:
                shown[name] = value
        shown["once"] = self.once
        shown["contentMode"] = self.content_mode
        shown["status"] = self.status
        if self.status == SubscriptionStatus.DISABLED and self.disabled_reason:
            shown["disabledReason"] = self.disabled_reason
        if self.status == SubscriptionStatus.DISABLED and self.disabled_by_relay:
            shown["disabledBy"] = "relay"
        if self.status == SubscriptionStatus.DISABLED and self.disabled_at is not None:
            shown["disabledAt"] = clock.rfc3339(self.disabled_at)
        if self.max_per_second is not None:
            shown["maxPerSecond"] = self.max_per_second
        shown["createdAt"] = clock.rfc3339(self.created_at)
        if with_secret:
            shown["secret"] = self.secret
        return cast(SubscriptionView, shown)  # built in the order the answers always had

    def replay_target(self) -> Target:
        """Where a replay of this subscription delivers: every attempt logged, as retries are."""
        return Target(
            sub=self.id,
            url=self.notification_url,
            secret=self.secret,
            once=self.once,
            gen=self.generation,
            attempt=1,
            logged=True,
            mode=self.content_mode,
            rate=self.max_per_second,
        )


@dataclass(frozen=True, kw_only=True)
class RowState:
    """What the sweeps read of a subscription row (`STATE_COLUMNS`): its state, not its URL."""

    id: str
    status: str
    event_types: tuple[str, ...]
    generation: int
    version: int
    removing: bool
    changed_at: datetime | None

    @property
    def receives(self) -> bool:
        return not self.removing and self.status == SubscriptionStatus.ACTIVE

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> RowState:
        return cls(
            id=str(row.get("id") or ""),
            status=row.get("status") or SubscriptionStatus.ACTIVE,
            event_types=tuple(json.loads(row.get("eventTypes") or "[]")),
            generation=generation(row),
            version=int(row.get("ver") or 0),
            removing=bool(row.get("removing")),
            changed_at=_time(row.get("updatedAt")) or _time(row.get("createdAt")),
        )


@dataclass(frozen=True, kw_only=True)
class IndexRow:
    """A fan-out index row (`x:{pattern}` / `{id}`): all a delivery needs, so fan-out reads only
    the rows of the patterns an event matches. Its URL and secret are credentials: not in the repr."""

    sub_id: str
    url: str = field(repr=False)
    secret: str = field(repr=False)
    once: bool = False
    generation: int = 0
    version: int = 0
    subject_begins_with: str | None = None
    subject_ends_with: str | None = None
    content_mode: ContentMode = "json"
    max_per_second: float | None = None
    etag: str | None = None  # as read; None for one made from a subscription

    @classmethod
    def of(cls, sub: Subscription) -> IndexRow:
        """The index row a subscription's current state asks for (the same under each pattern)."""
        return cls(
            sub_id=sub.id,
            url=sub.notification_url,
            secret=sub.secret,
            once=sub.once,
            generation=sub.generation,
            version=sub.version,
            subject_begins_with=sub.subject_begins_with,
            subject_ends_with=sub.subject_ends_with,
            content_mode=sub.content_mode,
            max_per_second=sub.max_per_second,
        )

    @classmethod
    def read(cls, row: TableEntity) -> IndexRow:
        return cls(
            sub_id=row["RowKey"],
            url=row["url"],
            secret=row["secret"],
            once=bool(row.get("once")),
            generation=generation(row),
            version=int(row.get("ver") or 0),
            subject_begins_with=row.get("subjectBeginsWith"),
            subject_ends_with=row.get("subjectEndsWith"),
            content_mode=row.get("contentMode") or "json",  # rows from before the field: json
            max_per_second=_rate(row),
            etag=etag(row),
        )

    def entity(self, pattern: str) -> dict[str, Any]:
        """The row to write under one pattern."""
        return _clean(
            {
                "PartitionKey": f"x:{pattern}",
                "RowKey": self.sub_id,
                "url": self.url,
                "secret": self.secret,
                "once": self.once,
                "gen": self.generation,
                "ver": self.version,
                "subjectBeginsWith": self.subject_begins_with,
                "subjectEndsWith": self.subject_ends_with,
                "contentMode": self.content_mode,
                "maxPerSecond": self.max_per_second,
            }
        )

    def target(self) -> Target:
        return Target(
            sub=self.sub_id,
            url=self.url,
            secret=self.secret,
            once=self.once,
            gen=self.generation,
            mode=self.content_mode,
            rate=self.max_per_second,
        )


@dataclass(frozen=True, kw_only=True)
class IndexedAt:
    """Where an index row is and what it was derived from: what the repair sweep reads of it."""

    sub_id: str
    pattern: str
    generation: int
    version: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> IndexedAt:
        return cls(
            sub_id=row["RowKey"],
            pattern=row["PartitionKey"][2:],
            generation=generation(row),
            version=int(row.get("ver") or 0),
        )


@dataclass(frozen=True, kw_only=True)
class Change:
    """A tombstone-partition row: a removal (queued work planned before it skips the
    subscription) or a secret rotation (queued work signs with the current secret)."""

    sub_id: str
    generation: int
    rotated: bool

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Change:
        return cls(sub_id=row["id"], generation=generation(row), rotated=row.get("kind") == "secret")


def generation(row: Mapping[str, Any]) -> int:
    """A row's generation (subscription, index and tombstone rows carry it); 0 where unset."""
    return int(row.get("gen") or 0)


def etag(raw: TableEntity | Mapping[str, Any] | None) -> str | None:
    """The ETag a row was read with (None for no row): what conditional writes compare."""
    if raw is None:
        return None
    metadata = getattr(raw, "metadata", None) or {}
    found = metadata.get("etag")
    return found if isinstance(found, str) else None


def _rate(row: Mapping[str, Any]) -> float | None:
    value = row.get("maxPerSecond")
    return float(value) if value is not None else None


def _time(text: str | None) -> datetime | None:
    return clock.parse_rfc3339(text) if text else None


def now() -> datetime:
    """Now, to the millisecond a row keeps: a record just written equals the same one read back."""
    moment = clock.utcnow()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def from_row(row: Mapping[str, Any]) -> Subscription:
    return Subscription(
        id=row["id"],
        notification_url=row["notificationUrl"],
        secret=row["secret"],
        event_types=tuple(json.loads(row.get("eventTypes") or "[]")),
        created_at=clock.parse_rfc3339(row["createdAt"]),
        updated_at=_time(row.get("updatedAt")),
        subject_begins_with=row.get("subjectBeginsWith"),
        subject_ends_with=row.get("subjectEndsWith"),
        description=row.get("description"),
        once=bool(row.get("once")),
        content_mode=row.get("contentMode") or "json",  # rows from before the field: json
        status=SubscriptionStatus(row.get("status") or SubscriptionStatus.ACTIVE),
        disabled_reason=row.get("disabledReason"),
        generation=generation(row),
        owner=row.get("owner"),
        workflow_id=row.get("workflowId"),
        workflow_operation_name=row.get("workflowOperationName"),
        client_tracking_id=row.get("clientTrackingId"),
        version=int(row.get("ver") or 0),
        registration=int(row.get("reg") or 0),
        removing=bool(row.get("removing")),
        max_per_second=_rate(row),
        failing_since=_time(row.get("failingSince") or None),
        last_error=row.get("lastError") or None,
        disabled_by_relay=bool(row.get("disabledByRelay")),
        disabled_at=_time(row.get("disabledAt")),
    )


def to_row(sub: Subscription) -> dict[str, Any]:
    """The subscription's own row (`s` / `i:{id}`), every column; absent values are left out."""
    return _clean(
        {
            "PartitionKey": SUB_PARTITION,
            "RowKey": f"i:{sub.id}",
            "id": sub.id,
            "notificationUrl": sub.notification_url,
            "secret": sub.secret,
            "eventTypes": json.dumps(list(sub.event_types)),
            "createdAt": clock.rfc3339(sub.created_at),
            "updatedAt": clock.rfc3339(sub.updated_at) if sub.updated_at else None,
            "subjectBeginsWith": sub.subject_begins_with,
            "subjectEndsWith": sub.subject_ends_with,
            "description": sub.description,
            "once": sub.once,
            "contentMode": sub.content_mode,
            "status": sub.status,
            "disabledReason": sub.disabled_reason,
            "gen": sub.generation,
            "owner": sub.owner,
            "workflowId": sub.workflow_id,
            "workflowOperationName": sub.workflow_operation_name,
            "clientTrackingId": sub.client_tracking_id,
            "ver": sub.version,
            "reg": sub.registration,
            "removing": sub.removing or None,
            "maxPerSecond": sub.max_per_second,
            "failingSince": clock.rfc3339(sub.failing_since) if sub.failing_since else None,
            "lastError": sub.last_error,
            "disabledByRelay": sub.disabled_by_relay or None,
            "disabledAt": clock.rfc3339(sub.disabled_at) if sub.disabled_at else None,
        }
    )


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def url_key(url: str) -> str:
    return "u:" + hashlib.sha256(url.encode("utf-8")).hexdigest()


def owner_partition(owner: str) -> str:
    # Owner ids are Entra object ids, or `sub` values that may hold characters a key cannot.
    return "o:" + hashlib.sha256(owner.encode("utf-8")).hexdigest()[:40]


def caller_key(*values: str) -> str:
    return hashlib.sha256("\n".join(values).encode("utf-8")).hexdigest()


def error_code(exc: TableTransactionError) -> str | None:
    """The storage error code of a failed transaction: the tables SDK sets it on the error while
    decoding the answer, but the class does not declare it."""
    code = getattr(exc, "error_code", None)
    return code if isinstance(code, str) else None


def _clean(entity: dict[str, Any]) -> dict[str, Any]:
    """Tables cannot store None; an absent property reads back as absent."""
    return {k: v for k, v in entity.items() if v is not None}
