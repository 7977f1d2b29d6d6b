"""Shared fixtures.

- ``azurite``: a session-wide, in-memory Azurite Table service on a free port; the value is
  its Table connection string (str). Stopped by PID at the end of the session.
- ``table_prefix``: a random table-name prefix for this session ("t" + 8 hex digits), so
  runs never see each other's tables.

Fixture modules of other parts of the suite are loaded here as plugins when present
(``tests/scim_fixtures.py``: ``runtime``, ``client``, ...).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.azurite import AzuriteProcess

_HERE = Path(__file__).parent
pytest_plugins = [f"tests.{name}" for name in ("scim_fixtures", "localhost_server") if (_HERE / f"{name}.py").exists()]


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
