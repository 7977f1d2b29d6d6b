""":class:`~scim.store.portal_links_tables.TableSetupLinkRegistry` against a real Azurite (the
session ``azurite`` fixture): the setup link contract (``tests/portal_links_contract.py``), its
rows (hashes only, both rows in one partition), its storage round trips, two instances, and
lost answers."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from azure.core.exceptions import ServiceResponseError
from azure.data.tables.aio import TableClient, TableServiceClient

import scim.store.portal_links_tables as portal_links_tables
from scim.settings import Settings
from scim.store.portal_links_tables import LINK_PARTITION, TableSetupLinkRegistry
from scim.store.roundtrips import RoundTripCounter
from scim.tenants import hash_token
from tests.portal_links_contract import DAY, SetupLinkRegistryContract, tenant


def _settings(connection_string: str, prefix: str) -> Settings:
    return Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": connection_string, "SCIM_TABLE_PREFIX": prefix})


async def _raw_rows(connection_string: str, prefix: str) -> list[dict[str, Any]]:
    async with TableClient.from_connection_string(connection_string, f"{prefix}portal") as table:
        return [dict(row) async for row in table.list_entities()]


@pytest_asyncio.fixture
async def prefix(azurite: str) -> AsyncIterator[str]:
    """A fresh portal table per test, dropped afterwards."""
    name = "pl" + secrets.token_hex(4)
    yield name
    async with TableServiceClient.from_connection_string(azurite) as service:
        await service.delete_table(f"{name}portal")


class TestTableSetupLinkRegistry(SetupLinkRegistryContract):
    @pytest_asyncio.fixture
    async def registry(self, azurite: str, prefix: str) -> AsyncIterator[TableSetupLinkRegistry]:
        links = TableSetupLinkRegistry.from_settings(_settings(azurite, prefix))
        self._where = (azurite, prefix)
        yield links
        await links.close()

    async def stored_text(self, registry: Any) -> str:
        return repr(await _raw_rows(*self._where))


async def test_a_link_is_two_rows_of_one_partition_holding_its_hash(azurite: str, prefix: str) -> None:
    links = TableSetupLinkRegistry.from_settings(_settings(azurite, prefix))
    try:
        name = tenant()
        secret, link = await links.create(name, DAY, "operator:alice@contoso.com")
        rows = {row["RowKey"]: row for row in await _raw_rows(azurite, prefix)}
        digest = hash_token(secret)
        assert set(rows) == {f"h|{digest}", f"t|{name}|{link.id}"}
        assert {row["PartitionKey"] for row in rows.values()} == {LINK_PARTITION}
        assert rows[f"h|{digest}"]["tenant"] == name and rows[f"h|{digest}"]["id"] == link.id
        assert rows[f"t|{name}|{link.id}"]["linkHash"] == digest
        assert secret not in repr(rows)
        assert await links.redeem(secret, "session:1") is not None
        rows = {row["RowKey"]: row for row in await _raw_rows(azurite, prefix)}
        assert set(rows) == {f"t|{name}|{link.id}"}, "a used link's hash row is gone"
        assert rows[f"t|{name}|{link.id}"]["usedBy"] == "session:1"
        await links.purge(name)
        assert await _raw_rows(azurite, prefix) == []
    finally:
        await links.close()


async def test_a_redeem_is_one_point_read_for_every_refusal_and_one_transaction_more_for_a_link(
    azurite: str, prefix: str
) -> None:
    counter = RoundTripCounter()
    links = TableSetupLinkRegistry.from_settings(_settings(azurite, prefix), per_call_policies=[counter])
    try:
        name = tenant()
        secret, _ = await links.create(name, DAY, "cli")  # also creates the table
        costs = {}
        for label, presented in (
            ("unknown", "scimsl_" + secrets.token_urlsafe(32)),
            ("malformed", "nonsense"),
            ("open", secret),
            ("used", secret),
        ):
            counter.reset()
            await links.redeem(presented, "s")
            costs[label] = list(counter.methods)
        assert costs == {"unknown": ["GET"], "malformed": ["GET"], "open": ["GET", "POST"], "used": ["GET"]}
        counter.reset()
        await links.create(name, DAY, "cli")
        assert counter.methods == ["GET", "POST"], "a range query of the tenant's links, one transaction"
        counter.reset()
        await links.list(name)
        assert counter.count == 1
    finally:
        await links.close()


async def test_two_instances_redeem_a_link_once_and_see_a_revoke_at_once(azurite: str, prefix: str) -> None:
    one = TableSetupLinkRegistry.from_settings(_settings(azurite, prefix))
    two = TableSetupLinkRegistry.from_settings(_settings(azurite, prefix))
    try:
        name = tenant()
        secret, _ = await one.create(name, DAY, "cli")
        results = [await one.redeem(secret, "one") if i % 2 else await two.redeem(secret, "two") for i in range(4)]
        assert sum(r is not None for r in results) == 1
        revoked, _ = await one.create(name, DAY, "cli")
        assert await two.revoke_all(name) == 1
        assert await one.redeem(revoked, "one") is None
    finally:
        await one.close()
        await two.close()


@pytest.mark.parametrize("operation", ["create", "redeem", "revoke"])
async def test_a_transaction_whose_answer_is_lost_is_recognised_when_sent_again(
    azurite: str, prefix: str, operation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = TableSetupLinkRegistry.from_settings(_settings(azurite, prefix))
    real = portal_links_tables.submit_transaction
    lost: list[int] = []

    async def commit_then_lose_the_answer(table: Any, operations: Any, **kwargs: Any) -> Any:
        result = await real(table, operations, **kwargs)
        if not lost:
            lost.append(1)
            raise ServiceResponseError("connection reset after the commit")
        return result

    name = tenant()
    try:
        if operation != "create":
            secret, _ = await links.create(name, DAY, "cli")
        monkeypatch.setattr(portal_links_tables, "submit_transaction", commit_then_lose_the_answer)
        if operation == "create":
            secret, link = await links.create(name, DAY, "cli")
            assert [x.id for x in await links.list(name)] == [link.id]
            assert await links.redeem(secret, "s") is not None
        elif operation == "redeem":
            used = await links.redeem(secret, "s")
            assert used is not None and used.used_by == "s"
            assert await links.redeem(secret, "s") is None
        else:
            assert await links.revoke_all(name) == 1
            assert await links.redeem(secret, "s") is None
            assert [x.status() for x in await links.list(name)] == ["revoked"]
        assert lost == [1]
    finally:
        await links.close()


async def test_a_missing_hash_row_does_not_stop_a_purge(azurite: str, prefix: str) -> None:
    """Rows written by hand or a bug: the tenant row alone still goes."""
    links = TableSetupLinkRegistry.from_settings(_settings(azurite, prefix))
    try:
        name = tenant()
        secret, _ = await links.create(name, timedelta(hours=1), "cli")
        async with TableClient.from_connection_string(azurite, f"{prefix}portal") as table:
            await table.delete_entity(LINK_PARTITION, f"h|{hash_token(secret)}")
        await links.purge(name)
        assert await links.list(name) == [] and await _raw_rows(azurite, prefix) == []
    finally:
        await links.close()
