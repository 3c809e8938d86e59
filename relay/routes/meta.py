"""Routes anyone may call without a key: health and the connector definition."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import azure.functions as func

from ..api import RETRY_AFTER_SECONDS, Reply, Request, http
from ..connector import definition
from ..errors import ServiceUnavailable
from ..storage import FANOUT_QUEUE, get_storage

log = logging.getLogger("relay.api")
bp = func.Blueprint()


# ---- definition --------------------------------------------------------------------------------


def openapi(request: Request) -> Reply:
    # The scheme and host every absolute URL starts with (RELAY_PUBLIC_URL, else the request's):
    # https in Azure, http on the dev host, where a generated client told https would fail (the
    # committed file says https).
    parts = urlsplit(request.base)
    return Reply(200, definition(parts.netloc, parts.scheme or "https"))


# ---- health ------------------------------------------------------------------------------------


def health(request: Request) -> Reply:
    try:
        get_storage("fast").queue(FANOUT_QUEUE).get_queue_properties()
    except Exception as exc:  # noqa: BLE001 - any failure to reach storage means unhealthy
        log.warning("health: storage unavailable: %s", type(exc).__name__)
        raise ServiceUnavailable("storage does not answer", retry_after=RETRY_AFTER_SECONDS) from None
    return Reply(200, {"status": "ok"})


http(bp, "health", "health", {"GET": health}, anonymous=True)
http(bp, "openapi", "openapi.json", {"GET": openapi}, anonymous=True)
