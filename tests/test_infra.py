"""Offline checks of the Azure infrastructure in infra/ (Bicep), azure.yaml and the parameters file.

Neither the Bicep CLI nor the Azure CLI is needed: every template is parsed with tree-sitter-bicep
(syntax) and pycep-parser (structure). The app settings the template sets are compared, both ways,
with the one list the code reads: `relay.core.settings.SETTINGS`.

pycep represents an identifier and a string literal alike (`name: name` and `name: 'name'` both
give "name"), so the helpers below resolve a value through the file's variables, its parameters,
and the arguments main.bicep passes to the module, in that order.
"""

from __future__ import annotations

import functools
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tree_sitter as ts
import tree_sitter_bicep as tsb
import yaml
from packaging.specifiers import SpecifierSet
from pycep import BicepParser

from relay.core import settings as relay_settings
from relay.store import storage as relay_storage

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
DNSZONE = MODULES / "dnszone.bicep"
ALERTS = MODULES / "alerts.bicep"
EASYAUTH = MODULES / "easyauth.bicep"
HOST_JSON = ROOT / "host.json"
PYPROJECT = ROOT / "pyproject.toml"
PARAMETERS = INFRA / "main.parameters.json"
AZURE_YAML = ROOT / "azure.yaml"

BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"

# --- Platform rules, as data, each with its source. ------------------------------------------

# Site properties Flex Consumption refuses with ARM BadRequest, extended code 51021 ("The following
# site configuration property (Site.SiteConfig.X) for Flex Consumption sites is invalid"), and app
# settings it deprecates (it takes runtime, scale and deployment from functionAppConfig).
# Sources: the verbatim rejection of four properties in microsoft/azure-pipelines-tasks#21032;
# LinuxFxVersion in Azure/terraform-azurerm-avm-res-web-site#283; the list that project's PR #345
# suppresses for FC1 (and #360 on functionsRuntimeScaleMonitoringEnabled); Learn, "Flex
# Consumption plan: deprecated properties and settings"
# (https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#deprecated-properties-and-settings).
FLEX_REJECTED_SITE_CONFIG = frozenset(
    name.lower()
    for name in (
        "ftpsState",
        "use32BitWorkerProcess",
        "netFrameworkVersion",
        "functionsRuntimeScaleMonitoringEnabled",
        "linuxFxVersion",
        "windowsFxVersion",
        "alwaysOn",
        "preWarmedInstanceCount",
        "functionAppScaleLimit",
        "minimumElasticInstanceCount",
        "javaVersion",
        "powerShellVersion",
        "nodeVersion",
        "pythonVersion",
    )
)
FLEX_REJECTED_SITE_PROPERTIES = frozenset(name.lower() for name in ("containerSize", "dailyMemoryTimeQuota"))
FLEX_REJECTED_APP_SETTINGS = frozenset(
    (
        "FUNCTIONS_EXTENSION_VERSION",
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_WORKER_RUNTIME_VERSION",
        "FUNCTIONS_MAX_HTTP_CONCURRENCY",
        "FUNCTIONS_WORKER_PROCESS_COUNT",
        "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
        "SCM_DO_BUILD_DURING_DEPLOYMENT",
        "ENABLE_ORYX_BUILD",
        "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
        "WEBSITE_CONTENTSHARE",
        "WEBSITE_CONTENTOVERVNET",
        "WEBSITE_NODE_DEFAULT_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE",
        "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
        "WEBSITE_VNET_ROUTE_ALL",
        "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    )
)
# Settings that would bring back shared-key storage.
FORBIDDEN_SETTINGS = tuple(sorted(FLEX_REJECTED_APP_SETTINGS)) + (
    "DEPLOYMENT_STORAGE_CONNECTION_STRING",
    "AzureWebJobsStorage",
)

# Flex Consumption scale limits (Learn, "Flex Consumption plan: instance memory" and "Set maximum
# instance count": https://learn.microsoft.com/azure/azure-functions/flex-consumption-how-to):
# instance sizes 512, 2048 and 4096 MB; the lowest maximum instance count is 40, the highest 1000;
# HTTP per-instance concurrency 1 to 1000, which Python apps get as 1 when unset.
FLEX_INSTANCE_MEMORY_MB = (512, 2048, 4096)
FLEX_LOWEST_MAXIMUM_INSTANCE_COUNT = 40
FLEX_HIGHEST_MAXIMUM_INSTANCE_COUNT = 1000
FLEX_PYTHON_DEFAULT_HTTP_CONCURRENCY = 1
# Python versions Flex Consumption runs (Learn, "Flex Consumption plan: supported language stack
# versions"; `az functionapp list-flexconsumption-runtimes --runtime python`).
FLEX_PYTHON_VERSIONS = ("3.10", "3.11", "3.12")

# Resource types whose properties a template cannot read (readableScopes 0): Azure/bicep-types-az,
# generated/web/microsoft.web/2024-04-01/types.json, `Microsoft.Web/sites/config@2024-04-01`
# (authsettingsV2 and the other config names; only appsettings and connectionstrings have a
# readable variant, through list functions).
UNREADABLE_TYPES = frozenset({"microsoft.web/sites/config"})


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
        if isinstance(part, str) and part in app["parameters"]:
            settings.update(_settings_object(MAIN, module_call(FUNCTIONAPP)["params"][part]))
        else:
            settings.update(_settings_object(FUNCTIONAPP, part))
    return settings


def _settings_object(path: Path, expr: Any) -> dict[str, tuple[Path, Any]]:
    """Every key an app-settings expression may set: object literals, variables holding them,
    union() of them and both branches of `cond ? {...} : {}`."""
    doc = parsed(path)
    if isinstance(expr, str) and expr in doc["variables"]:
        return _settings_object(path, doc["variables"][expr]["value"])
    if isinstance(expr, dict) and "function" in expr:
        found: dict[str, tuple[Path, Any]] = {}
        for part in function(expr, "union").values():
            found.update(_settings_object(path, part))
        return found
    if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "conditional":
        operands = expr["operator"]["operands"]
        return _settings_object(path, operands["true_value"]) | _settings_object(path, operands["false_value"])
    assert isinstance(expr, dict), f"cannot follow app-settings part {expr!r}"
    return {k: (path, v) for k, v in expr.items()}


class BicepIntError(ValueError):
    """ARM's int() refuses text that is not a whole number (e.g. '7.5'): the deployment fails."""


def _arm_int(value: Any) -> int:
    # ARM's int() takes a whole number's text ("7", "07", "-3"); anything else fails the deployment.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BicepIntError(repr(value))
    if isinstance(value, str) and not re.fullmatch(r"[+-]?\d+", value):
        raise BicepIntError(repr(value))
    return int(value)


def evaluate(path: Path, expr: Any, env: dict[str, Any]) -> Any:
    """A small evaluator of the Bicep expressions main.bicep computes with: identifiers (variables,
    then `env`, then parameter defaults), literals, + and ?:, and the functions int, trim, split,
    first, empty and contains with ARM's semantics. pycep spells an identifier and a string literal
    alike, so a string that names nothing is a literal."""
    doc = parsed(path)
    if isinstance(expr, bool | int) or expr is None:
        return expr
    if isinstance(expr, str):
        if expr in doc["variables"]:
            return evaluate(path, doc["variables"][expr]["value"], env)
        if expr in env:
            return env[expr]
        if expr in doc["parameters"]:
            return doc["parameters"][expr].get("default")
        return expr
    if "operator" in expr:
        kind, ops = expr["operator"]["type"], expr["operator"]["operands"]
        if kind == "add":
            return evaluate(path, ops["operand_1"], env) + evaluate(path, ops["operand_2"], env)
        if kind == "conditional":
            chosen = "true_value" if evaluate(path, ops["condition"], env) else "false_value"
            return evaluate(path, ops[chosen], env)
        raise AssertionError(f"operator {kind} is not modelled")
    kind, args = (
        expr["function"]["type"],
        {k: evaluate(path, v, env) for k, v in expr["function"]["parameters"].items()},
    )
    if kind == "int":
        return _arm_int(args["value_to_convert"])
    if kind == "trim":
        return args["string_to_trim"].strip()
    if kind == "split":
        return args["input_string"].split(args["delimiter"])
    if kind == "first":
        return args["arg_1"][0]
    if kind == "empty":
        return not args["item_to_test"]
    if kind == "contains":
        return args["item_to_find"] in args["container"]
    raise AssertionError(f"function {kind}() is not modelled")


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
    assert params["instanceMemoryMB"]["default"] == 512
    assert params["maximumInstanceCount"]["default"] == 100


# --------------------------------------------------------------------------- storage


def storage_accounts() -> dict[str, dict[str, Any]]:
    """The storage accounts storage.bicep declares, by symbolic name, their properties resolved."""
    found = {}
    for name, res in resources(STORAGE, "Microsoft.Storage/storageAccounts").items():
        config = dict(body(res))
        config["properties"] = resolve(STORAGE, config["properties"])
        found[name] = config
    return found


def test_storage_accounts_are_locked_down():
    """Both storage accounts turn shared keys and public blob access off and require HTTPS with TLS 1.2."""
    accounts = storage_accounts()
    assert set(accounts) == {"storageAccount", "packageAccount"}
    for config in accounts.values():
        props = config["properties"]
        assert props["allowSharedKeyAccess"] is False
        assert props["minimumTlsVersion"] == "TLS1_2"
        assert props["supportsHttpsTrafficOnly"] is True
        assert props["allowBlobPublicAccess"] is False


def test_storage_redundancy_is_a_parameter_and_blobs_are_soft_deleted():
    """storageSku (LRS by default, ZRS offered for production) sets both accounts' SKU; both blob
    services keep deleted blobs and containers for blobSoftDeleteDays."""
    main = parsed(MAIN)["parameters"]
    sku = main["storageSku"]
    assert sku["default"] == "Standard_LRS"
    assert "Standard_ZRS" in {d["type"]: d.get("argument") for d in sku["decorators"]}["allowed"]
    assert module_call(STORAGE)["params"]["skuName"] == "storageSku"
    for config in storage_accounts().values():
        assert config["sku"] == {"name": "skuName"}
    services = resources(STORAGE, "Microsoft.Storage/storageAccounts/blobServices")
    assert len(services) == 2
    for res in services.values():
        props = resolve(STORAGE, body(res)["properties"])
        for policy in ("deleteRetentionPolicy", "containerDeleteRetentionPolicy"):
            assert props[policy] == {"enabled": True, "days": "softDeleteDays"}, policy
    assert module_call(STORAGE)["params"]["softDeleteDays"] == "blobSoftDeleteDays"
    assert main["blobSoftDeleteDays"]["default"] >= 1


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
    # The package container sits in the package account, the payloads in the relay's.
    parents = {body(r)["name"]: body(r)["parent"] for r in containers.values()}
    services = {
        n: body(r)["parent"] for n, r in resources(STORAGE, "Microsoft.Storage/storageAccounts/blobServices").items()
    }
    assert services[parents["deploymentContainerName"]] == "packageAccount"
    assert services[parents["payloadContainerName"]] == "storageAccount"


def test_function_app_deploys_from_the_declared_container():
    """The function app's deployment storage points at the container the storage module creates."""
    storage_call = module_call(STORAGE)["params"]
    app_call = module_call(FUNCTIONAPP)["params"]
    assert storage_call["deploymentContainerName"] == app_call["deploymentContainerName"]
    value = site()["properties"]["functionAppConfig"]["deployment"]["storage"]["value"]
    assert value == "${packageStorageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}"
    existing = resources(FUNCTIONAPP, "Microsoft.Storage/storageAccounts", existing=True)
    assert body(existing["packageStorageAccount"])["name"] == "packageStorageAccountName"
    assert body(existing["storageAccount"])["name"] == "storageAccountName"
    assert dotted(app_call["storageAccountName"]) == "storage.outputs.name"
    assert dotted(app_call["packageStorageAccountName"]) == "storage.outputs.packageAccountName"
    assert dotted(parsed(STORAGE)["outputs"]["packageAccountName"]["value"]) == "packageAccount.name"


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
    params = main["parameters"]
    assert evaluate(MAIN, "payloadRetentionDays", {"relayEventRetentionDays": "7", "retryScheduleDays": 2}) == 9
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


def _allowed(path: Path, name: str) -> list[Any]:
    return {d["type"]: d.get("argument") for d in parsed(path)["parameters"][name]["decorators"]}["allowed"]


def _bounds(path: Path, name: str) -> tuple[Any, Any]:
    decorators = {d["type"]: d.get("argument") for d in parsed(path)["parameters"][name]["decorators"]}
    return decorators.get("min_value"), decorators.get("max_value")


def test_function_app_runs_python_311_or_312_on_linux():
    """The function app is a Linux function app whose Flex runtime is python, its version the
    pythonVersion parameter: 3.11 (default) or 3.12, both Flex runtimes, both admitted by
    pyproject's requires-python (azd's restore installs the project with the local Python)."""
    app = site()
    assert app["kind"] == "functionapp,linux"
    assert app["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert module_call(FUNCTIONAPP)["params"]["pythonVersion"] == "pythonVersion"
    versions = _allowed(MAIN, "pythonVersion")
    assert versions == _allowed(FUNCTIONAPP, "pythonVersion") == ["3.11", "3.12"]
    assert set(versions) <= set(FLEX_PYTHON_VERSIONS)
    assert parsed(MAIN)["parameters"]["pythonVersion"]["default"] == "3.11"
    requires = SpecifierSet(tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"])
    for version in versions:
        assert f"{version}.0" in requires and f"{version}.9" in requires, (version, str(requires))


def test_function_app_scale_comes_from_parameters():
    """maximumInstanceCount, instanceMemoryMB, the HTTP per-instance concurrency and the
    always-ready instances flow from main.bicep's parameters into scaleAndConcurrency, within what
    Flex accepts: 512 MB by default (the bench's peak RSS is about 150 MB), a maximum instance count
    no lower than Flex's lowest maximum (40), and an HTTP concurrency set (Python gets 1 unset)."""
    scale = site()["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert resolve(FUNCTIONAPP, scale["maximumInstanceCount"]) == 100
    assert resolve(FUNCTIONAPP, scale["instanceMemoryMB"]) == 512
    call = module_call(FUNCTIONAPP)["params"]
    for name in ("maximumInstanceCount", "instanceMemoryMB", "httpPerInstanceConcurrency", "alwaysReadyHttpInstances"):
        assert call[name] == name, name
    for path in (MAIN, FUNCTIONAPP):
        assert _allowed(path, "instanceMemoryMB") == list(FLEX_INSTANCE_MEMORY_MB)
        low, high = _bounds(path, "maximumInstanceCount")
        assert low >= FLEX_LOWEST_MAXIMUM_INSTANCE_COUNT and high <= FLEX_HIGHEST_MAXIMUM_INSTANCE_COUNT, path.name
        low, high = _bounds(path, "httpPerInstanceConcurrency")
        assert low >= 1 and high <= 1000
    http = scale["triggers"]["http"]
    assert http["perInstanceConcurrency"] == "httpPerInstanceConcurrency"
    default = parsed(MAIN)["parameters"]["httpPerInstanceConcurrency"]["default"]
    assert default > FLEX_PYTHON_DEFAULT_HTTP_CONCURRENCY
    assert resolve(FUNCTIONAPP, http["perInstanceConcurrency"]) == default


def test_always_ready_http_instances_are_an_option():
    """alwaysReadyHttpInstances (default 0: scale to zero) gives the `http` group that many
    always-ready instances; 0 sets none."""
    ready = site()["properties"]["functionAppConfig"]["scaleAndConcurrency"]["alwaysReady"]["operator"]["operands"]
    assert ready["condition"]["operator"] == {
        "type": "greater_than",
        "operands": {"operand_1": "alwaysReadyHttpInstances", "operand_2": 0},
    }
    assert ready["false_value"] == []
    assert resolve(FUNCTIONAPP, ready["true_value"]) == [{"name": "http", "instanceCount": "alwaysReadyHttpInstances"}]
    assert parsed(MAIN)["parameters"]["alwaysReadyHttpInstances"]["default"] == 0


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


def test_app_identity_holds_no_role_on_the_package():
    """The package lives in an account of its own: every role of the app identity is scoped to the
    relay's account or to Application Insights, none to the package account or anything in it
    (Storage Blob Data Owner on an account also grants container actions, such as deleting
    app-package, that no ABAC condition restricts). The deployment identity alone reaches the
    package, with one role scoped to its container."""
    package_scopes = {"packageAccount", "packageBlobService", "deploymentContainer"}
    existing = {
        name: body(res)
        for rtype in (
            "Microsoft.Storage/storageAccounts",
            "Microsoft.Storage/storageAccounts/blobServices",
            "Microsoft.Storage/storageAccounts/blobServices/containers",
        )
        for name, res in resources(RBAC, rtype, existing=True).items()
    }
    assert existing["packageAccount"]["name"] == "packageStorageAccountName"
    assert existing["packageBlobService"]["parent"] == "packageAccount"
    assert existing["deploymentContainer"]["parent"] == "packageBlobService"
    assert dotted(module_call(RBAC)["params"]["packageStorageAccountName"]) == "storage.outputs.packageAccountName"
    app_roles = _role_assignments()
    assert app_roles, "the app identity has roles"
    for role, grant in app_roles.items():
        assert grant["scope"] not in package_scopes, f"app identity role {role} on {grant['scope']}"
        assert grant["scope"] in ("storageAccount", "appInsights"), grant["scope"]
    assert body(resources(RBAC, "Microsoft.Storage/storageAccounts", existing=True)["storageAccount"])["name"] == (
        "storageAccountName"
    )
    container = resolve(MAIN, module_call(RBAC)["params"]["deploymentContainerName"])
    assert container == resolve(MAIN, module_call(STORAGE)["params"]["deploymentContainerName"]) == "app-package"
    deploy = _role_assignments("deploymentPrincipalId")
    assert set(deploy) == {STORAGE_BLOB_DATA_CONTRIBUTOR}, "the deployment identity has one role"
    grant = deploy[STORAGE_BLOB_DATA_CONTRIBUTOR]
    assert grant["scope"] == "deploymentContainer"
    assert grant["properties"]["principalType"] == "ServicePrincipal"
    assert dotted(module_call(RBAC)["params"]["deploymentPrincipalId"]) == "identity.outputs.deploymentPrincipalId"


def test_deploying_user_gets_data_roles_only_when_named():
    """principalId (azd: AZURE_PRINCIPAL_ID) gives that principal Table, Queue and Blob Data
    Contributor, each under `if (!empty(...))`; without it no such role is created. Its
    principalType comes from principalType (azd: AZURE_PRINCIPAL_TYPE): azd signed in as a service
    principal fills AZURE_PRINCIPAL_ID with the service principal's id, and an assignment that
    calls it a User fails with UnmatchedPrincipalType."""
    main = parsed(MAIN)["parameters"]
    assert main["principalId"]["default"] == ""
    assert main["principalType"]["default"] == "User"
    allowed = {d["type"]: d.get("argument") for d in main["principalType"]["decorators"]}["allowed"]
    assert {"User", "ServicePrincipal"} <= set(allowed)
    assert module_call(RBAC)["params"]["userPrincipalId"] == "principalId"
    assert module_call(RBAC)["params"]["userPrincipalType"] == "principalType"
    params = json.loads(PARAMETERS.read_text())["parameters"]
    # `=User`: azd's substitution default (drone/envsubst, used by azd's own templates as
    # `${SERVICE_..._EXISTS=false}`), for an azd too old to export AZURE_PRINCIPAL_TYPE; an empty
    # value would fail the parameter's @allowed list.
    assert params["principalType"]["value"] == "${AZURE_PRINCIPAL_TYPE=User}"
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
        assert body(res)["properties"]["principalType"] == "userPrincipalType"
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
    props = storage_accounts()["packageAccount"]["properties"]
    assert props == storage_accounts()["storageAccount"]["properties"], "both accounts are locked alike"
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

    # Private endpoints: blob, queue and table of the relay's account, blob of the package account.
    endpoints = resolve(NETWORK, "endpoints")
    assert [(e["account"], e["service"]) for e in endpoints] == [
        ("storageAccountName", "blob"),
        ("storageAccountName", "queue"),
        ("storageAccountName", "table"),
        ("packageStorageAccountName", "blob"),
    ]
    assert dotted(call["packageStorageAccountName"]) == "storage.outputs.packageAccountName"
    [endpoint] = resources(NETWORK, "Microsoft.Network/privateEndpoints").values()
    assert endpoint["config"]["loop_type"]["detail"]["array_name"] == "endpoints"
    [connection] = body(endpoint)["properties"]["privateLinkServiceConnections"]
    link = function(connection["properties"]["privateLinkServiceId"], "resource_id")
    assert link["resource_type"] == "Microsoft.Storage/storageAccounts"
    assert dotted(link["resource_name_1"]) == "endpoint.account"
    assert [dotted(g) for g in connection["properties"]["groupIds"]] == ["endpoint.service"]
    assert dotted(body(endpoint)["properties"]["subnet"]["id"]) == "privateEndpointSubnet.id"
    assert resources(NETWORK, "Microsoft.Network/privateEndpoints/privateDnsZoneGroups")
    assert resources(DNSZONE, "Microsoft.Network/privateDnsZones")
    assert resources(DNSZONE, "Microsoft.Network/privateDnsZones/virtualNetworkLinks")


def test_function_app_is_https_only_with_tls_12():
    """The function app is HTTPS-only and requires TLS 1.2 (Flex has no FTP endpoint to turn off)."""
    props = site()["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert "appSettings" not in props["siteConfig"], "app settings live in one place: sites/config"


def _keys(node: Any) -> set[str]:
    """Every object key anywhere under a pycep value."""
    if isinstance(node, dict):
        return {str(k).strip("'").lower() for k in node} | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


def test_no_property_or_setting_flex_consumption_rejects():
    """No site property and no app setting Flex Consumption rejects (ARM 51021 and the deprecation
    list, FLEX_REJECTED_* above) is set anywhere: not in siteConfig, not elsewhere in the site's
    properties, not in a sites/config resource of any module, not among the app settings."""
    props = site()["properties"]
    site_keys = _keys({k: v for k, v in props.items() if k != "functionAppConfig"})
    assert sorted(site_keys & FLEX_REJECTED_SITE_CONFIG) == []
    assert sorted(site_keys & FLEX_REJECTED_SITE_PROPERTIES) == []
    for path in BICEP_FILES:
        for res in resources(path, "Microsoft.Web/sites/config").values():
            if body(res)["name"] == "web":
                assert sorted(_keys(body(res)["properties"]) & FLEX_REJECTED_SITE_CONFIG) == [], path.name
    names = set(template_app_settings())
    assert sorted(names & FLEX_REJECTED_APP_SETTINGS) == []
    text = FUNCTIONAPP.read_text()
    assert "FTPS is disabled" not in text and "ftpsState:" not in text


def test_function_app_is_tagged_for_azd():
    """The function app carries the azd-service-name tag of the one service in azure.yaml."""
    [service] = yaml.safe_load(AZURE_YAML.read_text())["services"]
    assert site()["tags"] == "appTags"
    tags = function(module_call(FUNCTIONAPP)["params"]["appTags"], "union")
    assert {"'azd-service-name'": service} in tags.values()


# --------------------------------------------------------------------------- app settings


def test_required_settings_are_set():
    """Every setting of relay.core.settings.SETTINGS without a default is set (AzureWebJobsStorage by its
    identity forms)."""
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
    """Every RELAY_* app setting of the template is a setting the app reads, and every RELAY_*
    SETTINGS name is set."""
    known = {s.name for s in relay_settings.SETTINGS} | set(relay_settings.OPTIONAL_SETTINGS)
    set_by_template = {n for n in template_app_settings() if n.startswith("RELAY_")}
    assert set_by_template <= known, sorted(set_by_template - known)
    relay_names = {s.name for s in relay_settings.SETTINGS if s.name.startswith("RELAY_")}
    assert relay_names <= set_by_template, sorted(relay_names - set_by_template)


def test_relay_parameter_defaults_are_the_contract_defaults():
    """Each RELAY_* app setting comes from a main.bicep string parameter whose default is the
    SETTINGS default (an optional setting's: empty, i.e. unset)."""
    defaults: dict[str, Any] = {name: "" for name in relay_settings.OPTIONAL_SETTINGS}
    defaults |= {s.name: s.default for s in relay_settings.SETTINGS}
    # Set only in entra mode, from the parameters Easy Auth validates tokens with: the tenant
    # defaults to the deployment's own (test_entra_mode_tells_the_app_what_its_served_definition_signs_in_with).
    defaults["RELAY_ENTRA_TENANT"] = parsed(MAIN)["parameters"]["entraTenantId"]["default"]
    main_params = parsed(MAIN)["parameters"]
    for name, (path, value) in template_app_settings().items():
        if not name.startswith("RELAY_"):
            continue
        assert path == MAIN and value in main_params, f"{name} is not set from a main.bicep parameter"
        param = main_params[value]
        assert param["type"] == "string", f"{value}: app settings are strings"
        assert param["default"] == defaults[name], f"{value} default {param['default']!r} != {defaults[name]!r}"


# The settings an operator is told to set, which a redeployment (it writes the whole app-settings
# collection) would otherwise remove: each a template parameter, secrets @secure().
OPERATOR_SETTINGS = {
    "RELAY_PUBLIC_URL": ("relayPublicUrl", False),
    "RELAY_TOKEN_KEY": ("relayTokenKey", True),
    "RELAY_TOKEN_KEY_PREVIOUS": ("relayTokenKeyPrevious", True),
}


@pytest.mark.parametrize("setting", OPERATOR_SETTINGS)
def test_operator_settings_survive_a_redeployment(setting: str):
    """RELAY_PUBLIC_URL, RELAY_TOKEN_KEY and RELAY_TOKEN_KEY_PREVIOUS are template parameters
    (the keys @secure(); a Key Vault reference works as a value too), set as app settings when
    given and left out when empty; azd fills them from its environment of the same name."""
    param, secure = OPERATOR_SETTINGS[setting]
    assert setting in relay_settings.OPTIONAL_SETTINGS
    settings = template_app_settings()
    assert setting in settings, f"{setting} is not an app setting the template writes"
    assert settings[setting] == (MAIN, param)
    declared = parsed(MAIN)["parameters"][param]
    assert declared["type"] == "string" and declared["default"] == ""
    assert any(d["type"] == "secure" for d in declared["decorators"]) is secure
    optional = parsed(MAIN)["variables"]["relayOptionalSettings"]["value"]
    branches = [p["operator"]["operands"] for p in function(optional, "union").values() if "operator" in p]
    assert {
        "condition": {"function": {"type": "empty", "parameters": {"item_to_test": param}}},
        "true_value": {},
        "false_value": {setting: param},
    } in branches
    assert json.loads(PARAMETERS.read_text())["parameters"][param]["value"] == f"${{{setting}}}"
    if secure:
        assert param not in parsed(MAIN)["outputs"] and f"{param}" not in json.dumps(parsed(MAIN)["outputs"])


def test_fractional_retention_days_deploy():
    """RELAY_EVENT_RETENTION_DAYS may be fractional (the app reads a number): the payload lifecycle
    days are the retention rounded up to whole days plus the schedule's days, with no int() of a
    decimal text (ARM's int() refuses "0.5" and the deployment fails)."""
    for text in ("7", "30", "0.5", "7.25", ".5", " 3 ", "1.0"):
        assert relay_settings.Settings.from_environ({"RELAY_EVENT_RETENTION_DAYS": text}).event_retention_days > 0
        days = evaluate(MAIN, "payloadRetentionDays", {"relayEventRetentionDays": text, "retryScheduleDays": 2})
        whole = math.ceil(float(text))
        assert whole + 2 <= days <= whole + 3, (text, days)


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


# --------------------------------------------------------------------------- egress, DNS, alerts, logs


def test_private_networking_has_planned_egress():
    """natGateway (private networking only) adds a Standard NAT gateway with one static Standard
    public IP on the app subnet, output as NAT_PUBLIC_IP for receivers' allow-lists; both subnets
    set defaultOutboundAccess explicitly (newer network API versions turn it off by default): the
    app subnet keeps it only without a NAT gateway, the endpoint subnet never needs it."""
    main = parsed(MAIN)
    assert main["parameters"]["natGateway"]["default"] is False
    assert module_call(NETWORK)["params"]["natGateway"] == "natGateway"
    ip = body(resources(NETWORK, "Microsoft.Network/publicIPAddresses")["natPublicIp"])
    assert (
        resources(NETWORK, "Microsoft.Network/publicIPAddresses")["natPublicIp"]["config"]["condition"] == "natGateway"
    )
    assert ip["sku"] == {"name": "Standard"}
    assert ip["properties"]["publicIPAllocationMethod"] == "Static"
    nat = resources(NETWORK, "Microsoft.Network/natGateways")["nat"]
    assert nat["config"]["condition"] == "natGateway"
    assert [dotted(p["id"]) for p in body(nat)["properties"]["publicIpAddresses"]] == ["natPublicIp.id"]
    subnets = {
        body(r)["name"]: body(r)["properties"]
        for r in resources(NETWORK, "Microsoft.Network/virtualNetworks/subnets").values()
    }
    app = subnets["app"]
    assert app["defaultOutboundAccess"] == {"operator": {"type": "not", "operands": {"bool_value": "natGateway"}}}
    attached = app["natGateway"]["operator"]["operands"]
    assert attached["condition"] == "natGateway" and dotted(attached["true_value"]["id"]) == "nat.id"
    assert attached["false_value"] is None
    assert subnets["private-endpoints"]["defaultOutboundAccess"] is False
    out = main["outputs"]["NAT_PUBLIC_IP"]["value"]["operator"]["operands"]
    assert dotted(out["true_value"]) == "network.outputs.natPublicIp"
    assert dotted(parsed(NETWORK)["outputs"]["natPublicIp"]["value"]["operator"]["operands"]["true_value"]) == (
        "natPublicIp.properties.ipAddress"
    )


def test_private_networking_accepts_existing_dns_zones():
    """privateDnsZoneIds ({"blob": id, ...}) makes the endpoints register in existing zones (a hub's)
    and skips creating that service's zone; a service not named gets its own zone and link."""
    assert parsed(MAIN)["parameters"]["privateDnsZoneIds"]["default"] == {}
    assert module_call(NETWORK)["params"]["privateDnsZoneIds"] == "privateDnsZoneIds"
    zone_modules = {
        body_name: call
        for body_name, call in parsed(NETWORK)["modules"].items()
        if (MODULES / call["detail"]["path"]).resolve() == DNSZONE.resolve()
    }
    assert len(zone_modules) == 3
    ids = resolve(NETWORK, "zoneIds")
    for service in ("blob", "queue", "table"):
        [(name, call)] = [(n, c) for n, c in zone_modules.items() if n.startswith(service)]
        assert call["config"]["condition"] == {
            "operator": {
                "type": "not",
                "operands": {
                    "bool_value": {
                        "function": {
                            "type": "contains",
                            "parameters": {"container": "privateDnsZoneIds", "item_to_find": service},
                        }
                    }
                },
            }
        }
        choice = ids[service]["operator"]["operands"]
        assert dotted(choice["true_value"]) == f"privateDnsZoneIds.{service}"
        assert dotted(choice["false_value"]) == f"{name}.outputs.id"
    [groups] = resources(NETWORK, "Microsoft.Network/privateEndpoints/privateDnsZoneGroups").values()
    [config] = body(groups)["properties"]["privateDnsZoneConfigs"]
    accessor = config["properties"]["privateDnsZoneId"]["operator"]
    assert accessor["type"] == "index_accessor" and accessor["operands"]["operand_1"] == "zoneIds"


def test_alerts_cover_failures_poison_queues_and_health():
    """alerts (default on) deploys monitoring/alerts.bicep: a metric alert on failed executions, a
    log alert on the host's "Moving message to queue '<queue>-poison'" warning (the text of the
    WebJobs queue processor), and a standard availability test of /api/health with an alert on
    failed locations; alertEmail, when given, becomes an action group the alerts notify."""
    main = parsed(MAIN)
    assert main["parameters"]["alerts"]["default"] is True
    assert module_condition(ALERTS) == "alerts"
    call = module_call(ALERTS)["params"]
    assert call["healthUrl"] == "${functionApp.outputs.url}/api/health"
    assert dotted(call["appInsightsName"]) == "monitoring.outputs.appInsightsName"
    failures = body(resources(ALERTS, "Microsoft.Insights/metricAlerts")["functionFailures"])
    [criterion] = failures["properties"]["criteria"]["allOf"]
    assert criterion["metricName"] == "requests/failed"
    poison = body(resources(ALERTS, "Microsoft.Insights/scheduledQueryRules")["poisonGrowth"])
    [rule] = poison["properties"]["criteria"]["allOf"]
    assert "Moving message to queue" in rule["query"] and "-poison" in rule["query"]
    # The host logs that line as a warning: host.json must let warnings through.
    levels = json.loads(HOST_JSON.read_text())["logging"]["logLevel"]
    assert levels["default"] in ("Warning", "Information")
    test = body(resources(ALERTS, "Microsoft.Insights/webtests")["healthTest"])
    assert test["kind"] == "standard"
    assert test["properties"]["Request"]["RequestUrl"] == "healthUrl"
    assert len(test["properties"]["Locations"]) >= 5
    health = body(resources(ALERTS, "Microsoft.Insights/metricAlerts")["healthAlert"])
    assert (
        health["properties"]["criteria"]["'odata.type'"]
        == "Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria"
    )
    group = resources(ALERTS, "Microsoft.Insights/actionGroups")["actionGroup"]
    assert group["config"]["condition"] == {
        "operator": {
            "type": "not",
            "operands": {"bool_value": {"function": {"type": "empty", "parameters": {"item_to_test": "alertEmail"}}}},
        }
    }


def test_host_logging_is_not_all_information_and_samples():
    """host.json: the default level is Warning (function start/finish lines and the SDKs' chatter
    stay out of Application Insights), requests and aggregates stay at Information (the failure
    alert and the portal's invocation list read them), and adaptive sampling is on with requests
    and exceptions excluded, so every failure is counted."""
    logging = json.loads(HOST_JSON.read_text())["logging"]
    levels = logging["logLevel"]
    assert levels["default"] == "Warning"
    assert levels["Host.Results"] == "Information"
    assert set(levels.values()) != {"Information"}
    sampling = logging["applicationInsights"]["samplingSettings"]
    assert sampling["isEnabled"] is True
    assert {"Request", "Exception"} <= set(sampling["excludedTypes"].split(";"))


def _identifiers(node: Any) -> set[str]:
    """The first identifier of every dotted reference under a pycep value."""
    found: set[str] = set()
    if isinstance(node, str):
        found.add(node.split(".")[0])
    elif isinstance(node, dict):
        if node.get("operator", {}).get("type") == "property_accessor":
            found |= _identifiers(node["operator"]["operands"]["operand_1"])
        else:
            for value in node.values():
                found |= _identifiers(value)
    elif isinstance(node, list):
        for value in node:
            found |= _identifiers(value)
    return found


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_no_output_reads_an_unreadable_resource(path: Path):
    """No output reads a resource whose properties the Bicep types mark unreadable
    (UNREADABLE_TYPES: sites/config, e.g. authsettingsV2): such a template is refused."""
    unreadable = {name for name, res in parsed(path)["resources"].items() if res["type"].lower() in UNREADABLE_TYPES}
    for name, output in parsed(path)["outputs"].items():
        assert not (_identifiers(output["value"]) & unreadable), f"{path.name} output {name} reads {unreadable}"


def test_the_app_settings_reach_the_module_as_a_secure_object():
    """The app settings carry RELAY_TOKEN_KEY: the function app module takes them @secure(), so the
    key shows neither in the nested deployment's recorded inputs nor in its history."""
    declared = parsed(FUNCTIONAPP)["parameters"]["appSettings"]
    assert any(d["type"] == "secure" for d in declared["decorators"])


def test_the_bench_prices_what_infra_deploys() -> None:
    """The cost table (relay_dev/bench/prices.json `deployment`) is for the instance size and HTTP
    concurrency the template deploys by default: change one, the other must follow."""
    deployment = json.loads((ROOT / "relay_dev" / "bench" / "prices.json").read_text())["deployment"]
    params = parsed(MAIN)["parameters"]
    assert params["instanceMemoryMB"]["default"] == deployment["instance_memory_mb"]
    assert params["httpPerInstanceConcurrency"]["default"] == deployment["http_per_instance_concurrency"]


def test_entra_mode_tells_the_app_what_its_served_definition_signs_in_with() -> None:
    """In entra mode GET /api/openapi.json serves the OAuth 2.0 definition for RELAY_ENTRA_TENANT
    and RELAY_ENTRA_RESOURCE (503 without them): the template sets both from the parameters Easy
    Auth validates tokens with, and only in entra mode."""
    optional = parsed(MAIN)["variables"]["relayOptionalSettings"]["value"]
    branches = [p["operator"]["operands"] for p in function(optional, "union").values() if "operator" in p]
    [entra] = [b for b in branches if "RELAY_ENTRA_TENANT" in json.dumps(b)]
    assert entra["true_value"] == {}
    assert entra["false_value"] == {"RELAY_ENTRA_TENANT": "entraTenantId", "RELAY_ENTRA_RESOURCE": "entraAudience"}
    assert "authMode" in json.dumps(entra["condition"]) and "entra" in json.dumps(entra["condition"])
