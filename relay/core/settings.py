"""Every setting the relay reads, read here and nowhere else.

App settings arrive as environment variables in Azure; locally `local.settings.json` `Values`
fill in what the environment leaves unset (a pydantic-settings source; the dev host also copies
them into the environment, for what reads it directly).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from relay.core.errors import ConfigurationError

# The function app's root (function_app.py, host.json and, locally, local.settings.json).
APP_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    meaning: str


# One list, so the README, the Bicep template and the code can be compared against it.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "AzureWebJobsStorage", None, "storage connection string, or the identity-based AzureWebJobsStorage__* forms"
    ),
    Setting("RELAY_RETRY_SCHEDULE", "5s,5m,30m,2h,5h,10h,10h", "delays between delivery attempts (units ms, s, m, h)"),
    Setting("RELAY_DELIVERY_TIMEOUT", "30", "seconds one delivery attempt may take"),
    Setting(
        "RELAY_ALLOW_PRIVATE_TARGETS",
        "false",
        "true allows plain http and non-public notification addresses (local work only)",
    ),
    Setting("RELAY_MAX_EVENT_BYTES", "1048576", "largest event accepted, in bytes of its JSON"),
    Setting(
        "RELAY_EVENT_RETENTION_DAYS", "7", "days published events stay readable for polling, replay and de-duplication"
    ),
    Setting(
        "RELAY_AUTH",
        "keys",
        "keys: function keys, any key may do everything; entra: Microsoft Entra ID principals with app roles",
    ),
    Setting(
        "RELAY_MAX_BATCH_BYTES",
        "4194304",
        "largest request body of POST /api/events, in bytes (413 above, from Content-Length before reading)",
    ),
    Setting(
        "RELAY_ATTEMPT_THREADS",
        "64",
        "delivery attempts one instance makes at a time (a thread and a kept-alive connection each)",
    ),
    Setting(
        "RELAY_ORIGIN_SLOTS",
        "32",
        "of those, attempts to one receiver (scheme, host and port) at a time; at most RELAY_ATTEMPT_THREADS",
    ),
)

AUTH_MODES = ("keys", "entra")

# Identity-based storage: the suffixes the Functions host itself understands.
STORAGE_IDENTITY_SUFFIXES = (
    "accountName",
    "queueServiceUri",
    "tableServiceUri",
    "blobServiceUri",
    "credential",
    "clientId",
)

# Optional settings: read when present, never required.
OPTIONAL_SETTINGS = (
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "RELAY_FUNCTION_KEY",
    "RELAY_PUBLIC_URL",
    "WEBSITE_HOSTNAME",
    # The key that signs continuation tokens and trigger states (relay/store/tokens.py);
    # unset: a key the relay creates once in its own table.
    "RELAY_TOKEN_KEY",
    # The key RELAY_TOKEN_KEY replaced: tokens it signed still open (a rotation that breaks
    # nothing in flight); new ones are always signed with the current key.
    "RELAY_TOKEN_KEY_PREVIOUS",
    # The dev host's stand-in for Easy Auth (RELAY_AUTH=entra, local work only).
    "RELAY_ENTRA_ISSUER",
    "RELAY_ENTRA_AUDIENCE",
    "RELAY_ENTRA_JWKS",
    # How often the due-retry timer runs (relay/store/due.py); unset: once a minute. Tests and the dev
    # host set seconds; the template leaves it unset.
    "RELAY_DUE_PERIOD",
    # RELAY_AUTH=entra: the tenant and the Application ID URI the served connector definition
    # (GET /api/openapi.json) signs in with; unset: read from RELAY_ENTRA_ISSUER / _AUDIENCE.
    "RELAY_ENTRA_TENANT",
    "RELAY_ENTRA_RESOURCE",
    # How long a subscription's deliveries may all fail before the relay disables it
    # (relay/pipeline/health.py); unset: 5d, as Svix. The retry schedule's units plus `d`.
    "RELAY_DISABLE_AFTER",
)

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
                f"RELAY_RETRY_SCHEDULE: {part.strip()!r} is not a delay such as 500ms, 5s, 5m or 2h"
            )
        delays.append(float(match.group(1)) * _UNITS[match.group(2)])
    return tuple(delays)


DISABLE_AFTER_DEFAULT = "5d"
_SPAN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")


def parse_disable_after(text: str) -> float:
    """RELAY_DISABLE_AFTER (`5d`, `12h`, `30s`) in seconds; more than zero."""
    match = _SPAN.fullmatch(text or DISABLE_AFTER_DEFAULT)
    seconds = float(match.group(1)) * {**_UNITS, "d": 86400.0}[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ConfigurationError(f"RELAY_DISABLE_AFTER: {text.strip()!r} is not a duration such as 5d, 12h, 30m or 45s")
    return seconds


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


# The due-retry timer's periods an NCRONTAB schedule can hold evenly: a divisor of a minute in
# seconds, or of an hour in minutes.
DUE_PERIODS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 300, 360, 600, 720, 900, 1200, 1800)
DUE_PERIOD_DEFAULT = 60.0


def parse_due_period(text: str) -> float:
    """RELAY_DUE_PERIOD (`1s`, `10s`, `1m`, `5m`) in seconds: one of DUE_PERIODS."""
    if not text.strip():
        return DUE_PERIOD_DEFAULT
    match = _DELAY.fullmatch(text)
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else -1.0
    if seconds not in DUE_PERIODS:
        raise ConfigurationError(
            f"RELAY_DUE_PERIOD: {text.strip()!r} is not a period a timer schedule can keep: "
            "1s-30s dividing a minute, or 1m-30m dividing an hour"
        )
    return seconds


def due_period(environ: Mapping[str, str] | None = None) -> float:
    """RELAY_DUE_PERIOD, read on its own because relay.triggers.worker needs it at import (the timer's
    schedule); a malformed value falls back to the default here and stops the app when the
    settings are read."""
    env = os.environ if environ is None else environ
    try:
        return parse_due_period(env.get("RELAY_DUE_PERIOD") or "")
    except ConfigurationError:
        return DUE_PERIOD_DEFAULT


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
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "?" in text
        or "#" in text
    ):
        raise ConfigurationError(
            f"RELAY_PUBLIC_URL: {text!r} is not a scheme and host such as https://events.contoso.com"
        )
    return f"{parts.scheme}://{parts.netloc}"


TOKEN_KEY_MIN = 32


def parse_token_key(text: str, name: str = "RELAY_TOKEN_KEY") -> str | None:
    """RELAY_TOKEN_KEY (or RELAY_TOKEN_KEY_PREVIOUS): any text of at least 32 characters (e.g.
    `openssl rand -base64 32`)."""
    if not text:
        return None
    if len(text.strip()) < TOKEN_KEY_MIN:
        # The value itself is a secret: the message names the setting, never the text.
        raise ConfigurationError(f"{name}: must be at least {TOKEN_KEY_MIN} characters")
    return text.strip()


def _positive(name: str, text: str, kind: Callable[[str], float] = float) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigurationError(f"{name}: {text!r} is not a number") from None
    if value <= 0:
        raise ConfigurationError(f"{name}: must be greater than zero")
    return value


def _count(name: str, text: str) -> int:
    """A whole number of at least 1 (threads, slots)."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigurationError(f"{name}: {text!r} is not a whole number") from None
    if value < 1:
        raise ConfigurationError(f"{name}: must be at least 1")
    return value


def local_settings_values(app_dir: Path | None = None) -> dict[str, str]:
    """`local.settings.json` `Values` (Core Tools' file for local work); {} where there is none,
    as in Azure, whose package never holds it."""
    path = (app_dir or APP_DIR) / "local.settings.json"
    if not path.exists():
        return {}
    try:
        values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    except (ValueError, AttributeError):
        raise ConfigurationError(f"{path}: is not JSON with a Values object") from None
    return {str(key): str(value) for key, value in values.items()}


class _NamedSettings(PydanticBaseSettingsSource):
    """The relay's settings by their app-setting names, from one mapping (the environment, or
    `local.settings.json` Values). An empty value is unset, as an emptied app setting is in Azure."""

    NAMES = tuple(s.name for s in SETTINGS) + OPTIONAL_SETTINGS

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = field.alias or field_name
        return self._values.get(name), name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            name: self._values[name] for name in self.NAMES if name != "AzureWebJobsStorage" and self._values.get(name)
        }
        storage = {
            key: value
            for key, value in self._values.items()
            if key == "AzureWebJobsStorage" or key.startswith("AzureWebJobsStorage__")
        }
        if storage:
            found["storage"] = storage
        return found


# The mapping `Settings.from_environ` was given, for the sources it builds (None: the process's).
_given: ContextVar[Mapping[str, str] | None] = ContextVar("relay_settings_given", default=None)


def _default(name: str) -> str | None:
    return next(s.default for s in SETTINGS if s.name == name)


def _checked(parse: Callable[[str], Any]) -> Any:
    """A parser of a setting's text as a pydantic validator (a value built in code passes as is)."""
    return BeforeValidator(lambda value: parse(value) if isinstance(value, str) else value)


class Settings(BaseSettings):
    """One settings object, read by pydantic-settings from the environment (Azure's app
    settings), falling back to `local.settings.json` Values. Each parser raises a
    ConfigurationError naming its setting, so a malformed one stops the app at start."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    storage: Mapping[str, str] = Field(default_factory=dict, repr=False)
    retry_schedule: Annotated[tuple[float, ...], _checked(parse_schedule)] = Field(
        _default("RELAY_RETRY_SCHEDULE"), alias="RELAY_RETRY_SCHEDULE", validate_default=True
    )
    delivery_timeout: Annotated[float, _checked(lambda t: _positive("RELAY_DELIVERY_TIMEOUT", t))] = Field(
        _default("RELAY_DELIVERY_TIMEOUT"), alias="RELAY_DELIVERY_TIMEOUT", validate_default=True
    )
    allow_private_targets: Annotated[bool, _checked(lambda t: _bool("RELAY_ALLOW_PRIVATE_TARGETS", t))] = Field(
        _default("RELAY_ALLOW_PRIVATE_TARGETS"), alias="RELAY_ALLOW_PRIVATE_TARGETS", validate_default=True
    )
    max_event_bytes: Annotated[int, _checked(lambda t: int(_positive("RELAY_MAX_EVENT_BYTES", t, int)))] = Field(
        _default("RELAY_MAX_EVENT_BYTES"), alias="RELAY_MAX_EVENT_BYTES", validate_default=True
    )
    event_retention_days: Annotated[float, _checked(lambda t: _positive("RELAY_EVENT_RETENTION_DAYS", t))] = Field(
        _default("RELAY_EVENT_RETENTION_DAYS"), alias="RELAY_EVENT_RETENTION_DAYS", validate_default=True
    )
    auth_mode: Annotated[str, _checked(lambda t: auth_mode({"RELAY_AUTH": t}))] = Field(
        _default("RELAY_AUTH"), alias="RELAY_AUTH", validate_default=True
    )
    max_batch_bytes: Annotated[int, _checked(lambda t: int(_positive("RELAY_MAX_BATCH_BYTES", t, int)))] = Field(
        _default("RELAY_MAX_BATCH_BYTES"), alias="RELAY_MAX_BATCH_BYTES", validate_default=True
    )
    attempt_threads: Annotated[int, _checked(lambda t: _count("RELAY_ATTEMPT_THREADS", t))] = Field(
        _default("RELAY_ATTEMPT_THREADS"), alias="RELAY_ATTEMPT_THREADS", validate_default=True
    )
    origin_slots: Annotated[int, _checked(lambda t: _count("RELAY_ORIGIN_SLOTS", t))] = Field(
        _default("RELAY_ORIGIN_SLOTS"), alias="RELAY_ORIGIN_SLOTS", validate_default=True
    )
    appinsights_connection_string: str | None = Field(None, alias="APPLICATIONINSIGHTS_CONNECTION_STRING", repr=False)
    # How often the due-retry timer runs; a delay shorter than this stays a queue visibility timeout.
    due_period: Annotated[float, _checked(parse_due_period)] = Field(DUE_PERIOD_DEFAULT, alias="RELAY_DUE_PERIOD")
    # RELAY_DISABLE_AFTER: seconds a subscription's deliveries may all fail before it is disabled.
    disable_after: Annotated[float, _checked(parse_disable_after)] = Field(
        DISABLE_AFTER_DEFAULT, alias="RELAY_DISABLE_AFTER", validate_default=True
    )
    # Where every absolute URL the relay writes starts (RELAY_PUBLIC_URL, else https:// +
    # WEBSITE_HOSTNAME in Azure); None: the request's own scheme and host (local work).
    public_url: str | None = None
    # RELAY_TOKEN_KEY: signs continuation tokens and trigger states; None: the stored key.
    token_key: Annotated[str | None, _checked(parse_token_key)] = Field(None, alias="RELAY_TOKEN_KEY", repr=False)
    # RELAY_TOKEN_KEY_PREVIOUS: the key before the last rotation; tokens it signed still open.
    token_key_previous: Annotated[str | None, _checked(lambda t: parse_token_key(t, "RELAY_TOKEN_KEY_PREVIOUS"))] = (
        Field(None, alias="RELAY_TOKEN_KEY_PREVIOUS", repr=False)
    )
    # RELAY_AUTH=entra: what the served connector definition signs in with (relay.http.routes.meta).
    entra_tenant: str | None = Field(None, alias="RELAY_ENTRA_TENANT")
    entra_resource: str | None = Field(None, alias="RELAY_ENTRA_RESOURCE")
    entra_issuer: str | None = Field(None, alias="RELAY_ENTRA_ISSUER")
    entra_audience: str | None = Field(None, alias="RELAY_ENTRA_AUDIENCE")

    @model_validator(mode="before")
    @classmethod
    def _public_url(cls, data: Any) -> Any:
        """RELAY_PUBLIC_URL, checked, else the platform's WEBSITE_HOSTNAME (taken as it is)."""
        if not isinstance(data, dict) or "public_url" in data:
            return data
        data = dict(data)
        host = str(data.pop("WEBSITE_HOSTNAME", "") or "").strip()
        data["public_url"] = parse_public_url(str(data.pop("RELAY_PUBLIC_URL", "") or "")) or (
            f"https://{host}" if host else None
        )
        return data

    @model_validator(mode="after")
    def _slots_within_threads(self) -> Settings:
        # More slots than threads would make the per-receiver share a limit that never applies.
        if self.origin_slots > self.attempt_threads:
            raise ConfigurationError(
                f"RELAY_ORIGIN_SLOTS: {self.origin_slots} is more than RELAY_ATTEMPT_THREADS ({self.attempt_threads})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        given = _given.get()
        if given is not None:  # exactly the mapping given (tests), nothing else
            return (init_settings, _NamedSettings(settings_cls, given))
        # The environment first; local.settings.json only for what it leaves unset (the dev host
        # also copies the file into the environment, for what reads it directly).
        return (
            init_settings,
            _NamedSettings(settings_cls, os.environ),
            _NamedSettings(settings_cls, local_settings_values()),
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        token = _given.set(environ)
        try:
            return cls()
        except ValidationError as exc:  # what no parser above caught (a parser names its setting)
            error = exc.errors()[0]
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            raise ConfigurationError(f"{name}: {error['msg']}") from None
        finally:
            _given.reset(token)


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
