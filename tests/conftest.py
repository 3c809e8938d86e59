"""Real parts for the tests: an Azurite of their own on free ports, the relay run by
`python -m relay dev` as a separate process, and HTTP receivers on loopback. The parts themselves
live in tests/helpers.py; this module holds only the fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from relay.core import runtime
from relay.outbound.sender import Sender
from relay.store import storage
from relay_dev.azurite import Azurite
from tests.helpers import FUNCTION_KEY, FakeResolver, InProcessApp, Received, Receiver, RelayProcess, Reply


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    instance = Azurite()
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def relay_factory(azurite: Azurite) -> Iterator[Callable[..., RelayProcess]]:
    started: list[RelayProcess] = []

    def make(env: dict[str, str] | None = None, function_key: str | None = FUNCTION_KEY) -> RelayProcess:
        relay = RelayProcess(azurite, env or {}, function_key)
        started.append(relay)
        return relay.start()

    yield make
    for relay in started:
        relay.stop()


@pytest.fixture
def relay(relay_factory: Callable[..., RelayProcess]) -> RelayProcess:
    return relay_factory()


@pytest.fixture
def app_storage(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[storage.Storage]:
    """This process's own settings, storage clients, token key and pools (what the app's functions use),
    pointed at this module's Azurite with the dev host's test settings; forgotten again afterwards.
    The pools hold a sender built from the settings of their first use, so they go too."""
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("RELAY_ALLOW_PRIVATE_TARGETS", "true")
    # The settings, storage clients, token key (read from another module's Azurite), caches and
    # pools are all parts of the runtime: a fresh one forgets them.
    runtime.reset()
    yield storage.get_storage()
    runtime.reset()


@pytest.fixture
def app(app_storage: storage.Storage) -> InProcessApp:
    """The function app's HTTP functions, called in this process (no host, no sockets)."""
    return InProcessApp()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(script: Callable[[Received, int], Reply] | None = None) -> Receiver:
        r = Receiver(script)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def unique_type() -> str:
    """An event type no other test uses, so tests sharing one Azurite do not see each other's events."""
    return f"test.{uuid.uuid4().hex[:10]}.happened"


@pytest.fixture
def senders() -> Iterator[Callable[..., Sender]]:
    """Outbound clients allowed to reach loopback, with `hooks.example.test` resolving to it;
    closed afterwards."""
    made: list[Sender] = []

    def make(**kwargs: Any) -> Sender:
        options: dict[str, Any] = {
            "allow_private": True,
            "timeout": 5.0,
            "user_agent": "relay-test/1",
            "resolver": FakeResolver({"hooks.example.test": ["127.0.0.1"]}),
        }
        options.update(kwargs)
        sender = Sender(**options)
        made.append(sender)
        return sender

    yield make
    for sender in made:
        sender.close()
