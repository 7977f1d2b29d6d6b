"""Fixtures for tests that talk to the SCIM service (loaded from conftest.py).

``runtime`` (and so ``client``, ``other_client``) runs each test on two backends, ids ``memory``
(the in-memory doubles of the store, the tenants, the provisioning log and the digest state:
seconds, no Node.js) and ``azurite`` (the app's Table store on the session's Azurite). A test
runs on Azurite only when it also depends on the ``azurite`` fixture (raw tables, a second runtime,
a proxy, ...) or carries ``@pytest.mark.azurite(reason=...)`` (it reads the provisioning log,
counts round trips, needs Table behaviour): see ``pytest_generate_tests`` in conftest.py,
which also marks every test that needs Azurite with ``azurite`` (``pytest -m "not azurite"``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from scim.functions.runtime import Runtime, build_runtime, use_runtime
from scim.settings import Settings
from tests.functions_client import FunctionsClient
from tests.helpers import memory_runtime

BACKENDS = ("memory", "azurite")
"""The ids ``runtime`` is parametrised over (in this order)."""


def azurite_settings(connection_string: str, prefix: str, **extra: str) -> Settings:
    """Settings pointing at the test Azurite, with this session's table prefix."""
    return Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": connection_string, "SCIM_TABLE_PREFIX": prefix, **extra})


@pytest.fixture
async def runtime(request: pytest.FixtureRequest) -> AsyncIterator[Runtime]:
    """The app's runtime on the backend of this test's param (``memory`` or ``azurite``),
    installed as the process runtime the Functions adapter uses."""
    backend = getattr(request, "param", "azurite")
    if backend == "memory":
        built = memory_runtime()
    else:  # the azurite fixture is requested here only, so memory tests never start Node.js
        azurite: str = request.getfixturevalue("azurite")
        built = build_runtime(azurite_settings(azurite, request.getfixturevalue("table_prefix")))
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
