"""The direction of imports (README "Development"): Functions adapters -> SCIM service -> protocol
core with no I/O; the service reaches storage only through the store contracts.

Every ``import`` statement counts, including those inside functions (imported late for cold
start), so a layer cannot be crossed by hiding the import in a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CORE = sorted(p.stem for p in (ROOT / "scim" / "core").glob("*.py") if p.stem != "__init__")
"""The SCIM protocol: pure, no I/O but through the store contracts."""
ADAPTERS = {"scim.functions", "function_app"}
DEV_TOOLS = {"devtools"}
STORE_IMPLEMENTATIONS = {
    "scim.store.app_keys_memory",
    "scim.store.app_keys_tables",
    "scim.store.audit_memory",
    "scim.store.audit_tables",
    "scim.store.azure_client",
    "scim.store.delivery_state_memory",
    "scim.store.delivery_state_tables",
    "scim.store.azure_errors",
    "scim.store.directory_commits",
    "scim.store.directory_events",
    "scim.store.directory_members",
    "scim.store.directory_reads",
    "scim.store.entities",
    "scim.store.event_policy",
    "scim.store.memory",
    "scim.store.operations",
    "scim.store.portal_links_memory",
    "scim.store.portal_links_tables",
    "scim.store.portal_secrets_memory",
    "scim.store.portal_secrets_tables",
    "scim.store.roundtrips",
    "scim.store.tables",
    "scim.store.tenant_registry",
    "scim.store.transactions",
    "scim.store.webhooks_memory",
    "scim.store.webhooks_tables",
}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _crossing(module: str, forbidden_prefixes: set[str]) -> list[str]:
    path = ROOT / (module.replace(".", "/") + ".py")
    return sorted(i for i in imports_of(path) if any(i == p or i.startswith(p + ".") for p in forbidden_prefixes))


@pytest.mark.parametrize("name", CORE)
def test_the_protocol_core_does_no_io_of_its_own(name: str) -> None:
    """No Azure SDK, no storage implementation, no adapter or dev tool in the core; no telemetry
    either (OpenTelemetry, :mod:`scim.telemetry`): the adapters, stores and background work
    record it, the protocol stays pure."""
    forbidden = {
        "azure",
        "aiohttp",
        "httpx",
        "opentelemetry",
        "scim.telemetry",
        *ADAPTERS,
        *DEV_TOOLS,
        *STORE_IMPLEMENTATIONS,
        "scim.provisioning_log",
        "scim.notify",
        "scim.admin",
    }
    assert _crossing(f"scim.core.{name}", forbidden) == []


@pytest.mark.parametrize("path", sorted((ROOT / "scim" / "store").glob("*.py")), ids=lambda p: p.name)
def test_the_stores_import_no_adapter_core_service_or_dev_tool(path: Path) -> None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    forbidden = {*ADAPTERS, *DEV_TOOLS, "scim.core.service", "scim.admin", "scim.notify", "scim.provisioning_log"}
    assert _crossing(module, forbidden) == []


LOG_AND_STATE_IMPLEMENTATIONS = {"scim.provisioning_log.tables", "scim.notify.state_tables"}
"""The provisioning log and the digest state on Azure Tables (built by the runtime only)."""
ON_CONTRACTS_ONLY = [
    *sorted(p for p in (ROOT / "scim" / "provisioning_log").glob("*.py") if p.stem != "tables"),
    *(ROOT / "scim" / "notify" / f"{name}.py" for name in ("state", "state_memory", "notifier", "digest")),
    *(ROOT / "scim" / "portal" / f"{name}.py" for name in ("__init__", "links", "audit", "secrets_store")),
]
"""The log's and the digest state's contracts, keys and memory doubles, the log writer and the
digest run, and the portal's contracts (setup links, audit trail, secrets): they reach storage
only through the contracts."""


@pytest.mark.parametrize("path", ON_CONTRACTS_ONLY, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_log_and_digest_contracts_import_no_azure_implementation(path: Path) -> None:
    """Importing them loads no Azure SDK (``scim.functions.http_adapter`` imports the log at cold
    start) and the memory runtime needs none; the Azure Table implementations are imported by
    the runtime that builds them (:func:`scim.functions.runtime.build_runtime`)."""
    forbidden = {"azure", *(STORE_IMPLEMENTATIONS - {"scim.store.memory"}), *LOG_AND_STATE_IMPLEMENTATIONS}
    assert _crossing(_module(path), forbidden) == []


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (ROOT / "scim").rglob("*.py") if not _module(p).startswith("scim.functions")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_nothing_but_the_entry_point_imports_an_adapter(path: Path) -> None:
    """Adapters are leaves: the CLI, the notifier and the stores use services, never the Functions
    triggers (the CLI builds its objects with the runtime, which holds no trigger)."""
    module = _module(path)
    forbidden = {
        "scim.functions.http_adapter",
        "scim.functions.events_adapter",
        "scim.functions.timer_adapter",
        "scim.functions.delivery_adapter",
        "scim.functions.oauth_adapter",
        "scim.functions.portal_adapter",
        "function_app",
        "devtools",
    }
    if not module.startswith("scim.admin"):
        forbidden.add("scim.functions.runtime")
    assert _crossing(module, forbidden) == []


def test_the_deployed_package_leaves_the_dev_tools_out() -> None:
    """.funcignore keeps devtools/ (Azurite runner, local host, make run, SMTP sink) out of Azure."""
    ignored = (ROOT / ".funcignore").read_text().split()
    assert "devtools/" in ignored


@pytest.mark.parametrize(
    "path",
    [ROOT / "function_app.py", *sorted((ROOT / "scim").rglob("*.py"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_deployed_code_imports_no_dev_tool(path: Path) -> None:
    """Nothing deployed imports devtools/ (absent from the package in Azure)."""
    assert _crossing(_module(path), DEV_TOOLS) == []


def test_the_deployed_code_holds_no_azurite_key() -> None:
    """Azurite's account key (public, but an account key all the same) and the local defaults live
    in devtools/local_defaults.py; nothing under scim/ or the entry point carries the key."""
    from devtools.local_defaults import AZURITE_KEY

    files = [ROOT / "function_app.py", *(p for p in (ROOT / "scim").rglob("*") if p.is_file())]
    holding = [
        str(p.relative_to(ROOT))
        for p in files
        if "__pycache__" not in p.parts and AZURITE_KEY.encode() in p.read_bytes()
    ]
    assert holding == []


@pytest.mark.parametrize("path", sorted((ROOT / "scim" / "telemetry").glob("*.py")), ids=lambda p: p.name)
def test_telemetry_is_a_leaf(path: Path) -> None:
    """:mod:`scim.telemetry` imports nothing of the app but itself: the adapters, the stores, the
    log writer, webhook delivery and the notifier all record through it, so it must depend on
    none of them (no cycle, and nothing heavy on ``function_app``'s import path)."""
    module = _module(path)
    crossing = [i for i in imports_of(path) if i.startswith("scim.") and not i.startswith("scim.telemetry")]
    assert crossing == [], module
