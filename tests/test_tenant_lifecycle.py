"""A tenant's lifecycle as an operator drives it, against the session's real Azurite (and the
memory double where the registry contract is shared):

- ``tenant delete`` is resumable: it revokes the token first and removes the record last; an
  interrupted delete (storage going away part way) leaves a tenant shown as ``deleting`` that
  authenticates nobody, whose name ``tenant create`` refuses, and that a second ``tenant
  delete`` finishes, also for data left without a record by an older version;
- ``tenant delete`` asks to type the name on a terminal, needs ``--yes`` without one;
- tenant names are matched whole (``dev\\n`` is not ``dev``);
- token changes are guarded by the record's version; supplied tokens need 128 bits;
- ``scim.admin log`` escapes control characters of logged values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pty
import secrets
import subprocess
import sys
import unicodedata
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.data.tables.aio import TableServiceClient

from scim import tenants as tenants_module
from scim.admin import __main__ as cli
from scim.admin import core
from scim.functions.runtime import Runtime, build_runtime, use_runtime
from scim.provisioning_log import LogEntry, format_time
from scim.settings import Settings
from scim.store import keys
from scim.store.base import IndexTerms, Member
from scim.store.memory import MemoryTenantRegistry
from scim.store.roundtrips import RoundTripCounter
from scim.store.tenant_registry import TableTenantRegistry
from scim.tenants import InvalidTenantName, TenantExists, TenantNotFound, TenantRegistry, validate_tenant_name
from tests.functions_client import FunctionsClient
from tests.helpers import ROOT, admin
from tests.helpers import admin_env as _env
from tests.scim_fixtures import azurite_settings


def _name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(azurite: str, table_prefix: str) -> Settings:
    return azurite_settings(azurite, table_prefix)


@pytest.fixture(params=["memory", "tables"])
async def registry(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[TenantRegistry]:
    if request.param == "memory":
        yield MemoryTenantRegistry()
        return
    tables = TableTenantRegistry.from_settings(settings)
    yield tables
    await tables.close()


# ---- storage as it is (read with a client of its own) ------------------------------------------


async def _count(settings: Settings, table: str, partition: str) -> int:
    connection_string = settings.table_connection_string.get_secret_value()
    async with TableServiceClient.from_connection_string(connection_string) as service:
        client = service.get_table_client(f"{settings.table_prefix}{table}")
        try:
            return len(
                [
                    r
                    async for r in client.query_entities(
                        "PartitionKey eq @pk", parameters={"pk": partition}, select=["RowKey"]
                    )
                ]
            )
        except ResourceNotFoundError:
            return 0


async def _row(settings: Settings, table: str, partition: str, row: str) -> dict[str, Any] | None:
    connection_string = settings.table_connection_string.get_secret_value()
    async with TableServiceClient.from_connection_string(connection_string) as service:
        client = service.get_table_client(f"{settings.table_prefix}{table}")
        try:
            return dict(await client.get_entity(partition, row))
        except ResourceNotFoundError:
            return None


async def _stored(settings: Settings, name: str) -> dict[str, Any]:
    """Everything stored of tenant ``name``: its record's state (None: no record), the rows of
    its directory partition and of its provisioning log, and its digest state row (0 or 1)."""
    record = await _row(settings, "tenants", "tenant", name)
    return {
        "record": None if record is None else record.get("state") or "active",
        "directory": await _count(settings, "directory", keys.partition_key(name)),
        "log": await _count(settings, "log", name),
        "digest": int(await _row(settings, "tenants", "notify", name) is not None),
    }


NOTHING = {"record": None, "directory": 0, "log": 0, "digest": 0}


async def _populate(runtime: Runtime, name: str, users: int, log_entries: int) -> None:
    """Users with their index rows, a group of 50 of them, log entries (a third failed) and digest state."""
    gate = asyncio.Semaphore(16)

    async def user(i: int) -> str:
        async with gate:
            doc = {"userName": f"u{i}@contoso.example", "externalId": f"ext-{i}"}
            terms = IndexTerms(
                unique={"userName": f"u{i}@contoso.example"}, multi=frozenset({("externalId", f"ext-{i}")})
            )
            return (await runtime.store.create(name, "User", doc, terms)).id

    ids = await asyncio.gather(*(user(i) for i in range(users)))
    await runtime.store.create(
        name,
        "Group",
        {"displayName": "Sales"},
        IndexTerms(unique={"displayName": "sales"}),
        [Member(i) for i in ids[:50]],
    )
    now = datetime.now(UTC)
    entries = [
        LogEntry(
            format_time(now - timedelta(seconds=i)),
            "POST /Users",
            409 if i % 3 == 0 else 201,
            uuid.uuid4().hex,
            3.0,
            "User",
        )
        for i in range(log_entries)
    ]
    await runtime.log.record_many(name, entries)
    states = runtime.states
    state = await states.acquire(name, "test", now, timedelta(minutes=1))
    assert state is not None
    await states.release(state, now)


class StorageGoesAway(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Lets ``allowed`` entity-group transactions ($batch) through, then refuses every storage
    request as a dead storage account would (connection refused)."""

    def __init__(self, allowed: int) -> None:
        super().__init__()
        self.allowed = allowed
        self.gone = False

    def on_request(self, request: Any) -> None:
        if not self.gone and request.http_request.url.endswith("/$batch"):
            self.allowed -= 1
            self.gone = self.allowed < 0
        if self.gone:
            raise ServiceRequestError("storage went away (test)")


# ---- H3: resumable delete -----------------------------------------------------------------------


async def test_an_interrupted_delete_revokes_at_once_blocks_the_name_and_a_second_delete_finishes(
    settings: Settings, azurite: str, table_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _name("big")
    credentials = await core.create_tenant(settings, name, notify=["ops@contoso.example"])
    runtime = build_runtime(settings)
    try:
        await _populate(runtime, name, users=400, log_entries=60)
    finally:
        await runtime.close()
    before = await _stored(settings, name)
    assert before["record"] == "active" and before["directory"] > 1200 and before["log"] == 80 and before["digest"] == 1

    # `tenant delete` while storage goes away after four transactions of deletes.
    gone = StorageGoesAway(allowed=4)

    async def runtime_whose_storage_goes_away(s: Settings) -> Runtime:
        return build_runtime(s, per_call_policies=[gone])

    monkeypatch.setattr(core, "_with_runtime", runtime_whose_storage_goes_away)
    with pytest.raises(Exception) as interrupted:
        await core.delete_tenant(settings, name)
    monkeypatch.undo()
    assert gone.gone, "the delete was interrupted by the storage going away"
    left = await _stored(settings, name)
    print(f"\nbefore: {before}\nafter the interrupted delete: {left}")
    assert left["record"] == "deleting", "the token is revoked first, the record removed last"
    assert 0 < left["directory"] < before["directory"], "interrupted part way through the directory"
    assert type(interrupted.value).__name__ == "DeleteInterrupted"
    assert f"python -m scim.admin tenant delete {name}" in str(interrupted.value)

    # Meanwhile the tenant authenticates nobody, and its refused requests are not logged.
    runtime = build_runtime(settings)
    use_runtime(runtime)
    try:
        assert await runtime.tenants.read_credentials(name) is None
        assert not await runtime.tenants.authenticate(name, credentials.token)
        refused = await FunctionsClient(name, credentials.token).get("/Users")
        assert refused.status == 401
        await runtime.log_writer.drain()
    finally:
        use_runtime(None)
        await runtime.close()
    assert await _count(settings, "log", name) == left["log"]

    env = _env(azurite, table_prefix)
    listed = admin(env, "tenant", "list")
    assert any(line.startswith(f"{name}\t") and "deleting" in line for line in listed.stdout.splitlines()), (
        listed.stdout
    )
    assert {t["tenant"]: t["state"] for t in json.loads(admin(env, "tenant", "list", "--json").stdout)}[
        name
    ] == "deleting"
    create = admin(env, "tenant", "create", name)
    assert create.returncode == 1 and "Secret Token" not in create.stdout
    assert f"finish the delete with `python -m scim.admin tenant delete {name}`" in create.stderr, create.stderr
    regenerate = admin(env, "token", "regenerate", name)
    assert (
        regenerate.returncode == 1 and "Secret Token" not in regenerate.stdout and "being deleted" in regenerate.stderr
    )

    second = admin(env, "tenant", "delete", name, "--yes")
    print(
        f"second delete: exit {second.returncode}, {second.stdout.strip()!r}; stored: {await _stored(settings, name)}"
    )
    assert second.returncode == 0, second.stderr
    assert f"Finished deleting tenant {name}." in second.stdout
    assert await _stored(settings, name) == NOTHING

    # The name is free again, and the new tenant starts empty.
    created = admin(env, "tenant", "create", name, "--json")
    assert created.returncode == 0, created.stderr
    runtime = build_runtime(settings)
    use_runtime(runtime)
    try:
        listing = await FunctionsClient(name, json.loads(created.stdout)["token"]).get("/Users")
        assert listing.status == 200 and listing.json["totalResults"] == 0
    finally:
        use_runtime(None)
        await runtime.close()


async def test_data_left_without_a_record_blocks_the_name_until_tenant_delete_removes_it(
    settings: Settings, azurite: str, table_prefix: str
) -> None:
    """What an interrupted delete of the previous version left: the record gone, the data there."""
    name = _name("orphan")
    await core.create_tenant(settings, name)
    runtime = build_runtime(settings)
    try:
        await _populate(runtime, name, users=30, log_entries=6)
        await runtime.tenants.delete(name)  # the old `tenant delete`'s first step, then it stopped
    finally:
        await runtime.close()
    assert (await _stored(settings, name))["directory"] > 0

    env = _env(azurite, table_prefix)
    create = admin(env, "tenant", "create", name)
    assert create.returncode == 1, f"a new tenant {name} would adopt the old users: {create.stdout}"
    assert f"python -m scim.admin tenant delete {name}" in create.stderr

    finished = admin(env, "tenant", "delete", name, "--yes")
    assert finished.returncode == 0, finished.stderr
    assert await _stored(settings, name) == NOTHING
    assert admin(env, "tenant", "create", name).returncode == 0

    nothing = admin(env, "tenant", "delete", _name("never"), "--yes")
    assert nothing.returncode == 1 and "no tenant" in nothing.stderr


async def test_a_tenant_being_deleted_authenticates_nobody_and_cannot_be_changed(registry: TenantRegistry) -> None:
    name = _name("del")
    token = await registry.create(name)
    await registry.set_notifications(name, ["ops@contoso.example"], True)
    await registry.begin_delete(name)  # type: ignore[attr-defined]
    assert await registry.read_credentials(name) is None
    assert not await registry.authenticate(name, token)
    assert await registry.state(name) == "deleting"  # type: ignore[attr-defined]
    info = await registry.info(name)
    assert info.state == "deleting" and info.notify_enabled is False  # type: ignore[attr-defined]
    with pytest.raises(TenantExists):
        await registry.create(name)
    with pytest.raises(tenants_module.TenantDeleting):  # type: ignore[attr-defined]
        await registry.set_token(name)
    with pytest.raises(tenants_module.TenantDeleting):  # type: ignore[attr-defined]
        await registry.set_notifications(name, ["ops@contoso.example"], True)
    await registry.begin_delete(name)  # type: ignore[attr-defined]  # again: nothing changes
    assert await registry.read_credentials(name) is None
    await registry.delete(name)
    assert await registry.state(name) is None  # type: ignore[attr-defined]
    with pytest.raises(TenantNotFound):
        await registry.begin_delete(name)  # type: ignore[attr-defined]


# ---- L8: confirmation ---------------------------------------------------------------------------


def _delete_on_a_terminal(env: dict[str, str], name: str, typed: str) -> subprocess.CompletedProcess[str]:
    """``tenant delete NAME`` with a real terminal (a pty) as stdin, on which ``typed`` is typed."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scim.admin", "tenant", "delete", name],
            cwd=ROOT,
            env=env,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(master, typed.encode() + b"\n")
        out, err = proc.communicate(timeout=60)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        os.close(slave)
        os.close(master)


async def test_tenant_delete_asks_for_the_name_on_a_terminal_and_needs_yes_without_one(
    settings: Settings, azurite: str, table_prefix: str
) -> None:
    name = _name("keep")
    credentials = await core.create_tenant(settings, name)
    env = _env(azurite, table_prefix)
    registry = TableTenantRegistry.from_settings(settings)
    try:
        scripted = admin(env, "tenant", "delete", name)  # stdin is not a terminal
        assert scripted.returncode == 1, scripted.stdout
        assert "--yes" in scripted.stderr
        assert await registry.authenticate(name, credentials.token)

        mistyped = _delete_on_a_terminal(env, name, name + "x")
        assert mistyped.returncode == 1, mistyped.stdout
        assert "Type the tenant name to confirm" in mistyped.stderr and "nothing was deleted" in mistyped.stderr
        assert await registry.authenticate(name, credentials.token)

        confirmed = _delete_on_a_terminal(env, name, name)
        assert confirmed.returncode == 0, confirmed.stderr
        assert f"Deleted tenant {name}." in confirmed.stdout
        assert await registry.state(name) is None  # type: ignore[attr-defined]

        other = await core.create_tenant(settings, _name("yes"))
        assert admin(env, "tenant", "delete", other.tenant, "--yes").returncode == 0
        assert not await registry.authenticate(other.tenant, other.token)
    finally:
        await registry.close()


# ---- L2: tenant names ---------------------------------------------------------------------------


def test_tenant_names_must_match_whole() -> None:
    assert validate_tenant_name("dev") == "dev"
    for bad in ("dev\n", "dev\r\n", "\ndev", "dev\x00"):
        with pytest.raises(InvalidTenantName):
            validate_tenant_name(bad)


async def test_registries_refuse_a_name_with_a_trailing_newline(registry: TenantRegistry) -> None:
    with pytest.raises(InvalidTenantName):
        await registry.create("dev\n")
    assert await registry.read_credentials("dev\n") is None
    assert "dev\n" not in [t.name for t in await registry.list()]


async def test_the_scim_endpoint_refuses_a_name_with_a_newline_before_reading_storage(settings: Settings) -> None:
    counter = RoundTripCounter()
    runtime = build_runtime(settings, per_call_policies=[counter])
    use_runtime(runtime)
    try:
        name = _name("nl")
        token = await runtime.tenants.create(name)
        counter.reset()
        refused = await FunctionsClient(name + "\n", token).get("/Users")
        assert refused.status == 401
        assert counter.count == 0, "the name is refused before its token hash is read"
        assert (await FunctionsClient(name, token).get("/Users")).status == 200
    finally:
        use_runtime(None)
        await runtime.close()


# ---- L3: token changes and supplied tokens --------------------------------------------------------


async def test_concurrent_token_changes_one_conflicts_and_the_token_returned_works(registry: TenantRegistry) -> None:
    name = _name("rot")
    await registry.create(name)
    read = getattr(registry, "_read_row", None)
    if isinstance(registry, TableTenantRegistry) and read is not None:
        # Both regenerations read the record before either writes (as two operators can).
        reads, both_read = 0, asyncio.Event()

        async def read_and_wait(*args: Any, **kwargs: Any) -> Any:
            nonlocal reads
            row = await read(*args, **kwargs)
            reads += 1
            if reads >= 2:
                both_read.set()
            await asyncio.wait_for(both_read.wait(), 10)
            return row

        registry._read_row = read_and_wait  # type: ignore[method-assign]
    results = await asyncio.gather(registry.set_token(name), registry.set_token(name), return_exceptions=True)
    tokens = [r for r in results if isinstance(r, str)]
    assert len(tokens) == 1, results
    conflict = next(r for r in results if not isinstance(r, str))
    assert isinstance(conflict, tenants_module.TokenConflict)  # type: ignore[attr-defined]
    assert "run the command again" in str(conflict)
    assert await registry.authenticate(name, tokens[0])
    assert await registry.set_token(name)  # one at a time: no conflict


def test_token_regenerate_reports_a_concurrent_change_and_prints_no_token(
    azurite: str, table_prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = azurite_settings(azurite, table_prefix)
    monkeypatch.setenv("SCIM_TABLE_CONNECTION_STRING", azurite)
    monkeypatch.setenv("SCIM_TABLE_PREFIX", table_prefix)
    monkeypatch.delenv("SCIM_TABLE_ENDPOINT", raising=False)
    name = _name("race")
    asyncio.run(core.create_tenant(settings, name))

    read = getattr(TableTenantRegistry, "_read_row", None)
    others: list[str] = []

    async def read_then_another_operator_regenerates(self: TableTenantRegistry, *args: Any, **kwargs: Any) -> Any:
        row = await read(self, *args, **kwargs)  # type: ignore[misc]
        if not others:
            others.append("")
            other = TableTenantRegistry.from_settings(settings)
            try:
                others.append(await other.set_token(name))
            finally:
                await other.close()
        return row

    if read is not None:
        monkeypatch.setattr(TableTenantRegistry, "_read_row", read_then_another_operator_regenerates)
    code = cli.main(["token", "regenerate", name])
    out, err = capsys.readouterr()
    assert code == 1, out
    assert "the token was changed concurrently; run the command again" in err
    assert "Secret Token" not in out
    monkeypatch.undo()

    async def works(token: str) -> bool:
        registry = TableTenantRegistry.from_settings(settings)
        try:
            return await registry.authenticate(name, token)
        finally:
            await registry.close()

    assert asyncio.run(works(others[1])), "the other operator's token is the one stored"


WEAK_TOKENS = [
    "chosen-dev-token",  # 16 characters
    "x" * 40,
    "abc" * 12,
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789abcdefghijklmnopqrstuvwxyz",
    "Aa1-" * 8,
    "correct horse battery staple 1234",  # spaces
    "tok\x1ben" + secrets.token_urlsafe(24),  # a control character
]


@pytest.mark.parametrize("weak", WEAK_TOKENS, ids=range(len(WEAK_TOKENS)))
async def test_supplied_tokens_under_128_bits_are_refused(settings: Settings, weak: str) -> None:
    how = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
    with pytest.raises(ValueError) as refused:
        await core.ensure_tenant(settings, _name("dev"), weak)  # SCIM_DEV_TOKEN
    assert how in str(refused.value)
    with pytest.raises(ValueError):
        await core.create_tenant(settings, _name("given"), token=weak)
    existing = await core.create_tenant(settings, _name("given"))
    with pytest.raises(ValueError):
        await core.regenerate_token(settings, existing.tenant, token=weak)


@pytest.mark.parametrize(
    "strong",
    [secrets.token_urlsafe(16), secrets.token_urlsafe(32), secrets.token_hex(16), "Dev-Token_4f9Qx7LmZ2pRt8Kc3VbN1sWy"],
)
async def test_supplied_tokens_of_128_bits_are_taken(settings: Settings, strong: str) -> None:
    name = _name("dev")
    await core.ensure_tenant(settings, name, strong)
    await core.ensure_tenant(settings, name, strong)  # again: the tenant exists, the token is set
    registry = TableTenantRegistry.from_settings(settings)
    try:
        assert await registry.authenticate(name, strong)
    finally:
        await registry.close()


# ---- L1: control characters in `scim.admin log` -------------------------------------------------

HOSTILE = LogEntry(
    time="2026-01-01T00:00:00.000Z",
    operation="PATCH /Users/{id}\x1b[2J",
    status=400,
    correlation_id="c0ffee\r",
    duration_ms=2.0,
    resource_type="User",
    resource_id="id\x1b[2J\r",
    scim_type="invalidValue\x07",
    detail="bad value\x1b[2J\rforged line\x9b2J\u202eevil\x7f",
    subject="ada\r\x1b[2J@contoso.example",
)


def _terminal_safe(text: str) -> bool:
    return not any(unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029\u202e" for ch in text)


def test_log_lines_escape_control_characters() -> None:
    line = cli._log_line(HOSTILE)
    assert _terminal_safe(line), repr(line)
    for shown in ("\\x1b[2J", "\\x0d", "\\x07", "\\x9b", "\\u202e", "\\x7f", "ada\\x0d\\x1b[2J@contoso.example"):
        assert shown in line, line


async def test_scim_admin_log_prints_hostile_values_escaped(
    settings: Settings, azurite: str, table_prefix: str
) -> None:
    name = _name("esc")
    await core.create_tenant(settings, name)
    runtime = build_runtime(settings)
    try:
        await runtime.log.record(name, dataclasses.replace(HOSTILE, correlation_id=uuid.uuid4().hex))  # a key part
    finally:
        await runtime.close()
    env = _env(azurite, table_prefix)
    human = admin(env, "log", name)
    assert human.returncode == 0, human.stderr
    assert _terminal_safe(human.stdout.rstrip("\n")), repr(human.stdout)
    assert "bad value\\x1b[2J\\x0dforged line" in human.stdout
    as_json = admin(env, "log", name, "--json")
    assert _terminal_safe(as_json.stdout.rstrip("\n")), repr(as_json.stdout)
    (entry,) = json.loads(as_json.stdout)["entries"]
    assert entry["detail"] == HOSTILE.detail and entry["subject"] == HOSTILE.subject


async def test_deleting_a_tenant_removes_its_webhook_delivery_state(settings: Settings) -> None:
    """The cursors and waiting events of webhook delivery (``{prefix}deliveries``) go with the tenant."""
    name = _name("hooks")
    await core.create_tenant(settings, name)
    runtime = build_runtime(settings)
    try:
        await runtime.deliveries.rewind(name, "ep_" + "0" * 32, f"{0:016d}|")
        assert (await runtime.deliveries.load(name)).cursors
    finally:
        await runtime.close()
    await core.delete_tenant(settings, name)
    runtime = build_runtime(settings)
    try:
        state = await runtime.deliveries.load(name)
        assert not state.cursors and not state.lanes
    finally:
        await runtime.close()


async def test_a_delete_in_the_app_writes_the_tenants_pending_log_entries_before_purging(runtime: Runtime):
    """The portal deletes a tenant in the app's own process, whose log writer may still hold
    the tenant's last entries (written in the background, a window later): written after the
    purge, they were data left behind, and creating the name again was refused."""
    name = _name("pending")
    await runtime.tenants.create(name)
    entry = LogEntry(
        time=format_time(datetime.now(UTC)),
        operation="GET /Users",
        status=200,
        correlation_id=uuid.uuid4().hex,
        duration_ms=1.0,
    )
    runtime.log_writer.submit(name, entry)  # the tenant's last request, not yet written
    assert not await core.delete_tenant_on(runtime, name)
    await asyncio.sleep(runtime.log_writer.window + 0.5)  # any late write would have landed by now
    await runtime.log_writer.drain()
    assert await core._data_left(runtime, runtime.settings, name) == []
    await core.create_tenant_on(runtime, name)
