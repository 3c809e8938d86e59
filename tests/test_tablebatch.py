"""The event log's own table transaction (relay.store.tablebatch) against Azurite, which checks its
Shared Key signature: rows written all or none, replaced whole, keys of any text, and a refusal
raised with the service's status and reason."""

from __future__ import annotations

import base64
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from azure.core.credentials import AccessToken, AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import HttpResponseError, ServiceResponseError
from azure.core.pipeline.transport import RequestsTransport

from relay.store.storage import EVENTS_TABLE, Endpoints, Storage, is_outage
from relay.store.tablebatch import MAX_ROWS, TableBatch
from tests.helpers import Azurite


@pytest.fixture
def store(azurite: Azurite) -> Iterator[Storage]:
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    yield storage


def _rows(storage: Storage, partition: str) -> dict[str, dict[str, str]]:
    table = storage.table(EVENTS_TABLE)
    return {row["RowKey"]: dict(row) for row in table.query_entities("PartitionKey eq @p", parameters={"p": partition})}


def test_rows_are_inserted_then_replaced_whole_with_keys_of_any_text(store: Storage) -> None:
    partition = f"e:{uuid.uuid4().hex}'s"
    keys = ["plain", "it's", "x:a.b.*:20260101T000000.000000Z_e1", "naïve €", "100%+&=;,"]
    batch = store.table_batch(EVENTS_TABLE)
    batch.upsert([{"PartitionKey": partition, "RowKey": key, "data": f"first {key}", "old": "x"} for key in keys])
    assert {k: v["data"] for k, v in _rows(store, partition).items()} == {key: f"first {key}" for key in keys}

    batch.upsert([{"PartitionKey": partition, "RowKey": key, "data": "ünïcode"} for key in keys[:2]])
    rows = _rows(store, partition)
    assert rows["it's"] == {"PartitionKey": partition, "RowKey": "it's", "data": "ünïcode"}  # "old" is gone
    assert rows["plain"]["data"] == "ünïcode" and rows["naïve €"]["old"] == "x"


def test_a_refused_row_writes_nothing_and_names_the_reason(store: Storage) -> None:
    partition = f"e:{uuid.uuid4().hex}"
    with pytest.raises(HttpResponseError) as refused:
        store.table_batch(EVENTS_TABLE).upsert(
            [
                {"PartitionKey": partition, "RowKey": "fine", "data": "x"},
                {"PartitionKey": partition, "RowKey": "too big", "data": "é" * 40_000},  # over 64 KiB as UTF-16
            ]
        )
    assert refused.value.status_code == 400 and "PropertyValueTooLarge" in str(refused.value)
    assert not is_outage(refused.value)  # a refusal, not an outage: the caller must not wait it out
    assert _rows(store, partition) == {}


def test_a_wrong_key_is_refused_by_the_service(store: Storage) -> None:
    """Azurite checks Shared Key signatures: the right key is accepted above, a wrong one is not."""
    wrong = AzureNamedKeyCredential(store.tables.account_name, base64.b64encode(b"k" * 64).decode())
    batch = TableBatch(store.tables.url, EVENTS_TABLE, wrong, RequestsTransport(), {"retry_total": 0})
    with pytest.raises(HttpResponseError) as refused:
        batch.upsert([{"PartitionKey": "p", "RowKey": "r"}])
    assert refused.value.status_code == 403


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        ([], ValueError),
        ([{"PartitionKey": "p", "RowKey": str(n)} for n in range(MAX_ROWS + 1)], ValueError),
        ([{"PartitionKey": "p", "RowKey": "1"}, {"PartitionKey": "q", "RowKey": "2"}], ValueError),
        ([{"PartitionKey": "p", "RowKey": "1", "n": 1}], TypeError),
    ],
)
def test_what_one_transaction_cannot_hold_is_refused_before_sending(store: Storage, rows: list, error: type) -> None:
    with pytest.raises(error):
        store.table_batch(EVENTS_TABLE).upsert(rows)


# ---- the credentials Azurite cannot check, and answers it does not give -------------------------
# A loopback stand-in for the Table service's `$batch` endpoint (HTTPS with a test CA where a
# bearer token needs it): it records each request and answers as scripted. Entra ID cannot run
# here, so its token comes from a stand-in credential.


class BatchEndpoint:
    """Answers each `$batch` POST with `script(n, body)` -> (status, body bytes) or None (reset)."""

    def __init__(self, script: Callable[[int, bytes], tuple[int, bytes] | None], tls: ssl.SSLContext | None = None):
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.seen.append((self.path, dict(self.headers), body))
                answer = script(len(outer.seen) - 1, body)
                if answer is None:  # a reset: the connection ends with no answer at all
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                status, content = answer
                self.send_response(status)
                self.send_header("Content-Type", "multipart/mixed; boundary=batchresponse_t")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://localhost:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answered(count: int) -> bytes:
    """The service's answer to a change set of `count` successful operations."""
    parts = "".join(
        "--changesetresponse_t\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        "HTTP/1.1 204 No Content\r\nDataServiceVersion: 3.0;\r\n\r\n\r\n"
        for _ in range(count)
    )
    return (
        "--batchresponse_t\r\nContent-Type: multipart/mixed; boundary=changesetresponse_t\r\n\r\n"
        f"{parts}--changesetresponse_t--\r\n--batchresponse_t--\r\n"
    ).encode()


def all_answered(n: int, body: bytes) -> tuple[int, bytes]:
    return 202, answered(body.count(b"\r\nPUT "))


ROWS = [{"PartitionKey": "e:1", "RowKey": "a"}, {"PartitionKey": "e:1", "RowKey": "x:*:a"}]


class StandInToken:
    """Entra ID's part (cannot run here): hands out a fixed token and remembers the scopes asked."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes += scopes
        return AccessToken("entra-token", int(time.time()) + 3600)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_a_managed_identity_sends_its_storage_token_over_https(ca: trustme.CA, tmp_path: Path) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    endpoint = BatchEndpoint(all_answered, tls)
    credential = StandInToken()
    try:
        transport = RequestsTransport(connection_verify=str(ca_file))
        TableBatch(endpoint.url, EVENTS_TABLE, credential, transport, {"retry_total": 0}).upsert(ROWS)
    finally:
        endpoint.close()
    ((path, headers, body),) = endpoint.seen
    assert path == "/$batch" and headers["Authorization"] == "Bearer entra-token"
    assert credential.scopes == ["https://storage.azure.com/.default"]
    assert body.count(b"\r\nPUT https://localhost:") == 2


def test_a_sas_goes_on_the_batch_url_only() -> None:
    endpoint = BatchEndpoint(all_answered)
    try:
        sas = AzureSasCredential("sv=2019-02-02&tn=relayevents&sig=c2VjcmV0")
        TableBatch(endpoint.url, EVENTS_TABLE, sas, RequestsTransport(), {"retry_total": 0}).upsert(ROWS)
    finally:
        endpoint.close()
    ((path, headers, body),) = endpoint.seen
    assert path.startswith("/$batch?") and "sig=c2VjcmV0" in path and "Authorization" not in headers
    assert b"sig=" not in body  # the operations inside name the rows, not the credential


def test_a_reset_batch_is_sent_again() -> None:
    """Insert-or-replace of whole rows is safe to repeat: a connection reset before the answer
    retries the POST (azure-core retries no POST after a reset unless told to)."""
    endpoint = BatchEndpoint(lambda n, body: None if n == 0 else all_answered(n, body))
    try:
        batch = TableBatch(
            endpoint.url,
            EVENTS_TABLE,
            StandInKey,
            RequestsTransport(),
            {"retry_total": 2, "retry_backoff_factor": 0.01},
        )
        batch.upsert(ROWS)
    finally:
        endpoint.close()
    assert len(endpoint.seen) == 2


def test_an_answer_that_does_not_cover_every_row_is_an_outage_not_a_success() -> None:
    """A 202 whose body answers fewer rows than were sent (a proxy, a cut body) is not known to
    be written: the caller must wait it out and write again, never take it as done."""
    endpoint = BatchEndpoint(lambda n, body: (202, answered(1)))
    try:
        with pytest.raises(ServiceResponseError) as failed:
            TableBatch(endpoint.url, EVENTS_TABLE, StandInKey, RequestsTransport(), {"retry_total": 0}).upsert(ROWS)
    finally:
        endpoint.close()
    assert is_outage(failed.value)


StandInKey = AzureNamedKeyCredential("devstoreaccount1", base64.b64encode(b"k" * 64).decode())


def test_it_stores_exactly_what_the_sdks_transaction_stores(store: Storage) -> None:
    """Pinned to the SDK: the same whole-row upserts, written once by `submit_transaction` and once
    by the hand-written `$batch`, read back as the same entities (properties, values and their
    types), the second write replacing the first as the SDK's REPLACE does."""
    from azure.data.tables import UpdateMode

    values = ["plain", "", "it's", "naïve € 😀", "100%+&=;,\n\t", "x" * 32_000, '{"json":[1,2]}', "true", "12"]

    def rows(partition: str, generation: int) -> list[dict[str, str]]:
        return [
            {"PartitionKey": partition, "RowKey": f"k{i}:{key}", f"p{generation}": value, "shared": value}
            for i, (key, value) in enumerate(zip(["a", "it's", "naïve", "x.y.*", "%2F"] * 2, values, strict=False))
        ]

    table = store.table(EVENTS_TABLE)
    read: dict[str, list[dict[str, Any]]] = {}
    for how, partition in (("sdk", f"sdk:{uuid.uuid4().hex}"), ("hand", f"hand:{uuid.uuid4().hex}")):
        for generation in (1, 2):
            batch = rows(partition, generation)
            if how == "sdk":
                table.submit_transaction([("upsert", row, {"mode": UpdateMode.REPLACE}) for row in batch])
            else:
                store.table_batch(EVENTS_TABLE).upsert(batch)
        entities = table.query_entities("PartitionKey eq @pk", parameters={"pk": partition})
        read[how] = sorted(
            (
                {
                    "RowKey": e["RowKey"],
                    "properties": {
                        k: (v, type(v).__name__) for k, v in e.items() if k not in ("PartitionKey", "RowKey")
                    },
                }
                for e in entities
            ),
            key=lambda e: e["RowKey"],
        )
    assert read["hand"] == read["sdk"]
    assert all("p1" not in e["properties"] and "p2" in e["properties"] for e in read["hand"])  # replaced whole
