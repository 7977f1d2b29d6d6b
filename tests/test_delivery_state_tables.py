""":class:`~scim.store.delivery_state_tables.TableDeliveryStateStore` against a real Azurite (the
session ``azurite`` fixture), in the tables of a prefix of this module: the delivery state
contract (``tests/delivery_state_contract.py``), and what only the tables have: the rows of the
layout (``docs/table-layout.md``), a full lane within Table Storage's entity limits (which Azurite
does not enforce), ``load`` in one storage call, and a dead storage raising the store's
StoreUnavailable (rule 5)."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from azure.data.tables.aio import TableClient, TableServiceClient

from scim.settings import Settings
from scim.store.azure_client import service_client
from scim.store.base import StoreUnavailable
from scim.store.delivery_state_tables import TableDeliveryStateStore
from scim.store.entities import MAX_ENTITY_BYTES, MAX_PROPERTIES
from scim.store.roundtrips import RoundTripCounter
from scim.webhooks import MAX_ERROR_LENGTH
from scim.webhooks.delivery_state import MAX_LANE_EVENTS, Lane, lane_key
from tests.delivery_state_contract import EP1, EP2, T0, DeliveryStateContract, position


def _settings(connection_string: str, prefix: str) -> Settings:
    return Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": connection_string, "SCIM_TABLE_PREFIX": prefix})


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def deliveries_prefix(azurite: str) -> AsyncIterator[str]:
    """A table prefix of this module for the session; its table is dropped at the end."""
    prefix = "dl" + secrets.token_hex(4)
    yield prefix
    async with TableServiceClient.from_connection_string(azurite) as service:
        await service.delete_table(f"{prefix}deliveries")  # no error if it does not exist


@pytest_asyncio.fixture
async def service(azurite: str, deliveries_prefix: str) -> AsyncIterator[TableServiceClient]:
    """A Table service client as the app builds one (its timeouts and retries)."""
    client, _ = service_client(_settings(azurite, deliveries_prefix))
    async with client:
        yield client


@pytest.fixture
def tenant() -> str:
    return "t" + secrets.token_hex(6)


class TestTableDeliveryStateStore(DeliveryStateContract):
    @pytest.fixture
    def states(self, service: TableServiceClient, deliveries_prefix: str) -> TableDeliveryStateStore:
        return TableDeliveryStateStore(service, deliveries_prefix)


async def test_the_rows_are_those_of_the_layout(
    azurite: str, deliveries_prefix: str, service: TableServiceClient, tenant: str
) -> None:
    states = TableDeliveryStateStore(service, deliveries_prefix)
    assert await states.acquire(tenant, "run-a", T0, timedelta(minutes=5)) is not None
    await states.save_cursor(tenant, EP1, position(1), None)
    await states.save_lane(tenant, Lane(EP2, "Group/g1", [position(2), position(3)], 2, T0, "HTTP 500"))
    async with TableClient.from_connection_string(azurite, f"{deliveries_prefix}deliveries") as table:
        rows = [dict(row) async for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": tenant})]
    assert [row["RowKey"] for row in rows] == ["c|" + EP1, "lease", f"l|{EP2}|Group:g1"]
    cursor, lease, lane = rows
    assert cursor["position"] == position(1)
    assert lease["owner"] == "run-a" and lease["until"] == "2026-03-02T12:05:00.500Z"
    assert {k: lane[k] for k in ("endpoint", "resource", "attempts", "nextAt", "lastError", "doc0")} == {
        "endpoint": EP2,
        "resource": "Group/g1",
        "attempts": 2,
        "nextAt": "2026-03-02T12:00:00.500Z",
        "lastError": "HTTP 500",
        "doc0": f'["{position(2)}","{position(3)}"]'.encode(),  # Binary: see the module docstring
    }


async def test_load_is_one_storage_call(azurite: str, deliveries_prefix: str, tenant: str) -> None:
    counter = RoundTripCounter()
    client, _ = service_client(_settings(azurite, deliveries_prefix), per_call_policies=[counter])
    async with client:
        states = TableDeliveryStateStore(client, deliveries_prefix)
        assert await states.acquire(tenant, "run-a", T0, timedelta(minutes=5)) is not None  # the table exists
        await states.save_cursor(tenant, EP1, position(1), None)
        await states.save_lane(tenant, Lane(EP1, "User/u1", [position(2)]))
        counter.reset()
        state = await states.load(tenant)
        assert len(state.cursors) == 1 and len(state.lanes) == 1 and state.lease_owner == "run-a"
        assert counter.count == 1


async def test_a_dead_storage_is_store_unavailable(azurite: str, tenant: str) -> None:
    """Nothing listens (port 9, discard): every call fails fast with the store's StoreUnavailable."""
    dead = re.sub(r"(TableEndpoint=http://[^:/]+:)\d+", r"\g<1>9", azurite)
    client, _ = service_client(_settings(dead, "dead"), retry_total=0)
    async with client:
        states = TableDeliveryStateStore(client, "dead")
        with pytest.raises(StoreUnavailable):
            await states.load(tenant)
        with pytest.raises(StoreUnavailable):
            await states.save_cursor(tenant, EP1, position(1), None)


def _documented_bytes(row: dict[str, Any]) -> int:
    """An entity's size as Table Storage counts it against its 1 MiB (learn.microsoft.com:
    "Understanding the Table service data model"): strings are UTF-16, two bytes a character;
    Azurite does not enforce it, so this test does."""
    size = 4 + 2 * (len(row["PartitionKey"]) + len(row["RowKey"]))
    for name, value in row.items():
        if name in ("PartitionKey", "RowKey"):
            continue
        if isinstance(value, bytes):
            size += 8 + 2 * len(name) + 4 + len(value)
        elif isinstance(value, str):
            size += 8 + 2 * len(name) + 4 + len(value.encode("utf-16-le"))
        else:
            size += 8 + 2 * len(name) + 8
    return size


async def test_a_full_lane_fits_one_entity_of_table_storage(
    azurite: str, deliveries_prefix: str, service: TableServiceClient, tenant: str
) -> None:
    states = TableDeliveryStateStore(service, deliveries_prefix)
    endpoint, resource = "ep_" + "f" * 32, "Group/" + "f" * 32
    full = [position(n) for n in range(MAX_LANE_EVENTS)]
    await states.save_lane(tenant, Lane(endpoint, resource, full, 3, T0, "x" * MAX_ERROR_LENGTH))
    async with TableClient.from_connection_string(azurite, f"{deliveries_prefix}deliveries") as table:
        row = dict(await table.get_entity(tenant, lane_key(endpoint, resource)))
    assert len(row) <= MAX_PROPERTIES + 3  # with PartitionKey, RowKey and Timestamp
    assert _documented_bytes({k: v for k, v in row.items() if k != "Timestamp"}) <= MAX_ENTITY_BYTES
    assert all(len(v) <= 64 * 1024 for v in row.values() if isinstance(v, bytes | str))
