"""The custom connector: the committed files are the code's output, valid Swagger 2.0, valid
against the Power Platform connector schemas, and pass the certification rules that the schemas
cannot express; the relay serves the same definition anonymously."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
import requests
from jsonschema import Draft4Validator, Draft7Validator
from openapi_spec_validator import OpenAPIV2SpecValidator, validate

from relay.connector import DEFINITION_FILE, EXAMPLE_HOST, PROPERTIES_FILE, definition, properties, write_files

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "connector"
SHARED = ROOT.parent / "shared" / "powerplatform"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["definitions"][schema["$ref"].split("/")[-1]]
    return schema


def properties_in(doc: dict[str, Any], schema: dict[str, Any], where: str,
                  seen: frozenset[str] = frozenset()) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of a schema and of the schemas nested in it, with a path naming it."""
    ref = schema.get("$ref")
    if ref in seen:
        return
    schema = resolve(doc, schema)
    seen = seen | {ref} if ref else seen
    for name, sub in schema.get("properties", {}).items():
        yield f"{where}.{name}", resolve(doc, sub)
        yield from properties_in(doc, sub, f"{where}.{name}", seen)
    items = schema.get("items")
    if isinstance(items, dict):
        yield from properties_in(doc, items, f"{where}[]", seen)
    for part in schema.get("allOf", []):
        yield from properties_in(doc, part, where, seen)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from properties_in(doc, schema["additionalProperties"], f"{where}{{}}", seen)


def all_schemas(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every top-level schema: bodies, responses, notification contents and definitions."""
    for path, item in doc["paths"].items():
        if "x-ms-notification-content" in item:
            yield f"{path} notification", item["x-ms-notification-content"]["schema"]
    for path, method, op in operations(doc):
        for param in op.get("parameters", []):
            if param["in"] == "body":
                yield f"{method} {path} body", param["schema"]
        for status, answer in op["responses"].items():
            if "schema" in answer:
                yield f"{method} {path} {status}", answer["schema"]
    for name, schema in doc.get("definitions", {}).items():
        yield f"definitions.{name}", schema


def is_sentence(text: str) -> bool:
    return bool(text) and text[0].isupper() and text.endswith(".")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return definition(EXAMPLE_HOST)


@pytest.fixture(scope="module")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the Power Platform schemas are not available here")
    return SHARED


# ---- the committed files ------------------------------------------------------------------------

def test_committed_files_are_what_the_code_generates(tmp_path: Path) -> None:
    """connector/*.json equal, byte for byte, what `python -m relay connector` writes for the same host."""
    written = write_files(EXAMPLE_HOST, tmp_path)
    assert [p.name for p in written] == [DEFINITION_FILE, PROPERTIES_FILE]
    for path in written:
        committed = COMMITTED / path.name
        assert committed.exists(), f"{committed} is missing: run python -m relay connector --host {EXAMPLE_HOST}"
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{committed} differs from the code: run python -m relay connector --host {EXAMPLE_HOST} --out connector/")
        text = path.read_text(encoding="utf-8")
        assert text.endswith("}\n") and "\n  \"" in text


def test_the_command_line_writes_the_files(tmp_path: Path) -> None:
    """`python -m relay connector --host H --out DIR` writes both files for host H."""
    from relay.__main__ import main

    assert main(["connector", "--host", "relay.example.net", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / DEFINITION_FILE).read_text())["host"] == "relay.example.net"
    assert json.loads((tmp_path / PROPERTIES_FILE).read_text()) == properties()


# ---- validity -----------------------------------------------------------------------------------

def test_definition_is_valid_swagger_2(doc: dict[str, Any]) -> None:
    """The definition passes the OpenAPI 2.0 (Swagger) validator."""
    validate(doc, cls=OpenAPIV2SpecValidator)
    assert doc["swagger"] == "2.0" and doc["basePath"] == "/api" and doc["schemes"] == ["https"]
    assert doc["host"] == EXAMPLE_HOST


def test_definition_is_valid_against_the_power_platform_schema(doc: dict[str, Any], shared: Path) -> None:
    """The definition is valid against the Power Platform apiDefinition schema (draft-04)."""
    schema = json.loads((shared / "apiDefinition.swagger.schema.json").read_text(encoding="utf-8"))
    errors = sorted(Draft4Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])


def test_properties_are_valid_against_the_power_platform_schema(shared: Path) -> None:
    """apiProperties.json is valid against the Power Platform apiProperties schema (draft-07)."""
    schema = json.loads((shared / "apiProperties.schema.json").read_text(encoding="utf-8"))
    errors = list(Draft7Validator(schema).iter_errors(properties()))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])


def test_the_schema_check_would_catch_an_invalid_extension(doc: dict[str, Any], shared: Path) -> None:
    """The Power Platform schema refuses what it should, so its passing above means something."""
    schema = json.loads((shared / "apiDefinition.swagger.schema.json").read_text(encoding="utf-8"))
    bad = json.loads(json.dumps(doc))
    bad["paths"]["/subscriptions"]["post"]["x-ms-long-running-operation"] = True
    assert list(Draft4Validator(schema).iter_errors(bad))


# ---- security and connection --------------------------------------------------------------------

def test_the_function_key_is_the_connection_parameter(doc: dict[str, Any]) -> None:
    """Security is an API key in x-functions-key, named api_key, asked for as a secure string."""
    assert doc["securityDefinitions"] == {"api_key": {
        "type": "apiKey", "in": "header", "name": "x-functions-key",
        "description": doc["securityDefinitions"]["api_key"]["description"]}}
    assert doc["security"] == [{"api_key": []}]
    param = properties()["properties"]["connectionParameters"]["api_key"]
    assert param["type"] == "securestring"
    ui = param["uiDefinition"]
    assert ui["displayName"] and ui["description"] and ui["tooltip"] and ui["constraints"]["required"] == "true"
    assert properties()["properties"]["iconBrandColor"].lower() not in ("#007ee5", "#ffffff")


# ---- the certification rules, in code -----------------------------------------------------------

def test_operation_ids_are_unique_and_alphanumeric(doc: dict[str, Any]) -> None:
    """Every operation has an operationId of letters and digits, and no two share one."""
    ids = [op.get("operationId", "") for _, _, op in operations(doc)]
    assert all(re.fullmatch(r"[A-Za-z0-9]+", i) for i in ids), ids
    assert len(ids) == len(set(ids))


def test_summaries_and_descriptions(doc: dict[str, Any]) -> None:
    """Every operation has a sentence-case summary of at most 80 characters and a sentence description."""
    for path, method, op in operations(doc):
        where = f"{method} {path}"
        summary, description = op.get("summary", ""), op.get("description", "")
        assert summary and len(summary) <= 80 and summary[0].isupper() and not summary.endswith("."), where
        assert all(not w[0].isupper() or w.isupper() for w in summary.split()[1:]), where
        assert is_sentence(description) and description != summary, where
        for status, answer in op["responses"].items():
            assert answer.get("description"), f"{where} {status}"


def test_every_parameter_and_property_is_described(doc: dict[str, Any]) -> None:
    """Every parameter and every schema property, nested ones too, has a description and an x-ms-summary."""
    missing = []
    for path, method, op in operations(doc):
        for param in op.get("parameters", []):
            if not (param.get("description") and param.get("x-ms-summary")):
                missing.append(f"{method} {path} parameter {param['name']}")
    count = 0
    for where, schema in all_schemas(doc):
        for name, sub in properties_in(doc, schema, where):
            count += 1
            if not (sub.get("description") and sub.get("x-ms-summary")):
                missing.append(name)
    assert count > 50  # the walk reached the nested schemas
    assert not missing, missing


def test_the_notification_url_is_internal_and_required_all_the_way_down(doc: dict[str, Any]) -> None:
    """The webhook trigger's callback property is x-ms-notification-url, internal, and required at every level."""
    triggers = [(path, op) for path, method, op in operations(doc) if op.get("x-ms-trigger") == "single"]
    assert [(path, op["operationId"]) for path, op in triggers] == [("/subscriptions", "OnEventPublished")]
    path, op = triggers[0]
    bodies = [p for p in op["parameters"] if p["in"] == "body"]
    assert len(bodies) == 1 and bodies[0]["required"] is True
    schema = resolve(doc, bodies[0]["schema"])
    urls = [n for n, s in schema["properties"].items() if s.get("x-ms-notification-url") is True]
    assert urls == ["notificationUrl"]
    url = schema["properties"]["notificationUrl"]
    assert url["x-ms-visibility"] == "internal" and url["type"] == "string"
    assert "notificationUrl" in schema["required"]
    assert "201" in op["responses"] and "Location" in op["responses"]["201"]["headers"]
    content = doc["paths"][path]["x-ms-notification-content"]
    assert content["description"] and set(content["schema"]["properties"]) >= {
        "specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"}


def test_the_event_type_is_a_dropdown_and_types_the_data(doc: dict[str, Any]) -> None:
    """The event type is picked from the internal list operation; data's schema comes from the chosen type."""
    ops = {op["operationId"]: (path, method, op) for path, method, op in operations(doc)}
    body = resolve(doc, next(p for p in ops["OnEventPublished"][2]["parameters"] if p["in"] == "body")["schema"])
    dropdown = body["properties"]["eventType"]["x-ms-dynamic-values"]
    assert dropdown == {"operationId": "ListEventTypes", "value-collection": "value",
                        "value-path": "name", "value-title": "name"}
    assert "eventType" in body["required"]
    lister = ops["ListEventTypes"][2]
    assert lister["x-ms-visibility"] == "internal"
    item = lister["responses"]["200"]["schema"]["properties"]["value"]["items"]
    assert {"name"} <= set(item["properties"]) and ops["ListEventTypes"][:2] == ("/event-types", "get")

    data = doc["paths"]["/subscriptions"]["x-ms-notification-content"]["schema"]["properties"]["data"]
    dynamic = data["x-ms-dynamic-schema"]
    path, method, getter = ops[dynamic["operationId"]]
    assert (path, method) == ("/event-types/{name}", "get")
    assert set(dynamic["parameters"]) == {p["name"] for p in getter["parameters"]}
    assert dynamic["parameters"]["name"] == {"parameter": "eventType"}
    assert dynamic["value-path"] in getter["responses"]["200"]["schema"]["properties"]
    assert data["x-ms-dynamic-properties"]["parameters"]["name"] == {"parameterReference": "body/eventType"}


def test_dynamic_references_name_operations_and_parameters_that_exist(doc: dict[str, Any]) -> None:
    """Every x-ms-dynamic-* extension calls a defined operation with parameters it has."""
    ops = {op["operationId"]: op for _, _, op in operations(doc)}
    found = 0

    def visit(node: Any) -> None:
        nonlocal found
        if isinstance(node, dict):
            for key in ("x-ms-dynamic-values", "x-ms-dynamic-list", "x-ms-dynamic-schema", "x-ms-dynamic-properties"):
                if key in node:
                    found += 1
                    target = ops[node[key]["operationId"]]
                    names = {p["name"] for p in target.get("parameters", [])}
                    assert set(node[key].get("parameters", {})) <= names, (key, node[key])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(doc)
    assert found >= 8


def test_contract_operations_are_all_there(doc: dict[str, Any]) -> None:
    """The triggers and actions the contract names exist with the right methods, paths and visibility."""
    ops = {(method, path): op for path, method, op in operations(doc)}
    assert ops[("post", "/subscriptions")]["x-ms-trigger"] == "single"
    poll = ops[("get", "/events/poll")]
    assert poll["x-ms-trigger"] == "batch"
    state = next(p for p in poll["parameters"] if p["name"] == "triggerState")
    assert state["in"] == "query" and state["x-ms-visibility"] == "internal"
    assert {"200", "202"} <= set(poll["responses"])
    assert "value" in poll["responses"]["200"]["schema"]["properties"]
    for key in (("post", "/events"), ("get", "/subscriptions"), ("get", "/subscriptions/{id}"),
                ("get", "/subscriptions/{id}/deliveries"), ("post", "/subscriptions/{id}/replay")):
        assert ops[key].get("x-ms-visibility") != "internal", key
    replay = ops[("post", "/subscriptions/{id}/replay")]
    assert "Location" in replay["responses"]["202"]["headers"] and "200" in replay["responses"]
    publish = resolve(doc, next(p for p in ops[("post", "/events")]["parameters"] if p["in"] == "body")["schema"])
    assert set(publish["required"]) == {"type", "data"}


def test_exactly_one_internal_delete(doc: dict[str, Any]) -> None:
    """There is one DELETE, internal, on /subscriptions/{id} with a singly encoded id."""
    deletes = [(path, op) for path, method, op in operations(doc) if method == "delete"]
    assert len(deletes) == 1
    path, op = deletes[0]
    assert path == "/subscriptions/{id}" and op["x-ms-visibility"] == "internal"
    (param,) = op["parameters"]
    assert param["in"] == "path" and param["name"] == "id" and param["x-ms-url-encoding"] == "single"
    assert "200" in op["responses"]


# ---- against the running relay ------------------------------------------------------------------

def test_the_delete_path_matches_the_location_the_relay_returns(relay, receiver_factory) -> None:
    """host + basePath + the DELETE path template matches the Location of a real subscription, which DELETE removes."""
    doc = requests.get(f"{relay.base}/openapi.json", timeout=30).json()
    (template,) = [path for path, method, _ in operations(doc) if method == "delete"]
    sub = relay.subscribe(receiver_factory().url)
    location = urlsplit(sub["location"])
    assert location.netloc == doc["host"]
    pattern = re.escape(doc["basePath"] + template).replace(re.escape("{id}"), "(?P<id>[^/]+)")
    match = re.fullmatch(pattern, location.path)
    assert match and match["id"] == sub["id"]
    assert relay.session.delete(sub["location"], timeout=30).status_code == 200
    assert relay.get(f"subscriptions/{sub['id']}").status_code == 404


def test_openapi_json_is_served_anonymously_with_the_request_host(relay) -> None:
    """GET /api/openapi.json needs no key and answers the definition for the host the request came to."""
    assert requests.get(f"{relay.base}/subscriptions", timeout=30).status_code == 401
    answer = requests.get(f"{relay.base}/openapi.json", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    assert answer.json() == definition(f"127.0.0.1:{relay.port}")
    # The dev host answers only its own address or localhost (DNS rebinding): the other name is that.
    other = requests.get(f"{relay.base}/openapi.json", headers={"Host": f"localhost:{relay.port}"}, timeout=30)
    assert other.json() == definition(f"localhost:{relay.port}")
