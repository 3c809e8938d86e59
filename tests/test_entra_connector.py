"""The connector that signs in with Microsoft Entra ID (`python -m relay connector --auth entra`):
valid Swagger 2.0, valid against the Power Platform schemas, OAuth 2.0 with the `aad` provider as
certified connectors in front of App Service APIs have it; keys mode stays the default."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator, Draft7Validator
from openapi_spec_validator import OpenAPIV2SpecValidator, validate

from relay.__main__ import main
from relay.connector import DEFINITION_FILE, PROPERTIES_FILE, definition, properties

SHARED = Path(__file__).resolve().parents[2] / "shared" / "powerplatform"
CLIENT_ID = "0b6a3c4e-8f1d-4b2a-9c3e-5d7f8a9b0c1d"
RESOURCE = "api://3f2e1d0c-9b8a-4765-8432-10fedcba9876"
TENANT = "72f988bf-0000-4000-8000-2d7cd011db47"
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    out = tmp_path_factory.mktemp("entra-connector")
    assert (
        main(
            [
                "connector",
                "--host",
                "relay.example.net",
                "--out",
                str(out),
                "--auth",
                "entra",
                "--client-id",
                CLIENT_ID,
                "--resource",
                RESOURCE,
                "--tenant",
                TENANT,
            ]
        )
        == 0
    )
    return (
        json.loads((out / DEFINITION_FILE).read_text(encoding="utf-8")),
        json.loads((out / PROPERTIES_FILE).read_text(encoding="utf-8")),
    )


def _schema(name: str) -> dict[str, Any]:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the Power Platform schemas are not available here")
    return json.loads((SHARED / name).read_text(encoding="utf-8"))


def test_definition_signs_in_with_oauth2_and_keeps_every_operation(written: Any) -> None:
    doc, _ = written
    validate(doc, cls=OpenAPIV2SpecValidator)
    [(name, scheme)] = doc["securityDefinitions"].items()
    assert scheme["type"] == "oauth2" and scheme["flow"] == "accessCode"
    assert scheme["authorizationUrl"] == "https://login.microsoftonline.com/common/oauth2/authorize"
    assert scheme["tokenUrl"].startswith("https://login.microsoftonline.com/")
    assert list(scheme["scopes"]) == [f"{RESOURCE}/user_impersonation"]
    assert doc["security"] == [{name: []}]
    # Every operation, the webhook subscribe and its DELETE included, runs as the signed-in maker:
    # none overrides the document's security.
    keys_doc = definition("relay.example.net")
    assert doc["paths"] == keys_doc["paths"]
    assert not [m for item in doc["paths"].values() for m in METHODS if "security" in item.get(m, {})]
    assert "x-functions-key" not in json.dumps(doc)


def test_definition_is_valid_against_the_power_platform_schema(written: Any) -> None:
    doc, _ = written
    errors = list(Draft4Validator(_schema("apiDefinition.swagger.schema.json")).iter_errors(doc))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])


def test_properties_use_the_aad_identity_provider(written: Any) -> None:
    _, props = written
    params = props["properties"]["connectionParameters"]
    assert list(params) == ["token"]
    token = params["token"]
    assert token["type"] == "oauthSetting"
    settings = token["oAuthSettings"]
    assert settings["identityProvider"] == "aad"
    assert settings["clientId"] == CLIENT_ID
    assert settings["scopes"] == [f"{RESOURCE}/user_impersonation"]
    assert settings["redirectMode"] == "GlobalPerConnector"
    assert settings["customParameters"] == {
        "resourceUri": {"value": RESOURCE},
        "loginUri": {"value": "https://login.microsoftonline.com"},
        "tenantId": {"value": TENANT},
    }
    assert "clientSecret" not in settings  # the maker enters it when creating the connector, never committed
    assert token["uiDefinition"]["displayName"] and token["uiDefinition"]["constraints"]["required"] == "true"


def test_properties_are_valid_against_the_power_platform_schema(written: Any) -> None:
    """Valid against the published apiProperties schema, with one widening: that copy predates
    per-connector redirect URIs and lists only `Global` and `Direct`, while the platform now writes
    (and requires for new OAuth connectors) `GlobalPerConnector`. Nothing else is relaxed."""
    _, props = written
    schema = _schema("apiProperties.schema.json")
    strict = [e for e in Draft7Validator(schema).iter_errors(props)]
    widened = copy.deepcopy(schema)
    widened["definitions"]["oAuthSettings"]["properties"]["redirectMode"]["enum"].append("GlobalPerConnector")
    errors = list(Draft7Validator(widened).iter_errors(props))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])
    # Strictly, the one complaint is the connection parameter that carries the new value.
    assert [list(e.absolute_path) for e in strict] == [["properties", "connectionParameters", "token"]]
    # The widened schema still refuses what it should: an aad provider without its resource.
    bad = copy.deepcopy(props)
    del bad["properties"]["connectionParameters"]["token"]["oAuthSettings"]["customParameters"]["resourceUri"]
    assert list(Draft7Validator(widened).iter_errors(bad))


def test_keys_mode_is_the_default_and_entra_needs_its_ids(tmp_path: Path, capsys: Any) -> None:
    assert main(["connector", "--host", "relay.example.net", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / PROPERTIES_FILE).read_text()) == properties()
    with pytest.raises(SystemExit) as exit_:
        main(["connector", "--host", "h", "--out", str(tmp_path), "--auth", "entra", "--client-id", CLIENT_ID])
    assert exit_.value.code == 2
    assert "--resource" in capsys.readouterr().err
