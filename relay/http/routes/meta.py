"""Routes anyone may call without a key: health, the connector definition and the full API document."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import azure.functions as func

from relay.core.errors import ServiceUnavailable
from relay.core.settings import Settings, get_settings
from relay.http.access import ANYONE
from relay.http.api import RETRY_AFTER_SECONDS, Reply, Request, http
from relay.http.connector import EntraSignIn, definition
from relay.http.connector.full import full_document
from relay.store.storage import FANOUT_QUEUE, get_storage

log = logging.getLogger("relay.api")
bp = func.Blueprint()


# ---- definitions -------------------------------------------------------------------------------


def entra_sign_in(settings: Settings) -> EntraSignIn | None:
    """What the served definition signs in with under RELAY_AUTH=entra: the tenant from
    RELAY_ENTRA_TENANT, else the tenant segment of RELAY_ENTRA_ISSUER; the Application ID URI from
    RELAY_ENTRA_RESOURCE, else the first api:// value of RELAY_ENTRA_AUDIENCE (else its first).
    None when either cannot be found. The connector's client id lives in apiProperties.json,
    which the relay does not serve, so it needs no setting."""
    tenant = (settings.entra_tenant or "").strip()
    if not tenant:
        for issuer in (settings.entra_issuer or "").split(","):
            parts = urlsplit(issuer.strip())
            segments = [s for s in parts.path.split("/") if s]
            if parts.hostname in ("login.microsoftonline.com", "sts.windows.net") and segments:
                tenant = segments[0]
                break
    resource = (settings.entra_resource or "").strip()
    if not resource:
        audiences = [a.strip() for a in (settings.entra_audience or "").split(",") if a.strip()]
        resource = next((a for a in audiences if a.startswith("api://")), audiences[0] if audiences else "")
    return EntraSignIn(resource=resource, tenant=tenant) if tenant and resource else None


def _public(request: Request) -> tuple[str, str]:
    # The scheme and host every absolute URL starts with (RELAY_PUBLIC_URL, else the request's):
    # https in Azure, http on the dev host, where a generated client told https would fail (the
    # committed file says https).
    parts = urlsplit(request.base)
    return parts.netloc, parts.scheme or "https"


def openapi(request: Request) -> Reply:
    """The connector definition of the running auth mode: the function key, or (RELAY_AUTH=entra)
    OAuth 2.0 with Entra ID, as `python -m relay connector --auth entra` writes it."""
    host, scheme = _public(request)
    settings = get_settings()
    entra = None
    if settings.auth_mode == "entra":
        entra = entra_sign_in(settings)
        if entra is None:
            log.warning("openapi.json: RELAY_AUTH=entra without RELAY_ENTRA_TENANT and RELAY_ENTRA_RESOURCE")
            raise ServiceUnavailable(
                "the definition for Entra ID sign-in needs the settings RELAY_ENTRA_TENANT and RELAY_ENTRA_RESOURCE",
                retry_after=RETRY_AFTER_SECONDS,
            )
    return Reply(200, definition(host, scheme, entra=entra))


def openapi_full(request: Request) -> Reply:
    """Every route of the API as an OpenAPI document, for clients and for fuzzing the relay."""
    host, scheme = _public(request)
    return Reply(200, full_document(f"{scheme}://{host}", get_settings().auth_mode))


# ---- health ------------------------------------------------------------------------------------


def health(request: Request) -> Reply:
    try:
        get_storage("fast").queue(FANOUT_QUEUE).get_queue_properties()
    except Exception as exc:  # noqa: BLE001 - any failure to reach storage means unhealthy
        log.warning("health: storage unavailable: %s", type(exc).__name__)
        raise ServiceUnavailable("storage does not answer", retry_after=RETRY_AFTER_SECONDS) from None
    return Reply(200, {"status": "ok"})


http(bp, "health", "health", {"GET": (health, ANYONE)}, anonymous=True)
http(bp, "openapi", "openapi.json", {"GET": (openapi, ANYONE)}, anonymous=True)
http(bp, "openapi_full", "openapi/full.json", {"GET": (openapi_full, ANYONE)}, anonymous=True)
