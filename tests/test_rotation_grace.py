"""Secret rotation with a grace period (issue 23 item 1, CONTRACT section 6): after
`POST /api/subscriptions/{id}/secret` with `graceSeconds`, each delivery's `webhook-signature`
carries the new secret's and the previous one's signatures until the grace ends, then the new
one's only; `0` switches at once. Verified with the real Standard Webhooks libraries, Python's
`standardwebhooks` and npm's `standardwebhooks` (run by node)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relay.core import clock
from relay.outbound import signing
from relay.store.subscriptions import SubscriptionStore
from tests.helpers import InProcessApp, Received, problem_of

ROOT = Path(__file__).resolve().parent.parent
VERIFY_JS = Path(__file__).resolve().parent / "js" / "verify_webhooks.js"


def _verifies(secret: str, got: Received) -> bool:
    try:
        Webhook(secret).verify(got.body, got.headers)
    except WebhookVerificationError:
        return False
    return True


def _verified_by_js(secrets: dict[str, str], deliveries: list[Received]) -> list[dict[str, bool]]:
    """Each delivery checked by the npm `standardwebhooks` package: {secret name: verifies}."""
    node = shutil.which("node")
    assert node is not None, "node is needed: the JavaScript verifier is a real client"
    doc = {
        "secrets": secrets,
        "deliveries": [{"headers": d.headers, "body": d.body.decode("utf-8")} for d in deliveries],
    }
    done = subprocess.run(
        [node, str(VERIFY_JS)], input=json.dumps(doc), capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    verdicts: list[dict[str, bool]] = json.loads(done.stdout)
    return verdicts


def test_inside_the_grace_either_secret_verifies_after_it_the_new_one_only(
    relay, receiver_factory, unique_type
) -> None:
    """A retry queued before the rotation and events published inside the grace verify with the
    old and with the new secret (two `v1,` entries); a retry planned inside the grace but sent after
    it, and events published after it, verify with the new secret only. The read shows when the
    grace ends, and stops showing it once it has."""
    grace = 20
    before, late = f"before-{uuid.uuid4().hex}", f"late-{uuid.uuid4().hex}"
    failed_once: set[str] = set()

    def script(req: Received, index: int) -> tuple[int, dict[str, str], bytes]:
        event_id = req.headers["webhook-id"]
        if event_id in (before, late) and event_id not in failed_once:
            failed_once.add(event_id)
            # `before` comes back inside the grace; `late` only after it has ended.
            return 503, {"Retry-After": "3" if event_id == before else str(grace + 4)}, b""
        return 200, {}, b""

    receiver = receiver_factory(script)
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    old = sub["secret"]

    relay.publish({"type": unique_type, "id": before, "data": "queued before the rotation"})
    first_try = receiver.wait_for(1)[0]
    assert first_try.headers["webhook-signature"].count("v1,") == 1 and _verifies(old, first_try)

    rotated_at = datetime.now(UTC)
    rotated = relay.post(f"subscriptions/{sub['id']}/secret", {"graceSeconds": grace})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != old
    ends = clock.parse_rfc3339(rotated.json()["previousSecretExpiresAt"])
    assert rotated_at + timedelta(seconds=grace - 5) <= ends <= rotated_at + timedelta(seconds=grace + 5)
    shown = relay.get(f"subscriptions/{sub['id']}").json()
    assert shown["previousSecretExpiresAt"] == rotated.json()["previousSecretExpiresAt"]
    assert "secret" not in shown and old not in json.dumps(shown)

    relay.publish({"type": unique_type, "id": late, "data": "retried after the grace"})
    relay.publish([{"type": unique_type, "data": f"inside {n}"} for n in range(3)])
    # first try of `before`, its retry, the first try of `late` and the three published inside
    inside = receiver.wait_for(6, timeout=60)
    labels = {r.json()["data"] for r in inside[1:]}
    assert labels == {"queued before the rotation", "retried after the grace", "inside 0", "inside 1", "inside 2"}

    # The retry of `late` is planned inside the grace and sent after it.
    receiver.wait_for(7, timeout=grace + 60)
    assert datetime.now(UTC) >= ends, "the late retry arrived before the grace ended"
    assert "previousSecretExpiresAt" not in relay.get(f"subscriptions/{sub['id']}").json()
    relay.publish([{"type": unique_type, "data": f"after {n}"} for n in range(2)])
    delivered = receiver.wait_for(9, timeout=60)[1:]

    late_tries = [r for r in delivered if r.json()["data"] == "retried after the grace"]
    assert len(late_tries) == 2
    after = [r for r in delivered if r.json()["data"].startswith("after")] + late_tries[1:]
    # the retry of `before`, `late`'s first try and the three published inside
    in_grace = [r for r in delivered if all(r is not a for a in after)]
    assert len(in_grace) == 5
    assert sorted(r.json()["data"] for r in after) == ["after 0", "after 1", "retried after the grace"]
    for got in in_grace:
        assert int(got.headers["webhook-timestamp"]) < ends.timestamp()
        assert got.headers["webhook-signature"].count("v1,") == 2, got.headers["webhook-signature"]
        assert _verifies(new, got) and _verifies(old, got), got.json()["data"]
    for got in after:
        assert int(got.headers["webhook-timestamp"]) >= int(ends.timestamp())
        assert got.headers["webhook-signature"].count("v1,") == 1, got.headers["webhook-signature"]
        assert _verifies(new, got) and not _verifies(old, got), got.json()["data"]

    by_js = _verified_by_js({"old": old, "new": new}, in_grace + after)
    assert by_js == [{"old": True, "new": True}] * len(in_grace) + [{"old": False, "new": True}] * len(after)
    logs = relay.logs()
    assert old not in logs and new not in logs


def test_grace_zero_switches_at_once_even_for_queued_retries(relay, receiver_factory, unique_type) -> None:
    """`graceSeconds: 0` (a leaked secret): no delivery after the answer carries the old secret's
    signature, a retry queued before the rotation included; the read shows no grace."""
    retried = f"evt-{uuid.uuid4().hex}"
    seen: list[str] = []

    def script(req: Received, index: int) -> tuple[int, dict[str, str], bytes]:
        if req.headers["webhook-id"] == retried and retried not in seen:
            seen.append(retried)
            return 503, {"Retry-After": "3"}, b""
        return 200, {}, b""

    receiver = receiver_factory(script)
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    old = sub["secret"]
    relay.publish({"type": unique_type, "id": retried, "data": "queued"})
    receiver.wait_for(1)
    rotated = relay.post(f"subscriptions/{sub['id']}/secret", {"graceSeconds": 0})
    assert rotated.status_code == 200 and "previousSecretExpiresAt" not in rotated.json()
    new = rotated.json()["secret"]
    assert "previousSecretExpiresAt" not in relay.get(f"subscriptions/{sub['id']}").json()
    relay.publish({"type": unique_type, "data": "after"})
    later = receiver.wait_for(3)[1:]
    for got in later:
        assert got.headers["webhook-signature"].count("v1,") == 1
        assert _verifies(new, got) and not _verifies(old, got)
    assert _verified_by_js({"old": old, "new": new}, later) == [{"old": False, "new": True}] * 2


@pytest.mark.parametrize(
    "body",
    [
        {"graceSeconds": -1},
        {"graceSeconds": 604_801},
        {"graceSeconds": "60"},
        {"graceSeconds": 1.5},
        {"graceSeconds": True},
        {"graceSeconds": None},
    ],
)
def test_a_grace_out_of_range_is_a_400_naming_it(app: InProcessApp, body: dict[str, Any]) -> None:
    sub = app.subscribe(f"http://127.0.0.1:9/hook/{uuid.uuid4().hex}")
    problem = problem_of(app.post(f"subscriptions/{sub['id']}/secret", body), 400, "graceSeconds")
    assert problem["title"]
    assert app.get(f"subscriptions/{sub['id']}").json().get("previousSecretExpiresAt") is None


def test_the_default_grace_is_a_day_and_a_second_rotation_keeps_two_signatures(
    app: InProcessApp, app_storage, unique_type: str
) -> None:
    """No body (the console, older clients): the previous secret signs for 86,400 s. Rotating
    again inside the grace keeps the secret it replaced, not the oldest: two signatures at most.
    What fan-out hands the attempt (the index row) and what a replay uses carry both."""
    sub = app.subscribe(f"http://127.0.0.1:9/hook/{uuid.uuid4().hex}", eventTypes=[unique_type])
    first = sub["secret"]
    start = datetime.now(UTC)
    answer = app.post(f"subscriptions/{sub['id']}/secret")
    assert answer.status_code == 200, answer.text
    second = answer.json()["secret"]
    ends = clock.parse_rfc3339(answer.json()["previousSecretExpiresAt"])
    assert start + timedelta(seconds=86_400 - 60) <= ends <= start + timedelta(seconds=86_400 + 60)
    assert app.post(f"subscriptions/{sub['id']}/secret", {"graceSeconds": 604_800}).status_code == 200
    third = SubscriptionStore(app_storage).get(sub["id"])
    assert third is not None and third.secret not in (first, second)

    pages = SubscriptionStore(app_storage).matching(unique_type, None)
    targets = [t for page in pages for t in page if t.sub == sub["id"]]
    assert [(t.secret, t.previous) for t in targets] == [(third.secret, second)]
    replay = third.replay_target()
    assert (replay.secret, replay.previous) == (third.secret, second)
    now = clock.utcnow()
    body = b'{"data":1}'
    got = Received(
        "/", signing.headers(secret=third.secret, previous=second, event_id="e1", body=body, now=now), body, 0
    )
    assert [_verifies(s, got) for s in (first, second, third.secret)] == [False, True, True]
