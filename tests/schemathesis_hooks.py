"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

`RULES` are the rules of the API that no one schema of its full document can state (a host that
must resolve, tokens only the relay signs, one field compared with another, a date that must
exist, a schema that must be a usable JSON Schema). A failure is dropped only when the relay's
400 names exactly that field with exactly that reason; every other failure stands. The same list
is in docs/power-platform.md ("The full API document"), and the test checks that it is.

Positive subscribes get a notification URL that resolves (the test's loopback receiver), so
generated subscriptions exist and the reads, deletes and replays that follow reach them.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import schemathesis


@dataclass(frozen=True)
class Rule:
    name: str  # as docs/power-platform.md lists it
    field: str  # the field the 400 names (suffix match: `[0].time` is `time`)
    reason: str  # a piece of the 400's message for that field


RULES = (
    Rule("notificationUrl must resolve", "notificationUrl", "resolve"),
    Rule("notificationUrl or the workflow headers", "notificationUrl", "is required unless"),
    Rule("continuationToken is signed", "continuationToken", "is not a token this API issued"),
    Rule("until is not before since", "until", "is before since"),
    Rule("a test event's type is the subscription's", "type", "must be an event type this subscription receives"),
    Rule("a date and time that exists", "time", "is not a date and time that exists"),
    Rule("a date and time that exists", "since", "is not a date and time that exists"),
    Rule("a date and time that exists", "until", "is not a date and time that exists"),
    Rule("schema is a usable JSON Schema", "schema", ""),
    Rule("data matches the registered schema", "data", ""),
    # The field is the extension's own name, any name: "*" matches every field.
    Rule("CloudEvents attribute names", "*", "is not a CloudEvents attribute name"),
    Rule("a filter value is at most 1,024 characters of JSON", "filters.data", "characters of JSON"),
)

_counter = itertools.count()


def _fields(response: Any) -> list[tuple[str, str]]:
    try:
        doc = json.loads(response.content)
    except (ValueError, TypeError, AttributeError):
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    return [(str(e.get("field", "")), str(e.get("message", ""))) for e in errors or [] if isinstance(e, dict)]


def known_rule(response: Any) -> Rule | None:
    """The rule a 400 answer is explained by, when every field it names is one of RULES'."""
    if getattr(response, "status_code", None) != 400:
        return None
    fields = _fields(response)
    matched = []
    for name, message in fields:
        bare = re.sub(r"^\[\d+\]\.", "", name)  # `[0].time` of a batch is `time`
        rule = next(
            (
                r
                for r in RULES
                if (r.field == "*" or re.fullmatch(re.escape(r.field) + r"([.\[/].*)?", bare)) and r.reason in message
            ),
            None,
        )
        if rule is None:
            return None
        matched.append(rule)
    return matched[0] if matched else None


# The data-schema source answers 200 for any name, a deleted type's too (with a null schema): the
# flow designer calls it with patterns and unregistered types, and a 4xx there stops a flow from
# saving (contract section 3). Not a deleted resource still being served.
ANY_NAME = "the data-schema source answers any name"
SCHEMA_SOURCE = "/event-types/{name}/schema"


def answers_any_name(failure: Any, case: Any, response: Any) -> bool:
    if type(failure).__name__ != "UseAfterFree" or case.operation.path != SCHEMA_SOURCE:
        return False
    try:
        return getattr(response, "status_code", None) == 200 and json.loads(response.content)["schema"] is None
    except (ValueError, TypeError, KeyError):
        return False


def storage_was_slow(response: Any) -> bool:
    """The contract's answer when storage does not answer in time: 503, Retry-After, problem
    service-unavailable. On a machine loaded by other test runs Azurite can be that slow; it is the
    environment, not a request the relay got wrong."""
    if getattr(response, "status_code", None) != 503 or "retry-after" not in {k.lower() for k in response.headers}:
        return False
    try:
        return str(json.loads(response.content)["type"]).endswith(":service-unavailable")
    except (ValueError, TypeError, KeyError):
        return False


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except a refusal of schema-valid data that one of RULES explains, the
    schema source answering for a deleted type, and storage too slow to answer (503)."""
    if type(failure).__name__ == "RejectedPositiveData" and known_rule(response) is not None:
        return False
    return not (answers_any_name(failure, case, response) or storage_was_slow(response))


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    receiver = os.environ.get("RELAY_TEST_RECEIVER")
    meta = getattr(case, "meta", None)
    positive = meta is not None and str(meta.generation.mode) in ("positive", "GenerationMode.POSITIVE")
    if (
        receiver
        and positive
        and case.operation.method.lower() == "post"
        and case.operation.path == "/subscriptions"
        and isinstance(case.body, dict)
        and isinstance(case.body.get("notificationUrl"), str)
    ):
        case.body["notificationUrl"] = f"{receiver}/{next(_counter)}"
    return case
