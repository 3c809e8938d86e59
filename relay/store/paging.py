"""Continuation tokens for paged lists: the table's own continuation, sealed by the token codec
(`relay.store.tokens`) so nothing a client sends reaches a query unless the relay issued it."""

from __future__ import annotations

from typing import Any

from relay.core.errors import invalid
from relay.store.tokens import Purpose, get_codec


def encode_token(token: Any) -> str | None:
    if not token:
        return None
    return get_codec().seal(Purpose.SUBSCRIPTIONS_PAGE, token)


def decode_token(text: str | None, field: str = "continuationToken") -> Any:
    if not text:
        return None
    token = get_codec().open(Purpose.SUBSCRIPTIONS_PAGE, text, field)
    # Signed by this relay, so the shape is ours; checked still, as a token of an older shape would be.
    if not (all(isinstance(v, str) for v in token.values()) and set(token) <= {"PartitionKey", "RowKey"}):
        raise invalid(field, "is not a token this API issued")
    return token
