"""The other kinds of row of the subscriptions table (the table is in the package's docstring):
URL rows, removal records, tombstones, owner rows, presence rows and the layout marker. Like
`rows`, the only place that knows their column names."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from relay.core import clock
from relay.store.subscriptions.rows import (
    ID_RE,
    LAYOUT_PENDING,
    LAYOUT_ROW,
    PAUSE_MARK,
    PRESENCE_PARTITION,
    RESUME_MARK,
    SUB_PARTITION,
    TOMB_PARTITION,
    Subscription,
    owner_partition,
    url_key,
)


def row_key(sub_id: str) -> str:
    return f"i:{sub_id}"


def link_row(url: str, sub_id: str) -> dict[str, Any]:
    """The URL row (URL -> id), written in the same transaction as the subscription's."""
    return {"PartitionKey": SUB_PARTITION, "RowKey": url_key(url), "id": sub_id}


def link_target(link: TableEntity | None) -> str | None:
    """The id a URL row points to."""
    return None if link is None else str(link["id"])


def removal_record(sub: Subscription) -> dict[str, Any]:
    """What a DELETE leaves behind (`s` / `d:{id}`): the patterns that may hold its index rows."""
    return {
        "PartitionKey": SUB_PARTITION,
        "RowKey": f"d:{sub.id}",
        "patterns": json.dumps(list(sub.event_types)),
        "gen": sub.generation,
        "removedAt": clock.rfc3339(clock.utcnow()),
    }


def removal_patterns(record: Mapping[str, Any]) -> list[str]:
    patterns: list[str] = json.loads(record.get("patterns") or "[]")
    return patterns


def removed_before(record: Mapping[str, Any], before: datetime) -> bool:
    return clock.parse_rfc3339(record.get("removedAt") or clock.rfc3339(before)) < before


def tombstone_row(sub: Subscription) -> dict[str, Any]:
    return {
        "PartitionKey": TOMB_PARTITION,
        "RowKey": f"{clock.time_key(clock.utcnow())}_{sub.id}",
        "id": sub.id,
        "gen": sub.generation,
    }


def rotation_row(sub_id: str) -> dict[str, Any]:
    return {
        "PartitionKey": TOMB_PARTITION,
        "RowKey": f"{clock.time_key(clock.utcnow())}_{sub_id}_secret",
        "id": sub_id,
        "kind": "secret",
    }


def pause_row(sub_id: str, paused: bool) -> dict[str, Any]:
    """The marker of a pause (or resume): queued work planned before it learns of it here."""
    kind = PAUSE_MARK if paused else RESUME_MARK
    return {
        "PartitionKey": TOMB_PARTITION,
        "RowKey": f"{clock.time_key(clock.utcnow())}_{sub_id}_{kind}",
        "id": sub_id,
        "kind": kind,
    }


def owner_row(sub_id: str, owner: str) -> dict[str, Any]:
    return {"PartitionKey": owner_partition(owner), "RowKey": sub_id, "owner": owner}


def owner_change(raw: TableEntity, owner: str) -> dict[str, Any]:
    """A merge that gives the row read as `raw` another owner."""
    return {"PartitionKey": SUB_PARTITION, "RowKey": raw["RowKey"], "owner": owner}


def owner_of(raw: Mapping[str, Any]) -> str | None:
    owner = raw.get("owner")
    return owner if isinstance(owner, str) else None


def is_removing(raw: Mapping[str, Any]) -> bool:
    return bool(raw.get("removing"))


def layout_state(row: Mapping[str, Any]) -> str:
    state: str = row.get("layout") or LAYOUT_PENDING
    return state


def layout_row(state: str, *, since: bool = True) -> dict[str, Any]:
    """The layout marker; `since` (when it was first written) only in the first write."""
    row = {"PartitionKey": PRESENCE_PARTITION, "RowKey": LAYOUT_ROW, "layout": state}
    if since:
        row["since"] = clock.rfc3339(clock.utcnow())
    return row


def layout_since(row: Mapping[str, Any]) -> datetime:
    return clock.parse_rfc3339(row["since"])


def presence_token(row: Mapping[str, Any]) -> str | None:
    token = row.get("v")
    return token if isinstance(token, str) else None


def presence_upserts(patterns: Iterable[str]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """A transaction's operations writing presence rows for these patterns, with a new token."""
    token = uuid.uuid4().hex
    return [
        ("upsert", {"PartitionKey": PRESENCE_PARTITION, "RowKey": p, "v": token}, {"mode": UpdateMode.MERGE})
        for p in patterns
    ]


def read_row(table: TableClient, sub_id: str) -> TableEntity | None:
    """The subscription's own row as stored (with its ETag), or None (also for a malformed id)."""
    if not ID_RE.fullmatch(sub_id):
        return None
    try:
        return table.get_entity(SUB_PARTITION, row_key(sub_id))
    except ResourceNotFoundError:
        return None


def read_link(table: TableClient, url: str) -> TableEntity | None:
    """The URL row (URL -> id) of a callback URL, or None."""
    try:
        return table.get_entity(SUB_PARTITION, url_key(url))
    except ResourceNotFoundError:
        return None


def read_removal(table: TableClient, sub_id: str) -> TableEntity | None:
    """The removal record a DELETE left (`s` / `d:{id}`), or None."""
    try:
        return table.get_entity(SUB_PARTITION, f"d:{sub_id}")
    except ResourceNotFoundError:
        return None


def health_patch(sub_id: str, failing_since: datetime | None, last_error: str | None) -> dict[str, Any]:
    """A merge of the failure record alone (`Subscription.failing_since`): not a change of the
    subscription's state, so its version (and its index rows) stay as they are. Empty strings
    stand for "none": a merge cannot remove a property."""
    return {
        "PartitionKey": SUB_PARTITION,
        "RowKey": row_key(sub_id),
        "failingSince": clock.rfc3339(failing_since) if failing_since else "",
        "lastError": (last_error or "")[:1024],
    }
