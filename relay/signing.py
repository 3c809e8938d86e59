"""What a subscriber receives: a CloudEvents 1.0 JSON body, signed as Standard Webhooks says."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from standardwebhooks.webhooks import Webhook

from . import __version__
from .events import compact

USER_AGENT = f"event-relay/{__version__}"


def cloudevent(*, event_id: str, event_type: str, source: str, time: str,
               subject: str | None, data: Any) -> bytes:
    """The notification body; built once per event and sent to every subscriber byte for byte."""
    doc: dict[str, Any] = {"specversion": "1.0", "id": event_id, "source": source, "type": event_type}
    if subject is not None:
        doc["subject"] = subject
    doc.update({"time": time, "datacontenttype": "application/json", "data": data})
    return compact(doc).encode("utf-8")


@lru_cache(maxsize=4096)
def _signer(secret: str) -> Webhook:
    # Decoding a secret per attempt showed up in profiles: keep one signer per subscription secret.
    return Webhook(secret)


def headers(*, secret: str, event_id: str, body: bytes, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers for one attempt; the timestamp is the attempt's, the id the event's.
    (The User-Agent is the sender's own.)"""
    return {
        "Content-Type": "application/json; charset=utf-8",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": _signer(secret).sign(event_id, now, body.decode("utf-8")),
    }
