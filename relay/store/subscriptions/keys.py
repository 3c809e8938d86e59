"""Keys and small helpers of the subscriptions table's rows (relay.store.subscriptions.rows
re-exports them): a URL's key, an owner's partition, a caller's key, a new secret."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from azure.data.tables import TableTransactionError


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def url_key(url: str) -> str:
    return "u:" + hashlib.sha256(url.encode("utf-8")).hexdigest()


def owner_partition(owner: str) -> str:
    # Owner ids are Entra object ids, or `sub` values that may hold characters a key cannot.
    return "o:" + hashlib.sha256(owner.encode("utf-8")).hexdigest()[:40]


def caller_key(*values: str) -> str:
    return hashlib.sha256("\n".join(values).encode("utf-8")).hexdigest()


def error_code(exc: TableTransactionError) -> str | None:
    """The storage error code of a failed transaction: the tables SDK sets it on the error while
    decoding the answer, but the class does not declare it."""
    code = getattr(exc, "error_code", None)
    return code if isinstance(code, str) else None


def _clean(entity: dict[str, Any]) -> dict[str, Any]:
    """Tables cannot store None; an absent property reads back as absent."""
    return {k: v for k, v in entity.items() if v is not None}


@dataclass(frozen=True, kw_only=True)
class Caller:
    """The Logic Apps caller a subscribe or an unsubscribe came from (`CALLER_HEADERS`): ids and
    names, not secrets. An HTTP Webhook's unsubscribe, which cannot send its callback URL, is
    matched to its subscription by these."""

    workflow_id: str | None = None
    workflow_operation_name: str | None = None
    client_tracking_id: str | None = None

    @property
    def identifies(self) -> bool:
        """Whether an unsubscribe can find its subscriptions by this caller alone."""
        return bool((self.workflow_id and self.workflow_operation_name) or self.client_tracking_id)


# The Logic Apps headers that identify a subscriber, and the `Caller` fields they are kept in.
CALLER_HEADERS = {
    "x-ms-workflow-id": "workflow_id",
    "x-ms-workflow-operation-name": "workflow_operation_name",
    "x-ms-client-tracking-id": "client_tracking_id",
}
