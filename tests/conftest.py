"""Shared fixtures.

- ``azurite``: a session-wide, in-memory Azurite Table service on a free port; the value is
  its Table connection string (str). Stopped by PID at the end of the session.
- ``table_prefix``: a random table-name prefix for this session ("t" + 8 hex digits), so
  runs never see each other's tables.

Backends and the ``azurite`` marker (issue #11): a test using ``runtime`` (``client``,
``other_client``) runs twice, ids ``memory`` and ``azurite``, unless it needs Azurite anyway (it
depends on the ``azurite`` fixture, or carries ``@pytest.mark.azurite(reason=...)``): then on
Azurite only. Every test that needs Azurite or Node.js gets the ``azurite`` marker, so
``pytest -m "not azurite"`` runs the memory-backed suite in seconds without Node.js.

Fixture modules of other parts of the suite are loaded here as plugins when present
(``tests/scim_fixtures.py``: ``runtime``, ``client``, ...).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.azurite import AzuriteProcess

# The app refuses to start without table storage (scim.settings), and importing the entry point
# checks the settings of the process environment (tests/functions_client.py imports function_app).
# Tests build their own settings (the memory store, or the session's Azurite); this only lets the
# entry point load here, as make run's environment does (UseDevelopmentStorage=true: Azurite on
# 127.0.0.1:10002, never reached by a test).
if not (os.environ.get("SCIM_TABLE_ENDPOINT") or os.environ.get("SCIM_TABLE_CONNECTION_STRING")):
    os.environ["SCIM_TABLE_CONNECTION_STRING"] = "UseDevelopmentStorage=true"

_HERE = Path(__file__).parent
pytest_plugins = [f"tests.{name}" for name in ("scim_fixtures", "localhost_server") if (_HERE / f"{name}.py").exists()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``runtime`` on both backends, or on Azurite only for a test that needs Azurite anyway."""
    if "runtime" in metafunc.fixturenames:
        from tests.scim_fixtures import BACKENDS

        azurite_only = "azurite" in metafunc.fixturenames or metafunc.definition.get_closest_marker("azurite")
        backends = ["azurite"] if azurite_only else list(BACKENDS)
        metafunc.parametrize("runtime", backends, indirect=True, ids=backends)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``azurite`` marker on every test that uses Azurite: through the ``azurite`` fixture
    (directly or through other fixtures) or as its ``runtime`` backend."""
    for item in items:
        if not isinstance(item, pytest.Function) or item.get_closest_marker("azurite"):
            continue
        params = getattr(item, "callspec", None)
        backend = params.params.get("runtime") if params else None
        if "azurite" in item.fixturenames or backend == "azurite":
            item.add_marker(pytest.mark.azurite)


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    az = AzuriteProcess(0, in_memory=True)
    az.start()  # raises AzuriteError with Azurite's output if it can't start
    try:
        yield az.connection_string
    finally:
        az.stop()


@pytest.fixture(scope="session")
def table_prefix() -> str:
    return "t" + secrets.token_hex(4)
