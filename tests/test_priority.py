"""`make test` runs the parallel part at `nice -n 19` beside the serial part (Makefile, and
docs/testing.md "The serial part"). The kernel shares the CPU between scheduler autogroups (one
per session) before a process's nice value counts, so whatever the tests start must stay in the
run's autogroup, or take the run's nice value into its own; otherwise a parallel test's dev host,
Azurite or browser takes the CPU from a serial test's time bound."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, RelayProcess

pytestmark = pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="no scheduler autogroups here")


def _group(pid: int | str) -> str:
    return Path(f"/proc/{pid}/autogroup").read_text().split()[0]


def test_azurite_and_the_dev_host_run_in_the_autogroup_of_the_tests(azurite: Any) -> None:
    relay = RelayProcess(azurite, {}).start()
    try:
        assert relay.proc is not None and azurite.server.proc is not None
        assert _group(relay.proc.pid) == _group("self")
        assert _group(azurite.server.proc.pid) == _group("self")
    finally:
        relay.stop()


def test_a_process_in_a_session_of_its_own_is_given_the_runs_nice_value() -> None:
    """As Chromium starts its processes (setsid): share_our_priority gives their autogroup ours."""
    script = textwrap.dedent(
        """
        import subprocess
        from pathlib import Path
        from tests.helpers import share_our_priority
        child = subprocess.Popen(["sleep", "30"], start_new_session=True)
        group = Path(f"/proc/{child.pid}/autogroup")
        before = group.read_text().split()[-1]
        changed = share_our_priority()
        print(before, changed, group.read_text().split()[-1])
        child.kill()
        """
    )
    done = subprocess.run(
        ["nice", "-n", "7", sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1", str(min(os.nice(0) + 7, 19))]  # nice adds to ours, up to 19
