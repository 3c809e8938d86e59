"""Fuzzing every route with a fixed seed: whatever a client sends, no 5xx, and every error is
problem+json naming its fields."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.helpers import RelayProcess

ROUTES = [
    ("POST", "subscriptions"),
    ("GET", "subscriptions"),
    ("GET", "subscriptions/{id}"),
    ("DELETE", "subscriptions/{id}"),
    ("POST", "unsubscribe"),
    ("POST", "events"),
    ("GET", "subscriptions/{id}/deliveries"),
    ("POST", "subscriptions/{id}/replay"),
    ("GET", "operations/{id}"),
    ("GET", "events/poll"),
    ("GET", "event-types"),
    ("PUT", "event-types/{id}"),
    ("GET", "event-types/{id}"),
    ("DELETE", "event-types/{id}"),
    ("PATCH", "subscriptions"),
    ("GET", "health"),
    ("GET", "openapi.json"),
    ("GET", "event-types/{id}/schema"),
    ("POST", "events/batch"),
]
FIELDS = [
    "notificationUrl",
    "eventTypes",
    "eventType",
    "subjectBeginsWith",
    "once",
    "description",
    "type",
    "data",
    "id",
    "subject",
    "time",
    "since",
    "until",
    "status",
    "schema",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)
params = st.dictionaries(
    st.sampled_from(["limit", "eventType", "continuationToken", "status", "triggerState", "since"]),
    st.text(max_size=20),
    max_size=3,
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "application/cloudevents+json", ""]
)


@pytest.fixture(scope="module")
def fuzz_relay(azurite):
    relay = RelayProcess(azurite, {"RELAY_ALLOW_PRIVATE_TARGETS": "false"}).start()
    yield relay
    relay.stop()


@seed(20261122)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    route=st.sampled_from(ROUTES),
    segment=st.text(min_size=1, max_size=80),
    query=params,
    body=bodies,
    ctype=content_types,
)
def test_no_input_causes_a_5xx(fuzz_relay, route, segment, query, body, ctype) -> None:
    """Random paths, queries and bodies on every route: never a 5xx, errors always problem+json."""
    method, template = route
    path = template.replace("{id}", quote(segment, safe=""))
    headers = {"x-functions-key": fuzz_relay.function_key or ""}
    if ctype:
        headers["Content-Type"] = ctype
    response = requests.request(
        method, f"{fuzz_relay.base}/{path}", params=query, data=body, headers=headers, timeout=30
    )
    assert response.status_code < 500, (method, path, query, body, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
        doc = response.json()
        assert doc["status"] == response.status_code and doc["title"] and "detail" in doc
