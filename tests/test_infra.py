"""Offline checks of the Azure infrastructure in infra/ (Bicep), azure.yaml and the parameters file.

Neither the Bicep CLI nor the Azure CLI is needed: every template is parsed with tree-sitter-bicep
(syntax) and pycep-parser (structure). The app settings the template sets are compared, both ways,
with the one list the code reads: `relay.settings.SETTINGS`.

pycep represents an identifier and a string literal alike (`name: name` and `name: 'name'` both
give "name"), so the helpers below resolve a value through the file's variables, its parameters,
and the arguments main.bicep passes to the module, in that order.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import tree_sitter as ts
import tree_sitter_bicep as tsb
import yaml
from pycep import BicepParser

from relay import settings as relay_settings
from relay import storage as relay_storage

ROOT = Path(__file__).resolve().parents[1]

INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
STORAGE = MODULES / "storage.bicep"
IDENTITY = MODULES / "identity.bicep"
MONITORING = MODULES / "monitoring.bicep"
RBAC = MODULES / "rbac.bicep"
FUNCTIONAPP = MODULES / "functionapp.bicep"
NETWORK = MODULES / "network.bicep"
PARAMETERS = INFRA / "main.parameters.json"
AZURE_YAML = ROOT / "azure.yaml"

BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"

# Settings the Flex Consumption plan rejects (it takes them from functionAppConfig) or that would
# bring back shared-key storage.
FORBIDDEN_SETTINGS = (
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "DEPLOYMENT_STORAGE_CONNECTION_STRING",
    "AzureWebJobsStorage",
)


# --------------------------------------------------------------------------- helpers


@functools.cache
def parsed(path: Path) -> dict[str, Any]:
    """The pycep document of one Bicep file, with the sections a file may omit filled in."""
    doc = BicepParser().parse(file_path=path)
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        doc.setdefault(section, {})
    return doc


def module_call(path: Path) -> dict[str, Any]:
    """The `module` declaration of main.bicep that deploys `path` (its name, params, dependsOn)."""
    main = parsed(MAIN)
    calls = [m for m in main["modules"].values() if (INFRA / m["detail"]["path"]).resolve() == path.resolve()]
    assert len(calls) == 1, f"main.bicep deploys {path.name} {len(calls)} times"
    config = calls[0]["config"]
    return config["config"] if "condition" in config else config  # `module x '...' = if (...)`


def module_condition(path: Path) -> Any:
    """The `if (...)` condition main.bicep deploys a module under, or None when it always does."""
    [call] = [m for m in parsed(MAIN)["modules"].values() if (INFRA / m["detail"]["path"]).resolve() == path.resolve()]
    return call["config"].get("condition")


def dotted(expr: Any) -> str | None:
    """`a.b.c` for a pycep property-accessor chain, the identifier for a plain one, else None."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "property_accessor":
        left = dotted(expr["operator"]["operands"]["operand_1"])
        right = dotted(expr["operator"]["operands"]["operand_2"])
        return f"{left}.{right}" if left and right else None
    return None


def function(expr: Any, kind: str) -> dict[str, Any]:
    """The parameters of a pycep function call of type `kind` (e.g. "guid", "union")."""
    assert isinstance(expr, dict) and "function" in expr, f"{expr!r} is not a function call"
    assert expr["function"]["type"] == kind, f"expected {kind}(), got {expr['function']['type']}()"
    return expr["function"]["parameters"]


def resolve(path: Path, value: Any) -> Any:
    """Follow an identifier through variables, the module arguments main.bicep passes, and defaults."""
    doc = parsed(path)
    if not isinstance(value, str):
        return value
    if value in doc["variables"]:
        return resolve(path, doc["variables"][value]["value"])
    if value in doc["parameters"]:
        if path != MAIN:
            call = module_call(path)
            if value in call.get("params", {}):
                return resolve(MAIN, call["params"][value])
        return resolve(path, doc["parameters"][value].get("default"))
    return re.sub(r"\$\{(\w+)\}", lambda m: str(resolve(path, m.group(1))), value)


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource declaration, looking through a `[for ...]` loop or an `if (...)`."""
    config = resource["config"]
    return config["config"] if "loop_type" in config or "condition" in config else config


def resources(path: Path, rtype: str, *, existing: bool = False) -> dict[str, dict[str, Any]]:
    """Resources of one type declared (or, with existing=True, referenced) in a file."""
    return {
        name: res
        for name, res in parsed(path)["resources"].items()
        if res["type"].lower() == rtype.lower() and res["existing"] == existing
    }


def only(path: Path, rtype: str) -> dict[str, Any]:
    """The body of the single resource of type `rtype` declared in `path`."""
    found = resources(path, rtype)
    assert len(found) == 1, f"{path.name} declares {len(found)} {rtype}"
    return body(next(iter(found.values())))


def child_names(path: Path, rtype: str) -> set[str]:
    """Names of the child resources of one type, expanding `[for x in array]` loops."""
    names: set[str] = set()
    for res in resources(path, rtype).values():
        config = res["config"]
        if "loop_type" in config:
            detail = config["loop_type"]["detail"]
            items = resolve(path, detail["array_name"])
            assert isinstance(items, list), f"{rtype} loops over {detail['array_name']!r}, not a list"
            assert config["config"]["name"] == detail["item_name"], "loop must name each item after it"
            names.update(resolve(path, item) for item in items)
        else:
            names.add(resolve(path, config["name"]))
    return names


def template_app_settings() -> dict[str, tuple[Path, Any]]:
    """Every app setting the template sets: name -> (file its value is written in, raw value)."""
    app = parsed(FUNCTIONAPP)
    configs = resources(FUNCTIONAPP, "Microsoft.Web/sites/config")
    appsettings = [body(r) for r in configs.values() if body(r)["name"] == "appsettings"]
    assert len(appsettings) == 1, "one sites/config 'appsettings' resource holds the app settings"
    props = appsettings[0]["properties"]
    parts = list(function(props, "union").values()) if "function" in props else [props]

    settings: dict[str, tuple[Path, Any]] = {}
    for part in parts:
        if isinstance(part, dict):
            settings.update({k: (FUNCTIONAPP, v) for k, v in part.items()})
        elif part in app["variables"]:
            settings.update({k: (FUNCTIONAPP, v) for k, v in app["variables"][part]["value"].items()})
        elif part in app["parameters"]:
            passed = module_call(FUNCTIONAPP)["params"][part]
            value = parsed(MAIN)["variables"][passed]["value"] if isinstance(passed, str) else passed
            assert isinstance(value, dict), "main.bicep passes the app settings as an object literal"
            settings.update({k: (MAIN, v) for k, v in value.items()})
        else:
            pytest.fail(f"cannot follow app-settings part {part!r}")
    return settings


def site() -> dict[str, Any]:
    """The body of the function app (Microsoft.Web/sites) resource."""
    return only(FUNCTIONAPP, "Microsoft.Web/sites")


# --------------------------------------------------------------------------- syntax


def _bad_nodes(node: ts.Node, found: list[str]) -> list[str]:
    if node.is_error or node.is_missing:
        kind = "MISSING" if node.is_missing else "ERROR"
        found.append(f"{kind} {node.type} at line {node.start_point[0] + 1}")
    for child in node.children:
        _bad_nodes(child, found)
    return found


@functools.cache
def _ts_parser() -> ts.Parser:
    return ts.Parser(ts.Language(tsb.language()))


def test_infra_has_main_and_one_module_per_concern():
    """main.bicep exists with a module for storage, identity, monitoring, rbac and the function app."""
    assert MAIN.is_file()
    for module in (STORAGE, IDENTITY, MONITORING, RBAC, FUNCTIONAPP):
        assert module.is_file(), module
        module_call(module)


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_parses_without_error_nodes(path: Path):
    """Every .bicep file under infra/ parses with tree-sitter-bicep with no ERROR or MISSING node."""
    tree = _ts_parser().parse(path.read_bytes())
    assert tree.root_node.type == "infrastructure"
    assert _bad_nodes(tree.root_node, []) == []


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_child_resources_are_top_level(path: Path):
    """Every resource is declared at top level (children use `parent:`), never nested in another."""
    tree = _ts_parser().parse(path.read_bytes())
    stack = list(tree.root_node.children)
    nested = []
    while stack:
        node = stack.pop()
        for child in node.children:
            if child.type == "resource_declaration":
                nested.append(f"line {child.start_point[0] + 1}")
            stack.append(child)
    assert nested == [], f"nested resource declarations in {path.name}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_parses_with_pycep(path: Path):
    """Every .bicep file under infra/ parses with pycep-parser."""
    assert parsed(path)["resources"] or parsed(path)["modules"]


def test_main_is_resource_group_scoped_with_flex_parameters():
    """main.bicep targets a resource group and takes location, environmentName and the Flex scale parameters."""
    main = parsed(MAIN)
    assert main["globals"]["scope"]["value"] == "resourceGroup"
    params = main["parameters"]
    for name in ("location", "environmentName", "instanceMemoryMB", "maximumInstanceCount"):
        assert name in params, name
    assert params["instanceMemoryMB"]["default"] == 2048
    assert params["maximumInstanceCount"]["default"] == 100


# --------------------------------------------------------------------------- storage


def test_storage_account_is_locked_down():
    """The storage account turns shared keys and public blob access off and requires HTTPS with TLS 1.2."""
    props = only(STORAGE, "Microsoft.Storage/storageAccounts")["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowBlobPublicAccess"] is False


def test_relay_tables_are_declared():
    """The template creates exactly the tables the relay uses."""
    declared = child_names(STORAGE, "Microsoft.Storage/storageAccounts/tableServices/tables")
    assert declared == set(relay_storage.TABLES)
    assert declared == {
        "relaysubscriptions",
        "relayevents",
        "relaydeliveries",
        "relayeventtypes",
        "relayoperations",
        "relaykeys",
        "relaydue",
    }


def test_relay_queues_and_poison_queues_are_declared():
    """The template creates the relay's queues and the poison queue of each."""
    declared = child_names(STORAGE, "Microsoft.Storage/storageAccounts/queueServices/queues")
    expected = set(relay_storage.QUEUES) | {q + relay_storage.POISON_SUFFIX for q in relay_storage.QUEUES}
    assert declared == expected
    assert {
        "relay-fanout",
        "relay-deliveries",
        "relay-replays",
        "relay-fanout-poison",
        "relay-deliveries-poison",
        "relay-replays-poison",
    } == declared


def test_blob_containers_are_declared_private():
    """The payload container and the Flex deployment container exist, both without public access."""
    containers = resources(STORAGE, "Microsoft.Storage/storageAccounts/blobServices/containers")
    names = child_names(STORAGE, "Microsoft.Storage/storageAccounts/blobServices/containers")
    deployment_container = resolve(STORAGE, "deploymentContainerName")
    assert names == {relay_storage.PAYLOAD_CONTAINER, deployment_container}
    assert relay_storage.PAYLOAD_CONTAINER == "relay-payloads"
    assert deployment_container.startswith("app-package")
    for res in containers.values():
        assert body(res)["properties"]["publicAccess"] == "None"


def test_function_app_deploys_from_the_declared_container():
    """The function app's deployment storage points at the container the storage module creates."""
    storage_call = module_call(STORAGE)["params"]
    app_call = module_call(FUNCTIONAPP)["params"]
    assert storage_call["deploymentContainerName"] == app_call["deploymentContainerName"]
    value = site()["properties"]["functionAppConfig"]["deployment"]["storage"]["value"]
    assert value == "${storageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}"
    existing = resources(FUNCTIONAPP, "Microsoft.Storage/storageAccounts", existing=True)
    assert [body(r)["name"] for r in existing.values()] == ["storageAccountName"]
    assert dotted(app_call["storageAccountName"]) == "storage.outputs.name"


def test_payload_lifecycle_rule_outlives_event_retention():
    """A lifecycle rule deletes relay-payloads blobs after payloadRetentionDays, one day past event retention."""
    policy = only(STORAGE, "Microsoft.Storage/storageAccounts/managementPolicies")
    assert policy["name"] == "default"
    [rule] = policy["properties"]["policy"]["rules"]
    assert rule["enabled"] is True and rule["type"] == "Lifecycle"
    filters = rule["definition"]["filters"]
    assert [resolve(STORAGE, p) for p in filters["prefixMatch"]] == [relay_storage.PAYLOAD_CONTAINER + "/"]
    assert filters["blobTypes"] == ["blockBlob"]
    days = rule["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"]
    assert days == "payloadRetentionDays"
    assert module_call(STORAGE)["params"]["payloadRetentionDays"] == "payloadRetentionDays"


def test_payloads_outlive_a_replay_retried_to_the_end_of_its_schedule():
    """A payload is kept for the event retention plus the whole retry schedule rounded up to days:
    an event replayed on the last day of its retention is retried for ~27.6 h more and still finds
    its body. The days follow a changed retention by themselves."""
    main = parsed(MAIN)
    params, variables = main["parameters"], main["variables"]
    total = variables["payloadRetentionDays"]["value"]
    assert total["operator"]["type"] == "add"
    operands = total["operator"]["operands"]
    assert function(operands["operand_1"], "int") == {"value_to_convert": "relayEventRetentionDays"}
    assert operands["operand_2"] == "retryScheduleDays"
    defaults = {s.name: s.default for s in relay_settings.SETTINGS}
    schedule_seconds = sum(relay_settings.parse_schedule(defaults["RELAY_RETRY_SCHEDULE"]))
    assert params["relayRetrySchedule"]["default"] == defaults["RELAY_RETRY_SCHEDULE"]
    assert 27 * 3600 < schedule_seconds < 28 * 3600
    assert params["retryScheduleDays"]["default"] == math.ceil(schedule_seconds / 86400) == 2
    retention = int(params["relayEventRetentionDays"]["default"])
    # The lifecycle rule deletes blobs older than this many days: later than a replay's last retry.
    assert retention + params["retryScheduleDays"]["default"] == 9 > retention + schedule_seconds / 86400


# --------------------------------------------------------------------------- identity and roles


def _role_assignments(principal: str = "principalId") -> dict[str, dict[str, Any]]:
    """Role definition id -> body of the rbac.bicep role assignment that grants it to `principal`
    (the parameter naming the app identity, the deployment identity or the user)."""
    found = {}
    for res in resources(RBAC, "Microsoft.Authorization/roleAssignments").values():
        config = body(res)
        if config["properties"]["principalId"] != principal:
            continue
        role = function(config["properties"]["roleDefinitionId"], "subscription_resource_id")
        assert role["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        found[resolve(RBAC, role["resource_name_1"])] = config
    return found


def test_identity_is_user_assigned_and_feeds_the_role_assignments():
    """rbac.bicep assigns its roles to the principal of the user-assigned identity main.bicep creates."""
    identities = resources(IDENTITY, "Microsoft.ManagedIdentity/userAssignedIdentities")
    assert set(identities) == {"identity", "deploymentIdentity"}
    outputs = parsed(IDENTITY)["outputs"]
    assert dotted(outputs["principalId"]["value"]) == "identity.properties.principalId"
    assert dotted(outputs["clientId"]["value"]) == "identity.properties.clientId"
    assert dotted(outputs["id"]["value"]) == "identity.id"
    assert dotted(module_call(RBAC)["params"]["principalId"]) == "identity.outputs.principalId"
    assert any(dotted(d) == "rbac" for d in module_call(FUNCTIONAPP).get("dependsOn", [])), (
        "the function app waits for its role assignments"
    )


@pytest.mark.parametrize(
    "role_id, scope_type",
    [
        (STORAGE_BLOB_DATA_OWNER, "Microsoft.Storage/storageAccounts"),
        (STORAGE_QUEUE_DATA_CONTRIBUTOR, "Microsoft.Storage/storageAccounts"),
        (STORAGE_TABLE_DATA_CONTRIBUTOR, "Microsoft.Storage/storageAccounts"),
        (MONITORING_METRICS_PUBLISHER, "Microsoft.Insights/components"),
    ],
    ids=["blob-data-owner", "queue-data-contributor", "table-data-contributor", "monitoring-metrics-publisher"],
)
def test_role_is_assigned_to_the_identity(role_id: str, scope_type: str):
    """The role is assigned to the identity's service principal on the right resource under a deterministic
    guid() name."""
    assignments = _role_assignments()
    assert role_id in assignments, f"role {role_id} is not assigned"
    config = assignments[role_id]
    assert config["properties"]["principalId"] == "principalId"
    assert config["properties"]["principalType"] == "ServicePrincipal"
    scope = resources(RBAC, scope_type, existing=True)
    assert config["scope"] in scope, f"scope {config['scope']} is not the {scope_type}"
    guid_args = list(function(config["name"], "guid").values())
    assert "principalId" in guid_args
    assert role_id in [resolve(RBAC, a) for a in guid_args if isinstance(a, str)]
    assert any(dotted(a) == f"{config['scope']}.id" for a in guid_args)


def test_role_scopes_are_the_deployed_resources():
    """rbac.bicep's storage account and Application Insights are the ones the other modules create."""
    call = module_call(RBAC)["params"]
    assert dotted(call["storageAccountName"]) == "storage.outputs.name"
    assert dotted(call["appInsightsName"]) == "monitoring.outputs.appInsightsName"


# --------------------------------------------------------------------------- monitoring


def test_application_insights_is_workspace_based_without_local_auth():
    """Application Insights is workspace-based with DisableLocalAuth true."""
    only(MONITORING, "Microsoft.OperationalInsights/workspaces")
    props = only(MONITORING, "Microsoft.Insights/components")["properties"]
    assert props["DisableLocalAuth"] is True
    assert dotted(props["WorkspaceResourceId"]) == "logAnalytics.id"


# --------------------------------------------------------------------------- plan and function app


def test_plan_is_flex_consumption_on_linux():
    """The hosting plan is Flex Consumption (FC1, FlexConsumption) on Linux."""
    plan = only(FUNCTIONAPP, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["kind"] == "functionapp"
    assert plan["properties"]["reserved"] is True
    assert dotted(site()["properties"]["serverFarmId"]) == "plan.id"


def test_function_app_runs_python_311_on_linux():
    """The function app is a Linux function app whose Flex runtime is python 3.11."""
    app = site()
    assert app["kind"] == "functionapp,linux"
    assert app["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.11"}


def test_function_app_scale_comes_from_parameters():
    """maximumInstanceCount and instanceMemoryMB flow from main.bicep's parameters into scaleAndConcurrency."""
    scale = site()["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert resolve(FUNCTIONAPP, scale["maximumInstanceCount"]) == 100
    assert resolve(FUNCTIONAPP, scale["instanceMemoryMB"]) == 2048
    call = module_call(FUNCTIONAPP)["params"]
    assert call["maximumInstanceCount"] == "maximumInstanceCount"
    assert call["instanceMemoryMB"] == "instanceMemoryMB"


def test_deployment_storage_uses_the_user_assigned_identity():
    """The deployment container is reached with the deployment identity; the app runs as its own."""
    app = site()
    storage = app["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "deploymentIdentityId",
    }
    assert app["identity"]["type"] == "UserAssigned"
    assert {k.strip("'") for k in app["identity"]["userAssignedIdentities"]} == {
        "${identityId}",
        "${deploymentIdentityId}",
    }
    call = module_call(FUNCTIONAPP)["params"]
    assert dotted(call["identityId"]) == "identity.outputs.id"
    assert dotted(call["deploymentIdentityId"]) == "identity.outputs.deploymentId"
    assert dotted(parsed(IDENTITY)["outputs"]["deploymentId"]["value"]) == "deploymentIdentity.id"


def test_app_identity_reads_but_never_replaces_its_package():
    """The app identity's blob role carries an ABAC condition that refuses every blob write, create
    and delete in the deployment container (and only there); the deployment identity alone may write
    it, with a role scoped to that one container."""
    owner = _role_assignments()[STORAGE_BLOB_DATA_OWNER]["properties"]
    assert owner["conditionVersion"] == "2.0"
    condition = resolve(RBAC, owner["condition"])
    for action in (
        "blobs/write",
        "blobs/add/action",
        "blobs/delete",
        "blobs/deleteBlobVersion/action",
        "blobs/permanentDelete/action",
    ):
        assert (
            f"!(ActionMatches{{\\'Microsoft.Storage/storageAccounts/blobServices/containers/{action}\\'}})" in condition
        ), action
    assert "ActionMatches{\\'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read" not in condition
    container = resolve(MAIN, module_call(RBAC)["params"]["deploymentContainerName"])
    assert container == resolve(MAIN, module_call(STORAGE)["params"]["deploymentContainerName"]) == "app-package"
    assert condition.endswith(
        "OR (@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringNotEquals "
        f"\\'{container}\\'))"
    )
    deploy = _role_assignments("deploymentPrincipalId")
    assert set(deploy) == {STORAGE_BLOB_DATA_CONTRIBUTOR}, "the deployment identity has one role"
    grant = deploy[STORAGE_BLOB_DATA_CONTRIBUTOR]
    assert grant["scope"] == "deploymentContainer"
    scoped = resources(RBAC, "Microsoft.Storage/storageAccounts/blobServices/containers", existing=True)
    assert body(scoped["deploymentContainer"])["name"] == "deploymentContainerName"
    assert grant["properties"]["principalType"] == "ServicePrincipal"
    assert dotted(module_call(RBAC)["params"]["deploymentPrincipalId"]) == "identity.outputs.deploymentPrincipalId"


def test_deploying_user_gets_data_roles_only_when_named():
    """principalId (azd: AZURE_PRINCIPAL_ID) gives that user Table, Queue and Blob Data Contributor
    (principalType User), each under `if (!empty(...))`; without it no user role is created."""
    assert parsed(MAIN)["parameters"]["principalId"]["default"] == ""
    assert module_call(RBAC)["params"]["userPrincipalId"] == "principalId"
    user = _role_assignments("userPrincipalId")
    assert set(user) == {STORAGE_TABLE_DATA_CONTRIBUTOR, STORAGE_QUEUE_DATA_CONTRIBUTOR, STORAGE_BLOB_DATA_CONTRIBUTOR}
    for res in resources(RBAC, "Microsoft.Authorization/roleAssignments").values():
        if body(res)["properties"]["principalId"] != "userPrincipalId":
            continue
        assert res["config"]["condition"] == {
            "operator": {
                "type": "not",
                "operands": {
                    "bool_value": {"function": {"type": "empty", "parameters": {"item_to_test": "userPrincipalId"}}}
                },
            }
        }
        assert body(res)["properties"]["principalType"] == "User"
        assert body(res)["scope"] == "storageAccount"


def test_basic_publishing_credentials_are_off():
    """FTP and SCM basic-auth publishing are disabled (top-level basicPublishingCredentialsPolicies)."""
    policies = resources(FUNCTIONAPP, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(p)["name"]: body(p)["properties"] for p in policies.values()} == {
        "ftp": {"allow": False},
        "scm": {"allow": False},
    }
    assert all(body(p)["parent"] == "functionApp" for p in policies.values())


def test_private_networking_is_a_parameter():
    """privateNetworking (default off) deploys network.bicep: a VNet whose app subnet is delegated to
    Microsoft.App/environments and feeds the app's virtualNetworkSubnetId, private endpoints and
    private DNS zones for blob, queue and table, and storage with public network access off."""
    assert parsed(MAIN)["parameters"]["privateNetworking"]["default"] is False
    assert module_condition(NETWORK) == "privateNetworking"
    call = module_call(NETWORK)["params"]
    assert dotted(call["storageAccountName"]) == "storage.outputs.name"

    # Storage: public access off exactly when private networking is on; firewall default Deny then.
    access = module_call(STORAGE)["params"]["publicNetworkAccess"]["operator"]
    assert access["type"] == "conditional"
    assert access["operands"] == {"condition": "privateNetworking", "true_value": "Disabled", "false_value": "Enabled"}
    props = only(STORAGE, "Microsoft.Storage/storageAccounts")["properties"]
    assert props["publicNetworkAccess"] == "publicNetworkAccess"
    acl = props["networkAcls"]["defaultAction"]["operator"]["operands"]
    assert acl["condition"]["operator"] == {
        "type": "equals",
        "operands": {"operand_1": "publicNetworkAccess", "operand_2": "Enabled"},
    }
    assert (acl["true_value"], acl["false_value"]) == ("Allow", "Deny")
    assert parsed(STORAGE)["parameters"]["publicNetworkAccess"]["default"] == "Enabled"

    # The app joins the delegated subnet.
    subnet = module_call(FUNCTIONAPP)["params"]["subnetId"]["operator"]["operands"]
    assert subnet["condition"] == "privateNetworking"
    assert dotted(subnet["true_value"]) == "network.outputs.appSubnetId"
    joined = site()["properties"]["virtualNetworkSubnetId"]["operator"]["operands"]
    assert (joined["true_value"], joined["false_value"]) == (None, "subnetId")  # empty(subnetId) ? null : subnetId
    subnets = {
        body(r)["name"]: body(r) for r in resources(NETWORK, "Microsoft.Network/virtualNetworks/subnets").values()
    }
    assert subnets["app"]["properties"]["delegations"][0]["properties"]["serviceName"] == "Microsoft.App/environments"
    assert dotted(parsed(NETWORK)["outputs"]["appSubnetId"]["value"]) == "appSubnet.id"

    # Private endpoints, one per storage service, each with its privatelink DNS zone.
    services = resolve(NETWORK, "storageServices")
    assert services == ["blob", "queue", "table"]
    [endpoint] = resources(NETWORK, "Microsoft.Network/privateEndpoints").values()
    assert endpoint["config"]["loop_type"]["detail"]["array_name"] == "storageServices"
    [connection] = body(endpoint)["properties"]["privateLinkServiceConnections"]
    assert dotted(connection["properties"]["privateLinkServiceId"]) == "storageAccount.id"
    assert connection["properties"]["groupIds"] == ["service"]
    assert dotted(body(endpoint)["properties"]["subnet"]["id"]) == "privateEndpointSubnet.id"
    [zone] = resources(NETWORK, "Microsoft.Network/privateDnsZones").values()
    assert body(zone)["name"] == "privatelink.${service}.${environment().suffixes.storage}"
    assert resources(NETWORK, "Microsoft.Network/privateDnsZones/virtualNetworkLinks")
    assert resources(NETWORK, "Microsoft.Network/privateEndpoints/privateDnsZoneGroups")


def test_function_app_is_https_only_with_tls_12_and_no_ftp():
    """The function app is HTTPS-only, requires TLS 1.2 and disables FTP(S)."""
    props = site()["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    assert "appSettings" not in props["siteConfig"], "app settings live in one place: sites/config"


def test_function_app_is_tagged_for_azd():
    """The function app carries the azd-service-name tag of the one service in azure.yaml."""
    [service] = yaml.safe_load(AZURE_YAML.read_text())["services"]
    assert site()["tags"] == "appTags"
    tags = function(module_call(FUNCTIONAPP)["params"]["appTags"], "union")
    assert {"'azd-service-name'": service} in tags.values()


# --------------------------------------------------------------------------- app settings


def test_required_settings_are_set():
    """Every setting of relay.settings.SETTINGS without a default is set, AzureWebJobsStorage by its identity forms."""
    names = set(template_app_settings())
    for setting in relay_settings.SETTINGS:
        if setting.default is not None:
            continue
        if setting.name == "AzureWebJobsStorage":
            identity_forms = {f"AzureWebJobsStorage__{s}" for s in relay_settings.STORAGE_IDENTITY_SUFFIXES}
            assert identity_forms <= names, sorted(identity_forms - names)
        else:
            assert setting.name in names, setting.name


def test_every_relay_setting_the_template_sets_is_known():
    """Every RELAY_* app setting of the template is a SETTINGS name, and every RELAY_* SETTINGS name is set."""
    known = {s.name for s in relay_settings.SETTINGS}
    set_by_template = {n for n in template_app_settings() if n.startswith("RELAY_")}
    assert set_by_template <= known, sorted(set_by_template - known)
    relay_names = {n for n in known if n.startswith("RELAY_")}
    assert relay_names <= set_by_template, sorted(relay_names - set_by_template)


def test_relay_parameter_defaults_are_the_contract_defaults():
    """Each RELAY_* app setting comes from a main.bicep string parameter whose default is the SETTINGS default."""
    defaults = {s.name: s.default for s in relay_settings.SETTINGS}
    main_params = parsed(MAIN)["parameters"]
    for name, (path, value) in template_app_settings().items():
        if not name.startswith("RELAY_"):
            continue
        assert path == MAIN and value in main_params, f"{name} is not set from a main.bicep parameter"
        param = main_params[value]
        assert param["type"] == "string", f"{value}: app settings are strings"
        assert param["default"] == defaults[name], f"{value} default {param['default']!r} != {defaults[name]!r}"


def test_relay_function_key_is_not_set():
    """RELAY_FUNCTION_KEY is local-development only: neither an app setting nor a deployment parameter."""
    assert "RELAY_FUNCTION_KEY" in relay_settings.OPTIONAL_SETTINGS
    assert "RELAY_FUNCTION_KEY" not in template_app_settings()
    params = json.loads(PARAMETERS.read_text())["parameters"]
    assert not any("FUNCTION_KEY" in name.upper() or "functionKey" in name for name in params)
    assert not any("functionkey" in name.lower() for name in parsed(MAIN)["parameters"])


def test_storage_settings_use_the_identity():
    """AzureWebJobsStorage__* name the account, its three service URIs and the user-assigned identity."""
    settings = template_app_settings()

    def value(name: str) -> Any:
        return settings[name][1]

    assert value("AzureWebJobsStorage__credential") == "managedidentity"
    assert value("AzureWebJobsStorage__clientId") == "identityClientId"
    assert dotted(value("AzureWebJobsStorage__accountName")) == "storageAccount.name"
    for svc in ("blob", "queue", "table"):
        uri = dotted(value(f"AzureWebJobsStorage__{svc}ServiceUri"))
        assert uri == f"storageAccount.properties.primaryEndpoints.{svc}"
    assert dotted(module_call(FUNCTIONAPP)["params"]["identityClientId"]) == "identity.outputs.clientId"


def test_application_insights_settings_use_entra_auth():
    """The connection string comes from Application Insights and telemetry authenticates as the identity."""
    settings = template_app_settings()
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in relay_settings.OPTIONAL_SETTINGS
    conn = dotted(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"][1])
    assert conn == "appInsights.properties.ConnectionString"
    auth = settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"][1]
    assert auth == "ClientId=${identityClientId};Authorization=AAD"


def test_settings_flex_rejects_are_absent():
    """No app setting that Flex Consumption rejects or that needs a storage key is set."""
    names = set(template_app_settings())
    assert names.isdisjoint(FORBIDDEN_SETTINGS), sorted(names & set(FORBIDDEN_SETTINGS))


# --------------------------------------------------------------------------- outputs, parameters, azd


def test_main_outputs_app_name_url_and_storage_account():
    """main.bicep outputs the function app's name, its https URL and the storage account name."""
    outputs = parsed(MAIN)["outputs"]
    by_value = {dotted(o["value"]): name for name, o in outputs.items()}
    assert "functionApp.outputs.name" in by_value
    assert "functionApp.outputs.url" in by_value
    assert "storage.outputs.name" in by_value
    assert "identity.outputs.clientId" in by_value
    app_outputs = parsed(FUNCTIONAPP)["outputs"]
    assert app_outputs["url"]["value"] == "https://${functionApp.properties.defaultHostName}"
    assert dotted(app_outputs["name"]["value"]) == "functionApp.name"


def test_parameters_file_names_only_main_parameters():
    """main.parameters.json is an ARM deployment parameters file whose parameters all exist in main.bicep."""
    doc = json.loads(PARAMETERS.read_text())
    assert "deploymentParameters.json" in doc["$schema"]
    assert doc["contentVersion"] == "1.0.0.0"
    main_params = parsed(MAIN)["parameters"]
    assert set(doc["parameters"]) <= set(main_params), sorted(set(doc["parameters"]) - set(main_params))
    assert "environmentName" in doc["parameters"]
    for name, entry in doc["parameters"].items():
        assert "value" in entry, name


def test_parameters_file_gives_azd_its_environment():
    """Under azd the chosen region, environment name and signed-in user reach the template: azd
    substitutes ${AZURE_LOCATION}, ${AZURE_ENV_NAME} and ${AZURE_PRINCIPAL_ID} in main.parameters.json."""
    params = json.loads(PARAMETERS.read_text())["parameters"]
    assert params["location"]["value"] == "${AZURE_LOCATION}"
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_azure_yaml_has_one_python_function_service():
    """azure.yaml declares one service: the repo root as a Python function app, provisioned from infra/main.bicep."""
    doc = yaml.safe_load(AZURE_YAML.read_text())
    [(name, service)] = doc["services"].items()
    assert service["project"] in (".", "./")
    assert service["language"] in ("python", "py")
    assert service["host"] == "function"
    infra = doc.get("infra", {})
    assert infra.get("provider", "bicep") == "bicep"
    assert infra.get("path", "infra") == "infra"
    assert infra.get("module", "main") == "main"
