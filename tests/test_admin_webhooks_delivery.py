"""The delivery side of ``python -m scim.admin webhook``: the backlog ``list`` shows
(:mod:`scim.webhooks.backlog`), ``replay`` (cursors rewound), ``enable`` and ``disable``
(:mod:`scim.admin.webhooks`), on the memory stores; and the commands as an operator runs them,
on Azurite.

Events are made with the store's clock set to a chosen time (its ``_clock``, an
:class:`~scim.store.event_timing.EventClock`, as ``tests/test_events_feed.py`` does), so that
they fall before or after an endpoint's registration, its cursor or a replay's ``--since``.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from azure.data.tables.aio import TableServiceClient

from scim.admin import __main__ as cli
from scim.admin import webhooks as commands
from scim.functions.runtime import Runtime, build_runtime
from scim.settings import Settings
from scim.store.base import DirectoryStore, EventIntent, IndexTerms, StoredEvent
from scim.store.delivery_state_tables import TableDeliveryStateStore
from scim.store.event_timing import EventClock, wall_us
from scim.webhooks import WebhookNotFound, parse_time
from scim.webhooks import backlog as delivery_backlog
from scim.webhooks.backlog import Backlog, TenantBacklog, endpoint_backlog, served_tenants
from scim.webhooks.delivery import initial_position
from scim.webhooks.delivery_state import Lane
from tests.helpers import admin, admin_env, memory_runtime

HOUR = 3600 * 1_000_000
MINUTE = 60 * 1_000_000
FAR = 2**62


# ---- helpers ------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def rt() -> AsyncIterator[Runtime]:
    """The memory runtime, with tenants ``contoso`` and ``fabrikam``."""
    runtime = memory_runtime()
    await runtime.tenants.create("contoso")
    await runtime.tenants.create("fabrikam")
    yield runtime
    await runtime.close()


@contextmanager
def clock_at(store: DirectoryStore, us: int) -> Iterator[None]:
    """The store stamps events from ``us`` (microseconds since the epoch) meanwhile: its clock
    runs, set that far from the wall clock."""
    offset = us - wall_us()
    real = store._clock  # type: ignore[attr-defined]  # both stores stamp with an EventClock
    store._clock = EventClock(wall=lambda: wall_us() + offset)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        store._clock = real  # type: ignore[attr-defined]


async def make_events(store: DirectoryStore, tenant: str, count: int, *, at: int | None = None) -> list[StoredEvent]:
    """``count`` users created in ``tenant`` (one ``user.created`` event each), stamped from
    ``at`` if given; returns their events in feed order."""
    before = await all_events(store, tenant)

    async def create() -> None:
        for _ in range(count):
            name = "u" + secrets.token_hex(6)
            await store.create(
                tenant,
                "User",
                {"userName": name},
                IndexTerms(unique={"userName": name}),
                event=EventIntent("user.created", lambda s: {"id": s.id}),
            )

    if at is None:
        await create()
    else:
        with clock_at(store, at):
            await create()
    known = {e.position for e in before}
    return [e for e in await all_events(store, tenant) if e.position not in known]


async def delete_events(
    store: DirectoryStore, tenant: str, events: list[StoredEvent], *, at: int | None = None
) -> list[StoredEvent]:
    """Delete the users of ``events`` (one ``user.deleted`` event each), stamped from ``at`` if
    given (else 1 ms after each user's last change: between the later creates on a slow
    machine); returns those events."""
    before = {e.position for e in await all_events(store, tenant)}

    async def delete() -> None:
        for stored in events:
            await store.delete(
                tenant, "User", stored.event["data"]["object"]["id"], event=EventIntent("user.deleted", lambda s: {})
            )

    if at is None:
        await delete()
    else:
        with clock_at(store, at):
            await delete()
    return [e for e in await all_events(store, tenant) if e.position not in before]


async def all_events(store: DirectoryStore, tenant: str) -> list[StoredEvent]:
    found: list[StoredEvent] = []
    after = None
    while page := await store.read_events(tenant, after=after, before=FAR, limit=1000):
        found += page
        after = page[-1].position
    return found


def stores(runtime: Runtime) -> commands.DeliveryStores:
    return commands.DeliveryStores.of(runtime, owned=False)


async def run(runtime: Runtime, *argv: str) -> int:
    """One ``webhook`` command on the memory runtime, checked by ``precheck`` first as ``main`` does."""
    args = cli._parser().parse_args(["webhook", *argv])
    assert commands.precheck(args) is None
    return await commands.run(args, runtime.webhooks, in_azure=False, stores=stores(runtime))


async def backlog(runtime: Runtime, endpoint_id: str, **kwargs: Any) -> Backlog:
    endpoint = await runtime.webhooks.get(endpoint_id)
    names = [t.name for t in await runtime.tenants.list()]
    return await endpoint_backlog(endpoint, names, runtime.store, runtime.deliveries, **kwargs)


def per_tenant(counted: Backlog) -> dict[str, int]:
    return {t.tenant: t.events for t in counted.tenants}


def rfc3339(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- the backlog ----------------------------------------------------------------------------------


async def test_the_backlog_counts_the_wanted_events_after_the_cursor(rt: Runtime) -> None:
    old = await make_events(rt.store, "contoso", 3, at=wall_us() - HOUR)  # before the endpoint existed
    everyone, _ = await rt.webhooks.add("https://a.example.com/")
    only_created, _ = await rt.webhooks.add("https://b.example.com/", ["contoso"], ["user.created"])
    elsewhere, _ = await rt.webhooks.add("https://c.example.com/", ["nowhere", "fabrikam"])
    created = await make_events(rt.store, "contoso", 4, at=wall_us() + MINUTE)
    deleted = await delete_events(rt.store, "contoso", created[:2], at=wall_us() + MINUTE + 30_000_000)
    await make_events(rt.store, "fabrikam", 2, at=wall_us() + 2 * MINUTE)

    # Without a cursor an endpoint starts at its registration: the older events are not for it.
    assert per_tenant(await backlog(rt, everyone)) == {"contoso": 6, "fabrikam": 2}
    assert per_tenant(await backlog(rt, only_created)) == {"contoso": 4}  # its event types only
    assert per_tenant(await backlog(rt, elsewhere)) == {"fabrikam": 2}  # its existing tenants only
    assert served_tenants(await rt.webhooks.get(elsewhere), ["contoso", "fabrikam"]) == ["fabrikam"]

    # A cursor: the events at or before it are handled.
    await rt.deliveries.rewind("contoso", everyone, created[1].position)
    await rt.deliveries.rewind("contoso", only_created, max(e.position for e in created + deleted))
    counted = await backlog(rt, everyone)
    assert per_tenant(counted) == {"contoso": 4, "fabrikam": 2} and counted.events == 6 and not counted.capped
    assert str(counted) == "6"
    assert per_tenant(await backlog(rt, only_created)) == {"contoso": 0}
    # A cursor rewound before the registration counts the older events too.
    await rt.deliveries.rewind("contoso", everyone, f"{int(old[0].position[:16]):016d}|")
    assert per_tenant(await backlog(rt, everyone))["contoso"] == 9


async def test_the_backlog_counts_the_events_of_lanes_once(rt: Runtime) -> None:
    endpoint_id, _ = await rt.webhooks.add("https://a.example.com/", ["contoso"])
    other_id, _ = await rt.webhooks.add("https://b.example.com/", ["contoso"])
    events = await make_events(rt.store, "contoso", 6, at=wall_us() + MINUTE)
    await rt.deliveries.rewind("contoso", endpoint_id, events[3].position)  # 2 after the cursor
    # Waiting behind a failed delivery: two events before the cursor, one after it (saved in a
    # lane before the cursor was moved past it), and one lane of another endpoint.
    await rt.deliveries.save_lane(
        "contoso", Lane(endpoint_id, "User/a", [events[0].position, events[1].position], attempts=2)
    )
    await rt.deliveries.save_lane("contoso", Lane(endpoint_id, "User/b", [events[5].position]))
    await rt.deliveries.save_lane("contoso", Lane(other_id, "User/a", [events[2].position]))
    counted = (await backlog(rt, endpoint_id)).tenants
    assert counted == (TenantBacklog("contoso", events=2 + 1 + 1, lanes=3, capped=False),)


async def test_the_backlog_is_capped(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint_id, _ = await rt.webhooks.add("https://a.example.com/")
    deleted_only, _ = await rt.webhooks.add("https://b.example.com/", None, ["user.deleted"])
    created = await make_events(rt.store, "contoso", 10, at=wall_us() + MINUTE)
    await delete_events(rt.store, "contoso", created[-2:])
    await make_events(rt.store, "fabrikam", 3, at=wall_us() + MINUTE)

    counted = await backlog(rt, endpoint_id, cap=5)
    assert per_tenant(counted) == {"contoso": 5, "fabrikam": 3} and counted.capped and str(counted) == "8+"
    assert counted.to_json() == {"events": 8, "capped": True, "tenants": {"contoso": 5, "fabrikam": 3}}
    assert [t.capped for t in counted.tenants] == [True, False]

    # Reads are bounded too: pages of 4 events, at most 2 reads, for an endpoint that wants a
    # few of them: at least what those reads found.
    reads: list[str | None] = []
    real = rt.store.read_events

    async def counting(tenant: str, *, after: str | None, before: int, limit: int) -> list[StoredEvent]:
        reads.append(tenant)
        return await real(tenant, after=after, before=before, limit=limit)

    monkeypatch.setattr(rt.store, "read_events", counting)
    monkeypatch.setattr(delivery_backlog, "MAX_LIMIT", 4)
    counted = await backlog(rt, deleted_only, max_reads=2)
    assert per_tenant(counted) == {"contoso": 0, "fabrikam": 0} and str(counted) == "0+"
    assert reads.count("contoso") == 2 and reads.count("fabrikam") == 2  # 3 events: a page, then none
    reads.clear()
    counted = await backlog(rt, deleted_only, max_reads=4)  # 12 contoso events: 3 pages and an empty one
    assert per_tenant(counted) == {"contoso": 2, "fabrikam": 0} and str(counted) == "2"
    assert reads.count("contoso") == 4


async def test_list_shows_the_backlog_state_and_errors(rt: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    failing, _ = await rt.webhooks.add("https://a.example.com/hook")
    stopped, _ = await rt.webhooks.add("https://b.example.com/hook", ["contoso"])
    idle, _ = await rt.webhooks.add("https://c.example.com/hook", ["fabrikam"])
    await make_events(rt.store, "contoso", 10_001, at=wall_us() + MINUTE)
    await make_events(rt.store, "fabrikam", 2, at=wall_us() + MINUTE)
    await rt.deliveries.rewind("fabrikam", idle, f"{wall_us() + HOUR:016d}|")
    first = datetime.now(UTC) - timedelta(minutes=10)
    await rt.webhooks.record_success(failing, first - timedelta(minutes=5))
    await rt.webhooks.record_failure(failing, "HTTP 500: \x1b[2Jboom\nnext", first)
    await rt.webhooks.record_failure(failing, "timeout after 10 s", first + timedelta(minutes=5))
    await rt.webhooks.disable(stopped, "410 Gone (the receiver asked to stop)")

    assert await run(rt, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    by_id = {line.split("\t")[0]: line.split("\t") for line in lines}
    a = by_id[failing]
    assert a[:4] == [failing, "https://a.example.com/hook", "enabled", "backlog 10002+"]
    assert "tenants all" in a and "events all" in a
    assert any(f.startswith("last success 20") for f in a)
    assert f"failing since {(await rt.webhooks.get(failing)).failing_since}" in a
    assert a[-1].startswith("last error 20") and a[-1].endswith(" timeout after 10 s")
    b = by_id[stopped]
    disabled_at = (await rt.webhooks.get(stopped)).disabled_at
    assert b[2] == f"disabled (410 Gone (the receiver asked to stop), since {disabled_at})"
    assert b[3] == "backlog 10000+" and "last success never" in b
    assert by_id[idle][2:4] == ["enabled", "backlog 0"]

    await rt.webhooks.record_failure(idle, "HTTP 500: \x1b[2Jboom\u202e")
    assert await run(rt, "list") == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2Jboom\\u202e" in out  # the receiver's text is escaped

    assert await run(rt, "list", "--json") == 0
    listed = {e["id"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed[failing]["backlog"] == {
        "events": 10_002,
        "capped": True,
        "tenants": {"contoso": 10_000, "fabrikam": 2},
    }
    assert listed[stopped]["backlog"]["events"] == 10_000 and listed[stopped]["state"] == "disabled"
    assert listed[idle]["backlog"] == {"events": 0, "capped": False, "tenants": {}}
    assert listed[failing]["failing_since"] and listed[failing]["last_error"] == "timeout after 10 s"


# ---- replay ---------------------------------------------------------------------------------------


async def test_replay_rewinds_the_cursors_past_the_time(rt: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    endpoint_id, _ = await rt.webhooks.add("https://a.example.com/")
    now = wall_us()
    earlier = await make_events(rt.store, "contoso", 2, at=now - 2 * HOUR)
    recent = await make_events(rt.store, "contoso", 3, at=now - 30 * MINUTE)
    await make_events(rt.store, "fabrikam", 2, at=now - 30 * MINUTE)
    # Delivery has passed everything in contoso; fabrikam's cursor is before the time.
    await rt.deliveries.rewind("contoso", endpoint_id, recent[-1].position)
    behind = f"{now - 3 * HOUR:016d}|"
    await rt.deliveries.rewind("fabrikam", endpoint_id, behind)
    assert per_tenant(await backlog(rt, endpoint_id)) == {"contoso": 0, "fabrikam": 2}

    stamp = now - HOUR
    since = rfc3339(stamp)
    assert await run(rt, "replay", endpoint_id, "--since", since, "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "id": endpoint_id,
        "since": since[:23] + "Z",
        "position": f"{stamp:016d}|",
        "rewound": ["contoso"],
        "unchanged": ["fabrikam"],
        "state": "enabled",
    }
    state = await rt.deliveries.load("contoso")
    assert state.cursors[endpoint_id].position == f"{stamp:016d}|"
    assert all(e.position < f"{stamp:016d}|" for e in earlier)
    assert (await rt.deliveries.load("fabrikam")).cursors[endpoint_id].position == behind  # not moved forward
    # Every event committed since then waits for the endpoint again.
    assert per_tenant(await backlog(rt, endpoint_id)) == {"contoso": 3, "fabrikam": 2}

    # Text; the time in another zone; --tenant; a tenant without a cursor (the endpoint's start).
    endpoint = await rt.webhooks.get(endpoint_id)
    await rt.deliveries.forget("contoso")
    assert initial_position(endpoint) > f"{stamp:016d}|"
    plus_one = (parse_time(since) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%f+01:00")
    assert await run(rt, "replay", endpoint_id, "--since", plus_one, "--tenant", "contoso") == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"Replay of webhook endpoint {endpoint_id} since {since[:23]}Z: rewound in 1 tenant of 1 (contoso)."
    ]
    assert "delivered again, with the same event ids" in err and "disabled" not in err
    assert (await rt.deliveries.load("contoso")).cursors[endpoint_id].position == f"{stamp:016d}|"

    assert await run(rt, "replay", endpoint_id, "--since", since) == 0
    out, _ = capsys.readouterr()
    assert "rewound in 0 tenants of 2." in out and "2 tenants left as they were" in out


async def test_replay_refuses_what_it_cannot_do(rt: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    endpoint_id, _ = await rt.webhooks.add("https://a.example.com/", ["contoso"])
    hour_ago = rfc3339(wall_us() - HOUR)
    for argv, expected in (
        (["--since", rfc3339(wall_us() - 31 * 24 * HOUR)], "older than the events retention (30 days"),
        (["--since", hour_ago, "--tenant", "fabrikam"], f"{endpoint_id} is not for tenant 'fabrikam'"),
    ):
        args = cli._parser().parse_args(["webhook", "replay", endpoint_id, *argv])
        assert commands.precheck(args) is None
        with pytest.raises(commands.ReplayRefused, match=re.escape(expected)):
            await commands.run(args, rt.webhooks, in_azure=False, stores=stores(rt))
    everyone, _ = await rt.webhooks.add("https://b.example.com/")
    args = cli._parser().parse_args(["webhook", "replay", everyone, "--since", hour_ago, "--tenant", "nobody"])
    with pytest.raises(commands.ReplayRefused, match="no tenant 'nobody'"):
        await commands.run(args, rt.webhooks, in_azure=False, stores=stores(rt))
    args = cli._parser().parse_args(["webhook", "replay", "ep_" + "0" * 32, "--since", hour_ago])
    with pytest.raises(WebhookNotFound):
        await commands.run(args, rt.webhooks, in_azure=False, stores=stores(rt))
    with pytest.raises(ValueError, match="needs the tenants"):
        await commands.run(
            cli._parser().parse_args(["webhook", "replay", everyone, "--since", hour_ago]), rt.webhooks, in_azure=False
        )
    assert (await rt.deliveries.load("contoso")).cursors == {}  # nothing was rewound

    # A shorter retention (EVENTS_RETENTION_DAYS) moves the limit.
    short = commands.DeliveryStores(rt.tenants, rt.store, rt.deliveries, retention_days=1)
    args = cli._parser().parse_args(["webhook", "replay", everyone, "--since", rfc3339(wall_us() - 25 * HOUR)])
    with pytest.raises(commands.ReplayRefused, match=r"\(1 day, EVENTS_RETENTION_DAYS\)"):
        await commands.run(args, rt.webhooks, in_azure=False, stores=short)


def test_replay_refusals_come_before_any_storage(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_storage(*_: Any) -> Any:
        raise AssertionError("storage was opened")

    monkeypatch.setattr(commands, "open_stores", no_storage)
    some_id = "ep_" + "a" * 32
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for argv, expected in (
        (["replay", some_id, "--since", tomorrow], f"--since {tomorrow[:19]}.000Z is in the future"),
        (["replay", some_id, "--since", "2026-12-01T18:00:00"], "has no time zone: give a full RFC 3339 time"),
        (["replay", some_id, "--since", "2026-12-01"], "has no time zone"),
        (["replay", some_id, "--since", "yesterday"], "RFC 3339 time with its zone, e.g. 2026-12-01T18:00:00Z"),
        (["replay", some_id, "--since", "2026-13-01T18:00:00Z"], "is not a valid date and time"),
        (["replay", some_id, "--since", "2h"], "not '2h'"),
        (["replay", "ep_x", "--since", "2026-12-01T18:00:00Z"], "no webhook endpoint 'ep_x'"),
        (["replay", some_id, "--since", "2026-12-01T18:00:00Z", "--tenant", "Not Valid"], "invalid tenant name"),
        (["enable", "nope"], "no webhook endpoint 'nope'"),
        (["disable", "ep_"], "no webhook endpoint 'ep_'"),
    ):
        assert cli.main(["webhook", *argv]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err, (argv, err)


def test_replay_times() -> None:
    parse = commands.parse_replay_time
    assert parse("2026-12-01T18:00:00Z") == datetime(2026, 12, 1, 18, tzinfo=UTC)
    assert parse("2026-12-01t19:00:00.1234567+01:00") == datetime(2026, 12, 1, 18, 0, 0, 123456, tzinfo=UTC)
    assert commands.replay_position(parse("2026-12-01T18:00:00.000001Z")) == "1796148000000001|"
    assert commands.replay_position(parse("2026-12-01T18:00:00Z")) < "1796148000000000|evt_"
    now = int(parse("2026-12-01T18:00:00Z").timestamp()) * 1_000_000
    commands.check_replay_time(parse("2026-11-01T18:00:00Z"), 30, now)  # exactly at the floor
    with pytest.raises(commands.ReplayRefused, match="older than the events retention"):
        commands.check_replay_time(parse("2026-11-01T17:59:59.999Z"), 30, now)
    with pytest.raises(commands.ReplayRefused, match="in the future"):
        commands.check_replay_time(parse("2026-12-01T18:00:00.001Z"), 30, now)


async def test_a_replay_of_a_disabled_endpoint_waits_for_enable(
    rt: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint_id, _ = await rt.webhooks.add("https://a.example.com/", ["contoso"])
    await rt.deliveries.rewind("contoso", endpoint_id, f"{wall_us():016d}|")
    await rt.webhooks.disable(endpoint_id, "410 Gone")
    assert await run(rt, "replay", endpoint_id, "--since", rfc3339(wall_us() - HOUR)) == 0
    out, err = capsys.readouterr()
    assert "rewound in 1 tenant of 1 (contoso)" in out
    assert (
        f"is disabled (410 Gone): the replay takes effect after `python -m scim.admin webhook enable {endpoint_id}`"
        in err
    )


# ---- enable and disable ---------------------------------------------------------------------------


async def test_disable_and_enable_keep_the_cursors_and_lanes(rt: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    endpoint_id, _ = await rt.webhooks.add("https://a.example.com/", ["contoso"])
    events = await make_events(rt.store, "contoso", 4, at=wall_us() + MINUTE)
    await rt.deliveries.rewind("contoso", endpoint_id, events[1].position)
    await rt.deliveries.save_lane("contoso", Lane(endpoint_id, "User/x", [events[0].position], attempts=3))
    await rt.webhooks.record_failure(endpoint_id, "HTTP 503")
    kept = await rt.deliveries.load("contoso")

    assert await run(rt, "disable", endpoint_id) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Disabled webhook endpoint {endpoint_id}: nothing more is delivered to it.")
    assert f"`python -m scim.admin webhook enable {endpoint_id}` resumes from there" in out
    endpoint = await rt.webhooks.get(endpoint_id)
    assert (
        endpoint.state == "disabled"
        and endpoint.disabled_reason == commands.OPERATOR_REASON == "disabled by an operator"
    )
    assert endpoint.disabled_at
    assert await run(rt, "disable", endpoint_id) == 0
    assert "is disabled (disabled by an operator, since" in capsys.readouterr().out
    assert (await rt.webhooks.get(endpoint_id)).disabled_at == endpoint.disabled_at  # left as it was

    assert await run(rt, "enable", endpoint_id) == 0
    out = capsys.readouterr().out
    assert out == (
        f"Enabled webhook endpoint {endpoint_id}: delivery resumes where it stopped (its cursors and the events "
        "waiting for it were kept); 3 events wait for it.\n"
    )
    endpoint = await rt.webhooks.get(endpoint_id)
    assert endpoint.enabled and endpoint.disabled_reason is None and endpoint.failing_since is None
    assert await rt.deliveries.load("contoso") == kept
    assert await run(rt, "enable", endpoint_id) == 0
    assert capsys.readouterr().out == f"Webhook endpoint {endpoint_id} is enabled already.\n"

    with pytest.raises(WebhookNotFound):
        await run(rt, "enable", "ep_" + "1" * 32)
    with pytest.raises(WebhookNotFound):
        await run(rt, "disable", "ep_" + "1" * 32)


# ---- as an operator runs them (Azurite) -----------------------------------------------------------


@pytest_asyncio.fixture
async def prefix(azurite: str) -> AsyncIterator[str]:
    """Fresh tables per test, dropped afterwards."""
    name = "wd" + secrets.token_hex(4)
    yield name
    async with TableServiceClient.from_connection_string(azurite) as service:
        async for table in service.list_tables():
            if table.name.startswith(name):
                await service.delete_table(table.name)


async def test_the_delivery_commands_on_table_storage(azurite: str, prefix: str) -> None:
    env = admin_env(azurite, prefix)

    def cmd(*args: str) -> Any:
        return asyncio.to_thread(admin, env, *args)

    created = await cmd("tenant", "create", "contoso")
    assert created.returncode == 0, created.stderr
    added = await cmd("webhook", "add", "http://127.0.0.1:8080/hook", "--json")
    assert added.returncode == 0, added.stderr
    endpoint_id = json.loads(added.stdout)["id"]

    settings = Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": azurite, "SCIM_TABLE_PREFIX": prefix})
    runtime = build_runtime(settings)
    try:
        events = await make_events(runtime.store, "contoso", 5, at=wall_us() + MINUTE)
    finally:
        await runtime.close()

    listed = await cmd("webhook", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (shown,) = json.loads(listed.stdout)
    assert shown["backlog"] == {"events": 5, "capped": False, "tenants": {"contoso": 5}}
    text = await cmd("webhook", "list")
    assert text.stdout.split("\t")[2:4] == ["enabled", "backlog 5"], text.stdout

    disabled = await cmd("webhook", "disable", endpoint_id)
    assert disabled.returncode == 0 and "Disabled webhook endpoint" in disabled.stdout, disabled.stderr
    stamp = wall_us() - HOUR
    since = rfc3339(stamp)
    replayed = await cmd("webhook", "replay", endpoint_id, "--since", since, "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["rewound"] == ["contoso"]
    assert f"webhook enable {endpoint_id}" in replayed.stderr
    async with TableServiceClient.from_connection_string(azurite) as service:
        state = await TableDeliveryStateStore(service, prefix).load("contoso")
    assert state.cursors[endpoint_id].position == f"{stamp:016d}|" < events[0].position

    enabled = await cmd("webhook", "enable", endpoint_id)
    assert enabled.returncode == 0 and "delivery resumes where it stopped" in enabled.stdout, enabled.stderr
    assert "5 events wait for it" in enabled.stdout
    refused = await cmd("webhook", "replay", endpoint_id, "--since", rfc3339(wall_us() - 40 * 24 * HOUR))
    assert refused.returncode == 1 and "older than the events retention (30 days" in refused.stderr


# ---- the audit trail ------------------------------------------------------------------------------


async def test_webhook_changes_are_in_the_audit_trail_of_the_tenants_they_serve(
    rt: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """The portal's audit trail is the tenant's whole history: a webhook endpoint added, its
    secret rotated, disabled, enabled, replayed or removed with the CLI is recorded, by ``cli``,
    in the trail of each tenant it serves, naming the endpoint and the URL's origin only (a
    receiver's query can hold a key). An endpoint for every tenant is the application's, not a
    tenant's: it is in no tenant's trail."""
    assert await run(rt, "add", "http://127.0.0.1:8080/hook?key=s3cr3t-value", "--tenant", "contoso", "--json") == 0
    endpoint_id = json.loads(capsys.readouterr().out)["id"]
    for argv in (
        ("rotate-secret", endpoint_id),
        ("disable", endpoint_id),
        ("enable", endpoint_id),
        ("replay", endpoint_id, "--since", rfc3339(wall_us() - MINUTE)),
        ("remove", endpoint_id, "--yes"),
    ):
        assert await run(rt, *argv) == 0, argv
    page = await rt.audit.page("contoso")
    entries = list(reversed(page.entries))
    assert [e.action for e in entries] == [
        "webhook.added",
        "webhook.secret_rotated",
        "webhook.disabled",
        "webhook.enabled",
        "webhook.replayed",
        "webhook.removed",
    ]
    assert {e.actor for e in entries} == {"cli"}
    assert all(e.detail["endpoint"] == endpoint_id for e in entries)
    assert entries[0].detail["url"] == "http://127.0.0.1:8080"
    assert "s3cr3t" not in repr(entries)
    assert (await rt.audit.page("fabrikam")).entries == []

    assert await run(rt, "add", "http://127.0.0.1:8080/all", "--json") == 0  # every tenant: the application's
    assert [e.action for e in (await rt.audit.page("fabrikam")).entries] == []


async def test_remove_forgets_what_the_endpoint_had_in_each_tenant_and_nothing_else(rt: Runtime) -> None:
    """``webhook remove`` deletes the endpoint's cursors and the lanes waiting for it in every
    tenant it served (an endpoint of every tenant: all of them), so no row of an endpoint that
    no longer exists stays in the delivery state; the other endpoints' rows stay."""
    everyone, _ = await rt.webhooks.add("https://a.example.com/")
    contoso_only, _ = await rt.webhooks.add("https://b.example.com/", ["contoso"])
    for tenant in ("contoso", "fabrikam"):
        for endpoint in (everyone, contoso_only):
            await rt.deliveries.save_cursor(tenant, endpoint, f"{wall_us():016d}|", None)
            await rt.deliveries.save_lane(tenant, Lane(endpoint, "User/" + "a" * 32, [f"{wall_us():016d}|e|000"], 1))
    assert await run(rt, "remove", contoso_only, "--yes") == 0
    contoso, fabrikam = await rt.deliveries.load("contoso"), await rt.deliveries.load("fabrikam")
    assert set(contoso.cursors) == {everyone} and {lane.endpoint for lane in contoso.lanes} == {everyone}
    assert set(fabrikam.cursors) == {everyone, contoso_only}, "a tenant it did not serve is not touched"
    assert await run(rt, "remove", everyone, "--yes") == 0
    assert dict((await rt.deliveries.load("contoso")).cursors) == {}
    fabrikam = await rt.deliveries.load("fabrikam")
    assert set(fabrikam.cursors) == {contoso_only} and {lane.endpoint for lane in fabrikam.lanes} == {contoso_only}
