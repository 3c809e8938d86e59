"""Logs and metrics.

Locally: log lines that carry the event id, subscription id and attempt. In Azure, with
`APPLICATIONINSIGHTS_CONNECTION_STRING` set: the same logs as traces (sent once, by the
Functions host, which receives them from the Python worker), plus metrics (deliveries by
outcome, attempt latency) exported here through OpenTelemetry; both with Entra ID
authentication (the app's managed identity; Application Insights has local auth disabled). Callback URLs are
only ever logged through `outbound.redact_url`: a Power Automate callback's `sig` is a credential.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

log = logging.getLogger("relay")

# What configure_azure_monitor is asked for, and why:
# - No automatic HTTP instrumentation: it would record every delivery's full callback URL (its
#   query can be a credential); deliveries are logged here with the query redacted.
# - No Azure SDK instrumentation: it records every storage call (each queue poll, table read and
#   blob write) as a dependency, many per delivery, which costs ingestion and buries the rest.
# - No log export of its own: in Azure the Python worker already hands every log record to the
#   Functions host, which sends it to the same Application Insights (with the invocation's
#   context). An OpenTelemetry handler as well would send each line twice. OpenTelemetry
#   carries the relay's metrics only. The distro takes this from the standard
#   `OTEL_LOGS_EXPORTER=none` (it has no argument for it); an app setting of another value wins.
INSTRUMENTATION_OPTIONS: dict[str, dict[str, bool]] = {
    name: {"enabled": False} for name in ("requests", "urllib", "urllib3", "azure_sdk")
}

# Process-wide on purpose, not a part of the runtime (relay.core.runtime): configure_azure_monitor
# sets OpenTelemetry's global providers, which a process can set once only, and the exporter's
# threads are OpenTelemetry's. A fresh runtime reuses the instruments made for the process.
_lock = threading.Lock()
_instruments: dict[str, Any] = {}
_configured = False


def _client_id() -> str | None:
    """The identity to authenticate with: from APPLICATIONINSIGHTS_AUTHENTICATION_STRING
    (`ClientId=...;Authorization=AAD`, the form the platform itself reads), else the storage one."""
    auth = os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "")
    for part in auth.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "clientid" and value.strip():
            return value.strip()
    return os.environ.get("AzureWebJobsStorage__clientId") or None


def configure() -> bool:
    """Set up export once per process; returns whether Application Insights is in use."""
    global _configured
    with _lock:
        if _configured:
            return bool(_instruments)
        _configured = True
    logging.getLogger("azure").setLevel(logging.WARNING)
    from relay.core.settings import get_settings

    connection_string = get_settings().appinsights_connection_string
    if not connection_string:
        return False
    from azure.identity import ManagedIdentityCredential
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry import metrics

    client_id = _client_id()
    credential = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    os.environ.setdefault("OTEL_LOGS_EXPORTER", "none")
    configure_azure_monitor(
        connection_string=connection_string, credential=credential, instrumentation_options=INSTRUMENTATION_OPTIONS
    )
    meter = metrics.get_meter("relay")
    with _lock:
        _instruments["deliveries"] = meter.create_counter(
            "relay.deliveries", unit="{attempt}", description="Delivery attempts by outcome."
        )
        _instruments["latency"] = meter.create_histogram(
            "relay.delivery.duration", unit="s", description="Time one delivery attempt took."
        )
    return True


def record_attempt(outcome: str, seconds: float) -> None:
    """Count one delivery attempt by outcome, and its latency."""
    # Set once by configure(); reading a dict needs no lock, and an attempt takes none.
    counter, histogram = _instruments.get("deliveries"), _instruments.get("latency")
    if counter is not None and histogram is not None:
        counter.add(1, {"outcome": outcome})
        histogram.record(seconds, {"outcome": outcome})
