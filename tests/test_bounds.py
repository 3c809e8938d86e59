"""Hostile input cannot stall the relay (issue 9 items 7-9): schema bombs, oversized and
many-valued bodies. Each publish is timed against the contract's 2 s, while another thread keeps
asking `GET /api/health`, which must keep answering."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import azure.functions as func
import pytest
import requests

from tests.helpers import FUNCTION_KEY, Answer, InProcessApp

BOUND = 2.0  # the contract: a publish is answered within 2 s of its body arriving


@contextmanager
def health_meanwhile(relay: Any) -> Iterator[list[float]]:
    """Ask /api/health over and over from another thread; every answer must be a 200 within 2 s."""
    latencies: list[float] = []
    failures: list[str] = []
    stop, answered = threading.Event(), threading.Event()

    def poll() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status = requests.get(f"{relay.base}/health", timeout=BOUND).status_code
            except requests.RequestException as exc:
                failures.append(type(exc).__name__)
                continue
            latencies.append(time.monotonic() - started)
            answered.set()
            if status != 200:
                failures.append(str(status))
            stop.wait(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    assert answered.wait(BOUND * 5), "health never answered"  # the poller runs before the publish starts
    try:
        yield latencies
    finally:
        stop.set()
        thread.join(10)
    assert not failures, f"health did not answer meanwhile: {failures[:5]}"
    assert latencies and max(latencies) < BOUND, latencies


def timed_post(relay: Any, path: str, body: Any) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = relay.session.post(f"{relay.base}/{path}", json=body, timeout=60)
    return response, time.monotonic() - started


def put_type(relay: Any, name: str, schema: Any) -> requests.Response:
    return relay.session.put(f"{relay.base}/event-types/{name}", json={"schema": schema}, timeout=30)


def fields(response: Answer | requests.Response) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return [e["field"] for e in response.json().get("errors", [])]


# ---- item 7: catastrophic regexes -------------------------------------------------------------

EVIL = "^(a+)+$"
SLOW = "a" * 29 + "b"  # 20 s in Python's re, holding the GIL


@pytest.mark.parametrize(
    "schema, data, field",
    [
        ({"pattern": EVIL}, SLOW, "data"),
        ({"type": "object", "patternProperties": {EVIL: {"type": "integer"}}}, {SLOW: "x"}, None),
        ({"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False}, {SLOW: 1}, "data"),
        ({"type": "object", "propertyNames": {"pattern": EVIL}}, {SLOW: 1}, "data"),
    ],
    ids=["pattern", "patternProperties", "additionalProperties", "propertyNames"],
)
def test_catastrophic_pattern_is_answered_within_2s(relay, unique_type, schema, data, field) -> None:
    """`^(a+)+$` against a..ab runs on a linear-time engine: a 400 at once, health meanwhile."""
    assert put_type(relay, unique_type, schema).status_code in (200, 201)
    with health_meanwhile(relay):
        response, elapsed = timed_post(relay, "events", {"type": unique_type, "data": data})
    assert elapsed < BOUND, elapsed
    if field is None:  # the name does not match, so nothing is checked: the event is accepted
        assert response.status_code == 202, response.text
    else:
        assert response.status_code == 400, response.text
        assert field in fields(response)
    # The same engine still matches what it should.
    ok = "a" * 29 if isinstance(data, str) else {"a" * 29: 1}
    assert (
        relay.session.post(f"{relay.base}/events", json={"type": unique_type, "data": ok}, timeout=30).status_code
        == 202
    )


@pytest.mark.parametrize(
    "schema, field",
    [
        ({"pattern": "^(a)\\1$"}, "schema.pattern"),
        ({"properties": {"code": {"type": "string", "pattern": "^(?=.*[0-9]).+$"}}}, "schema.properties.code.pattern"),
        ({"patternProperties": {"^(?!x)": {}}}, "schema.patternProperties"),
    ],
)
def test_regex_the_linear_engine_cannot_run_is_refused_at_put(relay, unique_type, schema, field) -> None:
    """Backreferences and lookaround have no linear-time engine: 400 at PUT naming the field."""
    response = put_type(relay, unique_type, schema)
    assert response.status_code == 400, response.text
    assert fields(response) == [field]
    assert relay.get(f"event-types/{unique_type}").status_code == 404


# ---- item 8: $ref fan-out ---------------------------------------------------------------------


def fan_out_bomb(depth: int = 40) -> dict[str, Any]:
    defs: dict[str, Any] = {
        f"n{i}": {"anyOf": [{"$ref": f"#/$defs/n{i + 1}"}, {"$ref": f"#/$defs/n{i + 1}"}]} for i in range(depth)
    }
    defs[f"n{depth}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/n0"}


def test_ref_fan_out_bomb_is_refused_at_put(relay, unique_type) -> None:
    """The issue's 2.5 KB `anyOf: [$ref next, $ref next]` forty deep (2^40 paths): 400 naming `schema`."""
    bomb = fan_out_bomb()
    assert len(json.dumps(bomb)) < 3000
    started = time.monotonic()
    response = put_type(relay, unique_type, bomb)
    assert time.monotonic() - started < BOUND
    assert response.status_code == 400, response.text
    assert fields(response) == ["schema"]
    # A schema that reuses a definition a reasonable number of times is fine.
    assert put_type(relay, unique_type, fan_out_bomb(depth=8)).status_code in (200, 201)


def test_recursive_schema_that_runs_away_on_the_data_is_cut_off_within_2s(relay, unique_type) -> None:
    """A recursive $ref counts as small statically; its cost grows with the data (2^40 here). The
    evaluation budget cuts it off: 400 naming `data` within 2 s, health answering meanwhile."""
    node = {
        "anyOf": [{"type": "array", "items": {"$ref": "#/$defs/n"}}, {"type": "array", "items": {"$ref": "#/$defs/n"}}]
    }
    assert put_type(relay, unique_type, {"$defs": {"n": node}, "$ref": "#/$defs/n"}).status_code in (200, 201)
    data: Any = "leaf"  # fails both branches at the bottom, so every level tries both
    for _ in range(40):
        data = [data]
    with health_meanwhile(relay):
        response, elapsed = timed_post(relay, "events", {"type": unique_type, "data": data})
    assert elapsed < BOUND, elapsed
    assert response.status_code == 400, response.text
    assert fields(response) == ["data"]
    # Data of the same shape that matches is accepted.
    ok: Any = []
    for _ in range(40):
        ok = [ok]
    assert (
        relay.session.post(f"{relay.base}/events", json={"type": unique_type, "data": ok}, timeout=30).status_code
        == 202
    )


def test_unique_items_over_many_objects_is_linear(relay, unique_type) -> None:
    """jsonschema's uniqueItems compares objects pairwise: 30,000 of them took many minutes."""
    assert put_type(relay, unique_type, {"type": "array", "uniqueItems": True}).status_code in (200, 201)
    data = [{"n": i} for i in range(30_000)]  # 90,000 values, under the body bound
    response, elapsed = timed_post(relay, "events", {"type": unique_type, "data": data})
    assert elapsed < BOUND, elapsed
    assert response.status_code == 202, response.text
    response, _ = timed_post(relay, "events", {"type": unique_type, "data": [{"n": 1}, {"n": 1.0}]})
    assert response.status_code == 400 and fields(response) == ["data"]


# ---- item 9: batch bytes and values -------------------------------------------------------------


def raw_request(relay: Any, head: str, body: bytes = b"", timeout: float = BOUND) -> tuple[int, bytes, float]:
    """Send a request by hand (a Content-Length larger than what follows) and read the answer."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=timeout) as sock:
        sock.sendall(head.encode() + body)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head_end = b"".join(chunks).index(b"\r\n\r\n")
                length = int(b"".join(chunks)[:head_end].lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(b"".join(chunks)) >= head_end + 4 + length:
                    break
    answer = b"".join(chunks)
    return int(answer.split(b" ")[1]), answer.split(b"\r\n\r\n", 1)[1], time.monotonic() - started


def test_batch_over_the_limit_is_413_before_the_body_is_read(relay) -> None:
    """A Content-Length above RELAY_MAX_BATCH_BYTES (4 MiB) is answered 413 with none of the body
    sent: the dev host never waits for it."""
    head = (
        f"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\nContent-Type: application/json\r\n"
        f"x-functions-key: {FUNCTION_KEY}\r\nContent-Length: {4 * 1024 * 1024 + 1}\r\n\r\n"
    )
    status, body, elapsed = raw_request(relay, head, b"[")
    assert status == 413 and elapsed < BOUND
    doc = json.loads(body)
    assert doc["status"] == 413 and [e["field"] for e in doc["errors"]] == ["body"]
    # Other routes still answer, and a body within the limit is read as before.
    assert requests.get(f"{relay.base}/health", timeout=BOUND).status_code == 200


def test_batch_limit_is_a_setting(relay_factory, unique_type) -> None:
    relay = relay_factory({"RELAY_MAX_BATCH_BYTES": "2000"})
    small = [{"type": unique_type, "data": "x" * 100}]
    assert relay.session.post(f"{relay.base}/events", json=small, timeout=30).status_code == 202
    big = [{"type": unique_type, "data": "x" * 1000}, {"type": unique_type, "data": "x" * 1000}]
    response = relay.session.post(f"{relay.base}/events", json=big, timeout=30)
    assert response.status_code == 413 and fields(response) == ["body"]


def test_function_refuses_by_content_length_without_reading_the_body(monkeypatch) -> None:
    """In Azure the host hands the function the body; the relay looks at the header first and
    refuses without touching (parsing) it."""
    from relay.core.settings import reset_settings
    from tests.helpers import http_functions

    # The index the in-process app uses: `get_functions()` refuses a second call on one app object.
    events = next(f.call for f in http_functions() if f.name == "events")

    class Untouchable(func.HttpRequest):
        def get_body(self) -> bytes:
            raise AssertionError("the body was read")

    monkeypatch.setenv("RELAY_MAX_BATCH_BYTES", "1000")
    reset_settings()
    try:
        req = Untouchable(
            method="POST",
            url="https://relay.example/api/events",
            body=b"",
            headers={"Content-Type": "application/json", "Content-Length": "1001"},
        )
        response = events(req)
    finally:
        reset_settings()
    assert response.status_code == 413
    assert json.loads(response.get_body())["errors"] == [{"field": "body", "message": "is larger than 1000 bytes"}]


def test_batch_of_a_million_tiny_objects_is_refused_quickly(relay, unique_type) -> None:
    """~4 MiB of `{}` (1.4 million values) is refused before it is parsed: 400 naming `body`
    within 2 s, health answering meanwhile. Commas inside strings do not count."""
    per_event = (1024 * 1024 - 100) // 3
    event = {"type": unique_type, "data": [{}] * per_event}
    body = json.dumps([event] * 4, separators=(",", ":")).encode()
    assert 4 * 1024 * 1024 - 1000 < len(body) <= 4 * 1024 * 1024
    with health_meanwhile(relay):
        started = time.monotonic()
        response = relay.session.post(
            f"{relay.base}/events", data=body, timeout=60, headers={"Content-Type": "application/json"}
        )
        elapsed = time.monotonic() - started
    assert elapsed < BOUND, elapsed
    assert response.status_code == 400, response.text
    assert fields(response) == ["body"] and "JSON values" in response.json()["detail"]
    commas = {"type": unique_type, "data": "a,b:{[" * 150_000}
    assert relay.session.post(f"{relay.base}/events", json=commas, timeout=30).status_code == 202


def test_node_count_ignores_structure_inside_strings(app: InProcessApp, unique_type: str) -> None:
    """Commas and brackets inside a string (after an escaped quote too) are one value, not
    thousands; values outside strings are counted to the limit."""
    from relay.http.api import MAX_NODES

    for text in (b'"' + b"," * (MAX_NODES * 2) + b'"', b'"\\"' + b",[" * MAX_NODES + b'"'):
        body = b'{"type": "%s", "data": [%s, 1]}' % (unique_type.encode(), text)
        assert app.post("events", data=body, headers={"Content-Type": "application/json"}).status_code == 202
    many = b'{"type": "%s", "data": [%s1]}' % (unique_type.encode(), b"1," * MAX_NODES)
    refused = app.post("events", data=many, headers={"Content-Type": "application/json"})
    assert refused.status_code == 400 and fields(refused) == ["body"], refused.text


def test_bomb_stored_before_these_checks_is_refused_at_publish_within_2s(relay, relay_factory, unique_type) -> None:
    """A fan-out schema written before registration refused it is not evaluated: the publish is a
    400 naming `type` at once (register it again), not years of validation."""
    from azure.data.tables import TableClient

    from relay.store.eventtypes import PARTITION
    from relay.store.storage import EVENT_TYPES_TABLE

    table = TableClient.from_connection_string(relay.azurite.connection_string, EVENT_TYPES_TABLE)
    table.upsert_entity(
        {"PartitionKey": PARTITION, "RowKey": unique_type, "schema": json.dumps(fan_out_bomb(), separators=(",", ":"))}
    )
    fresh = relay_factory()  # a process whose schema cache has never seen the old catalogue
    with health_meanwhile(fresh):
        response, elapsed = timed_post(fresh, "events", {"type": unique_type, "data": "x"})
    assert elapsed < BOUND, elapsed
    assert response.status_code == 400 and fields(response) == ["type"], response.text


def test_max_batch_bytes_setting_defaults_and_names_itself() -> None:
    from relay.core.errors import ConfigurationError
    from relay.core.settings import SETTINGS, Settings

    assert Settings.from_environ({}).max_batch_bytes == 4 * 1024 * 1024
    assert Settings.from_environ({"RELAY_MAX_BATCH_BYTES": "1000"}).max_batch_bytes == 1000
    assert {s.name: s.default for s in SETTINGS}["RELAY_MAX_BATCH_BYTES"] == "4194304"
    for bad in ("4MB", "0", "-1"):
        with pytest.raises(ConfigurationError, match="RELAY_MAX_BATCH_BYTES"):
            Settings.from_environ({"RELAY_MAX_BATCH_BYTES": bad})


def test_unterminated_string_cannot_make_the_count_quadratic(relay) -> None:
    """Counting values outside strings must stay linear on a body that is not JSON: commas to
    force the exact count, then a string of escaped quotes that never ends (a naive string regex
    restarts at every quote: 20,000 of them took 6 s, holding the GIL)."""
    body = b"," * 200_000 + b'["' + b'\\"' * 1_500_000 + b"\\"
    with health_meanwhile(relay):
        started = time.monotonic()
        response = relay.session.post(
            f"{relay.base}/events", data=body, timeout=60, headers={"Content-Type": "application/json"}
        )
        elapsed = time.monotonic() - started
    assert elapsed < BOUND, elapsed
    assert response.status_code == 400 and fields(response) == ["body"], response.text


def test_schema_bounds_in_process(app: InProcessApp, unique_type: str) -> None:
    """The app's own answers, no host: the static path count at registration, JSON equality for
    uniqueItems at publish, and the publish's validation deadline."""

    def put(name: str, schema: Any) -> Any:
        return app.put(f"event-types/{name}", {"schema": schema})

    def publish(name: str, data: Any) -> Any:
        return app.post("events", {"type": name, "data": data})

    refused = put(f"{unique_type}.bomb", fan_out_bomb())
    assert refused.status_code == 400 and fields(refused) and fields(refused)[0].startswith("schema"), refused.text
    assert put(f"{unique_type}.small", fan_out_bomb(depth=8)).status_code in (200, 201)  # 2^8 paths: fine
    assert put(f"{unique_type}.unique", {"uniqueItems": True}).status_code in (200, 201)
    for data, unique in (
        ([1, 1.0], False),
        ([1, True], True),
        ([0, False], True),
        ([{"a": [1]}, {"a": [1.0]}], False),
        ([{"a": 1}, {"a": 1, "b": 2}], True),
        (["1", 1], True),
        ([[1, 2], [2, 1]], True),
    ):
        response = publish(f"{unique_type}.unique", data)
        assert response.status_code == (202 if unique else 400), (data, response.text)
    node = {"anyOf": [{"items": {"$ref": "#/$defs/n"}}, {"items": {"$ref": "#/$defs/n"}}], "type": "array"}
    assert put(f"{unique_type}.slow", {"$defs": {"n": node}, "$ref": "#/$defs/n"}).status_code in (200, 201)
    data: Any = "leaf"
    for _ in range(40):
        data = [data]
    started = time.monotonic()
    slow = publish(f"{unique_type}.slow", data)
    assert time.monotonic() - started < BOUND
    assert slow.status_code == 400 and fields(slow) == ["data"] and "took longer" in slow.text, slow.text
