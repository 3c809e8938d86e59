"""A private Azurite for the tests and the benchmark: free ports on loopback, in memory or in a
folder (so a stop and start keeps its data), never colliding with one a person is running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, the same for every installation).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SERVICES = ("blob", "queue", "table")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(
    predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition", error: type[Exception] = TimeoutError
) -> Any:
    """Await a condition that has no event to block on (a process starting, a queue draining)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def connection_string(ports: dict[str, int], account: str = ACCOUNT) -> str:
    return f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={ACCOUNT_KEY};" + "".join(
        f"{svc.capitalize()}Endpoint=http://127.0.0.1:{ports[svc]}/{account};" for svc in SERVICES
    )


def stop_group(proc: subprocess.Popen[Any] | None, grace: float) -> None:
    """SIGTERM a process group, then SIGKILL it if it is still there after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class AzuriteError(RuntimeError):
    """Azurite could not start: its port is taken, or it exited. The message is one line for a person."""


def ports_from(base: int) -> dict[str, int]:
    """Azurite's own layout: blob on `base`, queue on `base + 1`, table on `base + 2` (10000-10002)."""
    return {svc: base + i for i, svc in enumerate(SERVICES)}


class Azurite:
    def __init__(
        self, location: Path | None = None, ports: dict[str, int] | None = None, accounts: tuple[str, ...] = ()
    ) -> None:
        """`ports`: fixed ones (make dev), else free ones. `accounts`: storage accounts besides
        devstoreaccount1 (same well-known key), each as separate as another Azurite would be; one
        Azurite can serve many tests that way (tests/conftest.py)."""
        self.location = location
        self.accounts = accounts
        self.fixed = ports is not None
        self.ports = dict(ports) if ports else {svc: free_port() for svc in SERVICES}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.ports)

    def start(self) -> None:
        exe = ROOT / "node_modules" / ".bin" / "azurite"
        if not exe.exists():
            raise RuntimeError("Azurite is not installed: run `npm ci` in the repository root")
        if self.fixed:
            # A port something already listens on would have the relay talk to whatever that is
            # (another Azurite with other data, or not storage at all): refuse rather than start beside it.
            taken = [f"{svc} port {port}" for svc, port in self.ports.items() if port_open(port)]
            if taken:
                raise AzuriteError(f"{', '.join(taken)} already in use (another Azurite?)")
            self._start(exe)
            try:
                wait_until(self._listening, 90, "Azurite to listen", error=AzuriteError)
            except AzuriteError:
                self.stop()
                raise
            return
        # A free port can be taken by another process between free_port() and Azurite's bind; Azurite
        # then exits, and a port answering would be someone else's. So it must still run when all
        # three answer, and another set of ports is tried if it does not.
        for attempt in range(3):
            if attempt:
                self.ports = {svc: free_port() for svc in SERVICES}
            self._start(exe)
            try:
                wait_until(self._listening, 90, "Azurite to listen", error=AzuriteError)
            except AzuriteError as exc:
                if "timed out" in str(exc):
                    self.stop()
                    raise
                continue
            time.sleep(0.2)  # an exit on a port in use comes right after the other ports are bound
            if self.proc is not None and self.proc.poll() is None:
                return
        raise AzuriteError(f"Azurite would not start on free ports (last tried {self.ports})")

    def _listening(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise AzuriteError(f"Azurite exited with code {code} before it listened")
        return all(port_open(p) for p in self.ports.values())

    def _start(self, exe: Path) -> None:
        env = dict(os.environ)
        if self.accounts:
            env["AZURITE_ACCOUNTS"] = ";".join(f"{name}:{ACCOUNT_KEY}" for name in (ACCOUNT, *self.accounts))
        storage = ["--location", str(self.location)] if self.location else ["--inMemoryPersistence"]
        hosts_and_ports = [
            arg for svc in SERVICES for arg in (f"--{svc}Host", "127.0.0.1", f"--{svc}Port", str(self.ports[svc]))
        ]
        self.proc = subprocess.Popen(
            [
                str(exe),
                "--silent",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
                *hosts_and_ports,
                *storage,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # A process group of its own (stopped as one; the terminal's Ctrl-C goes to the dev host,
            # which stops it in turn), not a session: a new session is a new scheduler autogroup,
            # which would not share the `nice` of whoever started it (the tests run at nice 19).
            stdin=subprocess.DEVNULL,
            process_group=0,
            env=env,
        )

    def stop(self) -> None:
        stop_group(self.proc, 10)
        self.proc = None
