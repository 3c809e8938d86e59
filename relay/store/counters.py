"""The console's delivery counters (relay.pipeline.stats writes and reads them): rows of the
delivery log table per hour and per minute, with a sparse histogram of answer times."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.data.tables import TableClient, UpdateMode

from relay.core import clock
from relay.store.storage import DELIVERIES_TABLE, Storage

COUNTER_PREFIX = "c:"
_HOUR_FORMAT = "%Y%m%d%H"


@dataclass(frozen=True)
class CounterRow:
    """One process's running totals of attempt outcomes for a minute or a whole hour."""

    hour: datetime  # the hour counted (UTC, on the hour)
    minute: int | None  # the minute of that hour, or None for the hour's row
    process: str
    totals: Mapping[str, int]  # outcome -> attempts
    untracked: int  # attempts of subscriptions beyond what a row keeps per subscription
    subs: Mapping[str, list[Any]]  # subscription id -> its figures (relay.pipeline.stats.SubCounts)
    hists: Mapping[str, Mapping[int, int]] = field(default_factory=dict)  # sub id -> answer-time buckets

    @property
    def start(self) -> datetime:
        return self.hour if self.minute is None else self.hour.replace(minute=self.minute)


# A string property holds at most 64 KiB (32K UTF-16 characters): histograms past this are left out.
_HISTS_CHARS = 30_000


def _hists_column(hists: Mapping[str, Mapping[int, int]]) -> str:
    kept: dict[str, Mapping[int, int]] = {}
    size = 2
    for sub_id, hist in hists.items():
        part = len(json.dumps({sub_id: hist}, separators=(",", ":")))
        if size + part > _HISTS_CHARS:
            break
        kept[sub_id] = hist
        size += part
    return json.dumps(kept, separators=(",", ":"))


class Counters:
    """The counter rows of the delivery log table: a partition per hour, a row per process and
    minute or hour, written whole (so a repeated write counts nothing twice)."""

    def __init__(self, storage: Storage) -> None:
        self._table: TableClient = storage.table(DELIVERIES_TABLE)

    def write(self, rows: Iterable[CounterRow], at: datetime) -> None:
        """Replace the given rows; one table transaction per hour."""
        batches: dict[str, list[Any]] = {}
        for row in rows:
            part = "h" if row.minute is None else f"m{row.minute:02d}"
            partition = COUNTER_PREFIX + row.hour.strftime(_HOUR_FORMAT)
            entity = {
                "PartitionKey": partition,
                "RowKey": f"{part}_{row.process}",
                **row.totals,
                "untracked": row.untracked,
                "subs": json.dumps(row.subs, separators=(",", ":")),
                "hists": _hists_column(row.hists),
                # The retention sweep removes delivery log rows by these two.
                "lastAttemptAt": clock.rfc3339(at),
                "status": "counted",
            }
            batches.setdefault(partition, []).append(("upsert", entity, {"mode": UpdateMode.REPLACE}))
        for ops in batches.values():
            self._table.submit_transaction(ops)  # one partition, usually two rows: one transaction

    def read(self, unit: str, first: datetime, last: datetime, outcomes: Iterable[str]) -> Iterator[CounterRow]:
        """Every process's rows of a unit (`minute` or `hour`) whose hour is that of `first`,
        of `last`, or (for hours) between them."""
        # One query per hour's partition: Azure Tables serves an `or` or a range across partitions
        # as a scan of the table (docs/decisions.md), which the benchmark counts and refuses.
        start = first.replace(minute=0, second=0, microsecond=0)
        end = last.replace(minute=0, second=0, microsecond=0)
        if unit == "minute":
            hours = sorted({start, end})
            rows = "RowKey ge 'm' and RowKey lt 'n'"
        else:
            hours = [start + timedelta(hours=n) for n in range(int((end - start) / timedelta(hours=1)) + 1)]
            rows = "RowKey ge 'h_' and RowKey lt 'h`'"
        names = list(outcomes)
        found = (
            row
            for at in hours
            for row in self._table.query_entities(
                "PartitionKey eq @pk and " + rows,
                parameters={"pk": COUNTER_PREFIX + at.strftime(_HOUR_FORMAT)},
                results_per_page=1000,
            )
        )
        for row in found:
            hour = datetime.strptime(row["PartitionKey"][len(COUNTER_PREFIX) :], _HOUR_FORMAT)
            part, process = row["RowKey"].split("_", 1)
            yield CounterRow(
                hour=hour.replace(tzinfo=UTC),
                minute=None if part == "h" else int(part[1:3]),
                process=process,
                totals={name: int(row.get(name) or 0) for name in names},
                untracked=int(row.get("untracked") or 0),
                subs=json.loads(row.get("subs") or "{}"),
                hists={
                    k: {int(b): int(n) for b, n in v.items()} for k, v in json.loads(row.get("hists") or "{}").items()
                },
            )
