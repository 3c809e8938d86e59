"""Accepting events, and the claim checks that keep large data out of messages and rows.

Publishing only enqueues: the queue message is the durable record behind the 202; fan-out logs
the event (`relay.store.eventlog`, which also de-duplicates) and delivers it. Data larger than
`INLINE_DATA_BYTES` travels as a blob in the payload container, named by nothing the publisher
chose; this module alone writes, reads and forgets those blobs.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Protocol

from relay.core import clock
from relay.core.jsontext import compact
from relay.core.models import EventIn, EventRecord
from relay.store.storage import Storage

# Data up to this many bytes of JSON travels inline in queue messages (48 KiB of data after
# base64) and in table rows (64 KiB per string property); larger data goes to a blob.
INLINE_DATA_BYTES = 30_000


def event_size(raw: Any) -> int:
    """The size the contract's RELAY_MAX_EVENT_BYTES limits: the event's JSON, compact, in UTF-8."""
    return len(compact(raw).encode("utf-8"))


def accept(event: EventIn, source: str, publisher: str | None = None, ext: dict[str, Any] | None = None) -> EventRecord:
    """The event as the relay keeps it; `publisher` (entra mode) scopes its identity; `ext` holds
    the CloudEvents attributes the relay has no field for (relay.http.cloudevents_in)."""
    now = clock.utcnow()
    return EventRecord(
        id=event.id or uuid.uuid4().hex,
        generated=event.id is None,
        type=event.type,
        source=event.source or source,
        time=event.time or clock.rfc3339(now),
        subject=event.subject,
        data=event.data,
        publisher=publisher,
        ext=ext or None,
        # To the microsecond: a polling chain holds exactly the events accepted after its start.
        acceptedAt=now,
    )


def claim_check(storage: Storage, record: EventRecord, limit: int = INLINE_DATA_BYTES) -> EventRecord:
    """Move large data to a blob and carry its name instead."""
    if record.blob is not None:
        return record
    data = compact(record.data).encode("utf-8")
    if len(data) <= limit:
        return record
    # Named by nothing the publisher chose: an id such as `..` must not become a path.
    name = f"{clock.day_bucket(clock.utcnow())}/{uuid.uuid4().hex}.json"
    storage.container().upload_blob(name, data, overwrite=True)
    return record.model_copy(update={"data": None, "blob": name})


class Carried(Protocol):
    """An event as a message or the log carries it: its data inline, or the name of its blob."""

    @property
    def data(self) -> Any: ...

    @property
    def blob(self) -> str | None: ...


def load_data(storage: Storage, record: Carried) -> Any:
    if record.blob is None:
        return record.data
    return json.loads(storage.container().download_blob(record.blob).readall())


def forget_blobs(storage: Storage, before: datetime) -> int:
    """Delete the claim-check blobs last written before a moment; returns how many."""
    container = storage.container()
    old = [b.name for b in container.list_blobs() if b.last_modified and b.last_modified < before]
    for name in old:
        container.delete_blob(name, delete_snapshots="include")
    return len(old)
