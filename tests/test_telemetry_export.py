"""What the relay exports to Application Insights, checked with the real azure-monitor-opentelemetry
distro in a process of its own (it installs process-wide providers). Application Insights itself is
the cloud: the connection string points at a closed loopback port and nothing is ever sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, logging, os, sys

# Stand-in for the Azure Functions Python worker, which hands every record that reaches the root
# logger to the Functions host (and the host sends it to Application Insights).
class ToHost(logging.Handler):
    records = []
    def emit(self, record):
        ToHost.records.append(record.getMessage())
logging.getLogger().addHandler(ToHost())
logging.getLogger().setLevel(logging.INFO)

# The instruments the relay asks the distro's meter for (their names are what Azure Monitor shows).
from opentelemetry import metrics
created = []
real_get_meter = metrics.get_meter
class Recording:
    def __init__(self, meter):
        self.meter = meter
    def __getattr__(self, name):
        return getattr(self.meter, name)
    def create_counter(self, name, **kw):
        created.append(name)
        return self.meter.create_counter(name, **kw)
    def create_histogram(self, name, **kw):
        created.append(name)
        return self.meter.create_histogram(name, **kw)
metrics.get_meter = lambda *a, **kw: Recording(real_get_meter(*a, **kw))

from relay.core import telemetry
assert telemetry.configure() is True
telemetry.record_attempt("delivered", 0.01)

from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
spans = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(spans))

# Storage calls, to a real Azurite: each would be a dependency span with the Azure SDK instrumented.
from azure.storage.queue import QueueClient
queue = QueueClient.from_connection_string(sys.argv[1], "telemetryprobe")
queue.create_queue()
queue.get_queue_properties()

logging.getLogger("relay.delivery").warning("one line")

# Every handler a relay record passes on its way up to the root logger.
chain, logger = [], logging.getLogger("relay.delivery")
while logger is not None:
    chain += [type(h).__name__ for h in logger.handlers]
    logger = logger.parent if logger.propagate else None

print(json.dumps({"spans": [s.name for s in spans.get_finished_spans()],
                  "to_host": ToHost.records.count("one line"), "chain": chain,
                  "metrics": sorted(n for n in created if n.startswith("relay."))}), flush=True)
os._exit(0)  # skip the exporters' final flush: there is no Application Insights to reach
"""


def test_export_sends_each_log_line_once_and_no_storage_dependencies(azurite) -> None:
    """With Application Insights configured: no storage call becomes a dependency span, a relay log
    line reaches the host's handler once and no OpenTelemetry log handler (a second copy), and the
    relay's metrics are set up."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: Application Insights is never reached
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    # An https ingestion endpoint (the exporter sends a bearer token over TLS only) on a closed port.
    env.update(
        {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            f"IngestionEndpoint=https://127.0.0.1:{closed_port}/",
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": (
                "ClientId=00000000-0000-0000-0000-00000000abcd;Authorization=AAD"
            ),
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, azurite.connection_string],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["spans"] == [], "storage calls are recorded as dependencies"
    assert result["to_host"] == 1
    assert "LoggingHandler" not in result["chain"], "relay logs would be exported twice"
    assert result["metrics"] == ["relay.deliveries", "relay.delivery.duration"]
