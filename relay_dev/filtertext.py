"""Data filters as one line of text, for the admin CLI: `--filter 'total>100'` on subscribe, and
the line `subscriptions show` prints (the console's subscription page writes the same line).

    total>100   total>=100   total<5   total<=5      gt, ge, lt, le (a number)
    status=paid   status!=void                       eq, ne (JSON if it parses, else the text)
    country in DE,AT                                 in (each item JSON if it parses, else the text)
    sku~gold                                         contains (the text)
    coupon?     !coupon?                             exists true, exists false
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

# Longest operators first: `>=` before `>`, `!=` before `=`.
_BINARY = re.compile(r"^\s*(?P<path>[^\s<>=!~?]+)\s*(?P<op>>=|<=|!=|>|<|=|~|\s+in\s+)\s*(?P<value>.*?)\s*$")
_EXISTS = re.compile(r"^\s*(?P<not>!)?(?P<path>[^\s<>=!~?]+)\?\s*$")
_OPS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", "=": "eq", "!=": "ne", "~": "contains", "in": "in"}
_SHOWN = {**{v: k for k, v in _OPS.items()}, "contains": "contains"}


def _loose(text: str) -> Any:
    """JSON where the text is JSON (`100`, `true`, `"x"`, `null`), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_filter(text: str) -> dict[str, Any]:
    """One condition from its text (argparse `type`): the relay checks it again and names what is wrong."""
    found = _EXISTS.match(text)
    if found:
        return {"path": found["path"], "op": "exists", "value": not found["not"]}
    found = _BINARY.match(text)
    if not found:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a filter: write PATH>N, PATH>=N, PATH<N, PATH<=N, PATH=VALUE, PATH!=VALUE, "
            "'PATH in A,B', PATH~TEXT, PATH? or !PATH?"
        )
    op = _OPS[found["op"].strip()]
    raw = found["value"]
    value: Any
    if op in ("gt", "ge", "lt", "le"):
        try:
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {found['op']} compares numbers, not {raw!r}") from None
    elif op == "in":
        value = [_loose(item.strip()) for item in raw.split(",")] if raw else []
    elif op == "contains":
        value = raw
    else:
        value = _loose(raw)
    return {"path": found["path"], "op": op, "value": value}


def describe(filters: Any) -> str:
    """The filters in one line: `total > 100 · customer.country in ["DE","AT"] · coupon exists`."""
    conditions = filters.get("data") if isinstance(filters, dict) else None
    if not conditions:
        return ""
    parts = []
    for c in conditions:
        op, value = c.get("op"), c.get("value")
        if op == "exists":
            parts.append(f"{c.get('path')} {'exists' if value else 'is missing'}")
        else:
            shown = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            parts.append(f"{c.get('path')} {_SHOWN.get(op, op)} {shown}")
    return " · ".join(parts)
