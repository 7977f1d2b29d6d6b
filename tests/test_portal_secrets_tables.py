""":class:`~scim.store.portal_secrets_tables.TablePortalSecrets` against a real Azurite: the
portal secrets contract (``tests/portal_secrets_contract.py``) across instances, its row, and
its storage round trips (one read per object, none once cached)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from azure.data.tables.aio import TableClient, TableServiceClient

from scim.portal.secrets_store import PortalSecrets
from scim.settings import Settings
from scim.store.portal_secrets_tables import SECRET_PARTITION, TablePortalSecrets
from scim.store.roundtrips import RoundTripCounter
from tests.portal_secrets_contract import PortalSecretsContract


def _settings(connection_string: str, prefix: str) -> Settings:
    return Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": connection_string, "SCIM_TABLE_PREFIX": prefix})


@pytest_asyncio.fixture
async def prefix(azurite: str) -> AsyncIterator[str]:
    """A fresh portal table per test (no key yet), dropped afterwards."""
    name = "ps" + secrets.token_hex(4)
    yield name
    async with TableServiceClient.from_connection_string(azurite) as service:
        await service.delete_table(f"{name}portal")


class TestTablePortalSecrets(PortalSecretsContract):
    @pytest_asyncio.fixture
    async def secrets_store(self, azurite: str, prefix: str) -> AsyncIterator[TablePortalSecrets]:
        store = TablePortalSecrets.from_settings(_settings(azurite, prefix))
        self._settings = _settings(azurite, prefix)
        yield store
        await store.close()

    async def another(self, store: Any) -> PortalSecrets:
        return TablePortalSecrets.from_settings(self._settings)


async def test_the_key_is_one_binary_row_read_once_per_object(azurite: str, prefix: str) -> None:
    counter = RoundTripCounter()
    first = TablePortalSecrets.from_settings(_settings(azurite, prefix))
    second = TablePortalSecrets.from_settings(_settings(azurite, prefix), per_call_policies=[counter])
    try:
        key = await first.session_key()
        async with TableClient.from_connection_string(azurite, f"{prefix}portal") as table:
            rows = [dict(row) async for row in table.list_entities()]
        assert [(r["PartitionKey"], r["RowKey"]) for r in rows] == [(SECRET_PARTITION, "session")]
        assert bytes(rows[0]["key"]) == key and rows[0]["created"]
        counter.reset()
        assert await second.session_key() == key
        assert counter.methods == ["GET"], "one point read (the table exists)"
        counter.reset()
        assert await second.session_key() == key
        assert counter.count == 0, "cached"
    finally:
        await first.close()
        await second.close()
