"""`make test` and `make test-fast`: the tests of a marker expression in two pytest processes at
once (docs/testing.md, "The serial part").

- The `serial` tests, which hold the code to a time bound, one at a time at normal priority; their
  output goes to a temporary file (named at the start), printed after the other part's.
- All the others on pytest-xdist workers at the lowest CPU priority (nice 19, which their dev
  hosts, Azurites and browsers inherit), so whenever a serial test wants a core the kernel gives
  it one.

A Python parent rather than `cmd &` in the Makefile's shell: a shell without job control starts a
background command with SIGINT ignored, and Python then keeps it ignored, so Ctrl-C would leave
the serial part running for minutes with its dev hosts. Here both children are in the terminal's
process group and get the Ctrl-C themselves; this waits for their teardown, and passes a SIGTERM
or SIGHUP on to them as a SIGINT. (Under `--pdb` or `-s` the serial part's prompts and prints go
to its file: run it alone for those.)

Usage: python -m tests.tiers MARKERS WORKERS [pytest arguments...]
Exit 0 when both parts pass (exit 5, no test selected, counts as passing), else 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

PASSING = (0, 5)  # 5: no test selected, say for ARGS=tests/test_x.py in the part it does not touch


def main(argv: list[str]) -> int:
    markers, workers, rest = argv[0], argv[1], argv[2:]
    pytest = [sys.executable, "-m", "pytest"]
    children: list[subprocess.Popen[bytes]] = []

    def interrupt(signum: int, frame: object) -> None:
        # Killed from outside (a CI timeout's SIGTERM, a closed terminal): the children are asked
        # to stop as a Ctrl-C asks them, so they tear down their dev hosts and say what failed.
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    # A named file, said at the start: if this process is killed outright, the output is still there.
    with tempfile.NamedTemporaryFile(prefix="relay-serial-", suffix=".log", delete=False) as serial_out:
        print(f"the serial part's output goes to {serial_out.name}, printed at the end", flush=True)
        children.append(
            subprocess.Popen(
                [*pytest, "-m", f"({markers}) and serial", *rest], stdout=serial_out, stderr=subprocess.STDOUT
            )
        )
        children.append(
            subprocess.Popen(
                ["nice", "-n", "19", *pytest, "-n", workers, "--dist", "loadfile"]
                + ["-m", f"({markers}) and not serial", *rest]
            )
        )
    codes = []
    for child in reversed(children):  # the parallel part first: its output is the terminal's
        while True:
            try:
                codes.append(child.wait())
                break
            except KeyboardInterrupt:
                continue  # the children got the Ctrl-C too: wait for their teardown
    sys.stdout.flush()
    print("---- the serial part ----", flush=True)
    with open(serial_out.name, "rb") as written:
        sys.stdout.buffer.write(written.read())
    sys.stdout.flush()
    os.unlink(serial_out.name)
    return 0 if all(code in PASSING for code in codes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
