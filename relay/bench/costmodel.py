"""Dollars per million deliveries, from what the bench measured and a dated price table.

The bench counts storage requests by service and kind at its proxy and function executions as
queue message deletes; this module prices them with `prices.json` (its date and source are in
the file) and sets the same deliveries beside Event Grid, which bills one operation per published
event and one per delivery.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRICES = Path(__file__).with_name("prices.json")


def load_prices(path: Path = PRICES) -> dict[str, Any]:
    prices: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return prices


@dataclass(frozen=True)
class Breakdown:
    """Dollars per million deliveries, by what is billed."""

    executions: float
    compute: float
    queue: float
    table: float
    blob: float

    @property
    def total(self) -> float:
        return self.executions + self.compute + self.queue + self.table + self.blob


def relay_cost(
    tx_per_delivery: Mapping[str, float],
    executions_per_delivery: float,
    busy_seconds_per_delivery: float,
    prices: Mapping[str, Any],
) -> Breakdown:
    """Price one delivery's share of the work, times a million.

    `tx_per_delivery` is keyed like the proxy's counters (`service kind resource`).
    `busy_seconds_per_delivery` is the instance time the work kept an on-demand instance
    executing: Flex bills the instance's whole memory while it executes anything.
    """
    million = 1_000_000
    queue, table, blob = prices["queue"], prices["table"], prices["blob"]
    cost = {"queue": 0.0, "table": 0.0, "blob": 0.0}
    for key, count in tx_per_delivery.items():
        service, kind = (key.split(" ") + [""])[:2]
        if service == "queue":
            rate = queue["class1_per_10k"] if kind in queue["class1"] else queue["class2_per_10k"]
        elif service == "table":
            rate = table["per_10k_transactions"]
        elif service == "blob":
            rate = blob["write_per_10k"] if kind in blob["write"] else blob["read_per_10k"]
        else:
            continue
        cost[service] += count * rate / 10_000 * million
    flex = prices["functions_flex"]
    return Breakdown(
        executions=executions_per_delivery * flex["per_million_executions"],
        compute=busy_seconds_per_delivery * flex["instance_memory_gb"] * flex["on_demand_gb_second"] * million,
        **cost,
    )


def event_grid_cost(fanout: int, prices: Mapping[str, Any]) -> float:
    """Event Grid for the same deliveries: (1 publish + F deliveries) operations per F deliveries."""
    per_million: float = prices["event_grid"]["per_million_operations"]
    return (1 + fanout) / fanout * per_million
