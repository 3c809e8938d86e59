"""Entra ID access (CONTRACT section 4, RELAY_AUTH=entra) on the real dev host and Azurite.

What is mocked, and only this: Microsoft Entra ID's servers. The tests make an RSA key with
`cryptography`, write its public half as a JWKS file in a temporary directory, and mint their own
RS256 access tokens with PyJWT (issuer, audience, `oid`, `roles` as Entra would put them). The dev
host validates them exactly as it would validate Entra's (RELAY_ENTRA_JWKS may be a file), plays
App Service Authentication, and the relay reads the principal the way it does in Azure.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.http.access import ADMIN, PUBLISHER, SUBSCRIBER, Principal, admit, parse_principal
from relay_dev.easyauth import client_principal
from tests.helpers import Receiver, RelayProcess

TENANT = "72f988bf-0000-4000-8000-2d7cd011db47"
ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
AUDIENCE = "api://event-relay-tests"
KID = "test-key-1"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING_KEY = _key()
OTHER_KEY = _key()  # a key Entra never published: a token signed with it is forged


class Tokens:
    """Mints access tokens as Entra ID would issue them for the relay's app registration."""

    def __init__(self, key: rsa.RSAPrivateKey = SIGNING_KEY) -> None:
        self.key = key

    def mint(
        self,
        roles: list[str] | None = None,
        *,
        oid: str | None = None,
        key: Any = None,
        alg: str = "RS256",
        kid: str | None = KID,
        **overrides: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 3600,
            "tid": TENANT,
            "oid": oid or str(uuid.uuid4()),
            "sub": uuid.uuid4().hex,
            "ver": "2.0",
        }
        if roles is not None:
            claims["roles"] = roles
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        headers = {"kid": kid} if kid else {}
        return jwt.encode(claims, key if key is not None else self.key, algorithm=alg, headers=headers)


def jwks_file(tmp: Path) -> Path:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(SIGNING_KEY.public_key()))
    jwk.update({"kid": KID, "use": "sig", "alg": "RS256"})
    path = tmp / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
    return path


ENTRA_ENV = {"RELAY_AUTH": "entra", "RELAY_ENTRA_ISSUER": ISSUER, "RELAY_ENTRA_AUDIENCE": AUDIENCE}


@pytest.fixture(scope="module")
def entra(azurite: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """The relay in entra mode on the dev host, which plays Easy Auth with the test JWKS. The host
    is given a function key too, which no caller below sends: in entra mode the HTTP functions
    are anonymous to the host (function_app.py's auth level follows RELAY_AUTH)."""
    jwks = jwks_file(tmp_path_factory.mktemp("entra"))
    relay = RelayProcess(
        azurite, {**ENTRA_ENV, "RELAY_ENTRA_JWKS": str(jwks)}, function_key="a-key-nobody-sends"
    ).start()
    yield relay
    relay.stop()


class Caller:
    """One principal calling the relay with its own token."""

    def __init__(self, relay: RelayProcess, roles: list[str] | None, oid: str | None = None) -> None:
        self.relay, self.oid = relay, oid or str(uuid.uuid4())
        self.token = Tokens().mint(roles, oid=self.oid)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> requests.Response:
        url = path if path.startswith("http") else f"{self.relay.base}/{path}"
        return self.session.request(method, url, json=body, timeout=30, **kw)

    def subscribe(self, url: str, **fields: Any) -> dict[str, Any]:
        response = self.call("POST", "subscriptions", {"notificationUrl": url, **fields})
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
def caller(entra: RelayProcess) -> Callable[..., Caller]:
    return lambda *roles, oid=None: Caller(entra, list(roles), oid)


def _problem(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    return body


# ---- who is calling: 401s -----------------------------------------------------------------------


def _forged_principal(roles: list[str], oid: str | None = None) -> str:
    return client_principal({"oid": oid or str(uuid.uuid4()), "tid": TENANT, "roles": roles, "aud": AUDIENCE})


UNAUTHENTICATED: dict[str, Callable[[], dict[str, str]]] = {
    "no token": lambda: {},
    "not a bearer token": lambda: {"Authorization": "Basic dXNlcjpwYXNz"},
    "not a JWT": lambda: {"Authorization": "Bearer not.a.jwt"},
    "expired": lambda: {
        "Authorization": "Bearer " + Tokens().mint([ADMIN], exp=int(time.time()) - 3600, nbf=int(time.time()) - 7200)
    },
    "not yet valid": lambda: {"Authorization": "Bearer " + Tokens().mint([ADMIN], nbf=int(time.time()) + 3600)},
    "no exp": lambda: {"Authorization": "Bearer " + Tokens().mint([ADMIN], exp=None)},
    "foreign audience": lambda: {"Authorization": "Bearer " + Tokens().mint([ADMIN], aud="api://another-app")},
    "foreign issuer": lambda: {
        "Authorization": "Bearer "
        + Tokens().mint([ADMIN], iss="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0")
    },
    "wrongly signed": lambda: {"Authorization": "Bearer " + Tokens(OTHER_KEY).mint([ADMIN])},
    "unknown kid": lambda: {"Authorization": "Bearer " + Tokens().mint([ADMIN], kid="another-key")},
    "no kid": lambda: {"Authorization": "Bearer " + Tokens().mint([ADMIN], kid=None)},
    "alg none": lambda: {
        "Authorization": "Bearer "
        + jwt.encode(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "exp": int(time.time()) + 3600,
                "oid": str(uuid.uuid4()),
                "roles": [ADMIN],
            },
            None,
            algorithm="none",
            headers={"kid": KID},
        )
    },
    "HS256 with a guessable secret": lambda: {
        "Authorization": "Bearer " + Tokens().mint([ADMIN], key=b"k" * 32, alg="HS256")
    },
    "forged Easy Auth header": lambda: {"X-MS-CLIENT-PRINCIPAL": _forged_principal([ADMIN])},
}


@pytest.mark.parametrize("case", list(UNAUTHENTICATED), ids=list(UNAUTHENTICATED))
def test_a_call_without_a_valid_token_is_a_401(entra: RelayProcess, case: str) -> None:
    for method, path in (("GET", "subscriptions"), ("POST", "events"), ("GET", "event-types")):
        response = requests.request(
            method,
            f"{entra.base}/{path}",
            headers=UNAUTHENTICATED[case](),
            json={"type": "x", "data": {}} if method == "POST" else None,
            timeout=30,
        )
        body = _problem(response, 401)
        assert "Bearer" in response.headers.get("WWW-Authenticate", "")
        assert "eyJ" not in json.dumps(body)  # the token is never echoed back


def test_health_and_the_definition_stay_anonymous(entra: RelayProcess) -> None:
    assert requests.get(f"{entra.base}/health", timeout=30).status_code == 200
    doc = requests.get(f"{entra.base}/openapi.json", timeout=30)
    assert doc.status_code == 200 and doc.json()["swagger"] == "2.0"


def test_the_function_key_is_not_what_admits_a_caller(entra: RelayProcess) -> None:
    """Entra mode is anonymous to the host: a function key neither helps nor is asked for."""
    response = requests.get(f"{entra.base}/subscriptions", headers={"x-functions-key": "anything"}, timeout=30)
    _problem(response, 401)


# ---- app roles: the contract's table ------------------------------------------------------------

ALLOW, DENY = True, False
# (method, path, body) -> allowed for publisher, subscriber, admin, no role
OPERATIONS: list[tuple[str, str, Any, tuple[bool, bool, bool, bool]]] = [
    ("POST", "events", {"type": "entra.table", "data": {}}, (ALLOW, DENY, ALLOW, DENY)),
    ("GET", "event-types", None, (ALLOW, ALLOW, ALLOW, DENY)),
    ("GET", "event-types/entra.table", None, (ALLOW, ALLOW, ALLOW, DENY)),
    ("PUT", "event-types/entra.table", {"description": "d"}, (DENY, DENY, ALLOW, DENY)),
    ("DELETE", "event-types/entra.none", None, (DENY, DENY, ALLOW, DENY)),
    ("POST", "subscriptions", "subscribe", (DENY, ALLOW, ALLOW, DENY)),
    ("GET", "subscriptions", None, (DENY, ALLOW, ALLOW, DENY)),
    ("POST", "unsubscribe", {"notificationUrl": "https://nobody.example/hook"}, (DENY, ALLOW, ALLOW, DENY)),
    ("GET", "events/poll?eventType=entra.table", None, (DENY, ALLOW, ALLOW, DENY)),
    ("GET", "subscriptions/0123456789abcdef0123456789abcdef", None, (DENY, ALLOW, ALLOW, DENY)),
    ("DELETE", "subscriptions/0123456789abcdef0123456789abcdef", None, (DENY, ALLOW, ALLOW, DENY)),
    ("GET", "subscriptions/0123456789abcdef0123456789abcdef/deliveries", None, (DENY, ALLOW, ALLOW, DENY)),
    (
        "POST",
        "subscriptions/0123456789abcdef0123456789abcdef/replay",
        {"since": "2026-01-01T00:00:00Z"},
        (DENY, ALLOW, ALLOW, DENY),
    ),
    ("GET", "operations/0123456789abcdef0123456789abcdef", None, (DENY, ALLOW, ALLOW, DENY)),
    ("POST", "subscriptions/0123456789abcdef0123456789abcdef/pause", None, (DENY, ALLOW, ALLOW, DENY)),
    ("POST", "subscriptions/0123456789abcdef0123456789abcdef/resume", None, (DENY, ALLOW, ALLOW, DENY)),
    ("POST", "subscriptions/0123456789abcdef0123456789abcdef/test", None, (DENY, ALLOW, ALLOW, DENY)),
    (
        "POST",
        "subscriptions/0123456789abcdef0123456789abcdef/deliveries/some-event/resend",
        None,
        (DENY, ALLOW, ALLOW, DENY),
    ),
]
PRINCIPALS = {"publisher": [PUBLISHER], "subscriber": [SUBSCRIBER], "admin": [ADMIN], "no role": []}


@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_each_role_is_allowed_and_refused_per_the_table(
    caller: Callable[..., Caller], receiver_factory: Any, who: str
) -> None:
    me = caller(*PRINCIPALS[who])
    column = list(PRINCIPALS).index(who)
    hook = receiver_factory().url
    for method, path, body, allowed in OPERATIONS:
        if body == "subscribe":
            body = {"notificationUrl": hook}
        response = me.call(method, path, body)
        if allowed[column]:
            assert response.status_code not in (401, 403), (who, method, path, response.text)
            assert response.status_code < 500, (who, method, path, response.text)
        else:
            detail = _problem(response, 403)["detail"]
            assert "Relay." in detail, detail


# ---- owned subscriptions ------------------------------------------------------------------------


def test_subscribers_see_only_their_own_and_an_admin_sees_all(
    caller: Callable[..., Caller], receiver_factory: Any
) -> None:
    alice, bob, admin = caller(SUBSCRIBER), caller(SUBSCRIBER), caller(ADMIN)
    hook_a, hook_b = receiver_factory().url, receiver_factory().url + "?b=1"
    mine = alice.subscribe(hook_a, eventTypes=["entra.owned.*"])
    theirs = bob.subscribe(hook_b)

    # Bob can neither see, nor replay, nor read the deliveries of Alice's: 404 each. His DELETE is
    # answered as for an unknown id (200) and removes nothing.
    assert bob.call("DELETE", f"subscriptions/{mine['id']}").status_code == 200
    for method, path, body in (
        ("GET", f"subscriptions/{mine['id']}", None),
        ("GET", f"subscriptions/{mine['id']}/deliveries", None),
        ("POST", f"subscriptions/{mine['id']}/replay", {"since": "2026-01-01T00:00:00Z"}),
        ("POST", f"subscriptions/{mine['id']}/pause", None),
        ("POST", f"subscriptions/{mine['id']}/resume", None),
        ("POST", f"subscriptions/{mine['id']}/test", None),
        ("POST", f"subscriptions/{mine['id']}/deliveries/some-event/resend", None),
    ):
        _problem(bob.call(method, path, body), 404)
    assert alice.call("GET", f"subscriptions/{mine['id']}").json()["status"] == "active"  # Bob paused nothing
    # Alice pauses and resumes her own; the admin may too.
    assert alice.call("POST", f"subscriptions/{mine['id']}/pause").json()["status"] == "paused"
    assert admin.call("POST", f"subscriptions/{mine['id']}/resume").json()["status"] == "active"
    assert alice.call("POST", f"subscriptions/{mine['id']}/test").status_code == 202
    _problem(bob.call("POST", "unsubscribe", {"notificationUrl": hook_a}), 404)
    assert alice.call("GET", f"subscriptions/{mine['id']}").status_code == 200  # still there

    # Lists show one's own only.

    def listed(who: Any) -> set[str]:
        return {s["id"] for s in who.call("GET", "subscriptions?limit=1000").json()["value"]}

    assert listed(alice) == {mine["id"]}
    assert listed(bob) == {theirs["id"]}
    assert {mine["id"], theirs["id"]} <= listed(admin)
    assert admin.call("GET", f"subscriptions/{mine['id']}").status_code == 200
    assert admin.call("GET", f"subscriptions/{theirs['id']}/deliveries").status_code == 200

    # A replay operation is its subscription owner's too.
    started = alice.call("POST", f"subscriptions/{mine['id']}/replay", {"since": "2026-01-01T00:00:00Z"})
    assert started.status_code == 202, started.text
    operation = started.headers["Location"]
    assert alice.call("GET", operation).status_code in (200, 202)
    _problem(bob.call("GET", operation), 404)
    assert admin.call("GET", operation).status_code in (200, 202)

    # The owner's own re-subscribe is the usual idempotent 201 (another owner's takes it over:
    # test_a_co_owner_presenting_the_whole_callback_url_takes_the_subscription_over).
    again = alice.call("POST", "subscriptions", {"notificationUrl": hook_a})
    assert again.status_code == 201 and again.json()["id"] == mine["id"]

    # Alice deletes her own; the admin deletes Bob's; neither is listed afterwards.
    assert alice.call("DELETE", f"subscriptions/{mine['id']}").status_code == 200
    assert admin.call("DELETE", f"subscriptions/{theirs['id']}").status_code == 200
    assert listed(alice) == set() and listed(bob) == set()
    _problem(alice.call("GET", f"subscriptions/{mine['id']}"), 404)


@pytest.mark.parametrize("order", ["subscribe-then-delete", "delete-then-subscribe"])
def test_a_co_owner_presenting_the_whole_callback_url_takes_the_subscription_over(
    caller: Callable[..., Caller], receiver_factory: Any, unique_type: str, order: str
) -> None:
    """A co-owner re-points the trigger's connection and saves the flow: the platform subscribes
    the same callback URL with the new connection (and deletes the old registration). Whoever
    presents the whole callback URL, its `sig` the proof, takes the subscription over: 201, the
    same id, now theirs; the flow keeps receiving. A URL that differs (another `sig`) is another
    subscription, and takes nothing over."""
    alice, bob, publisher = caller(SUBSCRIBER), caller(SUBSCRIBER), caller(PUBLISHER)
    receiver: Receiver = receiver_factory()
    callback = f"{receiver.url}?sig={uuid.uuid4().hex}"
    first = alice.call("POST", "subscriptions", {"notificationUrl": callback, "eventTypes": [unique_type]})
    assert first.status_code == 201, first.text
    sub_id = first.json()["id"]

    if order == "delete-then-subscribe":
        # With the new connection, the old registration is not the caller's: it removes nothing.
        assert bob.call("DELETE", first.headers["Location"]).status_code == 200
    taken = bob.call("POST", "subscriptions", {"notificationUrl": callback, "eventTypes": [unique_type]})
    assert taken.status_code == 201, taken.text
    assert taken.json()["id"] == sub_id and "secret" not in taken.json()
    assert taken.headers["Location"] != first.headers["Location"]
    if order == "subscribe-then-delete":
        # The old registration, deleted by its new owner: superseded, so nothing is removed.
        assert bob.call("DELETE", first.headers["Location"]).status_code == 200

    assert bob.call("GET", f"subscriptions/{sub_id}").status_code == 200
    assert [s["id"] for s in bob.call("GET", "subscriptions").json()["value"]] == [sub_id]
    _problem(alice.call("GET", f"subscriptions/{sub_id}"), 404)  # no longer hers
    assert alice.call("GET", "subscriptions").json()["value"] == []
    accepted = publisher.call("POST", "events", {"type": unique_type, "data": {"n": 1}})
    assert accepted.status_code == 202, accepted.text
    assert receiver.wait_for(1)[0].headers["webhook-id"] == accepted.json()["id"]

    # Another sig is another URL: a subscription of its own, the first one untouched.
    other = alice.call(
        "POST", "subscriptions", {"notificationUrl": f"{receiver.url}?sig=guess", "eventTypes": [unique_type]}
    )
    assert other.status_code == 201 and other.json()["id"] != sub_id
    assert bob.call("GET", f"subscriptions/{sub_id}").status_code == 200


def test_one_owners_list_pages_through_its_own_only(caller: Callable[..., Caller]) -> None:
    """The owner index pages with nextLink like the full list does."""
    carol = caller(SUBSCRIBER)
    made = {carol.subscribe(f"http://127.0.0.1:9/carol/{carol.oid}/{i}")["id"] for i in range(5)}
    seen: list[str] = []
    url = f"{carol.relay.base}/subscriptions?limit=2"
    while url:
        page = carol.call("GET", url).json()
        assert len(page["value"]) <= 2
        seen += [s["id"] for s in page["value"]]
        url = page.get("nextLink")
    assert sorted(seen) == sorted(made)


def test_a_publishers_event_reaches_a_subscribers_callback(
    caller: Callable[..., Caller], receiver_factory: Any, unique_type: str
) -> None:
    publisher, subscriber = caller(PUBLISHER), caller(SUBSCRIBER)
    receiver: Receiver = receiver_factory()
    subscriber.subscribe(receiver.url, eventTypes=[unique_type])
    accepted = publisher.call("POST", "events", {"type": unique_type, "subject": "orders/1", "data": {"n": 1}})
    assert accepted.status_code == 202, accepted.text
    [delivered] = receiver.wait_for(1)
    assert delivered.json()["type"] == unique_type and delivered.json()["data"] == {"n": 1}
    assert delivered.headers["webhook-id"] == accepted.json()["id"]
    # Nothing of the caller's identity travels to the subscriber.
    assert "authorization" not in delivered.headers and "x-ms-client-principal" not in delivered.headers


def test_the_dev_host_replaces_a_forged_principal_with_the_tokens(caller: Callable[..., Caller]) -> None:
    """A valid subscriber token plus a forged admin principal: the forged header is dropped."""
    me = caller(SUBSCRIBER)
    response = me.call(
        "PUT",
        "event-types/entra.forged",
        {"description": "x"},
        headers={"X-MS-CLIENT-PRINCIPAL": _forged_principal([ADMIN])},
    )
    _problem(response, 403)


def test_signing_keys_come_from_an_https_jwks_url(azurite: Any, tmp_path: Path) -> None:
    """RELAY_ENTRA_JWKS as an https URL, as Entra publishes its keys (here a loopback TLS server
    with a test CA standing in for login.microsoftonline.com)."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    keys = jwks_file(tmp_path).read_bytes()
    fetched: list[str] = []

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(keys)))
            self.end_headers()
            self.wfile.write(keys)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/discovery/v2.0/keys"
    relay = RelayProcess(
        azurite, {**ENTRA_ENV, "RELAY_ENTRA_JWKS": url, "SSL_CERT_FILE": str(ca_file)}, function_key=None
    ).start()
    try:
        good = {"Authorization": "Bearer " + Tokens().mint([SUBSCRIBER])}
        assert requests.get(f"{relay.base}/subscriptions", headers=good, timeout=30).status_code == 200
        forged = {"Authorization": "Bearer " + Tokens(OTHER_KEY).mint([SUBSCRIBER])}
        _problem(requests.get(f"{relay.base}/subscriptions", headers=forged, timeout=30), 401)
        assert requests.get(f"{relay.base}/subscriptions", headers=good, timeout=30).status_code == 200
        assert fetched and set(fetched) == {"/discovery/v2.0/keys"}
    finally:
        relay.stop()
        server.shutdown()
        server.server_close()


# ---- the Azure path: the platform header, trusted only with the platform flag ------------------


@pytest.fixture
def platform(app: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    """The function app in entra mode as it runs in Azure, behind App Service Authentication:
    called in-process, since the dev host never runs without validating tokens itself."""
    from relay.core import settings

    def set_flag(flag: str) -> Any:
        monkeypatch.setenv("RELAY_AUTH", "entra")
        monkeypatch.setenv("WEBSITE_AUTH_ENABLED", flag)
        settings.reset_settings()
        return app

    yield set_flag
    monkeypatch.delenv("RELAY_AUTH")
    settings.reset_settings()


@pytest.mark.parametrize("flag", ["True", "true"])
def test_easy_auth_header_is_honoured_when_the_platform_says_auth_is_on(platform: Any, flag: str) -> None:
    """In Azure the principal arrives from Easy Auth and WEBSITE_AUTH_ENABLED=True is set."""
    app = platform(flag)
    headers = {"X-MS-CLIENT-PRINCIPAL": _forged_principal([SUBSCRIBER])}
    assert app.get("subscriptions", headers=headers).status_code == 200
    assert app.post("events", {"type": "x", "data": 1}, headers=headers).status_code == 403
    assert app.get("subscriptions").status_code == 401
    garbage = {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"{not json").decode()}
    assert app.get("subscriptions", headers=garbage).status_code == 401


def test_easy_auth_header_is_refused_without_the_platform_flag(platform: Any) -> None:
    app = platform("")
    headers = {"X-MS-CLIENT-PRINCIPAL": _forged_principal([ADMIN])}
    assert app.get("subscriptions", headers=headers).status_code == 401
    assert app.post("events", {"type": "x", "data": 1}, headers=headers).status_code == 401
    assert app.get("health").status_code == 200


# ---- the principal, parsed (no I/O) ---------------------------------------------------------------


def _encode(doc: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_principal_owns_by_tenant_and_object_id_never_by_subject_and_takes_roles_from_either_claim_type() -> None:
    role_typ = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    tid = {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": "t-1"}
    doc = {
        "auth_typ": "aad",
        "name_typ": "name",
        "role_typ": role_typ,
        "claims": [
            {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "oid-1"},
            tid,
            {"typ": "sub", "val": "sub-1"},
            {"typ": "roles", "val": PUBLISHER},
            {"typ": role_typ, "val": ADMIN},
            {"typ": "name", "val": "Alice"},
        ],
    }
    assert parse_principal(_encode(doc)) == Principal("oid:t-1:oid-1", frozenset({PUBLISHER, ADMIN}), "Alice", "oid-1")
    doc["claims"] = [{"typ": "oid", "val": "oid-2"}, {"typ": "tid", "val": "t-2"}]
    assert parse_principal(_encode(doc)).id == "oid:t-2:oid-2"
    doc["claims"] = [{"typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier", "val": "s"}, tid]
    assert parse_principal(_encode(doc)).id is None  # a subject is never an owner
    doc["claims"] = [{"typ": "azp", "val": "client-1"}, {"typ": "sub", "val": "s"}, tid]
    assert parse_principal(_encode(doc)).id == "app:t-1:client-1"
    doc["claims"] = [{"typ": "roles", "val": ADMIN}]
    assert parse_principal(_encode(doc)) is None  # names nobody
    for bad in ("", "***", _encode({"claims": "x"}), base64.b64encode(b"[1]").decode()):
        assert parse_principal(bad) is None


def test_the_dev_hosts_principal_is_what_the_relay_reads() -> None:
    principal = parse_principal(
        client_principal(
            {"oid": "o", "tid": "t", "sub": "s", "roles": [SUBSCRIBER, PUBLISHER], "name": "App", "exp": 1}
        )
    )
    assert principal == Principal("oid:t:o", frozenset({SUBSCRIBER, PUBLISHER}), "App", "o")
    assert parse_principal(client_principal({"oid": "o", "tid": "t", "roles": ADMIN})).roles == frozenset()


def test_keys_mode_ignores_the_easy_auth_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """RELAY_AUTH=keys (the default): the principal plays no part, whatever a caller sends."""
    from relay.core import settings
    from relay.http.api import Request
    from relay.http.routes.subscriptions import list_subscriptions

    monkeypatch.setenv("RELAY_AUTH", "keys")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    settings.reset_settings()
    try:
        request = Request(
            "GET",
            "http://h/api/subscriptions",
            "http://h",
            {},
            {},
            {"x-ms-client-principal": _forged_principal([PUBLISHER])},
            b"",
        )
        assert admit(request, list_subscriptions) is None
    finally:
        settings.reset_settings()


def test_the_dev_host_refuses_an_incomplete_or_plain_http_configuration(tmp_path: Path) -> None:
    from relay.core.errors import ConfigurationError
    from relay_dev.easyauth import EasyAuth

    jwks = str(jwks_file(tmp_path))
    assert EasyAuth.from_environ({"RELAY_ENTRA_JWKS": jwks}) is None  # keys mode: no Easy Auth
    assert EasyAuth.from_environ({"RELAY_AUTH": "entra"}) is None  # Azure: the platform plays it
    with pytest.raises(ConfigurationError, match="RELAY_ENTRA_ISSUER"):
        EasyAuth.from_environ({"RELAY_AUTH": "entra", "RELAY_ENTRA_JWKS": jwks, "RELAY_ENTRA_AUDIENCE": AUDIENCE})
    with pytest.raises(ConfigurationError, match="https"):
        EasyAuth.from_environ({**ENTRA_ENV, "RELAY_ENTRA_JWKS": "http://keys.example/jwks"})
    with pytest.raises(ConfigurationError, match="JWKS file"):
        EasyAuth.from_environ({**ENTRA_ENV, "RELAY_ENTRA_JWKS": str(tmp_path / "missing.json")})
    with pytest.raises(ConfigurationError, match="RELAY_AUTH"):
        from relay.core.settings import auth_mode

        auth_mode({"RELAY_AUTH": "aad"})


def test_the_owner_index_survives_a_crash_between_writes_and_keeps_fan_out_owner_free(azurite: Any) -> None:
    """Store level: an owner row whose subscription never got written (a crash after the index
    write) is skipped, a subscription is listed for its owner only, and fan-out finds it whoever
    owns it (the fan-out index carries no owner)."""
    from relay.core.models import SubscriptionRequest
    from relay.store.storage import SUBSCRIPTIONS_TABLE, Endpoints, Storage
    from relay.store.subscriptions import SubscriptionStore, owner_partition

    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    store = SubscriptionStore(storage)
    owner, other = f"oid-{uuid.uuid4()}", f"oid-{uuid.uuid4()}"
    kind = f"owned.{uuid.uuid4().hex[:8]}"
    table = storage.table(SUBSCRIPTIONS_TABLE)
    table.upsert_entity({"PartitionKey": owner_partition(owner), "RowKey": uuid.uuid4().hex, "owner": owner})
    mine, _ = store.subscribe(
        SubscriptionRequest(notificationUrl=f"https://a.example/{kind}", eventTypes=[kind]), owner=owner, scope=owner
    )
    theirs, _ = store.subscribe(
        SubscriptionRequest(notificationUrl=f"https://b.example/{kind}", eventTypes=[kind]), owner=other, scope=other
    )
    assert [e.id for e in store.list_page(limit=10, token=None, owner=owner)[0]] == [mine.id]
    assert [e.id for e in store.list_page(limit=10, token=None, owner=other)[0]] == [theirs.id]
    assert {mine.id, theirs.id} <= {t.sub for page in store.matching(kind, None) for t in page}
    index_rows = list(table.query_entities("PartitionKey eq @pk", parameters={"pk": f"x:{kind}"}))
    assert index_rows and all("owner" not in row for row in index_rows)
    store.delete(mine.id)
    assert store.list_page(limit=10, token=None, owner=owner)[0] == []
    left = [r["RowKey"] for r in table.query_entities("PartitionKey eq @pk", parameters={"pk": owner_partition(owner)})]
    assert mine.id not in left  # removed with the subscription
