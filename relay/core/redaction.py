"""URL text fit to leave the process: callback URLs carry credentials (a Power Automate `sig`
starts the flow), so logs, stored rows and answers get these forms of them, never the URL itself."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["MASK", "PATH_TOKEN_CHARS", "mask_path", "mask_url", "redact_url", "scrub"]

# A path segment this long may be a credential: Slack (`/services/T…/B…/<token>`), Microsoft
# Teams and Discord incoming webhooks carry their secret in the path, not the query. Shorter
# segments (`services`, `IncomingWebhook`, `T0123ABCD`) are names people need to tell callbacks
# apart. CONTRACT section 6.
PATH_TOKEN_CHARS = 16


def redact_url(url: str) -> str:
    """The URL fit for logs: its query, fragment, any user name or password and every long path
    segment (a path token) replaced."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    head, tail = url[:cut], url[cut:]
    marker = ""
    if tail.startswith("?"):
        marker = "?…redacted"
    elif tail:
        marker = "#…redacted"
    scheme_end = head.find("://")
    if scheme_end >= 0:
        authority_start = scheme_end + 3
        slash = head.find("/", authority_start)
        authority_end = len(head) if slash < 0 else slash
        at = head.rfind("@", authority_start, authority_end)
        if at >= 0:
            head = head[:authority_start] + "…redacted@" + head[at + 1 :]
    return mask_path(head) + marker


MASK = "***"


def _path_start(url: str) -> int:
    """Where the path of an absolute URL (query and fragment already cut off) begins."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return 0
    slash = url.find("/", scheme_end + 3)
    return len(url) if slash < 0 else slash


def _path_tokens(url: str) -> list[str]:
    """The path segments of `url` long enough to be a credential (`PATH_TOKEN_CHARS`)."""
    base = re.split(r"[?#]", url, maxsplit=1)[0]
    return [segment for segment in base[_path_start(base) :].split("/") if len(segment) >= PATH_TOKEN_CHARS]


def mask_path(url: str) -> str:
    """`url` (without query or fragment) with every path segment of `PATH_TOKEN_CHARS` or more
    characters replaced by `***`."""
    start = _path_start(url)
    segments = url[start:].split("/")
    return url[:start] + "/".join(MASK if len(s) >= PATH_TOKEN_CHARS else s for s in segments)


def mask_url(url: str) -> str:
    """The URL as reads and lists show it after the 201 that created it: every query value (a
    Power Automate `sig` starts the flow), a fragment and a password replaced by `***`, parameter
    names kept so people can still tell callbacks apart. A query part without `=` may itself be a
    token, so it is masked whole."""
    cut = url.find("#")
    head, fragment = (url, None) if cut < 0 else (url[:cut], url[cut + 1 :])
    base, sep, query = head.partition("?")
    scheme_end = base.find("://")
    if scheme_end >= 0:
        start = scheme_end + 3
        slash = base.find("/", start)
        end = len(base) if slash < 0 else slash
        at = base.rfind("@", start, end)
        colon = base.find(":", start, at) if at >= 0 else -1
        if colon >= 0:
            base = base[: colon + 1] + MASK + base[at:]
    base = mask_path(base)
    if sep:
        parts = [p.split("=", 1)[0] + "=" + MASK if "=" in p else (MASK if p else p) for p in query.split("&")]
        base += "?" + "&".join(parts)
    if fragment is not None:
        base += "#" + (MASK if fragment else "")
    return base


def scrub(text: str | None, url: str) -> str | None:
    """`text` (an error, a reason) with every query value and every long path segment of `url`
    masked: what is stored or logged about an attempt must not carry the callback's `sig` or a
    path token, whatever produced the text."""
    if not text:
        return text
    query = urlsplit(url).query
    secrets = [p.split("=", 1)[-1] for p in query.split("&")] + _path_tokens(url)
    for part in sorted(secrets, key=len, reverse=True):
        if len(part) >= 4:  # shorter values (`1`, `true`) are not secrets and are everywhere
            text = text.replace(part, MASK)
    return text
