"""The shape of the app a newcomer reads (issue 21): no module of the deployed package over 500 lines."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 500
# Split by concern and typed in a parallel change of issue 21; remove it from here when that lands.
BEING_SPLIT = {"relay/store/subscriptions.py"}


def test_no_module_of_the_app_is_over_500_lines() -> None:
    long = {}
    for path in sorted([ROOT / "function_app.py", *(ROOT / "relay").rglob("*.py")]):
        name = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and name not in BEING_SPLIT:
            long[name] = lines
    assert long == {}
