"""Schemathesis (`--checks all`) against the full API document the relay serves
(`GET /api/openapi/full.json`), run against the dev host: no failure other than the rules that no
one schema can state, which tests/schemathesis_hooks.py names and docs/power-platform.md lists."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FUNCTION_KEY, ROOT
from tests.schemathesis_hooks import ANY_NAME, RULES

# Small, so the run stays near a minute on a loaded machine; a fixed seed, so a failure reproduces.
MAX_EXAMPLES = 5
SEED = "20261207"
# A request the document calls invalid may be refused with any 4xx that means "no": 413 among them
# (a body above the route's limit), beside Schemathesis's defaults.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
"""


def st_command() -> list[str]:
    found = Path(sys.executable).with_name("st")
    return [str(found)] if found.exists() else [shutil.which("st") or "st"]


@pytest.mark.timeout(420)
def test_schemathesis_finds_nothing_but_the_listed_rules(relay, receiver_factory, tmp_path) -> None:
    receiver = receiver_factory()
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "RELAY_TEST_RECEIVER": receiver.url,
    }
    run = subprocess.run(
        [
            *st_command(),
            "--no-color",
            "--config-file",
            str(config),
            "run",
            f"{relay.base}/openapi/full.json",
            "--checks",
            "all",
            "--header",
            f"x-functions-key: {FUNCTION_KEY}",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            SEED,
            # One worker: hypothesis describes its filters by parsing source, which is not safe
            # across threads on this Python ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--request-timeout",
            "60",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    report = run.stdout[-12000:] + run.stderr[-3000:]
    assert run.returncode == 0, report
    assert "Tested: 2" in run.stdout or "Tested:" in run.stdout, report  # it ran the operations


def test_the_listed_rules_are_documented() -> None:
    """Every rule the fuzz run may meet is in docs/power-platform.md, by name."""
    docs = (ROOT / "docs" / "power-platform.md").read_text(encoding="utf-8")
    section = docs[docs.index("## The full API document") :]
    for name in [rule.name for rule in RULES] + [ANY_NAME]:
        assert name in section, name
