"""Every setting the relay reads, read here and nowhere else.

App settings arrive as environment variables in Azure; locally `local.settings.json` `Values`
fill in what the environment leaves unset (a pydantic-settings source; the dev host also copies
them into the environment, for what reads it directly).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from relay.core import runtime
from relay.core.errors import ConfigurationError
from relay.core.settingchecks import (
    AUTH_MODES,
    DISABLE_AFTER,
    DUE_PERIOD_DEFAULT,
    DUE_PERIODS,
    STORAGE_IDENTITY_SUFFIXES,
    TOKEN_KEY_MIN,
    auth_mode,
    boolean,
    counting,
    due_period,
    parse_disable_after,
    parse_due_period,
    parse_public_url,
    parse_schedule,
    parse_token_key,
    positive_number,
    positive_whole,
)

# The checks callers read here, beside the settings they check (the module's own names are exported too).
__all__ = [
    "AUTH_MODES",
    "DUE_PERIODS",
    "DUE_PERIOD_DEFAULT",
    "STORAGE_IDENTITY_SUFFIXES",
    "TOKEN_KEY_MIN",
    "auth_mode",
    "due_period",
    "parse_due_period",
    "parse_public_url",
    "parse_schedule",
    "parse_token_key",
]

# The function app's root (function_app.py, host.json and, locally, local.settings.json).
APP_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Setting:
    """One setting, declared once (`DECLARED`): the `Settings` model and the table in
    docs/settings.md (`table()`, `python -m relay_dev.settings_table`) both come from it."""

    name: str  # the app setting's (environment variable's) name
    default: str | None  # the text used when it is unset; None: required, or nothing when optional
    meaning: str  # the table's words (Markdown)
    attr: str | None = None  # the `Settings` attribute it fills; None: read elsewhere (storage, the dev host)
    check: Callable[[str], Any] | None = None  # text -> value; raises a ConfigurationError naming the setting
    optional: bool = False  # read when present, never required: not one of the template's app settings
    secret: bool = False  # never shown in a repr
    shown_default: str | None = None  # the table's default column, when not the default itself

    @property
    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        return "none" if self.default is None else f"`{self.default}`"


# Every setting the relay reads, once: its name, default, check and meaning (see `Setting`).
DECLARED: tuple[Setting, ...] = (
    Setting(
        "AzureWebJobsStorage",
        None,
        (
            "storage connection string (Azurite: `UseDevelopmentStorage=true` or a full string); or "
            "identity-based: `AzureWebJobsStorage__accountName`, or `__queueServiceUri` + `__tableServiceUri` + "
            "`__blobServiceUri`, with optional `__credential=managedidentity` and `__clientId` (without "
            "`__credential`, `DefaultAzureCredential`, e.g. your `az login`)"
        ),
    ),
    Setting(
        "RELAY_RETRY_SCHEDULE",
        "5s,5m,30m,2h,5h,10h,10h",
        (
            "delays between delivery attempts, comma-separated, units `ms`, `s`, `m`, `h` (attempts = 1 + number "
            "of delays)"
        ),
        attr="retry_schedule",
        check=parse_schedule,
    ),
    Setting(
        "RELAY_DELIVERY_TIMEOUT",
        "30",
        "seconds one delivery attempt may take, connect to last byte",
        attr="delivery_timeout",
        check=positive_number("RELAY_DELIVERY_TIMEOUT"),
    ),
    Setting(
        "RELAY_ALLOW_PRIVATE_TARGETS",
        "false",
        "`true` allows plain `http` and non-public addresses: local work only",
        attr="allow_private_targets",
        check=boolean("RELAY_ALLOW_PRIVATE_TARGETS"),
        shown_default="`false` (the sample local settings set `true`)",
    ),
    Setting(
        "RELAY_MAX_EVENT_BYTES",
        "1048576",
        "largest event accepted, in bytes of its compact JSON (`413` above)",
        attr="max_event_bytes",
        check=positive_whole("RELAY_MAX_EVENT_BYTES"),
    ),
    Setting(
        "RELAY_EVENT_RETENTION_DAYS",
        "7",
        (
            "how long events stay readable for polling, replay and de-duplication, and delivery log rows are kept"
            " (an hourly timer forgets older ones)"
        ),
        attr="event_retention_days",
        check=positive_number("RELAY_EVENT_RETENTION_DAYS"),
    ),
    Setting(
        "RELAY_MAX_BATCH_BYTES",
        "4194304",
        (
            "largest request body of `POST /api/events` (one event or a batch: it also caps an event), in bytes: "
            "`413` above, decided from `Content-Length` before the body is read (where no length is given, once "
            "the body is longer)"
        ),
        attr="max_batch_bytes",
        check=positive_whole("RELAY_MAX_BATCH_BYTES"),
    ),
    Setting(
        "RELAY_ATTEMPT_THREADS",
        "64",
        (
            "delivery attempts one instance makes at a time: a thread and a kept-alive connection each. Raise it "
            "for receivers that answer slowly (attempts mostly wait on them), lower it to bound an instance's "
            "memory and connections; more than about 64 buys nothing against fast receivers on a small instance, "
            "where the interpreter lock, not waiting, is the limit"
        ),
        attr="attempt_threads",
        check=counting("RELAY_ATTEMPT_THREADS"),
    ),
    Setting(
        "RELAY_ORIGIN_SLOTS",
        "32",
        (
            "of those, attempts to one receiver (scheme, host and port) at a time, so a receiver that stops "
            "answering holds this many threads and the others keep the rest; at most `RELAY_ATTEMPT_THREADS` "
            "(equal turns the fairness off). Raise it when most deliveries go to one receiver"
        ),
        attr="origin_slots",
        check=counting("RELAY_ORIGIN_SLOTS"),
    ),
    Setting(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        None,
        (
            "send metrics (`relay.deliveries` by outcome, `relay.delivery.duration`) to Application Insights "
            "through `azure-monitor-opentelemetry`, authenticated with the managed identity "
            "(`APPLICATIONINSIGHTS_AUTHENTICATION_STRING` `ClientId=…;Authorization=AAD`, else "
            "`AzureWebJobsStorage__clientId`); logs reach the same resource through the Functions host (see "
            "below)"
        ),
        attr="appinsights_connection_string",
        optional=True,
        secret=True,
        shown_default="unset: local logs only",
    ),
    Setting(
        "RELAY_FUNCTION_KEY",
        None,
        "dev host only: require this key on function-level routes (same as `--function-key`)",
        optional=True,
        shown_default="unset: no key locally",
    ),
    Setting(
        "RELAY_AUTH",
        "keys",
        (
            "`keys`: function keys, any key may do everything; `entra`: Microsoft Entra ID principals with app "
            "roles ([entra.md](entra.md))"
        ),
        attr="auth_mode",
        check=lambda text: auth_mode({"RELAY_AUTH": text}),
    ),
    Setting(
        "RELAY_ENTRA_ISSUER",
        None,
        (
            "dev host only, with `RELAY_AUTH=entra`: the token issuer(s) (comma-separated) the dev host accepts "
            "on bearer tokens, playing App Service Authentication"
        ),
        attr="entra_issuer",
        optional=True,
        shown_default="unset",
    ),
    Setting(
        "RELAY_ENTRA_AUDIENCE",
        None,
        (
            "dev host only, with `RELAY_AUTH=entra`: the token audience(s) (comma-separated) the dev host accepts "
            "on bearer tokens"
        ),
        attr="entra_audience",
        optional=True,
        shown_default="unset",
    ),
    Setting(
        "RELAY_ENTRA_JWKS",
        None,
        (
            "dev host only, with `RELAY_AUTH=entra`: the signing keys (an https JWKS URL or a JWKS file) the dev "
            "host checks bearer tokens against"
        ),
        optional=True,
        shown_default="unset",
    ),
    Setting(
        "RELAY_PUBLIC_URL",
        None,
        (
            "scheme and host (optionally a port, no path) every absolute URL the relay writes starts with: "
            "`Location`, `nextLink`, the default event `source`, the definition's `host`. Set it behind a custom "
            "domain, API Management or Front Door, e.g. `https://events.contoso.com`"
        ),
        optional=True,
        shown_default=(
            "unset: `https://` + `WEBSITE_HOSTNAME` in Azure (set by the platform), else the request's own scheme"
            " and host"
        ),
    ),
    Setting(
        "WEBSITE_HOSTNAME",
        None,
        (
            "set by the platform in Azure: the app's default host name, which absolute URLs start with when "
            "`RELAY_PUBLIC_URL` is unset"
        ),
        optional=True,
        shown_default="set by the platform",
    ),
    Setting(
        "RELAY_TOKEN_KEY",
        None,
        (
            "the key (any text of at least 32 characters, e.g. `openssl rand -base64 32`) that signs continuation"
            " tokens and trigger states; set it to keep them under your own key, change it to invalidate every "
            "outstanding one"
        ),
        attr="token_key",
        check=parse_token_key,
        optional=True,
        secret=True,
        shown_default="unset: a random key the relay creates once in its `relaykeys` table, shared by every instance",
    ),
    Setting(
        "RELAY_TOKEN_KEY_PREVIOUS",
        None,
        (
            "the key `RELAY_TOKEN_KEY` replaced: tokens it signed still open, new ones are signed with "
            "`RELAY_TOKEN_KEY` (a rotation that breaks no flow: "
            "[deploy.md](deploy.md#the-token-key-and-its-rotation))"
        ),
        attr="token_key_previous",
        check=lambda text: parse_token_key(text, "RELAY_TOKEN_KEY_PREVIOUS"),
        optional=True,
        secret=True,
        shown_default="unset",
    ),
    Setting(
        "RELAY_DUE_PERIOD",
        "1m",
        (
            "how often the `due` timer moves retries that are due from the `relaydue` table into the delivery "
            "queue, and the shortest delay that waits there instead of as an invisible message: `1s` to `30s` "
            "dividing a minute, or `1m` to `30m` dividing an hour ([scaling.md](scaling.md#the-period))"
        ),
        attr="due_period",
        check=parse_due_period,
        optional=True,
    ),
    Setting("RELAY_DISABLE_AFTER", "5d", DISABLE_AFTER, attr="disable_after", check=parse_disable_after, optional=True),
    Setting(
        "RELAY_ENTRA_TENANT",
        None,
        (
            "with `RELAY_AUTH=entra`: the tenant the served connector definition (`GET /api/openapi.json`) "
            "signs in with "
            "([power-platform.md](power-platform.md#get-apiopenapijson-the-connector-definition-of-the-running-auth-mode))"
        ),
        attr="entra_tenant",
        optional=True,
        shown_default="read from `RELAY_ENTRA_ISSUER`; else that route answers `503`",
    ),
    Setting(
        "RELAY_ENTRA_RESOURCE",
        None,
        (
            "with `RELAY_AUTH=entra`: the Application ID URI the served connector definition "
            "(`GET /api/openapi.json`) signs in with "
            "([power-platform.md](power-platform.md#get-apiopenapijson-the-connector-definition-of-the-running-auth-mode))"
        ),
        attr="entra_resource",
        optional=True,
        shown_default="read from `RELAY_ENTRA_AUDIENCE`; else that route answers `503`",
    ),
)
BY_NAME = {s.name: s for s in DECLARED}
# The app settings the Bicep template sets (tests/test_infra.py compares them both ways).
SETTINGS: tuple[Setting, ...] = tuple(s for s in DECLARED if not s.optional)
# Read when present, never required.
OPTIONAL_SETTINGS: tuple[str, ...] = tuple(s.name for s in DECLARED if s.optional)


def table() -> str:
    """The settings table of docs/settings.md (Markdown), from `DECLARED`."""
    lines = ["| name | meaning | default |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {s.meaning} | {s.default_text} |" for s in DECLARED]
    return "\n".join(lines) + "\n"


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


def declared(name: str) -> Any:
    """A `Settings` field for the declared setting `name`: its alias, default and repr; the check
    runs in `Settings._check`."""
    setting = BY_NAME[name]
    return Field(setting.default, alias=name, validate_default=True, repr=not setting.secret)


class Settings(BaseSettings):
    """One settings object, read by pydantic-settings from the environment (Azure's app
    settings), falling back to `local.settings.json` Values. Each parser raises a
    ConfigurationError naming its setting, so a malformed one stops the app at start."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    storage: Mapping[str, str] = Field(default_factory=dict, repr=False)
    retry_schedule: tuple[float, ...] = declared("RELAY_RETRY_SCHEDULE")
    delivery_timeout: float = declared("RELAY_DELIVERY_TIMEOUT")
    allow_private_targets: bool = declared("RELAY_ALLOW_PRIVATE_TARGETS")
    max_event_bytes: int = declared("RELAY_MAX_EVENT_BYTES")
    event_retention_days: float = declared("RELAY_EVENT_RETENTION_DAYS")
    auth_mode: str = declared("RELAY_AUTH")
    max_batch_bytes: int = declared("RELAY_MAX_BATCH_BYTES")
    attempt_threads: int = declared("RELAY_ATTEMPT_THREADS")
    origin_slots: int = declared("RELAY_ORIGIN_SLOTS")
    appinsights_connection_string: str | None = declared("APPLICATIONINSIGHTS_CONNECTION_STRING")
    # How often the due-retry timer runs; a delay shorter than this stays a queue visibility timeout.
    due_period: float = declared("RELAY_DUE_PERIOD")
    disable_after: float = declared("RELAY_DISABLE_AFTER")
    # Where every absolute URL the relay writes starts (RELAY_PUBLIC_URL, else https:// +
    # WEBSITE_HOSTNAME in Azure); None: the request's own scheme and host (local work).
    public_url: str | None = None
    token_key: str | None = declared("RELAY_TOKEN_KEY")
    token_key_previous: str | None = declared("RELAY_TOKEN_KEY_PREVIOUS")
    entra_tenant: str | None = declared("RELAY_ENTRA_TENANT")
    entra_resource: str | None = declared("RELAY_ENTRA_RESOURCE")
    entra_issuer: str | None = declared("RELAY_ENTRA_ISSUER")
    entra_audience: str | None = declared("RELAY_ENTRA_AUDIENCE")

    @field_validator("*", mode="before")
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        """The declared check of the setting a field holds, on its text (a value built in code passes as is)."""
        alias = cls.model_fields[info.field_name].alias if info.field_name else None
        setting = BY_NAME.get(alias or "")
        if setting is None or setting.check is None or not isinstance(value, str):
            return value
        return setting.check(value)

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


def get_settings() -> Settings:
    """The process's settings, read once per runtime (a part of `relay.core.runtime`);
    `reset_settings` exists for tests and the dev host."""
    return runtime.current().part("settings", Settings.from_environ)


def reset_settings() -> None:
    """Read the environment again at the next `get_settings()` (after a test changed it)."""
    runtime.current().drop("settings")
