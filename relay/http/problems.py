"""Domain errors as HTTP answers, in one place: each `relay.core.errors.Problem` class has its
status, title and type here (RFC 9457 problem+json, CONTRACT section 1), with the headers some
of them carry. Nothing below `relay.http` knows a status code; every problem body the app
writes (the API's routes, the console, the dev host's own answers) is built by `document`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from relay.core.errors import (
    AlreadyRunning,
    BadRequest,
    Conflict,
    Contended,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    NotFound,
    OperationFailed,
    PayloadTooLarge,
    Problem,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:event-relay:problem:"


@dataclass(frozen=True)
class Kind:
    status: int
    title: str
    slug: str  # the `type` is TYPE_PREFIX + slug


BAD_REQUEST = Kind(400, "Bad request", "bad-request")
CONFLICT = Kind(409, "Conflict", "conflict")
INTERNAL = Kind(500, "Internal error", "internal-error")
UNAVAILABLE = Kind(503, "Service unavailable", "service-unavailable")

# Every class of the tree, exactly (tests/test_problems.py checks none is left out): a subclass
# does not silently inherit its parent's answer.
KINDS: dict[type[Problem], Kind] = {
    Problem: BAD_REQUEST,
    BadRequest: BAD_REQUEST,
    Unauthorized: Kind(401, "Unauthorized", "unauthorized"),
    Forbidden: Kind(403, "Forbidden", "forbidden"),
    NotFound: Kind(404, "Not found", "not-found"),
    MethodNotAllowed: Kind(405, "Method not allowed", "method-not-allowed"),
    Conflict: CONFLICT,
    AlreadyRunning: CONFLICT,
    # OperationFailed: 500 when the operation broke, 409 when the state of things stopped it (`kind_of`).
    OperationFailed: Kind(500, "Operation failed", "operation-failed"),
    PayloadTooLarge: Kind(413, "Payload too large", "payload-too-large"),
    UnsupportedMediaType: Kind(415, "Unsupported media type", "unsupported-media-type"),
    TooManyRequests: Kind(429, "Too many requests", "too-many-requests"),
    ServiceUnavailable: UNAVAILABLE,
    Contended: UNAVAILABLE,
    InternalError: INTERNAL,
}


def kind_of(problem: Problem) -> Kind:
    kind = KINDS[type(problem)]
    if isinstance(problem, OperationFailed) and not problem.crashed:
        return Kind(409, kind.title, kind.slug)
    return kind


def headers_of(problem: Problem) -> dict[str, str]:
    if isinstance(problem, Unauthorized):
        # RFC 6750: a bearer-protected resource names its scheme in the challenge.
        return {"WWW-Authenticate": 'Bearer realm="relay"'}
    if isinstance(problem, ServiceUnavailable | TooManyRequests):
        return {"Retry-After": str(problem.retry_after)}
    if isinstance(problem, AlreadyRunning):
        return {"Location": problem.status_url, "Retry-After": str(problem.retry_after)}
    if isinstance(problem, MethodNotAllowed):
        return {"Allow": ", ".join(problem.allowed)}
    return {}


def document(
    status: int, title: str, detail: str, slug: str | None = None, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """The problem+json body (RFC 9457); `slug` defaults to the title's words joined by dashes."""
    doc: dict[str, Any] = {
        "type": TYPE_PREFIX + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        doc["errors"] = errors
    return doc


def body_of(problem: Problem) -> dict[str, Any]:
    kind = kind_of(problem)
    doc = document(kind.status, kind.title, problem.detail, kind.slug, [e.as_dict() for e in problem.errors])
    if isinstance(problem, OperationFailed):
        doc |= {"id": problem.operation_id, "operationStatus": "failed"}
    return doc


def respond(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, ensure_ascii=False).encode("utf-8"),
        status_code=status,
        headers=dict(headers or {}),
        mimetype=MEDIA_TYPE,
        charset="utf-8",
    )


def problem_response(problem: Problem) -> func.HttpResponse:
    """The one answer for a domain error."""
    return respond(kind_of(problem).status, body_of(problem), headers_of(problem))
