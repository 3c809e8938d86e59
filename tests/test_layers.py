"""The app's layers are checked by a tool (`make lint` runs lint-imports with the contracts in
pyproject.toml), and the check is not vacuous: a copy of the tree with one upward import, one
import between the two independent packages of a layer, or one import of the local tools fails it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy(tmp_path: Path) -> Path:
    for name in ("relay", "relay_dev"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    # cwd is the copy: lint-imports reads its pyproject.toml and finds the copy's packages first.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_tree_keeps_its_layers(tmp_path: Path) -> None:
    done = _lint(_copy(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 kept, 0 broken" in done.stdout


BREAKS = {
    # file, line added, what the report must name
    "store imports http (upward)": (
        "relay/store/events.py",
        "from relay.http import api",
        "relay.store.events -> relay.http.api",
    ),
    "core imports pipeline (upward)": (
        "relay/core/clock.py",
        "import relay.pipeline.pools",
        "relay.core.clock -> relay.pipeline.pools",
    ),
    "outbound imports store (sideways in a layer)": (
        "relay/outbound/signing.py",
        "from relay.store import storage",
        "relay.outbound.signing -> relay.store.storage",
    ),
    "a cycle: pipeline imports triggers": (
        "relay/pipeline/fanout.py",
        "def _later() -> None:\n    from relay.triggers import worker",
        "relay.pipeline.fanout -> relay.triggers.worker",
    ),
    "the app imports the local tools": (
        "relay/http/api.py",
        "import relay_dev.devhost",
        "relay.http.api -> relay_dev.devhost",
    ),
}


@pytest.mark.parametrize("case", BREAKS.values(), ids=BREAKS.keys())
def test_lint_fails_on_an_import_against_the_layers(tmp_path: Path, case: tuple[str, str, str]) -> None:
    rel, line, named = case
    root = _copy(tmp_path)
    target = root / rel
    target.write_text(target.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")
    done = _lint(root)
    assert done.returncode != 0
    assert named in done.stdout, done.stdout[-3000:]


def test_make_lint_runs_the_layer_check() -> None:
    lint = ROOT.joinpath("Makefile").read_text(encoding="utf-8").split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "lint-imports" in lint
