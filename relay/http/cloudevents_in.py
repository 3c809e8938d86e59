"""CloudEvents in: `POST /api/events` read in the CloudEvents HTTP binding's three modes, and the
CloudEvents webhook validation handshake (CONTRACT section 6, issue 23 item 4).

- structured: `Content-Type: application/cloudevents+json`, one event as a JSON object;
- batched: `Content-Type: application/cloudevents-batch+json`, a JSON array of 1 to 100;
- binary: `ce-specversion`, `ce-id`, `ce-source`, `ce-type` (and any other `ce-*`) headers, the
  body is `data` and its `Content-Type` is `datacontenttype`.

Each event becomes the relay's own JSON (`type`, `id`, `source`, `subject`, `time`, `data`),
validated by the same rules as a relay publish, plus the attributes the relay has no field for
(`datacontenttype`, `dataschema` and every extension), which travel with the event
(`EventRecord.ext`) and are delivered in every content mode (`relay.outbound.signing`). Data that is not
JSON is kept as text; bytes that are not UTF-8 text as base64 (`data_base64` in JSON).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

from relay.core.errors import BadRequest, FieldError, PayloadTooLarge, invalid
from relay.core.settings import Settings
from relay.http.api import Reply, Request

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
SPECVERSION = "1.0"
MAX_BATCH = 100
# The attributes the relay's own event has a field for; everything else goes into `ext`.
OWN = ("id", "source", "type", "subject", "time")
# Attribute names, as CloudEvents 1.0 defines them (lower-case letters and digits; 20 at most is
# the spec's advice, which the relay holds producers to so a header or a row never grows).
ATTRIBUTE_NAME = re.compile(r"[a-z0-9]{1,20}")
# Members of one event (attributes, data included), or ce-* headers of a binary one.
MAX_MEMBERS = 32
MAX_ATTRIBUTE_LENGTH = 2048
# `type/subtype` and parameters, printable ASCII only (RFC 9110 media-type, loosely), 256 at most
# (the same pattern is in the full API document).
MEDIA_TYPE_PATTERN = r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+( *;[ -~]*)?"
MEDIA_TYPE = re.compile(MEDIA_TYPE_PATTERN)
MAX_MEDIA_TYPE = 256
# The marker in `ext` that `data` is base64 of bytes (never an attribute name: those are [a-z0-9]).
BASE64 = "$base64"
# What the handshake answers as the rate a sender may use: the relay sets no limit of its own.
ALLOWED_RATE = "*"
# What a handshake's origin may be: a host name (the spec's example `eventemitter.example.com`,
# Event Grid's `eventgrid.azure.net`), with a port at most; echoed back, so nothing else.
ORIGIN_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?"
ORIGIN = re.compile(ORIGIN_PATTERN)


@dataclass
class Incoming:
    """The events of one CloudEvents request, as the relay's own JSON, and their other attributes."""

    items: list[Any]
    ext: list[dict[str, Any] | None]
    batch: bool


def media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def is_json_type(value: str | None) -> bool:
    """Whether a `datacontenttype` says the data is JSON (absent: the binding's default, JSON)."""
    kind = media_type(value)
    return kind in ("", "application/json", "text/json") or kind.endswith("+json")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def read(request: Request, settings: Settings) -> Incoming | None:
    """The CloudEvents in a publish request, or None when it is the relay's own JSON."""
    kind = media_type(request.headers.get("content-type"))
    if kind == STRUCTURED:
        doc = request.json(limit=settings.max_event_bytes)
        item, ext = _structured(doc, "")
        return Incoming([item], [ext], batch=False)
    if kind == BATCH:
        doc = request.json(limit=settings.max_batch_bytes)
        if not isinstance(doc, list) or not 1 <= len(doc) <= MAX_BATCH:
            raise invalid("body", f"a CloudEvents batch must be a JSON array of 1 to {MAX_BATCH} events")
        pairs = [_structured(event, f"[{n}].") for n, event in enumerate(doc)]
        return Incoming([p[0] for p in pairs], [p[1] for p in pairs], batch=True)
    if _header(request.headers, "ce-specversion") is not None:
        item, ext = _binary(request, settings)
        return Incoming([item], [ext], batch=False)
    return None


def _check_ext(name: str, value: Any, field: str, errors: list[FieldError]) -> Any:
    if not ATTRIBUTE_NAME.fullmatch(name):
        errors.append(FieldError(field, "is not a CloudEvents attribute name (1 to 20 lower-case letters or digits)"))
        return None
    if isinstance(value, bool) or isinstance(value, int):
        return value
    if not isinstance(value, str):
        errors.append(FieldError(field, "must be a string, an integer or a boolean"))
        return None
    if len(value) > MAX_ATTRIBUTE_LENGTH:
        errors.append(FieldError(field, f"is longer than {MAX_ATTRIBUTE_LENGTH} characters"))
        return None
    return value


def _structured(doc: Any, prefix: str) -> tuple[Any, dict[str, Any] | None]:
    """One event of structured or batched mode: (the relay's JSON for it, its other attributes).
    Errors name the attribute (`[2].specversion` in a batch); a non-object is handed on as it is,
    for the publish's own check to name."""
    if not isinstance(doc, dict):
        raise invalid(prefix.rstrip(".") or "body", "must be a JSON object (a CloudEvent)")
    if len(doc) > MAX_MEMBERS:
        raise invalid(prefix.rstrip(".") or "body", f"holds more than {MAX_MEMBERS} attributes")
    errors: list[FieldError] = []
    if doc.get("specversion") != SPECVERSION:
        errors.append(FieldError(prefix + "specversion", f'must be "{SPECVERSION}"'))
    for name in ("id", "source", "type"):
        if name not in doc:
            errors.append(FieldError(prefix + name, "is required"))
    item: dict[str, Any] = {name: doc[name] for name in OWN if name in doc}
    ext: dict[str, Any] = {}
    if "data_base64" in doc:
        encoded = doc["data_base64"]
        if "data" in doc:
            errors.append(FieldError(prefix + "data_base64", "must not be sent with data"))
        elif not isinstance(encoded, str) or not _is_base64(encoded):
            errors.append(FieldError(prefix + "data_base64", "must be base64 text"))
        item["data"], ext[BASE64] = encoded, True
    else:
        item["data"] = doc.get("data")
    for name, value in doc.items():
        if name in OWN or name in ("specversion", "data", "data_base64"):
            continue
        if value is None:  # as in the relay's own JSON: null is never read as "absent"
            errors.append(FieldError(prefix + name, "must not be null; leave the attribute out"))
            continue
        checked = _check_ext(name, value, prefix + name, errors)
        if checked is not None:
            ext[name] = checked
    _bound(ext, prefix, errors)
    if errors:
        raise BadRequest("; ".join(f"{e.field}: {e.message}" for e in errors[:5]), errors)
    return item, ext or None


def _bound(ext: dict[str, Any], prefix: str, errors: list[FieldError]) -> None:
    if not isinstance(ext.get("dataschema", ""), str):
        errors.append(FieldError(prefix + "dataschema", "must be a string (a URI)"))
    kind = ext.get("datacontenttype")
    if kind is not None and (not isinstance(kind, str) or len(kind) > MAX_MEDIA_TYPE or not MEDIA_TYPE.fullmatch(kind)):
        # It becomes the Content-Type of binary-mode deliveries: a media type, nothing a header cannot hold.
        errors.append(FieldError(prefix + "datacontenttype", "must be a media type such as text/plain"))


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _binary(request: Request, settings: Settings) -> tuple[Any, dict[str, Any] | None]:
    """Binary mode: the attributes from `ce-*` headers (percent-decoded, as the binding encodes
    them), the body as `data` and its Content-Type as `datacontenttype`."""
    errors: list[FieldError] = []
    attributes: dict[str, str] = {}
    for key, value in request.headers.items():
        name = key.lower()
        if name.startswith("ce-"):
            attributes[name[3:]] = unquote(value)
    if len(attributes) > MAX_MEMBERS:
        raise invalid("ce-*", f"more than {MAX_MEMBERS} ce- headers")
    if attributes.get("specversion") != SPECVERSION:
        errors.append(FieldError("ce-specversion", f"must be {SPECVERSION}"))
    for name in ("id", "source", "type"):
        if not attributes.get(name):
            errors.append(FieldError(f"ce-{name}", "is required"))
    item: dict[str, Any] = {name: attributes[name] for name in OWN if name in attributes}
    ext: dict[str, Any] = {}
    for name, value in attributes.items():
        if name in OWN or name in ("specversion", "datacontenttype"):
            continue  # datacontenttype is the Content-Type in binary mode
        checked = _check_ext(name, value, f"ce-{name}", errors)
        if checked is not None:
            ext[name] = checked
    content_type = request.headers.get("content-type")
    declared = (request.headers.get("content-length") or "").strip()
    if declared.isdigit() and int(declared) > settings.max_event_bytes or len(request.body) > settings.max_event_bytes:
        raise PayloadTooLarge(f"the event's data is larger than {settings.max_event_bytes} bytes")
    if not request.body:
        item["data"] = None
    elif is_json_type(content_type):
        # JSON data is parsed (and bounded) as any relay body is. No Content-Type means JSON here
        # (the JSON format's default, what the Python SDK sends): the ce-* headers make a browser
        # ask first, so this is no way round the media-type rule against cross-site posts.
        typed = replace(request, headers={**request.headers, "content-type": content_type or "application/json"})
        item["data"] = typed.json(limit=settings.max_event_bytes)
        if content_type and media_type(content_type) != "application/json":
            ext["datacontenttype"] = content_type
    else:
        ext["datacontenttype"] = content_type
        try:
            item["data"] = request.body.decode("utf-8")
        except UnicodeDecodeError:
            item["data"], ext[BASE64] = base64.b64encode(request.body).decode("ascii"), True
    _bound(ext, "", errors)
    if errors:
        raise BadRequest("; ".join(f"{e.field}: {e.message}" for e in errors[:5]), errors)
    return item, ext or None


def handshake(request: Request) -> Reply:
    """The CloudEvents "HTTP 1.1 Web Hooks" validation handshake (section 4.2), as Azure Event
    Grid sends it before it delivers to an endpoint: `OPTIONS` with `WebHook-Request-Origin`,
    answered with that origin allowed and no rate limit of the relay's own."""
    origin = _header(request.headers, "webhook-request-origin")
    if origin is None:
        raise invalid("WebHook-Request-Origin", "is required: the CloudEvents webhook validation handshake names it")
    if not ORIGIN.fullmatch(origin):
        raise invalid("WebHook-Request-Origin", "must be a host name such as eventgrid.azure.net")
    headers = {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": ALLOWED_RATE}
    return Reply(200, None, headers)
