"""A registered JSON Schema (2020-12, or an older draft) as the Swagger 2.0 subset the flow designer reads.

The designer renders `data`'s fields from what the dynamic-schema operation answers, and it knows
only Swagger 2.0 schemas: one `type` (no type arrays, no `null`), `x-nullable` for null, `items`
as one schema, no `$defs`, `const`, `prefixItems`, `oneOf`/`anyOf`, `if`/`then`. The conversion
only ever loosens: every document the registered schema accepts also matches the result (with
`x-nullable` read as "or null"), so a notification the relay sends never fails the shape the
designer built. What cannot be said in Swagger 2.0 is dropped rather than guessed.

Bounded: `$ref`s are inlined at most a few levels deep and the whole result has a node budget, so
a schema built to fan out cannot make the designer's call expensive.
"""

from __future__ import annotations

from typing import Any

MAX_NODES = 2000
MAX_REF_DEPTH = 4
SWAGGER_TYPES = ("string", "number", "integer", "boolean", "array", "object")
# Keywords with the same meaning in Swagger 2.0 (draft-04) as in 2020-12.
SAME = (
    "title",
    "description",
    "format",
    "default",
    "multipleOf",
    "maximum",
    "minimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
)


class _Budget:
    def __init__(self, nodes: int) -> None:
        self.left = nodes

    def spend(self) -> bool:
        self.left -= 1
        return self.left >= 0


def to_swagger(schema: Any) -> dict[str, Any] | None:
    """The Swagger 2.0 form of `schema`; None when nothing of it can be said (no schema at all)."""
    if schema is None:
        return None
    try:
        out = _convert(schema, schema, 0, _Budget(MAX_NODES))
    except RecursionError:
        # Deeper than Python goes (a deep schema, its refs inlined): "any" is the loose answer.
        return {}
    return out if out is not None else {}


def _lookup(root: Any, ref: str) -> Any:
    """A local `#/...` JSON pointer into the registered schema; None when it does not resolve."""
    if not ref.startswith("#"):
        return None
    node = root
    for raw in [p for p in ref[1:].split("/") if p]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over`'s keywords on top of `base`; properties and required lists are joined."""
    out = dict(base)
    for key, value in over.items():
        if key == "properties" and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        elif key == "required" and isinstance(out.get(key), list):
            out[key] = list(dict.fromkeys(out[key] + value))
        else:
            out[key] = value
    return out


def _convert(node: Any, root: Any, refs: int, budget: _Budget) -> dict[str, Any] | None:
    """None for a schema that accepts nothing (`false`): its property is left out."""
    if node is False:
        return None
    if not isinstance(node, dict) or not budget.spend():
        return {}
    out: dict[str, Any] = {}
    nullable = False

    ref = node.get("$ref")
    if isinstance(ref, str):
        target = _lookup(root, ref)
        if target is not None and refs < MAX_REF_DEPTH:
            out = _convert(target, root, refs + 1, budget) or {}
        # else: a reference too deep (or recursive) is "any", the loosest truthful answer

    types = node.get("type")
    if isinstance(types, list):
        nullable = "null" in types
        kinds = [t for t in types if t in SWAGGER_TYPES]
        if set(kinds) == {"integer", "number"}:
            kinds = ["number"]
        if len(kinds) == 1:
            out["type"] = kinds[0]
    elif types == "null":
        nullable = True
    elif types in SWAGGER_TYPES:
        out["type"] = types

    for key in SAME:
        if key in node and (key == "default" or not isinstance(node[key], (dict, list, bool)) or key == "uniqueItems"):
            out[key] = node[key]
    if isinstance(out.get("title"), str):
        out["x-ms-summary"] = out["title"]
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        bound = node.get(key)
        if isinstance(bound, (int, float)) and not isinstance(bound, bool):
            # 2020-12 gives the bound itself; Swagger 2.0 a flag on minimum/maximum.
            plain = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[plain], out[key] = bound, True
    if "const" in node:
        if node["const"] is None:
            nullable = True
        else:
            out["enum"] = [node["const"]]
    if isinstance(node.get("enum"), list):
        values = [v for v in node["enum"] if v is not None]
        nullable = nullable or len(values) < len(node["enum"])
        if values:
            out["enum"] = values
    if isinstance(node.get("examples"), list) and node["examples"]:
        out["example"] = node["examples"][0]

    if isinstance(node.get("properties"), dict):
        props = {}
        for name, sub in node["properties"].items():
            converted = _convert(sub, root, refs, budget)
            if converted is not None:
                props[name] = converted
        out["properties"] = props
    if isinstance(node.get("required"), list):
        required = [r for r in node["required"] if isinstance(r, str)]
        if required:
            out["required"] = list(dict.fromkeys(out.get("required", []) + required))
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(node["additionalProperties"], root, refs, budget) or {}
    items = node.get("items")
    if isinstance(items, dict) and "prefixItems" not in node:
        out["items"] = _convert(items, root, refs, budget) or {}
    elif out.get("type") == "array" or "prefixItems" in node or isinstance(items, list):
        # Tuples (prefixItems, draft-07 item arrays) have no Swagger 2.0 form: any item.
        out["items"] = {}

    for part in node.get("allOf", []) if isinstance(node.get("allOf"), list) else []:
        converted = _convert(part, root, refs, budget)
        if converted:
            out = _merge(converted, out)
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if not isinstance(options, list):
            continue
        real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
        nullable = nullable or len(real) < len(options)
        if len(real) == 1:
            # The common "X or null": X, nullable.
            converted = _convert(real[0], root, refs, budget)
            if converted:
                out = _merge(converted, out)
        # Several alternatives: no Swagger 2.0 form; leaving them out accepts them all.

    if nullable and out:
        out["x-nullable"] = True
    return out
