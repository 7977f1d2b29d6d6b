"""Every KQL query of the repository, parsed and semantically analysed by Microsoft's Kusto language
service against the documented schemas of the tables it reads.

No Azure here: a log search alert whose query does not compile fails its deployment (ARM validates
the query), and a broken workbook query leaves its tile showing an error. ``tests/test_infra.py``
checks what the queries read (metric names, attributes, tables) with regexes; this module checks
that they are valid KQL: syntax, names (tables, columns, functions, variables), types and
arguments, as the Log Analytics query editor would.

- The analyser: Kusto.Language, the engine behind Kusto Explorer, Azure Data Explorer's and Log
  Analytics' editors (npm ``@kusto/language-service-next``, a devDependency, pinned), run with
  Node.js by ``tests/kql/check_kql.js``; any Error-severity diagnostic fails.
- The schemas: ``tests/kql/log_analytics_tables.json``, every documented column (name and type) of
  the workspace tables (``AppMetrics``, ``AppRequests``, ...: "Azure Monitor Logs reference") and
  of the classic Application Insights tables (``requests``, ``traces``, ...: the classic-to-
  workspace migration guide's schema mapping), with their sources.
- The queries, as Azure runs them:
  - the log search alerts of ``infra/alerts.bicep`` (``alert_rules()`` of tests/infra_bicep.py,
    pycep's parse): a ``format()``'s ``{0}`` placeholders get the deployed values, the
    parameters' defaults and Azure's public cloud ``environment().suffixes.storage``;
  - every query of ``infra/workbook.json`` (found by walking the JSON, parameter queries
    included), in the workspace's context (``queryType`` 0 on ``microsoft.operationalinsights/
    workspaces``), with the workbook's placeholders expanded as the workbook engine does:
    ``{TimeRange:grain}`` to a timespan (the Workbooks documentation's example for a 24-hour
    range, the default here, is 30m), a drop-down's ``{Tenant}`` to the selected value (a tenant
    name, inside the query's string literal); an unknown placeholder fails;
  - the README's "Reading a request's trace" query, which runs in the Application Insights
    resource's *Logs* on the classic tables, against their schemas, and only those.
- The checker can fail: canary queries with an unknown column, a syntax error, a wrong argument
  type, and a classic table in the workspace, each reported; and no query is skipped: the count
  is the alert rules plus every ``"query"`` of the workbook's JSON plus the README's.

Needs Node.js (``make node_modules``), hence the ``azurite`` marker, and ``.venv-infra`` for
pycep, as tests/test_infra.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from typing import Any

import pytest

from devtools.azurite import AzuriteError, node_executable
from tests.infra_bicep import INFRA, README, ROOT, TABLES, alert_rules, bicep, param_default

pytestmark = pytest.mark.azurite(reason="runs Kusto.Language on Node.js (tests/kql/check_kql.js)")

KQL_DIR = ROOT / "tests" / "kql"
CHECKER = KQL_DIR / "check_kql.js"
SCHEMAS = KQL_DIR / "log_analytics_tables.json"
WORKBOOK = INFRA / "workbook.json"
PACKAGE_DIR = ROOT / "node_modules" / "@kusto" / "language-service-next"

KUSTO_TYPES = {"string", "int", "long", "real", "bool", "datetime", "dynamic", "guid", "timespan", "decimal"}

# environment().suffixes.storage in Azure's public cloud (AzureCloud), where the app is deployed.
STORAGE_SUFFIX = "core.windows.net"

# The workbook placeholders the queries use, expanded as the workbook engine does ("Workbook time
# parameters": {TimeRange:grain} is the range's time grain, 30m in the documentation's example of
# a 24-hour range, the workbook's default; a drop-down parameter expands to its selected value,
# here a tenant name as scim.tenants allows them, inside the query's "..." literal).
WORKBOOK_EXPANSIONS = {
    ("TimeRange", "grain"): "30m",
    ("Tenant", None): "contoso-hr",
}

README_QUERY_NAME = "README: reading a request's trace"

# Queries that must fail, so the check cannot pass vacuously: (name, query, workspace or classic
# tables, text the error must contain).
CANARIES = [
    ("canary: unknown column", 'AppMetrics | where Nmae == "scim.requests"', "workspace", "'Nmae'"),
    ("canary: syntax error", "AppMetrics | where Name == | summarize count()", "workspace", "Missing expression"),
    ("canary: wrong argument type", "AppRequests | extend ms = round(ResultCode, 1)", "workspace", "must be a number"),
    ("canary: classic table in the workspace", "requests | take 1", "workspace", "'requests'"),
    ("canary: workspace table in classic Logs", "AppRequests | take 1", "classic", "'AppRequests'"),
]


# ---- schemas ----------------------------------------------------------------------------------


@cache
def schemas() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMAS.read_text())
    return data


def kusto_schema(columns: dict[str, str]) -> str:
    """``(Name:type, ...)``, the form TableSymbol.From reads; names bracketed, so none is read as a keyword."""
    return "(" + ", ".join(f"['{name}']:{kind}" for name, kind in columns.items()) + ")"


def database(group: str) -> dict[str, str]:
    return {name: kusto_schema(table["columns"]) for name, table in schemas()[group].items()}


# ---- the queries ------------------------------------------------------------------------------


def bicep_format(template: str, args: list[str]) -> str:
    """Bicep's ``format()``: .NET composite formatting (``{0}``; ``{{`` and ``}}`` are braces)."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        index = int(match.group(1))
        assert index < len(args), f"format() has no argument {index}: {template!r}"
        return args[index]

    return re.sub(r"\{\{|\}\}|\{(\d+)\}", replace, template)


def bicep_argument(value: Any) -> str:
    """The deployed value of a ``format()`` argument of alerts.bicep."""
    if isinstance(value, str):  # a parameter: its default
        default = param_default("alerts.bicep", value)
        assert isinstance(default, int | str) and not isinstance(default, bool), (value, default)
        return str(default)
    operator = value.get("operator", {}) if isinstance(value, dict) else {}
    if operator.get("type") == "property_accessor":
        operands = operator["operands"]
        inner = operands["operand_1"].get("function", {})
        path = (inner.get("type"), inner.get("property_name"), operands["operand_2"])
        if path == ("environment", "suffixes", "storage"):
            return STORAGE_SUFFIX
    raise AssertionError(f"no deployed value known for the format() argument {value!r}: add it here")


def alert_queries() -> dict[str, str]:
    """Each alert rule's query as deployed."""
    variables = bicep("alerts.bicep")["variables"]
    queries = {}
    for rule in alert_rules():
        value = variables[rule["query"]]["value"]
        if isinstance(value, dict):
            function = value["function"]
            assert function["type"] == "format", (rule["name"], function["type"])
            params = function["parameters"]
            args = [bicep_argument(params[f"arg_{i}"]) for i in range(1, len(params))]
            text = bicep_format(params["format_string"], args)
        else:
            text = value
        queries[f"alert {rule['name']}"] = text
    return queries


def workbook_query_items(node: Any, name: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every object of the workbook's JSON holding a ``query``, with the name of the item or
    parameter it belongs to (a query item's query is in its ``content``)."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        name = node.get("name", name)
        if "query" in node:
            found.append((name, node))
        for value in node.values():
            found += workbook_query_items(value, name)
    elif isinstance(node, list):
        for value in node:
            found += workbook_query_items(value, name)
    return found


def expand_workbook_placeholders(query: str) -> str:
    def replace(match: re.Match[str]) -> str:
        key = (match.group(1), match.group(2))
        assert key in WORKBOOK_EXPANSIONS, (
            f"no expansion known for the workbook placeholder {match.group(0)}: add it to WORKBOOK_EXPANSIONS"
        )
        return WORKBOOK_EXPANSIONS[key]

    return re.sub(r"\{(\w+)(?::(\w+))?\}", replace, query)


def workbook_queries() -> dict[str, str]:
    book = json.loads(WORKBOOK.read_text())
    parameters = {
        param["name"] for item in book["items"] if item["type"] == 9 for param in item["content"]["parameters"]
    }
    assert {name for name, _ in WORKBOOK_EXPANSIONS} <= parameters, parameters
    queries = {}
    for name, holder in workbook_query_items(book["items"]):
        assert isinstance(holder["query"], str), name
        # Logs (KQL) on the workspace; another query type (Resource Graph, merge, ...) would need
        # other schemas.
        assert (holder.get("queryType"), holder.get("resourceType")) == (
            0,
            "microsoft.operationalinsights/workspaces",
        ), name
        key = f"workbook {name}"
        assert key not in queries, f"two workbook queries named {name}"
        queries[key] = expand_workbook_placeholders(holder["query"])
    return queries


def readme_query() -> str:
    readme = README.read_text()
    section = readme[readme.index("### Reading a request's trace") :]
    match = re.search(r"```kusto\n(.*?)```", section, re.S)
    assert match, "the README's trace query (a ```kusto block)"
    return match.group(1)


# ---- the check --------------------------------------------------------------------------------


def node() -> str:
    if not (PACKAGE_DIR / "package.json").exists():
        pytest.fail(f"{PACKAGE_DIR} is missing: run `make node_modules`", pytrace=False)
    try:
        return str(node_executable())
    except AzuriteError as exc:
        pytest.fail(str(exc), pytrace=False)


def run_checker(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{query name: {"errors": [...], "columns": {name: type}}}`` from one run of the checker."""
    done = subprocess.run(
        [node(), str(CHECKER)],
        input=json.dumps(checks),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return result


@cache
def analysis() -> dict[str, list[str]]:
    """The errors of every query and canary."""
    return {name: found["errors"] for name, found in checked().items()}


@cache
def checked() -> dict[str, dict[str, Any]]:
    """The errors and result columns of every query and canary, from one run of the checker."""
    workspace = {**alert_queries(), **workbook_queries()}
    classic = {README_QUERY_NAME: readme_query()}
    for name, query, group, _ in CANARIES:
        (workspace if group == "workspace" else classic)[name] = query
    return run_checker(
        [
            {"tables": database("workspace_tables"), "queries": workspace},
            {"tables": database("classic_tables"), "queries": classic},
        ]
    )


# ---- tests ------------------------------------------------------------------------------------


def test_the_schemas_cover_every_table_read_with_documented_types() -> None:
    data = schemas()
    assert set(data["workspace_tables"]) >= TABLES
    assert set(data["classic_tables"]) == {"requests", "dependencies", "traces", "exceptions"}
    for group in ("workspace_tables", "classic_tables"):
        for name, table in data[group].items():
            assert table["source"].startswith("https://learn.microsoft.com/azure/azure-monitor/"), name
            assert set(table["columns"].values()) <= KUSTO_TYPES, name
            assert len(table["columns"]) >= 30, (name, "every documented column")
    for name in data["workspace_tables"]:
        assert data["workspace_tables"][name]["columns"]["TimeGenerated"] == "datetime", name
    for name in data["classic_tables"]:
        assert data["classic_tables"][name]["columns"]["timestamp"] == "datetime", name


def test_placeholders_are_expanded_as_deployed() -> None:
    assert bicep_format("let n = {0};\nT | where x > {{1}}", ["20"]) == "let n = 20;\nT | where x > {1}"
    queries = alert_queries()
    assert "let minRequests = 20;" in queries["alert scim-tenant-failure-ratio"]
    assert "let burst = 5;" in queries["alert scim-server-errors"]
    assert 'let storageSuffix = "core.windows.net";' in queries["alert scim-storage-throttling"]
    assert expand_workbook_placeholders('bin(TimeGenerated, {TimeRange:grain}) | where "{Tenant}" == "*"') == (
        'bin(TimeGenerated, 30m) | where "contoso-hr" == "*"'
    )
    with pytest.raises(AssertionError, match="no expansion known"):
        expand_workbook_placeholders("T | where TimeGenerated {TimeRange:start}")
    for name, query in {**queries, **workbook_queries()}.items():
        assert not re.search(r"\{\w+(:\w+)?\}", query), (name, "a placeholder left")


def test_no_query_is_skipped() -> None:
    raw_workbook = WORKBOOK.read_text()
    expected = len(alert_rules()) + len(re.findall(r'"query"\s*:', raw_workbook)) + 1
    found = [name for name in analysis() if not name.startswith("canary: ")]
    assert len(found) == expected, sorted(found)
    assert len(alert_queries()) == len(alert_rules()) == 5
    assert len(workbook_queries()) >= 12


def test_the_checker_reports_each_kind_of_error() -> None:
    result = analysis()
    for name, _, _, expected in CANARIES:
        errors = result[name]
        assert errors and all(error.startswith("Error: ") for error in errors), (name, errors)
        assert any(expected in error for error in errors), (name, errors)


def test_every_kql_query_compiles_against_the_documented_schemas() -> None:
    result = analysis()
    problems = {name: errors for name, errors in result.items() if errors and not name.startswith("canary: ")}
    assert not problems, "KQL errors (Kusto.Language):\n" + "\n".join(
        f"- {name}:\n    " + "\n    ".join(errors) for name, errors in sorted(problems.items())
    )


def test_every_dimension_of_an_alert_rule_is_a_column_of_its_result() -> None:
    # A log search alert splits by its dimensions: columns of the query's result ("Split by
    # dimensions" of the rule's condition); a name the result does not have fails the rule.
    variables = bicep("alerts.bicep")["variables"]
    result = checked()
    split = 0
    for rule in alert_rules():
        dimensions = rule["dimensions"]
        if isinstance(dimensions, str):  # a variable, e.g. byTenant
            dimensions = variables[dimensions]["value"]
        columns = result[f"alert {rule['name']}"]["columns"]
        assert columns, (rule["name"], "the query's result is a table")
        for dimension in dimensions:
            assert columns.get(dimension["name"]) == "string", (rule["name"], dimension["name"], columns)
            split += 1
    assert split == 2, "the failure-ratio and backlog rules split by tenant"


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(pytest.main([__file__, "-q"]))
