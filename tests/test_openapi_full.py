"""The full API document (`GET /api/openapi/full.json`, CONTRACT section 6): anonymous, valid
OpenAPI 3.0, every route of the app with its methods, built from the same request models as the
connector; and the input rules it declares that the relay used to get wrong (path ids with control
characters, empty eventType), checked on every route it lists."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from openapi_spec_validator import validate

from relay.core.models import EventIn, EventTypeRequest, ReplayRequest, SubscriptionRequest
from relay.http import access
from relay.http.connector.full import full_document
from tests.helpers import InProcessApp, http_functions, problem_of

METHODS = ("get", "put", "post", "delete", "patch", "options")
# Not the JSON API: the operator console's static page and files.
NOT_API = {"console", "console/{file}"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return full_document("https://relay.example")


def test_the_document_is_valid_openapi_and_names_what_clients_need(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["servers"] == [{"url": "https://relay.example/api"}]
    for path, method in (
        ("/event-types/{name}", "put"),
        ("/event-types/{name}", "delete"),
        ("/stats", "get"),
        ("/unsubscribe", "post"),
        ("/health", "get"),
    ):
        assert method in doc["paths"][path], (method, path)
    for path in ("/health", "/openapi.json", "/openapi/full.json"):
        assert doc["paths"][path]["get"]["security"] == []
    assert doc["components"]["securitySchemes"]["relay"]["name"] == "x-functions-key"
    bearer = full_document("https://relay.example", "entra")["components"]["securitySchemes"]["relay"]
    assert bearer["scheme"] == "bearer"
    # Anonymous in entra mode too: Easy Auth (and the dev host playing it) lets it through.
    assert access.is_anonymous_path("/api/openapi/full.json")


def test_every_route_of_the_app_is_in_the_document_with_its_methods(app: InProcessApp, doc: dict[str, Any]) -> None:
    """Each HTTP function (console aside) is a path of the document, and the methods it answers (the
    Allow of its 405) are the document's: adding a route without its entry fails here."""
    templates = {f.template for f in http_functions()} - NOT_API
    assert {p.lstrip("/") for p in doc["paths"]} == templates
    for template in templates:
        path = re.sub(r"\{[^}]+\}", "x", template)
        answer = app.request("PATCH", path)
        assert answer.status_code == 405, (template, answer.status_code)
        allowed = {m.strip().lower() for m in answer.headers["allow"].split(",")}
        assert allowed == {m for m in doc["paths"]["/" + template] if m in METHODS}, template


def test_request_bodies_come_from_the_models(doc: dict[str, Any]) -> None:
    """Every field of the request models is in the document's bodies, so a new field needs no second edit."""
    bodies = {
        SubscriptionRequest: doc["paths"]["/subscriptions"]["post"],
        EventIn: doc["paths"]["/events/batch"]["post"],
        ReplayRequest: doc["paths"]["/subscriptions/{id}/replay"]["post"],
        EventTypeRequest: doc["paths"]["/event-types/{name}"]["put"],
    }
    for model, op in bodies.items():
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        schema = schema.get("items", schema)
        names = {f.alias or n for n, f in model.model_fields.items()}
        assert set(schema["properties"]) == names, model.__name__


def test_served_anonymously_for_the_public_host(relay) -> None:
    answer = requests.get(f"{relay.base}/openapi/full.json", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    assert answer.json() == full_document(f"http://127.0.0.1:{relay.port}")


def path_routes(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (method, path, name)
        for path, item in doc["paths"].items()
        for method in item
        for name in re.findall(r"\{([^}]+)\}", path)
    ]


@pytest.mark.parametrize("bad", ["%C2%84", "abc%0A", "%00", "a%7Fb", "%0D%0A"])
def test_a_path_id_with_a_control_character_is_a_400_naming_it(
    app: InProcessApp, doc: dict[str, Any], bad: str
) -> None:
    """On every route with a path id (DELETE /subscriptions/%C2%84 was a 200, GET .../abc%0A a 404)."""
    routes = path_routes(doc)
    assert len(routes) >= 10
    for method, path, name in routes:
        url = re.sub(r"\{([^}]+)\}", lambda m, name=name: bad if m.group(1) == name else "x", path).lstrip("/")
        problem_of(app.request(method.upper(), url, {} if method in ("post", "put") else None), 400, name)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("events/poll?eventType=", "eventType"),
        ("subscriptions?eventType=", "eventType"),
        ("subscriptions?limit=", "limit"),
        ("stats?window=", "window"),
        ("subscriptions/0123456789abcdef0123456789abcdef/deliveries?status=", "status"),
    ],
)
def test_an_empty_filter_is_a_400_naming_it(app: InProcessApp, path: str, field: str) -> None:
    """poll?eventType= was read as *, subscriptions?eventType= listed everything: an empty filter (or
    limit) is a 400 naming it; leaving it out still means all."""
    problem_of(app.get(path), 400, field)
    assert app.get(path.split("?")[0]).status_code in (200, 202, 404)  # left out: no filter
