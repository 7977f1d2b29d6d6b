""":class:`~scim.store.app_keys_tables.TableAppKeyRegistry` against a real Azurite (the session
``azurite`` fixture): the application key contract (``tests/app_key_contract.py``), its storage
round trips, its rows beside the tenants', lost answers, and the ``app-key`` commands as an
operator runs them (``python -m scim.admin``)."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from azure.core.exceptions import ServiceResponseError
from azure.data.tables.aio import TableClient, TableServiceClient

import scim.store.app_keys_tables as app_keys_tables
from scim.app_keys import AppKeyNotFound
from scim.settings import Settings
from scim.store.app_keys_tables import APP_KEY_PARTITION, TableAppKeyRegistry
from scim.store.roundtrips import RoundTripCounter
from scim.store.tenant_registry import TableTenantRegistry
from scim.tenants import hash_token
from tests.app_key_contract import KEY_SHAPE, AppKeyRegistryContract
from tests.helpers import admin, admin_env


def _settings(connection_string: str, prefix: str) -> Settings:
    return Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": connection_string, "SCIM_TABLE_PREFIX": prefix})


async def _raw_rows(connection_string: str, prefix: str) -> list[dict[str, Any]]:
    async with TableClient.from_connection_string(connection_string, f"{prefix}tenants") as table:
        return [dict(row) async for row in table.list_entities()]


@pytest_asyncio.fixture
async def prefix(azurite: str) -> AsyncIterator[str]:
    """A fresh tenants table per test (``list()`` sees only its own keys), dropped afterwards."""
    name = "ak" + secrets.token_hex(4)
    yield name
    async with TableServiceClient.from_connection_string(azurite) as service:
        await service.delete_table(f"{name}tenants")


class TestTableAppKeyRegistry(AppKeyRegistryContract):
    @pytest_asyncio.fixture
    async def registry(self, azurite: str, prefix: str) -> AsyncIterator[TableAppKeyRegistry]:
        keys = TableAppKeyRegistry.from_settings(_settings(azurite, prefix))
        self._where = (azurite, prefix)
        yield keys
        await keys.close()

    async def stored_text(self, registry: Any) -> str:
        return repr(await _raw_rows(*self._where))


@pytest_asyncio.fixture
async def counted(azurite: str, prefix: str) -> AsyncIterator[tuple[TableAppKeyRegistry, RoundTripCounter]]:
    counter = RoundTripCounter()
    keys = TableAppKeyRegistry.from_settings(_settings(azurite, prefix), per_call_policies=[counter])
    yield keys, counter
    await keys.close()


async def test_authenticate_is_one_point_read_for_a_known_and_an_unknown_key(
    counted: tuple[TableAppKeyRegistry, RoundTripCounter],
) -> None:
    keys, counter = counted
    key = await keys.create("reader")  # also creates the table: not part of any later cost
    await keys.create("other")
    unknown = "scimak_" + secrets.token_urlsafe(32)
    costs: dict[str, tuple[int, list[str]]] = {}
    for label, presented, expected in (
        ("known", key, "reader"),
        ("unknown", unknown, None),
        ("malformed", "Bearer nonsense", None),
    ):
        counter.reset()
        assert await keys.authenticate(presented) == expected
        costs[label] = (counter.count, list(counter.methods))
    assert costs == {"known": (1, ["GET"]), "unknown": (1, ["GET"]), "malformed": (0, [])}
    counter.reset()
    await keys.create("third")
    assert counter.count == 1, "one entity-group transaction inserts both rows"
    counter.reset()
    await keys.revoke("third")
    assert counter.methods == ["GET", "POST"], "a read of the name row, one transaction deleting both rows"
    counter.reset()
    assert [k.name for k in await keys.list()] == ["other", "reader"]
    assert counter.count == 1


async def test_a_revoke_fails_the_key_at_once_on_every_instance(azurite: str, prefix: str) -> None:
    one = TableAppKeyRegistry.from_settings(_settings(azurite, prefix))
    two = TableAppKeyRegistry.from_settings(_settings(azurite, prefix))
    try:
        key = await one.create("shared")
        assert await two.authenticate(key) == "shared"
        await one.revoke("shared")
        assert await two.authenticate(key) is None
        with pytest.raises(AppKeyNotFound):
            await two.revoke("shared")
    finally:
        await one.close()
        await two.close()


async def test_keys_live_beside_the_tenants_without_touching_them(azurite: str, prefix: str) -> None:
    tenants = TableTenantRegistry.from_settings(_settings(azurite, prefix))
    keys = TableAppKeyRegistry.from_settings(_settings(azurite, prefix))
    try:
        token = await tenants.create("contoso")
        key = await keys.create("contoso")  # a key may share a tenant's name: they are different things
        assert [t.name for t in await tenants.list()] == ["contoso"]
        assert [k.name for k in await keys.list()] == ["contoso"]
        assert await keys.authenticate(token) is None  # a Secret Token is not an application key
        assert not await tenants.authenticate("contoso", key)  # and the other way round
        rows = await _raw_rows(azurite, prefix)
        assert sorted((r["PartitionKey"], r["RowKey"]) for r in rows if r["PartitionKey"] == APP_KEY_PARTITION) == [
            (APP_KEY_PARTITION, f"h|{hash_token(key)}"),
            (APP_KEY_PARTITION, "n|contoso"),
        ]
        await keys.revoke("contoso")
        assert await tenants.authenticate("contoso", token)
        assert [r["PartitionKey"] for r in await _raw_rows(azurite, prefix)] == ["tenant"]
    finally:
        await tenants.close()
        await keys.close()


@pytest.mark.parametrize("operation", ["create", "revoke"])
async def test_a_transaction_whose_answer_is_lost_is_recognised_when_sent_again(
    azurite: str, prefix: str, operation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = TableAppKeyRegistry.from_settings(_settings(azurite, prefix))
    real = app_keys_tables.submit_transaction
    lost: list[int] = []

    async def commit_then_lose_the_answer(table: Any, operations: Any, **kwargs: Any) -> Any:
        result = await real(table, operations, **kwargs)
        if not lost:
            lost.append(1)
            raise ServiceResponseError("connection reset after the commit")
        return result

    try:
        if operation == "revoke":
            key = await keys.create("lossy")
        monkeypatch.setattr(app_keys_tables, "submit_transaction", commit_then_lose_the_answer)
        if operation == "create":
            key = await keys.create("lossy")
            assert await keys.authenticate(key) == "lossy"
        else:
            await keys.revoke("lossy")
            assert await keys.authenticate(key) is None and await keys.list() == []
        assert lost == [1]
    finally:
        await keys.close()


async def test_the_app_key_commands(azurite: str, prefix: str) -> None:
    env = admin_env(azurite, prefix, SCIM_PUBLIC_BASE_URL="https://scim.example.com")
    name = "app-" + uuid.uuid4().hex[:8]

    def run(*args: str) -> Any:
        return asyncio.to_thread(admin, env, "app-key", *args)

    created = await run("create", name)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().removeprefix(f"Application key {name}: ")
    assert KEY_SHAPE.match(key), created.stdout
    assert "will not be shown again" in created.stderr
    assert "https://scim.example.com/api/v1/tenants/{tenant}/events" in created.stderr

    as_json = await run("create", "second", "--json")
    assert as_json.returncode == 0, as_json.stderr
    second = json.loads(as_json.stdout)
    assert set(second) == {"name", "key"} and second["name"] == "second" and KEY_SHAPE.match(second["key"])

    duplicate = await run("create", name)
    assert duplicate.returncode == 1 and f"application key {name!r} already exists" in duplicate.stderr
    invalid = await run("create", "Not Valid")
    assert invalid.returncode == 1 and "invalid application key name" in invalid.stderr

    keys = TableAppKeyRegistry.from_settings(_settings(azurite, prefix))
    try:
        assert await keys.authenticate(key) == name
        assert await keys.authenticate(second["key"]) == "second"
        stored = repr(await _raw_rows(azurite, prefix))
        assert key not in stored and second["key"] not in stored and hash_token(key) in stored

        listed = await run("list")
        assert listed.returncode == 0, listed.stderr
        assert sorted(line.split("\t")[0] for line in listed.stdout.splitlines()) == sorted([name, "second"])
        assert key not in listed.stdout
        listed_json = json.loads((await run("list", "--json")).stdout)
        assert sorted(k["name"] for k in listed_json) == sorted([name, "second"])

        unconfirmed = await run("revoke", name)
        assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr
        assert await keys.authenticate(key) == name
        revoked = await run("revoke", name, "--yes")
        assert revoked.returncode == 0 and f"Revoked application key {name}" in revoked.stdout, revoked.stderr
        assert await keys.authenticate(key) is None
        assert await keys.authenticate(second["key"]) == "second"
        again = await run("revoke", name, "--yes")
        assert again.returncode == 1 and f"no application key {name!r}" in again.stderr
    finally:
        await keys.close()
