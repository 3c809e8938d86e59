"""Continuation tokens for paged lists: the table's own continuation, opaque to clients and
checked on the way back in so nothing a client sends reaches a query unchecked."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .errors import invalid


def encode_token(token: Any) -> str | None:
    if not token:
        return None
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode().rstrip("=")


def decode_token(text: str | None, field: str = "continuationToken") -> Any:
    if not text:
        return None
    try:
        token = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        raise invalid(field, "is not a token this API issued") from None
    if not (isinstance(token, dict) and all(isinstance(v, str) for v in token.values())
            and set(token) <= {"PartitionKey", "RowKey"}):
        raise invalid(field, "is not a token this API issued")
    return token
