"""The relay's one JSON text form: compact, UTF-8 as is, no NaN. What is signed, stored and sized
is this text, so every layer writes it the same way."""

import json
from typing import Any


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
