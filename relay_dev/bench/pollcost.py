"""What a poll and a replay of a rare event type cost among many events of other types.

    python -m relay_dev.bench.pollcost [--noise 3000] [--rare 3]

On a private Azurite it writes events through the event log's own write path (as fan-out does),
`--noise` of one type and `--rare` of another, and then measures, counting the rows storage
returns to each query (`CountingStorage`): a poll of the rare type from a state just before
them, a poll from a forged state 300 days old, a poll of `*`, and a replay (`status: all`) of
the rare type. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from relay.core import clock
from relay.core.models import EventRecord, SubscriptionRequest
from relay.pipeline import polling, replay
from relay.store.eventlog import EventLog, position
from relay.store.storage import Endpoints, Storage
from relay.store.subscriptions import SubscriptionStore
from relay_dev.azurite import Azurite


class _CountingTable:
    """A table client that counts the rows its queries return."""

    def __init__(self, inner: Any, counter: dict[str, int]) -> None:
        self._inner, self._counter = inner, counter

    def query_entities(self, *args: Any, **kw: Any) -> Iterator[Any]:
        for row in self._inner.query_entities(*args, **kw):
            self._counter["rows"] += 1
            yield row

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CountingStorage(Storage):
    """Storage whose table queries count the rows they return: the cost of a read path."""

    def __init__(self, connection_string: str) -> None:
        super().__init__(Endpoints(connection_string=connection_string))
        self.counter = {"rows": 0}

    def table(self, name: str) -> Any:
        return _CountingTable(super().table(name), self.counter)

    def reads(self, work: Callable[[], Any]) -> tuple[Any, int]:
        """The result of `work` and the rows its queries returned."""
        before = self.counter["rows"]
        result = work()
        return result, self.counter["rows"] - before


def log_events(storage: Storage, types: list[str], threads: int = 8) -> list[str]:
    """Write events to the event log the way fan-out does; returns their ids in order."""
    log = EventLog(storage)

    def one(event_type: str) -> str:
        now = clock.utcnow()
        record = EventRecord(
            id=uuid.uuid4().hex,
            generated=True,
            type=event_type,
            source="urn:bench",
            time=clock.rfc3339(now),
            data={"t": event_type},
            acceptedAt=clock.rfc3339_precise(now),
        )
        log.record(record, uuid.uuid4().hex, seen_before=False)
        return record.id

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, types))


def measure(storage: CountingStorage, noise: int, rare: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    rare_type, noise_type = f"rare.{tag}.thing", f"noise.{tag}.x"
    started = clock.utcnow() - timedelta(seconds=1)
    types = [noise_type] * noise
    for n in range(rare):
        types[(n + 1) * noise // (rare + 1)] = rare_type
    t0 = time.perf_counter()
    log_events(storage, types)
    write_ms = (time.perf_counter() - t0) * 1000 / len(types)
    now = clock.utcnow() + polling.MARGIN + timedelta(seconds=1)
    out: dict[str, Any] = {"events": len(types), "rare": rare, "log_write_ms_per_event_8_threads": round(write_ms, 2)}

    def timed(name: str, work: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        result, rows = storage.reads(work)
        out[name] = {"rows_read": rows, "ms": round((time.perf_counter() - t) * 1000, 1)}
        return result

    state = polling.PollState(position(started))
    result = timed("poll_rare", lambda: polling.poll(storage, rare_type, state, 7, now=now))
    out["poll_rare"]["returned"] = len(result.events)
    forged = polling.PollState(position(now - timedelta(days=300)))
    timed("poll_forged_old_state_nothing_matches", lambda: polling.poll(storage, f"none.{tag}", forged, 7, now=now))
    result = timed("poll_star", lambda: polling.poll(storage, "*", state, 7, now=now))
    out["poll_star"]["returned"] = len(result.events)
    # A real subscription (the store makes the record replay reads), on a URL nothing calls.
    sub, _ = SubscriptionStore(storage).subscribe(
        SubscriptionRequest(notificationUrl="https://replay-bench.example/hook", eventTypes=[rare_type])
    )
    found = timed("replay_all_rare", lambda: list(replay.replayed_events(storage, sub, started, now)))
    out["replay_all_rare"]["returned"] = len(found)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=int, default=3000)
    parser.add_argument("--rare", type=int, default=3)
    args = parser.parse_args(argv)
    azurite = Azurite()
    azurite.start()
    try:
        storage = CountingStorage(azurite.connection_string)
        storage.ensure()
        print(json.dumps(measure(storage, args.noise, args.rare), indent=2))
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
