"""Subscriptions in Azure Table Storage.

One table, several kinds of row, keyed for the access patterns:

| partition       | row key        | what                                                     |
|-----------------|----------------|----------------------------------------------------------|
| `s`             | `i:{id}`       | the subscription (point read by id, listing)             |
| `s`             | `u:{sha256}`   | URL -> id, written in the same transaction as the above  |
| `s`             | `d:{id}`       | removal record: the patterns a removed subscription had, |
|                 |                | so index rows left behind can be found without the row   |
| `x:{pattern}`   | `{id}`         | fan-out index: one row per pattern, carrying all a       |
|                 |                | delivery needs, so fan-out reads only matching rows      |
| `t`             | `{time}_{id}`  | tombstone: queued work skips subscriptions removed after |
|                 |                | it read the index                                        |
| `w:{sha256}`    | `{id}`         | Logic Apps caller (workflow id + operation name) -> id   |
| `k:{sha256}`    | `{id}`         | Logic Apps client tracking id -> id                      |
| `o:{hash}`      | `{id}`         | owner index (entra mode): one partition per owner, so    |
|                 |                | listing one's own costs O(own), not a scan of everyone's |
| `p`             | `{pattern}`    | presence: the pattern has (or had) fan-out index rows    |
| `p`             | (empty)        | the layout marker: whether the presence rows are whole   |

Presence rows let fan-out read only the index partitions that hold anything: one query of the
`p` partition for the patterns an event type matches (its RowKeys or'ed: within one partition,
at worst a read of the distinct patterns ever subscribed), then one query per present pattern.
A presence row is written before the first index row of its pattern and never removed (an
unsubscribe leaves it: a stale one costs one empty query, a missing one would lose deliveries),
so a reader never skips a pattern that has index rows. Fan-out trusts them only once the layout
marker says they are whole: a store created by this version is whole from its first
subscription on; a store that held subscriptions before presence rows existed is marked
`pending` by the first write of this version and made whole by the hourly sweep
(`complete_layout`) once every instance of the older version, which writes index rows without
presence rows, is certainly gone. Until then fan-out reads every candidate partition.

The caller rows let an HTTP Webhook unsubscribe, which cannot send its callback URL, find its
subscription by the `x-ms-workflow-*` headers recorded at subscribe. They are hints: a reader
checks the subscription still records those values, and drops rows that outlived it.

Subscribe, re-subscribe, rotate, disable, activate and delete are one state machine over the
subscription row, and the index rows are derived from it (docs/subscriptions-lifecycle.md):

- Every change of the row is a conditional write on the ETag it was read with (a change that
  lost a race reads again) and raises the row's `ver`; a subscribe also raises its registration.
- After its change, each caller reconciles (`_reconcile`): it writes the index rows the row's
  state asks for (`Subscription.receives`), removes the ones it no longer asks for, and reads the
  row again, starting over if it changed. Once every caller has returned, the index is what the
  row says, whatever ran concurrently.
- A DELETE first marks the row `removing` (so every concurrent caller's re-read sees it), then
  writes a tombstone, removes the index rows and finally the row. A subscription is present until
  then and absent after: a 404 is never followed by a delivery of an event published after it.
- Fan-out checks each index row version (ETag) once per process against its subscription's row
  (`_checked`) and skips and removes one whose subscription is gone, receives nothing, is of
  another generation or no longer has the pattern: what an older version or a caller that died
  between writes left behind. The hourly sweep (`repair_index`) checks the whole index.

The owner index is written before the subscription on create and removed after it on delete:
a row whose subscription is gone (or now someone else's) is skipped by a reader, while a
subscription is never missing from its owner's list. The fan-out index knows nothing of owners:
ownership decides who may manage a subscription, not which events it receives.

Rows stay here: the store hands out frozen `Subscription` records (and fan-out `Target`s read
from the index), and takes changes as their fields. Only this module knows the column names,
the JSON the patterns are kept as and the text the times are kept as.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import logging
import random
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.paging import PageIterator
from azure.data.tables import TableClient, TableEntity, TableTransactionError, UpdateMode

from relay.core import clock, runtime
from relay.core.errors import Contended, NotFound
from relay.core.matching import patterns_for_type, subject_matches, type_matches
from relay.core.models import ContentMode, SubscriptionRequest, Target
from relay.core.redaction import mask_url
from relay.core.statuses import SubscriptionStatus
from relay.store.paging import decode_token, encode_token
from relay.store.storage import SUBSCRIPTIONS_TABLE, Storage, delete_rows

log = logging.getLogger("relay.subscriptions")
ID_RE = re.compile(r"[0-9a-f]{32}")  # always fullmatch: `$` lets a trailing newline in
SUB_PARTITION = "s"
TOMB_PARTITION = "t"
# Clocks of different instances disagree a little; tombstones this much older than a reader's
# index read still count, at the price of reading a few more rows.
CLOCK_SKEW = timedelta(minutes=5)
# Kinds of the tombstone partition's pause and resume markers (`SubscriptionStore.set_paused`).
PAUSE_MARK, RESUME_MARK = "pause", "resume"
PRESENCE_PARTITION = "p"
# How often a change reads the row again after another change got in first.
TRIES = 5


def _tries(count: int = TRIES) -> Iterator[int]:
    """The attempts of a conditional write that may lose to a concurrent one: between two, a
    jittered pause that grows, so a burst of writers on one row spreads out instead of colliding
    again in step; the caller raises `Contended` (a 503 a client retries) once they are spent."""
    for attempt in range(count):
        if attempt:
            time.sleep(random.uniform(0, 0.02 * 2**attempt))
        yield attempt


# A `removing` row older than this belongs to a DELETE that died mid-way: the sweep finishes it.
STUCK_REMOVAL = timedelta(minutes=10)
LAYOUT_ROW = ""  # in the presence partition; no pattern is empty
LAYOUT_COMPLETE, LAYOUT_PENDING = "complete", "pending"
# A store that held subscriptions before presence rows existed is made whole this long after an
# instance of this version first wrote to it: a deploy has replaced every older instance by then.
BACKFILL_AFTER = timedelta(hours=1)
# Tables (by URL) whose layout marker this process has seen or written: the marker is never
# removed, so it is read once per process, not once per subscribe.
_layouts_seen: set[str] = set()
_layouts_lock = threading.Lock()
# Reading only these spares parsing the rest (Timestamp, etag) of every index row.
_INDEX_FIELDS = (
    "RowKey",
    "url",
    "secret",
    "once",
    "gen",
    "ver",
    "subjectBeginsWith",
    "subjectEndsWith",
    "contentMode",
    "paused",
)


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
    # The Logic Apps caller it was subscribed by (`CALLER_HEADERS`), for a body-less unsubscribe.
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

    @property
    def receives(self) -> bool:
        """Whether this state has fan-out index rows: the one place that decides it (see
        `SubscriptionStore._reconcile`). A paused one keeps them, marked `paused`: fan-out still
        finds it and holds its deliveries (relay.pipeline.pause)."""
        return not self.removing and self.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAUSED)

    def view(self, *, with_secret: bool = False, full_url: bool = False) -> dict[str, Any]:
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
        shown["createdAt"] = clock.rfc3339(self.created_at)
        if with_secret:
            shown["secret"] = self.secret
        return shown

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
        )


def _generation(row: Mapping[str, Any]) -> int:
    """A row's generation (subscription, index and tombstone rows carry it); 0 where unset."""
    return int(row.get("gen") or 0)


def _etag(raw: TableEntity | Mapping[str, Any] | None) -> str | None:
    """The ETag a row was read with (None for no row): what conditional writes compare."""
    if raw is None:
        return None
    metadata = getattr(raw, "metadata", None) or {}
    etag = metadata.get("etag")
    return etag if isinstance(etag, str) else None


def _time(text: str | None) -> datetime | None:
    return clock.parse_rfc3339(text) if text else None


def _now() -> datetime:
    """Now, to the millisecond a row keeps: a record just written equals the same one read back."""
    moment = clock.utcnow()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _from_row(row: Mapping[str, Any]) -> Subscription:
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
        generation=_generation(row),
        owner=row.get("owner"),
        workflow_id=row.get("workflowId"),
        workflow_operation_name=row.get("workflowOperationName"),
        client_tracking_id=row.get("clientTrackingId"),
        version=int(row.get("ver") or 0),
        registration=int(row.get("reg") or 0),
        removing=bool(row.get("removing")),
    )


def _row(sub: Subscription) -> dict[str, Any]:
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
        }
    )


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def url_key(url: str) -> str:
    return "u:" + hashlib.sha256(url.encode("utf-8")).hexdigest()


def owner_partition(owner: str) -> str:
    # Owner ids are Entra object ids, or `sub` values that may hold characters a key cannot.
    return "o:" + hashlib.sha256(owner.encode("utf-8")).hexdigest()[:40]


# The Logic Apps headers that identify a subscriber (not secrets: ids and names), and the
# `Subscription` fields they are kept in.
CALLER_HEADERS = {
    "x-ms-workflow-id": "workflow_id",
    "x-ms-workflow-operation-name": "workflow_operation_name",
    "x-ms-client-tracking-id": "client_tracking_id",
}


def _caller_key(*values: str) -> str:
    return hashlib.sha256("\n".join(values).encode("utf-8")).hexdigest()


class SubscriptionStore:
    def __init__(self, storage: Storage) -> None:
        self._table: TableClient = storage.table(SUBSCRIPTIONS_TABLE)

    # ---- create / update ----------------------------------------------------------------

    def subscribe(
        self,
        request: SubscriptionRequest,
        caller: Mapping[str, str] | None = None,
        owner: str | None = None,
        scope: str | None = None,
    ) -> tuple[Subscription, bool]:
        """Create, or update the existing subscription of this URL; returns (subscription, created).
        Either way the subscription's registration is new (`Subscription.registration`).

        `caller`: the Logic Apps identification (`CALLER_HEADERS` fields) the subscribe came with.
        `owner` owns a subscription this creates (entra mode). With `scope` (a subscriber, not an
        admin), a URL held by another owner is taken over: whoever presents the whole callback
        URL, its `sig` included, holds what starts the flow, so the subscription becomes theirs."""
        url = request.notificationUrl
        now = _now()
        changes: dict[str, Any] = {
            "event_types": tuple(request.patterns()),
            "subject_begins_with": request.subjectBeginsWith,
            "subject_ends_with": request.subjectEndsWith,
            "description": request.description,
            "once": request.once,
            "content_mode": request.contentMode,
            "status": SubscriptionStatus.ACTIVE,
            "disabled_reason": None,
            "updated_at": now,
            **{name: value for name, value in (caller or {}).items() if name in CALLER_HEADERS.values()},
        }
        # Before the subscription row: a store's first subscribe must find the store empty.
        self._ensure_layout()
        for _ in _tries():
            found = self._create_or_update(url, changes, now, owner, scope)
            if found is not None:
                self._write_caller(found[0])
                return found
        raise Contended("the subscription kept changing under this subscribe; try again")

    def _create_or_update(
        self, url: str, changes: dict[str, Any], now: datetime, owner: str | None, scope: str | None
    ) -> tuple[Subscription, bool] | None:
        """One try; None when a concurrent change (a DELETE of the same URL) got in between."""
        existing_id = self._id_for_url(url)
        raw = self._get_raw(existing_id) if existing_id is not None else None
        if raw is None:
            # No subscription, or a URL row that outlived its own (a crash between the writes of
            # an older version): a new one, under the id the URL row names if there is one.
            sub_id = existing_id or uuid.uuid4().hex
            entity = Subscription(
                id=sub_id,
                notification_url=url,
                secret=new_secret(),
                created_at=now,
                owner=owner,
                version=1,
                registration=1,
                **changes,
            )
            link = {"PartitionKey": SUB_PARTITION, "RowKey": url_key(url), "id": sub_id}
            self._write_owner(sub_id, owner)
            try:
                self._table.submit_transaction(
                    [
                        ("create", _row(entity)),
                        ("update", link, {"mode": UpdateMode.REPLACE}) if existing_id is not None else ("create", link),
                    ]
                )
            except TableTransactionError as exc:
                if _error_code(exc) not in ("EntityAlreadyExists", "ResourceNotFound"):
                    raise
                if existing_id is None:
                    self._delete_owner(sub_id, owner)
                return None  # someone subscribed (or removed) the same URL a moment ago: look again
            self._reconcile(sub_id, ())
            return entity, True
        current = _from_row(raw)
        if current.removing:
            self._finish_delete(raw)  # a DELETE is under way: it ends first, then this subscribes anew
            return None
        entity = replace(current, **changes, registration=current.registration + 1)
        if current.status == SubscriptionStatus.DISABLED:
            # A new generation, so tombstones of the disabled one no longer stop its deliveries.
            entity = replace(entity, generation=current.generation + 1)
        elif current.status == SubscriptionStatus.PAUSED:
            entity = replace(entity, status=SubscriptionStatus.PAUSED)  # an operator's pause outlives a re-subscribe
        taken_over = scope is not None and current.owner != scope
        if taken_over:
            entity = replace(entity, owner=owner)
            self._write_owner(current.id, owner)  # before the row: it is never missing from a list
        written = self._write_row(raw, entity, url)
        if written is None:
            return None
        if taken_over:
            self._delete_owner(current.id, current.owner)
        self._reconcile(current.id, current.event_types if current.receives else ())
        return written, False

    def _write_row(self, raw: TableEntity, entity: Subscription, url: str | None = None) -> Subscription | None:
        """Replace the row read as `raw` with `entity` (its version raised) unless anything wrote
        the row since; with `url`, in one transaction with a check that the URL row still exists,
        so a subscribe never brings back a subscription its URL no longer finds. The record
        written, or None when the row changed (or went) meanwhile: read it again."""
        entity = replace(entity, version=_from_row(raw).version + 1)
        ops: list[Any] = [
            (
                "update",
                _row(entity),
                {
                    "mode": UpdateMode.REPLACE,
                    "etag": raw.metadata["etag"],
                    "match_condition": MatchConditions.IfNotModified,
                },
            )
        ]
        if url is not None:
            link = {"PartitionKey": SUB_PARTITION, "RowKey": url_key(url), "id": entity.id}
            ops.append(("update", link, {"mode": UpdateMode.MERGE}))
        try:
            self._table.submit_transaction(ops)
        except TableTransactionError as exc:
            if _error_code(exc) in ("ResourceNotFound", "UpdateConditionNotSatisfied"):
                return None
            raise
        return entity

    def _reconcile(self, sub_id: str, written: Iterable[str]) -> Subscription | None:
        """Make the fan-out index rows of a subscription what its row says, whatever ran
        concurrently; returns the row's record as last read (None: no row).

        Every change of the row is followed by this, by the caller that made it. It writes the
        index rows the row's state asks for (`Subscription.receives`) from the row as read,
        removes those of `written` (patterns that may hold rows of this id: the previous state's,
        and its own earlier writes) that the row does not ask for, then reads the row again: if
        it changed meanwhile, it starts over from the new state. So the last index write of any
        caller follows its last read of the row, and a caller whose read was of an older state is
        followed by the caller that changed it, which reconciles after its own change: once every
        caller has returned, the index rows are exactly what the row says. A DELETE marks the row
        `removing` before it removes the index rows, so a caller that wrote index rows after the
        DELETE removed them finds the mark (or no row) when it reads again and removes them."""
        written = set(written)
        raw = self._get_raw(sub_id)
        for _ in range(TRIES * 4):
            current = _from_row(raw) if raw is not None else None
            wanted = builtins.list(current.event_types) if current is not None and current.receives else []
            if current is not None and wanted:
                self._write_index(current, wanted)
            stale = sorted(written - set(wanted))
            if stale:
                self._delete_index(sub_id, stale)
            written = set(wanted)
            again = self._get_raw(sub_id)
            if _etag(again) == _etag(raw):
                return current
            raw = again
        raise Contended("the subscription kept changing while its index was written; try again")

    def rotate_secret(self, sub_id: str) -> Subscription | None:
        """Give the subscription a new signing secret; None when there is no such subscription.

        The primary row and its index rows get the new secret, then a marker in the tombstone
        partition tells queued work (retries, work items, replays, which carry the secret they
        were planned with) to read the current one: every attempt after this returns is signed
        with the new secret only.
        """
        for _ in _tries():
            raw = self._get_raw(sub_id)
            if raw is None or raw.get("removing"):
                return None
            current = _from_row(raw)
            entity = self._write_row(raw, replace(current, secret=new_secret(), updated_at=_now()))
            if entity is None:
                continue  # changed meanwhile (a subscribe, a disable): read it again
            self._reconcile(sub_id, current.event_types if current.receives else ())
            self._table.upsert_entity(
                {
                    "PartitionKey": TOMB_PARTITION,
                    "RowKey": f"{clock.time_key(clock.utcnow())}_{sub_id}_secret",
                    "id": sub_id,
                    "kind": "secret",
                }
            )
            return entity
        raise Contended("the subscription kept changing during the rotation; try again")

    def current_secret(self, sub_id: str) -> str | None:
        entity = self.get(sub_id)
        return entity.secret if entity is not None else None

    def _write_index(self, entity: Subscription, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        self._mark_present(patterns)
        for pattern in patterns:
            self._table.upsert_entity(_index_entity(entity, pattern), mode=UpdateMode.REPLACE)
        self._mark_present(patterns)  # new tokens: every process reads these partitions again

    # ---- presence and the layout marker ------------------------------------------------------

    def _mark_present(self, patterns: list[str]) -> None:
        """Presence rows for patterns whose index rows are about to change or just changed, each
        with a new version token (one transaction: a subscription has at most 100 patterns)."""
        if not patterns:
            return
        self._ensure_layout()
        self._table.submit_transaction(_presence_upserts(patterns))

    def _ensure_layout(self) -> None:
        """Make sure the store has a layout marker before this version writes index rows."""
        with _layouts_lock:
            if self._table.url in _layouts_seen:
                return
        if self.layout() is None:
            self._start_layout()
        with _layouts_lock:
            _layouts_seen.add(self._table.url)

    def _start_layout(self) -> str:
        """The first marker of a store: whole when it holds no subscription yet (every index row
        to come is written by this version, after its presence row), else pending. The first
        writer wins, so a `pending` is never turned `complete` here."""
        rows = self._table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": SUB_PARTITION}, results_per_page=1, select=["RowKey"]
        )
        state = LAYOUT_PENDING if next(iter(rows), None) is not None else LAYOUT_COMPLETE
        try:
            self._table.create_entity(
                {
                    "PartitionKey": PRESENCE_PARTITION,
                    "RowKey": LAYOUT_ROW,
                    "layout": state,
                    "since": clock.rfc3339(clock.utcnow()),
                }
            )
        except ResourceExistsError:
            return self.layout() or LAYOUT_PENDING
        return state

    def layout(self) -> str | None:
        """The store's layout marker: `complete`, `pending`, or None when no instance of this
        version has written to it yet."""
        try:
            row = self._table.get_entity(PRESENCE_PARTITION, LAYOUT_ROW, select=["layout"])
        except ResourceNotFoundError:
            return None
        state: str = row.get("layout") or LAYOUT_PENDING
        return state

    def complete_layout(self, now: datetime | None = None) -> str:
        """Make the presence rows of a store that predates them whole (the hourly sweep calls
        this): write a presence row for every pattern of every active subscription, then mark the
        layout complete. Done only `BACKFILL_AFTER` the store was marked pending, so no instance
        of the older version still writes index rows without presence rows. Returns the state."""
        now = now or clock.utcnow()
        try:
            marker = self._table.get_entity(PRESENCE_PARTITION, LAYOUT_ROW)
        except ResourceNotFoundError:
            return self._start_layout()
        if marker.get("layout") == LAYOUT_COMPLETE:
            return LAYOUT_COMPLETE
        if clock.parse_rfc3339(marker["since"]) + BACKFILL_AFTER > now:
            return LAYOUT_PENDING
        patterns: set[str] = set()
        for row in self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            parameters={"pk": SUB_PARTITION, "lo": "i:", "hi": "i;"},
            results_per_page=1000,
            select=["eventTypes", "status"],
        ):
            if row.get("status") != SubscriptionStatus.DISABLED:
                patterns.update(json.loads(row.get("eventTypes") or "[]"))
        ordered = sorted(patterns)
        for start in range(0, len(ordered), 100):
            self._table.submit_transaction(_presence_upserts(ordered[start : start + 100]))
        self._table.update_entity(
            {"PartitionKey": PRESENCE_PARTITION, "RowKey": LAYOUT_ROW, "layout": LAYOUT_COMPLETE},
            mode=UpdateMode.MERGE,
        )
        return LAYOUT_COMPLETE

    def _present(self, candidates: list[str]) -> list[tuple[str, str | None]]:
        """The candidate patterns that have index rows, each with its version token, read with
        one query of the presence partition (with the layout marker); all of them, without
        tokens, while presence rows are not whole."""
        keys = [LAYOUT_ROW, *candidates]
        clauses = " or ".join(f"RowKey eq @k{i}" for i in range(len(keys)))
        rows = self._table.query_entities(
            f"PartitionKey eq @pk and ( {clauses} )",  # spaced: the SDK finds @names between spaces
            parameters={"pk": PRESENCE_PARTITION, **{f"k{i}": key for i, key in enumerate(keys)}},
            select=["RowKey", "layout", "v"],
        )
        found = {row["RowKey"]: row for row in rows}
        marker = found.pop(LAYOUT_ROW, None)
        if marker is None or marker.get("layout") != LAYOUT_COMPLETE:
            return [(p, None) for p in candidates]
        return [(p, found[p].get("v")) for p in candidates if p in found]

    def _index_rows(self, pattern: str, token: str | None) -> Iterator[builtins.list[dict[str, Any]]]:
        """One index partition's rows, a page at a time: from this process's cache when the
        partition's presence token is the one it was read under, else from storage (and then
        cached when small)."""
        key = (self._table.url, pattern)
        if token is not None:
            cached = _INDEX_CACHE.get(key, token)
            if cached is not None:
                yield cached
                return
        read_at = time.monotonic()
        pages = cast(
            "PageIterator[TableEntity]",
            self._table.query_entities(
                "PartitionKey eq @pk",
                parameters={"pk": f"x:{pattern}"},
                results_per_page=1000,
                select=list(_INDEX_FIELDS),
            ).by_page(),
        )
        kept: builtins.list[dict[str, Any]] | None = []
        for page in pages:
            rows = self._checked(pattern, list(page))
            if kept is not None:
                kept = kept + rows if len(kept) + len(rows) <= IndexCache.MAX_ROWS else None
            yield rows
        if token is not None and kept is not None:
            _INDEX_CACHE.put(key, token, kept, read_at)

    def _checked(self, pattern: str, rows: builtins.list[TableEntity]) -> builtins.list[dict[str, Any]]:
        """Index rows as read from storage, each checked against its subscription's row: one
        whose subscription is gone, no longer receives, is of another generation or no longer
        lists the pattern is skipped and removed (it is left over from a caller that died between
        writes, or from a version before `_reconcile`); one written from an older state of a
        live row is replaced by what the row says now (its writer is about to rewrite it).

        A row is read once per index row version (ETag): a check that found an index row right
        stays right while that index row exists, because every change that must remove it
        writes the subscription row first (the `removing` mark, a disable) and removes index
        rows unconditionally after; an index row written after such a removal has an ETag of
        its own, never checked before."""
        table = self._table.url
        unknown = sorted({r["RowKey"] for r in rows if not _CHECKED.seen((table, pattern, r["RowKey"], _etag(r)))})
        if not unknown:
            return cast("builtins.list[dict[str, Any]]", rows)  # entities are dicts, with metadata
        # Point reads side by side: only index rows new to this process cost one.
        reads = runtime.current().reads()
        found = reads.map(self._get_raw, unknown) if len(unknown) > 2 else map(self._get_raw, unknown)
        subs = dict(zip(unknown, found, strict=True))
        kept: builtins.list[dict[str, Any]] = []
        dropped = False
        for row in rows:
            if row["RowKey"] not in subs:
                kept.append(row)
                continue
            raw = subs[row["RowKey"]]
            current = _from_row(raw) if raw is not None else None
            if (
                current is None
                or not current.receives
                or current.generation != _generation(row)
                or pattern not in current.event_types
            ):
                self._drop_index_row(pattern, row)
                dropped = True
            elif int(row.get("ver") or 0) == current.version:
                _CHECKED.add((table, pattern, row["RowKey"], _etag(row)))
                kept.append(row)
            else:
                kept.append(_index_entity(current, pattern))
        if dropped:
            self._mark_present([pattern])  # a new token: no process keeps a copy with the row
        return kept

    def _drop_index_row(self, pattern: str, row: TableEntity) -> None:
        """Remove an index row found wrong, unless it was written again since it was read."""
        log.warning("removing a fan-out index row without a live subscription subscription=%s", row["RowKey"])
        try:
            self._table.delete_entity(
                f"x:{pattern}", row["RowKey"], etag=_etag(row), match_condition=MatchConditions.IfNotModified
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            pass
        except HttpResponseError as exc:
            if exc.status_code != 412:
                raise

    def _caller_partitions(self, entity: Subscription) -> list[str]:
        found = []
        if entity.workflow_id and entity.workflow_operation_name:
            found.append("w:" + _caller_key(entity.workflow_id, entity.workflow_operation_name))
        if entity.client_tracking_id:
            found.append("k:" + _caller_key(entity.client_tracking_id))
        return found

    def _write_caller(self, entity: Subscription) -> None:
        for partition in self._caller_partitions(entity):
            self._table.upsert_entity({"PartitionKey": partition, "RowKey": entity.id}, mode=UpdateMode.REPLACE)

    def _by_caller(self, partition: str, matches: Callable[[Subscription], bool]) -> list[Subscription]:
        """The subscriptions a caller partition names that still record this caller; stale rows go."""
        found = []
        for row in list(
            self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition}, results_per_page=1000, select=["RowKey"]
            )
        ):
            entity = self.get(row["RowKey"])
            if entity is not None and matches(entity):
                found.append(entity)
            else:
                self._table.delete_entity(partition, row["RowKey"])
        return found

    def unsubscribe_caller(
        self, workflow_id: str | None, operation: str | None, tracking_id: str | None, scope: str | None = None
    ) -> list[str]:
        """Remove what a Logic Apps HTTP Webhook subscribed, found by the headers of its
        unsubscribe call: workflow id + operation name, else the client tracking id. Runs of one
        workflow's action share the first two, so where several match, the tracking id (one per
        run) narrows them when it can. With `scope`, only that owner's subscriptions are
        candidates. Returns the ids removed."""
        found: list[Subscription] = []
        if workflow_id and operation:
            found = self._by_caller(
                "w:" + _caller_key(workflow_id, operation),
                lambda e: e.workflow_id == workflow_id and e.workflow_operation_name == operation,
            )
            same_run = [e for e in found if tracking_id and e.client_tracking_id == tracking_id]
            if len(found) > 1 and same_run:
                found = same_run
        if not found and tracking_id:
            found = self._by_caller("k:" + _caller_key(tracking_id), lambda e: e.client_tracking_id == tracking_id)
        if scope is not None:
            found = [e for e in found if e.owner == scope]
        for entity in found:
            self.delete(entity.id)
        return [e.id for e in found]

    def _delete_index(self, sub_id: str, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        for pattern in patterns:
            self._table.delete_entity(f"x:{pattern}", sub_id)
        self._mark_present(patterns)  # new tokens: no process delivers from what it read before

    def _write_owner(self, sub_id: str, owner: str | None) -> None:
        if owner is not None:
            self._table.upsert_entity({"PartitionKey": owner_partition(owner), "RowKey": sub_id, "owner": owner})

    def _delete_owner(self, sub_id: str, owner: str | None) -> None:
        if owner is not None:
            self._table.delete_entity(owner_partition(owner), sub_id)

    def adopt_owner(self, old: str, new: str) -> int:
        """Move the subscriptions owned by `old` to `new` (an owner key changing its format; the
        store treats both as opaque text): the owner index row first, then the row itself,
        conditional on its ETag (a row changed meanwhile is left for the next call). Returns how
        many moved."""
        moved = 0
        for index_row in self._table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": owner_partition(old)}, select=["RowKey"]
        ):
            sub_id = index_row["RowKey"]
            raw = self._get_raw(sub_id)
            if raw is not None and raw.get("owner") == old:
                self._write_owner(sub_id, new)  # before the row, as on create: never missing from a list
                try:
                    self._table.update_entity(
                        {"PartitionKey": SUB_PARTITION, "RowKey": raw["RowKey"], "owner": new},
                        mode=UpdateMode.MERGE,
                        etag=raw.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                except (ResourceNotFoundError, HttpResponseError):
                    continue  # deleted or changed meanwhile: the old index row stays, tried again later
                moved += 1
            self._delete_owner(sub_id, old)
        return moved

    # ---- reads ----------------------------------------------------------------------------

    def _link(self, url: str) -> TableEntity | None:
        """The URL row (URL -> id) of a callback URL, or None."""
        try:
            return self._table.get_entity(SUB_PARTITION, url_key(url))
        except ResourceNotFoundError:
            return None

    def _id_for_url(self, url: str) -> str | None:
        link = self._link(url)
        return None if link is None else cast(str, link["id"])

    def _get_raw(self, sub_id: str) -> TableEntity | None:
        if not ID_RE.fullmatch(sub_id):
            return None
        try:
            return self._table.get_entity(SUB_PARTITION, f"i:{sub_id}")
        except ResourceNotFoundError:
            return None

    def get(self, sub_id: str) -> Subscription | None:
        """The subscription of this id; None for no such subscription (or a malformed id)."""
        raw = self._get_raw(sub_id)
        return _from_row(raw) if raw is not None else None

    def list(
        self, *, limit: int, token: str | None, event_type: str | None = None, owner: str | None = None
    ) -> tuple[builtins.list[Subscription], str | None]:
        """One page of subscriptions; with `event_type`, those that would receive such an event;
        with `owner`, only that owner's, read through the owner index."""
        if owner is not None:
            return self._list_owned(owner, limit=limit, token=token, event_type=event_type)
        pages = cast(
            "PageIterator[TableEntity]",
            self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": SUB_PARTITION, "lo": "i:", "hi": "i;"},
                results_per_page=limit,
            ).by_page(continuation_token=decode_token(token)),
        )
        page = [_from_row(e) for e in next(pages, [])]
        if event_type is not None:
            page = [e for e in page if type_matches(e.event_types, event_type)]
        return page, encode_token(pages.continuation_token)

    def _list_owned(
        self, owner: str, *, limit: int, token: str | None, event_type: str | None
    ) -> tuple[builtins.list[Subscription], str | None]:
        pages = cast(
            "PageIterator[TableEntity]",
            self._table.query_entities(
                "PartitionKey eq @pk",
                parameters={"pk": owner_partition(owner)},
                results_per_page=limit,
                select=["RowKey"],
            ).by_page(continuation_token=decode_token(token)),
        )
        ids = [row["RowKey"] for row in next(pages, [])]
        # Point reads of one owner's page run side by side.
        found = list(runtime.current().reads().map(self.get, ids)) if ids else []
        # An index row outlives a subscription deleted meanwhile; the owner check guards hash reuse.
        page = [e for e in found if e is not None and e.owner == owner]
        if event_type is not None:
            page = [e for e in page if type_matches(e.event_types, event_type)]
        return page, encode_token(pages.continuation_token)

    def count_by_status(self, at_most: int) -> tuple[dict[str, int], bool]:
        """How many subscriptions have each status (every status named, 0 where none), counting
        a page of 1,000 at a time until `at_most` are counted; and whether that was all of them."""
        counts = {str(s): 0 for s in SubscriptionStatus}
        seen = 0
        pages = cast(
            "PageIterator[TableEntity]",
            self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": SUB_PARTITION, "lo": "i:", "hi": "i;"},
                select=["status"],
                results_per_page=1000,
            ).by_page(),
        )
        for page in pages:
            for row in page:
                status = row.get("status") or SubscriptionStatus.ACTIVE
                counts[status] = counts.get(status, 0) + 1
                seen += 1
            if seen >= at_most:
                return counts, pages.continuation_token is None
        return counts, True

    def matching(self, event_type: str, subject: str | None) -> Iterator[builtins.list[Target]]:
        """The active subscriptions an event goes to, a page at a time, read from the index
        partitions its type matches; a subscription matching several patterns comes once.

        One query per partition (`a.b.c`, `a.b.*`, `a.*`, `*`): Azure Tables serves an `or`
        across PartitionKeys as a range scan over every partition between them, which grows with
        all subscriptions rather than the matching ones. A few point-partition queries stay
        O(matching) however many subscriptions there are. Only the partitions the presence rows
        name are read (after one query of the presence partition): an event type with one
        subscribed pattern costs two queries, not one per candidate pattern."""
        seen: set[str] = set()
        for pattern, token in self._present(patterns_for_type(event_type)):
            for page in self._index_rows(pattern, token):
                found = []
                for row in page:
                    if row["RowKey"] in seen or not subject_matches(
                        subject, row.get("subjectBeginsWith"), row.get("subjectEndsWith")
                    ):
                        continue
                    seen.add(row["RowKey"])
                    found.append(
                        Target(
                            sub=row["RowKey"],
                            url=row["url"],
                            secret=row["secret"],
                            once=bool(row.get("once")),
                            gen=_generation(row),
                            mode=row.get("contentMode") or "json",
                            paused=bool(row.get("paused")),
                        )
                    )
                if found:
                    yield found

    def changes_since(self, since_key: str) -> tuple[dict[str, int], set[str]]:
        """For changes at or after `since_key`: subscription id -> newest removed generation, and
        the ids whose secret was rotated (queued work must sign with the current secret)."""
        found = self.changes(since_key)
        return found.removed, found.rotated

    def changes(self, since_key: str) -> Changes:
        """`changes_since`, and the subscriptions whose newest pause marker since then is a pause."""
        since = clock.time_key(clock.from_time_key(since_key) - CLOCK_SKEW)
        removed: dict[str, int] = {}
        rotated: set[str] = set()
        paused: dict[str, bool] = {}
        for row in self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @since",
            parameters={"pk": TOMB_PARTITION, "since": since},
            results_per_page=1000,
        ):
            sub_id = row["id"]
            kind = row.get("kind")
            if kind == "secret":
                rotated.add(sub_id)
            elif kind in (PAUSE_MARK, RESUME_MARK):
                paused[sub_id] = kind == PAUSE_MARK  # rows come in time order: the newest wins
            else:
                removed[sub_id] = max(removed.get(sub_id, -1), _generation(row))
        return Changes(removed, rotated, {sub for sub, held in paused.items() if held})

    # ---- removal --------------------------------------------------------------------------

    def _tombstone(self, entity: Subscription) -> None:
        key = clock.time_key(clock.utcnow())
        self._table.upsert_entity(
            {
                "PartitionKey": TOMB_PARTITION,
                "RowKey": f"{key}_{entity.id}",
                "id": entity.id,
                "gen": entity.generation,
            }
        )

    def forget_tombstones(self, before: datetime) -> int:
        """Delete the tombstones and removal records written before a moment (for retention);
        returns how many."""
        rows = self._table.query_entities(
            "PartitionKey eq @pk and RowKey lt @key",
            parameters={"pk": TOMB_PARTITION, "key": clock.time_key(before)},
            select=["PartitionKey", "RowKey"],
        )
        removed = self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            parameters={"pk": SUB_PARTITION, "lo": "d:", "hi": "d;"},
            select=["PartitionKey", "RowKey", "removedAt"],
            results_per_page=1000,
        )
        old = (r for r in removed if clock.parse_rfc3339(r.get("removedAt") or clock.rfc3339(before)) < before)
        return delete_rows(self._table, rows) + delete_rows(self._table, old)

    def repair_index(self, now: datetime | None = None) -> int:
        """Check the whole fan-out index against the subscription rows and repair where they
        disagree (the hourly sweep, relay.pipeline.retention): an index row without its subscription, of
        a subscription that receives nothing, of another generation or version or a pattern the
        row does not list, and a receiving subscription without its index rows, are reconciled
        from the row (`_reconcile`, safe beside anything running); a DELETE that died mid-way
        (a `removing` row older than `STUCK_REMOVAL`) is finished. Returns how many subscriptions
        it repaired. Reads every index row and every subscription row, a few columns each."""
        now = now or clock.utcnow()
        subs = {
            row["id"]: row
            for row in self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": SUB_PARTITION, "lo": "i:", "hi": "i;"},
                select=["id", "status", "eventTypes", "gen", "ver", "removing", "updatedAt", "createdAt"],
                results_per_page=1000,
            )
        }
        indexed: dict[str, dict[str, tuple[int, int]]] = {}
        for row in self._table.query_entities(
            "PartitionKey ge @lo and PartitionKey lt @hi",
            parameters={"lo": "x:", "hi": "x;"},
            select=["PartitionKey", "RowKey", "gen", "ver"],
            results_per_page=1000,
        ):
            indexed.setdefault(row["RowKey"], {})[row["PartitionKey"][2:]] = (
                _generation(row),
                int(row.get("ver") or 0),
            )
        repaired = 0
        for sub_id, row in subs.items():
            changed = _time(row.get("updatedAt")) or _time(row.get("createdAt")) or now
            if row.get("removing") and changed + STUCK_REMOVAL < now:
                raw = self._get_raw(sub_id)
                if raw is not None and raw.get("removing"):
                    log.warning("finishing a removal that stopped mid-way subscription=%s", sub_id)
                    self._finish_delete(raw)
                    repaired += 1
                    indexed.pop(sub_id, None)
        for sub_id in sorted(set(indexed) | set(subs)):
            found = subs.get(sub_id)
            have = indexed.get(sub_id, {})
            if found is not None:
                want = set(json.loads(found.get("eventTypes") or "[]"))
                receives = not found.get("removing") and (found.get("status") or "active") in (
                    SubscriptionStatus.ACTIVE,
                    SubscriptionStatus.PAUSED,
                )
                expected = (_generation(found), int(found.get("ver") or 0))
                if (want if receives else set()) == set(have) and all(v == expected for v in have.values()):
                    continue
            elif not have:
                continue
            else:
                log.warning("removing fan-out index rows without a subscription subscription=%s", sub_id)
            self._reconcile(sub_id, have)
            repaired += 1
        return repaired

    def delete(self, sub_id: str, registration: int | None = None, scope: str | None = None) -> bool:
        """Remove a subscription; with `registration`, only if that is still its current one (a
        DELETE of a registration a later subscribe superseded removes nothing); with `scope` (a
        subscriber, not an admin), only if it is that owner's. Returns whether this call found it
        to remove.

        In order: the `removing` mark (a conditional write, so it is of the state just read,
        and every later change of the row sees it), a tombstone (queued work planned before
        skips it), the index rows, then the row with its URL row, leaving a record of what was
        indexed. Without a row, the index rows such a record names are removed again."""
        for _ in _tries():
            raw = self._get_raw(sub_id)
            if raw is None:
                self._remove_leftovers(sub_id)
                return False
            current = _from_row(raw)
            if registration is not None and registration != current.registration:
                return False
            if scope is not None and current.owner != scope:
                return False
            if not current.removing:
                if self._write_row(raw, replace(current, removing=True, updated_at=_now())) is None:
                    continue  # changed meanwhile: the registration may have been superseded
                # After the mark, never before: a DELETE that then finds its registration
                # superseded must not make queued work skip a subscription that stays.
                self._tombstone(current)
                raw = self._get_raw(sub_id)
                if raw is None:
                    return True  # another caller finished the removal
            self._finish_delete(raw)
            return True
        raise Contended("the subscription kept changing under this delete; try again")

    def _finish_delete(self, raw: TableEntity) -> None:
        """The rest of a DELETE whose `removing` mark is written (whoever meets the mark helps)."""
        entity = _from_row(raw)
        self._delete_index(entity.id, entity.event_types)
        for partition in self._caller_partitions(entity):
            self._table.delete_entity(partition, entity.id)
        removed = {
            "PartitionKey": SUB_PARTITION,
            "RowKey": f"d:{entity.id}",
            "patterns": json.dumps(list(entity.event_types)),
            "gen": entity.generation,
            "removedAt": clock.rfc3339(clock.utcnow()),
        }
        for _ in _tries():
            ops: list[Any] = [
                (
                    "delete",
                    {"PartitionKey": SUB_PARTITION, "RowKey": f"i:{entity.id}"},
                    {"etag": raw.metadata["etag"], "match_condition": MatchConditions.IfNotModified},
                ),
                ("upsert", removed, {"mode": UpdateMode.REPLACE}),
            ]
            # The URL row goes only while it still points here (a later subscribe may own it).
            link = self._link(entity.notification_url)
            if link is not None and link.get("id") == entity.id:
                ops.append(
                    (
                        "delete",
                        {"PartitionKey": SUB_PARTITION, "RowKey": url_key(entity.notification_url)},
                        {"etag": link.metadata["etag"], "match_condition": MatchConditions.IfNotModified},
                    )
                )
            try:
                self._table.submit_transaction(ops)
                break
            except TableTransactionError as exc:
                if _error_code(exc) not in ("ResourceNotFound", "UpdateConditionNotSatisfied"):
                    raise
                if self._get_raw(entity.id) is None:
                    break  # another caller finished it
        self._delete_owner(entity.id, entity.owner)

    def _remove_leftovers(self, sub_id: str) -> None:
        """Index rows of a subscription whose row is gone, as far as its removal record names them
        (a caller that died between writes may have left some)."""
        if not ID_RE.fullmatch(sub_id):
            return
        try:
            record = self._table.get_entity(SUB_PARTITION, f"d:{sub_id}")
        except ResourceNotFoundError:
            return
        self._delete_index(sub_id, json.loads(record.get("patterns") or "[]"))

    def unsubscribe(self, url: str, scope: str | None = None) -> None:
        """Remove the subscription of this URL; with `scope`, only if that owner holds it."""
        sub_id = self._id_for_url(url)
        if sub_id is None:
            return
        if scope is not None:
            entity = self.get(sub_id)
            if entity is not None and entity.owner != scope:
                raise NotFound("no subscription of yours has this notificationUrl")
        self.delete(sub_id)

    def disable(self, sub_id: str, reason: str) -> None:
        """Stop deliveries to a subscription whose receiver said it is gone; keep it visible."""
        for _ in _tries():
            raw = self._get_raw(sub_id)
            if raw is None:
                self._remove_leftovers(sub_id)
                return
            current = _from_row(raw)
            if current.removing or current.status == SubscriptionStatus.DISABLED:
                return
            changed = replace(
                current, status=SubscriptionStatus.DISABLED, disabled_reason=reason[:1024], updated_at=_now()
            )
            if self._write_row(raw, changed) is not None:
                self._tombstone(current)
                self._reconcile(sub_id, current.event_types)
                return

    # ---- operator actions (the console and `python -m relay admin`) ---------------------------

    def set_paused(self, sub_id: str, paused: bool, scope: str | None = None) -> Subscription | None:
        """Pause (or resume) a subscription: its index rows are rewritten marked (or unmarked), so
        fan-out after this returns holds (or delivers) its deliveries, and a marker in the
        tombstone partition tells queued work planned before it (retries, work items). None when
        there is no such subscription (or, with `scope`, not that owner's). A disabled one stays
        disabled: re-activate it first."""
        for _ in _tries():
            raw = self._get_raw(sub_id)
            if raw is None or raw.get("removing"):
                return None
            current = _from_row(raw)
            if scope is not None and current.owner != scope:
                return None
            if current.status == SubscriptionStatus.DISABLED:
                return current
            wanted = SubscriptionStatus.PAUSED if paused else SubscriptionStatus.ACTIVE
            # The marker first: queued work that reads it before the row changes waits a moment
            # more (pause) or is released with the rest (resume), never attempted while paused.
            self._table.upsert_entity(
                {
                    "PartitionKey": TOMB_PARTITION,
                    "RowKey": f"{clock.time_key(clock.utcnow())}_{sub_id}_{PAUSE_MARK if paused else RESUME_MARK}",
                    "id": sub_id,
                    "kind": PAUSE_MARK if paused else RESUME_MARK,
                }
            )
            if current.status == wanted:
                self._reconcile(sub_id, current.event_types)
                return current
            written = self._write_row(raw, replace(current, status=wanted, updated_at=_now()))
            if written is not None:
                self._reconcile(sub_id, current.event_types)
                return written
        raise Contended("the subscription kept changing under this pause; try again")

    def activate(self, sub_id: str) -> Subscription | None:
        """Re-activate a disabled subscription with its own URL and filters, as a re-subscribe of
        the same URL would (the console cannot send the URL: reads mask its query)."""
        for _ in _tries():
            raw = self._get_raw(sub_id)
            if raw is None or raw.get("removing"):
                return None
            current = _from_row(raw)
            changed = replace(current, status=SubscriptionStatus.ACTIVE, disabled_reason=None, updated_at=_now())
            if current.status == SubscriptionStatus.DISABLED:
                changed = replace(changed, generation=current.generation + 1)
            written = self._write_row(raw, changed)
            if written is not None:
                self._reconcile(sub_id, current.event_types if current.receives else ())
                return written
        raise Contended("the subscription kept changing under this activate; try again")


@dataclass(frozen=True)
class Changes:
    """What queued work planned at a moment must honour (`SubscriptionStore.changes`)."""

    removed: dict[str, int]  # subscription id -> newest removed generation
    rotated: set[str]  # secret rotated: sign with the current one
    paused: set[str]  # paused (newest marker): hold, do not attempt


def _index_entity(entity: Subscription, pattern: str) -> dict[str, Any]:
    """The fan-out index row of a subscription under one pattern: all a delivery needs."""
    return _clean(
        {
            "PartitionKey": f"x:{pattern}",
            "RowKey": entity.id,
            "url": entity.notification_url,
            "secret": entity.secret,
            "once": entity.once,
            "gen": entity.generation,
            "ver": entity.version,
            "subjectBeginsWith": entity.subject_begins_with,
            "subjectEndsWith": entity.subject_ends_with,
            "contentMode": entity.content_mode,
            "paused": True if entity.status == SubscriptionStatus.PAUSED else None,
        }
    )


class CheckedRows:
    """Index row versions (table, pattern, id, ETag) this process found to agree with their
    subscription (`SubscriptionStore._checked`), least recently used first out. Bounded in count
    and in age: a check is made again after `MAX_AGE` whatever happened."""

    MAX_ENTRIES = 50_000
    MAX_AGE = 600.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str, str, str | None], float] = OrderedDict()

    def seen(self, key: tuple[str, str, str, str | None]) -> bool:
        if key[3] is None:
            return False
        with self._lock:
            at = self._entries.get(key)
            if at is None or time.monotonic() - at > self.MAX_AGE:
                return False
            self._entries.move_to_end(key)
            return True

    def add(self, key: tuple[str, str, str, str | None]) -> None:
        if key[3] is None:
            return
        with self._lock:
            self._entries[key] = time.monotonic()
            self._entries.move_to_end(key)
            while len(self._entries) > self.MAX_ENTRIES:
                self._entries.popitem(last=False)


_CHECKED = CheckedRows()


def _error_code(exc: TableTransactionError) -> str | None:
    """The storage error code of a failed transaction: the tables SDK sets it on the error while
    decoding the answer, but the class does not declare it."""
    code = getattr(exc, "error_code", None)
    return code if isinstance(code, str) else None


def _presence_upserts(patterns: Iterable[str]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """A transaction's operations writing presence rows for these patterns, with a new token."""
    token = uuid.uuid4().hex
    return [
        ("upsert", {"PartitionKey": PRESENCE_PARTITION, "RowKey": p, "v": token}, {"mode": UpdateMode.MERGE})
        for p in patterns
    ]


class IndexCache:
    """Small index partitions this process has read, each under the presence token it had when
    read, least recently used first out.

    Every change to a partition's index rows is followed by a new token on its presence row
    (`_write_index`, `_delete_index`), and the token is read before the partition. So a cached
    copy whose token is still the current one was read after the last completed change: it is
    what storage holds, and the query is saved. A copy read while a change was under way sits
    under the token from before that change's closing write, which no longer matches."""

    MAX_ROWS = 100  # partitions of up to this many rows are kept
    MAX_BYTES = 8_000_000  # of URLs and secrets, roughly: the cache stays small beside the pools
    # A copy is read again after this long whatever its token says: if a change's closing token
    # write failed (storage down; the change's caller got an error and may not try again), no
    # copy outlives it longer. Events of a type published less often than this pay the read.
    MAX_AGE = 600.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[str, list[dict[str, Any]], int, float]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, str], token: str) -> list[dict[str, Any]] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != token or time.monotonic() - entry[3] > self.MAX_AGE:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: tuple[str, str], token: str, rows: list[dict[str, Any]], read_at: float) -> None:
        """Keep rows read at `read_at` (time.monotonic(), taken before the read) under `token`."""
        size = sum(len(r.get("url", "")) + len(r.get("secret", "")) + 200 for r in rows)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            self._entries[key] = (token, rows, size, read_at)
            self._bytes += size
            while self._bytes > self.MAX_BYTES and self._entries:
                _, (_, _, dropped, _) = self._entries.popitem(last=False)
                self._bytes -= dropped


_INDEX_CACHE = IndexCache()


def _clean(entity: dict[str, Any]) -> dict[str, Any]:
    """Tables cannot store None; an absent property reads back as absent."""
    return {k: v for k, v in entity.items() if v is not None}
