"""Operator tools: the console (an anonymous page; it calls the API with the operator's own
credentials) and the delivery statistics it shows."""

from __future__ import annotations

import azure.functions as func

from relay.core.errors import invalid
from relay.http import console
from relay.http.access import ADMIN_ONLY
from relay.http.api import ALL_METHODS, Reply, Request, http
from relay.pipeline import stats as stats_mod
from relay.store.storage import get_storage

bp = func.Blueprint()


def get_stats(request: Request) -> Reply:
    window = request.text_param("window") or "1h"
    if window not in stats_mod.WINDOWS:
        raise invalid("window", "must be 1h or 24h")
    return Reply(200, stats_mod.read(get_storage("fast"), window))


http(bp, "stats", "stats", {"GET": (get_stats, ADMIN_ONLY)})


# The console serves its own methods (GET and HEAD): a static page, not the JSON API.
for _name, _path in (("console_page", "console"), ("console_file", "console/{file}")):
    bp.function_name(_name)(
        bp.route(route=_path, methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)(console.serve)
    )
