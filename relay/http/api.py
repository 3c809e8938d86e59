"""The HTTP API's shared parts: request parsing, `http` (binding a route to a blueprint) and the
one place errors become answers (`route`).

The handlers live in `relay.http.routes`, one module and one Blueprint per route group. Each HTTP
function takes every method and is dispatched here, so an unknown method is a 405 problem rather
than the host's bare 404.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import azure.functions as func
from azure.core.exceptions import HttpResponseError
from pydantic import BaseModel, ValidationError

from relay.core.errors import (
    BadRequest,
    ConfigurationError,
    FieldError,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    PayloadTooLarge,
    Problem,
    ServiceUnavailable,
    UnsupportedMediaType,
    invalid,
)
from relay.core.settings import Settings, get_settings
from relay.http import access
from relay.http.problems import problem_response
from relay.store.storage import is_outage

log = logging.getLogger("relay.api")

SMALL_BODY = 64 * 1024
# Deeper JSON is refused at the door: every later reader (pydantic stops at 200, the recursive
# encoders sooner) must be able to read back whatever was accepted.
MAX_DEPTH = 64
# Values and member names one body may hold. Every later step walks the parsed document (depth,
# size, schema, storage), so this bounds their time and memory whatever the bytes are.
MAX_NODES = 100_000
RETRY_AFTER_SECONDS = 10
# Methods that change something: a browser sends them cross-site without a preflight when they
# carry no body or a "simple" one, with the user's cookies (Easy Auth's session) attached.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass
class Request:
    method: str
    url: str
    base: str  # scheme://host every absolute URL starts with (see `public_base`)
    params: Mapping[str, str]
    route: Mapping[str, str]
    headers: Mapping[str, str]
    principal: access.Principal | None = None  # entra mode: the caller Easy Auth vouched for
    # The body is read on first use, not here: a body declared too large by its Content-Length is
    # refused before anything reads it (the dev host streams it only when asked).
    read_body: Callable[[], bytes] = field(default=lambda: b"", repr=False)
    _body: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_func(cls, req: func.HttpRequest) -> Request:
        return cls(
            method=req.method.upper(),
            url=req.url,
            base=public_base(req.url, get_settings()),
            params=dict(req.params),
            route=dict(req.route_params),
            headers=req.headers,
            read_body=lambda: req.get_body() or b"",
        )

    @property
    def body(self) -> bytes:
        if self._body is None:
            try:
                self._body = self.read_body()
            except (ConnectionError, TimeoutError):
                # The client went away or stalled mid-body: its error, not the relay's (no 5xx,
                # no traceback); the answer likely reaches nobody.
                raise BadRequest(
                    "the request body did not arrive whole", [FieldError("body", "did not arrive whole")]
                ) from None
        return self._body

    def link(self, path: str, query: Mapping[str, str] | None = None) -> str:
        """An absolute URL for the caller itself (`Location`, `nextLink`): a `?code=` key the request
        carried comes along, so a client that authenticates that way can follow it. Never for
        anything stored or sent to someone else: use `public_link` there."""
        query = dict(query or {})
        if self.params.get("code"):
            query["code"] = self.params["code"]
        url = self.public_link(path)
        return f"{url}?{urlencode(query)}" if query else url

    def public_link(self, path: str) -> str:
        """An absolute URL without any query: fit for event `source`s, logs and stored rows."""
        return f"{self.base}/api/{path}"

    def json(self, limit: int = SMALL_BODY) -> Any:
        declared = (self.headers.get("content-length") or "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)  # decided from the header alone: the body is never read
        if len(self.body) > limit:
            raise _too_large(limit)
        ctype = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
        # A body without a JSON media type is refused before it is read: a web page can post
        # text/plain (or nothing) cross-site without a preflight. No body at all is the 400 below.
        if (self.body or ctype) and ctype != "application/json" and not ctype.endswith("+json"):
            raise UnsupportedMediaType(
                f"send Content-Type: application/json, not {ctype[:100] or 'none'}",
                [FieldError("Content-Type", "must be application/json or end in +json")],
            )
        if not self.body.strip():
            raise BadRequest("the body is empty: send a JSON document", [FieldError("body", "is required")])
        try:
            text = self.body.decode("utf-8")
            _check_nodes(self.body)
            doc = json.loads(text, parse_constant=_no_constants)
            # Lone surrogates (\ud800) parse but can never be stored or sent: refuse them here.
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeError:
            raise BadRequest("the body is not UTF-8 text", [FieldError("body", "is not UTF-8 text")]) from None
        except RecursionError:
            raise BadRequest(
                f"the body nests deeper than {MAX_DEPTH} levels",
                [FieldError("body", f"nests deeper than {MAX_DEPTH} levels")],
            ) from None
        except ValueError as exc:
            detail = (
                f": {exc.msg} at line {exc.lineno} column {exc.colno}"
                if isinstance(exc, json.JSONDecodeError)
                else f": {exc}"
            )
            raise BadRequest(f"the body is not valid JSON{detail}", [FieldError("body", "is not valid JSON")]) from None
        if _depth(doc) > MAX_DEPTH:
            raise BadRequest(
                f"the body nests deeper than {MAX_DEPTH} levels",
                [FieldError("body", f"nests deeper than {MAX_DEPTH} levels")],
            )
        return doc

    def model(self, model: type[BaseModel], raw: Any = None, prefix: str = "") -> Any:
        raw = self.json() if raw is None else raw
        if not isinstance(raw, dict):
            raise invalid(prefix.rstrip(".") or "body", "must be a JSON object")
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise validation_problem(exc, prefix) from None

    def text_param(self, name: str) -> str | None:
        """A query parameter that may be left out (None) but never sent empty: `eventType=` read as
        "absent" would widen a filter to everything, so it is a 400 naming the parameter."""
        text = self.params.get(name)
        if text is not None and text == "":
            raise invalid(name, "must not be empty; leave the parameter out instead")
        return text

    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        text = self.text_param(name)  # sent empty: a 400, as for every filter
        if text is None:
            return default
        if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
            raise invalid(name, f"must be a whole number from {low} to {high}")
        return int(text)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body is larger than {limit} bytes", [FieldError("body", f"is larger than {limit} bytes")]
    )


# A JSON string, escapes included; possessive, so it runs in one pass without backtracking. An
# unterminated string (or a lone trailing backslash) matches to the end of the text: were it to
# fail instead, the search would start again at every later quote, quadratic in a hostile body.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
_STRUCTURE = (b"{", b"[", b",", b":")


def _count_nodes(body: bytes) -> int:
    """About how many values and member names a JSON text holds: one more than the structural
    characters (`{ [ , :`) outside its strings. Counted on the bytes, before any object is built."""
    count = sum(body.count(c) for c in _STRUCTURE) + 1
    if count > MAX_NODES:
        # Commas and colons inside strings inflated the quick count: take the strings out and recount.
        body = _JSON_STRING.sub(b"", body)
        count = sum(body.count(c) for c in _STRUCTURE) + 1
    return count


def _check_nodes(body: bytes) -> None:
    """Refuse a document of too many values before parsing it: a few MiB of `{}` become millions
    of Python objects (memory, and seconds of every later walk over them). A 400 like the depth
    limit: a structural bound, where 413 is kept for size in bytes."""
    if _count_nodes(body) > MAX_NODES:
        raise BadRequest(
            f"the body holds more than {MAX_NODES} JSON values; send fewer or smaller events",
            [FieldError("body", f"holds more than {MAX_NODES} JSON values")],
        )


def public_base(request_url: str, settings: Settings) -> str:
    """Scheme and host of every absolute URL: RELAY_PUBLIC_URL (or https:// + WEBSITE_HOSTNAME in
    Azure), else the request's own, which behind a front end or a custom domain is not the one
    clients use."""
    if settings.public_url:
        return settings.public_url
    parts = urlsplit(request_url)
    return f"{parts.scheme}://{parts.netloc}"


def _origin(url: str) -> str:
    """`scheme://host[:port]` of a URL or an Origin header, lower-case, without a default port."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    shown = f":{port}" if port is not None and str(port) != DEFAULT_PORTS.get(scheme) else ""
    return f"{scheme}://{host}{shown}" if scheme and host else ""


def check_origin(request: Request) -> None:
    """CONTRACT section 6: a state-changing request whose `Origin` is present and not the relay's
    own is a 403. Browsers send `Origin` on every cross-site POST (and on same-origin ones too);
    Power Platform's servers, the CLI and publishers send none, and are not affected. The relay's
    own is its public URL (RELAY_PUBLIC_URL, or the host in Azure) or the scheme and host the
    request came in on (the console, served by the relay, calls back on the host it was loaded
    from). An `Origin: null` (a sandboxed frame, a data: URL) is never the relay's."""
    if request.method not in STATE_CHANGING:
        return
    given = next((v for k, v in request.headers.items() if k.lower() == "origin"), None)
    if given is None:
        return
    own = {_origin(request.base), _origin(request.url)} - {""}
    if _origin(given) not in own:
        raise Forbidden(
            "cross-site request refused: a state-changing request may come only from the relay's own origin",
            [FieldError("Origin", "is not the relay's own origin")],
        )


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any, limit: int = MAX_DEPTH + 1) -> int:
    """How deeply a parsed document nests, counted no further than `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level < limit:
                stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _field_path(loc: tuple[int | str, ...]) -> str:
    """`filters.data[2].op`: names dotted, array positions in brackets (as schema errors name them)."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def validation_problem(exc: ValidationError, prefix: str = "") -> BadRequest:
    errors = []
    for err in exc.errors():
        loc = prefix + _field_path(err["loc"]) if err["loc"] else prefix.rstrip(".") or "body"
        message = err["msg"].removeprefix("Value error, ")
        errors.append(FieldError(loc, message))
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    return BadRequest(detail, errors)


def _json_response(status: int, body: Any, headers: Mapping[str, str], media: str) -> func.HttpResponse:
    payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    return func.HttpResponse(payload, status_code=status, headers=dict(headers), mimetype=media, charset="utf-8")


Handler = Callable[[Request], Reply]
# One method of a route: its handler and who may call it (`access.rule(...)`), declared side by side.
Bound = tuple[Handler, access.Rule]

# What each bound route declared, by function name: read by the tests that pin the contract's table.
BOUND: dict[str, dict[str, Bound]] = {}

# Every method reaches each route, so a wrong one is answered 405 by the relay, not 404 by the host.
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def http(bp: func.Blueprint, name: str, path: str, handlers: Mapping[str, Bound], anonymous: bool = False) -> None:
    """Bind one route of the contract to `bp` as the function `name` (the host's and the dev
    host's name for it; `app.get_functions()` finds it by that name).

    Each method names its handler and its rule (`access.rule(...)`, `access.ANYONE` on an anonymous
    route): a method without a rule is a ConfigurationError at start-up, never a guess.
    Without `anonymous` the function takes the app's auth level (function_app.py: a function key,
    or none under RELAY_AUTH=entra, where the relay checks the caller itself)."""
    BOUND[name] = _checked_bindings(name, handlers, anonymous)
    serve = route(BOUND[name])
    level = func.AuthLevel.ANONYMOUS if anonymous else None
    bp.function_name(name)(bp.route(route=path, methods=ALL_METHODS, auth_level=level)(serve))


def _checked_bindings(name: str, handlers: Mapping[str, Bound], anonymous: bool) -> dict[str, Bound]:
    checked: dict[str, Bound] = {}
    for method, bound in handlers.items():
        # Checked at run time too: a binding is data, and a mistake in it must stop the app, not open a route.
        if not (isinstance(bound, tuple) and len(bound) == 2 and isinstance(bound[1], access.Rule)):
            raise ConfigurationError(f"route {name}: {method} declares no access rule beside its handler")
        if bound[1].anyone != anonymous:
            raise ConfigurationError(
                f"route {name}: {method} is {'anonymous' if anonymous else 'keyed'} "
                f"but its rule is{'' if bound[1].anyone else ' not'} access.ANYONE"
            )
        checked[method] = bound
    return checked


def route(handlers: Mapping[str, Bound]) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """One route: method dispatch, the access check and the mapping of every error to an answer."""
    allowed = ", ".join(sorted(handlers))

    def serve(req: func.HttpRequest) -> func.HttpResponse:
        try:
            request = Request.from_func(req)
            check_origin(request)
            bound = handlers.get(request.method)
            if bound is None:
                raise MethodNotAllowed(f"{request.method} is not allowed here; use {allowed}", sorted(handlers))
            handler, rule = bound
            request.principal = access.admit(request, rule)
            _check_route(request.route)
            try:
                reply = handler(request)
            except HttpResponseError as exc:
                if exc.status_code == 400 and request.params.get("continuationToken"):
                    # The only client text that reaches a query unparsed is a continuation token.
                    raise invalid("continuationToken", "is not a token this API issued") from None
                raise
            return _json_response(reply.status, reply.body, reply.headers, "application/json")
        except Problem as problem:
            return problem_response(problem)
        except Exception as exc:  # the one place unexpected errors are answered
            if is_outage(exc):
                log.warning("storage unavailable: %s", type(exc).__name__)
                return problem_response(
                    ServiceUnavailable("storage is unavailable; try again shortly", retry_after=RETRY_AFTER_SECONDS)
                )
            log.exception("unhandled error in %s", req.url.split("?")[0])
            return _internal_error()

    return serve


def _check_route(params: Mapping[str, str]) -> None:
    """Ids and names in the path are matched whole: one holding a control character (C0, DEL or
    C1, as `%0A` or `%C2%84` decode to) can name nothing, and is a 400 naming it on every route."""
    for name, value in params.items():
        if any(unicodedata.category(c) == "Cc" for c in value):
            raise invalid(name, "must not contain control characters")


def _internal_error() -> func.HttpResponse:
    return problem_response(InternalError("an unexpected error occurred; it has been logged"))
