"""`make test` and `make test-fast`: the tests of a marker expression in two pytest processes at
once (docs/testing.md, "The serial part").

- The `serial` tests, which hold the code to a time bound, one at a time at normal priority; their
  output goes to a temporary file, printed after the other part's.
- All the others on pytest-xdist workers at the lowest CPU priority (nice 19, which their dev
  hosts, Azurites and browsers inherit), so whenever a serial test wants a core the kernel gives
  it one.

A Python parent rather than `cmd &` in the Makefile's shell: a shell without job control starts a
background command with SIGINT ignored, and Python then keeps it ignored, so Ctrl-C would leave
the serial part running for minutes with its dev hosts. Here both children are in the terminal's
process group and get the Ctrl-C themselves; this waits for their teardown.

Usage: python -m tests.tiers MARKERS WORKERS [pytest arguments...]
Exit 0 when both parts pass (exit 5, no test selected, counts as passing), else 1.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

PASSING = (0, 5)  # 5: no test selected, say for ARGS=tests/test_x.py in the part it does not touch


def main(argv: list[str]) -> int:
    markers, workers, rest = argv[0], argv[1], argv[2:]
    pytest = [sys.executable, "-m", "pytest"]
    with tempfile.TemporaryFile() as serial_out:
        serial = subprocess.Popen(
            [*pytest, "-m", f"({markers}) and serial", *rest], stdout=serial_out, stderr=subprocess.STDOUT
        )
        parallel = subprocess.Popen(
            ["nice", "-n", "19", *pytest, "-n", workers, "--dist", "loadfile"]
            + ["-m", f"({markers}) and not serial", *rest]
        )
        codes = []
        for child in (parallel, serial):
            while True:
                try:
                    codes.append(child.wait())
                    break
                except KeyboardInterrupt:
                    continue  # the children got the Ctrl-C too: wait for their teardown
        serial_out.seek(0)
        sys.stdout.flush()
        print("---- the serial part ----", flush=True)
        sys.stdout.buffer.write(serial_out.read())
        sys.stdout.flush()
    return 0 if all(code in PASSING for code in codes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
