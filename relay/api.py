"""The HTTP API: request parsing, the route handlers, and the one place errors become answers.

Each HTTP function in `function_app.py` takes every method and hands the request to a route
here, so an unknown method is a 405 problem rather than the host's bare 404.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlencode, urlsplit

import azure.functions as func
from azure.core.exceptions import HttpResponseError
from pydantic import BaseModel, ValidationError

from . import access, clock, polling
from . import stats as stats_mod
from . import events as events_mod
from .connector import definition
from .errors import (
    BadRequest, Conflict, FieldError, MethodNotAllowed, OperationFailed, NotFound, PayloadTooLarge, Problem, ServiceUnavailable,
    TargetRefused, UnsupportedMediaType, invalid,
)
from .deliverylog import STATUSES, DeliveryLog
from .eventtypes import EventTypes, validate_data
from .swaggerschema import to_swagger
from .matching import NAME_RULE, is_name
from .models import EventIn, EventTypeRequest, ReplayRequest, SubscriptionRequest, UnsubscribeRequest
from .outbound import check_target
from .replay import CRASHED, RETRY_AFTER, Operations, ReplayRunning
from .replay import view as operation_view
from .settings import Settings, get_settings
from .storage import FANOUT_QUEUE, Storage, get_storage, is_outage
from .subscriptions import CALLER_HEADERS, ID_RE, SubscriptionStore, public_view
from .statuses import OperationStatus

log = logging.getLogger("relay.api")

SMALL_BODY = 64 * 1024
# Deeper JSON is refused at the door: every later reader (pydantic stops at 200, the recursive
# encoders sooner) must be able to read back whatever was accepted.
MAX_DEPTH = 64
MAX_BATCH = 100
# Values and member names one body may hold. Every later step walks the parsed document (depth,
# size, schema, storage), so this bounds their time and memory whatever the bytes are.
MAX_NODES = 100_000
RETRY_AFTER_SECONDS = 10


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
    def from_func(cls, req: func.HttpRequest) -> "Request":
        return cls(method=req.method.upper(), url=req.url, base=public_base(req.url, _settings()),
                   params=dict(req.params), route=dict(req.route_params), headers=req.headers,
                   read_body=lambda: req.get_body() or b"")

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = self.read_body()
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
            raise UnsupportedMediaType(f"send Content-Type: application/json, not {ctype[:100] or 'none'}",
                                       [FieldError("Content-Type", "must be application/json or end in +json")])
        if not self.body.strip():
            raise BadRequest("the body is empty: send a JSON document",
                             [FieldError("body", "is required")])
        try:
            text = self.body.decode("utf-8")
            _check_nodes(self.body)
            doc = json.loads(text, parse_constant=_no_constants)
            # Lone surrogates (\ud800) parse but can never be stored or sent: refuse them here.
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeError:
            raise BadRequest("the body is not UTF-8 text", [FieldError("body", "is not UTF-8 text")]) from None
        except RecursionError:
            raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels",
                             [FieldError("body", f"nests deeper than {MAX_DEPTH} levels")]) from None
        except ValueError as exc:
            detail = f": {exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) \
                else f": {exc}"
            raise BadRequest(f"the body is not valid JSON{detail}", [FieldError("body", "is not valid JSON")]) from None
        if _depth(doc) > MAX_DEPTH:
            raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels",
                             [FieldError("body", f"nests deeper than {MAX_DEPTH} levels")])
        return doc

    def model(self, model: type[BaseModel], raw: Any = None, prefix: str = "") -> Any:
        raw = self.json() if raw is None else raw
        if not isinstance(raw, dict):
            raise invalid(prefix.rstrip(".") or "body", "must be a JSON object")
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise validation_problem(exc, prefix) from None

    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        text = self.params.get(name)
        if text is None or text == "":
            return default
        if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
            raise invalid(name, f"must be a whole number from {low} to {high}")
        return int(text)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is larger than {limit} bytes",
                           [FieldError("body", f"is larger than {limit} bytes")])


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
        raise BadRequest(f"the body holds more than {MAX_NODES} JSON values; send fewer or smaller events",
                         [FieldError("body", f"holds more than {MAX_NODES} JSON values")])


def public_base(request_url: str, settings: Settings) -> str:
    """Scheme and host of every absolute URL: RELAY_PUBLIC_URL (or https:// + WEBSITE_HOSTNAME in
    Azure), else the request's own, which behind a front end or a custom domain is not the one
    clients use."""
    if settings.public_url:
        return settings.public_url
    parts = urlsplit(request_url)
    return f"{parts.scheme}://{parts.netloc}"


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


def validation_problem(exc: ValidationError, prefix: str = "") -> BadRequest:
    errors = []
    for err in exc.errors():
        loc = prefix + ".".join(str(p) for p in err["loc"]) if err["loc"] else prefix.rstrip(".") or "body"
        message = err["msg"].removeprefix("Value error, ")
        errors.append(FieldError(loc, message))
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    return BadRequest(detail, errors)


def _json_response(status: int, body: Any, headers: Mapping[str, str], media: str) -> func.HttpResponse:
    payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    return func.HttpResponse(payload, status_code=status, headers=dict(headers), mimetype=media,
                             charset="utf-8")


def problem_response(problem: Problem) -> func.HttpResponse:
    return _json_response(problem.status, problem.body(), problem.headers, "application/problem+json")


Handler = Callable[[Request], Reply]


def route(handlers: Mapping[str, Handler]) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """One route: method dispatch and the mapping of every error to an answer."""
    allowed = ", ".join(sorted(handlers))

    def serve(req: func.HttpRequest) -> func.HttpResponse:
        try:
            request = Request.from_func(req)
            handler = handlers.get(request.method)
            if handler is None:
                raise MethodNotAllowed(f"{request.method} is not allowed here; use {allowed}",
                                       headers={"Allow": allowed})
            request.principal = access.admit(request, handler)
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
        except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are answered
            if is_outage(exc):
                log.warning("storage unavailable: %s", type(exc).__name__)
                return problem_response(ServiceUnavailable(
                    "storage is unavailable; try again shortly", retry_after=RETRY_AFTER_SECONDS))
            log.exception("unhandled error in %s", req.url.split("?")[0])
            return _internal_error()
    return serve


def _internal_error() -> func.HttpResponse:
    problem = Problem("an unexpected error occurred; it has been logged")
    problem.status, problem.title, problem.slug = 500, "Internal error", "internal-error"
    return problem_response(problem)


# ---- context -----------------------------------------------------------------------------------

def _storage() -> Storage:
    return get_storage("fast")


def _settings() -> Settings:
    return get_settings()


def _sub_id(request: Request) -> str:
    return request.route.get("id", "")


# ---- subscriptions -----------------------------------------------------------------------------

def create_subscription(request: Request) -> Reply:
    raw = request.json()
    if isinstance(raw, dict) and "eventType" in raw and "eventTypes" in raw:
        raise invalid("eventType", "send eventTypes or eventType, not both")
    body: SubscriptionRequest = request.model(SubscriptionRequest, raw)
    settings = _settings()
    try:
        check_target(body.notificationUrl, allow_private=settings.allow_private_targets)
    except TargetRefused as exc:
        raise invalid("notificationUrl", exc.reason) from None
    owner = request.principal.id if request.principal else None
    entity, created = SubscriptionStore(_storage()).subscribe(body, _caller(request), owner=owner,
                                                              scope=access.owner_scope(request))
    location = request.link(f"subscriptions/{entity['id']}")
    # Subscribing a URL again must not hand its secret to whoever holds a key and read the URL
    # in a list: the secret and the whole URL go only to the call that created it.
    return Reply(201, public_view(entity, with_secret=created, full_url=created), {"Location": location})


def rotate_secret(request: Request) -> Reply:
    """A new signing secret for a subscriber that lost its own; the old one signs nothing more."""
    entity = SubscriptionStore(_storage()).rotate_secret(_sub_id(request))
    if entity is None:
        raise NotFound("no subscription has this id")
    log.info("signing secret rotated subscription=%s", entity["id"])
    return Reply(200, public_view(entity, with_secret=True))


def get_subscription(request: Request) -> Reply:
    entity = SubscriptionStore(_storage()).get(_sub_id(request))
    if entity is None:
        raise NotFound("no subscription has this id")
    return Reply(200, public_view(entity))


def list_subscriptions(request: Request) -> Reply:
    limit = request.int_param("limit", 100, 1, 1000)
    event_type = request.params.get("eventType") or None
    if event_type is not None and not is_name(event_type):
        raise invalid("eventType", f"must be {NAME_RULE}")
    token = request.params.get("continuationToken") or None
    items, next_token = SubscriptionStore(_storage()).list(limit=limit, token=token, event_type=event_type,
                                                           owner=access.owner_scope(request))
    body: dict[str, Any] = {"value": [public_view(e) for e in items]}
    if next_token:
        query = {k: v for k, v in (("eventType", event_type), ("limit", str(limit))) if v}
        body["nextLink"] = request.link("subscriptions", {**query, "continuationToken": next_token})
    return Reply(200, body)


def delete_subscription(request: Request) -> Reply:
    SubscriptionStore(_storage()).delete(_sub_id(request))
    return Reply(200, {})


MAX_CALLER_HEADER = 512


def _caller(request: Request) -> dict[str, str]:
    """The Logic Apps headers that identify who subscribes (workflow, operation, tracking id).
    Values that are empty, too long or hold control characters are not an identity: ignored."""
    found = {}
    for header, name in CALLER_HEADERS.items():
        value = (request.headers.get(header) or "").strip()
        if value and len(value) <= MAX_CALLER_HEADER and value.isprintable():
            found[name] = value
    return found


def unsubscribe(request: Request) -> Reply:
    # The HTTP Webhook's unsubscribe may carry no body at all; it is found by its headers then.
    raw = request.json() if request.body.strip() else {}
    body: UnsubscribeRequest = request.model(UnsubscribeRequest, raw)
    store = SubscriptionStore(_storage())
    if body.notificationUrl is not None:
        store.unsubscribe(body.notificationUrl, scope=access.owner_scope(request))
        return Reply(200, {})
    caller = _caller(request)
    if not (("workflowId" in caller and "workflowOperationName" in caller) or "clientTrackingId" in caller):
        raise invalid("notificationUrl", "is required unless the call carries x-ms-workflow-id and "
                      "x-ms-workflow-operation-name, or x-ms-client-tracking-id")
    store.unsubscribe_caller(caller.get("workflowId"), caller.get("workflowOperationName"),
                             caller.get("clientTrackingId"), scope=access.owner_scope(request))
    return Reply(200, {})


def list_deliveries(request: Request) -> Reply:
    sub_id = _sub_id(request)
    status = request.params.get("status") or None
    if status is not None and status not in STATUSES:
        raise invalid("status", "must be pending, succeeded or failed")
    limit = request.int_param("limit", 100, 1, 1000)
    if not ID_RE.fullmatch(sub_id) or SubscriptionStore(_storage()).get(sub_id) is None:
        raise NotFound("no subscription has this id")
    rows, next_token = DeliveryLog(_storage(), _settings().event_retention_days).list(
        sub_id, status=status, limit=limit, token=request.params.get("continuationToken") or None)
    body: dict[str, Any] = {"value": rows}
    if next_token:
        query = {k: v for k, v in (("status", status), ("limit", str(limit))) if v}
        body["nextLink"] = request.link(f"subscriptions/{sub_id}/deliveries",
                                        {**query, "continuationToken": next_token})
    return Reply(200, body)


# ---- events ------------------------------------------------------------------------------------

def publish_events(request: Request) -> Reply:
    settings = _settings()
    # The whole body is bounded first (RELAY_MAX_BATCH_BYTES); the per-event limit is below.
    raw = request.json(limit=settings.max_batch_bytes)
    batch = isinstance(raw, list)
    items = raw if batch else [raw]
    if batch and not 1 <= len(items) <= MAX_BATCH:
        raise invalid("body", f"an array must hold 1 to {MAX_BATCH} events")
    accepted: list[EventIn] = []
    errors: list[FieldError] = []
    for index, item in enumerate(items):
        prefix = f"[{index}]." if batch else ""
        if not isinstance(item, dict):
            errors.append(FieldError(prefix.rstrip(".") or "body", "must be a JSON object"))
            continue
        size = events_mod.event_size(item)
        if size > settings.max_event_bytes:
            raise PayloadTooLarge(f"{prefix.rstrip('.') or 'the event'} is {size} bytes of JSON; "
                                  f"the limit is {settings.max_event_bytes}")
        if "data" not in item:  # `data: null` is valid data; only a missing member is an error
            errors.append(FieldError(prefix + "data", "is required"))
            continue
        try:
            accepted.append(request.model(EventIn, item, prefix))
        except BadRequest as exc:
            errors.extend(exc.errors)
    if errors:
        raise BadRequest("; ".join(f"{e.field}: {e.message}" for e in errors[:5]), errors)
    storage = _storage()
    validate_data(storage, accepted, batch)
    # The default source is stored and sent to every subscriber: never with the caller's `?code=`.
    records = [events_mod.accept(e, source=request.public_link("events")) for e in accepted]
    events_mod.publish(storage, records)
    if batch:
        return Reply(202, {"value": [{"id": r.id} for r in records]})
    return Reply(202, {"id": records[0].id})


def publish_batch(request: Request) -> Reply:
    """`POST /api/events/batch`: the array form of `POST /api/events` only, so the connector can
    describe it as an operation of its own (Swagger 2.0 has no "object or array")."""
    if not request.body.lstrip()[:1] == b"[":
        raise invalid("body", f"must be a JSON array of 1 to {MAX_BATCH} events")
    return publish_events(request)


# ---- polling trigger ---------------------------------------------------------------------------

def poll_events(request: Request) -> Reply:
    pattern = polling.check_pattern(request.params.get("eventType") or "*")
    text = request.params.get("triggerState")
    if not text:
        state = polling.PollState.starting(clock.utcnow())
        location = request.link("events/poll", {"eventType": pattern, "triggerState": state.encode()})
        return Reply(202, None, {"Location": location, "Retry-After": str(polling.IDLE_RETRY_AFTER)})
    result = polling.poll(_storage(), pattern, polling.PollState.decode(text), _settings().event_retention_days)
    location = request.link("events/poll", {"eventType": pattern, "triggerState": result.state.encode()})
    if not result.events:
        # Nothing matched in this slice; when the slice ended before now, the rest is read at once.
        return Reply(202, None, {"Location": location,
                                 "Retry-After": "0" if result.more else str(polling.IDLE_RETRY_AFTER)})
    headers = {"Location": location}
    if result.more:
        headers["Retry-After"] = "0"
    return Reply(200, {"value": result.events}, headers)


# ---- replay ------------------------------------------------------------------------------------

def start_replay(request: Request) -> Reply:
    body: ReplayRequest = request.model(ReplayRequest)
    if body.until is not None and body.until < body.since:
        raise invalid("until", "is before since")
    sub_id = _sub_id(request)
    storage = _storage()
    if SubscriptionStore(storage).get(sub_id) is None:
        raise NotFound("no subscription has this id")
    try:
        op_id = Operations(storage).start(sub_id, body)
    except ReplayRunning as running:
        raise Conflict("a replay of this subscription is already running; its status is at Location",
                       headers={"Location": request.link(f"operations/{running.operation_id}"),
                                "Retry-After": str(RETRY_AFTER)}) from None
    return Reply(202, {"id": op_id, "status": OperationStatus.RUNNING},
                 {"Location": request.link(f"operations/{op_id}"), "Retry-After": str(RETRY_AFTER)})


def get_operation(request: Request) -> Reply:
    op_id = request.route.get("operationId", "")
    op = Operations(_storage()).get(op_id) if ID_RE.fullmatch(op_id) else None
    if op is None:
        raise NotFound("no operation has this id")
    shown = operation_view(op)
    if shown["status"] == OperationStatus.RUNNING:
        return Reply(202, shown, {"Location": request.link(f"operations/{op_id}"),
                                     "Retry-After": str(RETRY_AFTER)})
    if shown["status"] == OperationStatus.FAILED:
        raise OperationFailed(f"the replay could not finish: {shown['error']}", op_id,
                              500 if shown["code"] == CRASHED else 409)
    return Reply(200, shown)


# ---- event types -------------------------------------------------------------------------------

def list_event_types(request: Request) -> Reply:
    return Reply(200, {"value": sorted(EventTypes(_storage()).all().values(), key=lambda t: t["name"])})


def put_event_type(request: Request) -> Reply:
    raw = request.json(limit=256 * 1024)
    body: EventTypeRequest = request.model(EventTypeRequest, raw)
    view, created = EventTypes(_storage()).put(request.route.get("name", ""), body)
    return Reply(201 if created else 200, view)


def get_event_type(request: Request) -> Reply:
    found = EventTypes(_storage()).get(request.route.get("name", ""))
    if found is None:
        raise NotFound("no event type has this name")
    return Reply(200, found)


def event_data_schema(request: Request) -> Reply:
    """The dynamic-schema source: 200 for whatever the designer passes (`*`, `order.*`, a type
    nobody registered, one without a schema), with `schema: null` where there is none, and a
    registered schema in the Swagger 2.0 form the designer reads. A 4xx here can stop a flow
    from saving."""
    name = request.route.get("name", "")
    schema = None
    if is_name(name):
        found = EventTypes(_storage()).get(name)
        schema = to_swagger(found.get("schema")) if found else None
    return Reply(200, {"name": name, "schema": schema})


def delete_event_type(request: Request) -> Reply:
    EventTypes(_storage()).delete(request.route.get("name", ""))
    return Reply(200, {})


# ---- definition --------------------------------------------------------------------------------

def openapi(request: Request) -> Reply:
    # The scheme and host every absolute URL starts with (RELAY_PUBLIC_URL, else the request's):
    # https in Azure, http on the dev host, where a generated client told https would fail (the
    # committed file says https).
    parts = urlsplit(request.base)
    return Reply(200, definition(parts.netloc, parts.scheme or "https"))


# ---- health ------------------------------------------------------------------------------------

def health(request: Request) -> Reply:
    try:
        _storage().queue(FANOUT_QUEUE).get_queue_properties()
    except Exception as exc:  # noqa: BLE001 - any failure to reach storage means unhealthy
        log.warning("health: storage unavailable: %s", type(exc).__name__)
        raise ServiceUnavailable("storage does not answer", retry_after=RETRY_AFTER_SECONDS) from None
    return Reply(200, {"status": "ok"})


# ---- operator tools (issue 12: the console and `python -m relay admin`) ------------------------

def get_stats(request: Request) -> Reply:
    window = request.params.get("window") or "1h"
    if window not in stats_mod.WINDOWS:
        raise invalid("window", "must be 1h or 24h")
    return Reply(200, stats_mod.read(_storage(), window))


def activate_subscription(request: Request) -> Reply:
    entity = SubscriptionStore(_storage()).activate(_sub_id(request))
    if entity is None:
        raise NotFound("no subscription has this id")
    return Reply(200, public_view(entity))


# Rotating a secret is h1's route (issue 9); this minimal handler stands in until it is merged.
subscriptions = route({"POST": create_subscription, "GET": list_subscriptions})
subscription = route({"GET": get_subscription, "DELETE": delete_subscription})
unsubscribe_route = route({"POST": unsubscribe})
secret_route = route({"POST": rotate_secret})
deliveries = route({"GET": list_deliveries})
events = route({"POST": publish_events})
health_route = route({"GET": health})
poll_route = route({"GET": poll_events})
replay_route = route({"POST": start_replay})
operation_route = route({"GET": get_operation})
event_types = route({"GET": list_event_types})
event_type = route({"GET": get_event_type, "PUT": put_event_type, "DELETE": delete_event_type})
event_data_schema_route = route({"GET": event_data_schema})
events_batch = route({"POST": publish_batch})
openapi_route = route({"GET": openapi})
stats_route = route({"GET": get_stats})
activate_route = route({"POST": activate_subscription})
