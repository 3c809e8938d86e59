"""Settings come from the environment, then `local.settings.json` Values, each checked and named."""

from __future__ import annotations

import json

import pytest

from relay.core import settings
from relay.core.errors import ConfigurationError
from relay.core.settings import Settings


def test_local_settings_fill_in_what_the_environment_leaves_unset(tmp_path, monkeypatch) -> None:
    (tmp_path / "local.settings.json").write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {
                    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                    "RELAY_DELIVERY_TIMEOUT": "12",
                    "RELAY_MAX_EVENT_BYTES": "99",
                    "RELAY_PUBLIC_URL": "https://events.contoso.com",
                },
            }
        )
    )
    monkeypatch.setattr(settings, "APP_DIR", tmp_path)
    for name in ("AzureWebJobsStorage", "RELAY_DELIVERY_TIMEOUT", "RELAY_PUBLIC_URL", "WEBSITE_HOSTNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RELAY_MAX_EVENT_BYTES", "77")
    monkeypatch.setenv("RELAY_RETRY_SCHEDULE", "")  # empty is unset: the default
    read = Settings.from_environ()
    assert (read.delivery_timeout, read.max_event_bytes, read.public_url) == (12, 77, "https://events.contoso.com")
    assert read.storage == {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    assert read.retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)

    # A malformed value in the file stops the app like one in the environment, named.
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"RELAY_DELIVERY_TIMEOUT": "soon"}}))
    with pytest.raises(ConfigurationError, match="RELAY_DELIVERY_TIMEOUT"):
        Settings.from_environ()
    # An explicit mapping is read alone (no file).
    assert Settings.from_environ({}).delivery_timeout == 30
