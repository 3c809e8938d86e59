"""What a receiver's answer means for a delivery: the contract's rules as one pure function."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    DELIVERED = "delivered"
    GONE = "gone"  # the flow is deleted or off: disable the subscription, no retry
    RETRY = "retry"  # worth trying again later
    FAILED = "failed"  # will not get better by trying again


# Power Automate and Logic Apps answer these when the flow behind a callback no longer exists.
GONE_CODES = {
    404: {"WorkflowNotFound", "WorkflowTriggerVersionNotFound"},
    400: {"WorkflowTriggerIsNotEnabled"},
}


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str | None = None


def error_code(body: bytes) -> str | None:
    """The `error.code` (or top-level `code`) of a JSON error body, if there is one."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # whatever a receiver sends, it is only ever "no code"
    if isinstance(doc, dict):
        err = doc.get("error")
        code = err.get("code") if isinstance(err, dict) else None
        if isinstance(code, str):
            return code
        code = doc.get("code")
        if isinstance(code, str):
            return code
    return None


def classify(status: int, body: bytes = b"") -> Verdict:
    if 200 <= status < 300:
        return Verdict(Outcome.DELIVERED)
    if status == 410:
        return Verdict(Outcome.GONE, "receiver answered 410 Gone")
    if status in GONE_CODES:
        code = error_code(body)
        if code in GONE_CODES[status]:
            return Verdict(Outcome.GONE, f"receiver answered {status} {code}")
    if status in (408, 429) or 500 <= status < 600:
        return Verdict(Outcome.RETRY, f"receiver answered {status}")
    if 300 <= status < 400:
        return Verdict(Outcome.FAILED, f"receiver answered {status} (redirects are not followed)")
    return Verdict(Outcome.FAILED, f"receiver answered {status}")
