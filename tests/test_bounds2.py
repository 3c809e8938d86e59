"""Validation and the event-type catalogue bounded in CPU and memory, not only in time (issue 18
items 5 and 6, issue 19 item 14): RE2's slow path, a paged and bounded catalogue, compiled
validators in a bounded cache. CPU and memory are those of the dev host process (/proc)."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.helpers import InProcessApp, problem_of

BOUND = 2.0  # the contract: a publish is answered within 2 s of its body arriving
# Forces RE2 off its DFA: matching it costs about its program size (1,006) per byte of text.
SLOW_PATTERN = "a[ab]{1000}c"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (/proc/PID/stat, clock ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def ab_text(length: int, seed: int) -> str:
    """Text of a and b with no 'c': the pattern never matches, so RE2 reads all of it."""
    import random

    rnd = random.Random(seed)
    return "".join(rnd.choice("ab") for _ in range(length))


# ---- item 5: RE2's slow path --------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_patterns_on_a_mebibyte_of_strings_cost_little_cpu_and_answer_within_2s(relay, unique_type: str) -> None:
    """A schema whose `pattern` keeps RE2 off its fast path, applied to 32 strings of 30,000
    characters (about 1 MiB): a publish is answered 400 naming `data` within 2 s, and four such
    publishes at once cost the relay process little CPU (before: about 6 s of CPU per publish
    here, 17 s on the reviewer's machine, each answered 400 only at the end). The wall-time bound
    is asserted on publishes one at a time: four at once on this loaded 2-core machine wait for
    each other's JSON parsing, whatever the schema."""
    schema = {"type": "array", "items": {"type": "string", "pattern": SLOW_PATTERN}}
    put = relay.session.put(f"{relay.base}/event-types/{unique_type}", json={"schema": schema}, timeout=30)
    assert put.status_code in (200, 201), put.text
    strings = [ab_text(30_000, seed) for seed in range(32)]
    body = json.dumps({"type": unique_type, "data": strings}).encode()
    pid = relay.proc.pid

    def publish(_: int) -> tuple[requests.Response, float]:
        started = time.monotonic()
        response = relay.session.post(
            f"{relay.base}/events", data=body, headers={"Content-Type": "application/json"}, timeout=120
        )
        return response, time.monotonic() - started

    publish(0)  # warm: the type is read and its validator compiled once
    for _ in range(3):
        response, elapsed = publish(0)
        problem_of(response, 400, "data")
        assert elapsed < BOUND, elapsed
    cpu_before = cpu_seconds(pid)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(publish, range(4)))
    cpu = cpu_seconds(pid) - cpu_before
    for response, _ in answers:
        problem_of(response, 400, "data")
    # Parsing and checking 4 MiB of JSON is real work; matching it against the pattern must not be.
    assert cpu < 2.0, cpu


def test_pattern_count_and_size_are_bounded_at_registration(app: InProcessApp, unique_type: str) -> None:
    from relay.core.schemabounds import MAX_PATTERN_CHARS, MAX_PATTERNS

    many = {"type": "object", "properties": {f"p{i}": {"pattern": f"^x{i}$"} for i in range(MAX_PATTERNS + 1)}}
    problem_of(app.put(f"event-types/{unique_type}", {"schema": many}), 400, "schema")
    long = {"type": "string", "pattern": "a" * (MAX_PATTERN_CHARS + 1)}
    problem_of(app.put(f"event-types/{unique_type}", {"schema": long}), 400, "schema.pattern")
    costly = {"type": "string", "pattern": "a[ab]{1000}c[ab]{1000}d[ab]{1000}e"}  # short, but a huge RE2 program
    problem_of(app.put(f"event-types/{unique_type}", {"schema": costly}), 400, "schema.pattern")
    fine = {"type": "object", "patternProperties": {"^p[0-9]+$": {"type": "string", "pattern": "^[a-z]+$"}}}
    assert app.put(f"event-types/{unique_type}", {"schema": fine}).status_code in (200, 201)
    assert app.post("events", {"type": unique_type, "data": {"p1": "abc"}}).status_code == 202
    problem_of(app.post("events", {"type": unique_type, "data": {"p1": "ABC"}}), 400, "data.p1")


# ---- item 6: the catalogue ------------------------------------------------------------------------


def big_schema(n: int, size: int = 29_000) -> dict[str, Any]:
    """An object schema of about `size` characters of JSON (the largest the relay accepts is 30,000)."""
    props: dict[str, Any] = {}
    schema: dict[str, Any] = {"type": "object", "properties": props}
    i = 0
    while len(json.dumps(schema, separators=(",", ":"))) < size - 120:
        props[f"field{n}_{i}"] = {"type": "string", "maxLength": 64, "description": "d" * 40}
        i += 1
    return schema


def follow(app: InProcessApp, first: str) -> list[list[dict[str, Any]]]:
    pages, path = [], first
    while True:
        answer = app.get(path)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body["value"])
        if "nextLink" not in body:
            return pages
        link = urlsplit(body["nextLink"])
        assert link.path.startswith("/api/event-types")
        path = link.path.removeprefix("/api/") + "?" + link.query


def test_the_catalogue_is_paged_by_count_and_by_bytes(
    app: InProcessApp, unique_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relay.store import eventtypes

    names = [f"{unique_type}.{i:02d}" for i in range(12)]
    for i, name in enumerate(names):
        assert app.put(f"event-types/{name}", {"schema": big_schema(i), "description": "d"}).status_code == 201
    pages = follow(app, "event-types?limit=5")
    assert all(len(page) <= 5 for page in pages)
    listed = [t["name"] for page in pages for t in page]
    assert len(listed) == len(set(listed)) and set(names) <= set(listed)
    assert all(t.get("schema") for t in (t for page in pages for t in page) if t["name"] in names)

    monkeypatch.setattr(eventtypes, "PAGE_BYTES", 100_000)  # about three of these schemas
    pages = follow(app, "event-types")
    assert all(len(json.dumps(page)) < 100_000 + 31_000 for page in pages)
    listed = [t["name"] for page in pages for t in page]
    assert len(listed) == len(set(listed)) and set(names) <= set(listed)

    problem_of(app.get("event-types?limit=0"), 400, "limit")
    problem_of(app.get("event-types?continuationToken=garbage"), 400, "continuationToken")


def test_the_catalogue_is_bounded_in_count_and_schema_size(
    app: InProcessApp, unique_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relay.store import eventtypes

    present = sum(len(page) for page in follow(app, "event-types?limit=1000"))
    monkeypatch.setattr(eventtypes, "MAX_EVENT_TYPES", present + 2)
    assert app.put(f"event-types/{unique_type}.a", {"description": "a"}).status_code == 201
    assert app.put(f"event-types/{unique_type}.b", {"description": "b"}).status_code == 201
    full = app.put(f"event-types/{unique_type}.c", {"description": "c"})
    assert full.status_code == 409, full.text
    problem_of(full, 409, "name")
    assert app.put(f"event-types/{unique_type}.a", {"description": "changed"}).status_code == 200  # not a new one
    assert app.delete(f"event-types/{unique_type}.a").status_code == 200
    assert app.put(f"event-types/{unique_type}.c", {"description": "c"}).status_code == 201  # room again
    too_big = {"type": "object", "description": "x" * 31_000}
    problem_of(app.put(f"event-types/{unique_type}.d", {"schema": too_big}), 400, "schema")


def test_compiled_validators_are_kept_in_a_bounded_cache(app: InProcessApp, unique_type: str) -> None:
    from relay.store import eventtypes

    for i in range(eventtypes.VALIDATORS_KEPT + 10):
        name = f"{unique_type}.{i}"
        schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": i}}}
        assert app.put(f"event-types/{name}", {"schema": schema}).status_code == 201
        assert app.post("events", {"type": name, "data": {"n": i}}).status_code == 202
        problem_of(app.post("events", {"type": name, "data": {"n": i - 1}}), 400, "data.n")
    assert eventtypes.validators_kept() <= eventtypes.VALIDATORS_KEPT
    assert eventtypes.types_kept() <= eventtypes.TYPES_KEPT


@pytest.mark.timeout(600)
def test_schema_writes_beside_publishers_keep_memory_and_answers_bounded(relay, unique_type: str) -> None:
    """300 types with 29 KB schemas written over and over for 20 s while four publishers publish
    events of those types: the dev host's RSS grows by less than 60 MB (before: +163 MB here, and
    75 MB to 721 MB with 600 types on the reviewer's machine), and GET /api/event-types answers a
    page of at most about 1 MiB with a nextLink, not the whole 9 MB catalogue."""
    pid = relay.proc.pid
    schemas = [big_schema(i) for i in range(300)]
    names = [f"{unique_type}.{i:03d}" for i in range(300)]
    session = requests.Session()
    session.headers.update(relay.session.headers)

    def put(i: int) -> None:
        answer = session.put(f"{relay.base}/event-types/{names[i]}", json={"schema": schemas[i]}, timeout=60)
        assert answer.status_code in (200, 201), answer.text

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(300)))
    relay.publish({"type": names[0], "data": {}})
    baseline = rss_mb(pid)
    stop = threading.Event()
    errors: list[str] = []

    def writer(offset: int) -> None:
        i = offset
        while not stop.is_set():
            try:
                put(i % 300)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))
            i += 7

    def publisher(offset: int) -> None:
        i = offset
        while not stop.is_set():
            answer = session.post(
                f"{relay.base}/events", json={"type": names[i % 300], "data": {f"field{i % 300}_0": "x"}}, timeout=60
            )
            if answer.status_code != 202:
                errors.append(answer.text[:200])
            i += 13

    peak = baseline
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=publisher, args=(n * 50,)) for n in range(4)]
    # Memory, not time, is what this test bounds: a loaded machine writes less in the 20 s and
    # grows less, so it runs beside other tests (no clock read: not a `serial` test).
    ends = threading.Timer(20, stop.set)
    for thread in [*threads, ends]:
        thread.start()
    while not stop.wait(0.2):  # sampling the RSS every 0.2 s until the 20 s are over
        peak = max(peak, rss_mb(pid))
    for thread in threads:
        thread.join(120)
    peak = max(peak, rss_mb(pid))
    assert not errors, errors[:3]
    assert peak - baseline < 60, (baseline, peak)  # before: 123 MB to 287 MB here; now about +13 MB

    answer = session.get(f"{relay.base}/event-types", timeout=60)
    assert answer.status_code == 200
    assert len(answer.content) < 1_100_000 + 31_000, len(answer.content)
    assert "nextLink" in answer.json()


# ---- issue 19 item 14 ----------------------------------------------------------------------------


def test_the_schema_route_refuses_what_the_type_route_refuses(app: InProcessApp) -> None:
    """A 300-character name is a 400 naming `name` on both routes; what the designer can pass
    (`*`, a prefix pattern, an unregistered name) stays a 200 on the schema route."""
    long = "a" * 300
    problem_of(app.get(f"event-types/{long}"), 400, "name")
    problem_of(app.get(f"event-types/{long}/schema"), 400, "name")
    problem_of(app.get("event-types/a%0A/schema"), 400, "name")
    for value in ("*", "order.%2A", "nobody.registered.here"):
        answer = app.get(f"event-types/{value}/schema")
        assert answer.status_code == 200 and answer.json()["schema"] is None, (value, answer.text)
