"""The benchmark's scenarios, its table and its JSON (`python -m relay_dev.bench --help`).

Processes: Azurite (in memory, free ports); the counting proxy (`relay_dev.bench.proxy`) in front of
it; the relay (`python -m relay dev`, `AzureWebJobsStorage` pointing at the proxy); and, in this
process, the asyncio receiver. The raw sender (`relay_dev.bench.rawsend`) runs as its own process,
like the relay, so neither shares an interpreter lock with the receiver. Each scenario uses a
fresh event type and creates its subscriptions through the API before its clock starts.
Every wait below is for a condition (deliveries counted, queues drained), never a fixed sleep.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from relay.core.settings import Settings
from relay.store.storage import DELIVERIES_TABLE, DELIVERY_QUEUE, FANOUT_QUEUE
from relay_dev.azurite import Azurite, connection_string, free_port, stop_group
from relay_dev.azurite import wait_until as _wait_until
from relay_dev.bench.costmodel import (
    Breakdown,
    Deployment,
    event_grid_cost,
    http_cost_per_million,
    idle_cost_per_month,
    instances_for,
    load_prices,
    relay_cost,
    timer_runs_per_month,
    with_idle,
)
from relay_dev.bench.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
WORK_QUEUES = (FANOUT_QUEUE, DELIVERY_QUEUE)
# The proxy's kind for a transaction on the delivery table: only the counters' flush sends one.
COUNTERS_FLUSH = f"table batch {DELIVERIES_TABLE}"
ALL_SCENARIOS = ("throughput", "scaleout", "latency", "concurrency", "cost", "scale")
LATENCY_RATE = 50.0
PUBLISH_THREADS = 4
# The instance size is chosen only while the largest scenario's peak stays well inside it.
MEMORY_SHARE = 60.0  # callers publishing at once in the throughput, cost and scale scenarios
# The concurrency scenario's mix of HTTP calls, one list item per call in turn: mostly publishes,
# with subscribes (of a URL already subscribed: the idempotent path) and the console's reads.
CONCURRENCY_MIX = ("publish",) * 8 + ("subscribe", "read")
# A level counts as saturated when it reaches this share of the best throughput measured; the
# chosen HTTP concurrency is the lowest such level whose p95 stays within CONCURRENCY_P95_MS.
SATURATED_SHARE = 0.9
# How long past its time a slice goes on until every kind of call has been answered once.
KIND_GRACE_SECONDS = 30.0
CONCURRENCY_P95_MS = 1000.0
WARMUP_SECONDS = 2.0
# After the latency run: single events each published after this much idle time (longer than
# host.json's maxPollingInterval, so every queue poller has backed off to its longest wait).
IDLE_SPELL_SECONDS = 5.0
IDLE_SPELL_EVENTS = 3

# An ordinary small event payload (about 250 bytes of JSON).
SAMPLE_DATA = {
    "orderId": 0,
    "customer": {"id": "C-1042", "name": "Contoso Ltd", "tier": "gold"},
    "lines": [{"sku": "SKU-1", "qty": 2, "price": 19.5}, {"sku": "SKU-7", "qty": 1, "price": 120.0}],
    "currency": "EUR",
    "status": "created",
    "channel": "web",
}


# `--filters`: conditions on every throughput subscription, each of which every bench event passes
# (SAMPLE_DATA), so the deliveries are those of the unfiltered run and the difference is the
# cost of evaluating them at fan-out (issue 23: within 10 % of the unfiltered throughput).
BENCH_FILTERS = {
    "data": [
        {"path": "customer.tier", "op": "eq", "value": "gold"},
        {"path": "lines.1.price", "op": "gt", "value": 100},
        {"path": "status", "op": "in", "value": ["created", "paid"]},
    ]
}


class BenchError(RuntimeError):
    pass


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    return _wait_until(predicate, timeout, what, error=BenchError)


# ---- small helpers ------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of one process (this one when pid is None), from /proc."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _histogram(times: list[float], start: float, step: float) -> list[int]:
    """How many of `times` fall in each `step`-second slot after `start`."""
    if not times:
        return []
    counts = [0] * (int((times[-1] - start) / step) + 1)
    for t in times:
        counts[max(0, int((t - start) / step))] += 1
    return counts


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def pooled_session(size: int = 32, key: str | None = None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=size)
    session.mount("http://", adapter)
    if key:
        session.headers["x-functions-key"] = key
    return session


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    azurite = ""
    try:
        azurite = json.loads((ROOT / "node_modules" / "azurite" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    return {
        "nproc": nproc,
        "cpu_model": model,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "azurite": azurite,
    }


# ---- the processes ------------------------------------------------------------------------------


class Proxy:
    def __init__(self, azurite: Azurite) -> None:
        self.azurite = azurite
        self.proc: subprocess.Popen[str] | None = None
        self.ports: dict[str, int] = {}
        self.session = pooled_session(4)

    def start(self) -> None:
        up = self.azurite.ports
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relay_dev.bench.proxy",
                "--blob",
                f"127.0.0.1:{up['blob']}",
                "--queue",
                f"127.0.0.1:{up['queue']}",
                "--table",
                f"127.0.0.1:{up['table']}",
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            process_group=0,  # its own group, not a session (relay_dev.azurite says why)
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError("the counting proxy did not start")
        self.ports = json.loads(line)

    @property
    def connection_string(self) -> str:
        return connection_string(self.ports)

    def counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = self.session.get(f"http://127.0.0.1:{self.ports['control']}/counts", timeout=10).json()
        return counts

    def stop(self) -> None:
        stop_group(self.proc, 5)
        self.proc = None


class Relay:
    def __init__(self, proxy: Proxy, log_level: str | None) -> None:
        self.port = free_port()
        self.key = uuid.uuid4().hex
        self.proxy = proxy
        self.log_level = log_level
        self.log_path = Path(tempfile.gettempdir()) / f"relay-bench-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._local = threading.local()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = pooled_session(4, self.key)
        return s

    def start(self) -> None:
        env = {
            **os.environ,
            "AzureWebJobsStorage": self.proxy.connection_string,
            "RELAY_ALLOW_PRIVATE_TARGETS": "true",
            "PYTHONUNBUFFERED": "1",
        }
        for name in list(env):
            if name.startswith("AzureWebJobsStorage__"):
                del env[name]
        if self.log_level:
            env["RELAY_LOG_LEVEL"] = self.log_level
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "dev", "--port", str(self.port), "--function-key", self.key],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            process_group=0,  # its own group, not a session (relay_dev.azurite says why)
        )
        wait_until(self._healthy, 60, "the dev host to answer")

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"the dev host exited: {self.log_path.read_text(errors='replace')[-3000:]}")
        try:
            return requests.get(f"{self.base}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def status(self) -> dict[str, int]:
        """VmRSS, VmHWM and the like from /proc/<pid>/status, in kB."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Vm"):
                name, _, rest = line.partition(":")
                values[name] = int(rest.split()[0])
        return values

    def reset_peak_rss(self) -> bool:
        """Linux resets VmHWM to the current RSS when 5 is written to clear_refs."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def subscribe(self, url: str, event_type: str, filters: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {"notificationUrl": url, "eventType": event_type}
        if filters is not None:
            body["filters"] = filters
        r = self.session().post(f"{self.base}/subscriptions", json=body, timeout=60)
        if r.status_code != 201:
            raise BenchError(f"subscribe answered {r.status_code}: {r.text[:300]}")
        sub_id: str = r.json()["id"]
        return sub_id

    def publish(self, event: dict[str, Any]) -> None:
        r = self.session().post(f"{self.base}/events", json=event, timeout=60)
        if r.status_code != 202:
            raise BenchError(f"publish answered {r.status_code}: {r.text[:300]}")

    def stop(self) -> None:
        stop_group(self.proc, 20)
        self.proc = None
        if self._log is not None:
            self._log.close()


# ---- the bench ----------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None


@dataclass
class Bench:
    args: argparse.Namespace
    azurite: Azurite = field(default_factory=Azurite)
    proxy: Proxy | None = None
    relay: Relay | None = None
    receiver: Receiver | None = None
    figures: dict[str, float] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    prices: dict[str, Any] = field(default_factory=load_prices)

    # ---- set-up ---------------------------------------------------------------------------------

    def start(self) -> None:
        say("starting Azurite, the counting proxy, the receiver and the relay ...")
        self.azurite.start()
        self.proxy = Proxy(self.azurite)
        self.proxy.start()
        self.receiver = Receiver()
        self.relay = Relay(self.proxy, self.args.relay_log_level)
        self.relay.start()
        from azure.storage.queue import QueueServiceClient

        # Checks go to Azurite directly, past the proxy, so they are never counted.
        self._queues = QueueServiceClient.from_connection_string(self.azurite.connection_string)
        say(f"relay dev host pid {self.relay.pid}, log {self.relay.log_path}")
        self._warm_up()

    def stop(self) -> None:
        for part in (self.relay, self.proxy):
            if part is not None:
                try:
                    part.stop()
                except Exception as exc:  # noqa: BLE001 - report a part that will not stop and stop the others
                    say(f"stopping {type(part).__name__}: {exc}")
        if self.receiver is not None:
            self.receiver.close()
        self.azurite.stop()

    def _warm_up(self) -> None:
        """One delivery end to end: tables and queues exist, connections and imports are warm."""
        tag = self._tag("warm")
        etype = self._type("warm")
        assert self.relay and self.receiver
        self.relay.subscribe(self.receiver.url(tag, 0), etype)
        done = self.receiver.expect(tag, 1)
        self.relay.publish({"type": etype, "data": SAMPLE_DATA})
        if not done.wait(60):
            raise BenchError(f"warm-up delivery did not arrive; see {self.relay.log_path}")
        self._wait_idle()

    def _tag(self, name: str) -> str:
        return f"{name}-{self.run_id}"

    def _type(self, name: str) -> str:
        return f"bench.{name}.{uuid.uuid4().hex[:10]}"

    def _queues_empty(self) -> bool:
        return all(
            self._queues.get_queue_client(q).get_queue_properties().approximate_message_count == 0 for q in WORK_QUEUES
        )

    def _wait_idle(self, timeout: float = 120) -> None:
        wait_until(self._queues_empty, timeout, "the relay's queues to drain")

    def _subscribe_many(self, tag: str, count: int, etype: str, filters: dict[str, Any] | None = None) -> float:
        """Subscriptions `/{tag}/s/{n}` through the API, concurrently; returns the seconds it took."""
        assert self.relay and self.receiver
        relay, receiver = self.relay, self.receiver
        started = time.monotonic()
        done = 0
        lock = threading.Lock()

        def one(n: int) -> None:
            nonlocal done
            relay.subscribe(receiver.url(tag, n), etype, filters)
            with lock:
                done += 1
                if count >= 2000 and done % 2000 == 0:
                    say(f"  {done}/{count} subscriptions ({time.monotonic() - started:.0f}s)")

        with ThreadPoolExecutor(max_workers=self.args.setup_threads) as pool:
            for f in [pool.submit(one, n) for n in range(count)]:
                f.result()
        return time.monotonic() - started

    def _events(self, tag: str, etype: str, count: int) -> list[dict[str, Any]]:
        return [
            {"id": f"{tag}-{i:06d}", "type": etype, "subject": f"orders/{i}", "data": {**SAMPLE_DATA, "orderId": i}}
            for i in range(count)
        ]

    def _publish_all(self, events: list[dict[str, Any]], threads: int = PUBLISH_THREADS) -> float:
        """Publish as fast as the API takes them; returns time.monotonic() just before the first."""
        assert self.relay
        relay = self.relay
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=min(threads, len(events))) as pool:
            for f in [pool.submit(relay.publish, e) for e in events]:
                f.result()
        return started

    def _await(self, tag: str, count: int, what: str) -> None:
        assert self.receiver and self.relay
        event = self.receiver.expect(tag, count)
        timeout = 120 + count / 20
        if not event.wait(timeout):
            raise BenchError(
                f"{what}: {self.receiver.count(tag)} of {count} deliveries arrived in {timeout:.0f}s; "
                f"see {self.relay.log_path}"
            )

    # ---- measuring storage ------------------------------------------------------------------------

    def _measure(self, tag: str, count: int, run: Callable[[], float], profile: str) -> dict[str, Any]:
        """Run a publish, wait for `count` deliveries and for the queues to drain; counts and times."""
        assert self.proxy and self.receiver and self.relay
        self._wait_idle()
        spy = self._py_spy_start(profile)
        cpu_before = self._cpu()
        before = self.proxy.counts()
        first = run()
        self._await(tag, count, profile)
        at_last = self.proxy.counts()
        cpu_at_last = self._cpu()
        self._wait_idle()
        settled = self.proxy.counts()
        self._py_spy_stop(spy)
        stats = self.receiver.stats(tag)
        seconds = stats.last_at - first
        arrivals = sorted(self.receiver.arrivals(tag).values())
        first_seconds = arrivals[0] - first if arrivals else float("nan")
        cpu = {k: round(cpu_at_last[k] - cpu_before[k], 3) for k in cpu_before}
        self.details.setdefault("cpu_seconds", {})[profile] = {
            **cpu,
            "wall": round(seconds, 3),
            "note": "CPU seconds of each process from just before the first publish to the last receipt",
        }
        return {
            "first": first,
            "last": stats.last_at,
            "seconds": seconds,
            "cpu": cpu,
            "first_delivery_seconds": first_seconds,
            "arrivals_per_tenth": _histogram(arrivals, first, 0.1),
            "repeats": stats.repeats,
            "before": before,
            "at_last": at_last,
            "settled": settled,
        }

    def _cpu(self) -> dict[str, float]:
        assert self.relay and self.proxy
        return {
            "relay": cpu_seconds(self.relay.pid),
            "proxy": cpu_seconds(self.proxy.proc.pid if self.proxy.proc else None),
            "azurite": cpu_seconds(self.azurite.proc.pid if self.azurite.proc else None),
            "bench_and_receiver": cpu_seconds(),
        }

    def _py_spy_start(self, name: str) -> subprocess.Popen[bytes] | None:
        if not self.args.py_spy:
            return None
        assert self.relay
        out = Path(self.args.py_spy)
        out.mkdir(parents=True, exist_ok=True)
        exe = Path(sys.executable).parent / "py-spy"
        proc = subprocess.Popen(
            [
                str(exe if exe.exists() else "py-spy"),
                "record",
                "--pid",
                str(self.relay.pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--nonblocking",
                "--gil",
                "--output",
                str(out / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return proc

    @staticmethod
    def _py_spy_stop(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    @staticmethod
    def _cost(before: dict[str, Any], after: dict[str, Any], deliveries: int) -> dict[str, Any]:
        tx = {k: v - before["transactions"].get(k, 0) for k, v in after["transactions"].items()}
        tx = {k: v for k, v in tx.items() if v}
        info = {k: v - before["info"].get(k, 0) for k, v in after["info"].items()}
        failures = {k: v - before["failures"].get(k, 0) for k, v in after["failures"].items()}
        total = sum(tx.values())
        empty = sum(v for k, v in tx.items() if k.split(" ")[1] == "receive-empty")
        # The console's counters (relay.pipeline.stats) are flushed by time, at most one transaction per
        # FLUSH_SECONDS per instance while deliveries happen, not once per delivery.
        counters = tx.get(COUNTERS_FLUSH, 0)
        executions = sum(v for k, v in tx.items() if k.startswith("queue delete "))
        per = max(deliveries, 1)
        return {
            "transactions": total,
            "empty_receives": empty,
            "executions": executions,
            "transactions_per_delivery": total / per,
            "transactions_per_delivery_excl_empty_receives": (total - empty) / per,
            "counter_flushes": counters,
            "transactions_per_delivery_per_event_work": (total - empty - counters) / per,
            "executions_per_delivery": executions / per,
            "by_kind": dict(sorted(tx.items(), key=lambda kv: -kv[1])),
            "by_kind_per_delivery": {k: round(v / per, 4) for k, v in sorted(tx.items(), key=lambda kv: -kv[1])},
            "failures": {k: v for k, v in failures.items() if v},
            "info": {k: v for k, v in info.items() if v},
        }

    # ---- the raw ceiling ----------------------------------------------------------------------------

    def _raw(self, source_tag: str, tag: str, subscribers: int, event_ids: list[str]) -> dict[str, Any]:
        """The same bodies (as the receiver got them from the relay) posted by a plain sender."""
        # The relay's own number of attempt threads, as the dev host reads it.
        concurrency = Settings.from_environ().attempt_threads

        assert self.receiver
        stats = self.receiver.stats(source_tag)
        job = {
            "concurrency": concurrency,
            "urls": [self.receiver.url(tag, n) for n in range(subscribers)],
            "bodies": [{"body": stats.bodies[i].decode("utf-8"), "headers": stats.headers[i]} for i in event_ids],
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
            json.dump(job, f)
            job_path = f.name
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "relay_dev.bench.rawsend", job_path],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdin and proc.stdout
            if proc.stdout.readline().strip() != "ready":
                raise BenchError("the raw sender did not start")
            count = subscribers * len(event_ids)
            done = self.receiver.expect(tag, count)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            result = json.loads(proc.stdout.readline())
            proc.wait(30)
            if not done.wait(30):
                raise BenchError(f"raw sender: {self.receiver.count(tag)} of {count} posts arrived")
        finally:
            os.unlink(job_path)
        last = self.receiver.stats(tag).last_at
        return {
            "posts": count,
            "concurrency": concurrency,
            "seconds": last - result["t0"],
            "sender_seconds": result["t1"] - result["t0"],
            "failed": result["failed"],
            "sender_cpu_seconds": result["cpu_seconds"],
        }

    # ---- scenarios ----------------------------------------------------------------------------------

    def _throughput_round(self, s: int, e: int, n: int) -> dict[str, Any]:
        """Round `n`: the relay delivers `e` events to `s` fresh subscribers, then the raw sender
        posts the same bodies to the same receiver (tags of the round's own, so the receiver
        counts each round apart)."""
        tag, etype = self._tag(f"tp{n}" if n else "tp"), self._type("tp")
        setup = self._subscribe_many(tag, s, etype, BENCH_FILTERS if self.args.filters else None)
        events = self._events(tag, etype, e)
        m = self._measure(tag, s * e, lambda: self._publish_all(events), "throughput")
        raw = self._raw(tag, self._tag(f"tpraw{n}" if n else "tpraw"), s, [ev["id"] for ev in events])
        relay_rate = s * e / m["seconds"]
        raw_rate = raw["posts"] / raw["seconds"]
        return {"setup": setup, "m": m, "raw": raw, "relay_rate": relay_rate, "raw_rate": raw_rate}

    def throughput(self) -> None:
        s, e, rounds = self.args.subscribers, self.args.events, self.args.throughput_rounds
        say(f"throughput: {s} subscribers x {e} events, {rounds} round(s) of the relay then the raw sender ...")
        # One round lasts about three seconds on the reference machine, and one differs from the
        # next by up to 0.14 in the ratio: the figures are those of the median round of several,
        # each round's ratio listed beside them.
        done = [self._throughput_round(s, e, n) for n in range(rounds)]
        ratios = [r["relay_rate"] / r["raw_rate"] for r in done]
        median = sorted(done, key=lambda r: r["relay_rate"] / r["raw_rate"])[len(done) // 2]
        setup, m, raw = median["setup"], median["m"], median["raw"]
        relay_rate, raw_rate = median["relay_rate"], median["raw_rate"]
        ratio = relay_rate / raw_rate
        deliveries = s * e
        cost = self._cost(m["before"], m["settled"], deliveries)
        f = self.figures
        f["throughput.subscribers"] = s
        f["throughput.events"] = e
        f["throughput.deliveries"] = deliveries
        f["throughput.relay_seconds"] = m["seconds"]
        f["throughput.relay_deliveries_per_second"] = relay_rate
        f["throughput.raw_seconds"] = raw["seconds"]
        f["throughput.raw_posts_per_second"] = raw_rate
        f["throughput.ratio"] = ratio
        f["throughput.rounds"] = rounds
        f["throughput.filtered"] = 1 if self.args.filters else 0
        f["throughput.duplicates"] = m["repeats"]
        f["throughput.transactions_per_delivery"] = cost["transactions_per_delivery"]
        f["throughput.relay_cpu_ms_per_delivery"] = m["cpu"]["relay"] * 1000 / deliveries
        f["throughput.raw_cpu_ms_per_post"] = raw["sender_cpu_seconds"] * 1000 / raw["posts"]
        self.details["throughput"] = {
            "setup_seconds": setup,
            "round_ratios": [round(r, 3) for r in ratios],
            "raw": raw,
            "cost": cost,
            "first_delivery_seconds": m["first_delivery_seconds"],
        }
        self.rows += [
            Row(
                f"throughput, relay ({s} subs x {e} events{', a data filter on each' if self.args.filters else ''})",
                relay_rate,
                "deliveries/s",
            ),
            Row(f"throughput, raw requests.Session x{raw['concurrency']}", raw_rate, "posts/s"),
            Row(
                f"throughput ratio relay/raw (fan-out {s}; median of {rounds}: "
                + " / ".join(f"{r:.2f}" for r in ratios)
                + ")",
                ratio,
                "x",
                ">= 0.8" + ("" if s == 100 else " (at 100)"),
                ratio >= 0.8,
            ),
        ]

    def scaleout(self) -> None:
        """The throughput workload again with a second dev host on the same storage: Azure scales
        out by adding instances, and they share the queues."""
        assert self.proxy
        s, e = self.args.subscribers, self.args.events
        say(f"scale-out: {s} subscribers x {e} events with two relay processes ...")
        second = Relay(self.proxy, self.args.relay_log_level)
        second.start()
        try:
            tag, etype = self._tag("so"), self._type("so")
            self._subscribe_many(tag, s, etype)
            events = self._events(tag, etype, e)
            m = self._measure(tag, s * e, lambda: self._publish_all(events), "scaleout")
        finally:
            second.stop()
        rate = s * e / m["seconds"]
        one = self.figures.get("throughput.relay_deliveries_per_second")
        self.figures["scaleout.two_process_deliveries_per_second"] = rate
        self.figures["scaleout.one_process_deliveries_per_second"] = one if one else float("nan")
        self.figures["scaleout.duplicates"] = m["repeats"]
        self.rows += [
            Row(
                f"throughput with two relay processes ({s} subs x {e} events)",
                rate,
                "deliveries/s",
                f"one process: {one:,.0f}" if one else "",
            )
        ]

    def latency(self) -> None:
        seconds = self.args.latency_seconds
        n = max(1, int(round(seconds * LATENCY_RATE)))
        say(f"latency: {LATENCY_RATE:.0f} events/s for {seconds:g}s to 1 subscriber ...")
        tag, etype = self._tag("lat"), self._type("lat")
        self._subscribe_many(tag, 1, etype)
        events = self._events(tag, etype, n)
        scheduled: dict[str, float] = {}
        sent: dict[str, float] = {}
        answered: dict[str, float] = {}
        assert self.relay and self.receiver
        relay = self.relay

        def one(event: dict[str, Any]) -> None:
            sent[event["id"]] = time.monotonic()
            relay.publish(event)
            answered[event["id"]] = time.monotonic()

        run_start = [0.0]

        def run() -> float:
            start = run_start[0] = time.monotonic() + 0.02
            futures = []
            with ThreadPoolExecutor(max_workers=16) as pool:
                for i, event in enumerate(events):
                    due = start + i / LATENCY_RATE
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)  # pacing the open-loop publisher, not waiting for a result
                    scheduled[event["id"]] = due
                    futures.append(pool.submit(one, event))
                for fut in futures:
                    fut.result()
            return start

        m = self._measure(tag, n, run, "latency")
        arrivals = {wid: at for (wid, _path), at in self.receiver.arrivals(tag).items()}
        order = sorted(scheduled, key=scheduled.__getitem__)
        lat = [(arrivals[i] - scheduled[i]) * 1000 for i in order]
        publish_ms = [(answered[i] - sent[i]) * 1000 for i in sent]
        lag_ms = [(sent[i] - scheduled[i]) * 1000 for i in sent]
        span = max(scheduled.values()) - min(scheduled.values())
        cost = self._cost(m["before"], m["settled"], n)
        f = self.figures
        f["latency.events"] = n
        f["latency.rate_per_second"] = (n - 1) / span if span > 0 else float(n)
        f["latency.p50_ms"] = percentile(lat, 50)
        f["latency.p95_ms"] = percentile(lat, 95)
        f["latency.p99_ms"] = percentile(lat, 99)
        f["latency.max_ms"] = max(lat)
        # The first seconds carry the dev host's idle poll backoff (up to host.json maxPollingInterval)
        # and the backlog it builds; shown apart, never used for the target.
        warm = [x for i, x in zip(order, lat, strict=True) if scheduled[i] - run_start[0] >= WARMUP_SECONDS] or lat
        f["latency.p99_after_warmup_ms"] = percentile(warm, 99)
        f["latency.first_second_mean_ms"] = statistics.fmean(
            [x for i, x in zip(order, lat, strict=True) if scheduled[i] - run_start[0] < 1.0] or lat
        )
        f["latency.publish_p50_ms"] = percentile(publish_ms, 50)
        f["latency.publish_p99_ms"] = percentile(publish_ms, 99)
        f["latency.publisher_lag_p99_ms"] = percentile(lag_ms, 99)
        f["latency.transactions_per_delivery"] = cost["transactions_per_delivery"]
        self.details["latency"] = {
            "cost": cost,
            "mean_ms": statistics.fmean(lat),
            "series_ms": [round(x, 1) for x in lat],
        }
        idle = self._after_idle(tag, etype, n)
        f["latency.after_idle_max_ms"] = max(idle)
        self.details["latency"]["after_idle_ms"] = [round(x, 1) for x in idle]
        self.rows += [
            Row("latency p50, publish to receipt", f["latency.p50_ms"], "ms"),
            Row("latency p95", f["latency.p95_ms"], "ms"),
            Row(
                f"latency p99 ({LATENCY_RATE:.0f} events/s, {seconds:g}s, all events)",
                f["latency.p99_ms"],
                "ms",
                "< 300",
                f["latency.p99_ms"] < 300,
            ),
            Row(f"latency p99 after the first {WARMUP_SECONDS:g}s (info)", f["latency.p99_after_warmup_ms"], "ms"),
            Row(
                f"latency after {IDLE_SPELL_SECONDS:g}s idle, worst of {IDLE_SPELL_EVENTS}",
                f["latency.after_idle_max_ms"],
                "ms",
                "< 300",
                f["latency.after_idle_max_ms"] < 300,
            ),
        ]

    def _after_idle(self, tag: str, etype: str, done: int) -> list[float]:
        """Publish-to-receipt of single events, each after an idle spell (nothing published, the
        queues empty), in milliseconds."""
        assert self.relay and self.receiver
        found = []
        for i in range(IDLE_SPELL_EVENTS):
            self._wait_idle()
            time.sleep(IDLE_SPELL_SECONDS)  # the idle spell itself: nothing to wait for
            arrived = self.receiver.expect(tag, done + i + 1)
            event_id = f"{tag}-idle-{i}"
            started = time.monotonic()
            self.relay.publish({"id": event_id, "type": etype, "data": SAMPLE_DATA})
            if not arrived.wait(60):
                raise BenchError(f"the event published after an idle spell did not arrive; see {self.relay.log_path}")
            at = {wid: t for (wid, _path), t in self.receiver.arrivals(tag).items()}[event_id]
            found.append((at - started) * 1000)
        return found

    # ---- HTTP concurrency and what the deployment costs ----------------------------------------------

    def _deployment(self, **changes: Any) -> Deployment:
        """The deployment priced: prices.json's, with the HTTP concurrency this run chose if it measured one."""
        chosen = self.figures.get("concurrency.chosen")
        if chosen and "http_concurrency" not in changes:
            changes["http_concurrency"] = int(chosen)
        return Deployment.from_prices(self.prices, **changes)

    def _idle(self, deployment: Deployment) -> dict[str, float]:
        """Dollars a month with nothing delivered: on demand (the app's timers wake an instance) and
        with one always-ready instance (its baseline on top)."""
        if "idle" not in self.details:
            import function_app  # the app's own timer schedules, so a timer added later is priced too

            schedules = [
                str(getattr(binding, "schedule", ""))
                for fn in function_app.app.get_functions()
                for binding in fn.get_bindings()
                if binding.type == "timerTrigger"
            ]
            runs = timer_runs_per_month(schedules, self.prices)
            on_demand = idle_cost_per_month(runs, self.prices, deployment)
            ready = idle_cost_per_month(runs, self.prices, replace(deployment, always_ready=1))
            self.details["idle"] = {
                "timer_schedules": schedules,
                "timer_runs_per_month": runs,
                "on_demand": on_demand,
                "always_ready": ready,
                "instance_memory_mb": deployment.memory_mb,
            }
            self.figures["idle.timer_runs_per_month"] = runs
            self.figures["idle.on_demand_usd_per_month"] = on_demand
            self.figures["idle.always_ready_usd_per_month"] = ready
            self.rows += [
                Row(
                    f"idle cost per month, on demand ({runs:,.0f} timer runs of >= 1 s at {deployment.memory_mb} MB)",
                    on_demand,
                    "USD",
                ),
                Row(
                    f"idle cost per month, one always-ready {deployment.memory_mb} MB instance (baseline + timers)",
                    ready,
                    "USD",
                ),
            ]
        return {"on_demand": self.details["idle"]["on_demand"], "always_ready": self.details["idle"]["always_ready"]}

    def _priced(
        self,
        deployment: Deployment,
        tx_per_delivery: dict[str, float],
        executions: float,
        seconds: float,
        cpu_seconds: float,
        deliveries: int,
        window: float,
    ) -> Breakdown:
        """One cost run priced on `deployment`. PUBLISH_THREADS publish at once: at an HTTP
        concurrency below that, Flex runs more instances for them, each billed for the publishing
        window (at least the minimum billable period) on top of the one measured here."""
        extra = (instances_for(PUBLISH_THREADS, deployment.http_concurrency) - 1) * max(
            window, self.prices["functions_flex"]["minimum_billable_seconds"]
        )
        return relay_cost(
            tx_per_delivery,
            executions,
            seconds / deliveries,
            self.prices,
            cpu_seconds_per_delivery=cpu_seconds / deliveries,
            deployment=deployment,
            extra_instance_seconds_per_delivery=extra / deliveries,
        )

    def concurrency(self) -> None:
        """Closed-loop HTTP load on one dev host at each concurrency level: that many callers, each
        calling again as soon as it is answered, for a fixed time (the mix: CONCURRENCY_MIX).
        Throughput and p95 per level; the chosen level is where throughput stops growing."""
        levels, seconds, rounds = (
            self.args.concurrency_levels,
            self.args.concurrency_seconds,
            self.args.concurrency_rounds,
        )
        say(f"concurrency: levels {', '.join(map(str, levels))}, {seconds:g}s each in {rounds} round(s) ...")
        assert self.relay and self.receiver
        relay, receiver = self.relay, self.receiver
        tag, etype = self._tag("cc"), self._type("cc")
        # One subscriber: every publish is delivered too, as in production, and drains between levels.
        self._subscribe_many(tag, 1, etype)
        sub_urls = [receiver.url(self._tag("ccsub"), n) for n in range(max(levels))]
        sub_type = self._type("ccsub")
        # The machine's other load changes by the minute: each level runs in several short slices,
        # the rounds going up and down the levels in turn, so a busy minute falls on every level
        # alike rather than on the levels that happened to run in it. A level's figures pool its slices.
        slices: dict[int, list[tuple[LevelLoad, float, float]]] = {level: [] for level in levels}
        published = 0
        for n in range(rounds):
            for level in levels if n % 2 == 0 else list(reversed(levels)):
                self._wait_idle()
                load = LevelLoad(relay, etype, tag, sub_urls, sub_type, published)
                cpu_before = cpu_seconds(relay.pid)
                started = time.monotonic()
                load.deadline = started + seconds / rounds
                threads = [threading.Thread(target=load.caller, args=(i,), daemon=True) for i in range(level)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                slices[level].append((load, time.monotonic() - started, cpu_seconds(relay.pid) - cpu_before))
                published = load.published
        results: dict[int, dict[str, Any]] = {}
        for level in levels:
            wall = sum(w for _, w, _ in slices[level])
            cpu = sum(c for _, _, c in slices[level])
            latencies = {
                kind: [x for load, _, _ in slices[level] for x in load.latencies[kind]] for kind in LevelLoad.KINDS
            }
            errors = [e for load, _, _ in slices[level] for e in load.errors]
            done = sum(len(v) for v in latencies.values())
            everything = [x for v in latencies.values() for x in v]
            results[level] = {
                "requests": done,
                "requests_per_second": done / wall,
                "round_requests_per_second": [
                    round(sum(len(v) for v in load.latencies.values()) / w, 1) for load, w, _ in slices[level]
                ],
                "publishes_per_second": len(latencies["publish"]) / wall,
                "p50_ms": percentile(everything, 50),
                "p95_ms": percentile(everything, 95),
                "publish_p95_ms": percentile(latencies["publish"], 95),
                "read_p95_ms": percentile(latencies["read"], 95),
                "subscribe_p95_ms": percentile(latencies["subscribe"], 95),
                "relay_cpu_ms_per_request": cpu * 1000 / max(done, 1),
                "errors": len(errors),
                "error_kinds": sorted(set(errors))[:10],
                "wall_seconds": wall,
            }
            r = results[level]
            say(
                f"  {level:>2}: {r['requests_per_second']:7.1f} req/s "
                f"(rounds: {' / '.join(map(str, r['round_requests_per_second']))}), p95 {r['p95_ms']:6.0f} ms, "
                f"CPU {r['relay_cpu_ms_per_request']:.1f} ms/request, {r['errors']} errors"
            )
        # Deliveries of the last level drain before the next scenario counts anything.
        self._await(tag, published, "the concurrency scenario's deliveries")
        self._wait_idle()
        chosen = choose_concurrency(results)
        deployment = self._deployment(http_concurrency=chosen)
        f = self.figures
        f["concurrency.chosen"] = chosen
        for level, r in results.items():
            for name in ("requests_per_second", "p95_ms", "publish_p95_ms", "relay_cpu_ms_per_request", "errors"):
                f[f"concurrency.c{level}.{name}"] = r[name]
            # What one million of these requests cost on demand at this concurrency, on the chosen
            # instance size: the instance executes 1/throughput per request (or the CPU time on
            # its cores, if longer).
            f[f"concurrency.c{level}.usd_per_million_requests"] = http_cost_per_million(
                r["requests_per_second"], r["relay_cpu_ms_per_request"] / 1000, self.prices, deployment
            )
        self.details["concurrency"] = {
            "levels": results,
            "mix": list(CONCURRENCY_MIX),
            "seconds_per_level": seconds,
            "rounds": rounds,
            "rule": f"the lowest level with at least {SATURATED_SHARE:.0%} of the best throughput and p95 "
            f"<= {CONCURRENCY_P95_MS:.0f} ms",
        }
        within = [r["requests_per_second"] for r in results.values() if r["p95_ms"] <= CONCURRENCY_P95_MS]
        best = max(within or [r["requests_per_second"] for r in results.values()])
        for level, r in results.items():
            self.rows.append(
                Row(
                    f"HTTP concurrency {level}: throughput (p95 {r['p95_ms']:,.0f} ms, publish p95 "
                    f"{r['publish_p95_ms']:,.0f} ms; ${f[f'concurrency.c{level}.usd_per_million_requests']:.2f}"
                    f" per million requests at {deployment.memory_mb} MB"
                    + (f"; errors {r['errors']})" if r["errors"] else ")"),
                    r["requests_per_second"],
                    "req/s",
                    f">= {SATURATED_SHARE:.0%} of {best:,.0f}, p95 <= {CONCURRENCY_P95_MS:,.0f} ms"
                    if level == chosen
                    else "",
                    True if level == chosen else None,
                )
            )
        self.rows.append(Row("HTTP concurrency chosen (perInstanceConcurrency)", chosen, "requests"))

    def cost(self) -> None:
        e = self.args.cost_events
        for fanout in self.args.fanouts:
            say(f"cost: fan-out {fanout} x {e} events ...")
            tag, etype = self._tag(f"c{fanout}"), self._type(f"c{fanout}")
            self._subscribe_many(tag, fanout, etype)
            deliveries = fanout * e
            f = self.figures
            if fanout == 1:
                # Ids left to the relay (info): such events skip the de-duplication row. A type
                # and a subscriber of their own, so each run has fan-out 1.
                gen_tag, gen_type = self._tag("c1gen"), self._type("c1gen")
                self._subscribe_many(gen_tag, 1, gen_type)
                self._steady(gen_tag, gen_type, 1)
                plain = [{k: v for k, v in ev.items() if k != "id"} for ev in self._events(gen_tag, gen_type, e)]
                g = self._measure(gen_tag, 1 + e, functools.partial(self._publish_all, plain), "cost-f1-generated-ids")
                gen = self._cost(g["before"], g["settled"], e)
                f["cost.f1.generated_ids.transactions_per_delivery_excl_empty_receives"] = gen[
                    "transactions_per_delivery_excl_empty_receives"
                ]
                self.details["cost.f1.generated_ids"] = gen
                self.rows.append(
                    Row(
                        "storage tx/delivery, fan-out 1, ids generated by the relay (info; excl. empty receives)",
                        gen["transactions_per_delivery_excl_empty_receives"],
                        "tx",
                    )
                )
            # Ids supplied by the publisher, as CloudEvents producers always do (the target's case):
            # each event then has its de-duplication row.
            self._steady(tag, etype, fanout)
            events = self._events(tag, etype, e)
            window: list[float] = []

            def publish(events: list[dict[str, Any]] = events, window: list[float] = window) -> float:
                first = self._publish_all(events)
                window.append(time.monotonic() - first)
                return first

            m = self._measure(tag, fanout + deliveries, publish, f"cost-f{fanout}")
            cost = self._cost(m["before"], m["settled"], deliveries)
            at_last = self._cost(m["before"], m["at_last"], deliveries)
            key = f"cost.f{fanout}"
            f[f"{key}.deliveries"] = deliveries
            f[f"{key}.transactions_per_delivery"] = cost["transactions_per_delivery"]
            f[f"{key}.transactions_per_delivery_excl_empty_receives"] = cost[
                "transactions_per_delivery_excl_empty_receives"
            ]
            f[f"{key}.transactions_per_delivery_at_last_receipt"] = at_last["transactions_per_delivery"]
            f[f"{key}.executions_per_delivery"] = cost["executions_per_delivery"]
            f[f"{key}.empty_receives"] = cost["empty_receives"]
            f[f"{key}.transactions_per_delivery_per_event_work"] = cost["transactions_per_delivery_per_event_work"]
            f[f"{key}.window_seconds"] = m["settled"]["at"] - m["before"]["at"]
            f[f"{key}.deliveries_per_second"] = deliveries / m["seconds"]
            self.details[key] = cost
            deployment = self._deployment()
            # One HTTP execution per publish request beside the queue-triggered ones.
            executions = cost["executions_per_delivery"] + e / deliveries

            measured = (
                cost["by_kind_per_delivery"],
                executions,
                m["seconds"],
                m["cpu"]["relay"],
                deliveries,
                window[0],
            )
            dollars = self._priced(deployment, *measured)
            at_one = self._priced(replace(deployment, http_concurrency=1), *measured).total
            grid = event_grid_cost(fanout, self.prices)
            idle = self._idle(deployment)
            volume = self.prices["deployment"]["deliveries_per_month"]
            all_in = with_idle(dollars, idle["on_demand"], volume, self.prices, always_ready=False)
            ready = with_idle(dollars, idle["always_ready"], volume, self.prices, always_ready=True)
            f[f"{key}.usd_per_million_deliveries"] = dollars.total
            f[f"{key}.usd_per_million_deliveries_http_concurrency_1"] = at_one
            f[f"{key}.usd_per_million_deliveries_with_idle"] = all_in
            f[f"{key}.usd_per_million_deliveries_always_ready"] = ready
            f[f"{key}.eventgrid_usd_per_million_deliveries"] = grid
            self.details[f"{key}.usd_per_million"] = {
                **vars(dollars),
                "total": dollars.total,
                "at_http_concurrency_1": at_one,
                "publish_window_seconds": window[0],
                "with_idle_on_demand": all_in,
                "with_one_always_ready_instance": ready,
                "deliveries_per_month": volume,
                "instance_memory_mb": deployment.memory_mb,
                "instance_cores": deployment.cores,
                "http_concurrency": deployment.http_concurrency,
                "event_grid": grid,
                "prices_recorded": self.prices["recorded"],
            }
            tx_target = {1: 6.0, 100: 1.5}.get(fanout)
            ex_target = 0.05 if fanout == 100 else None
            tx = cost["transactions_per_delivery"]
            tx_ex = cost["transactions_per_delivery_excl_empty_receives"]
            tx_work = cost["transactions_per_delivery_per_event_work"]
            ex = cost["executions_per_delivery"]
            self.rows += [
                Row(f"storage tx/delivery, fan-out {fanout}, publisher ids (incl. idle polls)", tx, "tx"),
                Row(f"storage tx/delivery, fan-out {fanout}, publisher ids (excl. empty receives)", tx_ex, "tx"),
                Row(
                    f"storage tx/delivery, fan-out {fanout}, publisher ids (per-event work: excl. empty receives"
                    " and the counters' timed flush)",
                    tx_work,
                    "tx",
                    f"<= {tx_target:g}" if tx_target else "",
                    tx_work <= tx_target if tx_target else None,
                ),
                Row(
                    f"function executions/delivery, fan-out {fanout}",
                    ex,
                    "exec",
                    f"<= {ex_target:g}" if ex_target else "",
                    ex <= ex_target if ex_target else None,
                ),
                Row(
                    f"$ per million deliveries, fan-out {fanout}, {deployment.memory_mb} MB on demand, "
                    f"HTTP concurrency {deployment.http_concurrency} (marginal; Event Grid: ${grid:.2f})",
                    dollars.total,
                    "USD",
                ),
                Row(
                    f"$ per million deliveries, fan-out {fanout}, the same at HTTP concurrency 1 (Python's default: "
                    f"{PUBLISH_THREADS} publishers, {PUBLISH_THREADS} instances)",
                    at_one,
                    "USD",
                ),
                Row(
                    f"$ per million deliveries, fan-out {fanout}, idle included at {volume:,.0f} deliveries/month: "
                    f"on demand (Event Grid: ${grid:.2f})",
                    all_in,
                    "USD",
                ),
                Row(
                    f"$ per million deliveries, fan-out {fanout}, idle included at {volume:,.0f} deliveries/month: "
                    f"one always-ready instance (Event Grid: ${grid:.2f})",
                    ready,
                    "USD",
                ),
            ]

    def _steady(self, tag: str, etype: str, fanout: int) -> None:
        """One event of the type first, not counted: the relay's first fan-out of a type after a
        subscription change reads the index partition, later ones find it in the process's
        cache (relay.store.subscriptions.cache.IndexCache) while the partition's presence token stands."""
        assert self.relay
        self.relay.publish({"id": f"{tag}-steady", "type": etype, "data": SAMPLE_DATA})
        self._await(tag, fanout, "the uncounted first event")

    def scale(self) -> None:
        n = self.args.scale_subscribers
        say(f"scale: one event to {n} subscribers (creating them first) ...")
        tag, etype = self._tag("scale"), self._type("scale")
        setup = self._subscribe_many(tag, n, etype)
        say(f"  {n} subscriptions in {setup:.1f}s")
        assert self.relay
        relay = self.relay
        self._wait_idle()
        rss_before = relay.status().get("VmRSS", 0)
        reset = relay.reset_peak_rss()
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                try:
                    samples.append(relay.status().get("VmRSS", 0))
                except OSError:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        events = self._events(tag, etype, 1)
        try:
            m = self._measure(tag, n, lambda: self._publish_all(events), "scale")
        finally:
            stop.set()
            sampler.join()
        status = relay.status()
        raw = self._raw(tag, self._tag("scaleraw"), n, [events[0]["id"]])
        cost = self._cost(m["before"], m["settled"], n)
        ratio = m["seconds"] / raw["seconds"]
        peak_mb = status.get("VmHWM", 0) / 1024
        f = self.figures
        f["scale.subscribers"] = n
        f["scale.setup_seconds"] = setup
        f["scale.relay_seconds"] = m["seconds"]
        f["scale.first_delivery_seconds"] = m["first_delivery_seconds"]
        f["scale.raw_seconds"] = raw["seconds"]
        f["scale.ratio"] = ratio
        f["scale.peak_rss_mb"] = peak_mb
        memory = self._deployment().memory_mb
        share = peak_mb / memory * 100
        f["scale.peak_rss_share_of_instance_percent"] = share
        f["scale.sampled_max_rss_mb"] = max(samples or [0]) / 1024
        f["scale.rss_before_mb"] = rss_before / 1024
        f["scale.transactions_per_delivery"] = cost["transactions_per_delivery"]
        f["scale.executions_per_delivery"] = cost["executions_per_delivery"]
        f["scale.relay_cpu_ms_per_delivery"] = m["cpu"]["relay"] * 1000 / n
        self.details["scale"] = {
            "raw": raw,
            "cost": cost,
            "peak_reset_before_run": reset,
            "arrivals_per_tenth_second": m["arrivals_per_tenth"],
            "rss_samples": len(samples),
        }
        self.rows += [
            Row(f"fan-out to {n}: relay time to last delivery", m["seconds"], "s"),
            Row(f"fan-out to {n}: raw sender time", raw["seconds"], "s"),
            Row(f"fan-out to {n}: relay/raw time", ratio, "x", "<= 1.5", ratio <= 1.5),
            Row(
                f"fan-out to {n}: dev host peak RSS (VmHWM{'' if reset else ', lifetime'})",
                peak_mb,
                "MB",
                "< 300",
                peak_mb < 300,
            ),
            Row(
                f"fan-out to {n}: peak RSS as a share of the {memory} MB instance deployed",
                share,
                "%",
                f"< {MEMORY_SHARE:.0f}",
                share < MEMORY_SHARE,
            ),
        ]

    def queries(self) -> None:
        """Every table query the relay made during the run, by filter shape; none may span partitions."""
        from relay_dev.bench.proxy import within_one_partition

        assert self.proxy
        shapes = self.proxy.counts().get("queries", {})
        spanning = {shape: n for shape, n in shapes.items() if not within_one_partition(shape.partition(" ")[2])}
        self.details["table_queries"] = {"by_shape": shapes, "spanning_partitions": spanning}
        self.figures["queries.total"] = sum(shapes.values())
        self.figures["queries.spanning_partitions"] = sum(spanning.values())
        self.rows.append(
            Row(
                "table queries spanning partitions",
                self.figures["queries.spanning_partitions"],
                "queries",
                "0",
                not spanning,
            )
        )

    # ---- output -------------------------------------------------------------------------------------

    def table(self) -> str:
        head = ("figure", "value", "target", "met?")
        body = []
        for r in self.rows:
            value = f"{r.value:,.3f}" if abs(r.value) < 10 else f"{r.value:,.1f}"
            met = "" if r.met is None else ("yes" if r.met else "NO")
            body.append((r.figure, f"{value} {r.unit}", r.target, met))
        widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(4)]

        def line(cells: list[Any] | tuple[Any, ...]) -> str:
            return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])

    def results(self, info: dict[str, Any], error: str | None) -> dict[str, Any]:
        return {
            "prices": {k: self.prices[k] for k in ("recorded", "currency", "region", "source")},
            "machine": info,
            "config": {k: v for k, v in vars(self.args).items() if k != "out"},
            "figures": self.figures,
            "table": [vars(r) for r in self.rows],
            "details": self.details,
            "notes": NOTES,
            "error": error,
        }


NOTES = {
    "throughput": "deliveries per second from just before the first publish until the last delivery arrives; "
    "raw = the same bodies and headers posted to the same receiver by a plain requests.Session "
    "with RELAY_ATTEMPT_THREADS threads, in its own process, timed from its start to the "
    "last arrival. Several rounds of relay then raw (fresh subscribers each); the figures are the "
    "median round's, every round's ratio is in details.throughput.round_ratios.",
    "latency": "open-loop publisher at 50 events/s; latency from each event's scheduled publish time to its "
    "arrival at the receiver. The target is judged on all events; p99_after_warmup_ms leaves out "
    "the first 2 s, where the dev host's idle queue-poll backoff (up to maxPollingInterval) shows.",
    "cost": "events carry publisher-supplied ids (each has its de-duplication row), as CloudEvents producers' "
    "do; at fan-out 1 a run with ids left to the relay is shown too. One event of each type is published and "
    "delivered before counting starts (steady state: the first fan-out of a type after a subscription change "
    "reads its index partition, one query more, later ones find it cached). Storage requests counted at the proxy "
    "from just before the first publish until the relay's work "
    "queues are empty again (the last delivery's log row and the queue message DELETE come after the "
    "receipt); idle polling by the dev host (empty queue receives) is included in the first figure and "
    "excluded in the second. Function executions are counted as queue message DELETEs: the dev host "
    "deletes one message per successful function execution.",
    "scale": "one event to N subscribers; subscription setup excluded; peak RSS is the dev host's VmHWM "
    "(reset just before the publish) with VmRSS sampled every 20 ms.",
}


class LevelLoad:
    """One slice of a level of the concurrency scenario: callers that each call again as soon as
    answered, until the deadline (and until every kind of call has been answered once)."""

    KINDS = ("publish", "subscribe", "read")

    def __init__(self, relay: Relay, etype: str, tag: str, sub_urls: list[str], sub_type: str, published: int) -> None:
        self.relay, self.etype, self.tag = relay, etype, tag
        # Each caller subscribes a URL of its own again and again (to a type nobody publishes):
        # flows saved at the same time, not one flow saved by many at once.
        self.sub_urls, self.sub_type = sub_urls, sub_type
        self.published = published
        self.deadline = 0.0
        self.latencies: dict[str, list[float]] = {kind: [] for kind in self.KINDS}
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def caller(self, index: int) -> None:
        session = self.relay.session()
        base = self.relay.base
        k = index * 3  # callers start at different points of the mix
        while (now := time.monotonic()) < self.deadline or (
            not all(self.latencies.values()) and now < self.deadline + KIND_GRACE_SECONDS
        ):
            kind = CONCURRENCY_MIX[k % len(CONCURRENCY_MIX)]
            k += 1
            started = time.monotonic()
            try:
                if kind == "publish":
                    with self._lock:
                        self.published += 1
                        n = self.published
                    event: dict[str, Any] = {"id": f"{self.tag}-{n:07d}", "type": self.etype, "data": SAMPLE_DATA}
                    r = session.post(f"{base}/events", json=event, timeout=60)
                    ok = r.status_code == 202
                elif kind == "subscribe":
                    body = {"notificationUrl": self.sub_urls[index], "eventType": self.sub_type}
                    r = session.post(f"{base}/subscriptions", json=body, timeout=60)
                    ok = r.status_code == 201
                else:
                    r = session.get(f"{base}/{'stats?window=1h' if k % 2 else 'subscriptions?limit=20'}", timeout=60)
                    ok = r.status_code == 200
            except requests.RequestException as exc:
                with self._lock:
                    self.errors.append(type(exc).__name__)
                continue
            took = (time.monotonic() - started) * 1000
            with self._lock:
                if ok:
                    self.latencies[kind].append(took)
                else:
                    self.errors.append(f"{kind} {r.status_code}")


def choose_concurrency(results: dict[int, dict[str, Any]]) -> int:
    """Among the levels whose p95 stays within CONCURRENCY_P95_MS, the lowest that reaches
    SATURATED_SHARE of their best throughput: more concurrency than that adds waiting, not
    throughput, and less leaves the instance idle while its requests wait on storage (and Flex
    starts another instance, with its own cold start, for each request beyond it)."""
    within = {level: r for level, r in results.items() if r["p95_ms"] <= CONCURRENCY_P95_MS}
    if not within:  # every level too slow: the one that waits least
        return min(results, key=lambda level: float(results[level]["p95_ms"]))
    best = max(float(r["requests_per_second"]) for r in within.values())
    return min(level for level, r in within.items() if r["requests_per_second"] >= SATURATED_SHARE * best)


def say(text: str) -> None:
    print(text, flush=True)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m relay_dev.bench", description="Benchmark the relay against Azurite through a counting proxy."
    )
    p.add_argument("--quick", action="store_true", help="small sizes: the whole run takes under two minutes")
    p.add_argument(
        "--scenarios", default=",".join(ALL_SCENARIOS), help="comma-separated subset of " + ",".join(ALL_SCENARIOS)
    )
    p.add_argument("--subscribers", type=int, help="throughput: subscribers (default 100)")
    p.add_argument("--events", type=int, help="throughput: events (default 50; quick 10)")
    p.add_argument(
        "--filters",
        action="store_true",
        help="throughput: three data filters on every subscription, each passed by every event",
    )
    p.add_argument(
        "--throughput-rounds",
        type=int,
        help="throughput: rounds of relay then raw, the median one reported (default 5; quick 1)",
    )
    p.add_argument(
        "--concurrency-levels", type=_ints, help="concurrency: HTTP callers at once, per level (default 1,2,4,8,16,32)"
    )
    p.add_argument(
        "--concurrency-seconds", type=float, help="concurrency: seconds of load per level (default 6; quick 2)"
    )
    p.add_argument(
        "--concurrency-rounds",
        type=int,
        help="concurrency: rounds over the levels, each a slice of a level's seconds (default 3; quick 1)",
    )
    p.add_argument("--cost-events", type=int, help="cost: events per fan-out (default 20; quick 3)")
    p.add_argument("--fanouts", type=_ints, help="cost: fan-outs (default 1,10,100,1000)")
    p.add_argument("--scale-subscribers", type=int, help="scale: subscribers (default 10000; quick 1000)")
    p.add_argument("--latency-seconds", type=float, help="latency: seconds at 50 events/s (default 20; quick 4)")
    p.add_argument("--setup-threads", type=int, default=16, help="threads creating subscriptions")
    p.add_argument("--relay-log-level", default=None, help="RELAY_LOG_LEVEL for the dev host (its default: INFO)")
    p.add_argument("--py-spy", metavar="DIR", help="record each scenario of the dev host with py-spy into DIR")
    p.add_argument("--out", default="bench-results.json", help="where to write the JSON")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "subscribers": 100,
        "events": 10 if quick else 50,
        "throughput_rounds": 1 if quick else 5,
        "cost_events": 3 if quick else 20,
        "concurrency_levels": [1, 2, 4, 8, 16, 32],
        "concurrency_seconds": 2.0 if quick else 6.0,
        "concurrency_rounds": 1 if quick else 3,
        "fanouts": [1, 10, 100, 1000],
        "scale_subscribers": 1000 if quick else 10000,
        "latency_seconds": 4.0 if quick else 20.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(ALL_SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    say(
        f"machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB, "
        f"Python {info['python']}, Azurite {info['azurite']}"
    )
    bench = Bench(args)
    error = None
    started = time.monotonic()
    try:
        bench.start()
        for name in args.scenarios:
            getattr(bench, name)()
        bench.queries()
    except (BenchError, requests.RequestException, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        say(f"bench failed: {error}")
    finally:
        bench.stop()
    info["bench_seconds"] = round(time.monotonic() - started, 1)
    say("")
    say(bench.table())
    say("")
    say(f"(whole run {info['bench_seconds']}s; idle polling included where stated; see --out for details)")
    say(f"(prices: {bench.prices['region']}, recorded {bench.prices['recorded']}; relay_dev/bench/prices.json)")
    Path(args.out).write_text(json.dumps(bench.results(info, error), indent=2, default=str), encoding="utf-8")
    say(f"wrote {args.out}")
    return 1 if error else 0
