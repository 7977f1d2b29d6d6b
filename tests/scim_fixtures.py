"""Fixtures for tests that talk to the SCIM service on a real Azurite (loaded from conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from scim.functions.runtime import Runtime, build_runtime, use_runtime
from scim.settings import Settings
from tests.functions_client import FunctionsClient


def azurite_settings(connection_string: str, prefix: str, **extra: str) -> Settings:
    """Settings pointing at the test Azurite, with this session's table prefix."""
    return Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": connection_string, "SCIM_TABLE_PREFIX": prefix, **extra})


@pytest.fixture
async def runtime(azurite: str, table_prefix: str) -> AsyncIterator[Runtime]:
    """The app's runtime on Azurite, installed as the process runtime the Functions adapter uses."""
    built = build_runtime(azurite_settings(azurite, table_prefix))
    use_runtime(built)
    yield built
    use_runtime(None)
    await built.close()


async def _tenant_client(runtime: Runtime) -> FunctionsClient:
    name = "t" + uuid.uuid4().hex[:12]
    token = await runtime.tenants.create(name)
    return FunctionsClient(name, token)


@pytest.fixture
async def client(runtime: Runtime) -> FunctionsClient:
    """A client of a fresh tenant, calling the registered Functions entry point."""
    return await _tenant_client(runtime)


@pytest.fixture
async def other_client(runtime: Runtime) -> FunctionsClient:
    """A client of a second fresh tenant."""
    return await _tenant_client(runtime)
