"""A subscription's `contentMode`: json (default), structured and binary, as real CloudEvents SDKs
read them (the Python `cloudevents` package, and the JavaScript SDK through node), each signed
over the body actually sent."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from cloudevents.http import from_http
from standardwebhooks.webhooks import Webhook

from tests.helpers import InProcessApp, Received

# The CloudEvents JavaScript SDK, installed into a directory of its own for these tests only.
JS_SDK = "cloudevents@10.0.0"
JS_READER = """
const { HTTP } = require("cloudevents");
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = [];
for (const message of input) {
  try {
    const found = HTTP.toEvent({ headers: message.headers, body: message.body });
    const event = Array.isArray(found) ? found[0] : found;
    event.validate();
    out.push({ ok: true, event: event.toJSON() });
  } catch (err) {
    out.push({ ok: false, error: String((err && err.message) || err) });
  }
}
console.log(JSON.stringify(out));
"""

SUBJECT = 'orders/Größe 42 "x" 100%'
DATA = {"orderId": "A-1", "total": 12.5, "lines": [1, 2]}


@pytest.fixture(scope="module")
def js_read(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[Received]], list[dict[str, Any]]]:
    """Parses received requests with the JavaScript SDK's `HTTP.toEvent`."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        pytest.skip("node and npm are needed for the CloudEvents JavaScript SDK")
    where = tmp_path_factory.mktemp("cloudevents-js")
    installed = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(where), JS_SDK],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if installed.returncode != 0:
        pytest.skip(f"could not install {JS_SDK}: {installed.stderr[-500:]}")
    script = where / "read.js"
    script.write_text(JS_READER, encoding="utf-8")

    def read(messages: list[Received]) -> list[dict[str, Any]]:
        payload = [{"headers": m.headers, "body": m.body.decode("utf-8")} for m in messages]
        done = subprocess.run(
            [node, str(script)],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            cwd=where,
            timeout=60,
            check=True,
        )
        return json.loads(done.stdout)

    return read


@pytest.fixture
def three(relay, receiver_factory, unique_type: str) -> Iterator[dict[str, Any]]:
    """One receiver per content mode (json by default), all subscribed to one type."""
    made: dict[str, Any] = {}
    for mode in ("json", "structured", "binary"):
        receiver = receiver_factory()
        fields: dict[str, Any] = {"eventTypes": [unique_type]}
        if mode != "json":
            fields["contentMode"] = mode
        made[mode] = (receiver, relay.subscribe(receiver.url, **fields))
    yield made


def _verify(message: Received, secret: str) -> None:
    """Standard Webhooks verification over the body as it arrived."""
    Webhook(secret).verify(
        message.body, {k: message.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    )


def test_each_mode_is_stored_returned_and_delivered_as_the_sdks_read_it(
    relay, three: dict[str, Any], unique_type: str, js_read: Callable[..., Any]
) -> None:
    for mode, (_receiver, sub) in three.items():
        assert sub["contentMode"] == mode
        assert relay.get(f"subscriptions/{sub['id']}").json()["contentMode"] == mode
    published = relay.publish({"type": unique_type, "subject": SUBJECT, "data": DATA}).json()["id"]

    got = {mode: receiver.wait_for(1)[0] for mode, (receiver, _sub) in three.items()}
    for mode, (_receiver, sub) in three.items():
        _verify(got[mode], sub["secret"])

    # json: what Power Automate needs, unchanged.
    assert got["json"].headers["content-type"] == "application/json; charset=utf-8"
    plain = got["json"].json()
    assert plain["specversion"] == "1.0" and plain["id"] == published and plain["data"] == DATA
    assert plain["subject"] == SUBJECT

    # structured: the same document, as the HTTP binding's structured mode.
    assert got["structured"].headers["content-type"] == "application/cloudevents+json; charset=utf-8"
    assert got["structured"].json() == plain
    event = from_http(got["structured"].headers, got["structured"].body)
    assert (event["id"], event["type"], event["source"], event["subject"], event["time"]) == (
        published,
        unique_type,
        plain["source"],
        SUBJECT,
        plain["time"],
    )
    assert event.data == DATA

    # binary: attributes in ce-* headers (percent-encoded as the binding says), data alone as the body.
    binary = got["binary"]
    assert binary.headers["content-type"] == "application/json"
    assert json.loads(binary.body) == DATA
    assert "specversion" not in binary.json()
    event = from_http(binary.headers, binary.body)
    assert (event["specversion"], event["id"], event["type"], event["source"], event["time"]) == (
        "1.0",
        published,
        unique_type,
        plain["source"],
        plain["time"],
    )
    assert unquote(event["subject"]) == SUBJECT
    assert all(ord(c) < 0x7F and c not in ' "' for c in binary.headers["ce-subject"])
    assert event.data == DATA

    # The JavaScript SDK: no CloudEvent in the json mode (why the modes exist), both others read.
    js = dict(
        zip(["json", "structured", "binary"], js_read([got["json"], got["structured"], got["binary"]]), strict=True)
    )
    assert js["json"]["ok"] is False
    for mode in ("structured", "binary"):
        assert js[mode]["ok"], js[mode]
        read = js[mode]["event"]
        assert (read["id"], read["type"], read["source"], read["specversion"]) == (
            published,
            unique_type,
            plain["source"],
            "1.0",
        )
        assert read["data"] == DATA
    assert js["structured"]["event"]["subject"] == SUBJECT
    assert unquote(js["binary"]["event"]["subject"]) == SUBJECT


def test_binary_body_is_data_alone_whatever_json_it_is(
    relay, three: dict[str, Any], unique_type: str, js_read: Callable[..., Any]
) -> None:
    receiver, sub = three["binary"]
    for n, data in enumerate([[1, "two", None], "text", 7, None]):
        relay.publish({"type": unique_type, "data": data})
        message = receiver.wait_for(n + 1)[n]
        assert json.loads(message.body) == data
        _verify(message, sub["secret"])
        assert "ce-subject" not in message.headers
        assert from_http(message.headers, message.body)["type"] == unique_type
    assert all(r["ok"] for r in js_read(receiver.wait_for(4)[:3]))


def test_content_mode_is_taken_on_resubscribe_and_bad_values_are_400(app: InProcessApp) -> None:
    url = f"http://127.0.0.1:9/hook/{uuid.uuid4().hex}"  # never called
    first = app.subscribe(url, contentMode="binary")
    again = app.subscribe(url, contentMode="structured")
    assert again["id"] == first["id"]
    assert app.get(f"subscriptions/{first['id']}").json()["contentMode"] == "structured"
    listed = {s["id"]: s for s in app.get("subscriptions").json()["value"]}
    assert listed[first["id"]]["contentMode"] == "structured"
    for bad in ("xml", "JSON", "", 1, None):
        response = app.post("subscriptions", {"notificationUrl": url, "contentMode": bad})
        assert response.status_code == 400, (bad, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in response.json()["errors"]] == ["contentMode"]
    assert app.get(f"subscriptions/{first['id']}").json()["contentMode"] == "structured"
