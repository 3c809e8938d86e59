"""Work due later (a retry, a deferred attempt) kept out of the triggered queues until it is due.

Why: Flex Consumption scales a queue-triggered function by target-based scaling, instances wanted
= queue length / `batchSize`, and the Storage Queues extension counts invisible messages in that
length (docs/scaling.md cites the page). A retry sent invisible for hours would keep `deliver`
scaled out, each instance polling an empty queue, and the app would never scale to zero. So a
delay of at least one due-timer period (RELAY_DUE_PERIOD, a minute by default) is written here
instead, as a row of the `relaydue` table, and the `due` timer moves it into its queue once due:

- the partition is the minute the row is due in (`b20261207T1201`), the row key its due time to
  the microsecond and a random suffix, so one run reads what is due with one query per minute
  partition (`PartitionKey eq … and RowKey lt now`): never a query across partitions;
- a cursor row (partition `cursor`) names the last minute fully moved; a run reads the minutes
  after it up to now, at most `MAX_PARTITIONS` of them (after a long outage it catches up an hour
  a run), and moves the cursor past a minute once that minute has been over for `SKEW` seconds
  (a writer on an instance whose clock is a little behind can still add to it until then);
- a row is sent to its queue first and deleted after (a hundred rows a transaction): a run killed
  in between sends those rows again next time, at least once as every delivery is, never lost.

Per retry that is one insert, one send and a hundredth of a delete transaction, plus the runs'
own reads (a point read of the cursor and a query per open minute, whatever the number of rows).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity

from relay.core import clock, runtime
from relay.store.storage import DUE_TABLE, Storage, delete_rows

log = logging.getLogger("relay.due")

BUCKET = timedelta(minutes=1)
SKEW = timedelta(seconds=60)
MAX_PARTITIONS = 60  # minute partitions one run reads at most
MAX_ROWS = 5000  # rows one run moves at most; the rest wait for the next run
MAX_TEXT = 30_000  # a table string property holds 32 Ki UTF-16 units; larger work stays in the queue
CURSOR = ("cursor", "due")
_BUCKET_FORMAT = "b%Y%m%dT%H%M"


class _Cursors:
    """The storage client sets whose cursor is known to exist: a part of the runtime."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made: set[int] = set()


def forget_cursors() -> None:
    """Check the cursor again before the next row (a test deleted it)."""
    runtime.current().drop("due.cursors")


def bucket_of(moment: datetime) -> str:
    """The minute partition `moment` falls in."""
    return moment.astimezone(UTC).strftime(_BUCKET_FORMAT)


def bucket_start(bucket: str) -> datetime:
    return datetime.strptime(bucket, _BUCKET_FORMAT).replace(tzinfo=UTC)


def due_schedule(period: float) -> str:
    """The NCRONTAB schedule of a timer every `period` seconds (one of settings.DUE_PERIODS)."""
    seconds = int(period)
    if seconds < 60:
        return f"*/{seconds} * * * * *"
    return f"0 */{seconds // 60} * * * *"


class DueTable:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._table = storage.table(DUE_TABLE)

    # ---- writing --------------------------------------------------------------------------

    def add(self, queue: str, text: str, delay: float) -> None:
        """`text` for `queue`, due in `delay` seconds: one insert."""
        self._ensure_cursor()
        due = clock.utcnow() + timedelta(seconds=delay)
        self._table.create_entity(
            {
                "PartitionKey": bucket_of(due),
                "RowKey": f"{clock.time_key(due)}-{uuid.uuid4().hex[:12]}",
                "Queue": queue,
                "Body": text,
            }
        )

    def _ensure_cursor(self) -> None:
        """The cursor exists before the first row this process writes, and points before it: a
        first run of the timer after that row cannot start past it. One request per process."""
        cursors = runtime.current().part("due.cursors", _Cursors)
        with cursors.lock:
            if id(self._storage) in cursors.made:
                return
        try:
            self._table.create_entity(self._cursor_row(bucket_of(clock.utcnow() - BUCKET)))
        except ResourceExistsError:
            pass
        with cursors.lock:
            cursors.made.add(id(self._storage))

    @staticmethod
    def _cursor_row(bucket: str) -> dict[str, Any]:
        return {"PartitionKey": CURSOR[0], "RowKey": CURSOR[1], "Bucket": bucket}

    # ---- the timer's run ------------------------------------------------------------------

    def move(self, send: Callable[[str, str], Future[Any]], now: datetime | None = None) -> int:
        """Send every row due by `now` to its queue and delete it; returns how many were moved."""
        now = now or clock.utcnow()
        try:
            row = self._table.get_entity(*CURSOR)
            done, etag = str(row["Bucket"]), row.metadata.get("etag")
        except ResourceNotFoundError:
            # No writer has run yet: nothing can be due before the minute before now.
            done, etag = bucket_of(now - BUCKET), None
        upto = clock.time_key(now) + "~"  # after every row key of this instant ("-" < "~")
        moved, advanced, contiguous = 0, done, True
        bucket = bucket_start(done) + BUCKET
        last = bucket_start(bucket_of(now))
        for _ in range(MAX_PARTITIONS):
            if bucket > last or moved >= MAX_ROWS:
                break
            name = bucket_of(bucket)
            count, complete = self._move_partition(name, upto, send, MAX_ROWS - moved)
            moved += count
            if not complete:
                break  # the budget ran out inside this minute: the next run goes on from here
            # The cursor passes only minutes over for SKEW: a writer can still add to a later one.
            contiguous = contiguous and bucket + BUCKET + SKEW <= now
            if contiguous:
                advanced = name
            bucket += BUCKET
        if advanced != done:
            self._save_cursor(advanced, etag)
        return moved

    def _move_partition(
        self, bucket: str, upto: str, send: Callable[[str, str], Future[Any]], budget: int
    ) -> tuple[int, bool]:
        """Move the due rows of one minute partition, up to `budget`; (moved, all due moved)."""
        rows: list[TableEntity] = []
        for row in self._table.query_entities(
            "PartitionKey eq @pk and RowKey lt @upto",
            parameters={"pk": bucket, "upto": upto},
            select=["PartitionKey", "RowKey", "Queue", "Body"],
            results_per_page=1000,
        ):
            if len(rows) >= budget:
                break
            rows.append(row)
        else:
            budget = len(rows) + 1  # the query ended: every due row is here
        if not rows:
            return 0, True
        sends = [(row, send(str(row["Queue"]), str(row["Body"]))) for row in rows]
        sent: list[TableEntity] = []
        failure: Exception | None = None
        for row, future in sends:
            try:
                future.result()
                sent.append(row)
            except Exception as exc:  # noqa: BLE001 - the row stays and is sent by a later run
                failure = failure or exc
        self._delete(sent)
        if failure is not None:
            raise failure
        return len(sent), len(rows) < budget

    def _delete(self, rows: list[TableEntity]) -> None:
        """Delete the rows sent. A row another run deleted first (two runs at once: a host that
        lost the timer's lock mid-run) does not stop the others going (`delete_rows`), so that they
        are not sent again by the next run."""
        delete_rows(self._table, rows)

    def _save_cursor(self, bucket: str, etag: str | None) -> None:
        row = self._cursor_row(bucket)
        try:
            if etag is None:
                self._table.upsert_entity(row)
            else:
                self._table.update_entity(row, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, HttpResponseError) as exc:
            # Another run moved it (two dev hosts on one storage account): it knows better.
            log.info("due cursor not moved to %s: %s", bucket, type(exc).__name__)
