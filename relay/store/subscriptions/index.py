"""The fan-out index (`x:{pattern}` rows), its presence rows and layout marker, and the lookup
fan-out makes: the subscriptions an event goes to (the package's docstring has why)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, cast

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.core.paging import PageIterator
from azure.data.tables import TableClient, TableEntity, UpdateMode

from relay.core import clock, filters, runtime
from relay.core.matching import patterns_for_type, subject_matches
from relay.core.models import Target
from relay.core.statuses import SubscriptionStatus
from relay.store.subscriptions import kinds
from relay.store.subscriptions.cache import IndexCache, caches
from relay.store.subscriptions.rows import (
    INDEX_COLUMNS,
    LAYOUT_COMPLETE,
    LAYOUT_PENDING,
    LAYOUT_ROW,
    PRESENCE_PARTITION,
    STATE_COLUMNS,
    SUB_PARTITION,
    IndexRow,
    RowState,
    Subscription,
    from_row,
)

log = logging.getLogger("relay.subscriptions")
# A store that held subscriptions before presence rows existed is made whole this long after an
# instance of this version first wrote to it: a deploy has replaced every older instance by then.
BACKFILL_AFTER = timedelta(hours=1)


class Index:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    # ---- writes ------------------------------------------------------------------------------

    def write(self, sub: Subscription, patterns: Iterable[str]) -> None:
        """The index rows of `sub`'s current state under these patterns, between presence writes."""
        patterns = list(patterns)
        row = IndexRow.of(sub)
        self.mark_present(patterns)
        for pattern in patterns:
            self._table.upsert_entity(row.entity(pattern), mode=UpdateMode.REPLACE)
        self.mark_present(patterns)  # new tokens: every process reads these partitions again

    def delete(self, sub_id: str, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        for pattern in patterns:
            self._table.delete_entity(f"x:{pattern}", sub_id)
        self.mark_present(patterns)  # new tokens: no process delivers from what it read before

    def drop(self, pattern: str, row: IndexRow) -> None:
        """Remove an index row found wrong, unless it was written again since it was read."""
        log.warning("removing a fan-out index row without a live subscription subscription=%s", row.sub_id)
        try:
            self._table.delete_entity(
                f"x:{pattern}", row.sub_id, etag=row.etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            pass
        except HttpResponseError as exc:
            if exc.status_code != 412:
                raise

    # ---- presence and the layout marker ------------------------------------------------------

    def mark_present(self, patterns: list[str]) -> None:
        """Presence rows for patterns whose index rows are about to change or just changed, each
        with a new version token (one transaction: a subscription has at most 100 patterns)."""
        if not patterns:
            return
        self.ensure_layout()
        self._table.submit_transaction(kinds.presence_upserts(patterns))

    def ensure_layout(self) -> None:
        """Make sure the store has a layout marker before this version writes index rows."""
        layouts = caches().layouts
        if layouts.seen(self._table.url):
            return
        if self.layout() is None:
            self._start_layout()
        layouts.add(self._table.url)

    def _start_layout(self) -> str:
        """The first marker of a store: whole when it holds no subscription yet (every index row
        to come is written by this version, after its presence row), else pending. The first
        writer wins, so a `pending` is never turned `complete` here."""
        rows = self._table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": SUB_PARTITION}, results_per_page=1, select=["RowKey"]
        )
        state = LAYOUT_PENDING if next(iter(rows), None) is not None else LAYOUT_COMPLETE
        try:
            self._table.create_entity(kinds.layout_row(state))
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
        return kinds.layout_state(row)

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
        if kinds.layout_state(marker) == LAYOUT_COMPLETE:
            return LAYOUT_COMPLETE
        if kinds.layout_since(marker) + BACKFILL_AFTER > now:
            return LAYOUT_PENDING
        patterns: set[str] = set()
        for row in self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            parameters={"pk": SUB_PARTITION, "lo": "i:", "hi": "i;"},
            results_per_page=1000,
            select=STATE_COLUMNS,
        ):
            state = RowState.of(row)
            if state.status != SubscriptionStatus.DISABLED:
                patterns.update(state.event_types)
        ordered = sorted(patterns)
        for start in range(0, len(ordered), 100):
            self._table.submit_transaction(kinds.presence_upserts(ordered[start : start + 100]))
        self._table.update_entity(kinds.layout_row(LAYOUT_COMPLETE, since=False), mode=UpdateMode.MERGE)
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
        if marker is None or kinds.layout_state(marker) != LAYOUT_COMPLETE:
            return [(p, None) for p in candidates]
        return [(p, kinds.presence_token(found[p])) for p in candidates if p in found]

    # ---- the lookup --------------------------------------------------------------------------

    def matching(
        self, event_type: str, subject: str | None, data: Callable[[], Any] = lambda: None
    ) -> Iterator[list[Target]]:
        """The active subscriptions an event goes to, a page at a time, read from the index
        partitions its type matches; a subscription matching several patterns comes once. Its
        subject and data filters are checked here, from the index row: `data()` (the event's
        data, read once by the caller) is asked for only when a row filters on data.

        One query per partition (`a.b.c`, `a.b.*`, `a.*`, `*`): Azure Tables serves an `or`
        across PartitionKeys as a range scan over every partition between them, which grows with
        all subscriptions rather than the matching ones. A few point-partition queries stay
        O(matching) however many subscriptions there are. Only the partitions the presence rows
        name are read (after one query of the presence partition): an event type with one
        subscribed pattern costs two queries, not one per candidate pattern."""
        seen: set[str] = set()
        for pattern, token in self._present(patterns_for_type(event_type)):
            for page in self._partition(pattern, token):
                found = []
                for row in page:
                    if (
                        row.sub_id in seen
                        or not subject_matches(subject, row.subject_begins_with, row.subject_ends_with)
                        or not filters.matches(row.filters, data)
                    ):
                        continue
                    seen.add(row.sub_id)
                    found.append(row.target())
                if found:
                    yield found

    def _partition(self, pattern: str, token: str | None) -> Iterator[list[IndexRow]]:
        """One index partition's rows, a page at a time: from this runtime's cache when the
        partition's presence token is the one it was read under, else from storage (and then
        cached when small)."""
        key = (self._table.url, pattern)
        cache = caches().index
        if token is not None:
            cached = cache.get(key, token)
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
                select=list(INDEX_COLUMNS),
            ).by_page(),
        )
        kept: list[IndexRow] | None = []
        for page in pages:
            rows = self._checked(pattern, [IndexRow.read(e) for e in page])
            if kept is not None:
                kept = kept + rows if len(kept) + len(rows) <= IndexCache.MAX_ROWS else None
            yield rows
        if token is not None and kept is not None:
            cache.put(key, token, kept, read_at)

    def _checked(self, pattern: str, rows: list[IndexRow]) -> list[IndexRow]:
        """Index rows as read from storage, each checked against its subscription's row: one
        whose subscription is gone, no longer receives, is of another generation or no longer
        lists the pattern is skipped and removed (it is left over from a caller that died between
        writes, or from a version before `Lifecycle.reconcile`); one written from an older state
        of a live row is replaced by what the row says now (its writer is about to rewrite it).

        A row is read once per index row version (ETag): a check that found an index row right
        stays right while that index row exists, because every change that must remove it
        writes the subscription row first (the `removing` mark, a disable) and removes index
        rows unconditionally after; an index row written after such a removal has an ETag of
        its own, never checked before."""
        table = self._table.url
        checked = caches().checked
        unknown = sorted({r.sub_id for r in rows if not checked.seen((table, pattern, r.sub_id, r.etag))})
        if not unknown:
            return rows
        # Point reads side by side: only index rows new to this process cost one.
        reads = runtime.current().reads()
        found = reads.map(self._read, unknown) if len(unknown) > 2 else map(self._read, unknown)
        subs = dict(zip(unknown, found, strict=True))
        kept: list[IndexRow] = []
        dropped = False
        for row in rows:
            if row.sub_id not in subs:
                kept.append(row)
                continue
            current = subs[row.sub_id]
            if (
                current is None
                or not current.receives
                or current.generation != row.generation
                or pattern not in current.event_types
            ):
                self.drop(pattern, row)
                dropped = True
            elif row.version == current.version:
                checked.add((table, pattern, row.sub_id, row.etag))
                kept.append(row)
            else:
                kept.append(IndexRow.of(current))
        if dropped:
            self.mark_present([pattern])  # a new token: no process keeps a copy with the row
        return kept

    def _read(self, sub_id: str) -> Subscription | None:
        raw = kinds.read_row(self._table, sub_id)
        return from_row(raw) if raw is not None else None
