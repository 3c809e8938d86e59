"""Subscriptions in Azure Table Storage.

One table, four kinds of row, keyed for the access patterns:

| partition       | row key        | what                                                     |
|-----------------|----------------|----------------------------------------------------------|
| `s`             | `i:{id}`       | the subscription (point read by id, listing)             |
| `s`             | `u:{sha256}`   | URL -> id, written in the same transaction as the above  |
| `x:{pattern}`   | `{id}`         | fan-out index: one row per pattern, carrying all a       |
|                 |                | delivery needs, so fan-out reads only matching rows      |
| `t`             | `{time}_{id}`  | tombstone: queued work skips subscriptions removed after |
|                 |                | it read the index                                        |

Index rows are written after the subscription on create and removed before it on delete, and a
tombstone is written before either, so a reader never delivers to a subscription whose DELETE
was answered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import uuid
from datetime import timedelta
from typing import Any, Iterable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from . import clock
from .paging import decode_token, encode_token
from .matching import patterns_for_type, subject_matches, type_matches
from .models import SubscriptionRequest, Target
from .storage import SUBSCRIPTIONS_TABLE, Storage

ID_RE = re.compile(r"^[0-9a-f]{32}$")
SUB_PARTITION = "s"
TOMB_PARTITION = "t"
# Clocks of different instances disagree a little; tombstones this much older than a reader's
# index read still count, at the price of reading a few more rows.
CLOCK_SKEW = timedelta(minutes=5)
# Azure Tables allows at most 15 comparisons in one filter.
_MAX_OR = 15
# Reading only these spares parsing the rest (Timestamp, etag) of every index row.
_INDEX_FIELDS = ("RowKey", "url", "secret", "once", "gen", "subjectBeginsWith", "subjectEndsWith", "contentMode")


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def url_key(url: str) -> str:
    return "u:" + hashlib.sha256(url.encode("utf-8")).hexdigest()


def public_view(entity: dict[str, Any], *, with_secret: bool = False) -> dict[str, Any]:
    """The subscription as the API shows it; the secret only to the call that created it."""
    view: dict[str, Any] = {
        "id": entity["id"],
        "notificationUrl": entity["notificationUrl"],
        "eventTypes": json.loads(entity["eventTypes"]),
    }
    for name in ("subjectBeginsWith", "subjectEndsWith", "description"):
        if entity.get(name) is not None:
            view[name] = entity[name]
    view["once"] = bool(entity.get("once", False))
    view["contentMode"] = entity.get("contentMode") or "json"  # rows from before the field: json
    view["status"] = entity.get("status", "active")
    if view["status"] == "disabled" and entity.get("disabledReason"):
        view["disabledReason"] = entity["disabledReason"]
    view["createdAt"] = entity["createdAt"]
    if with_secret:
        view["secret"] = entity["secret"]
    return view


def _or_filter(name: str, values: list[str]) -> tuple[str, dict[str, str]]:
    params = {f"p{i}": v for i, v in enumerate(values)}
    return " or ".join(f"{name} eq @p{i}" for i in range(len(values))), params


class SubscriptionStore:
    def __init__(self, storage: Storage) -> None:
        self._table: TableClient = storage.table(SUBSCRIPTIONS_TABLE)

    # ---- create / update ----------------------------------------------------------------

    def subscribe(self, request: SubscriptionRequest) -> tuple[dict[str, Any], bool]:
        """Create, or update the existing subscription of this URL; returns (entity, created)."""
        url = request.notificationUrl
        patterns = request.patterns()
        now = clock.rfc3339(clock.utcnow())
        fields = {
            "eventTypes": json.dumps(patterns),
            "subjectBeginsWith": request.subjectBeginsWith,
            "subjectEndsWith": request.subjectEndsWith,
            "description": request.description,
            "once": request.once,
            "contentMode": request.contentMode,
            "status": "active",
            "disabledReason": None,
            "updatedAt": now,
        }
        for _ in range(5):
            found = self._create_or_update(url, fields, patterns, now)
            if found is not None:
                return found
        raise RuntimeError("the subscription kept changing under this subscribe; try again")

    def _create_or_update(self, url: str, fields: dict[str, Any], patterns: list[str],
                          now: str) -> tuple[dict[str, Any], bool] | None:
        """One try; None when a concurrent change (a DELETE of the same URL) got in between."""
        existing_id = self._id_for_url(url)
        if existing_id is None:
            sub_id = uuid.uuid4().hex
            entity = {"PartitionKey": SUB_PARTITION, "RowKey": f"i:{sub_id}", "id": sub_id,
                      "notificationUrl": url, "secret": new_secret(), "createdAt": now, "gen": 0,
                      **fields}
            link = {"PartitionKey": SUB_PARTITION, "RowKey": url_key(url), "id": sub_id}
            try:
                self._table.submit_transaction([("create", _clean(entity)), ("create", link)])
            except TableTransactionError as exc:
                if exc.error_code != "EntityAlreadyExists":
                    raise
                return None  # someone subscribed the same URL a moment ago: theirs is the one
            self._write_index(entity, patterns)
            return entity, True
        updated = self._update(existing_id, url, fields, patterns)
        return (updated, False) if updated is not None else None

    def _update(self, sub_id: str, url: str, fields: dict[str, Any], patterns: list[str]) -> dict[str, Any] | None:
        """Take the new filters; None if the subscription or its URL row changed meanwhile."""
        try:
            raw = self._table.get_entity(SUB_PARTITION, f"i:{sub_id}")
            current: dict[str, Any] = dict(raw)
            write: tuple[Any, ...] = ("update", None, {"mode": UpdateMode.REPLACE, "etag": raw.metadata["etag"],
                                                       "match_condition": MatchConditions.IfNotModified})
        except ResourceNotFoundError:
            # The URL row outlived its subscription (a crash between writes): make it whole.
            current = {"PartitionKey": SUB_PARTITION, "RowKey": f"i:{sub_id}", "id": sub_id,
                       "notificationUrl": url, "secret": new_secret(), "createdAt": fields["updatedAt"],
                       "gen": 0, "eventTypes": "[]"}
            write = ("upsert", None, {"mode": UpdateMode.REPLACE})
        old_patterns = json.loads(current.get("eventTypes") or "[]") if current.get("status") != "disabled" else []
        entity = {**current, **fields}
        if current.get("status") == "disabled":
            # A new generation, so tombstones of the disabled one no longer stop its deliveries.
            entity["gen"] = int(current.get("gen") or 0) + 1
        # One transaction with a check that the URL row still points here: a DELETE that got in
        # between fails it, rather than this bringing back a subscription its URL no longer finds.
        link = {"PartitionKey": SUB_PARTITION, "RowKey": url_key(url), "id": sub_id}
        try:
            self._table.submit_transaction([(write[0], _clean(entity), write[2]),
                                            ("update", link, {"mode": UpdateMode.MERGE})])
        except TableTransactionError as exc:
            if exc.error_code in ("ResourceNotFound", "UpdateConditionNotSatisfied", "EntityAlreadyExists"):
                return None
            raise
        self._write_index(entity, patterns)
        stale = [p for p in old_patterns if p not in patterns]
        if stale:
            self._delete_index(sub_id, stale)
        return entity

    def _write_index(self, entity: dict[str, Any], patterns: Iterable[str]) -> None:
        for pattern in patterns:
            self._table.upsert_entity(_clean({
                "PartitionKey": f"x:{pattern}", "RowKey": entity["id"],
                "url": entity["notificationUrl"], "secret": entity["secret"],
                "once": bool(entity.get("once")), "gen": int(entity.get("gen") or 0),
                "subjectBeginsWith": entity.get("subjectBeginsWith"),
                "subjectEndsWith": entity.get("subjectEndsWith"),
                "contentMode": entity.get("contentMode") or "json",
            }), mode=UpdateMode.REPLACE)

    def _delete_index(self, sub_id: str, patterns: Iterable[str]) -> None:
        for pattern in patterns:
            self._table.delete_entity(f"x:{pattern}", sub_id)

    # ---- reads ----------------------------------------------------------------------------

    def _id_for_url(self, url: str) -> str | None:
        try:
            return self._table.get_entity(SUB_PARTITION, url_key(url))["id"]
        except ResourceNotFoundError:
            return None

    def _get_entity(self, sub_id: str) -> dict[str, Any] | None:
        if not ID_RE.match(sub_id):
            return None
        try:
            return dict(self._table.get_entity(SUB_PARTITION, f"i:{sub_id}"))
        except ResourceNotFoundError:
            return None

    def get(self, sub_id: str) -> dict[str, Any] | None:
        return self._get_entity(sub_id)

    def list(self, *, limit: int, token: str | None,
             event_type: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of subscriptions; with `event_type`, those that would receive such an event."""
        pages = self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            parameters={"pk": SUB_PARTITION, "lo": "i:", "hi": "i;"},
            results_per_page=limit,
        ).by_page(continuation_token=decode_token(token))
        page = [dict(e) for e in next(pages, [])]
        if event_type is not None:
            page = [e for e in page if type_matches(json.loads(e["eventTypes"]), event_type)]
        return page, encode_token(pages.continuation_token)

    def matching(self, event_type: str, subject: str | None) -> Iterator[list[Target]]:
        """The active subscriptions an event goes to, a page at a time, read from the index
        partitions its type matches; a subscription matching several patterns comes once."""
        seen: set[str] = set()
        patterns = patterns_for_type(event_type)
        for start in range(0, len(patterns), _MAX_OR):
            flt, params = _or_filter("PartitionKey", [f"x:{p}" for p in patterns[start:start + _MAX_OR]])
            pages = self._table.query_entities(flt, parameters=params, results_per_page=1000,
                                               select=list(_INDEX_FIELDS)).by_page()
            for page in pages:
                found = []
                for row in page:
                    if row["RowKey"] in seen or not subject_matches(
                            subject, row.get("subjectBeginsWith"), row.get("subjectEndsWith")):
                        continue
                    seen.add(row["RowKey"])
                    found.append(Target(sub=row["RowKey"], url=row["url"], secret=row["secret"],
                                        once=bool(row.get("once")), gen=int(row.get("gen") or 0),
                                        mode=row.get("contentMode") or "json"))
                if found:
                    yield found

    def removed_since(self, since_key: str) -> dict[str, int]:
        """Subscription id -> newest removed generation, for removals at or after `since_key`."""
        since = clock.time_key(clock.from_time_key(since_key) - CLOCK_SKEW)
        removed: dict[str, int] = {}
        for row in self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @since",
                parameters={"pk": TOMB_PARTITION, "since": since}, results_per_page=1000):
            sub_id = row["id"]
            removed[sub_id] = max(removed.get(sub_id, -1), int(row.get("gen") or 0))
        return removed

    # ---- removal --------------------------------------------------------------------------

    def _tombstone(self, entity: dict[str, Any]) -> None:
        key = clock.time_key(clock.utcnow())
        self._table.upsert_entity({"PartitionKey": TOMB_PARTITION, "RowKey": f"{key}_{entity['id']}",
                                   "id": entity["id"], "gen": int(entity.get("gen") or 0)})

    def delete(self, sub_id: str) -> None:
        entity = self._get_entity(sub_id)
        if entity is None:
            return
        self._tombstone(entity)
        self._delete_index(sub_id, json.loads(entity.get("eventTypes") or "[]"))
        ops = [("delete", {"PartitionKey": SUB_PARTITION, "RowKey": f"i:{sub_id}"})]
        # Only drop the URL row if it still points here (a later subscribe may have replaced it).
        if self._id_for_url(entity["notificationUrl"]) == sub_id:
            ops.append(("delete", {"PartitionKey": SUB_PARTITION, "RowKey": url_key(entity["notificationUrl"])}))
        try:
            self._table.submit_transaction(ops)
        except TableTransactionError as exc:
            if exc.error_code != "ResourceNotFound":
                raise

    def unsubscribe(self, url: str) -> None:
        sub_id = self._id_for_url(url)
        if sub_id is not None:
            self.delete(sub_id)

    def disable(self, sub_id: str, reason: str) -> None:
        """Stop deliveries to a subscription whose receiver said it is gone; keep it visible."""
        entity = self._get_entity(sub_id)
        if entity is None or entity.get("status") == "disabled":
            return
        self._tombstone(entity)
        self._delete_index(sub_id, json.loads(entity.get("eventTypes") or "[]"))
        try:
            self._table.update_entity({"PartitionKey": SUB_PARTITION, "RowKey": f"i:{sub_id}",
                                       "status": "disabled", "disabledReason": reason[:1024],
                                       "updatedAt": clock.rfc3339(clock.utcnow())}, mode=UpdateMode.MERGE)
        except ResourceNotFoundError:
            pass


def _clean(entity: dict[str, Any]) -> dict[str, Any]:
    """Tables cannot store None; an absent property reads back as absent."""
    return {k: v for k, v in entity.items() if v is not None}

