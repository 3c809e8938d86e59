"""Offline checks of the Entra ID pieces of infra/: Easy Auth (modules/easyauth.bicep), the switch in
main.bicep, and the app registration manifests under infra/entra/. Parsed like tests/test_infra.py
(pycep-parser; tree-sitter syntax is checked there for every .bicep file)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from relay.http import access
from tests.test_infra import INFRA, MAIN, parsed, resources  # helpers only, no tests

EASYAUTH = INFRA / "modules" / "easyauth.bicep"
ENTRA = INFRA / "entra"


def _easyauth_call() -> dict[str, Any]:
    calls = [
        m for m in parsed(MAIN)["modules"].values() if (INFRA / m["detail"]["path"]).resolve() == EASYAUTH.resolve()
    ]
    assert len(calls) == 1, "main.bicep deploys modules/easyauth.bicep once"
    return calls[0]["config"]


def test_easy_auth_is_deployed_only_in_entra_mode() -> None:
    """main.bicep: `authMode` keys|entra (default keys) sets RELAY_AUTH and gates the Easy Auth module."""
    params = parsed(MAIN)["parameters"]
    mode = params["authMode"]
    assert mode["default"] == "keys"
    assert {d["type"]: d.get("argument") for d in mode["decorators"]}["allowed"] == ["keys", "entra"]
    assert parsed(MAIN)["variables"]["relayAppSettings"]["value"]["RELAY_AUTH"] == "authMode"
    call = _easyauth_call()
    assert call["condition"] == {
        "operator": {"type": "equals", "operands": {"operand_1": "authMode", "operand_2": "entra"}}
    }
    passed = call["config"]["params"]
    assert passed["clientId"] == "entraClientId" and passed["audience"] == "entraAudience"
    assert passed["tenantId"] == "entraTenantId"
    for name in ("entraClientId", "entraAudience", "entraTenantId"):
        assert name in params, name


def test_easy_auth_returns_401_and_excludes_exactly_the_anonymous_paths() -> None:
    """authsettingsV2 as a top-level child (`parent:`) of the app: Entra provider on, 401 for
    unauthenticated calls, the relay's anonymous paths excluded, the app's audiences allowed."""
    [config] = resources(EASYAUTH, "Microsoft.Web/sites/config").values()
    body = config["config"]
    assert body["name"] == "authsettingsV2"
    assert body["parent"] in resources(EASYAUTH, "Microsoft.Web/sites", existing=True)
    props = body["properties"]
    assert props["platform"]["enabled"] is True
    validation = props["globalValidation"]
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "Return401"
    excluded = parsed(EASYAUTH)["parameters"][validation["excludedPaths"]]["default"]
    for path in access.ANONYMOUS_PATHS:
        assert easy_auth_excludes(excluded, path), path
    aad = props["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"] is True
    assert aad["registration"]["clientId"] == "clientId"
    assert aad["registration"]["openIdIssuer"].endswith("${tenantId}/v2.0")
    audiences = aad["validation"]["allowedAudiences"]["function"]
    assert audiences["type"] == "union"
    assert sorted(a for arg in audiences["parameters"].values() for a in arg) == ["audience", "clientId"]
    assert props["login"]["tokenStore"]["enabled"] is False  # no tokens kept on the platform


def easy_auth_excludes(excluded: list[str], path: str) -> bool:
    """Whether App Service Authentication lets `path` through without a token, as its
    globalValidation.excludedPaths are documented (Learn, "File-based configuration in Azure App
    Service authentication", https://learn.microsoft.com/azure/app-service/configure-authentication-file-based):
    an entry names a path exactly (case-insensitive) or, ending in `/*`, every path below it. Taken
    conservatively: `*` matches at least one character, so `/api/console/` needs its own entry."""
    lowered = path.lower()
    for entry in (e.lower() for e in excluded):
        if entry.endswith("/*"):
            if lowered.startswith(entry[:-1]) and len(lowered) > len(entry) - 1:
                return True
        elif lowered == entry:
            return True
    return False


CONSOLE = INFRA.parent / "relay" / "http" / "console"


def test_easy_auth_lets_the_whole_console_through_in_the_documented_form() -> None:
    """The console's page (with and without a trailing slash), every file it serves today and any
    it adds later pass without a token through one `/api/console/*` entry rather than a file list;
    the API routes, and paths that only start like the console, still need one."""
    excluded = parsed(EASYAUTH)["parameters"]["excludedPaths"]["default"]
    assert "/api/console/*" in excluded
    assert not [e for e in excluded if e.startswith("/api/console/") and e not in ("/api/console/", "/api/console/*")]
    served = [f"/api/console/{p.name}" for p in CONSOLE.iterdir() if p.suffix in (".js", ".css", ".html")]
    assert served, "the console serves files"
    for path in [
        "/api/console",
        "/api/console/",
        "/API/Console/",
        "/api/console/config.json",
        "/api/console/new.js",
        *served,
    ]:
        assert easy_auth_excludes(excluded, path), path
    for path in ["/api/subscriptions", "/api/events", "/api/consolex", "/api/console-admin", "/api/admin/console", "/"]:
        assert not easy_auth_excludes(excluded, path), path


def test_easy_auth_outputs_nothing_it_cannot_read() -> None:
    """authsettingsV2 is a Microsoft.Web/sites/config resource, whose properties the Bicep types
    mark unreadable (Azure/bicep-types-az generated/web/microsoft.web/2024-04-01/types.json,
    readableScopes 0): the module outputs none of them."""
    for output in parsed(EASYAUTH)["outputs"].values():
        assert "authSettings" not in json.dumps(output)


def test_the_app_role_manifest_declares_the_contracts_roles() -> None:
    """`az ad app create --app-roles @infra/entra/app-roles.json`: the three roles, for users,
    groups and applications (client-credential publishers), each with its own id."""
    roles = json.loads((ENTRA / "app-roles.json").read_text(encoding="utf-8"))
    assert sorted(r["value"] for r in roles) == sorted(access.ROLES)
    for role in roles:
        assert set(role["allowedMemberTypes"]) == {"User", "Application"}
        assert role["isEnabled"] is True and role["description"] and role["displayName"]
        uuid.UUID(role["id"])
    assert len({r["id"] for r in roles}) == len(roles)


def test_the_api_manifest_exposes_one_scope_and_asks_for_v2_tokens() -> None:
    """api.json exposes `user_impersonation` (the connector's delegated permission) and makes Entra
    issue v2 tokens (the issuer Easy Auth checks); the pre-authorized variant adds the Azure CLI."""
    plain = json.loads((ENTRA / "api.json").read_text(encoding="utf-8"))["api"]
    pre = json.loads((ENTRA / "api-preauthorized.json").read_text(encoding="utf-8"))["api"]
    assert plain["requestedAccessTokenVersion"] == 2
    [scope] = plain["oauth2PermissionScopes"]
    assert scope["value"] == "user_impersonation" and scope["type"] == "User" and scope["isEnabled"]
    # PATCH replaces `api` whole: the second one repeats the first and adds the pre-authorization.
    assert {k: v for k, v in pre.items() if k != "preAuthorizedApplications"} == plain
    [cli] = pre["preAuthorizedApplications"]
    assert cli["appId"] == "04b07795-8ddb-461a-bbee-02f9e1bf7b46"  # Microsoft Azure CLI
    assert cli["delegatedPermissionIds"] == [scope["id"]]


def test_docs_walk_through_the_entra_setup() -> None:
    text = (INFRA.parent / "docs" / "entra.md").read_text(encoding="utf-8")
    for needle in (
        "az ad app create",
        "--app-roles @infra/entra/app-roles.json",
        "appRoleAssignedTo",
        "az account get-access-token --resource",
        "authMode=entra",
        "global.consent.azure-apim.net/redirect",
        "--auth entra",
        "/.auth/login/aad/callback",
        "--enable-id-token-issuance true",
    ):
        assert needle in text, needle
    assert Path(ENTRA / "app-roles.json").is_file()
