"""The one place that builds Azure Storage clients, and the names of what the relay stores.

The rule is the Functions host's own: a connection string when `AzureWebJobsStorage` holds one,
otherwise account URLs reached with a managed identity (`__credential=managedidentity`, with
`__clientId` for a user-assigned one) or, for a developer signed in with `az login`,
`DefaultAzureCredential`.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import (
    ExponentialRetry,
    QueueClient,
    QueueServiceClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from relay.core import runtime
from relay.core.errors import ConfigurationError
from relay.core.settings import get_settings
from relay.store.tablebatch import TableBatch

SUBSCRIPTIONS_TABLE = "relaysubscriptions"
EVENTS_TABLE = "relayevents"
DELIVERIES_TABLE = "relaydeliveries"
EVENT_TYPES_TABLE = "relayeventtypes"
OPERATIONS_TABLE = "relayoperations"
KEYS_TABLE = "relaykeys"  # the token codec's key (relay/store/tokens.py)
DUE_TABLE = "relaydue"  # work due later, until the due timer moves it into its queue (relay/store/due.py)
TABLES = (
    SUBSCRIPTIONS_TABLE,
    EVENTS_TABLE,
    DELIVERIES_TABLE,
    EVENT_TYPES_TABLE,
    OPERATIONS_TABLE,
    KEYS_TABLE,
    DUE_TABLE,
)

FANOUT_QUEUE = "relay-fanout"
DELIVERY_QUEUE = "relay-deliveries"
REPLAY_QUEUE = "relay-replays"
QUEUES = (FANOUT_QUEUE, DELIVERY_QUEUE, REPLAY_QUEUE)
POISON_SUFFIX = "-poison"

PAYLOAD_CONTAINER = "relay-payloads"
# Queue messages the relay sends must not silently expire (the default is seven days).
NEVER_EXPIRE = -1

# The HTTP routes must answer 503 quickly when storage is down, so their clients give up fast;
# the queue functions can afford to wait out a short outage instead of failing the message.
FAST = {
    "retry_total": 1,
    "retry_backoff_factor": 0.2,
    "retry_backoff_max": 1,
    "connection_timeout": 3,
    "read_timeout": 10,
}
PATIENT = {
    "retry_total": 4,
    "retry_backoff_factor": 0.5,
    "retry_backoff_max": 8,
    "connection_timeout": 5,
    "read_timeout": 30,
}


def is_outage(exc: BaseException) -> bool:
    """Storage could not be reached or failed on its side (as opposed to refusing a request)."""
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return True
    return isinstance(exc, HttpResponseError) and (exc.status_code or 0) >= 500


@dataclass(frozen=True)
class Endpoints:
    """Where the three services are and how to authenticate to them."""

    connection_string: str | None
    table_url: str | None = None
    queue_url: str | None = None
    blob_url: str | None = None
    credential_kind: str | None = None  # "managedidentity" or None (DefaultAzureCredential)
    client_id: str | None = None


def endpoints_from_settings(storage: Mapping[str, str]) -> Endpoints:
    """Apply the host's rule to the `AzureWebJobsStorage*` settings."""
    conn = storage.get("AzureWebJobsStorage", "").strip()
    if conn:
        return Endpoints(connection_string=conn)
    prefix = "AzureWebJobsStorage__"

    def get(key: str) -> str | None:
        return (storage.get(prefix + key) or "").strip() or None

    account = get("accountName")
    urls = {svc: get(f"{svc}ServiceUri") for svc in ("table", "queue", "blob")}
    for svc, url in urls.items():
        if url is None and account:
            urls[svc] = f"https://{account}.{svc}.core.windows.net"
    missing = [svc for svc, url in urls.items() if url is None]
    if missing:
        raise ConfigurationError(
            "AzureWebJobsStorage is not set: give a connection string, or "
            "AzureWebJobsStorage__accountName, or the service URIs "
            + ", ".join(f"AzureWebJobsStorage__{svc}ServiceUri" for svc in missing)
        )
    return Endpoints(
        connection_string=None,
        table_url=urls["table"],
        queue_url=urls["queue"],
        blob_url=urls["blob"],
        credential_kind=(get("credential") or "").lower() or None,
        client_id=get("clientId"),
    )


def make_credential(endpoints: Endpoints) -> TokenCredential:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if endpoints.credential_kind == "managedidentity":
        if endpoints.client_id:
            return ManagedIdentityCredential(client_id=endpoints.client_id)
        return ManagedIdentityCredential()
    if endpoints.client_id:
        return DefaultAzureCredential(managed_identity_client_id=endpoints.client_id)
    return DefaultAzureCredential()


def _transport(profile: Mapping[str, Any]) -> RequestsTransport:
    """One pooled HTTP session for a profile's clients.

    The SDK's default keeps ten connections per host and re-reads proxy settings from the
    environment on every call; with sixty-four delivery threads writing the log, the benchmark
    saw hundreds of connections opened per run (each a TLS handshake in Azure) and 7 % of the
    CPU spent on proxy lookups.
    """
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(
        pool_connections=8, pool_maxsize=128, max_retries=Retry(total=False, redirect=False, raise_on_status=False)
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return RequestsTransport(
        session=session,
        session_owner=False,
        use_env_settings=False,
        connection_timeout=profile["connection_timeout"],
        read_timeout=profile["read_timeout"],
    )


class Storage:
    """Clients for one storage account, built once and shared by every thread of a process."""

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        profile: Mapping[str, Any] = PATIENT,
        credential_factory: Callable[[Endpoints], TokenCredential] = make_credential,
    ) -> None:
        self.endpoints = endpoints
        self._profile = profile
        common = {**profile, "transport": _transport(profile)}
        self._transport = common["transport"]
        # The queue and blob SDKs have their own retry policy (15 s first back-off by default)
        # and ignore the azure-core back-off settings that the tables client honours.
        storage_retry: dict[str, Any] = (
            {
                "retry_policy": ExponentialRetry(
                    initial_backoff=0.5,  # type: ignore[arg-type]  # annotated int, computed as any number
                    increment_base=2,
                    retry_total=profile["retry_total"],
                )
            }
            if profile is FAST
            else {}
        )
        if endpoints.connection_string:
            cs = endpoints.connection_string
            self.tables = TableServiceClient.from_connection_string(cs, **common)
            self.queues = QueueServiceClient.from_connection_string(cs, **common, **storage_retry)
            self.blobs = BlobServiceClient.from_connection_string(cs, **common, **storage_retry)
        else:
            if not (endpoints.table_url and endpoints.queue_url and endpoints.blob_url):
                raise ConfigurationError("storage endpoints need a connection string or all three service URLs")
            credential = credential_factory(endpoints)
            self.tables = TableServiceClient(endpoints.table_url, credential=credential, **common)
            self.queues = QueueServiceClient(endpoints.queue_url, credential=credential, **common, **storage_retry)
            self.blobs = BlobServiceClient(endpoints.blob_url, credential=credential, **common, **storage_retry)
        self._lock = threading.Lock()
        self._table_clients: dict[str, TableClient] = {}
        self._table_batches: dict[str, TableBatch] = {}
        self._queue_clients: dict[str, QueueClient] = {}

    def table(self, name: str) -> TableClient:
        with self._lock:
            client = self._table_clients.get(name)
            if client is None:
                client = self._table_clients[name] = self.tables.get_table_client(name)
            return client

    def table_batch(self, name: str) -> TableBatch:
        """Insert-or-replace transactions on a table, on the tables client's endpoint, credential,
        transport and retry settings (see relay.store.tablebatch for why they do not go through it)."""
        with self._lock:
            batch = self._table_batches.get(name)
            if batch is None:
                retry = {k: v for k, v in self._profile.items() if k.startswith("retry_")}
                batch = self._table_batches[name] = TableBatch(
                    self.tables.url, name, self.tables.credential, self._transport, retry
                )
            return batch

    def queue(self, name: str) -> QueueClient:
        # The encode policy must be set per queue client: a service client's is not passed on,
        # and the Functions host expects base64 text.
        with self._lock:
            client = self._queue_clients.get(name)
            if client is None:
                client = self._queue_clients[name] = self.queues.get_queue_client(
                    name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
                )
            return client

    def container(self, name: str = PAYLOAD_CONTAINER) -> ContainerClient:
        return self.blobs.get_container_client(name)

    def ensure(self) -> None:
        """Create the tables, queues and container if missing (the Bicep template also does)."""
        for name in TABLES:
            try:
                self.tables.create_table(name)
            except ResourceExistsError:
                pass
        for name in QUEUES:
            for qname in (name, name + POISON_SUFFIX):
                try:
                    self.queues.create_queue(qname)
                except ResourceExistsError:
                    pass
        try:
            self.blobs.create_container(PAYLOAD_CONTAINER)
        except ResourceExistsError:
            pass


class Clients:
    """The process's storage clients by kind, and whether the tables, queues and container were
    made: a part of the runtime (`get_storage`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds: dict[str, Storage] = {}
        self.ensured = False


def get_storage(kind: str = "patient") -> Storage:
    """The process's shared clients: `fast` for HTTP routes, `patient` for queue work."""
    clients = runtime.current().part("storage", Clients)
    with clients.lock:
        storage = clients.kinds.get(kind)
        if storage is None:
            endpoints = endpoints_from_settings(get_settings().storage)
            storage = clients.kinds[kind] = Storage(endpoints, profile=FAST if kind == "fast" else PATIENT)
        ensured = clients.ensured
    if not ensured:
        # Once per runtime, outside the lock so an outage does not queue every request behind
        # it: on Azure the template has made everything and these are no-ops; on Azurite under
        # `func start` nothing else would create them.
        storage.ensure()
        clients.ensured = True
    return storage


def reset_storage() -> None:
    """Forget cached clients (tests and the dev host call this after changing settings)."""
    runtime.current().drop("storage")


BATCH = 100  # a table transaction holds at most 100 operations, all in one partition


def delete_rows(table: TableClient, rows: Iterable[Mapping[str, Any]]) -> int:
    """Delete rows (that carry their keys) a transaction per partition and hundred rows; returns how
    many it was given. For the stores' sweeps and the due timer: each says which of its
    rows go, this deletes them. A row that someone else deleted first (a release forgetting its
    rows, a second sweep or due run at once) fails its whole transaction: that chunk's rows are
    then deleted one by one, the missing one skipped, so the caller neither fails nor leaves the
    others behind."""
    by_partition: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_partition[row["PartitionKey"]].append(row["RowKey"])
    count = 0
    for pk, keys in by_partition.items():
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            try:
                table.submit_transaction([("delete", {"PartitionKey": pk, "RowKey": rk}) for rk in chunk])
            except TableTransactionError:
                for rk in chunk:
                    table.delete_entity(pk, rk)  # the SDK takes a 404 here as done
            count += len(chunk)
    return count
