"""Hostile notification URLs are refused at subscribe by a relay configured as in Azure.

Its own module (and so its own Azurite): a relay that refuses loopback targets must not share
queues with tests whose receivers are on loopback.
"""

from __future__ import annotations

import pytest

from tests.helpers import RelayProcess

HOSTILE_URLS = [
    "http://example.com/hook",  # plain http
    "https://127.0.0.1/hook",
    "https://localhost/hook",
    "https://sub.localhost/hook",
    "https://[::1]/hook",
    "https://0.0.0.0/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://168.63.129.16/machine",
    "https://10.0.0.1/hook",
    "https://172.16.5.4/hook",
    "https://192.168.1.1/hook",
    "https://100.64.0.1/hook",
    "https://[fc00::1]/hook",
    "https://[fe80::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[::ffff:a9fe:a9fe]/hook",
    "https://2130706433/hook",  # 127.0.0.1 as one decimal number
    "https://0177.0.0.1/hook",  # octal
    "https://0x7f.0.0.1/hook",  # hex
    "https://0x7f000001/hook",
    "https://127.1/hook",  # short form
    "https://0xa9.0xfe.0xa9.0xfe/hook",  # metadata address in hex
    "https://224.0.0.1/hook",  # multicast
    "https://255.255.255.255/hook",
    "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of the metadata address
    "https://user:pass@example.com/hook",
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "javascript:alert(1)",
    # Public hosts by `urlsplit`, but not sendable by requests/urllib3 (InvalidURL on every attempt).
    "https://[2606:4700:4700::1111]!?sig=S",
    "https://[2606:4700:4700::1111]x/hook",
    "https://[2606:4700:4700::1111]:443!/hook",
]


@pytest.fixture(scope="module")
def guarded(azurite):
    """A relay as deployed: private targets refused (one for the whole table of URLs)."""
    relay = RelayProcess(azurite, {"RELAY_ALLOW_PRIVATE_TARGETS": "false"}).start()
    yield relay
    relay.stop()


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_hostile_notification_urls_are_refused_at_subscribe(guarded, url) -> None:
    """Each hostile URL is a 400 naming notificationUrl, and nothing is stored."""
    response = guarded.post("subscriptions", {"notificationUrl": url})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == ["notificationUrl"]
    assert guarded.get("subscriptions").json()["value"] == []
