"""Real parts for the tests: an Azurite of their own on free ports, the relay run by
`python -m relay dev` as a separate process, and HTTP receivers on loopback. The parts themselves
live in tests/helpers.py; this module holds the fixtures and sorts every test into its tier
(docs/testing.md): the tier follows from what a test uses, so a new test needs no marker."""

from __future__ import annotations

import shutil
import time
import types
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from relay.core import runtime
from relay.outbound.sender import Sender
from relay.store import storage
from relay_dev.azurite import Azurite, connection_string
from tests import helpers
from tests.helpers import FUNCTION_KEY, FakeResolver, InProcessApp, Received, Receiver, RelayProcess, Reply

# ---- tiers -------------------------------------------------------------------------------------

# The three tiers, by what a test needs; each test has exactly one of them.
TIERS = ("unit", "inprocess", "devhost")
# A fixture (or the test itself) naming one of these starts a process: the dev host or a command.
PROCESS_NAMES = frozenset({"RelayProcess", "relay_factory", "subprocess"})
# Fixtures that start a process although their own code does not say so.
PROCESS_FIXTURES = frozenset({"relay", "relay_factory", "tiny_run"})
# A test that reads the clock (or times a request, tests/test_bounds.py) holds the code to a time bound,
# which a neighbour's CPU use can break: it is "serial" too.
CLOCK_NAMES = frozenset({"monotonic", "perf_counter", "timed_post"})
# Extra markers that cannot be read from the fixtures, by file or by test (a name prefix). "slow" keeps
# a test out of `make test-fast`. "serial"
# runs alone after the parallel part of `make test`: these measure time (a p95, a deadline, a timer's
# period, a slow client's timeout) and a neighbour's CPU use would make them flaky.
EXPLICIT: dict[str, tuple[str, ...]] = {
    "tests/test_console.py": ("browser",),
    "tests/test_scale_out.py": ("scaleout", "slow", "serial"),
    # In-process tests that wait out leases, visibility timeouts and the like (half a minute each).
    "tests/test_consistency.py::test_the_store_leaves_no_index_row_without": ("slow",),
    "tests/test_held.py::test_items_beyond_the_room": ("slow",),
    "tests/test_held.py::test_work_items_are_delivered_with_no_delivery_trigger": ("slow",),
    "tests/test_kick.py::test_the_lease_holds_the_message_while_a_slow_kick": ("slow",),
    "tests/test_bounds2.py::test_compiled_validators_are_kept_in_a_bounded_cache": ("slow",),
    # In-process fairness scenarios: seconds of deliveries to receivers that hang or answer slowly.
    "tests/test_fairness.py::test_dead_origin_holds_only_its_slots": ("slow",),
    "tests/test_fairness2.py::test_a_thousand_targets_on_a_busy_origin": ("slow",),
    "tests/test_fairness2.py::test_a_replay_storm_leaves_room": ("slow",),
    # Static checks over every module of the package, in fresh interpreters (half a minute of CPU).
    "tests/test_deploy.py::test_every_import_of_the_deployed_code": ("slow",),
    "tests/test_deploy.py::test_the_import_check_finds": ("slow",),
    "tests/test_durability.py::": ("slow",),  # SIGKILLs and fifty events to twenty receivers
    "tests/test_hardening.py::test_three_sigkills": ("slow",),
    "tests/test_held.py::test_sigkill": ("slow",),
    "tests/test_kick.py::test_a_sigkill": ("slow",),
    "tests/test_due_queue.py::test_a_thousand_retries": ("slow", "serial"),
    "tests/test_due_queue.py::test_a_retry_left_in_the_queue": ("serial",),
    "tests/test_trust2.py::test_half_open_and_trickling": ("serial",),
    "tests/test_fairness2.py::test_healthy_receiver_p95": ("serial",),
    "tests/test_bench.py::test_bench_": ("benchmark", "serial"),
    "tests/test_bench.py::test_no_table_query_of_the_run": ("benchmark", "serial"),
}


STARTED = pytest.StashKey[float]()


def _names(code: types.CodeType) -> Iterable[str]:
    """The global and attribute names a function's code uses, nested functions and lambdas included."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _starts_a_process(item: pytest.Function) -> bool:
    info = item._fixtureinfo  # the fixture closure pytest resolved for this test
    if PROCESS_FIXTURES & set(info.names_closure):
        return True
    functions = [item.function] + [d.func for defs in info.name2fixturedefs.values() for d in defs]
    return any(PROCESS_NAMES & set(_names(f.__code__)) for f in functions if hasattr(f, "__code__"))


def tier_of(item: pytest.Function) -> str:
    if _starts_a_process(item):
        return "devhost"
    if "azurite" in item._fixtureinfo.names_closure:  # the app's code in this process on a real Azurite
        return "inprocess"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        assert isinstance(item, pytest.Function)
        item.add_marker(tier_of(item))
        if CLOCK_NAMES & set(_names(item.function.__code__)):
            item.add_marker("serial")
        for prefix, markers in EXPLICIT.items():
            if item.nodeid.startswith(prefix):
                for marker in markers:
                    item.add_marker(marker)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture of this test starts: a dev host started by a test not in the devhost tier
    # fails it (tests/helpers.py), so `make test-fast` never starts one by a misfiled test.
    helpers.running_tier = next((m.name for m in item.iter_markers() if m.name in TIERS), None)
    item.stash[STARTED] = time.time()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    # The dev hosts' logs are deleted at the end of the session, so a failure keeps in its report the
    # end of each log written to while the test ran (a module's dev host started earlier too).
    since = item.stash.get(STARTED, 0.0)
    if report.failed and helpers.log_dir is not None:
        for path in sorted(helpers.log_dir.glob("*.log")):
            if path.stat().st_mtime >= since:
                report.sections.append((f"{path.name} ({call.when})", path.read_text(errors="replace")[-4000:]))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if helpers.log_dir is not None:
        shutil.rmtree(helpers.log_dir, ignore_errors=True)


class AzuriteAccount:
    """One storage account of a shared Azurite: its tables, queues and blobs are its own, as if it
    were an Azurite of its own, but it costs no start (five seconds of node on a busy machine)."""

    def __init__(self, server: Azurite, account: str) -> None:
        self.server = server
        self.account = account
        self.ports = server.ports

    @property
    def connection_string(self) -> str:
        return connection_string(self.ports, self.account)


class AzuritePool:
    """This process's Azurites (an xdist worker is a process, so each worker has its own on its own
    free ports), each declaring ACCOUNTS accounts handed out one per test module."""

    ACCOUNTS = 64

    def __init__(self) -> None:
        self.servers: list[Azurite] = []
        self.given = self.ACCOUNTS

    def account(self) -> AzuriteAccount:
        if self.given == self.ACCOUNTS:
            names = tuple(f"relaytest{n:03d}" for n in range(self.ACCOUNTS))
            server = Azurite(accounts=names)
            server.start()
            self.servers.append(server)
            self.given = 0
        self.given += 1
        return AzuriteAccount(self.servers[-1], self.servers[-1].accounts[self.given - 1])

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="session")
def azurite_pool() -> Iterator[AzuritePool]:
    pool = AzuritePool()
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def azurite(azurite_pool: AzuritePool) -> AzuriteAccount:
    """A storage account of this module's own (an empty Azurite, as far as the module can tell)."""
    return azurite_pool.account()


@pytest.fixture
def relay_factory(
    azurite: AzuriteAccount, receiver_factory: Callable[..., Receiver]
) -> Iterator[Callable[..., RelayProcess]]:
    # receiver_factory is set up first so that it is torn down last: a dev host still retrying
    # deliveries while it stops must find its receivers' ports still held, not free for a parallel
    # test's receiver to take and be sent this test's events.
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
def app_storage(azurite: AzuriteAccount, monkeypatch: pytest.MonkeyPatch) -> Iterator[storage.Storage]:
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


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test (helpers.refused_ports)."""
    with helpers.refused_ports() as ports:
        yield ports[0]
