"""Dollars per million deliveries, from what the bench measured and a dated price table.

The bench counts storage requests by service and kind at its proxy and function executions as
queue message deletes (plus one HTTP execution per publish request); this module prices them with
`prices.json` (its date and sources are in the file) and sets the same deliveries beside Event
Grid, which bills one operation per published event and one per delivery.

How Flex Consumption bills (the sources are in prices.json):

- on demand, an instance's whole memory is billed while it executes anything (GB-s), at least
  `minimum_billable_seconds` per activity period, plus each execution; nothing while idle. The
  relay's idle cost on demand is therefore its timers: each run wakes an instance for at least
  the minimum period;
- an always-ready instance bills a baseline for its memory around the clock, and its executions
  at a lower GB-s rate;
- an instance's CPU grows with its memory (512 MB: a quarter of a core), so work that is CPU-bound
  takes longer on a small instance: the executing time is the longer of the measured wall time
  and the relay's CPU time divided by the instance's cores;
- HTTP concurrency decides how many requests share one instance's billed time (Python's default
  is 1: every concurrent request gets an instance of its own).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRICES = Path(__file__).with_name("prices.json")
MILLION = 1_000_000


def load_prices(path: Path = PRICES) -> dict[str, Any]:
    prices: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return prices


@dataclass(frozen=True)
class Deployment:
    """What the template deploys: instance memory, its cores, HTTP concurrency, always-ready instances."""

    memory_mb: int
    cores: float
    http_concurrency: int
    always_ready: int = 0

    @property
    def memory_gb(self) -> float:
        # Flex's meters are MB-ms / 1,024,000: 512 MB is 0.5 GB.
        return self.memory_mb / 1024

    @classmethod
    def from_prices(cls, prices: Mapping[str, Any], **changes: Any) -> Deployment:
        chosen = prices["deployment"]
        memory = int(changes.get("memory_mb", chosen["instance_memory_mb"]))
        return cls(
            memory_mb=memory,
            cores=float(prices["functions_flex"]["instance_cores"][str(memory)]),
            http_concurrency=int(changes.get("http_concurrency", chosen["http_per_instance_concurrency"])),
            always_ready=int(changes.get("always_ready", 0)),
        )


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


def executing_seconds(wall_seconds: float, cpu_seconds: float, cores: float) -> float:
    """How long an instance of `cores` executes work that took `wall_seconds` here and
    `cpu_seconds` of the relay's CPU: never less than the CPU time spread over its cores."""
    return max(wall_seconds, cpu_seconds / cores)


def relay_cost(
    tx_per_delivery: Mapping[str, float],
    executions_per_delivery: float,
    busy_seconds_per_delivery: float,
    prices: Mapping[str, Any],
    *,
    cpu_seconds_per_delivery: float = 0.0,
    deployment: Deployment | None = None,
    extra_instance_seconds_per_delivery: float = 0.0,
) -> Breakdown:
    """Price one delivery's share of the work, times a million, on demand.

    `tx_per_delivery` is keyed like the proxy's counters (`service kind resource`).
    `busy_seconds_per_delivery` is the wall time the work kept one instance executing here;
    `cpu_seconds_per_delivery` the relay's CPU time, which on an instance with fewer cores takes
    longer (`executing_seconds`). Flex bills the instance's whole memory while it executes.
    `extra_instance_seconds_per_delivery`: other instances' billed time on top (more instances
    for the same HTTP requests at a lower HTTP concurrency).
    """
    deployment = deployment or Deployment.from_prices(prices)
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
        cost[service] += count * rate / 10_000 * MILLION
    flex = prices["functions_flex"]
    seconds = executing_seconds(busy_seconds_per_delivery, cpu_seconds_per_delivery, deployment.cores)
    seconds += extra_instance_seconds_per_delivery
    return Breakdown(
        executions=executions_per_delivery * flex["per_million_executions"],
        compute=seconds * deployment.memory_gb * flex["on_demand_gb_second"] * MILLION,
        **cost,
    )


def http_seconds_per_request(requests_per_second: float, cpu_seconds_per_request: float, cores: float) -> float:
    """Billed instance time of one request when one instance serves requests at `requests_per_second`
    (measured at a given HTTP concurrency): the instance executes for 1/rate per request."""
    return executing_seconds(1 / requests_per_second, cpu_seconds_per_request, cores)


def http_cost_per_million(
    requests_per_second: float, cpu_seconds_per_request: float, prices: Mapping[str, Any], deployment: Deployment
) -> float:
    """Dollars of instance time and executions per million HTTP requests, on demand."""
    flex = prices["functions_flex"]
    seconds = http_seconds_per_request(requests_per_second, cpu_seconds_per_request, deployment.cores)
    per_request = (
        seconds * deployment.memory_gb * flex["on_demand_gb_second"] + flex["per_million_executions"] / MILLION
    )
    return float(per_request * MILLION)


def timer_runs_per_month(schedules: Iterable[str], prices: Mapping[str, Any]) -> float:
    """How often the app's NCRONTAB timers fire in a month (of `seconds_per_month`)."""
    days = float(prices["functions_flex"]["seconds_per_month"]) / 86_400
    return sum(runs_per_day(s) for s in schedules) * days


def idle_cost_per_month(timer_runs: float, prices: Mapping[str, Any], deployment: Deployment) -> float:
    """What the relay costs a month with nothing to deliver.

    On demand: each timer run executes for at least the minimum billable period on an instance
    of the deployment's memory, and is an execution. Always-ready instances add their baseline
    (memory x every second of the month), whether anything runs or not."""
    flex = prices["functions_flex"]
    per_run = (
        flex["minimum_billable_seconds"] * deployment.memory_gb * flex["on_demand_gb_second"]
        + flex["per_million_executions"] / MILLION
    )
    baseline = (
        deployment.always_ready
        * deployment.memory_gb
        * flex["seconds_per_month"]
        * flex["always_ready_baseline_gb_second"]
    )
    return float(timer_runs * per_run + baseline)


def with_idle(
    marginal: Breakdown,
    idle_per_month: float,
    deliveries_per_month: float,
    prices: Mapping[str, Any],
    always_ready: bool,
) -> float:
    """Dollars per million deliveries at a monthly volume, the month's idle cost spread over it.
    On an always-ready instance the executing time is billed at the always-ready rate."""
    compute = marginal.compute
    if always_ready:
        flex = prices["functions_flex"]
        compute *= flex["always_ready_execution_gb_second"] / flex["on_demand_gb_second"]
    return float(marginal.total - marginal.compute + compute + idle_per_month / (deliveries_per_month / MILLION))


def event_grid_cost(fanout: int, prices: Mapping[str, Any]) -> float:
    """Event Grid for the same deliveries: (1 publish + F deliveries) operations per F deliveries."""
    per_million: float = prices["event_grid"]["per_million_operations"]
    return (1 + fanout) / fanout * per_million


# ---- NCRONTAB (the Functions host's six-field timer schedules) ----------------------------------

_FIELD_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def _field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if rng == "*":
            start, end = low, high
        elif "-" in rng:
            a, b = rng.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = int(rng)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return values


def runs_per_day(schedule: str) -> float:
    """Runs per day of a six-field NCRONTAB schedule (`{second} {minute} {hour} {day} {month}
    {day-of-week}`), averaged over the days it fires on (a day or weekday filter counts its share
    of a 28-day, four-week cycle). Names of months and days are not read."""
    fields = schedule.split()
    if len(fields) != 6:
        raise ValueError(f"not a six-field NCRONTAB schedule: {schedule!r}")
    sets = [_field(f, lo, hi) for f, (lo, hi) in zip(fields, _FIELD_RANGES, strict=True)]
    seconds, minutes, hours, days, months, weekdays = sets
    per_day = len(seconds) * len(minutes) * len(hours)
    day_share = 1.0 if fields[3] == "*" else len(days & set(range(1, 29))) / 28
    weekday_share = 1.0 if fields[5] == "*" else len(weekdays) / 7
    month_share = len(months) / 12
    return per_day * day_share * weekday_share * month_share


def instances_for(concurrent_requests: int, http_concurrency: int) -> int:
    """Instances Flex runs for HTTP requests arriving together: one per `http_concurrency` of them."""
    return max(1, math.ceil(concurrent_requests / http_concurrency))
