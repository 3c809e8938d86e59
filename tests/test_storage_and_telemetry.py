"""Storage clients follow the Functions host's rule; telemetry never shows a callback's signature.

Azure AD cannot be reached from here, so identity-based clients are built with a fake
credential and checked for where they point and what they authenticate with; nothing is sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken

from relay.core.errors import ConfigurationError
from relay.store.storage import Endpoints, Storage, endpoints_from_settings, make_credential
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]


class FakeCredential:
    """Stands in for Entra ID, which cannot run here."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake", 2**31)


def test_connection_string_wins() -> None:
    """A connection string in AzureWebJobsStorage is used as is, whatever else is set."""
    ep = endpoints_from_settings(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "AzureWebJobsStorage__accountName": "ignored"}
    )
    assert ep == Endpoints(connection_string="UseDevelopmentStorage=true")
    storage = Storage(ep)
    assert storage.tables.url.startswith("http://127.0.0.1:10002")
    assert storage.queues.url.startswith("http://127.0.0.1:10001")


def test_account_name_gives_the_three_service_urls_with_managed_identity() -> None:
    """`__accountName` with `__credential=managedidentity` and `__clientId` means the user-assigned identity."""
    ep = endpoints_from_settings(
        {
            "AzureWebJobsStorage__accountName": "relaystore",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": "1111-2222",
        }
    )
    assert (ep.table_url, ep.queue_url, ep.blob_url) == (
        "https://relaystore.table.core.windows.net",
        "https://relaystore.queue.core.windows.net",
        "https://relaystore.blob.core.windows.net",
    )
    credential = make_credential(ep)
    assert type(credential).__name__ == "ManagedIdentityCredential"
    fake = FakeCredential()
    storage = Storage(ep, credential_factory=lambda _: fake)
    assert storage.tables.url.startswith("https://relaystore.table.core.windows.net")
    assert storage.queue("relay-fanout").credential is fake
    assert storage.blobs.credential is fake


def test_service_uris_and_developer_credential() -> None:
    """Explicit service URIs are used as given; without `__credential` a developer's `az login` applies."""
    settings = {
        f"AzureWebJobsStorage__{svc}ServiceUri": f"https://acct.{svc}.example.net" for svc in ("table", "queue", "blob")
    }
    ep = endpoints_from_settings(settings)
    assert ep.queue_url == "https://acct.queue.example.net" and ep.credential_kind is None
    assert type(make_credential(ep)).__name__ == "DefaultAzureCredential"


def test_missing_storage_settings_are_named() -> None:
    """With neither a connection string nor an account, the error names what to set."""
    with pytest.raises(ConfigurationError, match="AzureWebJobsStorage"):
        endpoints_from_settings({})
    with pytest.raises(ConfigurationError, match="blobServiceUri"):
        endpoints_from_settings(
            {"AzureWebJobsStorage__queueServiceUri": "https://q", "AzureWebJobsStorage__tableServiceUri": "https://t"}
        )


# configure() sets up export once per process, as the host runs it: a process of its own checks it.
EXPORT_PROBE = r"""
import json
import azure.monitor.opentelemetry as monitor
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

seen = {}
monitor.configure_azure_monitor = lambda **kw: seen.update(kw)
reader = InMemoryMetricReader()  # what the distro's exporter would be handed
metrics.get_meter = MeterProvider(metric_readers=[reader]).get_meter

from relay.core import telemetry
assert telemetry.configure() is True
telemetry.record_attempt("delivered", 0.01)
exported = {
    m.name: m for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics
}
[point] = exported["relay.deliveries"].data.data_points
print(json.dumps({
    "connection_string": seen["connection_string"],
    "credential": type(seen["credential"]).__name__,
    "requests": seen["instrumentation_options"]["requests"],
    "point": [dict(point.attributes), point.value],
}))
"""


def test_app_insights_export_uses_the_managed_identity() -> None:
    """With a connection string set, export is configured with Entra auth for the app's identity.

    The exporter is replaced by a recorder: Application Insights is the cloud and cannot run here.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_", "RELAY_"))}
    env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = "InstrumentationKey=00000000-0000-0000-0000-000000000000"
    env["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] = "ClientId=abcd-ef;Authorization=AAD"
    env["AzureWebJobsStorage"] = "UseDevelopmentStorage=true"
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["connection_string"].startswith("InstrumentationKey=")
    assert seen["credential"] == "ManagedIdentityCredential"
    # HTTP auto-instrumentation would record full callback URLs: it stays off.
    assert seen["requests"] == {"enabled": False}
    assert seen["point"] == [{"outcome": "delivered"}, 1]


def test_delivery_logs_name_ids_but_never_the_signature(relay_factory, receiver_factory, unique_type) -> None:
    """A delivery's log line carries event, subscription and attempt, and the callback's sig is redacted."""
    relay = relay_factory({"RELAY_LOG_LEVEL": "DEBUG"})  # successes are logged at DEBUG
    receiver = receiver_factory()
    secret_sig = "Zm9vYmFyc2VjcmV0c2lnbmF0dXJl"
    url = f"{receiver.url}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={secret_sig}"
    sub = relay.subscribe(url, eventTypes=[unique_type])
    event_id = relay.publish({"type": unique_type, "data": 1}).json()["id"]
    got = receiver.wait_for(1)[0]
    assert got.path.endswith(f"sig={secret_sig}")  # sent byte for byte ...
    line = wait_until(
        lambda: next((row for row in relay.logs().splitlines() if f"event={event_id}" in row), None),
        10,
        "the delivery log line",
    )
    assert f"subscription={sub['id']}" in line and "attempt=1" in line
    assert secret_sig not in relay.logs()  # ... and never logged
