"""`make test`'s runner (tests/tiers.py): both parts run at once, the serial one at normal priority
and the other at nice 19, and a Ctrl-C stops both after their teardown. Run against a small test
project of its own in `tmp_path`, whose tests wait until interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT, wait_until

PROJECT = {
    "pytest.ini": """
        [pytest]
        markers =
            unit: the tier
            serial: the part
        """,
    "test_both.py": """
        import os
        import time
        from pathlib import Path

        import pytest


        @pytest.fixture
        def noted(request):
            name = request.node.name
            Path(f"started-{name}").write_text(str(os.nice(0)))
            yield
            Path(f"torn-down-{name}").write_text("")


        @pytest.mark.unit
        @pytest.mark.serial
        def test_serial(noted):
            time.sleep(300)


        @pytest.mark.unit
        def test_parallel(noted):
            time.sleep(300)
        """,
}


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_both_parts_run_at_once_at_their_priorities_and_a_ctrl_c_or_sigterm_stops_both(
    tmp_path: Path, stop: str
) -> None:
    """A Ctrl-C reaches the whole process group; a SIGTERM (a CI timeout) only the runner, which
    passes it on. Either way both parts tear down and the serial part's output is printed."""
    for name, text in PROJECT.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Its own process group, so the test can send SIGINT to all of it as a terminal's Ctrl-C does.
    runner = subprocess.Popen(
        [sys.executable, "-m", "tests.tiers", "unit", "1", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        process_group=0,
    )
    try:
        started = {name: tmp_path / f"started-test_{name}" for name in ("serial", "parallel")}
        wait_until(lambda: all(path.exists() for path in started.values()), 60, "both parts to start")
        ours = os.nice(0)
        assert started["serial"].read_text() == str(ours)
        assert started["parallel"].read_text() == str(min(ours + 19, 19))
        if stop == "ctrl-c":
            os.killpg(runner.pid, signal.SIGINT)
        else:
            runner.send_signal(signal.SIGTERM)
        output, _ = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    # Before (a `&` in the Makefile's shell), the serial part ignored the Ctrl-C and ran on.
    assert runner.returncode == 1, output
    assert (tmp_path / "torn-down-test_serial").exists() and (tmp_path / "torn-down-test_parallel").exists()
    text = output.decode()
    assert "---- the serial part ----" in text and "KeyboardInterrupt" in text.split("---- the serial part ----")[1]
