""":class:`~scim.store.tables.TableStore` against a real Azurite (the session ``azurite`` fixture).

- the store contract (``tests/store_contract.py``, ``tests/event_contract.py``) and the tenant
  registry contract;
- the storage round trips of each operation (``docs/table-layout.md``, "Operations and their
  storage round trips"), counted with :class:`~scim.store.roundtrips.RoundTripCounter`;
- what only the Table layout has: document chunks, size limits, group-flag tombstones, the
  200-group limit, error mapping; and the pure key encoding of :mod:`scim.store.keys`.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from devtools.local_defaults import azurite_connection_string
from scim.settings import Settings
from scim.store import MAX_GROUPS_PER_RESOURCE, keys
from scim.store.azure_errors import store_error
from scim.store.base import (
    EntityTooLarge,
    IndexTerms,
    Member,
    ResourceNotFound,
    StoreError,
    StoreUnavailable,
    TooManyGroups,
    UniquenessViolation,
    VersionMismatch,
)
from scim.store.entities import _resource_entity
from scim.store.operations import _Op, _OpFailed
from scim.store.roundtrips import RoundTripCounter
from scim.store.tables import TableStore
from scim.store.tenant_registry import TableTenantRegistry
from tests.credentials_contract import TenantCredentialsContract
from tests.event_contract import EventContract, MembershipEventContract
from tests.store_contract import (
    AWKWARD_KEYS,
    DirectoryStoreContract,
    TenantRegistryContract,
    new_group,
    new_user,
    user_terms,
    users,
)

T = TypeVar("T")


def _settings(connection_string: str, prefix: str) -> Settings:
    return Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": connection_string, "SCIM_TABLE_PREFIX": prefix})


async def _drop_tables(connection_string: str, *names: str) -> None:
    async with TableServiceClient.from_connection_string(connection_string) as service:
        for name in names:
            await service.delete_table(name)  # no error if it does not exist


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def store_prefix(azurite: str) -> AsyncIterator[str]:
    """A table prefix of this module for the session; its tables are dropped at the end."""
    prefix = "st" + secrets.token_hex(4)
    yield prefix
    await _drop_tables(azurite, f"{prefix}directory", f"{prefix}tenants")


@pytest_asyncio.fixture
async def store(azurite: str, store_prefix: str) -> AsyncIterator[TableStore]:
    table_store = TableStore.from_settings(_settings(azurite, store_prefix))
    yield table_store
    await table_store.close()


@pytest.fixture
def tenant() -> str:
    return "t" + secrets.token_hex(6)


@pytest_asyncio.fixture
async def raw(azurite: str, store_prefix: str, store: TableStore) -> AsyncIterator[TableClient]:
    """The directory table itself, to look at entities as stored."""
    await store.scan("warm-up", "User")  # the table exists
    async with TableClient.from_connection_string(azurite, f"{store_prefix}directory") as table:
        yield table


@pytest_asyncio.fixture
async def counted(azurite: str, store_prefix: str) -> AsyncIterator[tuple[TableStore, RoundTripCounter]]:
    counter = RoundTripCounter()
    table_store = TableStore.from_settings(_settings(azurite, store_prefix), per_call_policies=[counter])
    await table_store.scan("warm-up", "User")  # table creation is not part of any operation's cost
    yield table_store, counter
    await table_store.close()


class TestTableStore(DirectoryStoreContract, EventContract, MembershipEventContract):
    # Azurite does not enforce Table Storage's 252-property limit, and the store learns that a
    # member is in too many groups only from the service refusing the flag merge (reading the
    # member first would cost a round trip on every member PATCH): see test_too_many_groups.
    enforces_group_limit = False


class TestTableTenantRegistry(TenantRegistryContract, TenantCredentialsContract):
    @pytest_asyncio.fixture
    async def registry(self, azurite: str) -> AsyncIterator[TableTenantRegistry]:
        prefix = "rt" + secrets.token_hex(4)  # a fresh tenants table per test: list() sees only its own
        tenants = TableTenantRegistry.from_settings(_settings(azurite, prefix))
        yield tenants
        await tenants.close()
        await _drop_tables(azurite, f"{prefix}tenants")


async def _cost(counter: RoundTripCounter, operation: Awaitable[T]) -> tuple[T, int]:
    counter.reset()
    result = await operation
    return result, counter.count


@pytest.mark.asyncio
class TestRoundTrips:
    """The costs promised by docs/table-layout.md, measured as HTTP requests."""

    async def test_costs_per_operation(self, counted: tuple[TableStore, RoundTripCounter], tenant: str) -> None:
        store, counter = counted
        measured: dict[str, int] = {}
        user, measured["create user"] = await _cost(
            counter, new_user(store, tenant, "rt@example.com", external_id="rt")
        )
        _, measured["get user"] = await _cost(counter, store.get(tenant, "User", user.id))
        found, measured["lookup userName"] = await _cost(
            counter, store.lookup(tenant, "User", "userName", "rt@example.com")
        )
        assert [r.id for r in found] == [user.id]
        found, measured["lookup externalId"] = await _cost(counter, store.lookup(tenant, "User", "externalId", "rt"))
        assert [r.id for r in found] == [user.id]
        _, measured["lookup miss"] = await _cost(counter, store.lookup(tenant, "User", "userName", "nobody"))
        _, measured["replace user"] = await _cost(
            counter,
            store.replace(tenant, "User", user.id, {"userName": "rt2@example.com"}, user_terms("rt2@example.com")),
        )
        groups = [await new_group(store, tenant, f"g{i}") for i in range(3)]
        _, measured["add_members 1"] = await _cost(counter, store.add_members(tenant, groups[0].id, [Member(user.id)]))
        await store.add_members(tenant, groups[1].id, [Member(user.id)])
        await store.add_members(tenant, groups[2].id, [Member(user.id)])
        _, measured["get group with members"] = await _cost(
            counter, store.get(tenant, "Group", groups[0].id, members=True)
        )
        _, measured["get group"] = await _cost(counter, store.get(tenant, "Group", groups[0].id))
        _, measured["remove_members 1"] = await _cost(counter, store.remove_members(tenant, groups[2].id, [user.id]))
        _, measured["scan page"] = await _cost(counter, store.scan(tenant, "User", limit=10))
        _, measured["delete user in 2 groups"] = await _cost(counter, store.delete(tenant, "User", user.id))
        members = await users(store, tenant, 3)
        await store.add_members(tenant, groups[0].id, [Member(u.id) for u in members])
        _, measured["delete group with 3 members"] = await _cost(counter, store.delete(tenant, "Group", groups[0].id))
        assert measured == {
            "create user": 1,
            "get user": 1,
            "lookup userName": 2,
            "lookup externalId": 2,
            "lookup miss": 1,
            "replace user": 2,
            "add_members 1": 1,
            "get group with members": 2,
            "get group": 1,
            "remove_members 1": 1,
            "scan page": 1,
            "delete user in 2 groups": 2,
            "delete group with 3 members": 3,
        }

    async def test_member_patch_cost_does_not_depend_on_group_size(
        self, counted: tuple[TableStore, RoundTripCounter], raw: TableClient, tenant: str
    ) -> None:
        store, counter = counted
        people = await _bulk_users(raw, tenant, 400)
        old, new = people[:300], people[300:]
        small = await new_group(store, tenant, "small", [Member(u) for u in old[:3]])
        big = await new_group(store, tenant, "big", [Member(u) for u in old])
        for group in (small, big):
            _, added = await _cost(counter, store.add_members(tenant, group.id, [Member(u) for u in new]))
            _, removed = await _cost(counter, store.remove_members(tenant, group.id, new))
            assert (added, removed) == (3, 3), group.doc
        members = (await store.get(tenant, "Group", big.id, members=True)).members
        assert members is not None and len(members) == 300
        assert (await store.get(tenant, "User", old[0])).groups == tuple(sorted([small.id, big.id]))


async def _bulk_users(raw: TableClient, tenant: str, n: int) -> list[str]:
    """``n`` user entities written as the store writes them, 100 per transaction (Azurite is slow
    at single-entity transactions); without index rows, which membership tests do not need."""
    pk, now = keys.partition_key(tenant), "2024-01-01T00:00:00.000Z"
    ids = [str(uuid.uuid4()) for _ in range(n)]
    entities = [_resource_entity(pk, "User", i, {"userName": i}, IndexTerms(), now, now, {}) for i in ids]
    await asyncio.gather(
        *(raw.submit_transaction([("create", e) for e in entities[k : k + 100]]) for k in range(0, n, 100))
    )
    return ids


@pytest.mark.asyncio
class TestTableLayout:
    async def test_version_follows_the_entity_etag_without_exposing_it(
        self, store: TableStore, raw: TableClient, tenant: str
    ) -> None:
        user = await new_user(store, tenant, "etag@example.com")
        entity = await raw.get_entity(keys.partition_key(tenant), keys.resource_key("User", user.id))
        etag = entity.metadata["etag"]
        assert user.version.startswith('W/"') and "datetime" not in user.version and etag not in user.version
        await raw.update_entity(
            {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"], "touched": 1}, mode="merge"
        )
        assert (await store.get(tenant, "User", user.id)).version != user.version

    async def test_rows_of_the_layout(self, store: TableStore, raw: TableClient, tenant: str) -> None:
        user = await store.create(tenant, "User", {"userName": "L/1"}, user_terms("L/1", "E|1"))
        group = await new_group(store, tenant, "Team", [Member(user.id)])
        pk = keys.partition_key(tenant)
        rows = {e["RowKey"]: e async for e in raw.query_entities("PartitionKey eq @pk", parameters={"pk": pk})}
        assert set(rows) == {
            f"u|{user.id}",
            f"g|{group.id}",
            f"m|{group.id}|{user.id}",
            "U|userName|l%2F1",
            f"X|U|externalId|E%7C1|{user.id}",
            "G|displayName|team",
        }
        assert rows[f"m|{group.id}|{user.id}"]["type"] == "User"
        assert rows["U|userName|l%2F1"]["id"] == user.id
        assert rows[f"u|{user.id}"]["m_" + group.id.replace("-", "")] is True

    async def test_large_documents_are_chunked(self, store: TableStore, raw: TableClient, tenant: str) -> None:
        doc = {"userName": "big@example.com", "blob": "é😀x\u0000" * 30_000}  # ~ 150,000 UTF-16 units
        user = await store.create(tenant, "User", doc, user_terms("big@example.com"))
        entity = await raw.get_entity(keys.partition_key(tenant), keys.resource_key("User", user.id))
        chunks = sorted(name for name in entity if name.startswith("doc"))
        assert len(chunks) >= 4
        assert all(len(entity[c].encode("utf-16-le")) // 2 <= 32_000 for c in chunks)
        assert (await store.get(tenant, "User", user.id)).doc == doc
        replaced = await store.replace(
            tenant, "User", user.id, {"userName": "big@example.com"}, user_terms("big@example.com")
        )
        entity = await raw.get_entity(keys.partition_key(tenant), keys.resource_key("User", user.id))
        assert sorted(name for name in entity if name.startswith("doc")) == ["doc0"]
        assert replaced.doc == {"userName": "big@example.com"}

    async def test_replace_compacts_tombstones(self, store: TableStore, raw: TableClient, tenant: str) -> None:
        user = await new_user(store, tenant, "tomb@example.com")
        kept, left = await new_group(store, tenant, "kept"), await new_group(store, tenant, "left")
        for group in (kept, left):
            await store.add_members(tenant, group.id, [Member(user.id)])
        await store.remove_members(tenant, left.id, [user.id])
        pk, rk = keys.partition_key(tenant), keys.resource_key("User", user.id)
        flags = {k: v for k, v in (await raw.get_entity(pk, rk)).items() if k.startswith("m_")}
        assert flags == {keys.group_flag(kept.id): True, keys.group_flag(left.id): False}
        await store.replace(tenant, "User", user.id, {"userName": "tomb@example.com"}, user_terms("tomb@example.com"))
        flags = {k: v for k, v in (await raw.get_entity(pk, rk)).items() if k.startswith("m_")}
        assert flags == {keys.group_flag(kept.id): True}
        assert (await store.get(tenant, "User", user.id)).groups == (kept.id,)

    async def test_replace_retries_after_a_concurrent_membership_change(self, store: TableStore, tenant: str) -> None:
        user = await new_user(store, tenant, "busy@example.com")
        groups = [await new_group(store, tenant, f"busy{i}") for i in range(10)]
        await asyncio.gather(
            store.replace(
                tenant, "User", user.id, {"userName": "busy@example.com", "n": 1}, user_terms("busy@example.com")
            ),
            *(store.add_members(tenant, g.id, [Member(user.id)]) for g in groups),
        )
        got = await store.get(tenant, "User", user.id)
        assert got.doc["n"] == 1 and set(got.groups) == {g.id for g in groups}

    async def test_delete_races_with_member_adds(self, store: TableStore, tenant: str) -> None:
        user = await new_user(store, tenant, "gone@example.com")
        groups = [await new_group(store, tenant, f"race{i}") for i in range(8)]
        results = await asyncio.gather(
            store.delete(tenant, "User", user.id),
            *(store.add_members(tenant, g.id, [Member(user.id)]) for g in groups),
            return_exceptions=True,
        )
        assert results[0] is None
        for group in groups:  # whatever the interleaving, no membership names the deleted user
            assert (await store.get(tenant, "Group", group.id, members=True)).members == ()

    async def test_deleting_a_large_group_takes_several_transactions(
        self, counted: tuple[TableStore, RoundTripCounter], raw: TableClient, tenant: str
    ) -> None:
        store, counter = counted
        people = await _bulk_users(raw, tenant, 120)
        parent = await new_group(store, tenant, "parent")
        group = await new_group(store, tenant, "large", [Member(u) for u in people])
        await store.add_members(tenant, parent.id, [Member(group.id, "Group")])
        _, trips = await _cost(counter, store.delete(tenant, "Group", group.id))
        assert trips == 2 + 3  # read + member query + ⌈(120 + 1) / 49⌉ transactions
        pk = keys.partition_key(tenant)
        lo, hi = keys.prefix_range("m|")
        left = [
            e
            async for e in raw.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi", parameters={"pk": pk, "lo": lo, "hi": hi}
            )
        ]
        assert left == []
        for user in await asyncio.gather(*(store.get(tenant, "User", u) for u in people[::7])):
            assert user.groups == ()
        assert (await store.get(tenant, "Group", parent.id, members=True)).members == ()

    async def test_delete_tenant_with_many_rows(self, store: TableStore, raw: TableClient, tenant: str) -> None:
        await _bulk_users(raw, tenant, 1050)  # more than one page of 1,000
        await store.delete_tenant(tenant)
        rows = [
            e async for e in raw.query_entities("PartitionKey eq @pk", parameters={"pk": keys.partition_key(tenant)})
        ]
        assert rows == []

    async def test_too_many_groups(
        self, store: TableStore, raw: TableClient, tenant: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the service refuses the flag merge (252 properties), tombstones are compacted and
        the add retried; at 200 live groups it is TooManyGroups."""
        full, tombs = (
            await new_user(store, tenant, "full@example.com"),
            await new_user(store, tenant, "tombs@example.com"),
        )
        group = await new_group(store, tenant, "one more")
        pk = keys.partition_key(tenant)
        await raw.update_entity(_row_with_flags(pk, full.id, MAX_GROUPS_PER_RESOURCE, True), mode=UpdateMode.MERGE)
        await raw.update_entity(_row_with_flags(pk, tombs.id, 150, False), mode=UpdateMode.MERGE)
        refusals = _refuse_member_merges(store, monkeypatch, times=2)
        with pytest.raises(TooManyGroups):
            await store.add_members(tenant, group.id, [Member(full.id)])
        await store.add_members(tenant, group.id, [Member(tombs.id)])
        assert refusals == [full.id, tombs.id]
        assert {m.value for m in (await store.get(tenant, "Group", group.id, members=True)).members or ()} == {tombs.id}
        flags = {
            k: v
            for k, v in (await raw.get_entity(pk, keys.resource_key("User", tombs.id))).items()
            if k.startswith("m_")
        }
        assert flags == {keys.group_flag(group.id): True}

    async def test_storage_down_is_store_unavailable(self, tenant: str) -> None:
        nothing_listens = _settings(azurite_connection_string(table_port=9), "down")  # port 9: discard
        down = TableStore.from_settings(nothing_listens, retry_total=0)
        try:
            with pytest.raises(StoreUnavailable):
                await down.get(tenant, "User", str(uuid.uuid4()))
        finally:
            await down.close()


def _row_with_flags(pk: str, user_id: str, n: int, value: bool) -> dict[str, Any]:
    flags = {keys.group_flag(str(uuid.uuid4())) or "": value for _ in range(n)}
    return {"PartitionKey": pk, "RowKey": keys.resource_key("User", user_id), **flags}


def _refuse_member_merges(store: TableStore, monkeypatch: pytest.MonkeyPatch, times: int) -> list[str]:
    """Make the next ``times`` transactions with a member flag merge fail as Azure does past 252 properties."""
    refused: list[str] = []
    submit = store._submit

    async def refusing(ops: list[_Op]) -> Any:
        member_ops = [op for op in ops if op.role == "member"]
        if member_ops and len(refused) < times:
            refused.append(member_ops[0].subject)
            raise _OpFailed(member_ops[0], EntityTooLarge("TooManyProperties"))
        return await submit(ops)

    monkeypatch.setattr(store, "_submit", refusing)
    return refused


def _http_error(status: int, code: str = "") -> HttpResponseError:
    error = HttpResponseError(message=f"{status} {code}")
    error.status_code = status
    error.error_code = code  # type: ignore[attr-defined]
    return error


def test_store_error_mapping() -> None:
    unique = _Op("create", {}, role="unique", subject="userName")
    member = _Op("update", {}, role="member", subject="m1")
    mapped = store_error(_http_error(409, "EntityAlreadyExists"), unique)
    assert isinstance(mapped, UniquenessViolation) and mapped.attribute == "userName"
    assert isinstance(store_error(_http_error(404, "ResourceNotFound"), member), StoreError)
    assert store_error(_http_error(404, "ResourceNotFound"), member).ids == ["m1"]  # type: ignore[attr-defined]
    assert isinstance(store_error(_http_error(404, "ResourceNotFound")), ResourceNotFound)
    assert isinstance(store_error(_http_error(412, "UpdateConditionNotSatisfied")), VersionMismatch)
    assert isinstance(store_error(_http_error(400, "TooManyProperties")), EntityTooLarge)
    assert isinstance(store_error(_http_error(413)), EntityTooLarge)
    for status in (408, 429, 500, 503):
        assert isinstance(store_error(_http_error(status)), StoreUnavailable)
    assert isinstance(store_error(ServiceRequestError("refused")), StoreUnavailable)
    assert isinstance(store_error(TimeoutError()), StoreUnavailable)
    assert type(store_error(_http_error(400, "InvalidInput"))) is StoreError


# ---- keys (pure) --------------------------------------------------------------------------------------

FORBIDDEN = set("/\\#?") | {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)}


@pytest.mark.parametrize("value", [*AWKWARD_KEYS, "plain", "x" * 400])
def test_key_encoding_round_trips(value: str) -> None:
    encoded = keys.encode_value(value)
    assert not FORBIDDEN & set(encoded) and "|" not in encoded and encoded.isascii()
    if len(encoded) <= keys.MAX_ENCODED:
        assert keys.decode_value(encoded) == value


def test_key_encoding_is_injective_and_hashes_long_values() -> None:
    encodings = [keys.encode_value(v) for v in AWKWARD_KEYS]
    assert len(set(encodings)) == len(AWKWARD_KEYS)
    assert keys.encode_value("a|b") == "a%7Cb" != keys.encode_value("a%7Cb") == "a%257Cb"
    long_a, long_b = "é" * 300, "é" * 299 + "e"
    assert keys.encode_value(long_a).startswith("~h") and len(keys.encode_value(long_a)) == 66
    assert keys.encode_value(long_a) != keys.encode_value(long_b)
    assert keys.encode_value("~h" + "0" * 64).startswith("%7Eh")  # never mistaken for a hash
    with pytest.raises(ValueError):
        keys.decode_value(keys.encode_value(long_a))


def test_row_keys() -> None:
    gid, uid = str(uuid.uuid4()), str(uuid.uuid4())
    assert keys.resource_key("User", uid) == f"u|{uid}" and keys.resource_key("Group", gid) == f"g|{gid}"
    assert keys.membership_key(gid, uid) == f"m|{gid}|{uid}"
    assert keys.unique_key("User", "userName", "a/b") == "U|userName|a%2Fb"
    assert keys.unique_key("Group", "displayName", "x") == "G|displayName|x"
    assert keys.multi_key("User", "externalId", "e", uid) == f"X|U|externalId|e|{uid}"
    assert keys.id_from_key(keys.membership_key(gid, "a/b"), keys.membership_prefix(gid)) == "a/b"
    lo, hi = keys.prefix_range(keys.membership_prefix("g1"))
    inside, outside = ["m|g1|", "m|g1|x", "m|g1|~h00", "m|g1|%7C"], ["m|g10|x", "m|g1}", "m|g2|x", "m|g|x"]
    assert all(lo <= k < hi for k in inside) and not any(lo <= k < hi for k in outside)


def test_group_flags() -> None:
    gid = str(uuid.uuid4())
    flag = keys.group_flag(gid)
    assert flag == "m_" + gid.replace("-", "") and keys.flag_group_id(flag) == gid
    assert keys.group_flag(gid.upper()) is None and keys.group_flag("nope") is None
    assert keys.flag_group_id("doc0") is None and keys.flag_group_id("m_zz") is None


async def test_a_refused_table_creation_is_taken_as_a_provisioned_table(azurite: str, store_prefix: str) -> None:
    """In Azure the app's role is scoped to each table (infra/rbac.bicep), so creating a table may be
    refused with 403; the tables exist (infra/ creates them), so the store must go on, not fail
    every request. Azurite grants everything, so the refusal is injected in front of it."""
    from azure.core.exceptions import HttpResponseError

    from scim.store import azure_client

    table_store = TableStore.from_settings(_settings(azurite, store_prefix))
    service = table_store.service_client
    real_create = service.create_table

    async def refused(name: str, **kwargs: Any) -> Any:
        await real_create(name, **kwargs)  # the table exists, as infra/ makes sure
        error = HttpResponseError(
            message="This request is not authorized to perform this operation using this permission."
        )
        error.status_code = 403
        raise error

    service.create_table = refused  # type: ignore[method-assign]
    azure_client._READY_TABLES.clear()
    try:
        created = await table_store.create("t-refused", "User", {"userName": "a"}, IndexTerms(unique={"userName": "a"}))
        assert (await table_store.get("t-refused", "User", created.id)).doc == {"userName": "a"}
    finally:
        await table_store.close()
