"""The Bicep in ``infra/`` (issue #4), checked without a Bicep compiler or an Azure subscription.

- every ``.bicep`` file parses with pycep, the parser checkov uses (checkov silently skips a file
  it cannot parse, so a parse failure would hide every finding in it);
- ``checkov --framework bicep`` reports no failed check, and every suppression is in place
  (``// checkov:skip=CKV_...: reason`` inside the resource) with a written reason;
- the app settings the Bicep sets match the settings the code reads, both ways, and
  ``local.settings.sample.json`` lists what the code reads;
- the app's identity holds a role for every data plane it touches, at the resource's scope;
- every API version is one verified as current GA (table below);
- the security, scale, tagging and output requirements of the issue; the azd files;
- the security hardening: the host's own body limit follows SCIM_MAX_BODY_BYTES, no table
  request logs (whose URIs carry userNames and emails) reach Log Analytics and the workspace
  keeps logs as long as the provisioning log, the endpoint can be restricted to Entra's
  service tag, and the table roles are scoped to the app's tables;
- operations (issue #15): every alert rule says what it means and what to do, is wired to the
  action group that emails ``alertEmail``, and queries only telemetry the app emits; so does the
  workbook (``infra/workbook.json``);
- deployability (issue #15): the guide's commands work from a clean clone (``az`` with inline
  parameters, ``func ... publish --python``, the venv's python), no queue setting without a queue
  trigger, the sender's visible domain, the site diagnostic setting off by default, and the
  guide's operations notes (provider registration, tear-down, start-up troubleshooting).

pycep-parser and checkov pin packages that conflict with requirements-dev.txt, so they live in
``.venv-infra`` (``make venv-infra``, a dependency of ``make test``) and run as subprocesses.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.infra_bicep import (
    CHECKOV,
    INFRA,
    README,
    ROOT,
    TABLES,
    _require_tools,
    _tool_env,
    alert_rules,
    bicep,
    bicep_text,
    param_default,
    parsed_files,
)

DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
AVM_STORAGE_VERSION = "2025-06-01"

# ---- verified facts --------------------------------------------------------------------------

# Newest non-preview version of each resource type in the Bicep type index (Azure/bicep-types-az,
# generated from the azure-rest-api-specs "stable" folders), with the properties used here
# checked in that version's type definitions; where Azure Verified Modules pin an older one (the
# storage types), AVM's version, which the Bicep type snapshot bundled with the tools knows.
API_VERSIONS = {
    "Microsoft.Resources/resourceGroups": "2025-04-01",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "2024-11-30",
    # avm/res/storage/storage-account (main.bicep) pins 2025-06-01; 2026-09-01 was newer than the
    # type snapshot most tools bundle (issue #15).
    "Microsoft.Storage/storageAccounts": AVM_STORAGE_VERSION,
    "Microsoft.Storage/storageAccounts/blobServices": AVM_STORAGE_VERSION,
    "Microsoft.Storage/storageAccounts/blobServices/containers": AVM_STORAGE_VERSION,
    "Microsoft.Storage/storageAccounts/tableServices": AVM_STORAGE_VERSION,
    "Microsoft.Storage/storageAccounts/tableServices/tables": AVM_STORAGE_VERSION,
    "Microsoft.Web/serverfarms": "2025-03-01",
    "Microsoft.Web/sites": "2025-03-01",
    "Microsoft.Web/sites/config": "2025-03-01",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": "2025-03-01",
    "Microsoft.OperationalInsights/workspaces": "2026-03-01",
    "Microsoft.OperationalInsights/workspaces/tables": "2026-03-01",  # TableProperties.retentionInDays, totalRetentionInDays
    "Microsoft.Insights/components": "2020-02-02",
    "Microsoft.Insights/diagnosticSettings": "2021-05-01-preview",  # see PREVIEW_ALLOWED
    # Newest GA in the type index (AVM's avm/res/insights/scheduled-query-rule pins 2023-03-15-preview).
    "Microsoft.Insights/scheduledQueryRules": "2023-12-01",
    "Microsoft.Insights/actionGroups": "2023-01-01",  # avm/res/insights/action-group; newer: 2024-10-01-preview
    # avm/res/insights/webtest pins 2022-06-15, the latest the ARM template reference shows (GA).
    "Microsoft.Insights/webtests": "2022-06-15",
    # avm/res/insights/metric-alert and the quickstart "Metric alert rule for an availability test"
    # (quickstarts/microsoft.insights/monitoring-webtest-metric-alert) use 2018-03-01.
    "Microsoft.Insights/metricAlerts": "2018-03-01",
    "Microsoft.Insights/workbooks": "2023-06-01",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
    "Microsoft.Communication/emailServices": "2026-03-18",
    "Microsoft.Communication/emailServices/domains": "2026-03-18",
    "Microsoft.Communication/communicationServices": "2026-03-18",
}
# Preview versions allowed, each with the reason.
PREVIEW_ALLOWED: dict[str, str] = {
    "Microsoft.Insights/diagnosticSettings": (
        "2021-05-01-preview is the newest version of the type (there is no later GA) and the one Azure "
        "Verified Modules use (avm/res/storage/storage-account/blob-service); 2016-09-01 is the legacy "
        "contract (name 'service', a location, timeGrain on every metric)"
    ),
}

# Built-in role definition IDs (the same in every tenant), keyed as in rbac.bicep's `roles`.
ROLE_IDS = {
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",  # Monitoring Metrics Publisher
    "communicationAndEmailServiceOwner": "09976791-48a7-449e-bb21-39d1a415f350",  # Communication and Email Service Owner
}

# Which data plane each setting opens, and the role (on a resource of that type) the app's
# identity needs for it.
DATA_PLANES = {
    "SCIM_TABLE_ENDPOINT": ("storageTableDataContributor", "Microsoft.Storage/storageAccounts/tableServices/tables"),
    "ACS_EMAIL_ENDPOINT": ("communicationAndEmailServiceOwner", "Microsoft.Communication/communicationServices"),
    "AzureWebJobsStorage__blobServiceUri": ("storageBlobDataOwner", "Microsoft.Storage/storageAccounts"),
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": ("monitoringMetricsPublisher", "Microsoft.Insights/components"),
}

# ---- the settings contract -------------------------------------------------------------------

# The settings the app reads (issue #4).
CONTRACT = {
    "SCIM_TABLE_ENDPOINT",
    "SCIM_TABLE_CONNECTION_STRING",
    "SCIM_TABLE_PREFIX",
    "SCIM_PUBLIC_BASE_URL",
    "SCIM_MAX_BODY_BYTES",
    "AZURE_CLIENT_ID",
    "NOTIFY_SCHEDULE",
    "NOTIFY_FROM",
    "NOTIFY_MAX_EMAILS_PER_RUN",
    "ACS_EMAIL_ENDPOINT",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_STARTTLS",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "LOG_RETENTION_DAYS",
    "EVENTS_SETTLE_SECONDS",
    "EVENTS_RETENTION_DAYS",
}
# Read by the code, set locally (local.settings.sample.json), never in Azure.
LOCAL_ONLY = {
    "SCIM_TABLE_CONNECTION_STRING": "a connection string carries an account key; Azure uses SCIM_TABLE_ENDPOINT",
    "SMTP_HOST": "an SMTP server is the local alternative to ACS Email",
    "SMTP_PORT": "SMTP, see SMTP_HOST",
    "SMTP_STARTTLS": "SMTP, see SMTP_HOST",
    "SMTP_USERNAME": "SMTP, see SMTP_HOST",
    "SMTP_PASSWORD": "SMTP, see SMTP_HOST; a secret Azure does not need",
    "PORTAL_OIDC_CLIENT_SECRET": "a client secret for the local provider; Azure uses the managed identity as a federated credential (PORTAL_OIDC_FEDERATED_CLIENT_ID) and the app refuses a secret there",
}
# Read by local tools (make run, the admin CLI) from their process environment: not app settings.
PROCESS_ONLY = {
    "PORT": "port of the local host; Azure serves on the app's own host name",
    "SCIM_DEV_TENANT": "the tenant `make run` ensures exists",
    "SCIM_DEV_TOKEN": "the token of that tenant",
    "SCIM_DEV_NOTIFY": "where `make run` sends the dev tenant's failure digests (its local SMTP sink)",
    "SCIM_DEV_ALLOW_REMOTE": "lets make run reset the dev tenant on storage that is not the local emulator",
}
# Set by the platform in Azure (read-only), never by the Bicep or the local settings: their
# presence is how scim.settings knows it runs in Azure.
PLATFORM_ONLY = {
    "WEBSITE_SITE_NAME": "App Service/Functions: the app's name; set on every Azure instance",
    "WEBSITE_INSTANCE_ID": "App Service/Functions: the instance's id (not on every plan)",
}
# Set by the Bicep for the Functions host or the Azure SDK, never read by the code itself.
HOST_SETTINGS = {
    "AzureWebJobsStorage__credential": "Functions host: identity-based host storage",
    "AzureWebJobsStorage__clientId": "Functions host: which user-assigned identity",
    "AzureWebJobsStorage__blobServiceUri": "Functions host: keys, leases, timer state",
    "AzureWebJobsStorage__tableServiceUri": "Functions host: table endpoint of host storage",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "Functions host (and scim.telemetry, on only where it is set): where telemetry goes",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Functions host: Entra-authenticated telemetry",
    "AZURE_CLIENT_ID": "azure-identity's DefaultAzureCredential: picks the user-assigned identity",
    "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": "Functions host: largest request body it accepts (default 100 MB); devtools.localhost reads it as the host it stands in for",
}
# Read by the code where Azure sets them, and left out of local.settings.sample.json on purpose.
AZURE_ONLY = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "telemetry export is on only where it is set: local runs export nothing",
}
# In local.settings.sample.json for Core Tools and the local host, never read by the code.
LOCAL_HOST_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME": "Core Tools: the language worker",
    "AzureWebJobsStorage": "Core Tools: host storage on Azurite",
}
# Flex Consumption takes the runtime from functionAppConfig and the package from its deployment
# container; these settings are rejected or ignored there, and some carry account keys.
FORBIDDEN_IN_AZURE = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "AzureWebJobsStorage",
}

# ---- tools -----------------------------------------------------------------------------------


@cache
def checkov_report() -> dict[str, Any]:
    _require_tools()
    done = subprocess.run(
        [str(CHECKOV), "--framework", "bicep", "--skip-download", "--output", "json", "-d", str(INFRA)],
        capture_output=True,
        text=True,
        env=_tool_env(),
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    bicep_reports = [r for r in reports if r.get("check_type") == "bicep"]
    assert len(bicep_reports) == 1, done.stdout[:3000]
    return bicep_reports[0]


# ---- helpers over pycep's JSON ---------------------------------------------------------------


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource's own properties, under a condition (``if``) or a loop (``for``) if any."""
    config = resource["config"]
    while "condition" in config and "config" in config:
        config = config["config"]
    return config


def resources(name: str) -> dict[str, dict[str, Any]]:
    return bicep(name).get("resources", {})


def of_type(name: str, rtype: str) -> dict[str, dict[str, Any]]:
    return {key: res for key, res in resources(name).items() if res["type"] == rtype}


def only(name: str, rtype: str) -> dict[str, Any]:
    found = [res for res in resources(name).values() if res["type"] == rtype and not res["existing"]]
    assert len(found) == 1, f"{name}: expected one {rtype}, found {len(found)}"
    return body(found[0])


def accessor(value: Any) -> str | None:
    """``a.b.c`` for a property-accessor expression, the name for a bare identifier."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
        ops = value["operator"]["operands"]
        left, right = accessor(ops["operand_1"]), accessor(ops["operand_2"])
        return f"{left}.{right}" if left and right else None
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "index_accessor":
        ops = value["operator"]["operands"]
        left, right = accessor(ops["operand_1"]), accessor(ops["operand_2"])
        return f"{left}[{right}]" if left and right else None
    return None


def conditional(resource: dict[str, Any]) -> bool:
    """Whether the resource (or each instance of its loop) is deployed only under a condition."""
    config = resource["config"]
    while isinstance(config, dict) and "config" in config:
        if config.get("condition") is not None:
            return True
        config = config["config"]
    return False


def loop_array(resource: dict[str, Any]) -> str | None:
    """The array a resource loop iterates over (``[for x in ARRAY: ...]``), if it is a loop."""
    loop = resource["config"].get("loop_type")
    return loop["detail"]["array_name"] if loop else None


def app_settings() -> dict[str, Any]:
    config = only("app.bicep", "Microsoft.Web/sites/config")
    assert config["name"] == "appsettings"
    return {key.strip("'"): value for key, value in config["properties"].items()}


def settings_read_by_code(sources: dict[str, str] | None = None) -> dict[str, set[str]]:
    """Setting names the code reads, each with the files that read it.

    ``sources`` maps file names to their text; default: function_app.py, scim/**.py and devtools/**.py.

    Reads are ``X.get("NAME")``/``X.pop("NAME")``/``X["NAME"]``/``"NAME" in X`` where X is an
    environment-like name (``env``, ``environ``, ``os.environ``, ``*_env``), ``os.getenv("NAME")``,
    ``%NAME%`` binding expressions in call arguments (``schedule="%NOTIFY_SCHEDULE%"``), and
    ``validation_alias="NAME"`` keyword arguments (a pydantic-settings field read from ``NAME``).
    Writes (``setdefault``, assignments) are not reads.
    """

    def name_of(node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return node.attr
        return ""

    def env_like(node: ast.AST) -> bool:
        name = name_of(node).lower()
        return name in {"env", "environ", "environment"} or name.endswith(("_env", "environ"))

    def literal(node: ast.AST | None) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    binding = re.compile(r"%([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+)%")
    found: dict[str, set[str]] = {}
    if sources is None:
        paths = [
            ROOT / "function_app.py",
            *sorted((ROOT / "scim").rglob("*.py")),
            *sorted((ROOT / "devtools").rglob("*.py")),
        ]
        sources = {str(path.relative_to(ROOT)): path.read_text() for path in paths}
    for where, text in sources.items():
        for node in ast.walk(ast.parse(text, filename=where)):
            names: list[str] = []
            if isinstance(node, ast.Call):
                func = node.func
                first = literal(node.args[0]) if node.args else None
                if (
                    isinstance(func, ast.Attribute)
                    and first
                    and (func.attr == "getenv" or (func.attr in {"get", "pop"} and env_like(func.value)))
                ):
                    names.append(first)
                for arg in [*node.args, *(kw.value for kw in node.keywords)]:
                    names.extend(binding.findall(literal(arg) or ""))
                names.extend(filter(None, (literal(kw.value) for kw in node.keywords if kw.arg == "validation_alias")))
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and env_like(node.value):
                names.extend(filter(None, [literal(node.slice)]))
            elif (
                isinstance(node, ast.Compare)
                and len(node.ops) == 1
                and isinstance(node.ops[0], ast.In)
                and env_like(node.comparators[0])
            ):
                names.extend(filter(None, [literal(node.left)]))
            for name in names:
                found.setdefault(name, set()).add(where)
    return found


def sample_settings() -> set[str]:
    return set(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"])


# ---- parsing and checkov ---------------------------------------------------------------------


def test_every_bicep_file_parses() -> None:
    files = parsed_files()
    assert {
        "main.bicep",
        "app.bicep",
        "storage.bicep",
        "monitoring.bicep",
        "email.bicep",
        "rbac.bicep",
        "alerts.bicep",
        "workbook.bicep",
    } <= set(files)
    failures = {name: entry["error"] for name, entry in files.items() if "error" in entry}
    assert not failures, failures


def test_checkov_reports_no_failed_check() -> None:
    report = checkov_report()
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']}): {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert summary["parsing_errors"] == 0, summary
    assert summary["failed"] == 0, "\n".join(failed)
    assert summary["passed"] > 0, summary


def test_every_suppression_has_a_reason_and_is_used() -> None:
    skipped = checkov_report()["results"]["skipped_checks"]
    vague = [c["check_id"] for c in skipped if len(c.get("check_result", {}).get("suppress_comment", "")) < 30]
    assert not vague, f"suppressions without a written reason: {vague}"
    used = {(Path(c["file_path"]).name, c["check_id"]) for c in skipped}
    written = {
        (path.name, match)
        for path in INFRA.glob("*.bicep")
        for match in re.findall(r"checkov:skip=([A-Z0-9_]+)", path.read_text())
    }
    assert written == used, f"suppressions that suppress nothing: {sorted(written - used)}"


# ---- API versions ----------------------------------------------------------------------------


def test_api_versions_are_the_verified_ga_versions() -> None:
    wrong = []
    for path in sorted(INFRA.glob("*.bicep")):
        for rtype, version in re.findall(r"'([A-Za-z]+\.[A-Za-z]+/[A-Za-z/]+)@([^']+)'", path.read_text()):
            if API_VERSIONS.get(rtype) != version:
                wrong.append(f"{path.name}: {rtype}@{version} (verified: {API_VERSIONS.get(rtype)})")
            elif "preview" in version and rtype not in PREVIEW_ALLOWED:
                wrong.append(f"{path.name}: {rtype}@{version} is a preview")
    assert not wrong, "\n".join(wrong)
    assert all("preview" not in v or t in PREVIEW_ALLOWED for t, v in API_VERSIONS.items())
    # The regex sees what pycep sees.
    for name in parsed_files():
        for res in resources(name).values():
            assert API_VERSIONS.get(res["type"]) == res["api_version"], (name, res["type"])


# ---- settings --------------------------------------------------------------------------------


def test_the_settings_scanner_sees_every_form_of_read_and_no_write() -> None:
    snippet = """
import os
import azure.functions as func
bp = func.Blueprint()

def from_env(env, settings_env):
    a = env.get("A_ONE")
    b = os.environ.get("B_TWO", "x")
    c = os.environ["C_THREE"]
    d = os.getenv("D_FOUR")
    e = "E_FIVE" in os.environ
    f = settings_env.get("F_SIX")
    g = env.pop("G_SEVEN", None)
    i = Field(None, validation_alias="I_NINE")
    env.setdefault("NOT_READ", "1")
    os.environ["NOT_READ_EITHER"] = "1"
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S")
    quoted = quote("%C3%A9")
    return a, b, c, d, e, f, g, i

@bp.timer_trigger(schedule="%H_EIGHT%", arg_name="t")
def timer(t):
    pass
"""
    assert set(settings_read_by_code({"snippet.py": snippet})) == {
        "A_ONE",
        "B_TWO",
        "C_THREE",
        "D_FOUR",
        "E_FIVE",
        "F_SIX",
        "G_SEVEN",
        "H_EIGHT",
        "I_NINE",
    }


def test_the_code_reads_every_contract_setting() -> None:
    read = set(settings_read_by_code()) | {"AZURE_CLIENT_ID"}  # read by DefaultAzureCredential
    assert not CONTRACT - read, f"contract settings the code does not read (yet): {sorted(CONTRACT - read)}"


def test_the_bicep_sets_every_setting_the_code_reads() -> None:
    read = settings_read_by_code()
    wanted = set(read) - set(LOCAL_ONLY) - set(PROCESS_ONLY) - set(PLATFORM_ONLY)
    missing = {name: sorted(read[name]) for name in wanted - set(app_settings())}
    assert not missing, f"read by the code, not set in Azure: {missing}"
    assert not (set(LOCAL_ONLY) | set(PROCESS_ONLY) | set(PLATFORM_ONLY)) & set(app_settings())


def test_the_code_reads_every_setting_the_bicep_sets() -> None:
    unread = set(app_settings()) - set(settings_read_by_code()) - set(HOST_SETTINGS)
    assert not unread, f"set in Azure, read by nothing: {sorted(unread)}"
    assert not FORBIDDEN_IN_AZURE & set(app_settings())


def test_the_sample_lists_every_setting_the_code_reads() -> None:
    read = settings_read_by_code()
    wanted = set(read) - set(PROCESS_ONLY) - set(PLATFORM_ONLY) - set(AZURE_ONLY)
    missing = {name: sorted(read[name]) for name in wanted - sample_settings()}
    assert not missing, f"read by the code, missing from local.settings.sample.json: {missing}"
    assert set(AZURE_ONLY) <= set(app_settings()), "an Azure-only setting must be set by the Bicep"
    assert not set(PLATFORM_ONLY) & sample_settings(), "a platform variable would make the app think it is in Azure"
    unread = sample_settings() - set(read) - set(LOCAL_HOST_SETTINGS)
    assert not unread, f"in local.settings.sample.json, read by nothing: {sorted(unread)}"


def test_the_settings_carry_identity_based_values() -> None:
    settings = app_settings()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    for name in ("AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID"):
        assert accessor(settings[name]) == "identity.properties.clientId", name
    assert (
        settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
        == "ClientId=${identity.properties.clientId};Authorization=AAD"
    )
    assert (
        accessor(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == "applicationInsights.properties.ConnectionString"
    )
    assert settings["AzureWebJobsStorage__blobServiceUri"] == "blobEndpoint"
    assert settings["AzureWebJobsStorage__tableServiceUri"] == "tableEndpoint"
    assert settings["SCIM_TABLE_ENDPOINT"] == "tableEndpoint"
    assert settings["SCIM_PUBLIC_BASE_URL"] == "https://${site.properties.defaultHostName}"
    assert settings["ACS_EMAIL_ENDPOINT"] == "emailEndpoint"
    assert settings["NOTIFY_FROM"] == "emailSender"
    email = bicep("email.bicep")["outputs"]
    assert email["endpoint"]["value"] == "https://${communicationService.properties.hostName}"
    # The visible From (RFC 5322, "P2") domain is fromSenderDomain; mailFromSenderDomain is the
    # envelope's (RFC 5321, "P1"): DomainProperties of Microsoft.Communication/emailServices/domains.
    assert email["senderAddress"]["value"] == "DoNotReply@${azureManagedDomain.properties.fromSenderDomain}"
    main = bicep("main.bicep")["parameters"]
    assert main["notifySchedule"]["default"] == "0 */10 * * * *"
    assert main["logRetentionDays"]["default"] == 30
    assert main["eventsRetentionDays"]["default"] == 30
    assert main["eventsSettleSeconds"]["default"] == 15  # scim.store.event_timing.EVENTS_SETTLE_SECONDS
    # Lowering the settle delay in Azure would let a feed consumer miss events (docs/events.md).
    assert {"type": "min_value", "argument": 15} in main["eventsSettleSeconds"]["decorators"]
    for name, param in (
        ("EVENTS_SETTLE_SECONDS", "eventsSettleSeconds"),
        ("EVENTS_RETENTION_DAYS", "eventsRetentionDays"),
    ):
        assert settings[name] == {"function": {"type": "string", "parameters": {"value_to_convert": param}}}, name
    assert main["tablePrefix"]["default"] == "scim"


# ---- roles -----------------------------------------------------------------------------------


def role_assignments() -> list[dict[str, Any]]:
    """rbac.bicep's assignments: role key, principal, scope type, and whether it is conditional."""
    rbac = resources("rbac.bicep")
    role_keys = bicep("rbac.bicep")["variables"]["roles"]["value"]
    found = []
    for key, res in of_type("rbac.bicep", "Microsoft.Authorization/roleAssignments").items():
        conf = body(res)
        props = conf["properties"]
        role = accessor(props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
        assert role and role.startswith("roles."), (key, role)
        role_key = role.removeprefix("roles.")
        name = conf["name"]["function"]
        assert name["type"] == "guid", key
        scope = accessor(conf["scope"])
        assert scope, f"{key}: scope must name a resource (or one of a resource loop)"
        assert [accessor(v) for v in name["parameters"].values()] == [
            f"{scope}.id",
            props["principalId"],
            role,
        ], f"{key}: name must be guid(scope.id, principal, role)"
        scope_resource = scope.split("[")[0]
        found.append(
            {
                "resource": key,
                "role": role_key,
                "role_id": role_keys[role_key],
                "principal": props["principalId"],
                "principal_type": props["principalType"],
                "scope": scope,
                "scope_type": rbac[scope_resource]["type"],
                "scope_loop": loop_array(rbac[scope_resource]),
                "loop": loop_array(res),
                "conditional": conditional(res),
            }
        )
    return found


def test_the_role_map_holds_the_verified_role_ids() -> None:
    assert bicep("rbac.bicep")["variables"]["roles"]["value"] == ROLE_IDS


def test_every_role_assignment_is_in_rbac_bicep() -> None:
    for name in parsed_files():
        if name != "rbac.bicep":
            assert not of_type(name, "Microsoft.Authorization/roleAssignments"), name


def test_the_app_identity_holds_a_role_for_every_data_plane() -> None:
    settings = set(app_settings())
    app_roles = {(a["role"], a["scope_type"]) for a in role_assignments() if a["principal"] == "appPrincipalId"}
    for setting, (role, scope_type) in DATA_PLANES.items():
        assert setting in settings, setting
        assert (role, scope_type) in app_roles, f"{setting} needs {role} on a {scope_type}"
    assert all(
        a["principal_type"] == "ServicePrincipal" for a in role_assignments() if a["principal"] == "appPrincipalId"
    )
    # Nothing beyond what the data planes need.
    assert app_roles == set(DATA_PLANES.values())


def test_the_deploying_developer_gets_table_data_only_when_given() -> None:
    dev = [a for a in role_assignments() if a["principal"] == "developerPrincipalId"]
    assert [(a["role"], a["scope_type"], a["principal_type"], a["conditional"]) for a in dev] == [
        (
            "storageTableDataContributor",
            "Microsoft.Storage/storageAccounts/tableServices/tables",
            "developerPrincipalType",
            True,
        )
    ]
    assert param_default("main.bicep", "principalType") == "User"
    assert param_default("main.bicep", "principalId") == ""


# ---- what the issue asks of each resource ----------------------------------------------------


def test_storage_is_entra_only() -> None:
    storage = only("storage.bicep", "Microsoft.Storage/storageAccounts")
    props = storage["properties"]
    assert storage["kind"] == "StorageV2"
    assert props["allowSharedKeyAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowBlobPublicAccess"] is False
    assert (
        only("storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")["properties"]["publicAccess"]
        == "None"
    )


def test_the_tables_are_created_up_front() -> None:
    names = bicep("main.bicep")["variables"]["tableNames"]["value"]
    assert names == [
        "${tablePrefix}directory",
        "${tablePrefix}tenants",
        "${tablePrefix}log",
        "${tablePrefix}deliveries",
        "${tablePrefix}portal",
        "${tablePrefix}audit",
    ]
    tables = of_type("storage.bicep", "Microsoft.Storage/storageAccounts/tableServices/tables")
    assert [t["config"]["loop_type"]["detail"]["array_name"] for t in tables.values()] == ["tableNames"]


def test_the_function_app_is_flex_consumption_python_311() -> None:
    plan = only("app.bicep", "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = only("app.bicep", "Microsoft.Web/sites")
    props = site["properties"]
    assert site["identity"]["type"] == "UserAssigned"
    assert props["httpsOnly"] is True
    assert props["clientAffinityEnabled"] is False
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    assert accessor(storage["authentication"]["userAssignedIdentityResourceId"]) == "identity.id"
    scale = config["scaleAndConcurrency"]
    assert scale["triggers"]["http"]["perInstanceConcurrency"] == "httpPerInstanceConcurrency"
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    ready = scale["alwaysReady"]["operator"]
    assert ready["type"] == "conditional" and ready["operands"]["condition"] == "alwaysReady"
    assert ready["operands"]["true_value"] == [{"name": "http", "instanceCount": 1}]
    assert ready["operands"]["false_value"] == []
    defaults = {
        p: param_default("main.bicep", p) for p in ("httpPerInstanceConcurrency", "maximumInstanceCount", "alwaysReady")
    }
    assert defaults == {"httpPerInstanceConcurrency": 16, "maximumInstanceCount": 40, "alwaysReady": False}
    policies = of_type("app.bicep", "Microsoft.Web/sites/basicPublishingCredentialsPolicies").values()
    assert sorted((body(p)["name"], body(p)["properties"]["allow"]) for p in policies) == [
        ("ftp", False),
        ("scm", False),
    ]


def test_monitoring_and_email_accept_entra_only() -> None:
    workspace = only("monitoring.bicep", "Microsoft.OperationalInsights/workspaces")
    assert workspace["properties"]["features"]["disableLocalAuth"] is True
    components = only("monitoring.bicep", "Microsoft.Insights/components")
    assert components["properties"]["DisableLocalAuth"] is True
    assert accessor(components["properties"]["WorkspaceResourceId"]) == "logAnalytics.id"
    domain = only("email.bicep", "Microsoft.Communication/emailServices/domains")
    assert domain["name"] == "AzureManagedDomain"
    assert domain["properties"]["domainManagement"] == "AzureManaged"
    acs = only("email.bicep", "Microsoft.Communication/communicationServices")
    assert acs["properties"]["disableLocalAuth"] is True
    assert [accessor(d) for d in acs["properties"]["linkedDomains"]] == ["azureManagedDomain.id"]


def test_diagnostic_settings_cover_the_site_and_the_table_and_blob_services() -> None:
    scopes = {
        (name, body(res)["scope"], resources(name)[body(res)["scope"]]["type"])
        for name in parsed_files()
        for res in of_type(name, "Microsoft.Insights/diagnosticSettings").values()
    }
    assert scopes == {
        ("app.bicep", "site", "Microsoft.Web/sites"),
        ("storage.bicep", "blobService", "Microsoft.Storage/storageAccounts/blobServices"),
        ("storage.bicep", "tableService", "Microsoft.Storage/storageAccounts/tableServices"),
    }


# "Azure Functions Flex Consumption plan hosting", Considerations: "Diagnostic settings: Diagnostic
# settings aren't currently supported." Where one works on the site it copies into FunctionAppLogs
# what Application Insights already holds: a parameter, off by default (issue #15).
def test_the_site_diagnostic_setting_is_a_parameter_off_by_default() -> None:
    (site_setting,) = [
        res
        for res in of_type("app.bicep", "Microsoft.Insights/diagnosticSettings").values()
        if body(res)["scope"] == "site"
    ]
    assert site_setting["config"].get("condition") == "siteDiagnosticSetting", site_setting["config"].get("condition")
    assert param_default("app.bicep", "siteDiagnosticSetting") is False
    main = bicep("main.bicep")
    assert main["parameters"]["siteDiagnosticSetting"]["default"] is False
    assert main["modules"]["app"]["config"]["params"]["siteDiagnosticSetting"] == "siteDiagnosticSetting"


# Microsoft.Insights/diagnosticSettings@2016-09-01 is the legacy contract: its name must be
# 'service', it takes a location, and every metric a timeGrain (Azure/bicep-types-az,
# generated/monitor/microsoft.insights/2016-09-01). The body used here is the 2021-05-01-preview
# one that Azure Verified Modules use: logs and metrics named by category.
def test_diagnostic_settings_use_the_avm_contract() -> None:
    for name in parsed_files():
        for key, res in of_type(name, "Microsoft.Insights/diagnosticSettings").items():
            assert res["api_version"] == "2021-05-01-preview", (name, key)
            setting = body(res)
            assert "location" not in setting and setting["name"] != "service", (name, key)
            props = setting["properties"]
            assert props["workspaceId"], (name, key)
            for metric in props.get("metrics", []):
                assert set(metric) == {"category", "enabled"}, (name, key, metric)
            for log in props.get("logs", []):
                assert set(log) == {"category", "enabled"}, (name, key, log)


# Child and extension resources take no tags.
UNTAGGED = {
    "Microsoft.Authorization/roleAssignments",
    "Microsoft.Insights/diagnosticSettings",
    "Microsoft.OperationalInsights/workspaces/tables",
    "Microsoft.Storage/storageAccounts/blobServices",
    "Microsoft.Storage/storageAccounts/blobServices/containers",
    "Microsoft.Storage/storageAccounts/tableServices",
    "Microsoft.Storage/storageAccounts/tableServices/tables",
    "Microsoft.Web/sites/config",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies",
}


def test_every_resource_is_tagged() -> None:
    untagged = [
        f"{name}: {key}"
        for name in parsed_files()
        for key, res in resources(name).items()
        if not res["existing"] and res["type"] not in UNTAGGED and "tags" not in body(res)
    ]
    assert not untagged, untagged
    assert bicep("main.bicep")["variables"]["tags"]["value"] == {"'azd-env-name'": "environmentName"}
    tags = only("app.bicep", "Microsoft.Web/sites")["tags"]["function"]
    assert tags["type"] == "union"
    assert list(tags["parameters"].values()) == ["tags", {"'azd-service-name'": "api"}]


def test_outputs_name_the_app_its_url_and_the_first_tenant_command_and_no_secret() -> None:
    outputs = bicep("main.bicep")["outputs"]
    assert accessor(outputs["FUNCTION_APP_NAME"]["value"]) == "app.outputs.name"
    assert accessor(outputs["FUNCTION_APP_URL"]["value"]) == "app.outputs.baseUrl"
    assert bicep("app.bicep")["outputs"]["baseUrl"]["value"] == "https://${site.properties.defaultHostName}"
    command = outputs["CREATE_FIRST_TENANT_COMMAND"]["value"]
    assert command == (
        "SCIM_TABLE_ENDPOINT=${storage.outputs.tableEndpoint} SCIM_PUBLIC_BASE_URL=${app.outputs.baseUrl} "
        "SCIM_TABLE_PREFIX=${tablePrefix} .venv/bin/python -m scim.admin tenant create <name>"
    )
    secretish = re.compile(r"key|secret|password|token|connectionstring", re.I)
    for name in parsed_files():
        for out_name, out in bicep(name).get("outputs", {}).items():
            assert not secretish.search(out_name), f"{name}: output {out_name}"
            assert not secretish.search(json.dumps(out["value"]).replace("tableEndpoint", "")), f"{name}: {out_name}"


# ---- security hardening ----------------------------------------------------------------------

# "App settings reference for Azure Functions", FUNCTIONS_REQUEST_BODY_SIZE_LIMIT: "Overrides the
# default limit on the body size of requests sent to HTTP endpoints. The value is given in bytes,
# with a default maximum request size of 104857600 bytes." Not among the settings deprecated on
# Flex Consumption ("Flex Consumption plan deprecations", same page).
HOST_DEFAULT_BODY_LIMIT = 104_857_600


def app_variable(name: str) -> Any:
    return bicep("app.bicep")["variables"][name]["value"]


def test_the_host_caps_request_bodies_at_a_small_multiple_of_scim_max_body_bytes() -> None:
    settings = app_settings()
    assert "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT" in settings, (
        "the Functions host accepts request bodies up to 100 MB unless FUNCTIONS_REQUEST_BODY_SIZE_LIMIT is set"
    )
    assert settings["SCIM_MAX_BODY_BYTES"] == {
        "function": {"type": "string", "parameters": {"value_to_convert": "maxBodyBytes"}}
    }
    limit = settings["FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"]["function"]
    assert limit["type"] == "string"
    product = app_variable(limit["parameters"]["value_to_convert"])["operator"]
    # Derived from the same parameter as SCIM_MAX_BODY_BYTES, so the two cannot drift.
    assert product["type"] == "multiply" and product["operands"]["operand_1"] == "maxBodyBytes", product
    factor = product["operands"]["operand_2"]
    # Above the app's limit (the app, not the host, answers an oversized body: a SCIM 413), and
    # a small multiple of it (the host buffers no more than that).
    assert isinstance(factor, int) and 2 <= factor <= 8, factor
    main = bicep("main.bicep")
    assert main["modules"]["app"]["config"]["params"]["maxBodyBytes"] == "maxBodyBytes"
    param = main["parameters"]["maxBodyBytes"]
    assert param["default"] == 1048576  # scim/core/service.py's default too
    max_value = next(d["argument"] for d in param["decorators"] if d["type"] == "max_value")
    assert max_value * factor <= HOST_DEFAULT_BODY_LIMIT, "the host limit must never exceed the host's own default"


# Storage resource logs of the table service (StorageTableLogs) record each request's URI, which
# holds the PartitionKey and RowKey; our RowKeys carry userNames, emails, externalIds and display
# names (docs/table-layout.md). "Azure Storage monitoring data reference": StorageRead,
# StorageWrite, StorageDelete; the category groups allLogs and audit include them.
STORAGE_REQUEST_LOG_CATEGORIES = {"StorageRead", "StorageWrite", "StorageDelete"}


def diagnostic_settings_of(scope_type: str) -> list[dict[str, Any]]:
    return [
        body(res)
        for name in parsed_files()
        for res in of_type(name, "Microsoft.Insights/diagnosticSettings").values()
        if resources(name)[body(res)["scope"]]["type"] == scope_type
    ]


def test_no_table_request_logs_reach_log_analytics() -> None:
    settings = diagnostic_settings_of("Microsoft.Storage/storageAccounts/tableServices")
    assert settings, "the table service keeps its metrics diagnostic setting"
    for setting in settings:
        logs = setting["properties"].get("logs", [])
        enabled = {log.get("category") or log.get("categoryGroup") for log in logs if log.get("enabled") is not False}
        assert not enabled & STORAGE_REQUEST_LOG_CATEGORIES, (
            f"table request logs {sorted(enabled & STORAGE_REQUEST_LOG_CATEGORIES)} would put RowKeys "
            "(userNames, emails, externalIds) in Log Analytics"
        )
        assert not any("categoryGroup" in log for log in logs), "allLogs/audit include the request logs"
        metrics = {m["category"] for m in setting["properties"]["metrics"] if m["enabled"] is True}
        assert metrics == {"Transaction"}  # counts, latency, status codes: no keys
    doc = (ROOT / "docs" / "deployment.md").read_text()
    assert "StorageTableLogs" in doc and "provisioning log" in doc, "docs/deployment.md explains the choice"


# "Manage data retention in a Log Analytics workspace": tables default to the workspace's
# retention, except these Application Insights tables, which keep 90 days unless set per table.
APPLICATION_INSIGHTS_TABLES = [
    "AppAvailabilityResults",
    "AppBrowserTimings",
    "AppDependencies",
    "AppExceptions",
    "AppEvents",
    "AppMetrics",
    "AppPageViews",
    "AppPerformanceCounters",
    "AppRequests",
    "AppSystemEvents",
    "AppTraces",
]


def test_log_analytics_keeps_logs_as_long_as_the_provisioning_log() -> None:
    main = bicep("main.bicep")
    params = main["modules"]["monitoring"]["config"]["params"]
    assert "retentionInDays" in params, "the workspace's retention must follow LOG_RETENTION_DAYS (logRetentionDays)"
    days = main["variables"][params["retentionInDays"]]["value"]["function"]
    # min(max(logRetentionDays, 30), 730): the workspace accepts 30 to 730 days.
    assert days["type"] == "min" and days["parameters"]["arg_2"] == 730, days
    inner = days["parameters"]["arg_1"]["function"]
    assert inner == {"type": "max", "parameters": {"arg_1": "logRetentionDays", "arg_2": 30}}, inner
    monitoring = bicep("monitoring.bicep")
    decorators = {
        d["type"]: d["argument"] for d in monitoring["parameters"]["retentionInDays"]["decorators"] if "argument" in d
    }
    assert (decorators["min_value"], decorators["max_value"]) == (30, 730)
    workspace = only("monitoring.bicep", "Microsoft.OperationalInsights/workspaces")
    assert workspace["properties"]["retentionInDays"] == "retentionInDays"
    assert "immediatePurgeDataOn30Days" in workspace["properties"]["features"]
    tables = of_type("monitoring.bicep", "Microsoft.OperationalInsights/workspaces/tables")
    assert len(tables) == 1, "one loop over the Application Insights tables"
    (table,) = tables.values()
    assert monitoring["variables"][loop_array(table)]["value"] == APPLICATION_INSIGHTS_TABLES
    props = body(table)["properties"]
    assert props == {"retentionInDays": "retentionInDays", "totalRetentionInDays": "retentionInDays"}, props


# "Tutorial: Develop and plan provisioning for a SCIM endpoint", IP Ranges: the Microsoft Entra
# provisioning service operates under the IP ranges of the AzureActiveDirectory service tag.
# Microsoft.Web/sites@2025-03-01 SiteConfig: ipSecurityRestrictions (IpSecurityRestriction:
# action, ipAddress, name, priority, tag 'Default' | 'ServiceTag' | 'XffProxy'),
# ipSecurityRestrictionsDefaultAction 'Allow' | 'Deny', scmIpSecurityRestrictionsUseMain,
# scmIpSecurityRestrictionsDefaultAction.
def test_the_endpoint_can_be_restricted_to_entra_and_operator_ranges() -> None:
    main = bicep("main.bicep")
    params = main["parameters"]
    assert "restrictToEntra" in params, "main.bicep needs a restrictToEntra parameter"
    assert (params["restrictToEntra"]["type"], params["restrictToEntra"]["default"]) == ("bool", False)
    assert (params["allowedIpRanges"]["type"], params["allowedIpRanges"]["default"]) == ("array", [])
    app_params = main["modules"]["app"]["config"]["params"]
    assert (app_params["restrictToEntra"], app_params["allowedIpRanges"]) == ("restrictToEntra", "allowedIpRanges")

    config = only("app.bicep", "Microsoft.Web/sites")["properties"]["siteConfig"]
    rules = config["ipSecurityRestrictions"]
    rules = app_variable(rules) if isinstance(rules, str) else rules
    choice = rules["operator"]
    assert choice["type"] == "conditional" and choice["operands"]["condition"] == "restrictToEntra"
    assert choice["operands"]["false_value"] == []
    combined = choice["operands"]["true_value"]["function"]
    assert combined["type"] == "concat"
    assert list(combined["parameters"]) == ["arg_1", "arg_2", "arg_3"], "Entra, the availability tests, operators"
    entra, operators = combined["parameters"]["arg_1"], app_variable(combined["parameters"]["arg_3"])
    assert [(r["action"], r["tag"], r["ipAddress"]) for r in entra] == [("Allow", "ServiceTag", "AzureActiveDirectory")]
    assert operators["loop_type"]["detail"]["array_name"] == "allowedIpRanges"
    operator_rule = operators["config"]
    assert (operator_rule["action"], operator_rule["tag"]) == ("Allow", "Default")
    assert operator_rule["ipAddress"] == operators["loop_type"]["detail"]["item_name"]

    default = config["ipSecurityRestrictionsDefaultAction"]["operator"]
    assert default["type"] == "conditional" and default["operands"]["condition"] == "restrictToEntra"
    assert (default["operands"]["true_value"], default["operands"]["false_value"]) == ("Deny", "Allow")
    # The SCM site is the deployment endpoint (azd deploy, func publish): its own rules, not the
    # main site's; it accepts Entra-authenticated deployments only (basic publishing is off).
    assert config["scmIpSecurityRestrictionsUseMain"] is False
    assert config["scmIpSecurityRestrictionsDefaultAction"] == "Allow"

    doc = (ROOT / "docs" / "deployment.md").read_text()
    for needle in ("restrictToEntra=true", "SCIM_RESTRICT_TO_ENTRA", "allowedIpRanges", "AzureActiveDirectory"):
        assert needle in doc, f"docs/deployment.md does not mention {needle}"


TABLE_DATA_ROLE_IDS = {
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor
    "76199698-9eea-4c19-bc75-cec21354c6b6",  # Storage Table Data Reader
}
TABLE_TYPE = "Microsoft.Storage/storageAccounts/tableServices/tables"


def tables_used_by_code(sources: dict[str, str] | None = None) -> set[str]:
    """Suffixes of the tables the code opens: ``f"{prefix}NAME"`` passed to ``get_table_client``,
    ``create_table`` or a ``_TableOwner`` subclass's ``super().__init__``."""
    if sources is None:
        paths = [
            ROOT / "function_app.py",
            *sorted((ROOT / "scim").rglob("*.py")),
            *sorted((ROOT / "devtools").rglob("*.py")),
        ]
        sources = {str(path.relative_to(ROOT)): path.read_text() for path in paths}
    found: set[str] = set()
    for where, text in sources.items():
        for node in ast.walk(ast.parse(text, filename=where)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            is_super_init = (
                called == "__init__"
                and isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Call)
                and isinstance(func.value.func, ast.Name)
                and func.value.func.id == "super"
            )
            if called not in {"get_table_client", "create_table"} and not is_super_init:
                continue
            for arg in node.args:
                if (
                    isinstance(arg, ast.JoinedStr)
                    and len(arg.values) == 2
                    and isinstance(arg.values[0], ast.FormattedValue)
                    and isinstance(arg.values[0].value, ast.Name)
                    and arg.values[0].value.id == "prefix"
                    and isinstance(arg.values[1], ast.Constant)
                ):
                    found.add(arg.values[1].value)
    return found


def test_the_table_scanner_sees_every_way_the_code_opens_a_table() -> None:
    snippet = """
class Store(_TableOwner):
    def __init__(self, service, prefix):
        super().__init__(service, f"{prefix}one", owns_client=True)

def other(service, prefix):
    service.get_table_client(f"{prefix}two")
    create_table(service, f"{prefix}three")
    subject = f"{prefix}SCIM digest"  # not a table
"""
    assert tables_used_by_code({"snippet.py": snippet}) == {"one", "two", "three"}


def test_bicep_declares_exactly_the_tables_the_app_uses() -> None:
    declared = bicep("main.bicep")["variables"]["tableNames"]["value"]
    assert all(name.startswith("${tablePrefix}") for name in declared), declared
    used = tables_used_by_code()
    # the scanner still finds them
    assert {"directory", "tenants", "log", "deliveries", "portal", "audit"} <= used, used
    assert {name.removeprefix("${tablePrefix}") for name in declared} == used


def test_table_roles_are_scoped_to_the_apps_tables_not_the_account() -> None:
    table_roles = [a for a in role_assignments() if a["role_id"] in TABLE_DATA_ROLE_IDS]
    assert {a["principal"] for a in table_roles} == {"appPrincipalId", "developerPrincipalId"}
    wide = [f"{a['resource']} on {a['scope_type']}" for a in table_roles if a["scope_type"] != TABLE_TYPE]
    assert not wide, f"table data roles must be scoped to each table, not: {wide}"
    rbac = bicep("rbac.bicep")
    for a in table_roles:
        # One assignment per table the storage module creates, from the same list.
        assert a["scope_loop"] == a["loop"] == "tableNames", a
    (scope_tables,) = [res for res in of_type("rbac.bicep", TABLE_TYPE).values()]
    assert (
        scope_tables["existing"]
        and body(scope_tables)["name"] == scope_tables["config"]["loop_type"]["detail"]["item_name"]
    )
    assert rbac["parameters"]["tableNames"]["type"] == "array"
    modules = bicep("main.bicep")["modules"]
    assert (
        modules["rbac"]["config"]["params"]["tableNames"]
        == modules["storage"]["config"]["params"]["tableNames"]
        == "tableNames"
    )


# ---- azd and packaging -----------------------------------------------------------------------


def test_main_parameters_map_the_azd_environment() -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert {k: v["value"] for k, v in params.items()} == {
        "environmentName": "${AZURE_ENV_NAME}",
        "location": "${AZURE_LOCATION}",
        "principalId": "${AZURE_PRINCIPAL_ID}",
        "principalType": "${AZURE_PRINCIPAL_TYPE=User}",
        # The recommended deployment restricts the endpoint to Entra (main.bicep's default is off);
        # `azd env set SCIM_RESTRICT_TO_ENTRA false` opens it.
        "restrictToEntra": "${SCIM_RESTRICT_TO_ENTRA=true}",
        # Portal sign-in's app registration (docs/portal-signin.md); unset: portal sign-in off.
        "portalClientId": "${PORTAL_CLIENT_ID}",
        # The operator the alerts email (README, "Operations"); unset: no action group.
        "alertEmail": "${ALERT_EMAIL}",
        # The availability test of /api/health, on unless `azd env set SCIM_AVAILABILITY_TEST false`.
        "availabilityTest": "${SCIM_AVAILABILITY_TEST=true}",
    }
    assert set(params) <= set(bicep("main.bicep")["parameters"])
    assert bicep("main.bicep")["globals"]["scope"]["value"] == "subscription"


def test_names_come_from_the_abbreviations() -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"abbrs\.([A-Za-z]+)", (INFRA / "main.bicep").read_text()))
    assert used == set(abbreviations), f"unused: {set(abbreviations) - used}, undefined: {used - set(abbreviations)}"


def test_azure_yaml_declares_the_function_service() -> None:
    text = (ROOT / "azure.yaml").read_text()
    lines = [line.split("#")[0].rstrip() for line in text.splitlines() if line.split("#")[0].strip()]
    assert re.search(r"^name: \S+", text, re.M)
    service = lines[lines.index("services:") + 1 :]
    assert service[0] == "  api:"
    assert {"    project: .", "    language: python", "    host: function"} <= set(service[1:4])


def test_funcignore_keeps_development_files_out_of_the_package() -> None:
    entries = {line.strip().rstrip("/") for line in (ROOT / ".funcignore").read_text().splitlines()}
    wanted = {
        "tests",
        ".venv",
        ".venv-infra",
        "node_modules",
        ".azurite",
        "infra",
        "docs",
        "bench",
        ".git*",
        "local.settings.json",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
    }
    assert wanted <= entries, sorted(wanted - entries)
    # Never the app itself.
    assert not entries & {"scim", "function_app.py", "host.json", "requirements.txt"}
    assert "test" not in entries  # the folder is tests/


# ---- deployability (issue #15) ---------------------------------------------------------------


def test_storage_api_version_is_the_one_azure_verified_modules_pin() -> None:
    # 2026-09-01 was newer than the Bicep type snapshot most tools bundle (BCP081); AVM's storage
    # module (avm/res/storage/storage-account) pins 2025-06-01.
    found = {
        (name, res["type"], res["api_version"])
        for name in parsed_files()
        for res in resources(name).values()
        if res["type"].startswith("Microsoft.Storage/")
    }
    assert found, "the storage types are found"
    wrong = sorted(item for item in found if item[2] != AVM_STORAGE_VERSION)
    assert not wrong, wrong
    # Every Microsoft.Storage version written in infra/, resources and child resources alike.
    text = "\n".join(path.read_text() for path in INFRA.glob("*.bicep"))
    written = set(re.findall(r"'Microsoft\.Storage/[A-Za-z/]+@([^']+)'", text))
    assert written == {AVM_STORAGE_VERSION}, written


# Triggers that need the host storage's queue endpoint (and a queue data role): queue triggers,
# blob triggers (their receipts and poison queue) and Durable Functions. The Flex Consumption
# quickstart (Azure-Samples/functions-quickstart-python-http-azd, infra/main.bicep) enables the
# queue endpoint "for Durable Functions and MCP trigger" only; timers need blob (checkpoints).
QUEUE_USING_TRIGGERS = {
    "queue_trigger",
    "blob_trigger",
    "orchestration_trigger",
    "activity_trigger",
    "entity_trigger",
    "durable_client_input",
}


def trigger_decorators(sources: dict[str, str] | None = None) -> set[str]:
    """Names of the ``@X.name(...)`` decorators of the app's functions (``route``, ``timer_trigger``...)."""
    if sources is None:
        paths = [ROOT / "function_app.py", *sorted((ROOT / "scim" / "functions").rglob("*.py"))]
        sources = {str(path.relative_to(ROOT)): path.read_text() for path in paths}
    found: set[str] = set()
    for where, text in sources.items():
        for node in ast.walk(ast.parse(text, filename=where)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for decorator in node.decorator_list:
                    if isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute):
                        found.add(decorator.func.attr)
    return found


def test_the_trigger_scanner_sees_decorated_functions() -> None:
    snippet = """
@bp.route(route="x")
def a(req): ...

@bp.timer_trigger(schedule="%S%", arg_name="t")
async def b(t): ...

@app.queue_trigger(arg_name="m", queue_name="q", connection="AzureWebJobsStorage")
def c(m): ...
"""
    assert trigger_decorators({"snippet.py": snippet}) == {"route", "timer_trigger", "queue_trigger"}


def test_no_queue_setting_without_a_queue_trigger() -> None:
    triggers = trigger_decorators()
    assert {"route", "timer_trigger"} <= triggers, triggers
    queue_settings = sorted(name for name in app_settings() if name.lower().endswith("__queueserviceuri"))
    queue_role = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"  # Storage Queue Data Contributor
    if triggers & QUEUE_USING_TRIGGERS:
        assert queue_settings, f"{sorted(triggers & QUEUE_USING_TRIGGERS)} need AzureWebJobsStorage__queueServiceUri"
        assert any(a["role_id"] == queue_role for a in role_assignments()), "and Storage Queue Data Contributor"
    else:
        assert not queue_settings, f"no queue trigger, yet {queue_settings} is set"
        assert "queueEndpoint" not in bicep("app.bicep")["parameters"]
        assert "queueEndpoint" not in bicep("storage.bicep").get("outputs", {})


def code_blocks(text: str) -> list[str]:
    """The logical lines (backslash continuations joined) of the fenced code blocks of a Markdown text."""
    lines: list[str] = []
    for block in re.findall(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", text, re.M | re.S):
        lines.extend(line.strip() for line in block.replace("\\\n", " ").splitlines())
    return lines


GUIDES = (README, DEPLOYMENT_DOC)


def test_the_guide_passes_az_its_parameters_inline() -> None:
    # main.parameters.json holds azd placeholders (${AZURE_LOCATION}...) that az passes on literally.
    for path in GUIDES:
        text = path.read_text()
        assert not re.search(r"--parameters\s+@?infra/main\.parameters\.json", text), path.name
        deployments = [line for line in code_blocks(text) if re.match(r"az deployment sub (what-if|create)", line)]
        assert deployments, f"{path.name} shows the az deployment"
        for line in deployments:
            assert "main.parameters.json" not in line and "--parameters" in line, (path.name, line)
        assert any("--template-file infra/main.bicep" in line for line in deployments), path.name
    readme = README.read_text()
    assert "FUNCTION_APP_NAME" in readme and "functionAppName output" not in readme
    assert "FUNCTION_APP_NAME" in bicep("main.bicep")["outputs"]


def test_func_publish_names_the_language() -> None:
    # Without --python, FUNCTIONS_WORKER_RUNTIME or a local.settings.json (git-ignored), Core Tools
    # stops with "Worker runtime cannot be 'None'" (Azure/azure-functions-core-tools#3822).
    publishes = [
        (path.name, line)
        for path in GUIDES
        for line in code_blocks(path.read_text())
        if "func azure functionapp publish" in line
    ]
    assert {name for name, _ in publishes} == {"README.md", "deployment.md"}, publishes
    assert all(re.search(r"func azure functionapp publish \S+ --python\b", line) for _, line in publishes), publishes


def test_the_guide_names_the_app_and_resource_group_in_both_ways() -> None:
    doc = DEPLOYMENT_DOC.read_text()
    check = doc[doc.index("## Check the deployment") : doc.index("## Create the first tenant")]
    assert "rg-scim-prod" not in check, "the resource group name depends on the environment"
    assert "azd env get-value FUNCTION_APP_NAME" in check and "azd env get-value AZURE_RESOURCE_GROUP" in check
    assert '--resource-group "$RG" --name "$APP"' in check
    assert (
        "properties.outputs.AZURE_RESOURCE_GROUP.value" in doc and "properties.outputs.FUNCTION_APP_NAME.value" in doc
    )
    assert "AZURE_RESOURCE_GROUP" in bicep("main.bicep")["outputs"]
    assert "--name rg-scim-prod" not in doc


def test_the_guide_registers_providers_and_waits() -> None:
    lines = [line for path in GUIDES for line in code_blocks(path.read_text()) if "az provider register" in line]
    assert lines and all("--wait" in line for line in lines), lines


def test_the_admin_cli_runs_with_the_venv_and_the_az_login_account() -> None:
    output = bicep("main.bicep")["outputs"]["CREATE_FIRST_TENANT_COMMAND"]["value"]
    assert " .venv/bin/python -m scim.admin " in output
    doc = DEPLOYMENT_DOC.read_text()
    first_tenant = doc[doc.index("## Create the first tenant") : doc.index("## Connect Microsoft Entra ID")]
    assert "az login" in first_tenant and "AZURE_PRINCIPAL_ID" in first_tenant and "403" in first_tenant
    grant = [line for line in code_blocks(first_tenant) if line.startswith("az role assignment create")]
    assert grant and all('"Storage Table Data Contributor"' in line and "$ME" in line for line in grant), grant
    assert "ME=$(az ad signed-in-user show" in first_tenant


def test_the_tear_down_note_says_purge_loses_the_workspace() -> None:
    # azd down --purge force-deletes Log Analytics workspaces before deleting the resource groups
    # (Azure/azure-dev, pkg/infra/provisioning/bicep: forceDeleteLogAnalyticsWorkspaces).
    doc = DEPLOYMENT_DOC.read_text()
    tear_down = doc[doc.index("## Tear down") : doc.index("## Troubleshooting")]
    assert "--purge" in tear_down and "force-deletes the Log Analytics" in tear_down
    assert not [line for line in code_blocks(tear_down) if line.startswith("azd down --purge")]


def test_the_guide_covers_an_app_that_does_not_start_and_the_python_plan() -> None:
    doc = DEPLOYMENT_DOC.read_text()
    section = doc[doc.index("### The app doesn't start") : doc.index("## Python version")]
    for needle in ("AppTraces", "30 seconds", "cold", "alwaysReady"):
        assert needle in section, needle
    python = doc[doc.index("## Python version") : doc.index("## Checks run by `make test`")]
    assert "October 2027" in python and "3.12" in python
    assert only("app.bicep", "Microsoft.Web/sites")["properties"]["functionAppConfig"]["runtime"]["version"] == "3.11"


def test_the_guide_documents_the_email_limits_and_a_custom_domain() -> None:
    # "Service limits for Azure Communication Services", Email, Azure Managed Domains: 5 a minute,
    # 10 an hour per subscription.
    for path in GUIDES:
        text = " ".join(path.read_text().split())
        assert "5 emails a minute and 10 an hour" in text, path.name
        assert "custom domain" in text, path.name


# ---- operations: alerts and the workbook (issue #15) ------------------------------------------

# What the app emits (OpenTelemetry through the Azure Monitor distro, AppMetrics.Name) and the
# attributes it gives them (AppMetrics.Properties).
METRICS = {
    "scim.requests",
    "scim.request.duration",
    "scim.request.storage_calls",
    "scim.storage.unavailable",
    "scim.log.dropped",
    "scim.webhook.deliveries",
    "scim.webhook.backlog_age",
    "scim.digest.emails",
}
ATTRIBUTES = {"scim.tenant", "scim.operation", "http.response.status_code", "scim.reason", "scim.outcome"}

ALERT_RULES = {
    "scim-tenant-failure-ratio",
    "scim-server-errors",
    "scim-storage-throttling",
    "scim-webhook-backlog",
    "scim-digest-failing",
}


def minutes(duration: str) -> int:
    """Minutes of an ISO 8601 duration of whole minutes (``PT5M``)."""
    match = re.fullmatch(r"PT(\d+)M", duration)
    assert match, duration
    return int(match.group(1))


def query_problems(query: str) -> list[str]:
    """What a KQL query reads that the app does not emit."""
    problems = []
    names = re.findall(r'\bName\s*==\s*"([^"]+)"', query)
    problems += [f"metric {name}" for name in names if name not in METRICS]
    keys = re.findall(r'Properties\["([^"]+)"\]', query)
    problems += [f"attribute {key}" for key in keys if key not in ATTRIBUTES]
    tokens = set(re.findall(r"\bscim\.[a-z_.]*[a-z_]", query))
    problems += [f"name {token}" for token in tokens - METRICS - ATTRIBUTES]
    tables = set(re.findall(r"\b(App[A-Z][A-Za-z]+)\b", query))
    problems += [f"table {table}" for table in tables - TABLES]
    if "AppMetrics" in tables and not names:
        problems.append("AppMetrics without a metric name")
    return problems


def test_the_query_checker_catches_unknown_telemetry() -> None:
    assert query_problems('AppMetrics | where Name == "scim.requests" | extend t = Properties["scim.tenant"]') == []
    assert query_problems('AppMetrics | where Name == "scim.request"') == ["metric scim.request", "name scim.request"]
    assert query_problems('AppMetrics | where Name == "scim.requests" | extend t = Properties["tenant"]') == [
        "attribute tenant"
    ]
    assert query_problems("AppMetric | take 1") == ["table AppMetric"]


def test_every_alert_rule_says_what_it_means_and_what_to_do() -> None:
    rules = alert_rules()
    assert {rule["name"] for rule in rules} == ALERT_RULES
    for rule in rules:
        description = bicep_text(rule["description"])
        assert len(description) >= 200, (rule["name"], "say what it means and what to do")
        assert re.search(r"\b(Check|Open|Look up|Read|Fix)\b", description), (rule["name"], "what to do")
        assert bicep_text(rule["displayName"]).startswith("SCIM: "), rule["name"]
        assert rule["severity"] in {0, 1, 2, 3, 4}, rule["name"]
        frequency, window = minutes(rule["evaluationFrequency"]), minutes(rule["windowSize"])
        assert 5 <= frequency <= window <= 60, rule["name"]
        assert not query_problems(rule["query_text"]), (rule["name"], query_problems(rule["query_text"]))
    (resource,) = of_type("alerts.bicep", "Microsoft.Insights/scheduledQueryRules").values()
    assert loop_array(resource) == "rules"
    props = body(resource)["properties"]
    for field in ("displayName", "description", "severity", "evaluationFrequency", "windowSize"):
        assert accessor(props[field]) == f"rule.{field}", field
    assert props["enabled"] is True and props["autoMitigate"] is True
    assert body(resource)["kind"] == "LogAlert" and props["scopes"] == ["logAnalyticsId"]
    (condition,) = props["criteria"]["allOf"]
    assert accessor(condition["query"]) == "rule.query" and accessor(condition["dimensions"]) == "rule.dimensions"
    assert (condition["timeAggregation"], condition["operator"], condition["threshold"]) == ("Count", "GreaterThan", 0)


def test_every_alert_rule_is_wired_to_the_action_group() -> None:
    (resource,) = of_type("alerts.bicep", "Microsoft.Insights/scheduledQueryRules").values()
    assert body(resource)["properties"]["actions"]["actionGroups"] == "actionGroupIds"
    ids = bicep("alerts.bicep")["variables"]["actionGroupIds"]["value"]["operator"]
    assert ids["type"] == "conditional"
    assert ids["operands"]["condition"] == {"function": {"type": "empty", "parameters": {"item_to_test": "alertEmail"}}}
    assert ids["operands"]["true_value"] == [] and [accessor(v) for v in ids["operands"]["false_value"]] == [
        "actionGroup.id"
    ]
    (group,) = of_type("alerts.bicep", "Microsoft.Insights/actionGroups").values()
    assert group["config"]["condition"]["operator"]["type"] == "not", "no action group without an address"
    receivers = body(group)["properties"]["emailReceivers"]
    assert [r["emailAddress"] for r in receivers] == ["alertEmail"]
    assert body(group)["location"] == "global" and len(body(group)["properties"]["groupShortName"]) <= 12
    main = bicep("main.bicep")
    assert main["parameters"]["alertEmail"]["default"] == ""
    params = main["modules"]["alerts"]["config"]["params"]
    assert params["alertEmail"] == "alertEmail"
    assert accessor(params["logAnalyticsId"]) == "monitoring.outputs.logAnalyticsId"
    assert (params["minRequests"], params["serverErrorBurst"]) == ("alertMinRequests", "alertServerErrorBurst")
    assert main["parameters"]["alertMinRequests"]["default"] == 20
    assert param_default("alerts.bicep", "alertEmail") == ""


def test_the_failure_ratio_alert_is_entras_quarantine_rule() -> None:
    # docs/ENTRA.md §6: Entra quarantines above 40 % failures; 4xx and 5xx fail an operation; 401s
    # are left out as in the digest (anyone can send one).
    (rule,) = [rule for rule in alert_rules() if rule["name"] == "scim-tenant-failure-ratio"]
    query = rule["query_text"]
    assert "where failurePercent > 40" in query and "where requests >= minRequests" in query
    assert "status != 401" in query and "status >= 400" in query
    assert rule["windowSize"] == "PT30M" and rule["dimensions"] == "byTenant"
    assert bicep("alerts.bicep")["variables"]["failureRatioQuery"]["value"]["function"]["parameters"]["arg_1"] == (
        "minRequests"
    )
    (backlog,) = [rule for rule in alert_rules() if rule["name"] == "scim-webhook-backlog"]
    assert "> 900" in backlog["query_text"] and backlog["dimensions"] == "byTenant"


# ---- the availability test of /api/health ------------------------------------------------------

# "Application Insights availability tests", Location population tags (Azure): the ids a test's
# Locations take in an ARM template or Bicep. The same article recommends at least five
# locations and an alert location threshold of the number of locations minus 2.
AVAILABILITY_LOCATIONS = {
    "emea-au-syd-edge",  # Australia East
    "latam-br-gru-edge",  # Brazil South
    "us-fl-mia-edge",  # Central US
    "apac-hk-hkn-azr",  # East Asia
    "us-va-ash-azr",  # East US
    "emea-ch-zrh-edge",  # France South (formerly France Central)
    "emea-fr-pra-edge",  # France Central
    "apac-jp-kaw-edge",  # Japan East
    "emea-gb-db3-azr",  # North Europe
    "us-il-ch1-azr",  # North Central US
    "us-tx-sn1-azr",  # South Central US
    "apac-sg-sin-azr",  # Southeast Asia
    "emea-se-sto-edge",  # UK West
    "emea-nl-ams-azr",  # West Europe
    "us-ca-sjc-azr",  # West US
    "emea-ru-msa-edge",  # UK South
}
HEALTH_ADAPTER = ROOT / "scim" / "functions" / "health_adapter.py"


def module_constant(path: Path, name: str) -> Any:
    """The literal value a module assigns to ``name`` at its top level."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} assigns no {name}")


def alerts_variable(name: str) -> Any:
    return bicep("alerts.bicep")["variables"][name]["value"]


def test_the_availability_test_calls_the_health_route_on_the_sites_host() -> None:
    (resource,) = of_type("alerts.bicep", "Microsoft.Insights/webtests").values()
    assert resource["config"]["condition"] == "availabilityTest"
    test = body(resource)
    props = test["properties"]
    assert test["kind"] == props["Kind"] == "standard"
    assert props["Enabled"] is True and props["RetryEnabled"] is True
    assert props["Frequency"] == 300, "every 5 minutes from each location"
    # The host answers the function's route as the whole path (host.json's route prefix is empty).
    route = module_constant(HEALTH_ADAPTER, "ROUTE")
    assert json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"] == ""
    request = props["Request"]
    assert request["RequestUrl"] == f"https://${{siteHostName}}/{route}" == "https://${siteHostName}/api/health"
    assert request["HttpVerb"] == "GET" and request["FollowRedirects"] is False
    # The app's healthy answer, and time for the app's own storage bound to answer first.
    rules = props["ValidationRules"]
    assert rules["ExpectedHttpStatusCode"] == 200 and not rules.get("IgnoreHttpStatusCode", False)
    assert rules["ContentValidation"]["ContentMatch"].encode() == module_constant(HEALTH_ADAPTER, "OK")
    assert rules["ContentValidation"]["PassIfTextFound"] is True
    assert props["Timeout"] > module_constant(HEALTH_ADAPTER, "TIMEOUT")
    # From documented locations, at least five of them, each once.
    locations = props["Locations"]
    assert locations["config"] == {"Id": locations["loop_type"]["detail"]["item_name"]}
    ids = alerts_variable(locations["loop_type"]["detail"]["array_name"])
    assert len(ids) == len(set(ids)) >= 5 and set(ids) <= AVAILABILITY_LOCATIONS, ids
    # Linked to the deployment's Application Insights component, on the Function App's own host.
    tags = test["tags"]["function"]
    assert tags["type"] == "union" and list(tags["parameters"].values()) == ["tags", "hiddenLink"]
    assert alerts_variable("hiddenLink") == {"'hidden-link:${applicationInsightsId}'": "Resource"}
    params = bicep("main.bicep")["modules"]["alerts"]["config"]["params"]
    assert accessor(params["applicationInsightsId"]) == "monitoring.outputs.applicationInsightsId"
    assert accessor(params["siteHostName"]) == "app.outputs.hostName"
    assert accessor(bicep("monitoring.bicep")["outputs"]["applicationInsightsId"]["value"]) == "applicationInsights.id"
    assert accessor(bicep("app.bicep")["outputs"]["hostName"]["value"]) == "site.properties.defaultHostName"


def test_the_availability_alert_is_wired_to_the_action_group() -> None:
    (resource,) = of_type("alerts.bicep", "Microsoft.Insights/metricAlerts").values()
    assert resource["config"]["condition"] == "availabilityTest", "deployed with the test, not without it"
    alert = body(resource)
    assert alert["location"] == "global"
    props = alert["properties"]
    assert props["enabled"] is True and props["autoMitigate"] is True and props["severity"] == 1
    assert [accessor(s) for s in props["scopes"]] == ["healthTest.id", "applicationInsightsId"]
    assert (props["evaluationFrequency"], props["windowSize"]) == ("PT1M", "PT5M")
    criteria = props["criteria"]
    assert criteria["'odata.type'"] == "Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria"
    assert accessor(criteria["webTestId"]) == "healthTest.id"
    assert criteria["componentId"] == "applicationInsightsId"
    # Locations failing at once: the number of locations minus 2, and never fewer than 2.
    failed = alerts_variable(criteria["failedLocationCount"])["operator"]
    count = len(alerts_variable("healthTestLocations"))
    assert failed["type"] == "substract" and failed["operands"] == {
        "operand_1": {"function": {"type": "length", "parameters": {"arg_1": "healthTestLocations"}}},
        "operand_2": 2,
    }
    assert 2 <= count - 2 < count
    # Emailed through the action group, which exists only with an address (as the log rules).
    actions = props["actions"]["operator"]
    assert actions["type"] == "conditional"
    assert actions["operands"]["condition"] == {
        "function": {"type": "empty", "parameters": {"item_to_test": "alertEmail"}}
    }
    assert actions["operands"]["true_value"] == []
    assert [accessor(a["actionGroupId"]) for a in actions["operands"]["false_value"]] == ["actionGroup.id"]
    # What it means and what to do.
    description = bicep_text(props["description"])
    assert len(description) >= 200 and "/api/health" in description
    assert re.search(r"\b(Check|Open|Look up|Read|Fix)\b", description) and "503" in description


def test_the_availability_test_is_a_parameter_on_by_default() -> None:
    main = bicep("main.bicep")
    param = main["parameters"]["availabilityTest"]
    assert (param["type"], param["default"]) == ("bool", True)
    assert main["modules"]["alerts"]["config"]["params"]["availabilityTest"] == "availabilityTest"
    assert main["modules"]["app"]["config"]["params"]["allowAvailabilityTests"] == "availabilityTest"
    assert param_default("alerts.bicep", "availabilityTest") is True
    app_param = bicep("app.bicep")["parameters"]["allowAvailabilityTests"]
    assert app_param["type"] == "bool" and app_param.get("default") is None, "app.bicep takes it from main.bicep"


# "Virtual network service tags": ApplicationInsightsAvailability, inbound, the addresses of the
# availability test agents ("Application Insights availability tests", Testing behind a firewall).
def test_restrict_to_entra_lets_the_availability_test_in() -> None:
    config = only("app.bicep", "Microsoft.Web/sites")["properties"]["siteConfig"]
    combined = app_variable(config["ipSecurityRestrictions"])["operator"]["operands"]["true_value"]["function"]
    assert combined["parameters"]["arg_2"] == "availabilityTestRules"
    choice = app_variable("availabilityTestRules")["operator"]
    assert choice["type"] == "conditional" and choice["operands"]["condition"] == "allowAvailabilityTests"
    assert choice["operands"]["false_value"] == [], "no opening without the test"
    (rule,) = choice["operands"]["true_value"]
    assert (rule["action"], rule["tag"], rule["ipAddress"]) == (
        "Allow",
        "ServiceTag",
        "ApplicationInsightsAvailability",
    )
    entra = combined["parameters"]["arg_1"]
    operator_priority = app_variable("operatorRules")["config"]["priority"]
    assert entra[0]["priority"] < rule["priority"] < operator_priority["operator"]["operands"]["operand_1"]
    # Say what the tag lets in, where it is set and where operators read it.
    text = (INFRA / "app.bicep").read_text()
    comment = text[text.index("// The availability test of /api/health") : text.index("var availabilityTestRules")]
    for needle in ("shared by every customer", "GET /api/health", "tenant's token", "portal"):
        assert needle in comment, needle
    doc = DEPLOYMENT_DOC.read_text()
    readme = README.read_text()
    health = readme[readme.index("**Health check.**") : readme.index("**Scale-out and crashes.**")]
    for text in (doc, health):
        assert "ApplicationInsightsAvailability" in text and "availabilityTest" in text


def test_the_readme_and_the_guide_list_the_availability_test() -> None:
    readme = README.read_text()
    operations = readme[readme.index("\n## Operations\n") : readme.index("\n## Provisioning log\n")]
    assert "| `scim-health-unavailable` |" in operations
    health = operations[operations.index("**Health check.**") : operations.index("**Scale-out and crashes.**")]
    assert "scim-health" in health and "infra/alerts.bicep" in health
    doc = DEPLOYMENT_DOC.read_text()
    deployed = doc[doc.index("## What gets deployed") : doc.index("Role assignments")]
    assert "scim-health-unavailable" in deployed and "scim-health" in deployed
    parameters = doc[doc.index("## Parameters") : doc.index("## Tear down")]
    assert "| `availabilityTest` | `true`" in parameters and "SCIM_AVAILABILITY_TEST" in parameters


def test_the_readme_explains_each_alert_and_the_workbook() -> None:
    readme = README.read_text()
    operations = readme[readme.index("\n## Operations\n") : readme.index("\n## Provisioning log\n")]
    for name in ALERT_RULES:
        assert f"| `{name}` |" in operations, name
    assert "workbook" in operations and "infra/workbook.json" in operations
    assert "### Reading a request's trace" in operations
    doc = DEPLOYMENT_DOC.read_text()
    assert "ALERT_EMAIL" in doc and "`alertEmail`" in doc


def workbook() -> dict[str, Any]:
    return json.loads((INFRA / "workbook.json").read_text())


def workbook_queries() -> dict[str, str]:
    found = {}
    for item in workbook()["items"]:
        if item["type"] == 3:
            found[item["name"]] = item["content"]["query"]
        elif item["type"] == 9:
            for param in item["content"]["parameters"]:
                if "query" in param:
                    found[f"parameter {param['name']}"] = param["query"]
    return found


def test_the_workbook_parses_and_shows_the_operations_panels() -> None:
    book = workbook()
    assert book["version"] == "Notebook/1.0"
    queries = workbook_queries()
    for panel in (
        "request-rate",
        "failure-ratio-table",
        "latency-percentiles",
        "storage-calls-per-request",
        "webhook-backlog",
    ):
        assert panel in queries, panel
    assert "percentile(DurationMs, 95)" in queries["latency-percentiles"]
    assert 'Name == "scim.request.storage_calls"' in queries["storage-calls-per-request"]
    assert 'Name == "scim.webhook.backlog_age"' in queries["webhook-backlog"]
    for item in book["items"]:
        if item["type"] == 3:
            content = item["content"]
            assert content["timeContextFromParameter"] == "TimeRange", item["name"]
            assert content["resourceType"] == "microsoft.operationalinsights/workspaces", item["name"]
    problems = {name: query_problems(query) for name, query in queries.items()}
    assert not any(problems.values()), problems
    emitted = {name for query in queries.values() for name in re.findall(r'\bName == "([^"]+)"', query)}
    assert emitted == METRICS, f"metrics the workbook does not show: {sorted(METRICS - emitted)}"


def test_the_workbook_resource_loads_the_json_and_is_deployed() -> None:
    (resource,) = of_type("workbook.bicep", "Microsoft.Insights/workbooks").values()
    wb = body(resource)
    assert wb["kind"] == "shared" and wb["name"]["function"]["type"] == "guid"
    props = wb["properties"]
    assert props["category"] == "workbook" and props["sourceId"] == "logAnalyticsId"
    data = props["serializedData"]["function"]
    assert data["type"] == "string"
    merged = data["parameters"]["value_to_convert"]["function"]
    assert merged["type"] == "union"
    loaded = merged["parameters"]["arg_1"]["function"]
    assert (loaded["type"], loaded["parameters"]["file_path"]) == ("load_json_content", "workbook.json")
    assert merged["parameters"]["arg_2"] == {"fallbackResourceIds": ["logAnalyticsId"]}
    module = bicep("main.bicep")["modules"]["workbook"]["config"]["params"]
    assert accessor(module["logAnalyticsId"]) == "monitoring.outputs.logAnalyticsId"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
