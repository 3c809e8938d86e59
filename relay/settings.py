"""Every setting the relay reads, read here and nowhere else.

App settings arrive as environment variables in Azure; locally the dev host copies
`local.settings.json` `Values` into the environment before anything reads them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from .errors import ConfigurationError


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    meaning: str


# One list, so the README, the Bicep template and the code can be compared against it.
SETTINGS: tuple[Setting, ...] = (
    Setting("AzureWebJobsStorage", None,
            "storage connection string, or the identity-based AzureWebJobsStorage__* forms"),
    Setting("RELAY_RETRY_SCHEDULE", "5s,5m,30m,2h,5h,10h,10h",
            "delays between delivery attempts (units ms, s, m, h)"),
    Setting("RELAY_DELIVERY_TIMEOUT", "30", "seconds one delivery attempt may take"),
    Setting("RELAY_ALLOW_PRIVATE_TARGETS", "false",
            "true allows plain http and non-public notification addresses (local work only)"),
    Setting("RELAY_MAX_EVENT_BYTES", "1048576", "largest event accepted, in bytes of its JSON"),
    Setting("RELAY_EVENT_RETENTION_DAYS", "7",
            "days published events stay readable for polling, replay and de-duplication"),
    Setting("RELAY_AUTH", "keys",
            "keys: function keys, any key may do everything; entra: Microsoft Entra ID principals with app roles"),
    Setting("RELAY_MAX_BATCH_BYTES", "4194304",
            "largest request body of POST /api/events, in bytes (413 above, from Content-Length before reading)"),
)

AUTH_MODES = ("keys", "entra")

# Identity-based storage: the suffixes the Functions host itself understands.
STORAGE_IDENTITY_SUFFIXES = (
    "accountName", "queueServiceUri", "tableServiceUri", "blobServiceUri", "credential", "clientId",
)

# Optional settings: read when present, never required.
OPTIONAL_SETTINGS = ("APPLICATIONINSIGHTS_CONNECTION_STRING", "RELAY_FUNCTION_KEY", "RELAY_PUBLIC_URL",
                     "WEBSITE_HOSTNAME",
                     # The dev host's stand-in for Easy Auth (RELAY_AUTH=entra, local work only).
                     "RELAY_ENTRA_ISSUER", "RELAY_ENTRA_AUDIENCE", "RELAY_ENTRA_JWKS")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DELAY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*")


def parse_schedule(text: str) -> tuple[float, ...]:
    """`5s,5m,2h` -> (5.0, 300.0, 7200.0); an empty text means a single attempt."""
    if not text.strip():
        return ()
    delays = []
    for part in text.split(","):
        match = _DELAY.fullmatch(part)
        if not match:
            raise ConfigurationError(
                f"RELAY_RETRY_SCHEDULE: {part.strip()!r} is not a delay such as 500ms, 5s, 5m or 2h")
        delays.append(float(match.group(1)) * _UNITS[match.group(2)])
    return tuple(delays)


def _bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise ConfigurationError(f"{name}: {text!r} is not true or false")


def auth_mode(environ: Mapping[str, str] | None = None) -> str:
    """RELAY_AUTH, checked; read on its own because function_app.py needs it before any request
    (the HTTP functions' auth level follows it)."""
    env = os.environ if environ is None else environ
    mode = (env.get("RELAY_AUTH") or "keys").strip().lower()
    if mode not in AUTH_MODES:
        raise ConfigurationError(f"RELAY_AUTH: {env.get('RELAY_AUTH')!r} is not keys or entra")
    return mode


def parse_public_url(text: str) -> str | None:
    """`https://events.contoso.com[:port]` -> itself without a trailing slash; None when unset.

    Scheme and host only: the relay's paths (`/api/...`) follow it, and the definition's `host` is
    taken from it, so a path, query or fragment here could only produce wrong URLs.
    """
    text = text.strip()
    if not text:
        return None
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.username \
            or parts.path not in ("", "/") or parts.query or parts.fragment or "?" in text or "#" in text:
        raise ConfigurationError(
            f"RELAY_PUBLIC_URL: {text!r} is not a scheme and host such as https://events.contoso.com")
    return f"{parts.scheme}://{parts.netloc}"


def _positive(name: str, text: str, kind: type = float) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigurationError(f"{name}: {text!r} is not a number") from None
    if value <= 0:
        raise ConfigurationError(f"{name}: must be greater than zero")
    return value


@dataclass(frozen=True)
class Settings:
    storage: Mapping[str, str] = field(repr=False)
    retry_schedule: tuple[float, ...]
    delivery_timeout: float
    allow_private_targets: bool
    max_event_bytes: int
    event_retention_days: float
    auth_mode: str = "keys"
    max_batch_bytes: int = 4 * 1024 * 1024
    appinsights_connection_string: str | None = field(default=None, repr=False)
    # Where every absolute URL the relay writes starts (RELAY_PUBLIC_URL, else https:// +
    # WEBSITE_HOSTNAME in Azure); None: the request's own scheme and host (local work).
    public_url: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            default = next(s.default for s in SETTINGS if s.name == name)
            value = env.get(name)
            return default if value is None or value == "" else value  # type: ignore[return-value]

        storage = {
            key: value for key, value in env.items()
            if key == "AzureWebJobsStorage" or key.startswith("AzureWebJobsStorage__")
        }
        return cls(
            storage=storage,
            retry_schedule=parse_schedule(get("RELAY_RETRY_SCHEDULE")),
            delivery_timeout=_positive("RELAY_DELIVERY_TIMEOUT", get("RELAY_DELIVERY_TIMEOUT")),
            allow_private_targets=_bool("RELAY_ALLOW_PRIVATE_TARGETS", get("RELAY_ALLOW_PRIVATE_TARGETS")),
            max_event_bytes=int(_positive("RELAY_MAX_EVENT_BYTES", get("RELAY_MAX_EVENT_BYTES"), int)),
            event_retention_days=_positive("RELAY_EVENT_RETENTION_DAYS", get("RELAY_EVENT_RETENTION_DAYS")),
            auth_mode=auth_mode(env),
            max_batch_bytes=int(_positive("RELAY_MAX_BATCH_BYTES", get("RELAY_MAX_BATCH_BYTES"), int)),
            appinsights_connection_string=env.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or None,
            public_url=parse_public_url(env.get("RELAY_PUBLIC_URL") or "") or (
                f"https://{env['WEBSITE_HOSTNAME'].strip()}" if (env.get("WEBSITE_HOSTNAME") or "").strip() else None),
        )


_current: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read once; `reset_settings` exists for tests and the dev host."""
    global _current
    if _current is None:
        _current = Settings.from_environ()
    return _current


def reset_settings() -> None:
    global _current
    _current = None
