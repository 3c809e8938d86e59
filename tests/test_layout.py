"""The shape of the tree (issue 21): modules a newcomer can read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 500


def test_no_module_of_the_app_is_over_500_lines() -> None:
    too_long = {}
    for path in sorted([ROOT / "function_app.py", *(ROOT / "relay").rglob("*.py")]):
        name = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            too_long[name] = lines
    assert too_long == {}


def test_the_subscription_store_shadows_no_builtin() -> None:
    """Its method `list` made the module spell `builtins.list` everywhere else in it."""
    found = []
    for path in sorted((ROOT / "relay" / "store").glob("subscriptions*/**/*.py")) + [
        ROOT / "relay" / "store" / "subscriptions.py"
    ]:
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "builtins" for a in node.names):
                found.append(f"{path.relative_to(ROOT)}: import builtins")
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name in {"list", "dict", "set", "type", "id"}:
                        found.append(f"{path.relative_to(ROOT)}: {node.name}.{item.name}")
    assert found == []
