"""The custom connector: the committed files are the code's output, valid Swagger 2.0, valid
against the Power Platform connector schemas, and pass the certification rules that the schemas
cannot express; the relay serves the same definition anonymously."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from jsonschema import Draft4Validator, Draft7Validator
from openapi_spec_validator import OpenAPIV2SpecValidator, validate

from relay.http.connector import (
    DEFINITION_FILE,
    EXAMPLE_HOST,
    ICON_FILE,
    PROPERTIES_FILE,
    README_FILE,
    definition,
    properties,
    write_files,
)
from tests.helpers import nullable_as_draft4

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "connector"
# Microsoft's Power Platform connector schemas, vendored (MIT; see the README beside them).
POWERPLATFORM = ROOT / "tests" / "fixtures" / "powerplatform"
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


def properties_in(
    doc: dict[str, Any], schema: dict[str, Any], where: str, seen: frozenset[str] = frozenset()
) -> Iterator[tuple[str, dict[str, Any]]]:
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
    return POWERPLATFORM


# ---- the committed files ------------------------------------------------------------------------


def test_committed_files_are_what_the_code_generates(tmp_path: Path) -> None:
    """connector/*.json equal, byte for byte, what `python -m relay connector` writes for the same host."""
    written = write_files(EXAMPLE_HOST, tmp_path)
    assert [p.name for p in written] == [DEFINITION_FILE, PROPERTIES_FILE, ICON_FILE, README_FILE]
    for path in written:
        committed = COMMITTED / path.name
        assert committed.exists(), f"{committed} is missing: run python -m relay connector --host {EXAMPLE_HOST}"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} differs from the code: run python -m relay connector --host {EXAMPLE_HOST} --out connector/"
        )
        if path.suffix == ".json":
            text = path.read_text(encoding="utf-8")
            assert text.endswith("}\n") and '\n  "' in text


def test_the_command_line_writes_the_files(tmp_path: Path) -> None:
    """`python -m relay connector --host H --out DIR` writes both files for host H."""
    from relay_dev.cli import main

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
    assert doc["securityDefinitions"] == {
        "api_key": {
            "type": "apiKey",
            "in": "header",
            "name": "x-functions-key",
            "description": doc["securityDefinitions"]["api_key"]["description"],
        }
    }
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
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "data",
    }


def test_the_event_type_is_a_dropdown_and_types_the_data(doc: dict[str, Any]) -> None:
    """The event type is picked from the internal list operation; data's schema comes from the chosen type."""
    ops = {op["operationId"]: (path, method, op) for path, method, op in operations(doc)}
    body = resolve(doc, next(p for p in ops["OnEventPublished"][2]["parameters"] if p["in"] == "body")["schema"])
    dropdown = body["properties"]["eventType"]["x-ms-dynamic-values"]
    assert dropdown == {
        "operationId": "ListEventTypes",
        "value-collection": "value",
        "value-path": "name",
        "value-title": "name",
    }
    assert "eventType" in body["required"]
    lister = ops["ListEventTypes"][2]
    assert lister["x-ms-visibility"] == "internal"
    item = lister["responses"]["200"]["schema"]["properties"]["value"]["items"]
    assert {"name"} <= set(item["properties"]) and ops["ListEventTypes"][:2] == ("/event-types", "get")

    data = doc["paths"]["/subscriptions"]["x-ms-notification-content"]["schema"]["properties"]["data"]
    dynamic = data["x-ms-dynamic-schema"]
    path, method, getter = ops[dynamic["operationId"]]
    assert (path, method) == ("/event-types/{name}/schema", "get") and getter["x-ms-visibility"] == "internal"
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
    for key in (
        ("post", "/events"),
        ("get", "/subscriptions"),
        ("get", "/subscriptions/{id}"),
        ("get", "/subscriptions/{id}/deliveries"),
        ("post", "/subscriptions/{id}/replay"),
    ):
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
    # Served over http by the dev host: the definition says http, so generated clients call what answers.
    assert answer.json() == definition(f"127.0.0.1:{relay.port}", "http")
    assert answer.json()["schemes"] == ["http"]

    # The dev host answers only its own address or localhost (DNS rebinding): the other name is that.
    other = requests.get(f"{relay.base}/openapi.json", headers={"Host": f"localhost:{relay.port}"}, timeout=30)
    assert other.json() == definition(f"localhost:{relay.port}", "http")


# ---- certification hygiene (issue 10 item 5) ------------------------------------------------------

PRODUCT_NAMES = re.compile(
    r"power\s*automate|logic\s*apps?|power\s*apps|power\s*platform|microsoft\s*flow|"
    r"copilot|power\s*virtual\s*agents|dynamics\s*365",
    re.IGNORECASE,
)


def test_no_default_response_carries_a_schema(doc: dict[str, Any]) -> None:
    """Certification: a `default` response has a description and no schema."""
    for path, method, op in operations(doc):
        default = op["responses"].get("default")
        assert default is not None and default["description"] and "schema" not in default, f"{method} {path}"


def test_every_operation_says_its_visibility(doc: dict[str, Any]) -> None:
    """Certification: x-ms-visibility on every operation, one of the values the platform knows."""
    for path, method, op in operations(doc):
        assert op.get("x-ms-visibility") in ("important", "advanced", "internal"), f"{method} {path}"


def test_contact_website_and_privacy_policy(doc: dict[str, Any]) -> None:
    """Certification: info.contact, and x-ms-connector-metadata with a Website and a Privacy policy."""
    contact = doc["info"]["contact"]
    assert contact["name"] and contact["url"].startswith("https://")
    meta = {m["propertyName"]: m["propertyValue"] for m in doc["x-ms-connector-metadata"]}
    assert meta["Website"].startswith("https://") and meta["Privacy policy"].startswith("https://")
    assert meta["Categories"]


def test_the_website_and_contact_are_settable_from_the_command_line(tmp_path: Path) -> None:
    """--website, --privacy-policy, --contact-name and --contact-email land in the definition."""
    from relay_dev.cli import main

    assert (
        main(
            [
                "connector",
                "--host",
                "relay.example.net",
                "--out",
                str(tmp_path),
                "--website",
                "https://contoso.example/relay",
                "--privacy-policy",
                "https://contoso.example/privacy",
                "--contact-name",
                "Contoso",
                "--contact-email",
                "relay@contoso.example",
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / DEFINITION_FILE).read_text())
    meta = {m["propertyName"]: m["propertyValue"] for m in doc["x-ms-connector-metadata"]}
    assert meta["Website"] == "https://contoso.example/relay"
    assert meta["Privacy policy"] == "https://contoso.example/privacy"
    assert doc["info"]["contact"] == {
        "name": "Contoso",
        "url": "https://contoso.example/relay",
        "email": "relay@contoso.example",
    }


def test_the_description_names_no_product(doc: dict[str, Any]) -> None:
    """Certification: the connector's title and description name no product of the platform."""
    for text in (doc["info"]["title"], doc["info"]["description"]):
        assert not PRODUCT_NAMES.search(text), text
    assert 30 <= len(doc["info"]["description"]) <= 500
    assert PRODUCT_NAMES.search("Run flows in Power Automate and Logic Apps")  # the check bites


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB PNG (filter 0 rows, as the generator writes)."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    rows = [raw[i * stride : (i + 1) * stride] for i in range(height)]
    assert all(r[0] == 0 for r in rows)
    return width, height, [r[1:] for r in rows]


def test_the_icon_is_square_on_the_brand_colour() -> None:
    """connector/icon.png: PNG, 1:1, 100 to 230 px, under 1 MB, its edge the apiProperties brand colour, a mark
    on it."""
    data = (COMMITTED / ICON_FILE).read_bytes()
    assert len(data) < 1024 * 1024
    width, height, rows = png_pixels(data)
    assert width == height and 100 <= width <= 230
    brand = bytes.fromhex(properties()["properties"]["iconBrandColor"].lstrip("#"))
    edge = [rows[0], rows[-1]] + [r[:3] for r in rows] + [r[-3:] for r in rows]
    assert all(row == brand * (len(row) // 3) for row in edge)
    colours = {row[i : i + 3] for row in rows for i in range(0, len(row), 3)}
    assert colours == {brand, b"\xff\xff\xff"}


# ---- apiProperties: stackOwner, --host-parameter (items 6 and 7) ------------------------------------


def test_no_stack_owner_unless_certification_asks(tmp_path: Path) -> None:
    """apiProperties.json carries no publisher/stackOwner (paconn update refuses stackOwner), except with
    --certification."""
    from relay_dev.cli import main

    committed = json.loads((COMMITTED / PROPERTIES_FILE).read_text())["properties"]
    assert "stackOwner" not in committed and "publisher" not in committed
    assert (
        main(
            [
                "connector",
                "--host",
                "h.example.net",
                "--out",
                str(tmp_path),
                "--certification",
                "--publisher",
                "Contoso",
                "--website",
                "https://contoso.example/relay",
                "--privacy-policy",
                "https://contoso.example/privacy",
                "--contact-email",
                "relay@contoso.example",
            ]
        )
        == 0
    )
    certified = json.loads((tmp_path / PROPERTIES_FILE).read_text())["properties"]
    assert certified["stackOwner"] == certified["publisher"] == "Contoso"


@pytest.mark.parametrize(
    "kwargs", [{}, {"host_parameter": True}, {"certification": True}, {"host_parameter": True, "certification": True}]
)
def test_every_properties_variant_is_valid(kwargs: dict[str, bool], shared: Path) -> None:
    """Every apiProperties variant the command writes is valid against the Power Platform schema."""
    schema = json.loads((shared / "apiProperties.schema.json").read_text(encoding="utf-8"))
    errors = list(Draft7Validator(schema).iter_errors(properties(**kwargs)))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])


def test_host_parameter_routes_calls_to_the_connection_host(tmp_path: Path) -> None:
    """--host-parameter: a required string connection parameter and a dynamichosturl policy that uses it."""
    from relay_dev.cli import main

    assert main(["connector", "--host", "placeholder.example.net", "--out", str(tmp_path), "--host-parameter"]) == 0
    props = json.loads((tmp_path / PROPERTIES_FILE).read_text())["properties"]
    doc = json.loads((tmp_path / DEFINITION_FILE).read_text())
    (policy,) = [p for p in props["policyTemplateInstances"] if p["templateId"] == "dynamichosturl"]
    template = policy["parameters"]["x-ms-apimTemplateParameter.urlTemplate"]
    (name,) = re.findall(r"@connectionParameters\('([^']+)'\)", template)
    param = props["connectionParameters"][name]
    assert param["type"] == "string" and param["uiDefinition"]["constraints"]["required"] == "true"
    assert template == f"https://@connectionParameters('{name}'){doc['basePath']}"
    assert "api_key" in props["connectionParameters"]
    assert "dynamichosturl" not in json.dumps(properties())


# ---- definition details (item 20) ------------------------------------------------------------------


def test_errors_are_declared_as_problem_json(doc: dict[str, Any]) -> None:
    """`produces` names application/problem+json, the media type of every error."""
    assert doc["produces"] == ["application/json", "application/problem+json"]


def test_name_rules_are_declared_and_agree_with_the_relay(doc: dict[str, Any]) -> None:
    """Event type and id rules are pattern/maxLength in the definition, and the pattern decides as the relay does."""
    from relay.core.matching import is_name, is_pattern

    ops = {op["operationId"]: op for _, _, op in operations(doc)}
    body = next(p for p in ops["PublishEvent"]["parameters"] if p["in"] == "body")["schema"]["properties"]
    for name in ("type", "id"):
        assert body[name]["maxLength"] == 128 and body[name]["pattern"]
    sub = next(p for p in ops["OnEventPublished"]["parameters"] if p["in"] == "body")["schema"]["properties"]
    samples = ["order.created", "a", "x" * 128, "x" * 129, "a b", "ä", "*", "order.*", "order.*.*", "", "a:b-c_d"]
    for sample in samples:
        assert bool(re.search(body["type"]["pattern"], sample)) == is_name(sample), sample
        assert bool(re.search(sub["eventType"]["pattern"], sample)) == is_pattern(sample), sample
    getter = ops["GetEventType"]["parameters"][0]
    assert getter["pattern"] == body["type"]["pattern"] and getter["maxLength"] == 128


def test_batch_publish_is_its_own_operation(doc: dict[str, Any]) -> None:
    """The array form of publishing is described by PublishEvents: an array of 1 to 100 events."""
    ops = {op["operationId"]: (path, method, op) for path, method, op in operations(doc)}
    path, method, op = ops["PublishEvents"]
    (body,) = op["parameters"]
    assert body["in"] == "body" and body["schema"]["type"] == "array"
    assert (body["schema"]["minItems"], body["schema"]["maxItems"]) == (1, 100)
    assert set(body["schema"]["items"]["required"]) == {"type", "data"}
    assert "value" in op["responses"]["202"]["schema"]["properties"]


def test_rotate_secret_is_an_advanced_action(doc: dict[str, Any]) -> None:
    """POST /subscriptions/{id}/secret is the RotateSubscriptionSecret action, answering 200 {secret}."""
    op = doc["paths"]["/subscriptions/{id}/secret"]["post"]
    assert op["operationId"] == "RotateSubscriptionSecret" and op["x-ms-visibility"] == "advanced"
    assert op["responses"]["200"]["schema"]["required"] == ["secret"]


def test_rotate_secret_takes_an_optional_grace(doc: dict[str, Any]) -> None:
    """The rotate action's optional body: graceSeconds, 0 to 604800, a day by default (issue 23);
    the answer and the subscription say when the grace ends."""
    op = doc["paths"]["/subscriptions/{id}/secret"]["post"]
    body = next(p for p in op["parameters"] if p["in"] == "body")
    assert body["required"] is False
    grace = body["schema"]["properties"]["graceSeconds"]
    assert (grace["type"], grace["minimum"], grace["maximum"], grace["default"]) == ("integer", 0, 604_800, 86_400)
    assert grace["x-ms-summary"] and grace["description"]
    assert op["responses"]["200"]["schema"]["properties"]["previousSecretExpiresAt"]["format"] == "date-time"
    read = doc["paths"]["/subscriptions/{id}"]["get"]["responses"]["200"]["schema"]["properties"]
    assert read["previousSecretExpiresAt"]["format"] == "date-time"


# ---- data is any JSON (item 2) ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [{"n": 1}, [1, 2], "text", 42, 1.5, True, None, {}])
def test_the_notification_content_accepts_any_data(doc: dict[str, Any], data: Any) -> None:
    """x-ms-notification-content accepts a CloudEvent whose data is any JSON value."""
    content = doc["paths"]["/subscriptions"]["x-ms-notification-content"]["schema"]
    event = {
        "specversion": "1.0",
        "id": "e1",
        "source": "https://relay.example.net/api/events",
        "type": "order.created",
        "time": "2026-01-31T12:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
    }
    assert not list(Draft4Validator(content, format_checker=Draft4Validator.FORMAT_CHECKER).iter_errors(event))
    publish = next(p for p in doc["paths"]["/events"]["post"]["parameters"] if p["in"] == "body")["schema"]
    assert not list(Draft4Validator(publish).iter_errors({"type": "order.created", "data": data}))


def test_the_publish_action_types_data_from_the_chosen_type(doc: dict[str, Any]) -> None:
    """The publish action's data input takes its schema from the type chosen in body/type."""
    data = next(p for p in doc["paths"]["/events"]["post"]["parameters"] if p["in"] == "body")["schema"]["properties"][
        "data"
    ]
    assert "type" not in data
    assert data["x-ms-dynamic-schema"]["parameters"] == {"name": {"parameter": "type"}}
    assert data["x-ms-dynamic-properties"]["parameters"] == {"name": {"parameterReference": "body/type"}}


# ---- the dynamic-schema source (item 1) -------------------------------------------------------------

REGISTERED = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {
        "money": {
            "type": "object",
            "properties": {"amount": {"type": "number", "exclusiveMinimum": 0}, "currency": {"const": "EUR"}},
            "required": ["amount"],
        }
    },
    "type": "object",
    "properties": {
        "orderId": {"type": "string", "maxLength": 20, "title": "Order"},
        "total": {"$ref": "#/$defs/money"},
        "note": {"type": ["string", "null"]},
        "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
        "kind": {"anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "null"}]},
        "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "never": False,
        "tree": {"$ref": "#"},
    },
    "required": ["orderId", "total"],
}
VALID = [
    {"orderId": "o1", "total": {"amount": 5, "currency": "EUR"}},
    {
        "orderId": "o2",
        "total": {"amount": 0.5},
        "note": None,
        "pair": ["x", 1],
        "kind": None,
        "either": 3,
        "tree": {"orderId": "o3", "total": {"amount": 1}, "tree": {"orderId": "o4", "total": {"amount": 2}}},
    },
    {"orderId": "o5", "total": {"amount": 1}, "note": "n", "kind": "a", "either": "s"},
]


def test_the_conversion_says_only_what_swagger_2_knows_and_accepts_all_valid_data(shared: Path) -> None:
    """A 2020-12 schema comes out as the Swagger 2.0 subset (valid against the Power Platform schema object,
    no $defs/const/prefixItems/type arrays), and every document the original accepts matches the result."""
    from jsonschema import Draft202012Validator

    from relay.http.swaggerschema import to_swagger

    converted = to_swagger(REGISTERED)
    text = json.dumps(converted)
    for keyword in ("$defs", "$ref", "const", "prefixItems", "anyOf", "oneOf", "$schema", '"null"'):
        assert keyword not in text, keyword
    assert converted["properties"]["note"] == {"type": "string", "x-nullable": True}
    assert converted["properties"]["total"]["properties"]["currency"] == {"enum": ["EUR"]}
    assert converted["properties"]["total"]["properties"]["amount"]["exclusiveMinimum"] is True
    assert converted["properties"]["pair"] == {"type": "array", "items": {}}
    assert converted["properties"]["orderId"]["x-ms-summary"] == "Order"
    assert "never" not in converted["properties"]
    pp = json.loads((shared / "apiDefinition.swagger.schema.json").read_text(encoding="utf-8"))
    errors = list(Draft4Validator({**pp, "$ref": "#/definitions/schema"}).iter_errors(converted))
    assert not errors, [e.message[:200] for e in errors[:5]]
    original, loose = Draft202012Validator(REGISTERED), Draft4Validator(nullable_as_draft4(converted))
    for instance in VALID:
        assert not list(original.iter_errors(instance))
        assert not list(loose.iter_errors(instance)), [e.message for e in loose.iter_errors(instance)]


def test_the_conversion_is_bounded() -> None:
    """A schema whose references fan out converts to a bounded result, quickly."""
    import time

    from relay.http.swaggerschema import MAX_NODES, to_swagger

    bomb: dict[str, Any] = {"$defs": {"d0": {"type": "string"}}}
    for i in range(1, 30):
        bomb["$defs"][f"d{i}"] = {
            "type": "object",
            "properties": {k: {"$ref": f"#/$defs/d{i - 1}"} for k in "abcdefgh"},
        }
    bomb["$ref"] = "#/$defs/d29"
    started = time.monotonic()
    converted = to_swagger(bomb)
    assert time.monotonic() - started < 2
    assert json.dumps(converted).count("properties") <= MAX_NODES


def test_the_dynamic_schema_source_answers_200_for_every_designer_value(relay) -> None:
    """`*`, a prefix pattern, an unregistered type, a schema-less type (null schema) and a registered one
    (converted)."""
    doc = requests.get(f"{relay.base}/openapi.json", timeout=30).json()
    dynamic = doc["paths"]["/subscriptions"]["x-ms-notification-content"]["schema"]["properties"]["data"][
        "x-ms-dynamic-schema"
    ]
    path, method = next((p, m) for p, m, op in operations(doc) if op["operationId"] == dynamic["operationId"])
    assert method == "get"
    suffix = re.sub(r"[^a-z0-9]", "", relay.base)[-12:]
    bare, typed = f"bare.{suffix}", f"typed.{suffix}"
    assert relay.session.put(
        f"{relay.base}/event-types/{bare}", json={"description": "no schema"}, timeout=30
    ).status_code in (200, 201)
    assert relay.session.put(
        f"{relay.base}/event-types/{typed}", json={"schema": REGISTERED}, timeout=30
    ).status_code in (200, 201)

    def ask(value: str) -> Any:
        answer = relay.get(path.lstrip("/").replace("{name}", requests.utils.quote(value, safe="")))
        assert answer.status_code == 200, (value, answer.status_code, answer.text)
        body = answer.json()
        assert dynamic["value-path"] in body, body  # present, null or not
        return body[dynamic["value-path"]]

    for value in ("*", "order.*", f"nobody.registered.{suffix}", bare, "not a name", "%2A"):
        assert ask(value) is None, value
    converted = ask(typed)
    assert converted["type"] == "object" and "$defs" not in json.dumps(converted)
    assert converted["properties"]["note"] == {"type": "string", "x-nullable": True}


def test_an_error_is_the_problem_the_code_describes(relay, doc: dict[str, Any]) -> None:
    """A real error answer has a media type `produces` names and the shape of relay.http.connector.PROBLEM."""
    from relay.http.connector import PROBLEM

    answer = relay.post("events", {"type": "bad type", "data": 1})
    assert answer.status_code == 400
    assert answer.headers["content-type"].split(";")[0] in doc["produces"]
    assert not list(Draft4Validator(PROBLEM).iter_errors(answer.json()))
    assert {e["field"] for e in answer.json()["errors"]} == {"type"}


# ---- issue 19: certification, the designer and the validator rules -------------------------------


def strings_in(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string of a document, keys' values and list items alike, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings_in(value, f"{where}[{index}]")
    elif isinstance(node, str):
        yield where, node


def variants() -> Iterator[tuple[str, dict[str, Any]]]:
    """The definitions and properties the command can write: keys and Entra ID, every option."""
    from relay.http.connector import EntraSignIn

    entra = EntraSignIn(resource="api://relay", tenant="contoso.onmicrosoft.com", client_id="c")
    for name, sign_in in (("keys", None), ("entra", entra)):
        yield f"{name} definition", definition(EXAMPLE_HOST, entra=sign_in)
        yield f"{name} properties", properties(host_parameter=True, certification=True, entra=sign_in)


def test_no_string_of_the_definition_names_a_product() -> None:
    """Certification (item 7): no product of the platform in any string of the definition or the
    properties (descriptions, summaries, hints, display names), not only info.description."""
    found = [
        (name, where, text)
        for name, document in variants()
        for where, text in strings_in(document)
        if PRODUCT_NAMES.search(text)
    ]
    assert not found, found


def test_no_markdown_in_any_string() -> None:
    """The designer shows descriptions as they are: no Markdown backticks anywhere (item 9)."""
    found = [
        (name, where, text) for name, document in variants() for where, text in strings_in(document) if "`" in text
    ]
    assert not found, found


def test_the_placeholder_host_is_a_reserved_name() -> None:
    """The committed files' host is under a name RFC 2606/6761 reserve, so a connector imported
    unchanged sends its key to no one (item 9)."""
    assert re.fullmatch(r"[a-z0-9-]+\.example", EXAMPLE_HOST), EXAMPLE_HOST
    committed = json.loads((COMMITTED / DEFINITION_FILE).read_text())
    assert committed["host"] == EXAMPLE_HOST
    assert "azurewebsites.net" not in (COMMITTED / DEFINITION_FILE).read_text()


def test_a_readme_lies_beside_the_connector_files(doc: dict[str, Any]) -> None:
    """connector/readme.md, as certified connectors carry: every trigger and action by its summary,
    the prerequisites (a Premium licence, data loss prevention) and how to get the credential."""
    text = (COMMITTED / README_FILE).read_text(encoding="utf-8")
    assert text.startswith(f"# {doc['info']['title']}\n")
    for _, _, op in operations(doc):
        if op["x-ms-visibility"] != "internal":
            assert f"**{op['summary']}**" in text, op["operationId"]
    for section in ("## Publisher", "## Prerequisites", "## Obtaining credentials", "## Supported operations"):
        assert section in text
    assert "Premium" in text and "data loss prevention" in text and "Secure outputs" in text


def test_certification_needs_the_publishers_pages_and_contact(tmp_path: Path, capsys: Any) -> None:
    """--certification without --website, --privacy-policy and --contact-email is refused with a message
    naming them (the console is no privacy policy), never written with defaults (item 9)."""
    from relay_dev.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["connector", "--host", "h.example", "--out", str(tmp_path), "--certification"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--website" in err and "--privacy-policy" in err and "--contact-email" in err
    assert not (tmp_path / DEFINITION_FILE).exists()
    # Without --certification (one organisation's connector) the defaults stand: the relay's console.
    contact = definition(EXAMPLE_HOST)["info"]["contact"]
    assert "email" not in contact and contact["url"] == f"https://{EXAMPLE_HOST}/api/console"


def test_one_response_with_a_schema_per_operation(doc: dict[str, Any]) -> None:
    """Validator rule OperationHasManyResponsesWithSchema: at most one response (default aside) carries
    a schema; the replay's 202 only says where to poll (item 8)."""
    for path, method, op in operations(doc):
        with_schema = [status for status, answer in op["responses"].items() if "schema" in answer]
        assert len(with_schema) <= 1, (method, path, with_schema)
    replay = doc["paths"]["/subscriptions/{id}/replay"]["post"]["responses"]
    assert "schema" in replay["200"] and "schema" not in replay["202"] and "Location" in replay["202"]["headers"]


def test_a_required_dynamic_input_is_fed_by_a_required_parameter(doc: dict[str, Any]) -> None:
    """Validator rule OperationParameterRequiredMismatch: a parameter that feeds a required parameter of
    a dynamic call is itself required (the polling trigger's eventType, with its default *) (item 8)."""
    ops = {op["operationId"]: (path, method, op) for path, method, op in operations(doc)}
    checked = 0
    for path, method, op in operations(doc):
        params = {p["name"]: p for p in op.get("parameters", [])}
        body = next((p for p in op.get("parameters", []) if p["in"] == "body"), None)
        body_props = resolve(doc, body["schema"]) if body else {}
        nodes = [json.dumps(op)]
        if method == "post" and "x-ms-notification-content" in doc["paths"][path]:
            nodes.append(json.dumps(doc["paths"][path]["x-ms-notification-content"]))
        for text in nodes:
            for call in re.findall(r'"x-ms-dynamic-(?:schema|values)": (\{.*?"operationId": "(\w+)".*?\})', text):
                target = ops[call[1]][2]
                required = {p["name"] for p in target.get("parameters", []) if p.get("required")}
                fed = re.findall(r'"(\w+)": \{"parameter": "(\w+)"\}', call[0])
                for target_name, source in fed:
                    if target_name not in required:
                        continue
                    checked += 1
                    if source in params:
                        assert params[source]["required"] is True, (op["operationId"], source)
                    else:
                        assert source in body_props.get("required", []), (op["operationId"], source)
    assert checked >= 3
    poll = next(p for p in doc["paths"]["/events/poll"]["get"]["parameters"] if p["name"] == "eventType")
    assert poll["required"] is True and poll["default"] == "*"


def test_connection_test_and_paging(doc: dict[str, Any]) -> None:
    """x-ms-capabilities.testConnection names an operation without inputs; every operation that answers
    nextLink is x-ms-pageable, and apiProperties routes the link through the connector (item 10)."""
    ops = {op["operationId"]: op for _, _, op in operations(doc)}
    test = doc["x-ms-capabilities"]["testConnection"]
    assert test["parameters"] == {} and not [p for p in ops[test["operationId"]]["parameters"] if p.get("required")]
    pageable = []
    for _, _, op in operations(doc):
        answer = op["responses"].get("200", {}).get("schema", {})
        if "nextLink" in answer.get("properties", {}):
            assert op.get("x-ms-pageable") == {"nextLinkName": "nextLink"}, op["operationId"]
            pageable.append(op["operationId"])
    assert sorted(pageable) == ["ListDeliveries", "ListSubscriptions"]
    policies = {p["templateId"]: p for p in properties()["properties"]["policyTemplateInstances"]}
    link = policies["updatenextlink"]["parameters"]
    assert sorted(link["x-ms-apimTemplate-operationName"]) == sorted(pageable)
    assert link["x-ms-apimTemplateParameter.nextLinkPropertyName"] == "nextLink"


def test_a_wrong_key_fails_the_connection_test(relay) -> None:
    """The operation testConnection names answers 401 to a wrong key and 200 to the right one, so a
    connection made with a wrong key fails when it is made (item 10)."""
    doc = requests.get(f"{relay.base}/openapi.json", timeout=30).json()
    name = doc["x-ms-capabilities"]["testConnection"]["operationId"]
    path, method = next((p, m) for p, m, op in operations(doc) if op["operationId"] == name)
    url = f"{relay.base}{path}"
    assert requests.request(method, url, headers={"x-functions-key": "wrong"}, timeout=30).status_code == 401
    assert relay.session.request(method, url, timeout=30).status_code == 200


@pytest.mark.parametrize("source", ["/erp/orders", "urn:shop:orders", "https://erp.example/orders"])
def test_source_is_a_uri_reference(doc: dict[str, Any], source: str) -> None:
    """source is a URI-reference, as the relay accepts and delivers it: not format uri, so a
    notification or poll with /erp/orders matches its own schema (item 10)."""
    content = doc["paths"]["/subscriptions"]["x-ms-notification-content"]["schema"]
    polled = doc["paths"]["/events/poll"]["get"]["responses"]["200"]["schema"]["properties"]["value"]["items"]
    for schema in (content, polled):
        assert "format" not in schema["properties"]["source"]
        event = {
            "specversion": "1.0",
            "id": "e1",
            "source": source,
            "type": "t",
            "time": "2026-01-31T12:00:00Z",
            "datacontenttype": "application/json",
            "data": {},
        }
        assert not list(Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER).iter_errors(event))


def test_data_stays_untyped_and_the_docs_say_how_to_publish_an_object(doc: dict[str, Any]) -> None:
    """The decision on data (item 10): any JSON is delivered, so data has no type (a certified node's
    type: object would make an array or a string violate the notification's own schema); the docs
    say to write json('...') where the designer shows data as text."""
    content = doc["paths"]["/subscriptions"]["x-ms-notification-content"]["schema"]["properties"]["data"]
    publish = next(p for p in doc["paths"]["/events"]["post"]["parameters"] if p["in"] == "body")["schema"]
    assert "type" not in content and "type" not in publish["properties"]["data"]
    docs = (ROOT / "docs" / "power-platform.md").read_text(encoding="utf-8")
    assert "json('" in docs and "type: object" in docs


def test_the_source_rule_is_declared_and_agrees_with_the_relay(doc: dict[str, Any]) -> None:
    """The publish action says what the relay refuses in source (item 15): its pattern decides as
    relay.core.models.is_uri_reference does."""
    from relay.core.models import is_uri_reference

    body = next(p for p in doc["paths"]["/events"]["post"]["parameters"] if p["in"] == "body")["schema"]
    source = body["properties"]["source"]
    assert source["maxLength"] == 1024 and source["minLength"] == 1
    samples = ["/erp/orders", "urn:shop:1", "https://a.example/x?y=1#z", "a b", "50%", "%41", "ä", "x\n", "{}"]
    for sample in samples:
        # As ECMAScript reads it: `$` is the end of the text (Python's also matches before a final newline).
        ecma = source["pattern"].removesuffix("$") + r"\Z"
        assert bool(re.search(ecma, sample)) == is_uri_reference(sample), sample


def test_the_docs_say_what_a_maker_meets() -> None:
    """Item 11: the README says custom connectors need Premium and fall under DLP policies; the Logic
    Apps snippet (docs/power-platform.md) gives relayKey a value; the docs name LogicAppsUX#3732 and
    Secure outputs for the rotated secret."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Power Platform") :]
    assert "Premium" in section[:1500] and "data loss prevention" in section[:1500]
    assert "docs/power-platform.md" in section[:1500]
    docs = (ROOT / "docs" / "power-platform.md").read_text(encoding="utf-8")
    logic_apps = docs[docs.index("## Logic Apps without the connector") :]
    trigger = json.loads(re.findall(r"```json\n(.*?)```", logic_apps, re.DOTALL)[0])
    assert trigger["definition"]["parameters"]["relayKey"]["type"] == "securestring"
    assert trigger["parameters"]["relayKey"]["value"]
    assert "LogicAppsUX#3732" in logic_apps
    for needle in ("Premium", "data loss prevention", "LogicAppsUX#3732", "Secure outputs", "relayKey"):
        assert needle in docs, needle
