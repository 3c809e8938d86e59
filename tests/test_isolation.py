"""Tests running in parallel (xdist workers and the serial part beside them, docs/testing.md) must
not reach each other's servers. A test that needs an address nobody answers takes one from
helpers.refused_ports: CI once failed two tests at once when a port found free and closed again
became a parallel test's receiver, and a batch's "dead" target was answered by it."""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest

from tests.helpers import RelayProcess, refused_ports


def test_a_refused_port_stays_refused_and_no_one_else_can_take_it() -> None:
    with refused_ports(3) as ports:
        assert len(set(ports)) == 3
        for port in ports:
            with socket.socket() as other, pytest.raises(OSError) as taken:
                other.bind(("127.0.0.1", port))
            assert taken.value.errno == errno.EADDRINUSE
            with socket.socket() as client:
                assert client.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED
    with socket.socket() as other:
        other.bind(("127.0.0.1", ports[0]))  # given back when the block ends


def test_a_dev_host_binds_a_port_the_kernel_picks_and_a_restart_keeps_it(azurite: Any) -> None:
    """RelayProcess starts `relay dev --port 0` and reads the port from the host's own log line, so
    no port is chosen here and bound seconds later, when another test may hold it; a restart keeps
    the address, as a restarted app keeps its own (the Locations a flow holds point at it)."""
    relay = RelayProcess(azurite, {})
    assert relay.port == 0
    relay.start()
    try:
        port = relay.port
        assert port and relay.get("health").status_code == 200
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))  # the host's own socket holds it
        relay.stop()
        relay.start()
        assert relay.port == port and relay.get("health").status_code == 200
    finally:
        relay.stop()
