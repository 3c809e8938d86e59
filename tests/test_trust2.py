"""Trust, second pass (issue 18 items 2, 7, 8, 9, 11-14; issue 19 item 2; CONTRACT sections 4 and 6):
path tokens masked everywhere a query is, owners keyed on tenant and object id, no trust-the-
header dev host, unverifiable polling states starting a fresh chain, duplicates said and owned by
their publisher, cross-site writes refused, slow clients timed out and gone ones logged in a line.

Mocked, and only this: Microsoft Entra ID's servers (tokens are minted from a test RSA key, as in
tests/test_entra.py). Everything else is the real dev host on Azurite, over loopback sockets.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from relay.core.redaction import mask_url, redact_url, scrub
from relay.http.access import ADMIN, PUBLISHER, SUBSCRIBER, owner_key, parse_principal
from relay.store.storage import Endpoints, Storage
from relay.store.subscriptions import SubscriptionStore
from relay_dev.easyauth import client_principal
from tests.helpers import FUNCTION_KEY, ROOT, Receiver, RelayProcess, free_port, problem_of, wait_until
from tests.test_entra import AUDIENCE, ENTRA_ENV, ISSUER, KID, SIGNING_KEY, TENANT, Tokens, jwks_file

SLACK_TOKEN = "xoxbAbCdEfGhIjKlMnOpQrStUvWx"  # 28 characters, as Slack's are
TEAMS_TOKEN = "0123456789abcdef0123456789abcdef"


# ---- item 2: path tokens --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secrets", "kept"),
    [
        (
            f"https://hooks.slack.com/services/T0123ABCD/B0123ABCD/{SLACK_TOKEN}",
            [SLACK_TOKEN],
            "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/***",
        ),
        (
            "https://contoso.webhook.office.com/webhookb2/0f8fad5b-d9cb-469f-a165-70867728950e@"
            f"72f988bf-86f1-41af-91ab-2d7cd011db47/IncomingWebhook/{TEAMS_TOKEN}/"
            "1c1e2a7b-7e3a-4e5c-9b1a-2f3d4e5f6a7b",
            [TEAMS_TOKEN, "0f8fad5b-d9cb-469f-a165-70867728950e"],
            "https://contoso.webhook.office.com/webhookb2/***/IncomingWebhook/***/***",
        ),
        (
            "https://discord.com/api/webhooks/123456789012345678/AbCdEfGhIjKlMnOpQrStUvWxYz_0123456789-abcdefghij",
            ["123456789012345678", "AbCdEfGhIjKlMnOpQrStUvWxYz_0123456789-abcdefghij"],
            "https://discord.com/api/webhooks/***/***",
        ),
    ],
    ids=["slack", "teams", "discord"],
)
def test_every_long_path_segment_is_masked_in_each_form(url: str, secrets: list[str], kept: str) -> None:
    """CONTRACT section 6: a segment of 16 or more characters is masked wherever a query value is."""
    assert mask_url(url) == kept
    assert mask_url(url + "?sig=abc") == kept + "?sig=***"
    assert redact_url(url + "?sig=abc") == kept + "?…redacted"
    text = f"POST {url} failed: 404 for url: {url}"
    for shown in (mask_url(url), redact_url(url), scrub(text, url)):
        assert shown is not None
        for secret in secrets:
            assert secret not in shown
    assert mask_url("https://example.com/hooks/short") == "https://example.com/hooks/short"


def test_urllib3_lines_lose_path_tokens_too(caplog: pytest.LogCaptureFixture) -> None:
    """urllib3 writes the request target in some warnings: its long path segments go with its query."""
    import logging

    import relay.outbound.transport  # noqa: F401 - installs the filter on urllib3's loggers

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        logging.getLogger("urllib3.connectionpool").warning(
            "Retrying after connection broken by %r: %s", "reset", f"/services/T0123ABCD/B0123ABCD/{SLACK_TOKEN}?sig=s"
        )
    assert SLACK_TOKEN not in caplog.text and "/services/T0123ABCD/B0123ABCD/***" in caplog.text


def _admin(relay: RelayProcess, *args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "relay", "admin", "--url", f"http://127.0.0.1:{relay.port}", "--key", FUNCTION_KEY]
        + list(args)
        + ["--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_path_token_is_shown_only_in_the_201_that_created_it(
    relay: RelayProcess, receiver_factory: Any, unique_type: str, refused_port: int
) -> None:
    """GET, the list, the filtered list, the delivery log, the dev host's log and the admin CLI's
    --json mask the Slack-style token; the receiver still gets its path byte for byte."""
    receiver: Receiver = receiver_factory()
    token = f"{SLACK_TOKEN}{uuid.uuid4().hex[:8]}"
    url = f"{receiver.url}/services/T0123ABCD/B0123ABCD/{token}"
    sub = relay.subscribe(url, eventTypes=[unique_type])
    assert sub["notificationUrl"] == url  # the caller that sent it gets it back once
    masked = f"{receiver.url}/services/T0123ABCD/B0123ABCD/***"

    dead_token = f"Dead{uuid.uuid4().hex}"
    dead = relay.subscribe(f"http://127.0.0.1:{refused_port}/services/T1/B1/{dead_token}", eventTypes=[unique_type])
    relay.publish({"type": unique_type, "data": 1})
    got = receiver.wait_for(1)[0]
    assert got.path.endswith(f"/services/T0123ABCD/B0123ABCD/{token}")  # sent byte for byte

    assert relay.get(f"subscriptions/{sub['id']}").json()["notificationUrl"] == masked
    listed = relay.get("subscriptions?limit=100").json()
    filtered = relay.get(f"subscriptions?eventType={unique_type}").json()["value"]
    assert [s["notificationUrl"] for s in filtered if s["id"] == sub["id"]] == [masked]
    failed = wait_until(
        lambda: relay.get(f"subscriptions/{dead['id']}/deliveries?status=failed").json()["value"],
        60,
        "the failed delivery",
    )
    shown = _admin(relay, "subscriptions", "list") + _admin(relay, "subscriptions", "show", sub["id"])
    shown += _admin(relay, "deliveries", "list", dead["id"])
    assert masked in shown
    wait_until(relay.queue_idle, 30, "work queues to drain")
    for surface, text in {
        "GET": relay.get(f"subscriptions/{dead['id']}").text,
        "list": json.dumps(listed),
        "filtered list": json.dumps(filtered),
        "delivery log": json.dumps(failed),
        "admin --json": shown,
        "dev host log": relay.logs(),
    }.items():
        assert token not in text and dead_token not in text, surface
    assert "/services/T1/B1/***" in relay.logs()  # the failures were logged, masked


# ---- item 7: owners keyed on tenant and object id ----------------------------------------------------


@pytest.fixture(scope="module")
def entra(azurite: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    jwks = jwks_file(tmp_path_factory.mktemp("entra2"))
    relay = RelayProcess(azurite, {**ENTRA_ENV, "RELAY_ENTRA_JWKS": str(jwks)}, function_key=None).start()
    yield relay
    relay.stop()


def _without_oid(roles: list[str], **claims: Any) -> str:
    """A validly signed token with no `oid` at all (Tokens.mint always adds one)."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now - 5, "exp": now + 3600, "tid": TENANT}
    return jwt.encode({**body, "roles": roles, **claims}, SIGNING_KEY, algorithm="RS256", headers={"kid": KID})


def _as(relay: RelayProcess, token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def test_a_subject_is_never_read_as_another_users_object_id(entra: RelayProcess) -> None:
    """A token without `oid` whose `sub` is a victim's `oid` neither reads, lists nor takes over
    the victim's subscription; it may not own one at all."""
    victim_oid = str(uuid.uuid4())
    victim = _as(entra, Tokens().mint([SUBSCRIBER], oid=victim_oid))
    created = victim.post(f"{entra.base}/subscriptions", json={"notificationUrl": "http://127.0.0.1:9/v"}, timeout=30)
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]

    attacker = _as(entra, _without_oid([SUBSCRIBER], sub=victim_oid))
    for answer in (
        attacker.get(f"{entra.base}/subscriptions/{sub_id}", timeout=30),
        attacker.get(f"{entra.base}/subscriptions", timeout=30),
        attacker.post(f"{entra.base}/subscriptions", json={"notificationUrl": "http://127.0.0.1:9/v"}, timeout=30),
    ):
        problem_of(answer, 403)
    assert victim.get(f"{entra.base}/subscriptions/{sub_id}", timeout=30).status_code == 200


def test_a_roles_claim_sent_as_a_string_grants_nothing(entra: RelayProcess) -> None:
    """Entra issues `roles` as an array; `"roles": "Relay.Admin"` is no role."""
    single = _as(entra, Tokens().mint(ADMIN))  # type: ignore[arg-type]
    problem_of(single.put(f"{entra.base}/event-types/a.b", json={}, timeout=30), 403)
    problem_of(single.get(f"{entra.base}/subscriptions", timeout=30), 403)
    listed = _as(entra, Tokens().mint([ADMIN]))
    assert listed.get(f"{entra.base}/subscriptions", timeout=30).status_code == 200


def test_an_application_owns_by_its_client_id_apart_from_users(entra: RelayProcess) -> None:
    """An application token without `oid` owns by `azp`, under its own prefix: a user whose
    `oid` equals that client id does not see the application's subscription."""
    client_id = str(uuid.uuid4())
    app = _as(entra, _without_oid([SUBSCRIBER], sub=uuid.uuid4().hex, azp=client_id))
    created = app.post(f"{entra.base}/subscriptions", json={"notificationUrl": "http://127.0.0.1:9/app"}, timeout=30)
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    assert [s["id"] for s in app.get(f"{entra.base}/subscriptions", timeout=30).json()["value"]] == [sub_id]
    user = _as(entra, Tokens().mint([SUBSCRIBER], oid=client_id))
    problem_of(user.get(f"{entra.base}/subscriptions/{sub_id}", timeout=30), 404)
    assert user.get(f"{entra.base}/subscriptions", timeout=30).json()["value"] == []


def test_the_owner_key_names_tenant_and_object_id() -> None:
    assert owner_key(TENANT, "o-1", "") == f"oid:{TENANT}:o-1"
    assert owner_key(TENANT, "", "c-1") == f"app:{TENANT}:c-1"
    assert owner_key(TENANT, "", "") is None and owner_key("", "o-1", "") is None
    principal = parse_principal(client_principal({"tid": TENANT, "sub": "s", "roles": [PUBLISHER]}))
    assert principal is not None and principal.id is None and principal.roles == {PUBLISHER}
    other_tenant = parse_principal(client_principal({"tid": str(uuid.uuid4()), "oid": "o-1", "roles": []}))
    assert other_tenant is not None and other_tenant.id != owner_key(TENANT, "o-1", "")


def test_a_subscription_owned_by_a_bare_object_id_moves_to_its_owner(entra: RelayProcess) -> None:
    """Subscriptions of the earlier release were owned by the bare `oid`: the owner's first call
    migrates them to the tenant-qualified key; a sub-only token with that value gets nothing."""
    oid = str(uuid.uuid4())
    store = SubscriptionStore(Storage(Endpoints(connection_string=entra.azurite.connection_string)))
    from relay.core.models import SubscriptionRequest

    legacy_id = store.subscribe(SubscriptionRequest(notificationUrl=f"http://127.0.0.1:9/{oid}"), owner=oid)[0].id
    problem_of(
        _as(entra, _without_oid([SUBSCRIBER], sub=oid)).get(f"{entra.base}/subscriptions/{legacy_id}", timeout=30),
        403,
    )
    owner = _as(entra, Tokens().mint([SUBSCRIBER], oid=oid))
    assert [s["id"] for s in owner.get(f"{entra.base}/subscriptions", timeout=30).json()["value"]] == [legacy_id]
    assert owner.get(f"{entra.base}/subscriptions/{legacy_id}", timeout=30).status_code == 200
    again = owner.post(f"{entra.base}/subscriptions", json={"notificationUrl": f"http://127.0.0.1:9/{oid}"}, timeout=30)
    assert again.status_code == 201 and again.json()["id"] == legacy_id
    moved = store.get(legacy_id)
    assert moved is not None and moved.owner == f"oid:{TENANT}:{oid}"


# ---- item 8: no trust-the-header mode on the dev host -----------------------------------------------


def test_the_dev_host_will_not_run_entra_mode_without_signing_keys(azurite: Any) -> None:
    """WEBSITE_AUTH_ENABLED set by hand and no RELAY_ENTRA_JWKS: a one-line start-up error and a
    non-zero exit, where it used to answer a forged X-MS-CLIENT-PRINCIPAL."""
    env = {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string,
        "RELAY_AUTH": "entra",
        "WEBSITE_AUTH_ENABLED": "True",
    }
    env.pop("RELAY_ENTRA_JWKS", None)
    result = subprocess.run(
        [sys.executable, "-m", "relay", "dev", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "RELAY_ENTRA_JWKS" in lines[0] and "Traceback" not in result.stderr, result.stderr


# ---- item 9 (and issue 19 item 2): unverifiable polling states --------------------------------------


def _unsigned(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def test_an_unverifiable_state_starts_a_fresh_chain_from_now(relay: RelayProcess, unique_type: str) -> None:
    """Forged unsigned, garbage, tampered, another key's: 202, Retry-After and a Location whose
    chain starts at that call: the event published before it never appears, the one after does."""
    from relay.store.tokens import Purpose, TokenCodec

    start = relay.get(f"events/poll?eventType={unique_type}")
    signed = parse_qs(urlsplit(start.headers["Location"]).query)["triggerState"][0]
    before = relay.publish({"type": unique_type, "data": "before"}).json()["id"]
    wait_until(relay.queue_idle, 30, "the early event to be logged")
    payload, mac = signed.rsplit(".", 1)
    states = {
        "forged unsigned": _unsigned({"k": "2000-01-01"}),
        "unsigned of the first release": _unsigned({"k": "20000101T000000.000000Z"}),
        "garbage": "%%%garbage",
        "tampered": payload + "." + ("A" if mac[0] != "A" else "B") + mac[1:],
        "another key": TokenCodec(b"k" * 32).seal(Purpose.TRIGGER_STATE, {"k": "20000101T000000.000000Z"}),
    }
    chains = {}
    for name, state in states.items():
        answer = relay.get("events/poll", params={"eventType": unique_type, "triggerState": state})
        assert answer.status_code == 202, (name, answer.text)
        assert int(answer.headers["Retry-After"]) > 0, name
        fresh = parse_qs(urlsplit(answer.headers["Location"]).query)["triggerState"][0]
        assert fresh != state and "." in fresh, name
        chains[name] = answer.headers["Location"]
    after = relay.publish({"type": unique_type, "data": "after"}).json()["id"]
    for name, location in chains.items():
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while after not in seen:
            assert time.monotonic() < deadline, f"the later event never came on the {name} chain"
            answer = relay.session.get(location, timeout=30)
            assert answer.status_code in (200, 202), answer.text
            location = answer.headers["Location"]
            if answer.status_code == 200:
                seen.extend(e["id"] for e in answer.json()["value"])
            else:
                time.sleep(0.5)
        assert before not in seen, name
    assert relay.logs().count("cannot verify") >= len(states)


# ---- item 11: duplicates said, and owned by their publisher ------------------------------------------


def test_a_duplicate_publish_says_so_and_is_not_delivered_again(
    relay: RelayProcess, receiver_factory: Any, unique_type: str
) -> None:
    receiver: Receiver = receiver_factory()
    relay.subscribe(receiver.url, eventTypes=[unique_type])
    event = {"type": unique_type, "id": f"inv-{uuid.uuid4().hex[:8]}", "source": "/erp", "data": 1}
    assert relay.post("events", event).json() == {"id": event["id"]}
    assert relay.post("events", event).json() == {"id": event["id"], "duplicate": True}
    other = {**event, "id": f"inv-{uuid.uuid4().hex[:8]}"}
    batch = relay.post("events", [event, other, other]).json()["value"]
    assert batch[0] == {"id": event["id"], "duplicate": True}
    assert sorted(json.dumps(item, sort_keys=True) for item in batch[1:]) == sorted(
        [json.dumps({"id": other["id"]}), json.dumps({"id": other["id"], "duplicate": True}, sort_keys=True)]
    )
    receiver.wait_for(2)
    wait_until(relay.queue_idle, 30, "work queues to drain")
    assert sorted(receiver.ids()) == sorted([event["id"], other["id"]])


def test_in_entra_mode_another_publisher_cannot_claim_an_event(
    entra: RelayProcess, receiver_factory: Any, unique_type: str
) -> None:
    """The attacker pre-publishes the ERP's next (source, type, id): the ERP's own event is still
    accepted as new and delivered; each publisher's repeat is its own duplicate."""
    receiver: Receiver = receiver_factory()
    subscriber = _as(entra, Tokens().mint([SUBSCRIBER]))
    made = subscriber.post(
        f"{entra.base}/subscriptions", json={"notificationUrl": receiver.url, "eventTypes": [unique_type]}, timeout=30
    )
    assert made.status_code == 201, made.text
    erp, attacker = _as(entra, Tokens().mint([PUBLISHER])), _as(entra, Tokens().mint([PUBLISHER]))
    event = {"type": unique_type, "id": "INV-1001", "source": "/erp/invoices"}
    first = attacker.post(f"{entra.base}/events", json={**event, "data": "forged"}, timeout=30)
    assert first.json() == {"id": "INV-1001"}
    real = erp.post(f"{entra.base}/events", json={**event, "data": "real"}, timeout=30)
    assert real.status_code == 202 and real.json() == {"id": "INV-1001"}
    again = erp.post(f"{entra.base}/events", json={**event, "data": "real"}, timeout=30)
    assert again.json() == {"id": "INV-1001", "duplicate": True}
    got = receiver.wait_for(2)
    assert sorted(g.json()["data"] for g in got) == ["forged", "real"]


# ---- item 12: cross-site requests ---------------------------------------------------------------------


def test_a_state_changing_request_from_another_origin_is_refused(relay: RelayProcess, unique_type: str) -> None:
    """Every POST, PUT, PATCH and DELETE with a foreign (or `null`) Origin is a 403 problem naming
    Origin, and nothing is done; the relay's own origin and no Origin at all go through."""
    own = f"http://127.0.0.1:{relay.port}"
    sub = relay.subscribe("http://127.0.0.1:9/csrf", eventTypes=[unique_type])
    for origin in (
        "https://evil.example",
        "null",
        f"http://127.0.0.1:{relay.port + 1}",
        f"https://127.0.0.1:{relay.port}",
    ):
        headers = {"Origin": origin}
        for method, path, body in (
            ("POST", "subscriptions", {"notificationUrl": "http://127.0.0.1:9/x"}),
            ("POST", f"subscriptions/{sub['id']}/secret", None),
            ("DELETE", f"subscriptions/{sub['id']}", None),
            ("PUT", f"event-types/{unique_type}", {}),
            ("PATCH", f"subscriptions/{sub['id']}", {}),
            ("POST", "events", {"type": unique_type, "data": 1}),
        ):
            answer = relay.session.request(method, f"{relay.base}/{path}", json=body, headers=headers, timeout=30)
            problem_of(answer, 403, "Origin")
    assert relay.get(f"subscriptions/{sub['id']}", headers={"Origin": "https://evil.example"}).status_code == 200
    assert relay.get(f"subscriptions/{sub['id']}").status_code == 200  # not deleted
    assert relay.post("events", {"type": unique_type, "data": 1}, headers={"Origin": own}).status_code == 202
    assert relay.post("events", {"type": unique_type, "data": 1}).status_code == 202


def test_a_cross_site_post_is_refused_in_entra_mode_too(entra: RelayProcess) -> None:
    admin = _as(entra, Tokens().mint([ADMIN]))
    made = admin.post(f"{entra.base}/subscriptions", json={"notificationUrl": "http://127.0.0.1:9/e"}, timeout=30)
    sub_id = made.json()["id"]
    refused = admin.post(
        f"{entra.base}/subscriptions/{sub_id}/secret", headers={"Origin": "https://evil.example"}, timeout=30
    )
    problem_of(refused, 403, "Origin")
    assert admin.post(f"{entra.base}/subscriptions/{sub_id}/secret", timeout=30).status_code == 200


# ---- items 13 and 14: slow clients and clients that go away -------------------------------------------


def _threads(relay: RelayProcess) -> int:
    assert relay.proc is not None
    status = Path(f"/proc/{relay.proc.pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


def _settled_threads(relay: RelayProcess) -> int:
    """The host's thread count once it stops changing: pools and timers start their threads
    lazily, on first use (the due timer's first run, a queue's first message), and a count taken
    before that is no baseline (CI saw 14 threads more at the end than at the start)."""
    counts: list[int] = []

    def steady() -> bool:
        counts.append(_threads(relay))
        time.sleep(0.5)  # the interval the count must hold over; nothing to await
        return len(counts) >= 4 and len(set(counts[-4:])) == 1

    wait_until(steady, 60, "the dev host's threads to settle")
    return counts[-1]


def test_half_open_and_trickling_requests_are_timed_out(relay_factory: Callable[..., RelayProcess]) -> None:
    """300 connections that send part of a request head and then nothing, and 10 that send a byte
    a second: threads rise, a normal request is still served meanwhile, and within the head
    deadline (plus slack for a loaded machine) every one is closed and the threads are back."""
    from relay_dev.devhost import HEAD_SECONDS, IDLE_SECONDS

    # The due timer every second, so that its first run (and the pools it starts) is behind us.
    relay = relay_factory({"RELAY_DUE_PERIOD": "1s"})
    assert relay.get("subscriptions?limit=1").status_code == 200
    relay.publish({"type": "warm.up", "data": 1})  # the publish path's pools, started before the count
    baseline = _settled_threads(relay)
    head = f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\nX-Slow: ".encode()
    idle = [socket.create_connection(("127.0.0.1", relay.port), timeout=30) for _ in range(300)]
    for sock in idle:
        sock.sendall(head)
    trickle = [socket.create_connection(("127.0.0.1", relay.port), timeout=30) for _ in range(10)]
    started = time.monotonic()
    wait_until(lambda: _threads(relay) > baseline + 200, 30, "the connections to hold threads")
    served = requests.get(f"{relay.base}/health", timeout=10)
    assert served.status_code == 200
    closed_at: dict[int, float] = {}
    sent = 0
    while len(closed_at) < len(trickle) and time.monotonic() - started < HEAD_SECONDS + 30:
        for n, sock in enumerate(trickle):
            if n in closed_at:
                continue
            try:
                sock.sendall(head[sent : sent + 1] if sent < len(head) else b"a")
            except OSError:
                closed_at[n] = time.monotonic() - started
        sent += 1
        time.sleep(1)
    assert len(closed_at) == len(trickle), "a trickling client was never cut off"
    assert max(closed_at.values()) < HEAD_SECONDS + 25
    wait_until(
        lambda: _threads(relay) <= baseline + 10,
        HEAD_SECONDS + IDLE_SECONDS + 30,
        f"threads back to baseline {baseline} (at {_threads(relay)})",
    )
    for sock in idle:
        sock.settimeout(5)
        try:
            assert sock.recv(1024) == b""  # closed by the relay, not answered
        except OSError:
            pass
        sock.close()
    for sock in trickle:
        sock.close()
    assert requests.get(f"{relay.base}/health", timeout=10).status_code == 200


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a killed browser tab or a dropped network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_client_that_goes_away_is_one_line_not_a_traceback_or_a_5xx(relay: RelayProcess) -> None:
    """Ten requests reset mid-body and ten reset before their answer is read: the log holds no
    traceback, no 5xx and no 'unhandled error', and at most one line per connection."""
    before = len(relay.logs().splitlines())
    for _ in range(10):
        sock = socket.create_connection(("127.0.0.1", relay.port), timeout=30)
        sock.sendall(
            (
                f"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\nx-functions-key: {FUNCTION_KEY}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                '{"type": "gone.away", "data": "'
            ).encode()
        )
        time.sleep(0.2)  # the function is reading the body
        _reset(sock)
        sock = socket.create_connection(("127.0.0.1", relay.port), timeout=30)
        sock.sendall(f"GET /api/console/app.js HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\n\r\n".encode())
        _reset(sock)
    wait_until(lambda: "went away" in relay.logs(), 30, "the dev host to notice")
    assert requests.get(f"{relay.base}/health", timeout=10).status_code == 200
    time.sleep(1)  # lines written as the last connections end
    lines = relay.logs().splitlines()[before:]
    text = "\n".join(lines)
    assert "Traceback" not in text and "unhandled error" not in text and "function failed" not in text, text
    assert not [line for line in lines if " 500 " in line or "ERROR" in line], text
    assert len([line for line in lines if "went away" in line]) <= 20
