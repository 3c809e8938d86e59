"""Each setting is declared once (issue 21): `relay.core.settings.DECLARED` holds its name, default,
check and meaning; the `Settings` model and the table in docs/settings.md both come from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.core import settings
from relay.core.errors import ConfigurationError
from relay_dev import settings_table

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_settings_table_is_the_generated_one() -> None:
    committed = settings_table.committed((ROOT / "docs" / "settings.md").read_text(encoding="utf-8"))
    assert committed == settings.table(), "run: .venv/bin/python -m relay_dev.settings_table --write"


def test_a_table_that_differs_from_the_declarations_is_caught() -> None:
    text = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    edited = text.replace("| `RELAY_DELIVERY_TIMEOUT` |", "| `RELAY_DELIVERY_TIMEOUTS` |")
    assert edited != text
    assert settings_table.committed(edited) != settings.table()
    # --write mends it.
    assert settings_table.committed(settings_table.with_table(edited, settings.table())) == settings.table()


def test_every_declared_setting_is_the_models_field_and_no_field_is_declared_elsewhere() -> None:
    fields = settings.Settings.model_fields
    aliased = {info.alias: name for name, info in fields.items() if info.alias}
    declared = {s.name: s.attr for s in settings.DECLARED if s.attr}
    assert aliased == declared
    for setting in settings.DECLARED:
        if setting.attr:
            assert fields[setting.attr].repr is not setting.secret, setting.name
    names = [s.name for s in settings.DECLARED]
    assert len(names) == len(set(names))
    assert set(settings.OPTIONAL_SETTINGS).isdisjoint({s.name for s in settings.SETTINGS})


def test_each_declared_default_passes_its_own_check_and_the_check_names_its_setting() -> None:
    defaults = settings.Settings.from_environ({})
    for setting in settings.DECLARED:
        if setting.check is None:
            continue
        if setting.default is not None:
            assert getattr(defaults, setting.attr or "") == setting.check(setting.default)
        with pytest.raises(ConfigurationError, match=setting.name):
            settings.Settings.from_environ({setting.name: "not a value \x01"})


def test_the_app_dir_is_the_function_apps_root() -> None:
    # local.settings.json sits beside function_app.py; the move into relay/core once pointed this at relay/.
    assert settings.APP_DIR == ROOT
    assert (settings.APP_DIR / "function_app.py").exists()
