"""The relay's one exception tree.

Every error a client can cause or observe is a `Problem`; `relay.http.api` turns it into an
RFC 9457 problem+json answer in one place. Anything else that escapes a route is a bug and is
answered with a bare 500 that names nothing internal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class RelayError(Exception):
    """Base of everything the relay raises on purpose."""


class ConfigurationError(RelayError):
    """A setting is missing or malformed: the app cannot start serving."""


@dataclass
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class Problem(RelayError):
    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init__(
        self, detail: str, errors: list[FieldError] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": f"urn:event-relay:problem:{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            doc["errors"] = [e.as_dict() for e in self.errors]
        return doc


class BadRequest(Problem):
    pass


def invalid(field: str, message: str) -> BadRequest:
    """The common case: one named field is wrong."""
    return BadRequest(f"{field}: {message}", [FieldError(field, message)])


class Unauthorized(Problem):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        # RFC 6750: a bearer-protected resource names its scheme in the challenge.
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="relay"'})


class Forbidden(Problem):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(Problem):
    status, title, slug = 404, "Not found", "not-found"


class MethodNotAllowed(Problem):
    status, title, slug = 405, "Method not allowed", "method-not-allowed"


class Conflict(Problem):
    status, title, slug = 409, "Conflict", "conflict"


class OperationFailed(Problem):
    """An asynchronous operation that could not finish: its status URL answers this, so a flow's
    action fails rather than succeeds. `status` is 409 when the state of things stopped it (its
    subscription went away, another replay took over), 500 when it broke."""

    title, slug = "Operation failed", "operation-failed"

    def __init__(self, detail: str, operation_id: str, status: int = 500) -> None:
        super().__init__(detail)
        self.status = status
        self.operation_id = operation_id

    def body(self) -> dict[str, Any]:
        return {**super().body(), "id": self.operation_id, "operationStatus": "failed"}


class PayloadTooLarge(Problem):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class UnsupportedMediaType(Problem):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class ServiceUnavailable(Problem):
    status, title, slug = 503, "Service unavailable", "service-unavailable"

    def __init__(self, detail: str, retry_after: int = 10) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class Contended(ServiceUnavailable):
    """Concurrent changes to one row kept winning over this one: nothing is broken, the call
    can simply be made again (a 503 with a short `Retry-After` that clients and the platform retry)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retry_after=1)


class TargetRefused(RelayError):
    """A notification URL the outbound guard will not call (scheme, address, or resolution)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
