"""`make test` runs the parallel part at `nice -n 19` beside the serial part (Makefile, and
docs/testing.md "The serial part"). The kernel shares the CPU between scheduler autogroups (one
per session) before a process's nice value counts, so whatever the tests start must stay in the
run's autogroup, or take the run's nice value into its own; otherwise a parallel test's dev host,
Azurite or browser takes the CPU from a serial test's time bound. Where the kernel has no
autogroups, nice values count as they are. Where the tests run in the default autogroup (CI's
machine: /proc/self/autogroup is empty there), a process in a session of its own is still a group
of its own beside them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.helpers import ROOT, RelayProcess, autogroup


def test_azurite_and_the_dev_host_run_in_the_autogroup_of_the_tests(azurite: Any) -> None:
    relay = RelayProcess(azurite, {}).start()
    try:
        assert relay.proc is not None and azurite.server.proc is not None
        for pid in (relay.proc.pid, azurite.server.proc.pid):
            assert autogroup(pid) == autogroup("self")
            assert os.getpriority(os.PRIO_PROCESS, pid) == os.nice(0)
    finally:
        relay.stop()


@pytest.mark.parametrize("ours", ["own", "default"])
def test_a_process_in_a_session_of_its_own_is_given_the_runs_nice_value(ours: str) -> None:
    """As Chromium starts its processes (setsid): share_our_priority gives their autogroup ours,
    also where the tests run in the default autogroup, as on CI. No session can join that group
    again once it has left it, so "default" has autogroup() say so for this process alone."""
    script = textwrap.dedent(
        f"""
        import subprocess
        from pathlib import Path
        import tests.helpers
        from tests.helpers import share_our_priority
        if {ours!r} == "default":
            real = tests.helpers.autogroup
            tests.helpers.autogroup = lambda pid: None if pid == "self" else real(pid)
        child = subprocess.Popen(["sleep", "30"], start_new_session=True)
        group = Path(f"/proc/{{child.pid}}/autogroup")
        before = (group.read_text().split() or ["-"])[-1]
        changed = share_our_priority()
        print(before, changed, (group.read_text().split() or ["-"])[-1])
        child.kill()
        """
    )
    done = subprocess.run(
        ["nice", "-n", "7", sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1", str(min(os.nice(0) + 7, 19))]  # nice adds to ours, up to 19
