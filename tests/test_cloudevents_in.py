"""CloudEvents in (issue 23 item 4, CONTRACT section 6): `POST /api/events` takes the CloudEvents
HTTP binding's structured, batched and binary modes, produced here by the real SDKs (Python's
`cloudevents`, npm's `cloudevents` run by node), maps every attribute and extension onto the
relay's event and delivers them in each content mode; `OPTIONS /api/events` answers the webhook
validation handshake as Azure Event Grid sends it (Event Grid itself cannot run here: the test
sends its request, with its headers, through the dev host)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from cloudevents.conversion import to_binary, to_json, to_structured
from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from tests.helpers import FUNCTION_KEY, ROOT, InProcessApp, Received, problem_of, wait_until

PRODUCE_JS = Path(__file__).resolve().parent / "js" / "cloudevents_produce.js"
SOURCE = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct"


def _js_messages(event_type: str, prefix: str) -> dict[str, dict[str, Any]]:
    node = shutil.which("node")
    assert node is not None, "node is needed: the JavaScript SDK is a real producer"
    done = subprocess.run(
        [node, str(PRODUCE_JS)],
        input=json.dumps({"type": event_type, "source": "/js/producer", "prefix": prefix}),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    messages: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return messages


def _post(relay: Any, headers: dict[str, Any], body: bytes | str) -> requests.Response:
    sent = {k: str(v) for k, v in headers.items()}  # the JS SDK gives numbers for numeric extensions
    return relay.session.post(f"{relay.base}/events", data=body, headers=sent, timeout=30)


def _by_id(received: list[Received], mode: str) -> dict[str, Received]:
    if mode == "binary":
        return {r.headers["ce-id"]: r for r in received}
    return {r.json()["id"]: r for r in received}


def test_the_sdks_publish_in_all_three_modes_and_every_attribute_is_delivered(
    relay, receiver_factory, unique_type
) -> None:
    receivers = {mode: receiver_factory() for mode in ("json", "structured", "binary")}
    secrets = {
        mode: relay.subscribe(r.url, eventTypes=[unique_type], contentMode=mode)["secret"]
        for mode, r in receivers.items()
    }
    prefix = uuid.uuid4().hex[:8]

    def event(name: str, data: Any, **attributes: Any) -> CloudEvent:
        return CloudEvent(
            {
                "id": f"{prefix}-py-{name}",
                "type": unique_type,
                "source": SOURCE,
                "subject": f"blobs/{name}.json",
                "tenant": "contoso",
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                **attributes,
            },
            data,
        )

    expected: dict[str, dict[str, Any]] = {}  # id -> the attributes every mode must carry
    # Python SDK: structured, binary (JSON data and text data), and a batch of its JSON forms.
    structured = event("structured", {"size": 1}, dataschema="https://schemas.example/blob.json")
    headers, body = to_structured(structured)
    answer = _post(relay, headers, body)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"id": f"{prefix}-py-structured"}
    expected[f"{prefix}-py-structured"] = {
        "data": {"size": 1},
        "dataschema": "https://schemas.example/blob.json",
        "subject": "blobs/structured.json",
    }
    headers, body = to_binary(event("binary", {"size": 2}))
    assert _post(relay, headers, body).json() == {"id": f"{prefix}-py-binary"}
    expected[f"{prefix}-py-binary"] = {"data": {"size": 2}, "subject": "blobs/binary.json"}
    # Bytes: the SDK sends them as they are (a str it would send as a JSON string).
    headers, body = to_binary(event("text", b"plain words", datacontenttype="text/plain"))
    assert _post(relay, headers, body).json() == {"id": f"{prefix}-py-text"}
    expected[f"{prefix}-py-text"] = {"data": "plain words", "datacontenttype": "text/plain"}
    batch = [json.loads(to_json(event(f"batch-{n}", {"n": n}))) for n in range(2)]
    answer = _post(relay, {"Content-Type": "application/cloudevents-batch+json"}, json.dumps(batch))
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"value": [{"id": f"{prefix}-py-batch-0"}, {"id": f"{prefix}-py-batch-1"}]}
    for n in range(2):
        expected[f"{prefix}-py-batch-{n}"] = {"data": {"n": n}}
    for key in list(expected):
        expected[key].update(tenant="contoso", source=SOURCE)

    # The JavaScript SDK: structured, binary and a batch.
    messages = _js_messages(unique_type, f"{prefix}-js")
    for mode, ids in (("structured", ["structured"]), ("binary", ["binary"]), ("batch", ["batch-0", "batch-1"])):
        answer = _post(relay, messages[mode]["headers"], messages[mode]["body"])
        assert answer.status_code == 202, (mode, answer.text)
        got = answer.json()["value"] if mode == "batch" else [answer.json()]
        assert got == [{"id": f"{prefix}-js-{i}"} for i in ids]
        for i in ids:
            expected[f"{prefix}-js-{i}"] = {"tenant": "contoso", "source": "/js/producer", "subject": f"js/{i}"}
    expected[f"{prefix}-js-structured"].update(data={"mode": "structured"}, priority=5)
    expected[f"{prefix}-js-binary"].update(data={"mode": "binary"}, priority="5")  # a header: text
    for n in range(2):
        expected[f"{prefix}-js-batch-{n}"].update(data={"n": n}, priority=5)

    # A repeat of a producer's event (same source, type and id) is said to be a duplicate.
    headers, body = to_structured(structured)
    assert _post(relay, headers, body).json() == {"id": f"{prefix}-py-structured", "duplicate": True}

    for mode, receiver in receivers.items():
        got = _by_id(receiver.wait_for(len(expected), timeout=60), mode)
        assert set(got) == set(expected), mode
        for event_id, attributes in expected.items():
            delivered = got[event_id]
            Webhook(secrets[mode]).verify(delivered.body, delivered.headers, json_parse=False)
            if mode == "binary":
                assert delivered.headers["ce-type"] == unique_type
                for name, value in attributes.items():
                    if name == "data":
                        text = delivered.body.decode()
                        assert (text if isinstance(value, str) else json.loads(text)) == value
                    elif name == "datacontenttype":
                        assert delivered.headers["content-type"] == value
                    else:
                        assert requests.utils.unquote(delivered.headers[f"ce-{name}"]) == str(value), name
            else:
                doc = delivered.json()
                assert doc["specversion"] == "1.0" and doc["type"] == unique_type
                assert doc["datacontenttype"] == attributes.get("datacontenttype", "application/json")
                for name, value in attributes.items():
                    assert doc[name] == value, (mode, event_id, name)


def test_the_polling_trigger_reads_the_attributes_too(relay, unique_type) -> None:
    """A flow on the polling trigger gets the producer's extensions and datacontenttype as well."""
    start = relay.get("events/poll", params={"eventType": unique_type})
    assert start.status_code == 202
    event = CloudEvent(
        {"id": f"poll-{uuid.uuid4().hex}", "type": unique_type, "source": SOURCE, "tenant": "contoso", "sequence": 7},
        b"<a>1</a>",
    )
    event["datacontenttype"] = "application/xml"
    headers, body = to_binary(event)
    assert _post(relay, headers, body).status_code == 202

    location = start.headers["Location"]

    def poll() -> list[dict[str, Any]] | None:
        nonlocal location
        answer = relay.session.get(location, timeout=30)
        location = answer.headers["Location"]
        return answer.json()["value"] if answer.status_code == 200 else None

    polled = wait_until(poll, 30, "the event to be polled")
    assert len(polled) == 1
    got = polled[0]
    assert (got["id"], got["source"], got["tenant"], got["sequence"]) == (event["id"], SOURCE, "contoso", "7")
    assert (got["datacontenttype"], got["data"]) == ("application/xml", "<a>1</a>")


@pytest.mark.parametrize("with_code", [False, True])
def test_the_webhook_validation_handshake_as_event_grid_sends_it(relay, with_code: bool) -> None:
    """OPTIONS /api/events with WebHook-Request-Origin: eventgrid.azure.net (and the rate Event
    Grid asks for) through the dev host: 200, that origin allowed, a rate; the key may come as
    ?code= (Event Grid's endpoint URL carries it there); without a key, 401."""
    headers = {"WebHook-Request-Origin": "eventgrid.azure.net", "WebHook-Request-Rate": "120"}
    if with_code:
        answer = requests.options(f"{relay.base}/events", params={"code": FUNCTION_KEY}, headers=headers, timeout=30)
    else:
        answer = relay.session.options(f"{relay.base}/events", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    rate = answer.headers["WebHook-Allowed-Rate"]
    assert rate == "*" or rate.isdigit()
    refused = requests.options(f"{relay.base}/events", headers=headers, timeout=30)
    assert refused.status_code == 401


def test_an_options_without_the_origin_is_a_400_naming_it(app: InProcessApp) -> None:
    problem_of(app.request("OPTIONS", "events"), 400, "WebHook-Request-Origin")


def _binary_headers(**overrides: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "e-1",
        "ce-source": "/here",
        "ce-type": "bad.input.test",
    }
    headers.update(overrides)  # type: ignore[arg-type]
    return {k: v for k, v in headers.items() if v is not None}


STRUCTURED = {"specversion": "1.0", "id": "e-1", "source": "/here", "type": "bad.input.test", "data": {}}


@pytest.mark.parametrize(
    ("content_type", "body", "headers", "field"),
    [
        ("application/json", b"{}", {"ce-id": None}, "ce-id"),
        ("application/json", b"{}", {"ce-source": None}, "ce-source"),
        ("application/json", b"{}", {"ce-type": None}, "ce-type"),
        ("application/json", b"{}", {"ce-specversion": "0.3"}, "ce-specversion"),
        ("application/json", b"{}", {"ce-bad_name": "x"}, "ce-bad_name"),
        ("application/json", b"{}", {"ce-type": "has space"}, "type"),
        ("application/cloudevents+json", {**STRUCTURED, "specversion": "0.3"}, {}, "specversion"),
        ("application/cloudevents+json", {k: v for k, v in STRUCTURED.items() if k != "id"}, {}, "id"),
        ("application/cloudevents+json", {**STRUCTURED, "source": "has space"}, {}, "source"),
        ("application/cloudevents+json", {**STRUCTURED, "Upper": 1}, {}, "Upper"),
        ("application/cloudevents+json", {**STRUCTURED, "nested": {"a": 1}}, {}, "nested"),
        ("application/cloudevents+json", {**STRUCTURED, "data_base64": "AAAA"}, {}, "data_base64"),
        ("application/cloudevents+json", [STRUCTURED], {}, "body"),
        ("application/cloudevents+json", {**STRUCTURED, "subject": None}, {}, "subject"),
        ("application/cloudevents+json", {**STRUCTURED, "tenant": None}, {}, "tenant"),
        ("application/cloudevents+json", {**STRUCTURED, "dataschema": 1}, {}, "dataschema"),
        ("application/cloudevents+json", {**STRUCTURED, **{f"x{n}": n for n in range(30)}}, {}, "body"),
        (
            "application/cloudevents+json",
            {**STRUCTURED, "datacontenttype": "text/plain\r\nX-Evil: 1"},
            {},
            "datacontenttype",
        ),
        ("application/cloudevents+json", {**STRUCTURED, "datacontenttype": 7}, {}, "datacontenttype"),
        ("nonsense", b"words", {"Content-Type": "nonsense"}, "datacontenttype"),
        ("application/cloudevents-batch+json", [], {}, "body"),
        ("application/cloudevents-batch+json", [STRUCTURED] * 101, {}, "body"),
        ("application/cloudevents-batch+json", STRUCTURED, {}, "body"),
        ("application/cloudevents-batch+json", [STRUCTURED, {**STRUCTURED, "specversion": 1}], {}, "[1].specversion"),
    ],
)
def test_bad_cloudevents_are_a_400_naming_the_field(
    app: InProcessApp, content_type: str, body: Any, headers: dict[str, str | None], field: str
) -> None:
    if "cloudevents" in content_type:
        sent = {"Content-Type": content_type}
        data = json.dumps(body).encode()
    else:
        sent = _binary_headers(**headers)
        data = body
    problem_of(app.request("POST", "events", data=data, headers=sent), 400, field)


# ---- whatever a producer sends: never a 5xx ------------------------------------------------------

ATTRIBUTE_NAMES = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
    "tenant",
    "Upper",
    "",
    "x" * 25,
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["1.0", "a.b", "/src", "text/plain", "2026-12-07T10:00:00Z", "AAAA"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
attributes = st.dictionaries(st.sampled_from(ATTRIBUTE_NAMES) | st.text(max_size=8), json_values, max_size=8).map(
    lambda d: {"specversion": "1.0", "id": "f-1", "source": "/f", "type": "fuzz.ce", **d}
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


@seed(20261207)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    mode=st.sampled_from(["structured", "batch", "binary"]),
    doc=attributes,
    batch=st.lists(attributes, max_size=3) | json_values,
    headers=st.dictionaries(st.sampled_from([f"ce-{n}" for n in ATTRIBUTE_NAMES[:8]] + ["ce-x", "ce-Up"]), header_text),
    body=st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()),
    content_type=st.sampled_from(["", "application/json", "text/plain", "application/xml", "bad", "a/b; x=\x7f"]),
)
def test_no_cloudevent_causes_a_5xx(
    app: InProcessApp,
    mode: str,
    doc: dict[str, Any],
    batch: Any,
    headers: dict[str, str],
    body: bytes,
    content_type: str,
) -> None:
    if mode == "structured":
        sent, data = {"Content-Type": "application/cloudevents+json"}, json.dumps(doc).encode()
    elif mode == "batch":
        sent, data = {"Content-Type": "application/cloudevents-batch+json"}, json.dumps(batch).encode()
    else:
        sent = {"ce-specversion": "1.0", **headers, **({"Content-Type": content_type} if content_type else {})}
        data = body
    answer = app.request("POST", "events", data=data, headers=sent)
    assert answer.status_code < 500, (mode, doc, batch, headers, body, answer.text)
    if answer.status_code >= 400:
        problem = answer.json()
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert problem["status"] == answer.status_code and problem["title"]
