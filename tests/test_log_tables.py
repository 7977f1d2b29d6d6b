"""The provisioning log and digest state on Azure Table Storage, against a real Azurite (the
session ``azurite`` fixture), each in tables of a prefix of its own.

- the contracts (``tests/log_contract.py``) on
  :class:`~scim.provisioning_log.tables.TableProvisioningLog` and
  :class:`~scim.notify.state_tables.TableNotifyStateStore`;
- what only the tables have: the rows of the layout, one storage call per write of the log
  writer (its hourly tallies in the entries' transaction), a transaction whose answer was lost
  sent again, a lease insert whose answer was lost, a dead storage raising the store's
  StoreUnavailable, and the 409 mapping the lease relies on.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from azure.core.exceptions import HttpResponseError, ServiceResponseError
from azure.data.tables.aio import TableClient, TableServiceClient

from scim.notify.state_tables import TableNotifyStateStore
from scim.provisioning_log import HourCount, LogWriter, bucket_of, hour_of
from scim.provisioning_log import tables as log_tables
from scim.provisioning_log.tables import TableProvisioningLog
from scim.settings import Settings
from scim.store.azure_client import service_client
from scim.store.azure_errors import store_error
from scim.store.base import ResourceExists, StoreUnavailable, UniquenessViolation
from scim.store.operations import _Op
from scim.store.roundtrips import RoundTripCounter
from tests.log_contract import H0, HOUR, MS, SECOND, T0, NotifyStateContract, ProvisioningLogContract, entry


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


async def test_the_rows_of_the_hourly_tallies(
    log: TableProvisioningLog, raw: dict[str, TableClient], tenant: str
) -> None:
    """``h|{inv}|{series}`` per hour and series, ``{inv}`` the hour's start inverted, the series
    ``{writer}.{n}``; properties ``requests`` and ``failures``, the series' totals. A writer keeps
    an hour's series while the hour is recent (here: hours to come), and starts another for an
    hour over for more than an hour (here: T0's)."""
    writer = LogWriter(log)
    soon = hour_of(datetime.now(UTC)) + 2 * HOUR
    for rounds in ([(soon + SECOND, 200), (soon + 2 * SECOND, 409), (soon + HOUR, 500)], [(soon + 3 * SECOND, 201)]):
        for at, status in rounds:
            writer.submit(tenant, entry(at, f"c{status}", status))
        await writer.drain()
    for i in range(2):
        writer.submit(tenant, entry(T0 + i * SECOND, f"old{i}", 404))
        await writer.drain()
    tallies = {k: v for k, v in (await _rows(raw["log"], tenant)).items() if k.startswith("h|")}
    assert all(re.fullmatch(rf"h\|\d{{17}}\|{writer.writer}\.\d+", key) for key in tallies), tallies

    def inv(hour: datetime) -> int:
        return 10**17 - int(hour.timestamp()) * 1_000_000

    found = sorted((int(key.split("|")[1]), row["requests"], row["failures"]) for key, row in tallies.items())
    assert found == [(inv(soon + HOUR), 1, 1), (inv(soon), 3, 1), (inv(H0), 1, 1), (inv(H0), 1, 1)]


async def test_a_write_of_the_log_writer_is_one_storage_call(azurite: str, log_prefix: str, tenant: str) -> None:
    """The hourly tallies ride in the entries' transaction: a write of entries of two hours,
    failures and a count of unauthenticated requests among them, is one call, as without
    tallies; more entries than a transaction holds take one call per 100 rows."""
    counter = RoundTripCounter()
    client, _ = service_client(_settings(azurite, log_prefix), per_call_policies=[counter])
    async with client:
        log = TableProvisioningLog(client, log_prefix)
        await log.page("warm-up")
        writer = LogWriter(log)
        for count, failed in ((1, 0), (6, 1), (30, 5)):
            counter.reset()
            for i in range(count):
                writer.submit(
                    tenant, entry(H0 + HOUR - (count // 2 - i) * MS, f"n{count}-{i}", 500 if i < failed else 200)
                )
            writer.count_unauthenticated(tenant)
            await writer.drain()
            assert counter.methods == ["POST"], (count, counter.methods)
        counter.reset()
        for i in range(150):  # 225 rows and 1 tally: three transactions
            writer.submit(tenant, entry(H0 + 10 * MS * i, f"big{i:03d}", 409 if i % 2 else 201))
        await writer.drain()
        assert counter.count == 3
        hourly = await log.activity(tenant, since=H0, until=H0 + 2 * HOUR)
        assert hourly == [HourCount(H0, 3 + 15 + 150, 1 + 5 + 75), HourCount(H0 + HOUR, 1 + 3 + 15, 0)]


async def test_a_write_whose_answer_was_lost_is_sent_again_and_counted_once(
    log: TableProvisioningLog, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction commits, its answer is lost: sent again (resend_if_lost), its tallies are
    the same totals, so the hour counts each entry once."""
    submit = log_tables.submit_transaction
    lost: list[int] = []

    async def answer_lost_once(table: Any, operations: Any, **kwargs: Any) -> Any:
        result = await submit(table, operations, **kwargs)
        if not lost:
            lost.append(len(operations))
            raise ServiceResponseError("connection reset after the transaction (test)")
        return result

    monkeypatch.setattr(log_tables, "submit_transaction", answer_lost_once)
    writer = LogWriter(log)
    for round_ in range(2):
        for i in range(4):
            writer.submit(tenant, entry(H0 + (round_ * 4 + i) * SECOND, f"c{round_}{i}", 404 if i == 0 else 200))
        await writer.drain()
    assert lost == [6], "4 entries, a failure row and the tally: one transaction, sent twice"
    assert await log.activity(tenant, since=H0, until=H0 + HOUR) == [HourCount(H0, 8, 2)]
    assert await log.count(tenant, since=H0, until=H0 + HOUR) == 8


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
