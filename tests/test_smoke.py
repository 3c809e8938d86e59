"""`python -m relay smoke` (CONTRACT section 6, operator tools) against the real dev host and
Azurite, in both auth modes, and the signed-receipt hook it relies on (`relay.http.routes.smoke`).

Mocked, as in tests/test_entra.py and only there: Entra ID's servers (the tokens are minted with a
test key whose JWKS the dev host reads from a file).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from relay.http.access import ADMIN, PUBLISHER, SUBSCRIBER, is_anonymous_path
from relay.http.routes.smoke import MAX_BODY_BYTES, MAX_OPEN_RUNS, MAX_RECEIPTS, PARTITION, RUN_TTL
from relay.store.storage import OPERATIONS_TABLE
from relay_dev import smoke
from relay_dev.azurite import Azurite
from tests.helpers import FUNCTION_KEY, ROOT, RelayProcess
from tests.test_entra import ENTRA_ENV, Tokens, jwks_file


def run_smoke(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = smoke.main(["--wait", "60", *args])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, out.out.splitlines()


def line(lines: list[str], name: str) -> str:
    [found] = [text for text in lines if text[5:].startswith(name + ":")]
    return found


@pytest.fixture(scope="module")
def keys_relay(azurite: Azurite) -> Iterator[RelayProcess]:
    relay = RelayProcess(azurite, {}).start()
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def entra_relay(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    jwks = jwks_file(tmp_path_factory.mktemp("smoke-entra"))
    relay = RelayProcess(azurite, {**ENTRA_ENV, "RELAY_ENTRA_JWKS": str(jwks)}, function_key=None).start()
    yield relay
    relay.stop()


def origin(relay: RelayProcess) -> str:
    return f"http://127.0.0.1:{relay.port}"


def smoke_subscriptions(relay: RelayProcess, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = relay.session.get(f"{relay.base}/subscriptions?limit=1000", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return [s for s in response.json()["value"] if "/api/smoke/hook/" in s["notificationUrl"]]


# ---- keys mode ------------------------------------------------------------------------------------


def test_smoke_passes_on_a_healthy_relay_in_keys_mode_and_removes_what_it_made(keys_relay: RelayProcess) -> None:
    """The command as an operator runs it (a process of its own): every check holds, exit 0, one
    line per check, and nothing of the round trip is left behind."""
    done = subprocess.run(
        [sys.executable, "-m", "relay", "smoke", "--url", origin(keys_relay), "--key", FUNCTION_KEY],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    names = [text[5:].split(":")[0] for text in lines]
    assert names == ["health", "definition", "no credentials", "credentials", "round trip", "cleanup", "smoke"]
    assert all(text.startswith("ok   ") for text in lines), lines
    assert "security apiKey (keys mode)" in line(lines, "definition")
    assert "received and verified its signature" in line(lines, "round trip")
    assert smoke_subscriptions(keys_relay) == []
    run_id = line(lines, "cleanup").split("run ")[-1]
    assert keys_relay.get(f"smoke/runs/{run_id}").status_code == 404


def test_a_wrong_key_fails_with_a_clear_line_and_exit_1(
    keys_relay: RelayProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = run_smoke(capsys, "--url", origin(keys_relay) + "/api", "--key", "not-the-key")
    assert code == 1
    assert line(lines, "health").startswith("ok")
    assert line(lines, "credentials").startswith("FAIL credentials: GET /api/subscriptions with --key answered 401")
    assert line(lines, "round trip").startswith("FAIL round trip: POST /api/smoke/runs answered 401")
    assert lines[-1].startswith("FAIL smoke: 2 of")


def test_a_relay_that_answers_without_credentials_fails_the_check(
    relay_factory: Callable[..., RelayProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    """A dev host started without its function key: function-level routes answer anyone."""
    open_relay = relay_factory(function_key=None)
    code, lines = run_smoke(capsys, "--url", origin(open_relay))
    assert code == 1
    assert (
        line(lines, "no credentials")
        == "FAIL no credentials: GET /api/subscriptions without credentials answered 200, not 401"
    )
    assert line(lines, "round trip").startswith("ok"), lines  # the rest still works
    assert line(lines, "cleanup").startswith("ok"), lines


def test_the_round_trip_passes_the_outbound_guard_like_any_subscriber(
    relay_factory: Callable[..., RelayProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    """The hook is subscribed through the same guard as every notification URL: a relay that may
    not call private addresses (as in Azure) refuses its own plain-http loopback URL, and the
    check says so and removes its run; in Azure the hook is the relay's public https name."""
    guarded = relay_factory({"RELAY_ALLOW_PRIVATE_TARGETS": "false"})
    code, lines = run_smoke(capsys, "--url", origin(guarded), "--key", FUNCTION_KEY)
    assert code == 1
    said = line(lines, "round trip")
    assert said.startswith("FAIL round trip: subscribing the relay's own hook answered 400"), said
    assert "set RELAY_PUBLIC_URL to its public https URL" in said
    assert line(lines, "cleanup").startswith("ok   cleanup: removed run ")


def test_an_unreachable_relay_is_one_line_per_check_and_no_traceback(
    capsys: pytest.CaptureFixture[str], refused_port: int
) -> None:
    port = refused_port  # nothing listens here
    code, lines = run_smoke(capsys, "--url", f"http://127.0.0.1:{port}", "--key", "k")
    assert code == 1
    assert line(lines, "health") == f"FAIL health: cannot reach the relay at http://127.0.0.1:{port} (ConnectionError)"
    for name in ("definition", "no credentials", "credentials", "round trip"):
        assert line(lines, name) == f"FAIL {name}: not run: the relay is unreachable"
    assert len(lines) == 6


def test_a_bad_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        smoke.main(["--url", "ftp://example.com"])
    assert exit_info.value.code == 1  # contract: 1 whenever the checks do not all hold
    assert "--url must be an http(s) URL" in capsys.readouterr().err


# ---- the hook ---------------------------------------------------------------------------------------


def _signed(secret: str, body: bytes, msg_id: str = "evt-1") -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
    }


def test_the_hook_records_only_what_its_subscriptions_secret_signed(keys_relay: RelayProcess) -> None:
    """Anonymous (the relay's deliveries carry no key) but no open sink: unknown or malformed
    runs are 404s, an unsigned, badly signed or oversized body is refused and not kept, a run
    nobody subscribed accepts nothing, and a run keeps at most MAX_RECEIPTS receipts."""
    anonymous = requests.Session()
    assert anonymous.post(f"{keys_relay.base}/smoke/runs", json={}, timeout=30).status_code == 401
    hook = f"{keys_relay.base}/smoke/hook/"
    body = json.dumps({"type": "relay.smoke", "id": "evt-1"}).encode()
    assert anonymous.post(hook + "0" * 32, data=body, timeout=30).status_code == 404
    assert anonymous.post(hook + "..%2fsubscriptions", data=body, timeout=30).status_code == 404

    created = keys_relay.post("smoke/runs", {})
    assert created.status_code == 201, created.text
    run = created.json()
    assert created.headers["Location"].endswith(f"/api/smoke/runs/{run['id']}")
    assert run["notificationUrl"] == f"{keys_relay.base}/smoke/hook/{run['id']}"  # the relay's own public URL
    url = run["notificationUrl"]

    unsubscribed = anonymous.post(url, data=body, headers=_signed("whsec_" + "A" * 43, body), timeout=30)
    assert unsubscribed.status_code == 401, unsubscribed.text

    sub = keys_relay.subscribe(url, eventTypes=["relay.smoke"])
    try:
        assert (
            anonymous.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30).status_code == 401
        )
        forged = anonymous.post(url, data=body, headers=_signed("whsec_" + "B" * 43, body), timeout=30)
        assert forged.status_code == 401
        assert forged.headers["Content-Type"].startswith("application/problem+json")
        tampered = anonymous.post(url, data=body + b" ", headers=_signed(sub["secret"], body), timeout=30)
        assert tampered.status_code == 401
        big = b'{"x": "' + b"a" * MAX_BODY_BYTES + b'"}'
        assert anonymous.post(url, data=big, headers=_signed(sub["secret"], big), timeout=30).status_code == 413
        assert keys_relay.get(f"smoke/runs/{run['id']}").json()["receipts"] == []

        for n in range(MAX_RECEIPTS + 2):
            answer = anonymous.post(url, data=body, headers=_signed(sub["secret"], body, f"evt-{n}"), timeout=30)
            assert answer.status_code == 200, answer.text
        receipts = keys_relay.get(f"smoke/runs/{run['id']}").json()["receipts"]
        assert [r["headers"]["webhook-id"] for r in receipts] == [f"evt-{n}" for n in range(MAX_RECEIPTS)]
        assert receipts[0]["body"] == body.decode()
        assert receipts[0]["subscriptionId"] == sub["id"]
    finally:
        keys_relay.delete(f"subscriptions/{sub['id']}")
    assert keys_relay.delete(f"smoke/runs/{run['id']}").status_code == 200
    assert anonymous.post(url, data=body, headers=_signed(sub["secret"], body), timeout=30).status_code == 404
    assert keys_relay.delete(f"smoke/runs/{run['id']}").status_code == 200  # gone already: still 200


def test_open_runs_are_bounded_and_expired_ones_swept(keys_relay: RelayProcess) -> None:
    """At most MAX_OPEN_RUNS runs are open at a time (429 with Retry-After beyond); a run past its
    expiry is deleted when the next run opens, and its hook answers 404 meanwhile."""
    table = TableClient.from_connection_string(keys_relay.azurite.connection_string, OPERATIONS_TABLE)
    stale_id = "f" * 32
    past = datetime.now(UTC) - timedelta(minutes=1)
    table.upsert_entity(
        {
            "PartitionKey": PARTITION,
            "RowKey": stale_id,
            "url": f"{keys_relay.base}/smoke/hook/{stale_id}",
            "owner": "",
            "status": "smoke",
            "createdAt": (past - RUN_TTL).isoformat().replace("+00:00", "Z"),
            "expiresAt": past.isoformat().replace("+00:00", "Z"),
            "receipts": "[]",
        }
    )
    body = b"{}"
    stale_hook = requests.post(
        f"{keys_relay.base}/smoke/hook/{stale_id}", data=body, headers=_signed("whsec_" + "A" * 43, body), timeout=30
    )
    assert stale_hook.status_code == 404
    assert keys_relay.get(f"smoke/runs/{stale_id}").status_code == 404
    opened: list[str] = []
    try:
        refused = None
        for _ in range(MAX_OPEN_RUNS + 1):
            response = keys_relay.post("smoke/runs", {})
            if response.status_code == 429:
                refused = response
                break
            assert response.status_code == 201, response.text
            opened.append(response.json()["id"])
        assert refused is not None and len(opened) <= MAX_OPEN_RUNS
        assert refused.headers["Retry-After"] and refused.headers["Content-Type"].startswith("application/problem+json")
        with pytest.raises(ResourceNotFoundError):  # swept by the first open
            table.get_entity(PARTITION, stale_id)
    finally:
        for run_id in opened:
            assert keys_relay.delete(f"smoke/runs/{run_id}").status_code == 200
    assert keys_relay.post("smoke/runs", {}).status_code == 201


def test_the_hook_is_the_only_smoke_path_easy_auth_lets_through() -> None:
    assert is_anonymous_path("/api/smoke/hook/0123456789abcdef0123456789abcdef")
    assert not is_anonymous_path("/api/smoke/hook")
    assert not is_anonymous_path("/api/smoke/runs")
    assert not is_anonymous_path("/api/smoke/runs/0123456789abcdef0123456789abcdef")


# ---- entra mode ---------------------------------------------------------------------------------------


def test_smoke_passes_in_entra_mode_with_an_admin_token(
    entra_relay: RelayProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = run_smoke(capsys, "--url", origin(entra_relay), "--token", Tokens().mint([ADMIN]))
    assert code == 0, lines
    assert all(text.startswith("ok   ") for text in lines), lines
    assert (
        line(lines, "forged principal")
        == "ok   forged principal: GET /api/subscriptions with a forged X-MS-CLIENT-PRINCIPAL answered 401"
    )
    assert "entra mode" in lines[-1]
    admin = {"Authorization": f"Bearer {Tokens().mint([ADMIN])}"}
    assert smoke_subscriptions(entra_relay, admin) == []


def test_smoke_in_entra_mode_with_roles_that_cannot_publish_fails_and_still_cleans_up(
    entra_relay: RelayProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = run_smoke(capsys, "--url", origin(entra_relay), "--token", Tokens().mint([SUBSCRIBER]))
    assert code == 1
    assert line(lines, "round trip").startswith("FAIL round trip: POST /api/events answered 403")
    cleanup = line(lines, "cleanup")
    assert cleanup.startswith("ok   cleanup: removed subscription ") and " and run " in cleanup
    admin = {"Authorization": f"Bearer {Tokens().mint([ADMIN])}"}
    assert smoke_subscriptions(entra_relay, admin) == []


def test_a_smoke_run_is_its_owners(entra_relay: RelayProcess) -> None:
    mine = {"Authorization": f"Bearer {Tokens().mint([SUBSCRIBER, PUBLISHER])}"}
    theirs = {"Authorization": f"Bearer {Tokens().mint([SUBSCRIBER])}"}
    created = requests.post(f"{entra_relay.base}/smoke/runs", json={}, headers=mine, timeout=30)
    assert created.status_code == 201, created.text
    run_url = f"{entra_relay.base}/smoke/runs/{created.json()['id']}"
    assert requests.get(run_url, headers=theirs, timeout=30).status_code == 404
    assert requests.delete(run_url, headers=theirs, timeout=30).status_code == 200
    assert requests.get(run_url, headers=mine, timeout=30).status_code == 200  # theirs removed nothing
    publisher = {"Authorization": f"Bearer {Tokens().mint([PUBLISHER])}"}
    assert requests.post(f"{entra_relay.base}/smoke/runs", json={}, headers=publisher, timeout=30).status_code == 403
    assert requests.delete(run_url, headers=mine, timeout=30).status_code == 200
    assert requests.get(run_url, headers=mine, timeout=30).status_code == 404


class _TrustingPlatform(BaseHTTPRequestHandler):
    """A relay behind a platform that passes a caller's X-MS-CLIENT-PRINCIPAL through: App Service
    with WEBSITE_AUTH_ENABLED=True and nothing in front that authenticates. Azure's platform cannot
    run here and the dev host refuses to start that way (it never trusts the header), so this
    stand-in answers as such a relay would: anonymous routes open, everything else 401 without
    the header and 200 with any header at all."""

    def _answer(self) -> None:
        path = self.path.split("?")[0]
        if path in ("/api/health", "/api/openapi.json"):
            status, body = (
                200,
                {"status": "ok"}
                if path.endswith("health")
                else {
                    "swagger": "2.0",
                    "securityDefinitions": {"oauth2-auth": {"type": "oauth2", "flow": "accessCode"}},
                },
            )
        elif self.headers.get("X-MS-CLIENT-PRINCIPAL"):
            status, body = 200, {"value": []}
        else:
            status, body = 401, {"status": 401, "title": "Unauthorized"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_smoke_fails_when_the_relay_trusts_a_forged_principal(capsys: pytest.CaptureFixture[str]) -> None:
    """The misconfiguration the check is there for: the relay told that the platform authenticates
    (WEBSITE_AUTH_ENABLED=True) with nothing in front that does, so a header any caller can send
    is taken as the caller."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TrustingPlatform)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, lines = run_smoke(capsys, "--url", url, "--token", Tokens().mint([ADMIN]))
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1
    assert line(lines, "forged principal") == (
        "FAIL forged principal: GET /api/subscriptions with a forged X-MS-CLIENT-PRINCIPAL answered 200, "
        "not 401: the relay trusts a header any caller can send"
    )


def test_the_definition_check_holds_each_mode_to_its_security() -> None:
    apikey = {"securityDefinitions": {"api_key": {"type": "apiKey", "in": "header", "name": "x-functions-key"}}}
    oauth2 = {"securityDefinitions": {"oauth2-auth": {"type": "oauth2", "flow": "accessCode"}}}
    assert smoke.judge_security(apikey, "keys") == "security apiKey (keys mode)"
    assert smoke.judge_security(oauth2, "entra") == "security oauth2 (entra mode)"
    with pytest.raises(smoke.CheckFailed, match="is oauth2, not apiKey as keys mode needs"):
        smoke.judge_security(oauth2, "keys")
    with pytest.raises(smoke.CheckFailed, match="is missing, not apiKey"):
        smoke.judge_security({}, "keys")
    both = {"securityDefinitions": {**apikey["securityDefinitions"], **oauth2["securityDefinitions"]}}
    with pytest.raises(smoke.CheckFailed, match="is apiKey, oauth2, not oauth2"):
        smoke.judge_security(both, "entra")
    # A relay in entra mode serves the OAuth 2.0 definition (CONTRACT section 6): the keys one is a failure.
    with pytest.raises(smoke.CheckFailed, match="is apiKey, not oauth2"):
        smoke.judge_security(apikey, "entra")


def test_the_forged_header_is_well_formed() -> None:
    """The forged principal the check sends is one the relay would read as an admin were it trusted
    (so a 401 means it was refused, not that it was unreadable)."""
    from relay.http.access import parse_principal

    sent: dict[str, str] = {}

    class Catch(Exception):
        pass

    checker = smoke.Smoke("http://127.0.0.1:9", key=None, token="t")

    def capture(*_a: Any, headers: dict[str, str] | None = None, **_k: Any) -> requests.Response:
        sent.update(headers or {})
        raise Catch

    checker.call = capture  # type: ignore[method-assign,assignment]
    with pytest.raises(Catch):
        checker.refuses_forged_principal()
    principal = parse_principal(sent["X-MS-CLIENT-PRINCIPAL"])
    assert principal is not None and principal.is_admin
    assert base64.b64decode(sent["X-MS-CLIENT-PRINCIPAL"])


SMOKE_ROUTES = [
    ("POST", "smoke/runs"),
    ("GET", "smoke/runs/{id}"),
    ("DELETE", "smoke/runs/{id}"),
    ("POST", "smoke/hook/{id}"),
    ("PUT", "smoke/hook/{id}"),
]


@seed(20261207)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    route=st.sampled_from(SMOKE_ROUTES),
    segment=st.one_of(st.text(min_size=1, max_size=40), st.sampled_from(["0" * 32, "f" * 32, "a" * 31])),
    body=st.one_of(st.binary(max_size=300), st.just(b'{"type": "relay.smoke"}')),
    webhook=st.fixed_dictionaries(
        {},
        optional={
            "webhook-id": st.text(max_size=20),
            "webhook-timestamp": st.one_of(st.text(max_size=12), st.integers(-(2**40), 2**40).map(str)),
            "webhook-signature": st.one_of(st.text(max_size=60), st.just("v1,AAAA v1,")),
            "Content-Type": st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
        },
    ),
    keyed=st.booleans(),
)
def test_no_input_to_the_smoke_routes_causes_a_5xx(
    keys_relay: RelayProcess, route: tuple[str, str], segment: str, body: bytes, webhook: dict[str, str], keyed: bool
) -> None:
    """Whatever reaches the smoke routes, keyed or not: never a 5xx, errors always problem+json."""
    method, template = route
    # Values an HTTP client can send at all (requests refuses leading whitespace and line breaks).
    headers = {k: v for k, v in webhook.items() if v.isascii() and v.isprintable() and v == v.lstrip()}
    if keyed:
        headers["x-functions-key"] = FUNCTION_KEY
    path = template.replace("{id}", quote(segment, safe=""))
    response = requests.request(method, f"{keys_relay.base}/{path}", data=body, headers=headers, timeout=30)
    assert response.status_code < 500, (method, path, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
    if method == "POST" and template == "smoke/runs" and response.status_code == 201:
        keys_relay.delete(f"smoke/runs/{response.json()['id']}")  # the open runs stay few
