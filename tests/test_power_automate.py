"""Power Automate and Logic Apps as the relay meets them.

The Power Automate tests know nothing of the relay's routes: like the platform, they read the
connector definition the relay serves (`GET /api/openapi.json`) and act on what it says (which
operation is the webhook trigger, which body property carries the callback URL, which header
carries the key, how to poll). The Logic Apps tests send what the HTTP Webhook trigger and action
send. The dev host speaks plain http, so the definition's `https` scheme is swapped for it.

Flows built on an older connector must keep working after every upgrade, so the flow
impersonation runs twice: from the definition the relay serves now, and from the first released
definitions, frozen in `tests/fixtures/connector-v*/`, against the current relay.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from jsonschema import Draft4Validator

from tests.helpers import FUNCTION_KEY, Received, Receiver, RelayProcess, nullable_as_draft4, wait_until

METHODS = ("get", "put", "post", "delete", "patch")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Every released definition a flow may still be built on; "current" is what the relay serves.
RELEASED = ["0.1.0", "0.2.0"]


def accept_as_a_flow(_: Received, __: int) -> tuple[int, dict[str, str], bytes]:
    """A flow's callback URL answers 202 Accepted."""
    return 202, {}, b""


class Connector:
    """What Power Automate knows of the relay: the connector definition and a connection's key."""

    def __init__(self, relay: Any, version: str = "current") -> None:
        answer = requests.get(f"{relay.base}/openapi.json", timeout=30)  # anonymous, as the import is
        assert answer.status_code == 200, answer.text
        self.doc = answer.json()
        assert self.doc["host"] == urlsplit(relay.base).netloc
        self.version = version
        if version != "current":
            # An older connector, updated in no way, pointed at this relay.
            frozen = json.loads((FIXTURES / f"connector-v{version}" / "apiDefinition.swagger.json").read_text())
            assert frozen["info"]["version"] == version
            self.doc = {**frozen, "host": self.doc["host"]}
        self.base = f"http://{self.doc['host']}{self.doc['basePath']}"
        (scheme,) = self.doc["security"][0]
        security = self.doc["securityDefinitions"][scheme]
        assert security["type"] == "apiKey" and security["in"] == "header"
        self.headers = {security["name"]: FUNCTION_KEY}

    def operations(self) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
        return [
            (path, method, op, item)
            for path, item in self.doc["paths"].items()
            for method, op in item.items()
            if method in METHODS
        ]

    def operation(self, predicate: Callable[[str, str, dict[str, Any]], bool]) -> tuple[str, str, dict, dict]:
        (found,) = [o for o in self.operations() if predicate(o[0], o[1], o[2])]
        return found

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method.upper(), self.base + path, headers=self.headers, timeout=30, **kw)

    def by_id(self, operation_id: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
        return self.operation(lambda p, m, o: o["operationId"] == operation_id)

    def dynamic_schema(self, extension: dict[str, Any], values: dict[str, str]) -> Any:
        """What the designer does with x-ms-dynamic-schema: call the operation it names with the
        chosen values and take the schema at value-path (a failure here stops a flow from saving)."""
        path, method, _, _ = self.by_id(extension["operationId"])
        for name, source in extension["parameters"].items():
            path = path.replace("{" + name + "}", quote(values[source["parameter"]], safe=""))
        answer = self.call(method, path)
        assert answer.status_code == 200, (self.version, answer.status_code, answer.text)
        return answer.json().get(extension["value-path"])


class Flow:
    """A flow whose trigger is the connector's webhook trigger, saved and re-saved as the maker edits it."""

    def __init__(self, connector: Connector, event_type: str) -> None:
        self.connector = connector
        self.path, self.method, self.op, item = connector.operation(lambda p, m, o: o.get("x-ms-trigger") == "single")
        (body,) = [p for p in self.op["parameters"] if p["in"] == "body"]
        props = body["schema"]["properties"]
        (self.url_property,) = [n for n, s in props.items() if s.get("x-ms-notification-url")]
        (self.type_property,) = [n for n, s in props.items() if "x-ms-dynamic-values" in s]
        self.event_type = event_type
        # The designer types `data` from the chosen event type's schema: the notification must
        # match the content schema with that in place.
        content = json.loads(json.dumps(item["x-ms-notification-content"]["schema"]))
        data = content["properties"]["data"]
        typed = connector.dynamic_schema(data["x-ms-dynamic-schema"], {self.type_property: event_type})
        if typed is not None:
            content["properties"]["data"] = nullable_as_draft4(typed)
        self.content = Draft4Validator(content, format_checker=Draft4Validator.FORMAT_CHECKER)
        delete = connector.operation(lambda p, m, o: m == "delete" and o.get("x-ms-visibility") == "internal")
        template = connector.doc["basePath"] + delete[0]
        self.delete_path = re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)))

    def save(self, callback: str) -> str:
        """The platform registers the trigger's callback URL; the 201's Location is how it unsubscribes."""
        answer = self.connector.call(
            self.method, self.path, json={self.url_property: callback, self.type_property: self.event_type}
        )
        assert answer.status_code == 201 and "201" in self.op["responses"], answer.text
        location = answer.headers["Location"]
        assert self.delete_path.fullmatch(urlsplit(location).path), location
        return location

    def remove(self, location: str) -> None:
        """The platform sends DELETE to the Location it was given when the trigger goes away."""
        answer = requests.delete(location, headers=self.connector.headers, timeout=30)
        assert answer.status_code == 200, answer.text

    def check(self, receiver: Receiver) -> list[str]:
        """Every notification matches the definition's notification content; returns the webhook-ids."""
        ids = []
        for got in receiver.requests:
            body = got.json()
            errors = [e.message for e in self.content.iter_errors(body)]
            assert not errors, errors
            assert body["type"] == self.event_type and body["id"] == got.headers["webhook-id"]
            ids.append(got.headers["webhook-id"])
        return ids


@pytest.fixture(params=["current", *RELEASED])
def connector(relay: Any, request: pytest.FixtureRequest) -> Connector:
    return Connector(relay, request.param)


ORDER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"n": {"type": "integer"}, "note": {"type": ["string", "null"]}},
    "required": ["n"],
}


def register(relay: Any, event_type: str, schema: dict[str, Any] | None = ORDER_SCHEMA) -> None:
    body = {"description": "orders"} if schema is None else {"schema": schema}
    answer = relay.session.put(f"{relay.base}/event-types/{event_type}", json=body, timeout=30)
    assert answer.status_code in (200, 201), answer.text


def publish(relay: Any, event_type: str, n: int) -> str:
    return relay.publish({"type": event_type, "subject": f"orders/{n}", "data": {"n": n}}).json()["id"]


def settle(relay: Any, sentinel: Receiver, ids: list[str]) -> None:
    """Wait until these events are fanned out and every delivery is done.

    Fan-out reaches every subscriber of an event in one pass, so once the sentinel, subscribed
    throughout, has an event, every other subscriber's delivery of it is planned; then the work
    queues drain.
    """
    wait_until(lambda: set(ids) <= set(sentinel.ids()), 60, "the sentinel to receive every event")
    wait_until(relay.queue_idle, 60, "the work queues to drain")


def test_a_flow_is_subscribed_resaved_and_removed_through_the_definition(
    relay, connector, receiver_factory, unique_type
) -> None:
    """Driven only by the definition: saving, re-saving (both orders) and deleting a flow loses and doubles nothing."""
    sentinel = receiver_factory()
    relay.subscribe(sentinel.url, eventTypes=[unique_type])
    register(relay, unique_type)
    flow = Flow(connector, unique_type)
    first, second, third = (receiver_factory(accept_as_a_flow) for _ in range(3))

    # The flow is saved: its trigger subscribes.
    loc1 = flow.save(first.url)
    before = [publish(relay, unique_type, n) for n in (1, 2)]
    settle(relay, sentinel, before)

    # Re-saved with a new callback URL: the new subscription first, then the old one removed.
    loc2 = flow.save(second.url)
    between = [publish(relay, unique_type, 3)]
    flow.remove(loc1)
    after_first = [publish(relay, unique_type, n) for n in (4, 5)]
    settle(relay, sentinel, before + between + after_first)

    # Re-saved again, the other way round: the old one removed, then the new one subscribed.
    flow.remove(loc2)
    gap = [publish(relay, unique_type, 6)]
    loc3 = flow.save(third.url)
    after_second = [publish(relay, unique_type, n) for n in (7, 8)]
    settle(relay, sentinel, before + between + after_first + gap + after_second)

    got1, got2, got3 = flow.check(first), flow.check(second), flow.check(third)
    for got in (got1, got2, got3):
        assert not [i for i, c in Counter(got).items() if c > 1], "an event was delivered twice to one URL"
    # Each event reached the URL that was live when it was published, exactly once ...
    assert set(before) <= set(got1) and set(between + after_first) <= set(got2) and set(after_second) <= set(got3)
    # ... and nothing reached a URL after its subscription was removed, or before it existed.
    assert set(got1) <= set(before + between)
    assert set(got2) <= set(between + after_first)
    assert set(got3) <= set(gap + after_second)

    # The flow is deleted: nothing more arrives.
    flow.remove(loc3)
    assert connector.call("get", urlsplit(loc3).path.removeprefix(connector.doc["basePath"])).status_code == 404
    last = [publish(relay, unique_type, 9)]
    settle(relay, sentinel, last)
    assert flow.check(third) == got3


def test_an_edited_flow_keeps_its_callback_subscribed_in_either_order(
    relay, connector, receiver_factory, unique_type
) -> None:
    """Editing a trigger keeps its callback URL; the platform subscribes the edited trigger and
    deletes the old registration in no fixed order. Each subscribe has its own Location, so the
    DELETE of a superseded one removes nothing: the flow keeps receiving after either order, and
    the DELETE of the current Location removes it."""
    sentinel = receiver_factory()
    relay.subscribe(sentinel.url, eventTypes=[unique_type])
    register(relay, unique_type)
    flow = Flow(connector, unique_type)
    callback = receiver_factory(accept_as_a_flow)
    url = f"{callback.url}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sig=abc123"

    loc1 = flow.save(url)
    # Edited and saved: subscribe first, then the old registration is deleted.
    loc2 = flow.save(url)
    assert loc2 != loc1 and urlsplit(loc2).path == urlsplit(loc1).path
    flow.remove(loc1)
    first = [publish(relay, unique_type, 1)]
    settle(relay, sentinel, first)
    # Edited again: the old registration deleted first, then the subscribe.
    flow.remove(loc2)
    loc3 = flow.save(url)
    second = [publish(relay, unique_type, 2)]
    settle(relay, sentinel, first + second)
    assert sorted(flow.check(callback)) == sorted(first + second)

    # The flow is deleted: the current Location removes it.
    flow.remove(loc3)
    assert connector.call("get", urlsplit(loc3).path.removeprefix(connector.doc["basePath"])).status_code == 404
    last = [publish(relay, unique_type, 3)]
    settle(relay, sentinel, first + second + last)
    assert sorted(flow.check(callback)) == sorted(first + second)


def test_the_polling_trigger_follows_location_and_sees_each_event_once(relay, connector, unique_type) -> None:
    """Driven by the definition, the polling trigger starts at now, then gets each later event in exactly one 200."""
    path, method, op, _ = connector.operation(lambda p, m, o: o.get("x-ms-trigger") == "batch")
    names = {p["name"]: p for p in op["parameters"]}
    assert names["triggerState"]["x-ms-visibility"] == "internal"
    items = Draft4Validator(
        op["responses"]["200"]["schema"]["properties"]["value"]["items"], format_checker=Draft4Validator.FORMAT_CHECKER
    )

    first = connector.call(method, path, params={"eventType": unique_type})
    assert first.status_code == 202 and first.headers["Retry-After"]
    location = first.headers["Location"]
    published = [publish(relay, unique_type, n) for n in (1, 2, 3)]

    seen: list[str] = []

    def poll() -> bool:
        nonlocal location
        answer = requests.get(location, headers=connector.headers, timeout=30)
        assert answer.status_code in (200, 202), answer.text
        location = answer.headers["Location"]
        if answer.status_code == 200:
            for event in answer.json()["value"]:
                assert not list(items.iter_errors(event))
                seen.append(event["id"])
        return len(seen) >= len(published)

    wait_until(poll, 60, "the polling trigger to see the events")
    # Each event exactly once. The order is the log's (when fan-out recorded each event), which
    # concurrent fan-out may make differ from the order the publishes were answered.
    assert sorted(seen) == sorted(published) and len(seen) == len(set(seen))
    again = requests.get(location, headers=connector.headers, timeout=30)
    assert again.status_code == 202


def test_replay_is_an_async_action_the_platform_polls(relay, connector, receiver_factory, unique_type) -> None:
    """The replay action answers 202 with Location; following it ends in 200, and the failed event is sent again."""
    refuse_first = receiver_factory(lambda got, i: (400, {}, b"") if i == 0 else (202, {}, b""))
    sub = relay.subscribe(refuse_first.url, eventTypes=[unique_type])
    event_id = publish(relay, unique_type, 1)
    refuse_first.wait_for(1)
    wait_until(
        lambda: relay.get(f"subscriptions/{sub['id']}/deliveries", params={"status": "failed"}).json()["value"],
        30,
        "the delivery to be logged as failed",
    )

    path, method, op, _ = connector.operation(lambda p, m, o: o["operationId"] == "ReplayDeliveries")
    started = connector.call(method, path.replace("{id}", sub["id"]), json={"since": "2000-01-01T00:00:00Z"})
    assert started.status_code == 202 and "202" in op["responses"], started.text
    location = started.headers["Location"]
    assert int(started.headers["Retry-After"]) >= 0

    def finished() -> requests.Response | None:
        answer = requests.get(location, headers=connector.headers, timeout=30)
        assert answer.status_code in (200, 202), answer.text
        return answer if answer.status_code == 200 else None

    done = wait_until(finished, 60, "the replay to finish")
    assert done.json()["status"] == "succeeded" and done.json()["replayed"] == 1
    again = refuse_first.wait_for(2)[1]
    assert again.headers["webhook-id"] == event_id


def test_logic_apps_http_webhook_trigger_subscribes_and_unsubscribes_by_url(
    relay, receiver_factory, unique_type
) -> None:
    """The HTTP Webhook trigger subscribes with its callback URL and unsubscribes by POSTing the same URL."""
    sentinel, callback = receiver_factory(), receiver_factory(accept_as_a_flow)
    relay.subscribe(sentinel.url, eventTypes=[unique_type])
    subscribe = relay.post("subscriptions", {"notificationUrl": callback.url, "eventTypes": [unique_type]})
    assert subscribe.status_code == 201, subscribe.text
    first = publish(relay, unique_type, 1)
    assert callback.wait_for(1)[0].headers["webhook-id"] == first

    assert relay.post("unsubscribe", {"notificationUrl": callback.url}).status_code == 200
    assert relay.get(f"subscriptions/{subscribe.json()['id']}").status_code == 404
    settle(relay, sentinel, [first, publish(relay, unique_type, 2)])
    assert callback.ids() == [first]
    assert relay.post("unsubscribe", {"notificationUrl": callback.url}).status_code == 200


def test_logic_apps_http_webhook_action_is_called_back_once(relay, receiver_factory, unique_type) -> None:
    """The HTTP Webhook action subscribes with once: true; its first delivery removes it, so a second is not sent."""
    sentinel, callback = receiver_factory(), receiver_factory(accept_as_a_flow)
    relay.subscribe(sentinel.url, eventTypes=[unique_type])
    sub = relay.subscribe(callback.url, eventTypes=[unique_type], once=True)
    assert sub["once"] is True
    first = publish(relay, unique_type, 1)
    assert callback.wait_for(1)[0].headers["webhook-id"] == first
    wait_until(
        lambda: relay.get(f"subscriptions/{sub['id']}").status_code == 404,
        30,
        "the once subscription to be removed after its delivery",
    )

    settle(relay, sentinel, [first, publish(relay, unique_type, 2)])
    assert callback.ids() == [first]
    # The action's unsubscribe call, made when the run moves on, finds nothing and is still 200.
    assert relay.post("unsubscribe", {"notificationUrl": callback.url}).status_code == 200


def test_a_flow_on_an_unregistered_type_receives_any_json_data(relay, receiver_factory, unique_type) -> None:
    """The designer's schema call answers for an unregistered type; events published through the
    connector's actions (one and batch) with object, array, string, number, boolean and null data
    all match the notification content."""
    connector = Connector(relay)
    sentinel = receiver_factory()
    relay.subscribe(sentinel.url, eventTypes=[unique_type])
    flow = Flow(connector, unique_type)
    callback = receiver_factory(accept_as_a_flow)
    location = flow.save(callback.url)

    values = [{"n": 1}, [1, "two"], "three", 4, 5.5, True, None]
    path, method, _, _ = connector.by_id("PublishEvent")
    ids = []
    for value in values[:4]:
        answer = connector.call(method, path, json={"type": unique_type, "data": value})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    path, method, _, _ = connector.by_id("PublishEvents")
    answer = connector.call(method, path, json=[{"type": unique_type, "data": v} for v in values[4:]])
    assert answer.status_code == 202, answer.text
    ids += [item["id"] for item in answer.json()["value"]]
    assert connector.call(method, path, json={"type": unique_type, "data": 1}).status_code == 400

    settle(relay, sentinel, ids)
    assert sorted(flow.check(callback)) == sorted(ids)
    assert sorted((r.json()["data"] for r in callback.requests), key=json.dumps) == sorted(values, key=json.dumps)
    flow.remove(location)


def test_every_released_operation_is_still_there() -> None:
    """Versioning: each operation of a released definition still exists with its path and method; an
    operation that changed shape kept its old id, deprecated and internal; info.version is the package's."""
    from relay import __version__
    from relay.http.connector import EXAMPLE_HOST, definition

    current = definition(EXAMPLE_HOST)
    assert current["info"]["version"] == __version__
    changelog = (Path(__file__).resolve().parent.parent / "CHANGELOG.md").read_text(encoding="utf-8")
    now = {
        op["operationId"]: (path, method, op)
        for path, item in current["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }
    for version in RELEASED:
        assert f"## {version}" in changelog and f"## {__version__}" in changelog
        frozen = json.loads((FIXTURES / f"connector-v{version}" / "apiDefinition.swagger.json").read_text())
        for path, item in frozen["paths"].items():
            for method, op in item.items():
                if method not in METHODS:
                    continue
                assert op["operationId"] in now, f"{op['operationId']} of {version} is gone"
                assert now[op["operationId"]][:2] == (path, method), op["operationId"]
                old = {p["name"] for p in op["parameters"]}
                required_now = {p["name"] for p in now[op["operationId"]][2]["parameters"] if p.get("required")}
                assert required_now <= old, f"{op['operationId']} requires a new input"
    for _, _, op in now.values():
        if op.get("deprecated"):
            assert op["x-ms-visibility"] == "internal", op["operationId"]


# ---- Logic Apps HTTP Webhook: unsubscribe by the workflow headers ---------------------------------


def logic_apps_headers(workflow: str, operation: str, tracking: str) -> dict[str, str]:
    """What Logic Apps sends with the HTTP Webhook's subscribe and unsubscribe calls."""
    return {
        "x-ms-workflow-id": workflow,
        "x-ms-workflow-operation-name": operation,
        "x-ms-client-tracking-id": tracking,
    }


def test_logic_apps_webhook_unsubscribes_by_workflow_headers_without_a_url(
    relay, receiver_factory, unique_type
) -> None:
    """The trigger subscribes with its headers; its unsubscribe (no listCallbackUrl(), another tracking id)
    removes that subscription and no other workflow's; a second one is still 200."""
    mine, other = receiver_factory(accept_as_a_flow), receiver_factory(accept_as_a_flow)
    workflow = f"/workflows/{unique_type}"
    sub = relay.post(
        "subscriptions",
        {"notificationUrl": mine.url, "eventType": unique_type},
        headers=logic_apps_headers(workflow, "When_an_event_arrives", "t-1"),
    )
    assert sub.status_code == 201, sub.text
    kept = relay.post(
        "subscriptions",
        {"notificationUrl": other.url, "eventType": unique_type},
        headers=logic_apps_headers(workflow + "-other", "When_an_event_arrives", "t-2"),
    )
    assert kept.status_code == 201

    # The unsubscribe body the docs show: no callback URL.
    gone = relay.post("unsubscribe", {}, headers=logic_apps_headers(workflow, "When_an_event_arrives", "t-9"))
    assert gone.status_code == 200, gone.text
    assert relay.get(f"subscriptions/{sub.json()['id']}").status_code == 404
    assert relay.get(f"subscriptions/{kept.json()['id']}").status_code == 200
    again = relay.session.post(
        f"{relay.base}/unsubscribe", timeout=30, headers=logic_apps_headers(workflow, "When_an_event_arrives", "t-9")
    )
    assert again.status_code == 200  # no body at all, nothing left: still 200
    assert relay.post("unsubscribe", {}).status_code == 400  # neither a URL nor headers


def test_logic_apps_webhook_action_runs_are_told_apart_by_tracking_id(relay, receiver_factory, unique_type) -> None:
    """Two runs of one action share workflow id and operation name: each run's unsubscribe removes its own."""
    workflow = f"/workflows/{unique_type}"
    runs = {}
    for run in ("run-a", "run-b"):
        answer = relay.post(
            "subscriptions",
            {"notificationUrl": receiver_factory().url, "eventType": unique_type, "once": True},
            headers=logic_apps_headers(workflow, "Wait_for_the_event", run),
        )
        assert answer.status_code == 201
        runs[run] = answer.json()["id"]
    assert (
        relay.post("unsubscribe", {}, headers=logic_apps_headers(workflow, "Wait_for_the_event", "run-a")).status_code
        == 200
    )
    assert relay.get(f"subscriptions/{runs['run-a']}").status_code == 404
    assert relay.get(f"subscriptions/{runs['run-b']}").status_code == 200
    # Only the tracking id (no workflow headers): found by it.
    assert relay.post("unsubscribe", {}, headers={"x-ms-client-tracking-id": "run-b"}).status_code == 200
    assert relay.get(f"subscriptions/{runs['run-b']}").status_code == 404


def readme_webhooks() -> dict[str, dict[str, Any]]:
    """The HTTP Webhook trigger and action as docs/power-platform.md gives them, by name."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "power-platform.md").read_text(encoding="utf-8")
    start = docs.index("## Logic Apps without the connector")
    end = docs.find("\n## ", start + 1)
    section = docs[start : end if end >= 0 else len(docs)]
    found: dict[str, dict[str, Any]] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                if isinstance(value, dict) and value.get("type") == "HttpWebhook":
                    found[name] = value
                visit(value)

    for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL):
        text = block.strip()
        visit(json.loads(text if text.startswith("{") else "{" + text + "}"))
    return found


def test_the_readme_webhook_snippets_subscribe_and_unsubscribe(relay, receiver_factory, unique_type) -> None:
    """The documented trigger and action, sent as Logic Apps sends them (its headers, the key from the secure
    parameter), subscribe; their unsubscribe, without listCallbackUrl(), removes the subscription."""
    webhooks = readme_webhooks()
    assert set(webhooks) == {"When_an_order_is_created", "Wait_for_the_order_to_ship"}
    for name, webhook in webhooks.items():
        assert webhook["runtimeConfiguration"]["secureData"]["properties"] == ["inputs"]
        subscribe, unsubscribe = webhook["inputs"]["subscribe"], webhook["inputs"]["unsubscribe"]
        assert "listCallbackUrl" not in json.dumps(unsubscribe)
        # The relay answers a body without a JSON Content-Type with 415, so the snippets name it.
        assert (
            subscribe["headers"]
            == unsubscribe["headers"]
            == {"x-functions-key": "@parameters('relayKey')", "Content-Type": "application/json"}
        )

        callback = receiver_factory(accept_as_a_flow)
        body = json.loads(
            json.dumps(subscribe["body"])
            .replace("@{listCallbackUrl()}", callback.url)
            .replace("@{triggerBody()?['data']?['orderId']}", "1042")
        )
        body["eventTypes"] = [unique_type]
        headers = {"x-functions-key": FUNCTION_KEY, **logic_apps_headers(f"/workflows/{unique_type}", name, "r-1")}
        path = urlsplit(subscribe["uri"]).path
        made = requests.post(relay.base.removesuffix("/api") + path, json=body, headers=headers, timeout=30)
        assert made.status_code == 201, made.text
        headers["x-ms-client-tracking-id"] = "r-2"
        path = urlsplit(unsubscribe["uri"]).path
        gone = requests.post(
            relay.base.removesuffix("/api") + path, json=unsubscribe["body"], headers=headers, timeout=30
        )
        assert gone.status_code == 200, gone.text
        assert relay.get(f"subscriptions/{made.json()['id']}").status_code == 404, name


# ---- key changes: the relay's token key and the connection's function key ------------------------

KEY_1, KEY_2, KEY_3 = ("k1-" + "a" * 40), ("k2-" + "b" * 40), ("k3-" + "c" * 40)


def _same_port(
    azurite: Any, before: RelayProcess, env: dict[str, str], function_key: str = FUNCTION_KEY
) -> RelayProcess:
    """The relay restarted with other settings, at the same address (as an app restarts after its
    settings change): the Locations a flow holds still point at it."""
    before.stop()
    after = RelayProcess(azurite, env, function_key)
    after.port = before.port
    return after.start()


@pytest.mark.parametrize("version", ["current", *RELEASED])
def test_a_polling_flow_keeps_polling_through_a_token_key_rotation(
    azurite: Any, unique_type: str, version: str
) -> None:
    """The operator rotates RELAY_TOKEN_KEY with the old one as RELAY_TOKEN_KEY_PREVIOUS: the
    flow's next poll, with a state signed by the old key, goes on where it was (no event again,
    none lost). Then the old key is dropped without a PREVIOUS (or the keys table is lost): the
    state the flow holds can no longer be verified, and its poll is a 202 with a Location that
    starts afresh from that call, never a 400 the engine would repeat until someone re-saves it."""
    relay = RelayProcess(azurite, {"RELAY_TOKEN_KEY": KEY_1}).start()
    try:
        connector = Connector(relay, version)
        path, method, _, _ = connector.operation(lambda p, m, o: o.get("x-ms-trigger") == "batch")
        first = connector.call(method, path, params={"eventType": unique_type})
        assert first.status_code == 202
        location = first.headers["Location"]

        def poll_until(wanted: set[str]) -> list[str]:
            nonlocal location
            seen: list[str] = []

            def once() -> bool:
                nonlocal location
                answer = requests.get(location, headers=connector.headers, timeout=30)
                assert answer.status_code in (200, 202), answer.text
                location = answer.headers["Location"]
                if answer.status_code == 200:
                    seen.extend(e["id"] for e in answer.json()["value"])
                return wanted <= set(seen)

            wait_until(once, 60, f"the polling trigger to see {sorted(wanted)}")
            return seen

        e1 = publish(relay, unique_type, 1)
        assert poll_until({e1}) == [e1]

        relay = _same_port(azurite, relay, {"RELAY_TOKEN_KEY": KEY_2, "RELAY_TOKEN_KEY_PREVIOUS": KEY_1})
        e2 = publish(relay, unique_type, 2)
        assert poll_until({e2}) == [e2]  # the old key's state went on where it was: e1 not again

        relay = _same_port(azurite, relay, {"RELAY_TOKEN_KEY": KEY_3})
        e3 = publish(relay, unique_type, 3)
        unverifiable = requests.get(location, headers=connector.headers, timeout=30)
        assert unverifiable.status_code == 202, unverifiable.text
        assert unverifiable.headers["Retry-After"] and unverifiable.headers["Location"] != location
        location = unverifiable.headers["Location"]
        e4 = publish(relay, unique_type, 4)
        seen = poll_until({e4})
        assert e4 in seen and e3 not in seen and e2 not in seen  # a fresh chain: nothing from before it
    finally:
        relay.stop()


def test_a_webhook_flow_survives_a_function_key_rotation(azurite: Any, receiver_factory: Any, unique_type: str) -> None:
    """The operator rotates the function key and updates the flow's connection: the subscription
    made with the old key keeps receiving (deliveries carry no key), the old key is refused, and
    the platform's DELETE of the trigger's Location with the new key removes it."""
    relay = RelayProcess(azurite, {}, "old-key-" + "x" * 24).start()
    try:
        connector = Connector(relay)
        connector.headers = {name: "old-key-" + "x" * 24 for name in connector.headers}
        flow = Flow(connector, unique_type)
        receiver = receiver_factory(accept_as_a_flow)
        location = flow.save(receiver.url + "?sig=" + "s" * 20)

        relay = _same_port(azurite, relay, {}, "new-key-" + "y" * 24)
        assert requests.get(location, headers=connector.headers, timeout=30).status_code == 401  # the old key
        e1 = publish(relay, unique_type, 1)
        assert receiver.wait_for(1)[0].headers["webhook-id"] == e1
        connector.headers = {name: "new-key-" + "y" * 24 for name in connector.headers}
        flow.remove(location)
        assert requests.get(location, headers=connector.headers, timeout=30).status_code == 404
    finally:
        relay.stop()
