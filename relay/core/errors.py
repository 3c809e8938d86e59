"""The relay's one exception tree.

Every error a client can cause or observe is a `Problem`, a domain error with no HTTP in it:
stores, the pipeline and the handlers raise them, and `relay.http.problems` maps each class to
an RFC 9457 problem+json answer (status, title, type, headers) in one table. Anything else that
escapes a route is a bug and is answered with a 500 that names nothing internal.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """A domain error a client can cause or observe: what went wrong (`detail`) and which fields
    (`errors`), nothing of HTTP. `relay.http.problems` gives each class its status, title and
    headers, in one table. A plain `Problem` is a request the relay could not carry out as made."""

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class BadRequest(Problem):
    """The request is malformed or breaks a rule of the contract."""


# A time window's rule, in the words docs/power-platform.md lists: the same for a replay's body and
# the delivery log's query, so one documented rule explains both 400s.
UNTIL_BEFORE_SINCE = "is before since"


def invalid(field: str, message: str) -> BadRequest:
    """The common case: one named field is wrong."""
    return BadRequest(f"{field}: {message}", [FieldError(field, message)])


class Unauthorized(Problem):
    """No caller is known: it must sign in."""


class Forbidden(Problem):
    """The caller is known and may not do this."""


class NotFound(Problem):
    """What the request names does not exist (or is someone else's)."""


class MethodNotAllowed(Problem):
    """The route exists; the method does not. `allowed` lists the methods it has."""

    def __init__(self, detail: str, allowed: list[str]) -> None:
        super().__init__(detail)
        self.allowed = allowed


class Conflict(Problem):
    """The state of things stops the request (a name taken, an operation under way)."""


class AlreadyRunning(Conflict):
    """An operation of the same kind is under way: `status_url` is where it can be followed,
    `retry_after` seconds how long to wait before asking."""

    def __init__(self, detail: str, status_url: str, retry_after: int) -> None:
        super().__init__(detail)
        self.status_url = status_url
        self.retry_after = retry_after


class TooManyRequests(Problem):
    """The caller holds as many of something as it may (open smoke runs); some will have ended
    within `retry_after` seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class OperationFailed(Problem):
    """An asynchronous operation that could not finish: its status URL answers this, so a flow's
    action fails rather than succeeds. `crashed` when it broke; otherwise the state of things
    stopped it (its subscription went away, another replay took over)."""

    def __init__(self, detail: str, operation_id: str, crashed: bool = True) -> None:
        super().__init__(detail)
        self.operation_id = operation_id
        self.crashed = crashed


class PayloadTooLarge(Problem):
    """The body is larger than the relay accepts."""


class UnsupportedMediaType(Problem):
    """The body is not in a media type the route reads."""


class ServiceUnavailable(Problem):
    """The relay cannot serve now (storage does not answer); the caller may try again after
    `retry_after` seconds."""

    def __init__(self, detail: str, retry_after: int = 10) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Contended(ServiceUnavailable):
    """Concurrent changes to one row kept winning over this one: nothing is broken, the call
    can simply be made again (soon: clients and the platform retry it)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retry_after=1)


class InternalError(Problem):
    """Something broke that the caller cannot fix; the detail names nothing internal."""


class TargetRefused(RelayError):
    """A notification URL the outbound guard will not call (scheme, address, or resolution)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
