"""The rows of the subscriptions table as typed records, and their (de)serialisation.

Only this module knows the column names, the JSON the patterns are kept as and the text the
times are kept as: the rest of the store, the pipeline and the routes hold `Subscription`,
`IndexRow` and `Caller` records (the table of row kinds is in the package's docstring).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from azure.data.tables import TableEntity

from relay.core import clock
from relay.core.models import ContentMode, SubscriptionRequest, Target
from relay.core.statuses import SubscriptionStatus
from relay.store.subscriptions.keys import (
    CALLER_HEADERS as CALLER_HEADERS,
)
from relay.store.subscriptions.keys import (
    Caller as Caller,
)
from relay.store.subscriptions.keys import (
    _clean as _clean,
)
from relay.store.subscriptions.keys import (
    caller_key as caller_key,
)
from relay.store.subscriptions.keys import (
    error_code as error_code,
)
from relay.store.subscriptions.keys import (
    new_secret as new_secret,
)
from relay.store.subscriptions.keys import (
    owner_partition as owner_partition,
)
from relay.store.subscriptions.keys import (
    url_key as url_key,
)
from relay.store.subscriptions.view import SubscriptionView, view_of

# The states that have fan-out index rows (`Subscription.receives`).
RECEIVING = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAUSED)
ID_RE = re.compile(r"[0-9a-f]{32}")  # always fullmatch: `$` lets a trailing newline in
SUB_PARTITION = "s"
TOMB_PARTITION = "t"
# Kinds of the tombstone partition's pause and resume markers (`Lifecycle.set_paused`).
PAUSE_MARK, RESUME_MARK = "pause", "resume"
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
    "prevSecret",
    "prevUntil",
    "paused",
    "filters",
    "maxPerSecond",
)
# What the repair sweep and the layout backfill read of every subscription row.
STATE_COLUMNS = ["id", "status", "eventTypes", "gen", "ver", "removing", "updatedAt", "createdAt"]


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
    # The data filters as compact JSON (`relay.core.filters.Filters.stored`), None for none: kept
    # as written on the row and its index rows, so fan-out compiles it once and reads nothing more.
    filters: str | None = None
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
    # A rotation with a grace period: the secret it replaced signs beside the new one until then.
    previous_secret: str | None = field(default=None, repr=False)
    previous_secret_expires_at: datetime | None = None
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
        `consistency.Lifecycle.reconcile`). A paused one keeps them, marked `paused`: fan-out still
        finds it and holds its deliveries (relay.pipeline.pause)."""
        return not self.removing and self.status in RECEIVING

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
            filters=request.filters.stored() if request.filters is not None else None,
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
        """The subscription as the API shows it (relay.store.subscriptions.view)."""
        return view_of(self, with_secret=with_secret, full_url=full_url)

    def in_grace(self, now: datetime) -> bool:
        """Whether the secret a rotation replaced still signs beside the new one."""
        return (
            self.previous_secret is not None
            and self.previous_secret_expires_at is not None
            and now < self.previous_secret_expires_at
        )

    def signing(self) -> dict[str, Any]:
        """The `Target` fields that sign a delivery: the secret, and the previous one with the end
        of its grace (the attempt decides, at send time, whether it still signs)."""
        grace = self.in_grace(clock.utcnow())
        return {
            "secret": self.secret,
            "previous": self.previous_secret if grace else None,
            "previousUntil": self.previous_secret_expires_at if grace else None,
        }

    def replay_target(self) -> Target:
        """Where a replay of this subscription delivers: every attempt logged, as retries are."""
        return Target(
            sub=self.id,
            url=self.notification_url,
            once=self.once,
            gen=self.generation,
            attempt=1,
            logged=True,
            mode=self.content_mode,
            **self.signing(),
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
        return not self.removing and self.status in RECEIVING

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
    filters: str | None = None  # as `Subscription.filters`
    content_mode: ContentMode = "json"
    # Within a rotation's grace: the secret it replaced and when it stops signing (the attempt
    # signs with it only until then, relay.pipeline.delivery.attempt).
    previous_secret: str | None = field(default=None, repr=False)
    previous_until: datetime | None = None
    paused: bool = False  # the subscription is paused: fan-out holds its deliveries
    max_per_second: float | None = None
    etag: str | None = None  # as read; None for one made from a subscription

    @classmethod
    def of(cls, sub: Subscription) -> IndexRow:
        """The index row a subscription's current state asks for (the same under each pattern)."""
        grace = sub.in_grace(clock.utcnow())
        return cls(
            sub_id=sub.id,
            url=sub.notification_url,
            secret=sub.secret,
            once=sub.once,
            generation=sub.generation,
            version=sub.version,
            subject_begins_with=sub.subject_begins_with,
            subject_ends_with=sub.subject_ends_with,
            filters=sub.filters,
            content_mode=sub.content_mode,
            previous_secret=sub.previous_secret if grace else None,
            previous_until=sub.previous_secret_expires_at if grace else None,
            paused=sub.status == SubscriptionStatus.PAUSED,
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
            filters=row.get("filters"),
            content_mode=row.get("contentMode") or "json",  # rows from before the field: json
            previous_secret=row.get("prevSecret"),
            previous_until=_time(row.get("prevUntil")),
            paused=bool(row.get("paused")),
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
                "filters": self.filters,
                "contentMode": self.content_mode,
                "prevSecret": self.previous_secret,
                "prevUntil": clock.rfc3339_precise(self.previous_until) if self.previous_until else None,
                "paused": True if self.paused else None,  # written only when paused
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
            previous=self.previous_secret,
            previousUntil=self.previous_until,
            paused=self.paused,
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
    subscription), a secret rotation (queued work signs with the current secret), or a pause or
    resume marker (`paused` True or False; None for the others: queued work holds while paused)."""

    sub_id: str
    generation: int
    rotated: bool
    paused: bool | None = None

    @property
    def removed(self) -> bool:
        return not self.rotated and self.paused is None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Change:
        kind = row.get("kind")
        return cls(
            sub_id=row["id"],
            generation=generation(row),
            rotated=kind == "secret",
            paused=kind == PAUSE_MARK if kind in (PAUSE_MARK, RESUME_MARK) else None,
        )


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
        filters=row.get("filters"),
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
        previous_secret=row.get("previousSecret"),
        previous_secret_expires_at=_time(row.get("previousSecretExpiresAt")),
        max_per_second=_rate(row),
        failing_since=_time(row.get("failingSince") or None),
        last_error=row.get("lastError") or None,
        disabled_by_relay=bool(row.get("disabledByRelay")),
        disabled_at=_time(row.get("disabledAt")),
    )


def to_row(sub: Subscription) -> dict[str, Any]:
    """The subscription's own row (`s` / `i:{id}`), every column; absent values are left out.
    A previous secret whose grace has ended is dropped by the next write: it signs nothing more."""
    grace = sub.in_grace(clock.utcnow())
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
            "filters": sub.filters,
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
            "previousSecret": sub.previous_secret if grace else None,
            "previousSecretExpiresAt": clock.rfc3339_precise(sub.previous_secret_expires_at)
            if grace and sub.previous_secret_expires_at
            else None,
            "maxPerSecond": sub.max_per_second,
            "failingSince": clock.rfc3339(sub.failing_since) if sub.failing_since else None,
            "lastError": sub.last_error,
            "disabledByRelay": sub.disabled_by_relay or None,
            "disabledAt": clock.rfc3339(sub.disabled_at) if sub.disabled_at else None,
        }
    )
