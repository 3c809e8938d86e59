"""What a subscriber receives: a CloudEvent in the subscription's content mode, signed as
Standard Webhooks says (over the body actually sent).

Modes: `json` (the CloudEvent as `application/json`, what Power Automate and Logic Apps accept),
`structured` (the same body as `application/cloudevents+json`, the CloudEvents HTTP binding's
structured mode) and `binary` (the attributes as `ce-*` headers, the body is `data` alone).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import quote

from standardwebhooks.webhooks import Webhook

from relay import __version__
from relay.core.jsontext import compact

# The marker in an event's `ext` that its data is base64 of bytes (relay.http.cloudevents_in.BASE64).
BASE64 = "$base64"

USER_AGENT = f"event-relay/{__version__}"


def cloudevent(
    *,
    event_id: str,
    event_type: str,
    source: str,
    time: str,
    subject: str | None,
    data: Any,
    ext: dict[str, Any] | None = None,
) -> bytes:
    """The notification body; built once per event and sent to every subscriber byte for byte.
    `ext`: the attributes a CloudEvents producer sent that the relay has no field for
    (datacontenttype, dataschema, extensions), after the relay's own, which they never replace."""
    doc: dict[str, Any] = {"specversion": "1.0", "id": event_id, "source": source, "type": event_type}
    if subject is not None:
        doc["subject"] = subject
    others = dict(ext or {})
    encoded = bool(others.pop(BASE64, False))
    doc.update({"time": time, "datacontenttype": others.pop("datacontenttype", None) or DATA_TYPE})
    for name, value in others.items():
        doc.setdefault(name, value)
    doc["data_base64" if encoded else "data"] = data
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
        self,
        *,
        event_id: str,
        event_type: str,
        source: str,
        time: str,
        subject: str | None,
        data: Any,
        ext: dict[str, Any] | None = None,
    ) -> None:
        self._id, self._source, self._type, self._subject, self._time = event_id, source, event_type, subject, time
        self._data = data
        self._ext = ext
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
            others = dict(self._ext or {})
            encoded = bool(others.pop(BASE64, False))
            kind = others.pop("datacontenttype", None) or DATA_TYPE
            headers = {"Content-Type": kind, "ce-specversion": "1.0"}
            attributes: dict[str, Any] = {
                "id": self._id,
                "source": self._source,
                "type": self._type,
                "subject": self._subject,
                "time": self._time,
            }
            for name, value in others.items():
                attributes.setdefault(name, value)
            for name, value in attributes.items():
                if value is not None:
                    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
                    headers["ce-" + name] = quote(text, safe=_HEADER_SAFE)
            if encoded:
                body = base64.b64decode(self._data)
            elif isinstance(self._data, str) and not _is_json(kind):
                body = self._data.encode("utf-8")  # text data (text/plain, XML) as the producer sent it
            else:
                body = compact(self._data).encode("utf-8")
            return Notification(body, headers)
        body = cloudevent(
            event_id=self._id,
            event_type=self._type,
            source=self._source,
            time=self._time,
            subject=self._subject,
            data=self._data,
            ext=self._ext,
        )
        return Notification(body, {"Content-Type": STRUCTURED_TYPE if mode == "structured" else JSON_TYPE})


def _is_json(kind: str) -> bool:
    media = kind.split(";")[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


@lru_cache(maxsize=4096)
def _signer(secret: str) -> Webhook:
    # Decoding a secret per attempt showed up in profiles: keep one signer per subscription secret.
    # A pure memo (no I/O, no thread, nothing to close), so a module value, not a runtime part.
    return Webhook(secret)


def _sign(secret: str, event_id: str, now: datetime, body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # Bytes a CloudEvents producer sent in binary mode: the same HMAC, over the bytes themselves
        # (the library signs text only).
        key = base64.b64decode(secret.removeprefix("whsec_"))
        signed = f"{event_id}.{int(now.timestamp())}.".encode() + body
        return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
    return _signer(secret).sign(event_id, now, text)


def headers(*, secret: str, event_id: str, body: bytes, now: datetime, previous: str | None = None) -> dict[str, str]:
    """Standard Webhooks headers for one attempt; the timestamp is the attempt's, the id the event's.
    (The Content-Type is the notification's, the User-Agent the sender's own.)

    `previous`: during a rotation's grace period the secret it replaced signs too, as a second
    space-separated `v1,` entry, which every Standard Webhooks verifier accepts when either matches:
    a receiver still holding the old secret keeps verifying until it is given the new one."""
    signature = _sign(secret, event_id, now, body)
    if previous is not None and previous != secret:
        signature += " " + _sign(previous, event_id, now, body)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
