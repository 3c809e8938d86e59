"""Tests running in parallel (xdist workers and the serial part beside them, docs/testing.md) must
not reach each other's servers. A test that needs an address nobody answers takes one from
helpers.refused_ports: CI once failed two tests at once when a port found free and closed again
became a parallel test's receiver, and a batch's "dead" target was answered by it."""

from __future__ import annotations

import errno
import socket

import pytest

from tests.helpers import refused_ports


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
