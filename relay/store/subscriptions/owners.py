"""Who a subscription belongs to and who subscribed it: the owner index (`o:{hash}`, entra mode),
its adoption when an owner key changes format, and the Logic Apps caller rows (`w:`, `k:`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.paging import PageIterator
from azure.data.tables import TableClient, TableEntity, UpdateMode

from relay.core import runtime
from relay.core.matching import type_matches
from relay.store.paging import decode_token, encode_token
from relay.store.subscriptions import kinds
from relay.store.subscriptions.rows import Caller, Subscription, caller_key, from_row, owner_partition


class Owners:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def _get(self, sub_id: str) -> Subscription | None:
        raw = kinds.read_row(self._table, sub_id)
        return from_row(raw) if raw is not None else None

    # ---- the owner index ---------------------------------------------------------------------

    def write(self, sub_id: str, owner: str | None) -> None:
        if owner is not None:
            self._table.upsert_entity(kinds.owner_row(sub_id, owner))

    def delete(self, sub_id: str, owner: str | None) -> None:
        if owner is not None:
            self._table.delete_entity(owner_partition(owner), sub_id)

    def page(
        self, owner: str, *, limit: int, token: str | None, event_type: str | None
    ) -> tuple[list[Subscription], str | None]:
        """One page of one owner's subscriptions, read through the owner index."""
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
        found = list(runtime.current().reads().map(self._get, ids)) if ids else []
        # An index row outlives a subscription deleted meanwhile; the owner check guards hash reuse.
        page = [e for e in found if e is not None and e.owner == owner]
        if event_type is not None:
            page = [e for e in page if type_matches(e.event_types, event_type)]
        return page, encode_token(pages.continuation_token)

    def adopt(self, old: str, new: str) -> int:
        """Move the subscriptions owned by `old` to `new` (an owner key changing its format; the
        store treats both as opaque text): the owner index row first, then the row itself,
        conditional on its ETag (a row changed meanwhile is left for the next call). Returns how
        many moved."""
        moved = 0
        for index_row in self._table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": owner_partition(old)}, select=["RowKey"]
        ):
            sub_id = index_row["RowKey"]
            raw = kinds.read_row(self._table, sub_id)
            if raw is not None and kinds.owner_of(raw) == old:
                self.write(sub_id, new)  # before the row, as on create: never missing from a list
                try:
                    self._table.update_entity(
                        kinds.owner_change(raw, new),
                        mode=UpdateMode.MERGE,
                        etag=raw.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                except (ResourceNotFoundError, HttpResponseError):
                    continue  # deleted or changed meanwhile: the old index row stays, tried again later
                moved += 1
            self.delete(sub_id, old)
        return moved

    # ---- the Logic Apps caller rows ----------------------------------------------------------

    @staticmethod
    def caller_partitions(sub: Subscription) -> list[str]:
        found = []
        if sub.workflow_id and sub.workflow_operation_name:
            found.append("w:" + caller_key(sub.workflow_id, sub.workflow_operation_name))
        if sub.client_tracking_id:
            found.append("k:" + caller_key(sub.client_tracking_id))
        return found

    def write_caller(self, sub: Subscription) -> None:
        for partition in self.caller_partitions(sub):
            self._table.upsert_entity({"PartitionKey": partition, "RowKey": sub.id}, mode=UpdateMode.REPLACE)

    def delete_caller(self, sub: Subscription) -> None:
        for partition in self.caller_partitions(sub):
            self._table.delete_entity(partition, sub.id)

    def _by_caller(self, partition: str, matches: Callable[[Subscription], bool]) -> list[Subscription]:
        """The subscriptions a caller partition names that still record this caller; stale rows go."""
        found = []
        for row in list(
            self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition}, results_per_page=1000, select=["RowKey"]
            )
        ):
            sub = self._get(row["RowKey"])
            if sub is not None and matches(sub):
                found.append(sub)
            else:
                self._table.delete_entity(partition, row["RowKey"])
        return found

    def subscribed_by(self, caller: Caller) -> list[Subscription]:
        """What a Logic Apps HTTP Webhook subscribed, found by the headers of its unsubscribe
        call: workflow id + operation name, else the client tracking id. Runs of one workflow's
        action share the first two, so where several match, the tracking id (one per run)
        narrows them when it can."""
        workflow, operation, tracking = caller.workflow_id, caller.workflow_operation_name, caller.client_tracking_id
        found: list[Subscription] = []
        if workflow and operation:
            found = self._by_caller(
                "w:" + caller_key(workflow, operation),
                lambda e: e.workflow_id == workflow and e.workflow_operation_name == operation,
            )
            same_run = [e for e in found if tracking and e.client_tracking_id == tracking]
            if len(found) > 1 and same_run:
                found = same_run
        if not found and tracking:
            found = self._by_caller("k:" + caller_key(tracking), lambda e: e.client_tracking_id == tracking)
        return found
