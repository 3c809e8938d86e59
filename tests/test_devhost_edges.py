"""The dev host's first screen and edges (`make dev`): a port in use, Azurite that is not there or
cannot start, and Azurite started and stopped with the relay. Each failure is one line naming what
to do, and a non-zero exit within seconds (the storage SDK alone would retry for minutes)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from relay_dev.azurite import Azurite, free_port, port_open, wait_until
from tests.helpers import refused_ports

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AzureWebJobsStorage", "RELAY_"))}
    env.update(extra, PYTHONPATH=str(ROOT))
    return env


def _dev(app_dir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "dev", *args],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """Where the commands run (the app is the repository's; with no local.settings.json read from
    here, the test's environment decides the settings)."""
    return tmp_path


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def test_a_busy_http_port_is_one_line_naming_the_argument(app_dir: Path, azurite: Azurite, listening: int) -> None:
    done = _dev(app_dir, "--port", str(listening), env=_env(AzureWebJobsStorage=azurite.connection_string))
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert f"port {listening}" in line and f'ARGS="--port {listening + 1}"' in line


def test_storage_that_does_not_answer_is_one_line_naming_it(app_dir: Path) -> None:
    with refused_ports(3) as ports:  # no other test's Azurite can take them meanwhile
        dead = dict(zip(("blob", "queue", "table"), ports, strict=True))
        conn = Azurite(ports=dead).connection_string
        done = _dev(app_dir, "--port", str(free_port()), env=_env(AzureWebJobsStorage=conn))
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert f"127.0.0.1:{dead['queue']} does not answer" in line and "Azurite" in line


def _bindable(port: int) -> bool:
    """Free to bind now: not only nobody listening (port_open) but no connection using it either,
    as a parallel test's outgoing one may (the kernel gives those even ports, bind(0) odd ones)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_base() -> int:
    """Three consecutive free ports (Azurite's blob, queue and table)."""
    for _ in range(50):
        base = free_port()
        if base < 65000 and all(_bindable(base + i) for i in range(3)):
            return base
    raise AssertionError("no three consecutive free ports")


def test_an_azurite_port_in_use_stops_make_dev(app_dir: Path, listening: int) -> None:
    """Not the relay started against whatever holds the port: one line and a non-zero exit."""
    done = _dev(app_dir, "--azurite", "--azurite-port", str(listening - 1), "--port", str(free_port()), env=_env())
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert f"queue port {listening} already in use" in line and "AZURITE_PORT=" in line


def test_make_dev_starts_azurite_on_the_ports_given_and_stops_it(app_dir: Path) -> None:
    base, port = _free_base(), free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "relay", "dev", "--azurite", "--azurite-port", str(base), "--port", str(port)),
            *("--azurite-data", str(app_dir / "data")),
        ],
        cwd=app_dir,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once serving
        if not first:  # it exited: say why (on a loaded machine, an Azurite slow to start)
            proc.wait(30)
            raise AssertionError(f"exit {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        assert f"http://127.0.0.1:{port}/api" in first, first
        assert requests.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 200
        assert all(port_open(base + i) for i in range(3))
        assert any((app_dir / "data").iterdir())  # its data, kept across runs
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        wait_until(lambda: not any(port_open(base + i) for i in range(3)), 30, "Azurite to stop")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_one_instance_at_a_time_fires_a_timer_and_a_restarted_one_takes_its_lock_back(azurite) -> None:  # type: ignore[no-untyped-def]
    """Two dev hosts on one storage account are two instances of one app: as the Functions host
    does, only the one holding the timer's listener lease fires it. The same instance (address)
    started again takes its lock back at once; another takes it once the holder lets it go."""
    from azure.storage.blob import BlobServiceClient

    from relay_dev.singleton import ListenerLock

    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    locks = []

    def lock(function: str, instance: str) -> ListenerLock:
        locks.append(ListenerLock(blobs, function, instance))
        return locks[-1]

    try:
        first = lock("due", "127.0.0.1:7071")
        assert first.held()
        assert not lock("due", "127.0.0.1:7072").held()
        assert lock("other", "127.0.0.1:7072").held()  # a lock per timer function
        again = lock("due", "127.0.0.1:7071")  # killed and started again on its port
        assert again.held()
        first.release()
        again.release()
        assert lock("due", "127.0.0.1:7072").held()
    finally:
        for one in locks:
            one.release()


def test_a_timer_lock_outlasts_its_lease_while_a_run_takes_longer(azurite) -> None:  # type: ignore[no-untyped-def]
    """A run of the timer that takes longer than the lease (CI saw a due run stall for 23 s) keeps
    the lock: it is renewed by a thread of its own, not between runs, so another instance does
    not fire the timer meanwhile and move the same rows again."""
    import threading

    from azure.storage.blob import BlobServiceClient

    from relay_dev.singleton import LEASE_SECONDS, ListenerLock

    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    holder, other = ListenerLock(blobs, "due", "127.0.0.1:7071"), ListenerLock(blobs, "due", "127.0.0.1:7072")
    try:
        assert holder.held()
        threading.Event().wait(LEASE_SECONDS + 3)  # the holder's run: no call to `held` meanwhile
        assert not other.held()
        assert holder.held()
    finally:
        holder.release()
        other.release()
