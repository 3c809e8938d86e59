"""What a subscriber receives: a CloudEvent in the subscription's content mode, signed as
Standard Webhooks says (over the body actually sent).

Modes: `json` (the CloudEvent as `application/json`, what Power Automate and Logic Apps accept),
`structured` (the same body as `application/cloudevents+json`, the CloudEvents HTTP binding's
structured mode) and `binary` (the attributes as `ce-*` headers, the body is `data` alone).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import quote

from standardwebhooks.webhooks import Webhook

from . import __version__
from .events import compact

USER_AGENT = f"event-relay/{__version__}"


def cloudevent(*, event_id: str, event_type: str, source: str, time: str, subject: str | None, data: Any) -> bytes:
    """The notification body; built once per event and sent to every subscriber byte for byte."""
    doc: dict[str, Any] = {"specversion": "1.0", "id": event_id, "source": source, "type": event_type}
    if subject is not None:
        doc["subject"] = subject
    doc.update({"time": time, "datacontenttype": DATA_TYPE, "data": data})
    return compact(doc).encode("utf-8")


JSON_TYPE = "application/json; charset=utf-8"
STRUCTURED_TYPE = "application/cloudevents+json; charset=utf-8"
# The media type of `data`, named by `datacontenttype` and by Content-Type in binary mode.
DATA_TYPE = "application/json"
# What the HTTP binding leaves unencoded in a ce-* value: printable ASCII except space, '"' and '%'.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


class Notification(NamedTuple):
    body: bytes
    headers: dict[str, str]  # Content-Type, and the ce-* attributes in binary mode


class Notifications:
    """One event's notification in each content mode, each built once per event and then sent
    byte for byte to every subscriber that asked for that mode."""

    def __init__(
        self, *, event_id: str, event_type: str, source: str, time: str, subject: str | None, data: Any
    ) -> None:
        self._id, self._source, self._type, self._subject, self._time = event_id, source, event_type, subject, time
        self._data = data
        self._built: dict[str, Notification] = {}

    def get(self, mode: str) -> Notification:
        found = self._built.get(mode)
        if found is None:
            # The deliverer builds every mode it needs before the attempts start; a race here
            # would only build the same bytes twice.
            found = self._built[mode] = self._build(mode)
        return found

    def _build(self, mode: str) -> Notification:
        if mode == "binary":
            headers = {"Content-Type": DATA_TYPE, "ce-specversion": "1.0"}
            attributes = {
                "id": self._id,
                "source": self._source,
                "type": self._type,
                "subject": self._subject,
                "time": self._time,
            }
            for name, value in attributes.items():
                if value is not None:
                    headers["ce-" + name] = quote(value, safe=_HEADER_SAFE)
            return Notification(compact(self._data).encode("utf-8"), headers)
        body = cloudevent(
            event_id=self._id,
            event_type=self._type,
            source=self._source,
            time=self._time,
            subject=self._subject,
            data=self._data,
        )
        return Notification(body, {"Content-Type": STRUCTURED_TYPE if mode == "structured" else JSON_TYPE})


@lru_cache(maxsize=4096)
def _signer(secret: str) -> Webhook:
    # Decoding a secret per attempt showed up in profiles: keep one signer per subscription secret.
    return Webhook(secret)


def headers(*, secret: str, event_id: str, body: bytes, now: datetime, previous: str | None = None) -> dict[str, str]:
    """Standard Webhooks headers for one attempt; the timestamp is the attempt's, the id the event's.
    (The Content-Type is the notification's, the User-Agent the sender's own.)

    `previous`: during a rotation's grace period the secret it replaced signs too, as a second
    space-separated `v1,` entry, which every Standard Webhooks verifier accepts when either matches:
    a receiver still holding the old secret keeps verifying until it is given the new one."""
    text = body.decode("utf-8")
    signature = _signer(secret).sign(event_id, now, text)
    if previous is not None and previous != secret:
        signature += " " + _signer(previous).sign(event_id, now, text)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
