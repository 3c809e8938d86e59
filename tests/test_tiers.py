"""The test tiers (docs/testing.md): every test is filed in exactly one, by what it uses, and a dev
host started from a test outside the devhost tier fails it."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace
from typing import Any

import pytest

from tests import helpers
from tests.conftest import TIERS, tier_of
from tests.helpers import RelayProcess


def test_every_selected_test_has_exactly_one_tier(request: pytest.FixtureRequest) -> None:
    untiered = {
        item.nodeid: tiers
        for item in request.session.items
        if len(tiers := [m.name for m in item.iter_markers() if m.name in TIERS]) != 1
    }
    assert not untiered


def _item(function: Any, fixtures: list[str], defs: dict[str, Any] | None = None) -> Any:
    """What tier_of reads of a collected test: its function and its fixture closure."""
    info = SimpleNamespace(names_closure=fixtures, name2fixturedefs=defs or {})
    return SimpleNamespace(function=function, _fixtureinfo=info)


def _plain() -> None:
    assert 1 + 1 == 2


def _starts_a_command() -> None:
    subprocess.run(["true"], check=True)


def _starts_a_dev_host(azurite: Any) -> None:
    RelayProcess(azurite, {}).start()


def test_the_tier_follows_from_what_a_test_uses() -> None:
    assert tier_of(_item(_plain, ["request"])) == "unit"
    assert tier_of(_item(_plain, ["app", "app_storage", "azurite", "azurite_pool"])) == "inprocess"
    assert tier_of(_item(_plain, ["relay", "relay_factory", "azurite"])) == "devhost"
    assert tier_of(_item(_starts_a_command, [])) == "devhost"
    assert tier_of(_item(lambda: _starts_a_dev_host, ["azurite"])) == "inprocess"  # a helper's name is not seen...
    assert tier_of(_item(_starts_a_dev_host, ["azurite"])) == "devhost"  # ...the class named in the test is
    # A module's own fixture that starts the dev host files the tests using it.
    fixture = SimpleNamespace(func=_starts_a_dev_host)
    assert tier_of(_item(_plain, ["azurite", "entra"], {"entra": [fixture]})) == "devhost"


def test_a_dev_host_started_outside_the_devhost_tier_fails_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "running_tier", "inprocess")
    stand_in = SimpleNamespace(connection_string="UseDevelopmentStorage=true")
    with pytest.raises(AssertionError, match="devhost tier"):
        RelayProcess(stand_in, {}).start()  # type: ignore[arg-type]


def test_the_console_the_bench_and_scale_out_have_their_markers(request: pytest.FixtureRequest) -> None:
    """The markers that cannot be read from fixtures come from conftest's table; checked on the tests
    this session collected (a -m selection may leave some out)."""
    expected = {
        "tests/test_console.py::": {"browser"},
        "tests/test_outbound.py::test_stalled_body_keeps_what_arrived": {"serial", "unit"},
        "tests/test_bounds.py::test_unique_items_over_many_objects_is_linear": {"serial", "devhost"},
        "tests/test_scale_out.py::": {"scaleout", "slow", "serial", "devhost"},
        "tests/test_bench.py::test_bench_completes": {"benchmark", "serial", "devhost"},
        "tests/test_durability.py::": {"slow", "devhost"},
    }
    for item in request.session.items:
        for prefix, markers in expected.items():
            if item.nodeid.startswith(prefix):
                assert markers <= {m.name for m in item.iter_markers()}, item.nodeid
