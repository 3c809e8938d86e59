"""Roles are declared per route beside its handler (issue 21): the rule travels with the binding,
so renaming a handler changes nothing, and a route without a rule stops the app at start-up."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import azure.functions as func
import pytest

from relay.core import settings
from relay.core.errors import ConfigurationError
from relay.http.access import ADMIN, ADMIN_ONLY, ANYONE, PUBLISHER, SUBSCRIBER, rule
from relay.http.api import BOUND, Reply, Request, http, route

# The contract's table (section 4), as it stood keyed by handler name before the move: every route
# keeps exactly these rules. (handler, roles besides the admin, owned parameter, scoped to the caller).
CONTRACT = {
    ("subscriptions", "POST"): ("create_subscription", {SUBSCRIBER}, None, True),
    ("subscriptions", "GET"): ("list_subscriptions", {SUBSCRIBER}, None, True),
    ("unsubscribe", "POST"): ("unsubscribe", {SUBSCRIBER}, None, True),
    ("subscription", "GET"): ("get_subscription", {SUBSCRIBER}, "id", True),
    ("subscription", "DELETE"): ("delete_subscription", {SUBSCRIBER}, None, True),
    ("deliveries", "GET"): ("list_deliveries", {SUBSCRIBER}, "id", True),
    ("delivery", "GET"): ("get_delivery", {SUBSCRIBER}, "id", True),
    ("replay", "POST"): ("start_replay", {SUBSCRIBER}, "id", True),
    ("operation", "GET"): ("get_operation", {SUBSCRIBER}, "operationId", True),
    ("secret", "POST"): ("rotate_secret", {SUBSCRIBER}, "id", True),
    ("activate", "POST"): ("activate_subscription", {SUBSCRIBER}, "id", True),
    # The controls (CONTRACT section 6): like activate and rotate.
    ("pause", "POST"): ("pause_subscription", {SUBSCRIBER}, "id", True),
    ("resume", "POST"): ("resume_subscription", {SUBSCRIBER}, "id", True),
    ("test", "POST"): ("test_subscription", {SUBSCRIBER}, "id", True),
    ("resend", "POST"): ("resend_delivery", {SUBSCRIBER}, "id", True),
    ("poll", "GET"): ("poll_events", {SUBSCRIBER}, None, False),
    ("events", "POST"): ("publish_events", {PUBLISHER}, None, False),
    # The CloudEvents webhook validation handshake (section 6), a publisher's question.
    ("events", "OPTIONS"): ("handshake", {PUBLISHER}, None, False),
    ("events_batch", "POST"): ("publish_batch", {PUBLISHER}, None, False),
    ("event_types", "GET"): ("list_event_types", {PUBLISHER, SUBSCRIBER}, None, False),
    ("event_type", "GET"): ("get_event_type", {PUBLISHER, SUBSCRIBER}, None, False),
    ("event_data_schema", "GET"): ("event_data_schema", {PUBLISHER, SUBSCRIBER}, None, False),
    ("event_type", "PUT"): ("put_event_type", set(), None, False),
    ("event_type", "DELETE"): ("delete_event_type", set(), None, False),
    ("stats", "GET"): ("get_stats", set(), None, False),
    ("smoke_runs", "POST"): ("create_smoke_run", {SUBSCRIBER}, None, False),
    ("smoke_run", "GET"): ("get_smoke_run", {SUBSCRIBER}, None, False),
    ("smoke_run", "DELETE"): ("delete_smoke_run", {SUBSCRIBER}, None, False),
}
ANONYMOUS = {("health", "GET"), ("openapi", "GET"), ("openapi_full", "GET"), ("smoke_hook", "POST")}


def test_every_route_declares_the_contracts_rule_beside_its_handler() -> None:
    import function_app  # noqa: F401 - binds every route

    declared = {}
    anonymous = set()
    for name, methods in BOUND.items():
        for method, (handler, declared_rule) in methods.items():
            if declared_rule.anyone:
                anonymous.add((name, method))
                continue
            roles = set(declared_rule.roles) - {ADMIN}
            assert ADMIN in declared_rule.roles, (name, method)
            declared[(name, method)] = (handler.__name__, roles, declared_rule.owned, declared_rule.mine)
    assert declared == CONTRACT
    assert anonymous == ANONYMOUS


def _principal(roles: list[str]) -> str:
    # An application token (no oid): nothing to adopt from earlier releases, so no storage is needed.
    claims = [{"typ": "azp", "val": "0000-app"}, {"typ": "tid", "val": "0000-tid"}]
    claims += [{"typ": "roles", "val": role} for role in roles]
    doc = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(doc).encode()).decode()


@pytest.fixture
def entra(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RELAY_AUTH", "entra")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    settings.reset_settings()
    yield
    settings.reset_settings()


def _call(serve: object, roles: list[str]) -> int:
    request = func.HttpRequest(
        "GET", "http://h/api/things", headers={"x-ms-client-principal": _principal(roles)}, body=b""
    )
    assert callable(serve)
    response = serve(request)
    assert isinstance(response, func.HttpResponse)
    return response.status_code


def a_name_no_table_knows(request: Request) -> Reply:
    return Reply(200, {"ok": True})


def test_a_renamed_handler_keeps_the_rule_declared_beside_it(entra: None) -> None:
    # Keyed by function name, this handler (named in no table) was admin-only: a subscriber got 403.
    serve = route({"GET": (a_name_no_table_knows, rule(SUBSCRIBER))})
    assert _call(serve, [SUBSCRIBER]) == 200
    assert _call(serve, [PUBLISHER]) == 403
    assert _call(serve, [ADMIN]) == 200
    closed = route({"GET": (a_name_no_table_knows, ADMIN_ONLY)})
    assert _call(closed, [SUBSCRIBER]) == 403
    assert _call(closed, [ADMIN]) == 200


def test_a_route_without_a_declared_rule_is_a_start_up_error() -> None:
    bp = func.Blueprint()
    with pytest.raises(ConfigurationError, match="no_rule: GET declares no access rule"):
        http(bp, "no_rule", "things", {"GET": a_name_no_table_knows})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="anonymous"):
        http(bp, "open_but_ruled", "things", {"GET": (a_name_no_table_knows, rule(SUBSCRIBER))}, anonymous=True)
    with pytest.raises(ConfigurationError, match="ANYONE"):
        http(bp, "keyed_but_open", "things", {"GET": (a_name_no_table_knows, ANYONE)})
    assert "no_rule" not in BOUND
