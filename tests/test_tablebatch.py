"""The event log's own table transaction (relay.tablebatch) against Azurite, which checks its
Shared Key signature: rows written all or none, replaced whole, keys of any text, and a refusal
raised with the service's status and reason."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import RequestsTransport

from relay.storage import EVENTS_TABLE, Endpoints, Storage, is_outage
from relay.tablebatch import MAX_ROWS, TableBatch
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
