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

from relay.http.connector import (
    DEFINITION_FILE,
    ICON_FILE,
    PROPERTIES_FILE,
    README_FILE,
    EntraSignIn,
    definition,
    properties,
)
from relay_dev.cli import main
from tests.helpers import InProcessApp, problem_of

# Microsoft's Power Platform connector schemas, vendored (MIT; see the README beside them).
POWERPLATFORM = Path(__file__).resolve().parent / "fixtures" / "powerplatform"
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
    return json.loads((POWERPLATFORM / name).read_text(encoding="utf-8"))


def test_definition_signs_in_with_oauth2_and_keeps_every_operation(written: Any) -> None:
    doc, _ = written
    validate(doc, cls=OpenAPIV2SpecValidator)
    [(name, scheme)] = doc["securityDefinitions"].items()
    assert scheme["type"] == "oauth2" and scheme["flow"] == "accessCode"
    # The relay's own tenant, never common: its app is single-tenant (AADSTS50194 otherwise).
    assert scheme["authorizationUrl"] == f"https://login.microsoftonline.com/{TENANT}/oauth2/authorize"
    assert scheme["tokenUrl"] == f"https://login.microsoftonline.com/{TENANT}/oauth2/token"
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
    assert list(params) == ["token", "token:TenantId"]
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
    # What every certified aad connector carries: the resource also as AzureActiveDirectoryResourceId,
    # and the hidden token:TenantId the platform fills with the signed-in account's tenant.
    assert settings["properties"] == {"IsFirstParty": "False", "AzureActiveDirectoryResourceId": RESOURCE}
    tenant = params["token:TenantId"]
    assert tenant["type"] == "string" and tenant["metadata"] == {"sourceType": "AzureActiveDirectoryTenant"}
    assert tenant["uiDefinition"]["constraints"] == {"required": "false", "hidden": "true"}
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


# ---- issue 19 items 4 to 6 ------------------------------------------------------------------------


def entra_args(out: Path, *more: str) -> list[str]:
    return [
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
        *more,
    ]


@pytest.mark.parametrize("tenant", [None, "common", "organizations", "consumers"])
def test_the_tenant_is_required_and_never_common(tmp_path: Path, capsys: Any, tenant: str | None) -> None:
    """Without --tenant (or with common) the files would sign in through the common endpoint, which a
    single-tenant app refuses (AADSTS50194): a usage error naming --tenant, nothing written (item 4)."""
    args = entra_args(tmp_path) + ([] if tenant is None else ["--tenant", tenant])
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--tenant" in err and (tenant is None or "AADSTS50194" in err)
    assert not (tmp_path / DEFINITION_FILE).exists()


def test_every_option_applies_to_the_entra_variant(tmp_path: Path) -> None:
    """--host-parameter, --certification, --publisher, --website, --privacy-policy and --contact-* land in
    the Entra ID files as in the keys ones, and icon.png and readme.md are written too (item 5)."""
    assert (
        main(
            entra_args(
                tmp_path,
                "--tenant",
                TENANT,
                "--host-parameter",
                "--certification",
                "--publisher",
                "Contoso",
                "--website",
                "https://contoso.example/relay",
                "--privacy-policy",
                "https://contoso.example/privacy",
                "--contact-name",
                "Contoso Relay",
                "--contact-email",
                "relay@contoso.example",
            )
        )
        == 0
    )
    doc = json.loads((tmp_path / DEFINITION_FILE).read_text())
    props = json.loads((tmp_path / PROPERTIES_FILE).read_text())["properties"]
    meta = {m["propertyName"]: m["propertyValue"] for m in doc["x-ms-connector-metadata"]}
    assert meta["Website"] == "https://contoso.example/relay"
    assert meta["Privacy policy"] == "https://contoso.example/privacy"
    assert doc["info"]["contact"] == {
        "name": "Contoso Relay",
        "url": "https://contoso.example/relay",
        "email": "relay@contoso.example",
    }
    assert props["publisher"] == props["stackOwner"] == "Contoso"
    assert list(props["connectionParameters"]) == ["hostName", "token", "token:TenantId"]
    assert "dynamichosturl" in {p["templateId"] for p in props["policyTemplateInstances"]}
    assert (tmp_path / ICON_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = (tmp_path / README_FILE).read_text(encoding="utf-8")
    assert "Microsoft Entra ID" in readme and "Contoso" in readme
    widened = _schema("apiProperties.schema.json")
    widened["definitions"]["oAuthSettings"]["properties"]["redirectMode"]["enum"].append("GlobalPerConnector")
    errors = list(Draft7Validator(widened).iter_errors({"properties": props}))
    assert not errors, [e.message[:200] for e in errors]


def test_openapi_json_serves_the_definition_of_the_running_auth_mode(
    app_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under RELAY_AUTH=entra, GET /api/openapi.json is the OAuth 2.0 definition, as --auth entra writes
    it, for the tenant and Application ID URI of the settings (item 6)."""
    from relay.core import settings

    monkeypatch.setenv("RELAY_AUTH", "entra")
    monkeypatch.setenv("RELAY_ENTRA_TENANT", TENANT)
    monkeypatch.setenv("RELAY_ENTRA_RESOURCE", RESOURCE)
    settings.reset_settings()
    app = InProcessApp()
    served = app.get("openapi.json")
    assert served.status_code == 200, served.text
    assert served.json() == definition("localhost", "http", entra=EntraSignIn(resource=RESOURCE, tenant=TENANT))
    assert "x-functions-key" not in served.text

    # Unset, they are read from the issuer and audience Easy Auth's stand-in is given.
    monkeypatch.delenv("RELAY_ENTRA_TENANT")
    monkeypatch.delenv("RELAY_ENTRA_RESOURCE")
    monkeypatch.setenv("RELAY_ENTRA_ISSUER", f"https://login.microsoftonline.com/{TENANT}/v2.0")
    monkeypatch.setenv("RELAY_ENTRA_AUDIENCE", f"{CLIENT_ID},{RESOURCE}")
    settings.reset_settings()
    derived = app.get("openapi.json").json()["securityDefinitions"]["oauth2-auth"]
    assert derived["tokenUrl"] == f"https://login.microsoftonline.com/{TENANT}/oauth2/token"
    assert list(derived["scopes"]) == [f"{RESOURCE}/user_impersonation"]

    # Neither: a 503 naming the settings, not a definition that would sign in through common.
    monkeypatch.delenv("RELAY_ENTRA_ISSUER")
    settings.reset_settings()
    problem = problem_of(app.get("openapi.json"), 503)
    assert "RELAY_ENTRA_TENANT" in problem["detail"]

    # Keys mode: the function key, as before.
    monkeypatch.setenv("RELAY_AUTH", "keys")
    settings.reset_settings()
    assert app.get("openapi.json").json() == definition("localhost", "http")
