"""`SubscriptionStore`: what the routes and the pipeline call. It holds the table and the parts
that know each kind of row (`index`, `owners`, `consistency`), and hands out typed records."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from azure.core.paging import PageIterator
from azure.data.tables import TableClient, TableEntity, TableTransactionError, UpdateMode

from relay.core.errors import Contended, NotFound
from relay.core.matching import type_matches
from relay.core.models import SubscriptionRequest, Target
from relay.core.statuses import SubscriptionStatus
from relay.store.paging import decode_token, encode_token
from relay.store.storage import SUBSCRIPTIONS_TABLE, Storage
from relay.store.subscriptions import kinds
from relay.store.subscriptions.consistency import Changes, Lifecycle, tries
from relay.store.subscriptions.index import Index
from relay.store.subscriptions.owners import Owners
from relay.store.subscriptions.rows import (
    SUB_PARTITION,
    Caller,
    RowState,
    Subscription,
    error_code,
    from_row,
    new_secret,
    now,
    to_row,
)


@dataclass(frozen=True)
class Subscribed:
    """What a subscribe did (`SubscriptionStore.subscribed`)."""

    subscription: Subscription
    created: bool
    # It was disabled by the relay and this subscribe made it active again: what it held while
    # disabled is to be released (relay.pipeline.pause), as after `activate`.
    reactivated: bool = False


class SubscriptionStore:
    def __init__(self, storage: Storage) -> None:
        self._table: TableClient = storage.table(SUBSCRIPTIONS_TABLE)
        self._index = Index(self._table)
        self._owners = Owners(self._table)
        self._lifecycle = Lifecycle(self._table, self._index, self._owners)

    # ---- create / update ---------------------------------------------------------------------

    def subscribe(
        self,
        request: SubscriptionRequest,
        caller: Caller | None = None,
        owner: str | None = None,
        scope: str | None = None,
    ) -> tuple[Subscription, bool]:
        """`subscribed`, as (subscription, created)."""
        done = self.subscribed(request, caller, owner, scope)
        return done.subscription, done.created

    def subscribed(
        self,
        request: SubscriptionRequest,
        caller: Caller | None = None,
        owner: str | None = None,
        scope: str | None = None,
    ) -> Subscribed:
        """Create, or update the existing subscription of this URL.
        Either way the subscription's registration is new (`Subscription.registration`).

        `caller`: the Logic Apps caller the subscribe came from (`CALLER_HEADERS`). `owner` owns
        a subscription this creates (entra mode). With `scope` (a subscriber, not an admin), a
        URL held by another owner is taken over: whoever presents the whole callback URL, its
        `sig` included, holds what starts the flow, so the subscription becomes theirs."""
        # Before the subscription row: a store's first subscribe must find the store empty.
        self._index.ensure_layout()
        moment = now()
        for _ in tries():
            found = self._create_or_update(request, caller, moment, owner, scope)
            if found is not None:
                self._owners.write_caller(found.subscription)
                return found
        raise Contended("the subscription kept changing under this subscribe; try again")

    def _create_or_update(
        self, request: SubscriptionRequest, caller: Caller | None, at: datetime, owner: str | None, scope: str | None
    ) -> Subscribed | None:
        """One try; None when a concurrent change (a DELETE of the same URL) got in between."""
        url = request.notificationUrl
        existing_id = kinds.link_target(kinds.read_link(self._table, url))
        raw = self._lifecycle.read(existing_id) if existing_id is not None else None
        if raw is None:
            # No subscription, or a URL row that outlived its own (a crash between the writes of
            # an older version): a new one, under the id the URL row names if there is one.
            sub_id = existing_id or uuid.uuid4().hex
            blank = Subscription(
                id=sub_id,
                notification_url=url,
                secret=new_secret(),
                event_types=(),
                created_at=at,
                owner=owner,
                version=1,
                registration=1,
            )
            sub = blank.requested(request, caller, at)
            link = kinds.link_row(url, sub_id)
            self._owners.write(sub_id, owner)
            try:
                self._table.submit_transaction(
                    [
                        ("create", to_row(sub)),
                        ("update", link, {"mode": UpdateMode.REPLACE}) if existing_id is not None else ("create", link),
                    ]
                )
            except TableTransactionError as exc:
                if error_code(exc) not in ("EntityAlreadyExists", "ResourceNotFound"):
                    raise
                if existing_id is None:
                    self._owners.delete(sub_id, owner)
                return None  # someone subscribed (or removed) the same URL a moment ago: look again
            self._lifecycle.reconcile(sub_id, ())
            return Subscribed(sub, created=True)
        current = from_row(raw)
        if current.removing:
            self._lifecycle.finish_delete(raw)  # a DELETE is under way: it ends first, then this subscribes anew
            return None
        sub = replace(current.requested(request, caller, at), registration=current.registration + 1)
        if current.status == SubscriptionStatus.DISABLED:
            # A new generation, so tombstones of the disabled one no longer stop its deliveries.
            sub = replace(sub, generation=current.generation + 1)
        elif current.status == SubscriptionStatus.PAUSED:
            sub = replace(sub, status=SubscriptionStatus.PAUSED)  # an operator's pause outlives a re-subscribe
        taken_over = scope is not None and current.owner != scope
        if taken_over:
            sub = replace(sub, owner=owner)
            self._owners.write(current.id, owner)  # before the row: it is never missing from a list
        written = self._lifecycle.write_row(raw, sub, url)
        if written is None:
            return None
        if taken_over:
            self._owners.delete(current.id, current.owner)
        self._lifecycle.reconcile(current.id, current.event_types if current.receives else ())
        reactivated = current.status == SubscriptionStatus.DISABLED and current.disabled_by_relay
        return Subscribed(written, created=False, reactivated=reactivated)

    def rotate_secret(self, sub_id: str, grace_seconds: int = 0) -> Subscription | None:
        """A new signing secret, the replaced one signing beside it for `grace_seconds` (see
        `Lifecycle.rotate_secret`); None for no such subscription."""
        return self._lifecycle.rotate_secret(sub_id, grace_seconds)

    def disable(self, sub_id: str, reason: str, by_relay: bool = False) -> Subscription | None:
        """Stop deliveries to a subscription whose receiver said it is gone; keep it visible
        (`Lifecycle.disable`: the record when this call disabled it)."""
        return self._lifecycle.disable(sub_id, reason, by_relay)

    def record_health(self, sub_id: str, failing_since: datetime | None, last_error: str | None) -> bool:
        """Since when every attempt to it has failed, None after a success (`Lifecycle.record_health`)."""
        return self._lifecycle.record_health(sub_id, failing_since, last_error)

    def activate(self, sub_id: str) -> Subscription | None:
        """Re-activate a disabled subscription (the console and `python -m relay admin`)."""
        return self._lifecycle.activate(sub_id)

    def set_paused(self, sub_id: str, paused: bool, scope: str | None = None) -> Subscription | None:
        """Pause or resume a subscription (`Lifecycle.set_paused`); None for no such subscription
        (with `scope`, none of that owner's). A disabled one is returned unchanged."""
        return self._lifecycle.set_paused(sub_id, paused, scope)

    def adopt_owner(self, old: str, new: str) -> int:
        """Move the subscriptions owned by `old` to `new`; returns how many moved."""
        return self._owners.adopt(old, new)

    # ---- reads -------------------------------------------------------------------------------

    def get(self, sub_id: str) -> Subscription | None:
        """The subscription of this id; None for no such subscription (or a malformed id)."""
        raw = self._lifecycle.read(sub_id)
        return from_row(raw) if raw is not None else None

    def id_for_url(self, url: str) -> str | None:
        """The id of the subscription of a callback URL, as its URL row says; None for none."""
        return kinds.link_target(kinds.read_link(self._table, url))

    def list_page(
        self, *, limit: int, token: str | None, event_type: str | None = None, owner: str | None = None
    ) -> tuple[list[Subscription], str | None]:
        """One page of subscriptions; with `event_type`, those that would receive such an event;
        with `owner`, only that owner's, read through the owner index."""
        if owner is not None:
            return self._owners.page(owner, limit=limit, token=token, event_type=event_type)
        pages = cast(
            "PageIterator[TableEntity]",
            self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": SUB_PARTITION, "lo": "i:", "hi": "i;"},
                results_per_page=limit,
            ).by_page(continuation_token=decode_token(token)),
        )
        page = [from_row(e) for e in next(pages, [])]
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
                status = RowState.of(row).status
                counts[status] = counts.get(status, 0) + 1
                seen += 1
            if seen >= at_most:
                return counts, pages.continuation_token is None
        return counts, True

    def matching(
        self, event_type: str, subject: str | None, data: Callable[[], Any] = lambda: None
    ) -> Iterator[list[Target]]:
        """The active subscriptions an event goes to, a page at a time (`Index.matching`)."""
        return self._index.matching(event_type, subject, data)

    def changes_since(self, since_key: str) -> tuple[dict[str, int], set[str]]:
        """Removed generations and rotated secrets since a time key (`Lifecycle.changes`)."""
        found = self._lifecycle.changes(since_key)
        return found.removed, found.rotated

    def changes(self, since_key: str) -> Changes:
        """`changes_since`, and the subscriptions whose newest pause marker since then is a pause."""
        return self._lifecycle.changes(since_key)

    # ---- removal -----------------------------------------------------------------------------

    def delete(self, sub_id: str, registration: int | None = None, scope: str | None = None) -> bool:
        """Remove a subscription (`Lifecycle.delete`); returns whether this call found it."""
        return self._lifecycle.delete(sub_id, registration, scope)

    def unsubscribe(self, url: str, scope: str | None = None) -> None:
        """Remove the subscription of this URL; with `scope`, only if that owner holds it."""
        sub_id = self.id_for_url(url)
        if sub_id is None:
            return
        if scope is not None:
            sub = self.get(sub_id)
            if sub is not None and sub.owner != scope:
                raise NotFound("no subscription of yours has this notificationUrl")
        self.delete(sub_id)

    def unsubscribe_caller(self, caller: Caller, scope: str | None = None) -> list[str]:
        """Remove what a Logic Apps HTTP Webhook subscribed, found by the headers of its
        unsubscribe call (`Owners.subscribed_by`). With `scope`, only that owner's
        subscriptions are candidates. Returns the ids removed."""
        found = self._owners.subscribed_by(caller)
        if scope is not None:
            found = [e for e in found if e.owner == scope]
        for sub in found:
            self.delete(sub.id)
        return [e.id for e in found]

    # ---- the sweeps (relay.pipeline.retention) -----------------------------------------------

    def forget_tombstones(self, before: datetime) -> int:
        return self._lifecycle.forget_tombstones(before)

    def repair_index(self, now: datetime | None = None) -> int:
        return self._lifecycle.repair_index(now)

    def layout(self) -> str | None:
        return self._index.layout()

    def complete_layout(self, now: datetime | None = None) -> str:
        return self._index.complete_layout(now)
