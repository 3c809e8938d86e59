"""Secrets stay with their owner: the function key never leaves in an event or a stored row, a
callback URL's query is shown only in the 201 that created it, and a signing secret only in that
201 or in the answer of the rotation that replaced it."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import requests
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.helpers import wait_until


def _everything_stored(connection_string: str) -> str:
    """Every table row, blob and queue message in the storage account, as one text."""
    parts: list[str] = []
    tables = TableServiceClient.from_connection_string(connection_string)
    for table in tables.list_tables():
        parts += [json.dumps(dict(e), default=str) for e in tables.get_table_client(table.name).list_entities()]
    blobs = BlobServiceClient.from_connection_string(connection_string)
    for container in blobs.list_containers():
        client = blobs.get_container_client(container.name)
        parts += [client.download_blob(b.name).readall().decode(errors="replace") for b in client.list_blobs()]
    queues = QueueServiceClient.from_connection_string(connection_string)
    for queue in queues.list_queues():
        for message in queues.get_queue_client(queue.name).peek_messages(max_messages=32):
            parts.append(message.content)
            try:
                parts.append(base64.b64decode(message.content).decode(errors="replace"))
            except ValueError:
                pass
    return "\n".join(parts)


def test_the_function_key_goes_back_only_to_its_caller(relay_factory, receiver_factory, azurite, unique_type) -> None:
    """Published with ?code=KEY: the CloudEvent, polls, replays, the stored rows, blobs, queue
    messages and logs carry no key; only the caller's own Location and nextLink do."""
    key = f"key-{uuid.uuid4().hex}"
    relay = relay_factory(function_key=key)
    session = relay.session
    session.headers.pop("x-functions-key")
    code = {"code": key}
    receiver = receiver_factory()
    created = session.post(
        f"{relay.base}/subscriptions",
        params=code,
        timeout=30,
        json={"notificationUrl": receiver.url, "eventTypes": [unique_type]},
    )
    assert created.status_code == 201 and f"code={key}" in created.headers["Location"]
    sub = created.json()
    first = session.get(f"{relay.base}/events/poll", params={"eventType": unique_type, **code}, timeout=30)
    assert first.status_code == 202 and f"code={key}" in first.headers["Location"]
    published = session.post(
        f"{relay.base}/events",
        params=code,
        timeout=30,
        json=[{"type": unique_type, "data": {"small": 1}}, {"type": unique_type, "data": {"large": "x" * 40_000}}],
    )  # the second goes to a blob
    assert published.status_code == 202

    delivered = receiver.wait_for(2)
    for got in delivered:
        assert key not in got.body.decode() and key not in json.dumps(got.headers)
        assert got.json()["source"] == f"{relay.base}/events"

    url = first.headers["Location"]

    def poll() -> list | None:
        nonlocal url
        answer = session.get(url, timeout=30)
        assert f"code={key}" in answer.headers["Location"]  # the caller's own chain keeps its key
        url = answer.headers["Location"]
        return answer.json()["value"] if answer.status_code == 200 else None

    polled = wait_until(poll, 60, "the events in a poll")
    assert polled and all(e["source"] == f"{relay.base}/events" for e in polled)
    assert key not in json.dumps(polled)

    since = sub["createdAt"]
    replay = session.post(
        f"{relay.base}/subscriptions/{sub['id']}/replay",
        params=code,
        timeout=30,
        json={"since": since, "status": "all"},
    )
    assert replay.status_code == 202 and f"code={key}" in replay.headers["Location"]
    wait_until(
        lambda: session.get(replay.headers["Location"], timeout=30).status_code == 200, 60, "the replay to finish"
    )
    for got in receiver.wait_for(4):
        assert key not in got.body.decode()
    wait_until(relay.queue_idle, 30, "work queues to drain")

    assert key not in _everything_stored(azurite.connection_string)
    assert key not in relay.logs()


def test_a_callback_query_is_shown_only_in_the_201_that_created_it(
    relay, receiver_factory, unique_type, refused_port
) -> None:
    """Reads, lists, a repeated subscribe and the delivery log mask every query value; the
    receiver still gets its URL byte for byte; no log line carries the sig."""
    sig = f"S3CRET{uuid.uuid4().hex}"
    receiver = receiver_factory()
    url = f"{receiver.url}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sig={sig}"
    masked = f"{receiver.url}?api-version=***&sp=***&sig=***"
    sub = relay.subscribe(url, eventTypes=[unique_type])
    assert sub["notificationUrl"] == url  # the caller that sent it gets it back once

    assert relay.get(f"subscriptions/{sub['id']}").json()["notificationUrl"] == masked
    listed = relay.get(f"subscriptions?eventType={unique_type}").json()["value"]
    assert [s["notificationUrl"] for s in listed if s["id"] == sub["id"]] == [masked]
    again = relay.post("subscriptions", {"notificationUrl": url, "eventTypes": [unique_type]})
    assert again.status_code == 201 and again.json()["notificationUrl"] == masked

    dead = f"http://127.0.0.1:{refused_port}/hook?sig={sig}"
    dead_sub = relay.subscribe(dead, eventTypes=[unique_type])
    relay.publish({"type": unique_type, "data": 1})
    got = receiver.wait_for(1)[0]
    assert got.path == url[url.index("/hook") :]  # sent byte for byte
    row = wait_until(
        lambda: next(iter(relay.get(f"subscriptions/{dead_sub['id']}/deliveries?status=failed").json()["value"]), None),
        60,
        "the failed delivery",
    )
    assert sig not in json.dumps(row)
    assert sig not in relay.get(f"subscriptions/{dead_sub['id']}").text
    assert sig not in relay.logs()


def test_subscribing_again_does_not_repeat_the_secret(relay, receiver_factory) -> None:
    """The same URL again: 201, the same id (a Location of its own registration), and no secret."""
    receiver = receiver_factory()
    first = relay.subscribe(receiver.url)
    again = relay.post("subscriptions", {"notificationUrl": receiver.url})
    assert again.status_code == 201
    assert again.json()["id"] == first["id"]
    assert again.headers["Location"] == first["location"].replace("registration=1", "registration=2")
    assert "secret" not in again.json() and first["secret"] not in again.text


def test_rotating_the_secret_signs_every_later_delivery_with_the_new_one(relay, receiver_factory, unique_type) -> None:
    """POST /subscriptions/{id}/secret with graceSeconds 0 (a leak) answers a new whsec_ secret; the
    next delivery, and a retry that was queued before the rotation, verify with it and not with the
    old one. (Without a body the old one signs beside it for a day: tests/test_rotation_grace.py.)"""
    retried = f"evt-{uuid.uuid4().hex}"
    seen: list[str] = []

    def script(req, index):
        if req.headers["webhook-id"] == retried and retried not in seen:
            seen.append(retried)
            return 503, {"Retry-After": "3"}, b""
        return 200, {}, b""

    receiver = receiver_factory(script)
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    old = sub["secret"]

    relay.publish({"type": unique_type, "id": retried, "data": "queued before the rotation"})
    first_try = receiver.wait_for(1)[0]
    Webhook(old).verify(first_try.body, first_try.headers)
    rotated = relay.post(f"subscriptions/{sub['id']}/secret", {"graceSeconds": 0})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != old and rotated.json()["id"] == sub["id"]
    assert "secret" not in relay.get(f"subscriptions/{sub['id']}").json()

    relay.publish({"type": unique_type, "data": "after the rotation"})
    later = receiver.wait_for(3)[1:]
    assert sorted(r.json()["data"] for r in later) == ["after the rotation", "queued before the rotation"]
    for got in later:
        assert Webhook(new).verify(got.body, got.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(old).verify(got.body, got.headers)
    assert new not in relay.logs() and old not in relay.logs()

    assert relay.post(f"subscriptions/{uuid.uuid4().hex}/secret").status_code == 404
    assert relay.post(f"subscriptions/{sub['id']}%0A/secret").status_code == 400  # a control character
    assert relay.get(f"subscriptions/{sub['id']}/secret").status_code == 405
    assert requests.post(f"{relay.base}/subscriptions/{sub['id']}/secret", timeout=30).status_code == 401
