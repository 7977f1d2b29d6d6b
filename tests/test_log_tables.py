"""The provisioning log and digest state on Azure Table Storage, against a real Azurite (the
session ``azurite`` fixture), each in tables of a prefix of its own.

- the contracts (``tests/log_contract.py``) on
  :class:`~scim.provisioning_log.tables.TableProvisioningLog` and
  :class:`~scim.notify.state_tables.TableNotifyStateStore`;
- what only the tables have: the rows of the layout, a lease insert whose answer was lost, a
  dead storage raising the store's StoreUnavailable, and the 409 mapping the lease relies on.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from azure.core.exceptions import HttpResponseError, ServiceResponseError
from azure.data.tables.aio import TableClient, TableServiceClient

from scim.notify.state_tables import TableNotifyStateStore
from scim.provisioning_log import bucket_of
from scim.provisioning_log.tables import TableProvisioningLog
from scim.settings import Settings
from scim.store.azure_client import service_client
from scim.store.azure_errors import store_error
from scim.store.base import ResourceExists, StoreUnavailable, UniquenessViolation
from scim.store.operations import _Op
from tests.log_contract import MS, T0, NotifyStateContract, ProvisioningLogContract, entry


def _settings(connection_string: str, prefix: str) -> Settings:
    return Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": connection_string, "SCIM_TABLE_PREFIX": prefix})


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def log_prefix(azurite: str) -> AsyncIterator[str]:
    """A table prefix of this module for the session; its tables are dropped at the end."""
    prefix = "lg" + secrets.token_hex(4)
    yield prefix
    async with TableServiceClient.from_connection_string(azurite) as service:
        for name in (f"{prefix}log", f"{prefix}tenants"):
            await service.delete_table(name)  # no error if it does not exist


@pytest_asyncio.fixture
async def service(azurite: str, log_prefix: str) -> AsyncIterator[TableServiceClient]:
    """A Table service client as the app builds one (its timeouts and retries)."""
    client, _ = service_client(_settings(azurite, log_prefix))
    async with client:
        yield client


@pytest.fixture
def tenant() -> str:
    return "t" + secrets.token_hex(6)


@pytest.fixture
def log(service: TableServiceClient, log_prefix: str) -> TableProvisioningLog:
    return TableProvisioningLog(service, log_prefix)


@pytest.fixture
def states(service: TableServiceClient, log_prefix: str) -> TableNotifyStateStore:
    return TableNotifyStateStore(service, log_prefix)


@pytest_asyncio.fixture
async def raw(azurite: str, log_prefix: str, log: TableProvisioningLog) -> AsyncIterator[dict[str, TableClient]]:
    """The log and tenants tables themselves, to look at rows as stored."""
    await log.page("warm-up")  # the log table exists
    async with (
        TableClient.from_connection_string(azurite, f"{log_prefix}log") as log_table,
        TableClient.from_connection_string(azurite, f"{log_prefix}tenants") as tenants_table,
    ):
        yield {"log": log_table, "tenants": tenants_table}


class TestTableProvisioningLog(ProvisioningLogContract):
    pass


class TestTableNotifyStateStore(NotifyStateContract):
    pass


async def _rows(table: TableClient, partition: str) -> dict[str, dict[str, Any]]:
    pager = table.query_entities("PartitionKey eq @pk", parameters={"pk": partition})
    return {row["RowKey"]: dict(row) async for row in pager}


async def test_the_rows_of_the_log_layout(log: TableProvisioningLog, raw: dict[str, TableClient], tenant: str) -> None:
    """``a|{inv}|{cid}`` for every entry, ``f|…`` once more for a failure, ``x|{inv}|{writer}``
    with the writer's count; ``{inv}`` = 10^17 - µs since the epoch."""
    minute = bucket_of(T0)
    await log.record_many(tenant, [entry(T0, "ok"), entry(T0 + MS, "bad", 409, subject="ann")], {minute: 4}, "w1")
    inv = 10**17 - int(T0.timestamp() * 1_000_000)
    rows = await _rows(raw["log"], tenant)
    assert set(rows) == {
        f"a|{inv:017d}|ok",
        f"a|{inv - 1000:017d}|bad",
        f"f|{inv - 1000:017d}|bad",
        f"x|{10**17 - int(minute.timestamp()) * 1_000_000:017d}|w1",
    }
    failure = rows[f"f|{inv - 1000:017d}|bad"]
    assert failure["status"] == 409 and failure["subject"] == "ann" and failure["operation"] == "GET /Users/{id}"
    assert "detail" not in failure, "absent fields are no properties"
    assert rows[f"x|{10**17 - int(minute.timestamp()) * 1_000_000:017d}|w1"]["unauthenticated"] == 4


async def test_the_row_of_the_digest_state(
    states: TableNotifyStateStore, raw: dict[str, TableClient], tenant: str
) -> None:
    """PartitionKey ``notify``, RowKey the tenant, in ``{prefix}tenants`` beside the tenant records."""
    state = await states.acquire(tenant, "run-a", T0, timedelta(minutes=5))
    assert state is not None
    held = await raw["tenants"].get_entity("notify", tenant)
    assert (held["leaseOwner"], held["leaseUntil"], held["watermark"]) == ("run-a", "2026-03-02T12:05:00.500Z", "")
    assert await states.release(state, T0, credential_alert_at=T0)
    released = await raw["tenants"].get_entity("notify", tenant)
    assert (released["leaseOwner"], released["leaseUntil"]) == ("", "")
    assert released["watermark"] == released["credentialAlertAt"] == "2026-03-02T12:00:00.500Z"


async def test_a_lease_insert_whose_answer_was_lost_is_recognised(
    states: TableNotifyStateStore, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The insert commits, its answer is lost: sent again, it meets its own row (409), which holds
    this run's lease, so the run gets the lease rather than skipping the tenant."""
    table = states._table
    create = table.create_entity
    lost: list[str] = []

    async def answer_lost_once(entity: Any, **kwargs: Any) -> Any:
        result = await create(entity, **kwargs)
        if not lost:
            lost.append(entity["RowKey"])
            raise ServiceResponseError("connection reset after the insert (test)")
        return result

    monkeypatch.setattr(table, "create_entity", answer_lost_once)
    state = await states.acquire(tenant, "run-a", T0, timedelta(minutes=5))
    assert lost == [tenant] and state is not None and state.watermark is None
    assert await states.acquire(tenant, "run-b", T0 + timedelta(minutes=1), timedelta(minutes=5)) is None
    assert await states.release(state, T0)


async def test_a_dead_storage_is_store_unavailable(azurite: str, tenant: str) -> None:
    """Nothing listens (port 9, discard): every call fails fast with the store's StoreUnavailable,
    as the directory's calls do, never with an Azure SDK error."""
    dead = re.sub(r"(TableEndpoint=http://[^:/]+:)\d+", r"\g<1>9", azurite)
    client, _ = service_client(_settings(dead, "dead"), retry_total=0)
    async with client:
        log, states = TableProvisioningLog(client, "dead"), TableNotifyStateStore(client, "dead")
        with pytest.raises(StoreUnavailable):
            await log.record(tenant, entry(T0, "c1"))
        with pytest.raises(StoreUnavailable):
            await log.page(tenant)
        with pytest.raises(StoreUnavailable):
            await log.purge(tenant, T0)
        with pytest.raises(StoreUnavailable):
            await states.acquire(tenant, "run-a", T0, timedelta(minutes=5))
        with pytest.raises(StoreUnavailable):
            await states.exists(tenant)


def test_a_409_is_resource_exists_unless_a_unique_key_is_taken() -> None:
    error = HttpResponseError(message="409 EntityAlreadyExists")
    error.status_code = 409
    error.error_code = "EntityAlreadyExists"  # type: ignore[attr-defined]
    assert isinstance(store_error(error), ResourceExists)
    assert isinstance(store_error(error, _Op("create", {}, role="unique", subject="userName")), UniquenessViolation)
