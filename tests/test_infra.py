"""The Bicep in ``infra/`` (issue #4), checked without a Bicep compiler or an Azure subscription.

- every ``.bicep`` file parses with pycep, the parser checkov uses (checkov silently skips a file
  it cannot parse, so a parse failure would hide every finding in it);
- ``checkov --framework bicep`` reports no failed check, and every suppression is in place
  (``// checkov:skip=CKV_...: reason`` inside the resource) with a written reason;
- the app settings the Bicep sets match the settings the code reads, both ways, and
  ``local.settings.sample.json`` lists what the code reads;
- the app's identity holds a role for every data plane it touches, at the resource's scope;
- every API version is one verified as current GA (table below);
- the security, scale, tagging and output requirements of the issue; the azd files.

pycep-parser and checkov pin packages that conflict with requirements-dev.txt, so they live in
``.venv-infra`` (``make venv-infra``, a dependency of ``make test``) and run as subprocesses.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
TOOLS = ROOT / ".venv-infra"
TOOLS_PYTHON = TOOLS / "bin" / "python"
CHECKOV = TOOLS / "bin" / "checkov"
# pycep caches its parser tables in TMPDIR; make venv-infra builds them there (about a minute).
TOOLS_TMP = TOOLS / "tmp"

# ---- verified facts --------------------------------------------------------------------------

# Newest non-preview version of each resource type in the Bicep type index (Azure/bicep-types-az,
# generated from the azure-rest-api-specs "stable" folders), with the properties used here
# checked in that version's type definitions.
API_VERSIONS = {
    "Microsoft.Resources/resourceGroups": "2025-04-01",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "2024-11-30",
    "Microsoft.Storage/storageAccounts": "2026-09-01",
    "Microsoft.Storage/storageAccounts/blobServices": "2026-09-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2026-09-01",
    "Microsoft.Storage/storageAccounts/tableServices": "2026-09-01",
    "Microsoft.Storage/storageAccounts/tableServices/tables": "2026-09-01",
    "Microsoft.Web/serverfarms": "2025-03-01",
    "Microsoft.Web/sites": "2025-03-01",
    "Microsoft.Web/sites/config": "2025-03-01",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": "2025-03-01",
    "Microsoft.OperationalInsights/workspaces": "2026-03-01",
    "Microsoft.Insights/components": "2020-02-02",
    "Microsoft.Insights/diagnosticSettings": "2016-09-01",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
    "Microsoft.Communication/emailServices": "2026-03-18",
    "Microsoft.Communication/emailServices/domains": "2026-03-18",
    "Microsoft.Communication/communicationServices": "2026-03-18",
}
# Preview versions allowed, each with the reason.
PREVIEW_ALLOWED: dict[str, str] = {}  # none: diagnostic settings name their log categories instead of a categoryGroup

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
    "SCIM_TABLE_ENDPOINT": ("storageTableDataContributor", "Microsoft.Storage/storageAccounts"),
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
    "ACS_EMAIL_ENDPOINT",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_STARTTLS",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "LOG_RETENTION_DAYS",
}
# Read by the code, set locally (local.settings.sample.json), never in Azure.
LOCAL_ONLY = {
    "SCIM_TABLE_CONNECTION_STRING": "a connection string carries an account key; Azure uses SCIM_TABLE_ENDPOINT",
    "SMTP_HOST": "an SMTP server is the local alternative to ACS Email",
    "SMTP_PORT": "SMTP, see SMTP_HOST",
    "SMTP_STARTTLS": "SMTP, see SMTP_HOST",
    "SMTP_USERNAME": "SMTP, see SMTP_HOST",
    "SMTP_PASSWORD": "SMTP, see SMTP_HOST; a secret Azure does not need",
}
# Read by local tools (make run, the admin CLI) from their process environment: not app settings.
PROCESS_ONLY = {
    "PORT": "port of the local host; Azure serves on the app's own host name",
    "SCIM_DEV_TENANT": "the tenant `make run` ensures exists",
    "SCIM_DEV_TOKEN": "the token of that tenant",
    "SCIM_DEV_NOTIFY": "where `make run` sends the dev tenant's failure digests (its local SMTP sink)",
}
# Set by the Bicep for the Functions host or the Azure SDK, never read by the code itself.
HOST_SETTINGS = {
    "AzureWebJobsStorage__credential": "Functions host: identity-based host storage",
    "AzureWebJobsStorage__clientId": "Functions host: which user-assigned identity",
    "AzureWebJobsStorage__blobServiceUri": "Functions host: keys, leases, timer state",
    "AzureWebJobsStorage__queueServiceUri": "Functions host: queue endpoint of host storage",
    "AzureWebJobsStorage__tableServiceUri": "Functions host: table endpoint of host storage",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "Functions host: where telemetry goes",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Functions host: Entra-authenticated telemetry",
    "AZURE_CLIENT_ID": "azure-identity's DefaultAzureCredential: picks the user-assigned identity",
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


def _tool_env() -> dict[str, str]:
    TOOLS_TMP.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(TOOLS_TMP), "PYTHONDONTWRITEBYTECODE": "1"}


def _require_tools() -> None:
    if not (TOOLS_PYTHON.exists() and CHECKOV.exists()):
        pytest.fail(f"{TOOLS} is missing: run `make venv-infra` (make test does)", pytrace=False)


_PARSE_SCRIPT = """
import json, sys
from pathlib import Path
import pycep
parser = pycep.BicepParser()
out = {}
for name in sys.argv[1:]:
    try:
        out[Path(name).name] = {"json": parser.parse(file_path=Path(name))}
    except Exception as exc:
        out[Path(name).name] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out, default=str))
"""


@cache
def parsed_files() -> dict[str, dict[str, Any]]:
    """``{file name: {"json": pycep's JSON} | {"error": message}}`` for every infra/*.bicep."""
    _require_tools()
    files = sorted(str(p) for p in INFRA.glob("*.bicep"))
    done = subprocess.run(
        [str(TOOLS_PYTHON), "-c", _PARSE_SCRIPT, *files],
        capture_output=True, text=True, env=_tool_env(), timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def bicep(name: str) -> dict[str, Any]:
    entry = parsed_files()[name]
    assert "json" in entry, f"{name}: {entry['error']}"
    return entry["json"]


@cache
def checkov_report() -> dict[str, Any]:
    _require_tools()
    done = subprocess.run(
        [str(CHECKOV), "--framework", "bicep", "--skip-download", "--output", "json", "-d", str(INFRA)],
        capture_output=True, text=True, env=_tool_env(), cwd=ROOT, timeout=600, check=False,
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
    return None


def param_default(name: str, param: str) -> Any:
    return bicep(name)["parameters"][param]["default"]


def app_settings() -> dict[str, Any]:
    config = only("app.bicep", "Microsoft.Web/sites/config")
    assert config["name"] == "appsettings"
    return {key.strip("'"): value for key, value in config["properties"].items()}


def settings_read_by_code(sources: dict[str, str] | None = None) -> dict[str, set[str]]:
    """Setting names the code reads, each with the files that read it.

    ``sources`` maps file names to their text; default: function_app.py and scim/**.py.

    Reads are ``X.get("NAME")``/``X.pop("NAME")``/``X["NAME"]``/``"NAME" in X`` where X is an
    environment-like name (``env``, ``environ``, ``os.environ``, ``*_env``), ``os.getenv("NAME")``,
    and ``%NAME%`` binding expressions in call arguments (``schedule="%NOTIFY_SCHEDULE%"``).
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
        paths = [ROOT / "function_app.py", *sorted((ROOT / "scim").rglob("*.py"))]
        sources = {str(path.relative_to(ROOT)): path.read_text() for path in paths}
    for where, text in sources.items():
        for node in ast.walk(ast.parse(text, filename=where)):
            names: list[str] = []
            if isinstance(node, ast.Call):
                func = node.func
                first = literal(node.args[0]) if node.args else None
                if isinstance(func, ast.Attribute) and first:
                    if func.attr == "getenv" or (func.attr in {"get", "pop"} and env_like(func.value)):
                        names.append(first)
                for arg in [*node.args, *(kw.value for kw in node.keywords)]:
                    names.extend(binding.findall(literal(arg) or ""))
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and env_like(node.value):
                names.extend(filter(None, [literal(node.slice)]))
            elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.In):
                if env_like(node.comparators[0]) and literal(node.left):
                    names.append(literal(node.left))  # type: ignore[arg-type]
            for name in names:
                found.setdefault(name, set()).add(where)
    return found


def sample_settings() -> set[str]:
    return set(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"])


# ---- parsing and checkov ---------------------------------------------------------------------


def test_every_bicep_file_parses() -> None:
    files = parsed_files()
    assert {"main.bicep", "app.bicep", "storage.bicep", "monitoring.bicep", "email.bicep", "rbac.bicep"} <= set(files)
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
    env.setdefault("NOT_READ", "1")
    os.environ["NOT_READ_EITHER"] = "1"
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S")
    quoted = quote("%C3%A9")
    return a, b, c, d, e, f, g

@bp.timer_trigger(schedule="%H_EIGHT%", arg_name="t")
def timer(t):
    pass
"""
    assert set(settings_read_by_code({"snippet.py": snippet})) == {
        "A_ONE", "B_TWO", "C_THREE", "D_FOUR", "E_FIVE", "F_SIX", "G_SEVEN", "H_EIGHT",
    }


def test_the_code_reads_every_contract_setting() -> None:
    read = set(settings_read_by_code()) | {"AZURE_CLIENT_ID"}  # read by DefaultAzureCredential
    assert not CONTRACT - read, f"contract settings the code does not read (yet): {sorted(CONTRACT - read)}"


def test_the_bicep_sets_every_setting_the_code_reads() -> None:
    read = settings_read_by_code()
    wanted = set(read) - set(LOCAL_ONLY) - set(PROCESS_ONLY)
    missing = {name: sorted(read[name]) for name in wanted - set(app_settings())}
    assert not missing, f"read by the code, not set in Azure: {missing}"
    assert not (set(LOCAL_ONLY) | set(PROCESS_ONLY)) & set(app_settings())


def test_the_code_reads_every_setting_the_bicep_sets() -> None:
    unread = set(app_settings()) - set(settings_read_by_code()) - set(HOST_SETTINGS)
    assert not unread, f"set in Azure, read by nothing: {sorted(unread)}"
    assert not FORBIDDEN_IN_AZURE & set(app_settings())


def test_the_sample_lists_every_setting_the_code_reads() -> None:
    read = settings_read_by_code()
    missing = {name: sorted(read[name]) for name in set(read) - set(PROCESS_ONLY) - sample_settings()}
    assert not missing, f"read by the code, missing from local.settings.sample.json: {missing}"
    unread = sample_settings() - set(read) - set(LOCAL_HOST_SETTINGS)
    assert not unread, f"in local.settings.sample.json, read by nothing: {sorted(unread)}"


def test_the_settings_carry_identity_based_values() -> None:
    settings = app_settings()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    for name in ("AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID"):
        assert accessor(settings[name]) == "identity.properties.clientId", name
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identity.properties.clientId};Authorization=AAD"
    assert accessor(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == "applicationInsights.properties.ConnectionString"
    assert settings["AzureWebJobsStorage__blobServiceUri"] == "blobEndpoint"
    assert settings["AzureWebJobsStorage__queueServiceUri"] == "queueEndpoint"
    assert settings["AzureWebJobsStorage__tableServiceUri"] == "tableEndpoint"
    assert settings["SCIM_TABLE_ENDPOINT"] == "tableEndpoint"
    assert settings["SCIM_PUBLIC_BASE_URL"] == "https://${site.properties.defaultHostName}"
    assert settings["ACS_EMAIL_ENDPOINT"] == "emailEndpoint"
    assert settings["NOTIFY_FROM"] == "emailSender"
    email = bicep("email.bicep")["outputs"]
    assert email["endpoint"]["value"] == "https://${communicationService.properties.hostName}"
    assert email["senderAddress"]["value"] == "DoNotReply@${azureManagedDomain.properties.mailFromSenderDomain}"
    main = bicep("main.bicep")["parameters"]
    assert main["notifySchedule"]["default"] == "0 */10 * * * *"
    assert main["logRetentionDays"]["default"] == 30
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
        assert [accessor(v) for v in name["parameters"].values()] == [
            f"{conf['scope']}.id", props["principalId"], role,
        ], f"{key}: name must be guid(scope.id, principal, role)"
        found.append({
            "resource": key,
            "role": role_key,
            "role_id": role_keys[role_key],
            "principal": props["principalId"],
            "principal_type": props["principalType"],
            "scope_type": rbac[conf["scope"]]["type"],
            "conditional": "condition" in res["config"],
        })
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
    assert all(a["principal_type"] == "ServicePrincipal" for a in role_assignments() if a["principal"] == "appPrincipalId")
    # Nothing beyond what the data planes need.
    assert app_roles == set(DATA_PLANES.values())


def test_the_deploying_developer_gets_table_data_only_when_given() -> None:
    dev = [a for a in role_assignments() if a["principal"] == "developerPrincipalId"]
    assert [(a["role"], a["scope_type"], a["principal_type"], a["conditional"]) for a in dev] == [
        ("storageTableDataContributor", "Microsoft.Storage/storageAccounts", "developerPrincipalType", True)
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
    assert only("storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")["properties"]["publicAccess"] == "None"


def test_the_tables_are_created_up_front() -> None:
    names = bicep("main.bicep")["variables"]["tableNames"]["value"]
    assert names == ["${tablePrefix}directory", "${tablePrefix}tenants", "${tablePrefix}log"]
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
    defaults = {p: param_default("main.bicep", p) for p in ("httpPerInstanceConcurrency", "maximumInstanceCount", "alwaysReady")}
    assert defaults == {"httpPerInstanceConcurrency": 16, "maximumInstanceCount": 40, "alwaysReady": False}
    policies = of_type("app.bicep", "Microsoft.Web/sites/basicPublishingCredentialsPolicies").values()
    assert sorted((body(p)["name"], body(p)["properties"]["allow"]) for p in policies) == [("ftp", False), ("scm", False)]


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


# Child and extension resources take no tags.
UNTAGGED = {
    "Microsoft.Authorization/roleAssignments",
    "Microsoft.Insights/diagnosticSettings",
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
        "SCIM_TABLE_PREFIX=${tablePrefix} python -m scim.admin tenant create <name>"
    )
    secretish = re.compile(r"key|secret|password|token|connectionstring", re.I)
    for name in parsed_files():
        for out_name, out in bicep(name).get("outputs", {}).items():
            assert not secretish.search(out_name), f"{name}: output {out_name}"
            assert not secretish.search(json.dumps(out["value"]).replace("tableEndpoint", "")), f"{name}: {out_name}"


# ---- azd and packaging -----------------------------------------------------------------------


def test_main_parameters_map_the_azd_environment() -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert {k: v["value"] for k, v in params.items()} == {
        "environmentName": "${AZURE_ENV_NAME}",
        "location": "${AZURE_LOCATION}",
        "principalId": "${AZURE_PRINCIPAL_ID}",
        "principalType": "${AZURE_PRINCIPAL_TYPE=User}",
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
        "tests", ".venv", ".venv-infra", "node_modules", ".azurite", "infra", "docs", "bench",
        ".git*", "local.settings.json", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
    }
    assert wanted <= entries, sorted(wanted - entries)
    # Never the app itself.
    assert not entries & {"scim", "function_app.py", "host.json", "requirements.txt"}
    assert "test" not in entries  # the folder is tests/


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
