"""The address guard: whether a notification URL may be called, and at which checked address.

Notification URLs come from strangers, so a URL is judged twice: when it is subscribed, and
again before every attempt (`relay.outbound.sender.Sender` connects to exactly the address judged
here, so DNS rebinding between the check and the connect cannot reach a private address).

This module does no HTTP. It parses URLs with the sender's own parser as well as `urlsplit`
(so the host judged is the host connected to), resolves names through a `Resolver`, and raises
`TargetRefused` with a short reason that never quotes the URL's query.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias
from urllib.parse import urlsplit

import requests
import urllib3.exceptions as u3
from urllib3.util import parse_url

from relay.core.errors import TargetRefused
from relay.core.limits import MAX_URL_LENGTH

__all__ = [
    "DEFAULT_PORTS",
    "MAX_URL_LENGTH",
    "IPAddress",
    "Origin",
    "Resolver",
    "Target",
    "Unresolvable",
    "bracketed",
    "check_target",
    "inspect_target",
    "is_public_address",
    "origin_of",
    "parse_host_literal",
    "request_target",
    "system_resolver",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

# (host, port) -> IP address strings, in the order to try them.
Resolver: TypeAlias = Callable[[str, int], list[str]]


DEFAULT_PORTS = {"http": 80, "https": 443}

# Address ranges refused on top of what `ipaddress` calls non-global, spelled out so the list
# does not shift with the Python version's idea of "private".
_DENIED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; connecting to 0.0.0.0 reaches the local host
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, including the instance metadata service 169.254.169.254
        "168.63.129.16/32",  # Azure platform address: DNS, health probes, WireServer
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",  # documentation
        "198.18.0.0/15",  # benchmarking
        "192.88.99.0/24",  # former 6to4 relay anycast
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, including the broadcast address
    )
)
_DENIED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, including Teredo 2001::/32
        "2001:db8::/32",
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]*")
_DNS_NAME = re.compile(
    r"(?=.{1,253}\.?\Z)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"
)
# One part of an IPv4 address as inet_aton reads it: hex, octal (leading 0) or decimal.
_V4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
# WHATWG: a host whose last label is a number is meant as an IPv4 address, valid or not.
_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")


# ---- address checks (no I/O) --------------------------------------------------------------------


def parse_host_literal(host: str) -> IPAddress | None:
    """The IP address a URL host spells, in any form a resolver or inet_aton accepts; None for a name.

    Besides dotted decimal and IPv6 (bracketed or not) this reads the forms inet_aton still
    accepts, which resolvers hand to it before ever asking DNS: `2130706433`, `0x7f000001`,
    `0177.0.0.1`, `0x7f.0.0.1`, `127.1`, `127.0.1`, and mixtures.
    """
    text = host
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if ":" not in text:
            return None
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _parse_ipv4_loosely(text)


def _parse_ipv4_loosely(text: str) -> ipaddress.IPv4Address | None:
    if text.endswith("."):
        # "127.0.0.1." still means 127.0.0.1 to a browser-style parser; reading it as an address
        # is the cautious side.
        text = text[:-1]
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.fullmatch(p) for p in parts):
        return None
    values = [_v4_part_value(p) for p in parts]
    *leading, last = values
    # Each leading part is one byte; the last one fills every byte that remains.
    if any(v > 0xFF for v in leading) or last >= 256 ** (5 - len(values)):
        return None
    number = last
    for index, value in enumerate(leading):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _v4_part_value(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part)


def is_public_address(ip: IPAddress) -> bool:
    """True only for an ordinary, globally routed unicast address a webhook may be sent to."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            # Mapped, 6to4 and NAT64 addresses lead to the IPv4 address inside them.
            return is_public_address(embedded)
        if any(ip in net for net in _DENIED_V6):
            return False
    elif any(ip in net for net in _DENIED_V4):
        return False
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


# ---- resolution and the target check ------------------------------------------------------------

# getaddrinfo errors that mean "this name has no address", as opposed to "DNS is unwell".
_NO_SUCH_NAME = {
    code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None)) if code is not None
}


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver; [] when the name does not exist.

    Other resolver failures (a DNS outage) raise `OSError`, so they can be retried later.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        if exc.errno in _NO_SUCH_NAME:
            return []
        raise
    addresses: list[str] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    return addresses


@dataclass(frozen=True)
class Target:
    """A URL that passed the guard, and the one address it may be reached at."""

    url: str
    scheme: str
    host: str  # as in the URL, lower-cased, without IPv6 brackets
    port: int
    address: str  # the IP to connect to


class Unresolvable(Exception):
    """The resolver failed (rather than answering "no such name"); callers decide what that means."""


def check_target(url: str, *, allow_private: bool, resolver: Resolver = system_resolver) -> Target:
    """Judge a notification URL; raises `TargetRefused` with a short reason, or returns where to connect.

    Without `allow_private` only https is accepted and every address the host resolves to must be
    public. With it (local work only) http and non-public addresses are fine too.
    """
    try:
        target, _addresses = inspect_target(url, allow_private, resolver)
    except Unresolvable:
        raise TargetRefused("the host name could not be resolved right now") from None
    return target


def inspect_target(url: str, allow_private: bool, resolver: Resolver) -> tuple[Target, tuple[str, ...]]:
    """Everything `check_target` does, also returning every acceptable address in resolver order.

    The URL's own judgment (its syntax, scheme, host and port, an IP literal's range) depends on
    the URL alone and is remembered per URL (`_judged`); only a host name is looked up again on
    every call, since what a name points at can change between two attempts.
    """
    scheme, host, port, literal = _judged(url, allow_private)
    if literal is not None:
        found: list[IPAddress] = [literal]
    else:
        try:
            answers = resolver(host, port)
        except OSError as exc:
            raise Unresolvable(host) from exc
        if not answers:
            raise TargetRefused("the host name does not resolve to any address")
        found = []
        for answer in answers:
            try:
                found.append(ipaddress.ip_address(answer))
            except ValueError:
                raise TargetRefused("the host name resolved to something that is not an IP address") from None
        if not allow_private and not all(is_public_address(ip) for ip in found):
            raise TargetRefused("the host name resolves to an address that is not public")
    addresses = tuple(dict.fromkeys(_dialable(ip) for ip in found))
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0]), addresses


# URLs whose judgment is remembered: every attempt judges its URL again, and parsing it with two
# parsers was a few per cent of the CPU of a delivery in the benchmark's profile. A refusal is
# not remembered (lru_cache keeps no exceptions); a refused URL is rarely attempted again. The
# memory it holds is bounded: 4096 URLs of a few hundred characters (callback URLs) are about
# 2 MB, and even at MAX_URL_LENGTH each, 64 MB. It stays a module memo, not a part of the
# runtime (relay.core.runtime): a pure function of its arguments, no I/O, no settings, no thread,
# so nothing in it can go stale or need closing.
JUDGED_URLS = 4096


@lru_cache(maxsize=JUDGED_URLS)
def _judged(url: str, allow_private: bool) -> tuple[str, str, int, IPAddress | None]:
    """(scheme, host, port, the IP literal or None for a name) of a URL that may be called, as far
    as the URL alone tells; raises `TargetRefused` otherwise. No I/O."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if not _PRINTABLE_ASCII.fullmatch(url):
        # Anything else would have to be re-encoded before sending, and then the request would not
        # be the one the subscriber wrote (or signed).
        raise TargetRefused(
            "the URL must be printable ASCII: percent-encode the path and query, "
            "and write international host names in punycode"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("the URL could not be parsed (check the host and port)") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise TargetRefused("the URL scheme must be " + " or ".join(schemes))
    if not url[len(parts.scheme) :].startswith("://"):
        raise TargetRefused("the URL must start with " + parts.scheme + "://")
    if "@" in parts.netloc:
        raise TargetRefused("the URL must not contain a user name or password")
    host = parts.hostname
    if not host:
        raise TargetRefused("the URL has no host")
    if port == 0:
        raise TargetRefused("the URL's port must not be 0")
    port = port or DEFAULT_PORTS[parts.scheme]
    _check_sendable(url, host, port, parts.scheme)

    literal = parse_host_literal(host)
    if parts.netloc.startswith("[") and not isinstance(literal, ipaddress.IPv6Address):
        raise TargetRefused("the URL's bracketed host is not an IPv6 address")
    if literal is not None:
        if isinstance(literal, ipaddress.IPv6Address) and literal.scope_id:
            raise TargetRefused("IPv6 zone identifiers are not supported")
        if not allow_private and not is_public_address(literal):
            raise TargetRefused("the address is not public")
    else:
        if not _DNS_NAME.fullmatch(host) or _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
            raise TargetRefused("the URL's host is neither a valid host name nor a valid IP address")
        if not allow_private and (host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost")):
            raise TargetRefused("the host name refers to this machine")
    return parts.scheme, host, port, literal


def _check_sendable(url: str, host: str, port: int, scheme: str) -> None:
    """Refuse a URL the sender's own parser (requests' prepare, urllib3's parse_url) cannot send,
    or reads with another host or port than `urlsplit` did.

    `urlsplit` is lenient: `https://[2606:4700:4700::1111]!/` has a host for it, while requests
    raises `InvalidURL` on every attempt. Judging with the parser that sends means a URL that
    passes here can be sent, and the host checked is the host connected to.
    """
    try:
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        sent = parse_url(prepared.url or "")
    except (requests.RequestException, u3.LocationParseError, ValueError):
        # The exception texts quote the URL (and its query): only our own words go out.
        raise TargetRefused("the URL could not be parsed (check the host and port)") from None
    sent_host = (sent.host or "").lower()
    if sent_host.startswith("[") and sent_host.endswith("]"):
        sent_host = sent_host[1:-1]
    if sent.scheme != scheme or sent_host != host or (sent.port or DEFAULT_PORTS[scheme]) != port:
        raise TargetRefused("the URL's host or port is ambiguous (URL parsers disagree about it)")


def _dialable(ip: IPAddress) -> str:
    # An IPv4-mapped address is an IPv4 destination; dialing it as such works without dual-stack.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def request_target(url: str) -> str:
    """The path and query exactly as written in the URL (only the fragment, never sent, is dropped)."""
    parts = urlsplit(url)
    rest = url[len(parts.scheme) + 3 + len(parts.netloc) :]
    rest = rest.split("#", 1)[0]
    return rest if rest.startswith("/") else "/" + rest


def bracketed(host: str) -> str:
    """The host as it goes into a Host header or a message: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


Origin: TypeAlias = tuple[str, str, int]  # (scheme, host, port), the unit of fairness


def origin_of(url: str) -> Origin | None:
    """The URL's (scheme, host, port); None when it does not parse (the guard refuses it with a reason)."""
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None
    return parts.scheme, host, port or DEFAULT_PORTS.get(parts.scheme, 0)
