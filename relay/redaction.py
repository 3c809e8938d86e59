"""URL text fit to leave the process: callback URLs carry credentials (a Power Automate `sig`
starts the flow), so logs, stored rows and answers get these forms of them, never the URL itself."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["MASK", "mask_url", "redact_url", "scrub"]


def redact_url(url: str) -> str:
    """The URL fit for logs: its query, fragment and any user name or password replaced."""
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
    return head + marker


MASK = "***"


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
    if sep:
        parts = [p.split("=", 1)[0] + "=" + MASK if "=" in p else (MASK if p else p) for p in query.split("&")]
        base += "?" + "&".join(parts)
    if fragment is not None:
        base += "#" + (MASK if fragment else "")
    return base


def scrub(text: str | None, url: str) -> str | None:
    """`text` (an error, a reason) with every query value of `url` masked: what is stored or
    logged about an attempt must not carry the callback's `sig`, whatever produced the text."""
    if not text:
        return text
    query = urlsplit(url).query
    for part in sorted((p.split("=", 1)[-1] for p in query.split("&")), key=len, reverse=True):
        if len(part) >= 4:  # shorter values (`1`, `true`) are not secrets and are everywhere
            text = text.replace(part, MASK)
    return text
