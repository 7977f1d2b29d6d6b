""":class:`~scim.store.webhooks_tables.TableWebhookRegistry` against a real Azurite (the session
``azurite`` fixture): the webhook endpoint contract (``tests/webhook_contract.py``), its storage
round trips, its rows beside the tenants' and the application keys', lost answers, and the
``webhook`` commands as an operator runs them (``python -m scim.admin``)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from azure.core.exceptions import ServiceResponseError
from azure.data.tables.aio import TableClient, TableServiceClient

from scim.settings import Settings
from scim.store.app_keys_tables import TableAppKeyRegistry
from scim.store.roundtrips import RoundTripCounter
from scim.store.tenant_registry import TableTenantRegistry
from scim.store.webhooks_tables import WEBHOOK_PARTITION, TableWebhookRegistry
from scim.webhooks import WebhookNotFound
from tests.helpers import admin, admin_env
from tests.webhook_contract import ID_SHAPE, SECRET_SHAPE, WebhookRegistryContract


def _settings(connection_string: str, prefix: str) -> Settings:
    return Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": connection_string, "SCIM_TABLE_PREFIX": prefix})


async def _raw_rows(connection_string: str, prefix: str) -> list[dict[str, Any]]:
    async with TableClient.from_connection_string(connection_string, f"{prefix}tenants") as table:
        return [dict(row) async for row in table.list_entities()]


@pytest_asyncio.fixture
async def prefix(azurite: str) -> AsyncIterator[str]:
    """A fresh tenants table per test (``list()`` sees only its own endpoints), dropped afterwards."""
    name = "wh" + secrets.token_hex(4)
    yield name
    async with TableServiceClient.from_connection_string(azurite) as service:
        await service.delete_table(f"{name}tenants")


class TestTableWebhookRegistry(WebhookRegistryContract):
    @pytest_asyncio.fixture
    async def registry(self, azurite: str, prefix: str) -> AsyncIterator[TableWebhookRegistry]:
        hooks = TableWebhookRegistry.from_settings(_settings(azurite, prefix))
        yield hooks
        await hooks.close()


async def test_storage_round_trips(azurite: str, prefix: str) -> None:
    counter = RoundTripCounter()
    hooks = TableWebhookRegistry.from_settings(_settings(azurite, prefix), per_call_policies=[counter])
    try:
        await hooks.add("https://warm.example.com/")  # creates the table: not part of any later cost
        costs: dict[str, list[str]] = {}

        async def cost(label: str, call: Any) -> Any:
            counter.reset()
            result = await call
            costs[label] = list(counter.methods)
            return result

        endpoint_id, _ = await cost("add", hooks.add("https://hooks.example.com/"))
        await cost("list", hooks.list())
        await cost("get", hooks.get(endpoint_id))
        await cost("rotate", hooks.rotate_secret(endpoint_id))
        await cost("success", hooks.record_success(endpoint_id))
        await cost("failure", hooks.record_failure(endpoint_id, "HTTP 500"))
        await cost("disable", hooks.disable(endpoint_id, "410"))
        await cost("remove", hooks.remove(endpoint_id))
        with pytest.raises(WebhookNotFound):
            await cost("malformed id", hooks.get("not an id"))
        costs["malformed id"] = list(counter.methods)
    finally:
        await hooks.close()
    assert costs == {
        "add": ["POST"],
        "list": ["GET"],
        "get": ["GET"],
        "rotate": ["GET", "PATCH"],
        "success": ["PATCH"],
        "failure": ["GET", "PATCH"],
        "disable": ["PATCH"],
        "remove": ["GET", "DELETE"],
        "malformed id": [],
    }


async def test_endpoints_live_beside_tenants_and_app_keys(azurite: str, prefix: str) -> None:
    settings = _settings(azurite, prefix)
    tenants = TableTenantRegistry.from_settings(settings)
    keys = TableAppKeyRegistry.from_settings(settings)
    hooks = TableWebhookRegistry.from_settings(settings)
    try:
        await tenants.create("contoso")
        await keys.create("reporting")
        endpoint_id, secret = await hooks.add(
            "https://hooks.example.com/", tenants=["contoso"], events=["user.created"]
        )
        assert [t.name for t in await tenants.list()] == ["contoso"]
        assert [k.name for k in await keys.list()] == ["reporting"]
        assert [e.id for e in await hooks.list()] == [endpoint_id]
        rows = [r for r in await _raw_rows(azurite, prefix) if r["PartitionKey"] == WEBHOOK_PARTITION]
        assert [r["RowKey"] for r in rows] == [endpoint_id]
        assert rows[0]["secret"] == secret, "stored as it is: it signs every delivery"
        assert json.loads(rows[0]["tenants"]) == ["contoso"] and json.loads(rows[0]["events"]) == ["user.created"]
        await hooks.remove(endpoint_id)
        assert sorted({r["PartitionKey"] for r in await _raw_rows(azurite, prefix)}) == ["appkey", "tenant"]
    finally:
        await tenants.close()
        await keys.close()
        await hooks.close()


@pytest.mark.parametrize("operation", ["add", "rotate"])
async def test_a_write_whose_answer_is_lost_is_recognised_when_sent_again(
    azurite: str, prefix: str, operation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = TableWebhookRegistry.from_settings(_settings(azurite, prefix))
    table = hooks._table
    name = "create_entity" if operation == "add" else "update_entity"
    real = getattr(table, name)
    lost: list[int] = []

    async def commit_then_lose_the_answer(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        if not lost:
            lost.append(1)
            raise ServiceResponseError("connection reset after the commit")
        return result

    try:
        if operation == "rotate":
            endpoint_id, first = await hooks.add("https://hooks.example.com/")
        monkeypatch.setattr(table, name, commit_then_lose_the_answer)
        if operation == "add":
            endpoint_id, secret = await hooks.add("https://hooks.example.com/")
            assert (await hooks.get(endpoint_id)).secret == secret
        else:
            second = await hooks.rotate_secret(endpoint_id)
            endpoint = await hooks.get(endpoint_id)
            # The resend met its own change (412 on the ETag it read): recognised, not rotated twice.
            assert (endpoint.secret, endpoint.previous_secret) == (second, first)
        assert lost == [1] and len(await hooks.list()) == 1
    finally:
        await hooks.close()


async def test_the_webhook_commands(azurite: str, prefix: str) -> None:
    env = admin_env(azurite, prefix)

    def run(*args: str) -> Any:
        return asyncio.to_thread(admin, env, "webhook", *args)

    added = await run("add", "http://127.0.0.1:8080/hook", "--tenant", "contoso", "--events", "user.created")
    assert added.returncode == 0, added.stderr
    first, second = added.stdout.splitlines()
    endpoint_id = first.removeprefix("Webhook endpoint ").removesuffix(": http://127.0.0.1:8080/hook")
    secret = second.removeprefix("Signing secret: ")
    assert ID_SHAPE.match(endpoint_id) and SECRET_SHAPE.match(secret), added.stdout
    assert "from standardwebhooks import Webhook" in added.stderr

    as_json = await run("add", "http://localhost:9000/", "--json")
    assert as_json.returncode == 0, as_json.stderr
    other = json.loads(as_json.stdout)
    assert set(other) == {"id", "url", "secret"} and SECRET_SHAPE.match(other["secret"])

    refused = await run("add", "https://10.0.0.1/hook")
    assert refused.returncode == 1 and "10.0.0.1 is a private address" in refused.stderr
    refused = await run("add", "http://127.0.0.1/", "--events", "user.exploded")
    assert refused.returncode == 1 and "unknown event type 'user.exploded'" in refused.stderr
    in_azure = await asyncio.to_thread(
        admin, {**env, "WEBSITE_SITE_NAME": "scim-test"}, "webhook", "add", "http://127.0.0.1:8080/hook"
    )
    assert in_azure.returncode == 1 and "in Azure only https://" in in_azure.stderr

    listed = await run("list")
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split("\t")[0] for line in listed.stdout.splitlines()) == sorted([endpoint_id, other["id"]])
    assert "whsec_" not in listed.stdout
    listed_json = await run("list", "--json")
    assert "whsec_" not in listed_json.stdout and len(json.loads(listed_json.stdout)) == 2

    rotated = await run("rotate-secret", endpoint_id, "--json")
    assert rotated.returncode == 0, rotated.stderr
    new_secret = json.loads(rotated.stdout)["secret"]
    hooks = TableWebhookRegistry.from_settings(_settings(azurite, prefix))
    try:
        assert (await hooks.get(endpoint_id)).signing_secrets() == [new_secret, secret]
    finally:
        await hooks.close()

    unconfirmed = await run("remove", endpoint_id)
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr
    removed = await run("remove", endpoint_id, "--yes")
    assert removed.returncode == 0 and f"Removed webhook endpoint {endpoint_id}" in removed.stdout, removed.stderr
    again = await run("remove", endpoint_id, "--yes")
    assert again.returncode == 1 and f"no webhook endpoint {endpoint_id!r}" in again.stderr
