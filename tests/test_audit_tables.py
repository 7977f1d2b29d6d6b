""":class:`~scim.store.audit_tables.TableAuditTrail` against a real Azurite (the session
``azurite`` fixture): the audit trail contract (``tests/audit_contract.py``), its rows and its
storage round trips."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from azure.data.tables.aio import TableClient

from scim.portal.audit import AuditEntry
from scim.settings import Settings
from scim.store.audit_tables import TableAuditTrail
from scim.store.azure_client import service_client
from scim.store.roundtrips import RoundTripCounter
from tests.audit_contract import AuditTrailContract, entry, tenant


def _settings(connection_string: str, prefix: str) -> Settings:
    return Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": connection_string, "SCIM_TABLE_PREFIX": prefix})


@pytest_asyncio.fixture
async def counted(azurite: str, table_prefix: str) -> AsyncIterator[tuple[TableAuditTrail, RoundTripCounter]]:
    counter = RoundTripCounter()
    service, _ = service_client(_settings(azurite, table_prefix), per_call_policies=[counter])
    yield TableAuditTrail(service, table_prefix), counter
    await service.close()


class TestTableAuditTrail(AuditTrailContract):
    @pytest_asyncio.fixture
    async def trail(self, counted: tuple[TableAuditTrail, RoundTripCounter]) -> TableAuditTrail:
        return counted[0]


async def test_an_entry_is_one_row_in_the_tenants_partition(
    azurite: str, table_prefix: str, counted: tuple[TableAuditTrail, RoundTripCounter]
) -> None:
    trail, counter = counted
    name = tenant()
    await trail.record(entry(name, 0))  # also creates the table
    counter.reset()
    await trail.record(
        AuditEntry(name, "cli", "link.created", {"link": "0a1b2c3d", "expires": "2026-12-08T09:00:00.000Z"})
    )
    assert counter.count == 1, "one upsert"
    async with TableClient.from_connection_string(azurite, f"{table_prefix}audit") as table:
        rows = [dict(r) async for r in table.query_entities("PartitionKey eq @pk", parameters={"pk": name})]
    assert len(rows) == 2
    row = next(r for r in rows if r["action"] == "link.created")
    assert row["actor"] == "cli" and row["detail"] == '{"expires":"2026-12-08T09:00:00.000Z","link":"0a1b2c3d"}'
    counter.reset()
    page = await trail.page(name, limit=1)
    assert counter.count == 1 and page.cursor is not None
    counter.reset()
    await trail.page(name, limit=1, cursor=page.cursor)
    assert counter.count == 1
