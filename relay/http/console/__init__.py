"""The operator console: one page and its script and stylesheet, served by the function app.

The files ship in the package next to this module and are read once per process. The page is
anonymous (it holds no data); everything it shows it fetches from the API with the operator's
own credentials. Nothing is loaded from another host, and the Content-Security-Policy says so to
the browser too. Assets are named in the page with a content hash (`app.js?v=…`), so they are
cached for a year and a new release is fetched at once; the page itself is revalidated by ETag.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import azure.functions as func

from relay.core import runtime
from relay.http import problems

HERE = Path(__file__).resolve().parent
# The favicon is served like the others: without it every load of the page asks for a
# /favicon.ico that nothing answers (a 404 in the log and the browser's console).
ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}
PAGE = "index.html"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
LONG_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    body: bytes
    media: str
    etag: str


class _Assets:
    """The page and its assets read from the package once: a part of the runtime."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_name: dict[str, Asset] = {}


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _load() -> dict[str, Asset]:
    assets = runtime.current().part("console.assets", _Assets)
    with assets.lock:
        if not assets.by_name:
            for name, media in ASSETS.items():
                body = (HERE / name).read_bytes()
                assets.by_name[name] = Asset(body, media, _etag(body))
            assets.by_name[PAGE] = Asset((HERE / PAGE).read_bytes(), "text/html", "")
        return assets.by_name


def _page(base: str) -> Asset:
    """The page with its assets' hashed URLs, under the path it was asked for (`/api/console`)."""
    assets = _load()
    text = assets[PAGE].body.decode("utf-8")
    for name in ASSETS:
        text = text.replace("{{" + name + "}}", f"{base}/{name}?v={assets[name].etag.strip(chr(34))[:12]}")
    body = text.encode("utf-8")
    return Asset(body, "text/html", _etag(body))


# Set by the dev host (relay/devhost.py) when it runs without --function-key: it then admits
# any key, and the sign-in page says so instead of asking for a key that nothing checks.
KEYS_UNCHECKED_ENV = "RELAY_DEV_KEYS_UNCHECKED"


def _config() -> bytes:
    """What the page needs to know before signing in: how callers are known (contract §4)."""
    mode = "entra" if (os.environ.get("RELAY_AUTH") or "keys").strip().lower() == "entra" else "keys"
    config: dict[str, object] = {"auth": mode, "loginUrl": "/.auth/login/aad", "logoutUrl": "/.auth/logout"}
    if mode == "keys":
        config["keysChecked"] = os.environ.get(KEYS_UNCHECKED_ENV) != "1"
    return json.dumps(config).encode()


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return problems.respond(status, problems.document(status, title, detail), headers)


def serve(req: func.HttpRequest) -> func.HttpResponse:
    """GET or HEAD `console` (the page) or `console/{file}` (its script, stylesheet, config)."""
    method = req.method.upper()
    if method not in ("GET", "HEAD"):
        return _problem(
            405, "Method not allowed", f"{method} is not allowed here; use GET, HEAD", {"Allow": "GET, HEAD"}
        )
    name = req.route_params.get("file")
    path = urlsplit(req.url).path.rstrip("/")
    if name is None:
        asset, cache = _page(path), "no-cache"
    elif name == "config.json":
        return func.HttpResponse(
            _config(),
            status_code=200,
            mimetype="application/json",
            charset="utf-8",
            headers={"Cache-Control": "no-store", **SECURITY_HEADERS},
        )
    elif name in ASSETS:
        asset = _load()[name]
        cache = LONG_CACHE if req.params.get("v") == asset.etag.strip('"')[:12] else "no-cache"
    else:
        return _problem(404, "Not found", "the console has no such file")
    headers = {"ETag": asset.etag, "Cache-Control": cache, **SECURITY_HEADERS}
    wanted = [t.strip() for t in (req.headers.get("if-none-match") or "").split(",")]
    if asset.etag in wanted or "*" in wanted:
        return func.HttpResponse(b"", status_code=304, headers=headers)
    return func.HttpResponse(asset.body, status_code=200, headers=headers, mimetype=asset.media, charset="utf-8")
