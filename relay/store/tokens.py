"""The one codec for the opaque tokens the relay hands out and takes back: paging continuation
tokens (subscriptions, delivery log) and the polling trigger's `triggerState`.

A token is `<payload>.<mac>`: the payload is base64url JSON, the MAC an HMAC-SHA256 over the
token's purpose and the payload, with a key only the relay holds. A token is checked before
anything in it is decoded, so a forged, edited or truncated one is a 400 naming its parameter
and never reaches a parser or a query. The purpose in the MAC keeps one kind of token from being
accepted as another. Tokens carry positions (table keys, times), never secrets: signing makes
them tamper-evident, not confidential.

The key is `RELAY_TOKEN_KEY` when set, else a random key the relay creates once in its own
table (`relaykeys`) and every instance reads: whoever creates it first wins, the others read it.
It is read once per process and cached.

Rotation: set `RELAY_TOKEN_KEY` to the new key and `RELAY_TOKEN_KEY_PREVIOUS` to the one it
replaces. New tokens are signed with the new key only; tokens signed with the previous one still
open, so polling states and continuation tokens in flight keep working. Keep the previous key for
`RELAY_EVENT_RETENTION_DAYS` (no state older than that has anything left to read), then remove it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from relay.core import runtime
from relay.core.errors import invalid
from relay.core.settings import get_settings
from relay.store.storage import KEYS_TABLE, Storage, get_storage

KEY_PARTITION, KEY_ROW = "tokens", "current"
KEY_BYTES = 32


class Purpose(StrEnum):
    """What a token is for; part of its MAC, so a token is only good where it was issued."""

    SUBSCRIPTIONS_PAGE = "subscriptions-page"
    DELIVERIES_PAGE = "deliveries-page"
    TRIGGER_STATE = "trigger-state"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


class TokenCodec:
    """Seal a JSON object into a signed token, and open one back only if its MAC is ours."""

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        """`key` signs and opens; each of `previous` (keys rotated out) only opens."""
        if any(len(k) < KEY_BYTES for k in (key, *previous)):
            raise ValueError(f"a token key must hold at least {KEY_BYTES} bytes")
        self._key = key
        self._previous = tuple(previous)

    def __repr__(self) -> str:  # the key never reaches a log line
        return f"TokenCodec(key=***, previous={len(self._previous)})"

    @staticmethod
    def _mac(key: bytes, purpose: Purpose, payload: str) -> str:
        return _b64(hmac.new(key, f"{purpose}\n{payload}".encode("ascii"), hashlib.sha256).digest())

    def seal(self, purpose: Purpose, doc: Mapping[str, Any]) -> str:
        payload = _b64(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{payload}.{self._mac(self._key, purpose, payload)}"

    def _signed(self, purpose: Purpose, payload: str, mac: str) -> bool:
        # Every key is tried (no early exit), so the time taken does not say which one matched.
        matches = [hmac.compare_digest(mac, self._mac(k, purpose, payload)) for k in (self._key, *self._previous)]
        return any(matches)

    def open(self, purpose: Purpose, text: str, field: str) -> dict[str, Any]:
        """The object sealed in `text` with the key or a previous one, or a 400 naming `field`:
        the MAC is checked first."""
        payload, dot, mac = text.rpartition(".")
        if not (dot and payload.isascii() and mac.isascii() and self._signed(purpose, payload, mac)):
            raise invalid(field, "is not a token this API issued")
        try:
            doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, binascii.Error):  # signed by us yet unreadable: a bug, still the caller's 400
            doc = None
        if not isinstance(doc, dict):
            raise invalid(field, "is not a token this API issued")
        return doc


def stored_key(storage: Storage) -> bytes:
    """The relay's own key in `relaykeys`, created on first use. Instances starting together may
    both try to create it: the insert of all but one fails, and everyone reads the one stored."""
    table = storage.table(KEYS_TABLE)
    try:
        return base64.b64decode(table.get_entity(KEY_PARTITION, KEY_ROW)["key"])
    except ResourceNotFoundError:
        pass
    try:
        table.create_entity(
            {
                "PartitionKey": KEY_PARTITION,
                "RowKey": KEY_ROW,
                "key": base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii"),
            }
        )
    except ResourceExistsError:
        pass  # another instance created it first: use theirs
    return base64.b64decode(table.get_entity(KEY_PARTITION, KEY_ROW)["key"])


class _Slot:
    """The runtime's part for the codec: built empty (a part's builder makes no network call),
    filled by the first `get_codec()`, which may read the key from storage."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # one reader fetches the stored key; the others wait for it
        self.codec: TokenCodec | None = None


def get_codec() -> TokenCodec:
    """The process's codec: `RELAY_TOKEN_KEY`, else the stored key, read once; tokens signed with
    `RELAY_TOKEN_KEY_PREVIOUS` still open."""
    slot = runtime.current().part("tokens.codec", _Slot)
    codec = slot.codec
    if codec is not None:
        return codec
    with slot.lock:
        if slot.codec is None:
            settings = get_settings()
            configured, previous = settings.token_key, settings.token_key_previous
            slot.codec = TokenCodec(
                configured.encode("utf-8") if configured else stored_key(get_storage("fast")),
                [previous.encode("utf-8")] if previous else [],
            )
        return slot.codec


def reset_codec() -> None:
    """Forget the cached key (tests and the dev host, after changing settings)."""
    runtime.current().drop("tokens.codec")
