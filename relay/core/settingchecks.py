"""The checks of the relay's settings: each turns a setting's text into its value or raises a
ConfigurationError naming the setting (`relay.core.settings.DECLARED` names them per setting)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from relay.core.errors import ConfigurationError

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


DISABLE_AFTER_DEFAULT = "5d"
# RELAY_DISABLE_AFTER's line of the settings table (relay.core.settings.DECLARED).
DISABLE_AFTER = (
    "how long every delivery to a subscription may fail before the relay disables it, holds its pending "
    "work and publishes `relay.subscription.disabled` "
    "([api.md](api.md#subscriptions-that-disable-themselves)); "
    "the retry schedule's units plus `d` (`5d`, `12h`, `30m`)"
)
_SPAN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")


def parse_disable_after(text: str) -> float:
    """RELAY_DISABLE_AFTER (`5d`, `12h`, `30s`) in seconds; more than zero."""
    match = _SPAN.fullmatch(text or DISABLE_AFTER_DEFAULT)
    seconds = float(match.group(1)) * {**_UNITS, "d": 86400.0}[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ConfigurationError(f"RELAY_DISABLE_AFTER: {text.strip()!r} is not a duration such as 5d, 12h, 30m or 45s")
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


def positive_number(name: str) -> Callable[[str], float]:
    return lambda text: _positive(name, text)


def positive_whole(name: str) -> Callable[[str], int]:
    return lambda text: int(_positive(name, text, int))


def boolean(name: str) -> Callable[[str], bool]:
    return lambda text: _bool(name, text)


def counting(name: str) -> Callable[[str], int]:
    return lambda text: _count(name, text)
