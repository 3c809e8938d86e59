"""The `filters` of a subscribe (relay.core.filters) as the definitions say them: as advanced
inputs of the connector's webhook trigger (Swagger 2.0, what the designer shows), and exactly,
op by op, in the full API document (OpenAPI 3.0, what clients and Schemathesis check)."""

from __future__ import annotations

from typing import Any

from relay.core.filters import MAX_CONDITIONS, MAX_PATH_LENGTH, MAX_SEGMENTS, OPS, DataCondition, Filters
from relay.core.models import SubscriptionRequest
from relay.http.connector.parts import described, obj, prop

# Dotted names of at most MAX_SEGMENTS non-empty segments, without control characters.
_SEGMENT = "[^.\\u0000-\\u001f\\u007f-\\u009f]+"
PATH_PATTERN = f"^{_SEGMENT}(\\.{_SEGMENT}){{0,{MAX_SEGMENTS - 1}}}$"


def _condition_properties() -> dict[str, dict[str, Any]]:
    return {
        "path": prop(
            "string",
            described(DataCondition, "path"),
            "path",
            "Data Path",
            pattern=PATH_PATTERN,
            maxLength=MAX_PATH_LENGTH,
        ),
        "op": prop("string", described(DataCondition, "op"), "op", "Operator", enum=list(OPS)),
        # No `type`: the value's type follows the operator (any JSON for eq and ne).
        "value": prop(None, described(DataCondition, "value"), "value", "Value"),
    }


def connector_filters() -> dict[str, Any]:
    """The trigger's `filters` input: advanced (kept out of the designer's way until asked for),
    optional, so a flow saved before it existed saves the same."""
    condition = obj(_condition_properties(), "One condition on the event's data.", ["path", "op", "value"])
    return obj(
        {
            "data": prop(
                "array",
                described(Filters, "data"),
                "data",
                "Data Filters",
                items=condition,
                maxItems=MAX_CONDITIONS,
                **{"x-ms-visibility": "advanced"},
            )
        },
        described(SubscriptionRequest, "filters"),
        None,
        **{"x-ms-summary": "Filters", "x-ms-visibility": "advanced"},
    )


# The value each operator takes, as the relay checks it (DataCondition._value).
_VALUES: tuple[tuple[list[str], dict[str, Any]], ...] = (
    (["eq", "ne"], {}),
    (["in"], {"type": "array"}),
    (["gt", "ge", "lt", "le"], {"type": "number"}),
    (["exists"], {"type": "boolean"}),
    (["contains"], {"type": "string"}),
)


def full_filters() -> dict[str, Any]:
    """`filters` in the full API document: one schema per kind of operator, so a body it accepts
    is one the relay accepts (the one rule it cannot say, a value's length, is a listed rule)."""
    path = {"type": "string", "minLength": 1, "maxLength": MAX_PATH_LENGTH, "pattern": PATH_PATTERN}
    conditions = [
        {
            "type": "object",
            "required": ["path", "op", "value"],
            "additionalProperties": False,
            "properties": {"path": path, "op": {"type": "string", "enum": ops}, "value": value},
        }
        for ops, value in _VALUES
    ]
    return {
        "type": "object",
        "additionalProperties": False,
        "description": described(SubscriptionRequest, "filters"),
        "properties": {
            "data": {
                "type": "array",
                "maxItems": MAX_CONDITIONS,
                "description": described(Filters, "data"),
                "items": {"oneOf": conditions},
            }
        },
    }
