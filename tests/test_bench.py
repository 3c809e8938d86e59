"""The benchmark runs end to end at a tiny size, prints its table and writes every figure.

Only completion and shape are checked: no time, rate or threshold is asserted, since those
depend on the machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TINY = [
    "--quick",
    "--subscribers",
    "2",
    "--events",
    "3",
    "--cost-events",
    "2",
    "--fanouts",
    "1,3",
    "--scale-subscribers",
    "20",
    "--latency-seconds",
    "1",
]

EXPECTED = [
    "throughput.deliveries",
    "throughput.relay_seconds",
    "throughput.relay_deliveries_per_second",
    "throughput.raw_seconds",
    "throughput.raw_posts_per_second",
    "throughput.ratio",
    "throughput.transactions_per_delivery",
    "throughput.relay_cpu_ms_per_delivery",
    "latency.events",
    "latency.p50_ms",
    "latency.p95_ms",
    "latency.p99_ms",
    "latency.max_ms",
    "latency.publish_p50_ms",
    "latency.publish_p99_ms",
    "latency.p99_after_warmup_ms",
    "scale.subscribers",
    "scale.relay_seconds",
    "scale.raw_seconds",
    "scale.ratio",
    "scale.peak_rss_mb",
    "scale.sampled_max_rss_mb",
    "scale.transactions_per_delivery",
    "queries.total",
    "queries.spanning_partitions",
    "scaleout.two_process_deliveries_per_second",
    "scaleout.one_process_deliveries_per_second",
    "scaleout.duplicates",
] + [
    f"cost.f{f}.{name}"
    for f in (1, 3)
    for name in (
        "deliveries",
        "transactions_per_delivery",
        "transactions_per_delivery_excl_empty_receives",
        "executions_per_delivery",
        "empty_receives",
        "window_seconds",
        "usd_per_million_deliveries",
        "eventgrid_usd_per_million_deliveries",
    )
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    if not (ROOT / "node_modules" / ".bin" / "azurite").exists():
        pytest.skip("Azurite is not installed: run `npm ci`")
    out = tmp_path_factory.mktemp("bench") / "bench-results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "relay.bench", *TINY, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return proc, out


def test_bench_completes_and_prints_the_table(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "machine:" in proc.stdout
    header = next((line for line in proc.stdout.splitlines() if line.startswith("figure")), None)
    assert header is not None and "value" in header and "target" in header and "met?" in header
    for label in (
        "throughput ratio",
        "latency p99",
        "storage tx/delivery, fan-out 1 ",
        "function executions/delivery, fan-out 3",
        "peak RSS",
    ):
        assert label in proc.stdout, label


def test_bench_writes_every_figure_as_a_number(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["error"] is None
    for key in ("nproc", "cpu_model", "python"):
        assert key in results["machine"]
    figures = results["figures"]
    missing = [k for k in EXPECTED if k not in figures]
    assert not missing, missing
    for key, value in figures.items():
        assert isinstance(value, (int, float)) and not isinstance(value, bool), key
        assert math.isfinite(value), key
    assert all({"figure", "value", "target", "met"} <= set(row) for row in results["table"])


def test_no_table_query_of_the_run_spans_partitions(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """Azure Tables serves an `or` across PartitionKeys (or no PartitionKey at all) as a scan: the
    relay's hot path (publish, fan-out, delivery, polling) must read one partition per query."""
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    queries = results["details"]["table_queries"]
    assert results["figures"]["queries.total"] > 0 and queries["by_shape"]
    assert queries["spanning_partitions"] == {}, queries["spanning_partitions"]


@pytest.mark.parametrize(
    ("flt", "within"),
    [
        ("PartitionKey eq 'x:a'", True),
        ("PartitionKey eq 'e:20261126' and RowKey gt 'k' and RowKey lt 'l'", True),
        ("(PartitionKey eq 'a or b') and (status eq 'failed')", True),
        ("PartitionKey eq 'x:a' or PartitionKey eq 'x:*'", False),
        ("PartitionKey ge 'e:' and PartitionKey lt 'e:2026'", False),
        ("lastAttemptAt lt '2026-01-01'", False),
        ("not (PartitionKey eq 'x')", False),
        (None, False),
    ],
)
def test_proxy_tells_single_partition_queries_from_scans(flt: str | None, within: bool) -> None:
    from relay.bench.proxy import within_one_partition

    assert within_one_partition(flt) is within


def test_cost_model_prices_each_billed_unit() -> None:
    """One delivery at fan-out 1 priced by hand from the dated table, class by class."""
    from relay.bench.costmodel import event_grid_cost, load_prices, relay_cost

    prices = load_prices()
    assert prices["recorded"] and prices["source"] and prices["currency"] == "USD"
    per_delivery = {
        "queue send relay-fanout": 1,
        "queue receive relay-fanout": 1,
        "queue delete relay-fanout": 1,
        "table batch relayevents": 1,
        "table query relaysubscriptions": 3,
        "blob get-blob relay-payloads": 1,
    }
    got = relay_cost(per_delivery, executions_per_delivery=1.0, busy_seconds_per_delivery=0.01, prices=prices)
    q, t, b, fx = prices["queue"], prices["table"], prices["blob"], prices["functions_flex"]
    assert got.queue == pytest.approx((2 * q["class1_per_10k"] + q["class2_per_10k"]) * 100)
    assert got.table == pytest.approx(4 * t["per_10k_transactions"] * 100)
    assert got.blob == pytest.approx(b["read_per_10k"] * 100)
    assert got.executions == pytest.approx(fx["per_million_executions"])
    assert got.compute == pytest.approx(0.01 * fx["instance_memory_gb"] * fx["on_demand_gb_second"] * 1e6)
    assert got.total == pytest.approx(got.queue + got.table + got.blob + got.executions + got.compute)
    # Event Grid bills the publish and each delivery: 2 operations per delivery at fan-out 1.
    assert event_grid_cost(1, prices) == pytest.approx(2 * prices["event_grid"]["per_million_operations"])
    assert event_grid_cost(100, prices) == pytest.approx(1.01 * prices["event_grid"]["per_million_operations"])


def test_proxy_classifies_storage_requests() -> None:
    from relay.bench.proxy import classify

    acct = "/devstoreaccount1"
    cases = {
        ("queue", "GET", f"{acct}/relay-fanout/messages?numofmessages=16&visibilitytimeout=30"): (
            "receive",
            "relay-fanout",
        ),
        ("queue", "GET", f"{acct}/relay-fanout/messages?numofmessages=1&peekonly=true"): ("peek", "relay-fanout"),
        ("queue", "POST", f"{acct}/relay-deliveries/messages?messagettl=-1"): ("send", "relay-deliveries"),
        ("queue", "DELETE", f"{acct}/relay-fanout/messages/abc?popreceipt=x"): ("delete", "relay-fanout"),
        ("queue", "PUT", f"{acct}/relay-fanout/messages/abc?popreceipt=x&visibilitytimeout=30"): (
            "update",
            "relay-fanout",
        ),
        ("queue", "PUT", f"{acct}/relay-fanout"): ("create-queue", "relay-fanout"),
        ("queue", "GET", f"{acct}/relay-fanout?comp=metadata"): ("properties", "relay-fanout"),
        ("table", "POST", f"{acct}/relayevents"): ("insert", "relayevents"),
        ("table", "PUT", f"{acct}/relaydeliveries(PartitionKey='a',RowKey='b')"): ("upsert-replace", "relaydeliveries"),
        ("table", "MERGE", f"{acct}/relaysubscriptions(PartitionKey='s',RowKey='i%3Ax')"): (
            "merge",
            "relaysubscriptions",
        ),
        ("table", "GET", f"{acct}/relayevents(PartitionKey='e%3A1',RowKey='k')"): ("get", "relayevents"),
        ("table", "GET", f"{acct}/relaysubscriptions()?$filter=PartitionKey%20eq%20'x'"): (
            "query",
            "relaysubscriptions",
        ),
        ("table", "DELETE", f"{acct}/relaysubscriptions(PartitionKey='x',RowKey='y')"): (
            "delete",
            "relaysubscriptions",
        ),
        ("table", "POST", f"{acct}/$batch"): ("batch", ""),
        ("table", "POST", f"{acct}/Tables"): ("create-table", ""),
        ("blob", "PUT", f"{acct}/relay-payloads?restype=container"): ("create-container", "relay-payloads"),
        ("blob", "PUT", f"{acct}/relay-payloads/id/x.json"): ("put-blob", "relay-payloads"),
        ("blob", "GET", f"{acct}/relay-payloads/id/x.json"): ("get-blob", "relay-payloads"),
    }
    for (service, method, target), expected in cases.items():
        assert classify(service, method, target) == expected, (service, method, target)
