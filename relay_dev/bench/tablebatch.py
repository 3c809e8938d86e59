"""The event log's transaction two ways, CPU per transaction: the SDK's `submit_transaction` and
the hand-written `$batch` (relay/store/tablebatch.py), against the same Azurite, alternately.

    python -m relay_dev.bench.tablebatch [--transactions 300] [--rows 5] [--rounds 4]

Each round writes `--transactions` transactions of `--rows` whole-row upserts (an event row and
its index rows, strings of the event log's sizes) to fresh partitions, first through one path,
then the other, and prints the process CPU (user + system) per transaction of each. docs/decisions.md
keeps the hand-written one only while this says it is still cheaper.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from azure.data.tables import UpdateMode

from relay.store.storage import EVENTS_TABLE, Endpoints, Storage
from relay_dev.azurite import Azurite


def _rows(count: int) -> list[dict[str, str]]:
    partition = f"e:{uuid.uuid4().hex}"
    body = '{"specversion":"1.0","type":"order.created","source":"/erp","data":{"total":9.5,"lines":[1,2,3]}}'
    return [{"PartitionKey": partition, "RowKey": f"r{i}:{uuid.uuid4().hex}", "event": body} for i in range(count)]


def _cpu_per_transaction(write: Callable[[list[dict[str, str]]], None], transactions: int, rows: int) -> float:
    work = [_rows(rows) for _ in range(transactions)]
    start = time.process_time()
    for batch in work:
        write(batch)
    return (time.process_time() - start) / transactions * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay_dev.bench.tablebatch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    azurite = Azurite()
    azurite.start()
    try:
        storage = Storage(Endpoints(connection_string=azurite.connection_string))
        storage.tables.create_table_if_not_exists(EVENTS_TABLE)
        table, batch = storage.table(EVENTS_TABLE), storage.table_batch(EVENTS_TABLE)

        def sdk(rows: list[dict[str, str]]) -> None:
            table.submit_transaction([("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows])

        paths = {"sdk submit_transaction": sdk, "hand-written $batch": batch.upsert}
        for write in paths.values():  # warm both: connections, imports, first-call caches
            _cpu_per_transaction(write, 10, args.rows)
        results: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, write in paths.items():
                results[name].append(_cpu_per_transaction(write, args.transactions, args.rows))
        for name, values in results.items():
            rounds = ", ".join(f"{v:.2f}" for v in values)
            print(
                f"{name:24} {statistics.median(values):.2f} ms CPU per {args.rows}-row transaction (rounds: {rounds})"
            )
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
