"""The state machine over the subscription row: conditional writes, the reconciliation of the
index rows with the row, the removal mark and the rest of a DELETE, and the repair sweep (the
package's docstring has the rules; docs/subscriptions-lifecycle.md the why)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, TableTransactionError, UpdateMode

from relay.core import clock
from relay.core.errors import Contended
from relay.core.statuses import SubscriptionStatus
from relay.store.storage import delete_rows
from relay.store.subscriptions import kinds
from relay.store.subscriptions.index import Index
from relay.store.subscriptions.owners import Owners
from relay.store.subscriptions.rows import (
    ID_RE,
    STATE_COLUMNS,
    SUB_PARTITION,
    TOMB_PARTITION,
    Change,
    IndexedAt,
    RowState,
    Subscription,
    error_code,
    etag,
    from_row,
    new_secret,
    now,
    to_row,
    url_key,
)

log = logging.getLogger("relay.subscriptions")
# How often a change reads the row again after another change got in first.
TRIES = 5
# A `removing` row older than this belongs to a DELETE that died mid-way: the sweep finishes it.
STUCK_REMOVAL = timedelta(minutes=10)
# Clocks of different instances disagree a little; tombstones this much older than a reader's
# index read still count, at the price of reading a few more rows.
CLOCK_SKEW = timedelta(minutes=5)


def tries(count: int = TRIES) -> Iterator[int]:
    """The attempts of a conditional write that may lose to a concurrent one: between two, a
    jittered pause that grows, so a burst of writers on one row spreads out instead of colliding
    again in step; the caller raises `Contended` (a 503 a client retries) once they are spent."""
    for attempt in range(count):
        if attempt:
            time.sleep(random.uniform(0, 0.02 * 2**attempt))
        yield attempt


class Lifecycle:
    def __init__(self, table: TableClient, index: Index, owners: Owners) -> None:
        self._table, self._index, self._owners = table, index, owners

    def read(self, sub_id: str) -> TableEntity | None:
        return kinds.read_row(self._table, sub_id)

    def write_row(self, raw: TableEntity, sub: Subscription, url: str | None = None) -> Subscription | None:
        """Replace the row read as `raw` with `sub` (its version raised) unless anything wrote
        the row since; with `url`, in one transaction with a check that the URL row still exists,
        so a subscribe never brings back a subscription its URL no longer finds. The record
        written, or None when the row changed (or went) meanwhile: read it again."""
        sub = replace(sub, version=from_row(raw).version + 1)
        ops: list[Any] = [
            (
                "update",
                to_row(sub),
                {"mode": UpdateMode.REPLACE, "etag": etag(raw), "match_condition": MatchConditions.IfNotModified},
            )
        ]
        if url is not None:
            ops.append(("update", kinds.link_row(url, sub.id), {"mode": UpdateMode.MERGE}))
        try:
            self._table.submit_transaction(ops)
        except TableTransactionError as exc:
            if error_code(exc) in ("ResourceNotFound", "UpdateConditionNotSatisfied"):
                return None
            raise
        return sub

    def reconcile(self, sub_id: str, written: Iterable[str]) -> Subscription | None:
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
        raw = self.read(sub_id)
        for _ in range(TRIES * 4):
            current = from_row(raw) if raw is not None else None
            wanted = list(current.event_types) if current is not None and current.receives else []
            if current is not None and wanted:
                self._index.write(current, wanted)
            stale = sorted(written - set(wanted))
            if stale:
                self._index.delete(sub_id, stale)
            written = set(wanted)
            again = self.read(sub_id)
            if etag(again) == etag(raw):
                return current
            raw = again
        raise Contended("the subscription kept changing while its index was written; try again")

    # ---- changes of a subscription's state ---------------------------------------------------

    def rotate_secret(self, sub_id: str, grace_seconds: int = 0) -> Subscription | None:
        """Give the subscription a new signing secret; None when there is no such subscription.

        With `grace_seconds`, the secret replaced keeps signing beside the new one until then
        (`previous_secret`; a secret still in an earlier grace is dropped: two signatures at most).
        The primary row and its index rows get the new secrets, then a marker in the tombstone
        partition tells queued work (retries, work items, replays, which carry the secrets they
        were planned with) to read the current ones: every attempt after this returns is signed
        with the new secret, and the replaced one only within the grace (0: never again).
        """
        for _ in tries():
            raw = self.read(sub_id)
            if raw is None or kinds.is_removing(raw):
                return None
            current = from_row(raw)
            moment = now()
            grace = grace_seconds > 0
            rotated = replace(
                current,
                secret=new_secret(),
                previous_secret=current.secret if grace else None,
                previous_secret_expires_at=moment + timedelta(seconds=grace_seconds) if grace else None,
                updated_at=moment,
            )
            written = self.write_row(raw, rotated)
            if written is None:
                continue  # changed meanwhile (a subscribe, a disable): read it again
            self.reconcile(sub_id, current.event_types if current.receives else ())
            self._table.upsert_entity(kinds.rotation_row(sub_id))
            return written
        raise Contended("the subscription kept changing during the rotation; try again")

    def disable(self, sub_id: str, reason: str, by_relay: bool = False) -> Subscription | None:
        """Stop deliveries to a subscription whose receiver said it is gone (or, `by_relay`, whose
        deliveries have all failed for `RELAY_DISABLE_AFTER`); keep it visible. Returns the record
        written when this call disabled it, None when it was disabled already or is gone."""
        for _ in tries():
            raw = self.read(sub_id)
            if raw is None:
                self.remove_leftovers(sub_id)
                return None
            current = from_row(raw)
            if current.removing or current.status == SubscriptionStatus.DISABLED:
                return None
            at = now()
            changed = replace(
                current,
                status=SubscriptionStatus.DISABLED,
                disabled_reason=reason[:1024],
                disabled_by_relay=by_relay,
                disabled_at=at,
                updated_at=at,
            )
            written = self.write_row(raw, changed)
            if written is not None:
                self._tombstone(current)
                self.reconcile(sub_id, current.event_types)
                return written
        return None

    def record_health(self, sub_id: str, failing_since: datetime | None, last_error: str | None) -> bool:
        """Set (or clear, with None) since when every attempt has failed, unless the row changed
        since; returns whether it was written. Not a state change: the version stays."""
        raw = self.read(sub_id)
        if raw is None or kinds.is_removing(raw):
            return False
        if (from_row(raw).failing_since is None) == (failing_since is None):
            return True  # another instance recorded the same transition first
        try:
            self._table.update_entity(
                kinds.health_patch(sub_id, failing_since, last_error),
                mode=UpdateMode.MERGE,
                etag=etag(raw),
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def activate(self, sub_id: str) -> Subscription | None:
        """Re-activate a disabled subscription with its own URL and filters, as a re-subscribe of
        the same URL would (the console cannot send the URL: reads mask its query)."""
        for _ in tries():
            raw = self.read(sub_id)
            if raw is None or kinds.is_removing(raw):
                return None
            current = from_row(raw)
            changed = replace(
                current,
                status=SubscriptionStatus.ACTIVE,
                disabled_reason=None,
                disabled_by_relay=False,
                disabled_at=None,
                failing_since=None,
                updated_at=now(),
            )
            if current.status == SubscriptionStatus.DISABLED:
                changed = replace(changed, generation=current.generation + 1)
            written = self.write_row(raw, changed)
            if written is not None:
                self.reconcile(sub_id, current.event_types if current.receives else ())
                return written
        raise Contended("the subscription kept changing under this activate; try again")

    def set_paused(self, sub_id: str, paused: bool, scope: str | None = None) -> Subscription | None:
        """Pause (or resume) a subscription: its index rows are rewritten marked (or unmarked), so
        fan-out after this returns holds (or delivers) its deliveries, and a marker in the
        tombstone partition tells queued work planned before it (retries, work items). None when
        there is no such subscription (or, with `scope`, not that owner's). A disabled one stays
        disabled: re-activate it first."""
        for _ in tries():
            raw = self.read(sub_id)
            if raw is None or kinds.is_removing(raw):
                return None
            current = from_row(raw)
            if scope is not None and current.owner != scope:
                return None
            if current.status == SubscriptionStatus.DISABLED:
                return current
            wanted = SubscriptionStatus.PAUSED if paused else SubscriptionStatus.ACTIVE
            # The marker first: queued work that reads it before the row changes waits a moment
            # more (pause) or is released with the rest (resume), never attempted while paused.
            self._table.upsert_entity(kinds.pause_row(sub_id, paused))
            if current.status == wanted:
                self.reconcile(sub_id, current.event_types)
                return current
            written = self.write_row(raw, replace(current, status=wanted, updated_at=now()))
            if written is not None:
                self.reconcile(sub_id, current.event_types)
                return written
        raise Contended("the subscription kept changing under this pause; try again")

    # ---- removal -----------------------------------------------------------------------------

    def _tombstone(self, sub: Subscription) -> None:
        self._table.upsert_entity(kinds.tombstone_row(sub))

    def delete(self, sub_id: str, registration: int | None = None, scope: str | None = None) -> bool:
        """Remove a subscription; with `registration`, only if that is still its current one (a
        DELETE of a registration a later subscribe superseded removes nothing); with `scope` (a
        subscriber, not an admin), only if it is that owner's. Returns whether this call found it
        to remove.

        In order: the `removing` mark (a conditional write, so it is of the state just read,
        and every later change of the row sees it), a tombstone (queued work planned before
        skips it), the index rows, then the row with its URL row, leaving a record of what was
        indexed. Without a row, the index rows such a record names are removed again."""
        for _ in tries():
            raw = self.read(sub_id)
            if raw is None:
                self.remove_leftovers(sub_id)
                return False
            current = from_row(raw)
            if registration is not None and registration != current.registration:
                return False
            if scope is not None and current.owner != scope:
                return False
            if not current.removing:
                if self.write_row(raw, replace(current, removing=True, updated_at=now())) is None:
                    continue  # changed meanwhile: the registration may have been superseded
                # After the mark, never before: a DELETE that then finds its registration
                # superseded must not make queued work skip a subscription that stays.
                self._tombstone(current)
                raw = self.read(sub_id)
                if raw is None:
                    return True  # another caller finished the removal
            self.finish_delete(raw)
            return True
        raise Contended("the subscription kept changing under this delete; try again")

    def finish_delete(self, raw: TableEntity) -> None:
        """The rest of a DELETE whose `removing` mark is written (whoever meets the mark helps)."""
        sub = from_row(raw)
        self._index.delete(sub.id, sub.event_types)
        self._owners.delete_caller(sub)
        removed = kinds.removal_record(sub)
        for _ in tries():
            ops: list[Any] = [
                (
                    "delete",
                    {"PartitionKey": SUB_PARTITION, "RowKey": kinds.row_key(sub.id)},
                    {"etag": etag(raw), "match_condition": MatchConditions.IfNotModified},
                ),
                ("upsert", removed, {"mode": UpdateMode.REPLACE}),
            ]
            # The URL row goes only while it still points here (a later subscribe may own it).
            link = kinds.read_link(self._table, sub.notification_url)
            if kinds.link_target(link) == sub.id:
                ops.append(
                    (
                        "delete",
                        {"PartitionKey": SUB_PARTITION, "RowKey": url_key(sub.notification_url)},
                        {"etag": etag(link), "match_condition": MatchConditions.IfNotModified},
                    )
                )
            try:
                self._table.submit_transaction(ops)
                break
            except TableTransactionError as exc:
                if error_code(exc) not in ("ResourceNotFound", "UpdateConditionNotSatisfied"):
                    raise
                if self.read(sub.id) is None:
                    break  # another caller finished it
        self._owners.delete(sub.id, sub.owner)

    def remove_leftovers(self, sub_id: str) -> None:
        """Index rows of a subscription whose row is gone, as far as its removal record names them
        (a caller that died between writes may have left some)."""
        if not ID_RE.fullmatch(sub_id):
            return
        record = kinds.read_removal(self._table, sub_id)
        if record is not None:
            self._index.delete(sub_id, kinds.removal_patterns(record))

    # ---- tombstones and the sweeps -----------------------------------------------------------

    def changes(self, since_key: str) -> Changes:
        """For changes at or after `since_key`: subscription id -> newest removed generation, the
        ids whose secret was rotated (queued work must sign with the current secret), and those
        whose newest pause marker since then is a pause (queued work holds, does not attempt)."""
        since = clock.time_key(clock.from_time_key(since_key) - CLOCK_SKEW)
        removed: dict[str, int] = {}
        rotated: set[str] = set()
        paused: dict[str, bool] = {}
        for row in self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @since",
            parameters={"pk": TOMB_PARTITION, "since": since},
            results_per_page=1000,
        ):
            change = Change.of(row)
            if change.rotated:
                rotated.add(change.sub_id)
            elif change.paused is not None:
                paused[change.sub_id] = change.paused  # rows come in time order: the newest wins
            else:
                removed[change.sub_id] = max(removed.get(change.sub_id, -1), change.generation)
        return Changes(removed, rotated, {sub for sub, held in paused.items() if held})

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
        old = (r for r in removed if kinds.removed_before(r, before))
        return delete_rows(self._table, rows) + delete_rows(self._table, old)

    def repair_index(self, at: datetime | None = None) -> int:
        """Check the whole fan-out index against the subscription rows and repair where they
        disagree (the hourly sweep, relay.pipeline.retention): an index row without its subscription, of
        a subscription that receives nothing, of another generation or version or a pattern the
        row does not list, and a receiving subscription without its index rows, are reconciled
        from the row (`reconcile`, safe beside anything running); a DELETE that died mid-way
        (a `removing` row older than `STUCK_REMOVAL`) is finished. Returns how many subscriptions
        it repaired. Reads every index row and every subscription row, a few columns each."""
        at = at or clock.utcnow()
        subs = {
            state.id: state
            for state in map(
                RowState.of,
                self._table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    parameters={"pk": SUB_PARTITION, "lo": "i:", "hi": "i;"},
                    select=STATE_COLUMNS,
                    results_per_page=1000,
                ),
            )
        }
        indexed: dict[str, dict[str, tuple[int, int]]] = {}
        for row in self._table.query_entities(
            "PartitionKey ge @lo and PartitionKey lt @hi",
            parameters={"lo": "x:", "hi": "x;"},
            select=["PartitionKey", "RowKey", "gen", "ver"],
            results_per_page=1000,
        ):
            where = IndexedAt.of(row)
            indexed.setdefault(where.sub_id, {})[where.pattern] = (where.generation, where.version)
        repaired = 0
        for sub_id, state in subs.items():
            if state.removing and (state.changed_at or at) + STUCK_REMOVAL < at:
                raw = self.read(sub_id)
                if raw is not None and kinds.is_removing(raw):
                    log.warning("finishing a removal that stopped mid-way subscription=%s", sub_id)
                    self.finish_delete(raw)
                    repaired += 1
                    indexed.pop(sub_id, None)
        for sub_id in sorted(set(indexed) | set(subs)):
            found = subs.get(sub_id)
            have = indexed.get(sub_id, {})
            if found is not None:
                want = set(found.event_types) if found.receives else set()
                expected = (found.generation, found.version)
                if want == set(have) and all(v == expected for v in have.values()):
                    continue
            elif not have:
                continue
            else:
                log.warning("removing fan-out index rows without a subscription subscription=%s", sub_id)
            self.reconcile(sub_id, have)
            repaired += 1
        return repaired


@dataclass(frozen=True)
class Changes:
    """What queued work planned at a moment must honour (`Lifecycle.changes`)."""

    removed: dict[str, int]  # subscription id -> newest removed generation
    rotated: set[str]  # secret rotated: sign with the current one
    paused: set[str]  # paused (newest marker): hold, do not attempt
