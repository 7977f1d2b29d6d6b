"""The change events feed (issue 12, "The feed (pull)"): ``GET /api/v1/tenants/{tenant}/events``
through the registered Functions entry point, on the memory store and on Azurite; the core
page logic with an injected clock; the timer's event retention; ``python -m scim.admin events``
as an operator runs it; and the route over real HTTP on the local host.

Events are read as soon as they settle: the runtime's ``EVENTS_SETTLE_SECONDS`` is set to
:data:`SETTLE` here (15 s in the app). Events older than the retention are made with the
store's clock set back (its ``_clock``, an :class:`~scim.store.event_timing.EventClock`, as the
store contract's clock tests do).
"""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from scim.core import feed
from scim.core.feed import DEFAULT_LIMIT, MAX_LIMIT, encode_cursor, position_stamp, read_page
from scim.functions.runtime import Runtime, build_runtime, use_runtime
from scim.store.event_timing import EventClock, wall_us
from tests.event_checks import FAR
from tests.functions_client import REGISTERED, EventsClient, FunctionsClient, Response
from tests.helpers import PATCH_URN, ROOT, admin, admin_env, assert_scim_error, create_group, create_user

SETTLE = 0.3
"""``EVENTS_SETTLE_SECONDS`` of these tests' runtime."""
DAY = 86_400 * 1_000_000
HOUR = 3_600 * 1_000_000
NOTIFY_TIMER = REGISTERED["notify_timer"]
DEACTIVATE = {"schemas": [PATCH_URN], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}


@pytest.fixture
def feed_runtime(runtime: Runtime) -> Runtime:
    """The test's runtime with a short settle delay."""
    runtime.settings = runtime.settings.model_copy(update={"events_settle_seconds": SETTLE})
    return runtime


@pytest.fixture
async def reader(feed_runtime: Runtime) -> EventsClient:
    """A reader of the feed holding a fresh application key."""
    return EventsClient(await feed_runtime.app_keys.create("app-" + uuid.uuid4().hex[:8]))


async def settle(seconds: float = SETTLE) -> None:
    """Wait until what was committed so far is before the feed's horizon."""
    await asyncio.sleep(seconds + 0.1)


async def stored(runtime: Runtime, tenant: str) -> list[dict[str, Any]]:
    """Every event the store holds for ``tenant``, horizon or not, in feed order."""
    return [e.event for e in await runtime.store.read_events(tenant, after=None, before=FAR, limit=1000)]


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["object"]["id"] for e in events]


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    """A JSON error of the feed: ``{"error": {"code", "message"}}``, never cached."""
    assert response.status == status, response.body
    assert response.content_type == "application/json; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    body = response.json
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code and body["error"]["message"], body
    assert "Traceback" not in response.body.decode()
    return body["error"]  # type: ignore[no-any-return]


@contextmanager
def clock_behind(runtime: Runtime, by_us: int) -> Iterator[None]:
    """The store stamps events ``by_us`` microseconds in the past meanwhile."""
    store = runtime.store
    real = store._clock  # type: ignore[attr-defined]  # both stores stamp with an EventClock
    store._clock = EventClock(wall=lambda: wall_us() - by_us)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        store._clock = real  # type: ignore[attr-defined]


# ---- paging ---------------------------------------------------------------------------------------


async def test_a_consumer_following_next_gets_every_event_once_in_order(
    client: FunctionsClient, reader: EventsClient, feed_runtime: Runtime
) -> None:
    users = [await create_user(client) for _ in range(5)]
    assert (await client.patch(f"/Users/{users[0]['id']}", DEACTIVATE)).status == 200
    assert (await client.delete(f"/Users/{users[1]['id']}")).status == 204
    await settle()
    everything = await stored(feed_runtime, client.tenant)
    assert [e["type"] for e in everything] == ["user.created"] * 5 + ["user.deactivated", "user.deleted"]

    pages, after = [], None
    while True:
        response = await reader.page(client.tenant, after=after, limit=3)
        assert response.status == 200, response.body
        assert response.content_type == "application/json; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        body = response.json
        assert set(body) == {"data", "next"} and isinstance(body["next"], str)
        pages.append(body["data"])
        after = body["next"]
        if not body["data"]:
            break
    assert [len(p) for p in pages] == [3, 3, 1, 0]
    assert [e for p in pages for e in p] == everything  # oldest first, each once, as stored
    assert ids(everything)[:5] == [u["id"] for u in users]

    # An empty page's next is the cursor to poll with: nothing new, then the next change.
    again = await reader.page(client.tenant, after=after)
    assert again.status == 200 and again.json["data"] == []
    later = await create_user(client)
    await settle()
    polled = await reader.page(client.tenant, after=again.json["next"])
    assert ids(polled.json["data"]) == [later["id"]]


async def test_limit_defaults_to_100_allows_1000_and_refuses_the_rest(
    client: FunctionsClient, reader: EventsClient, feed_runtime: Runtime
) -> None:
    for _ in range(0, DEFAULT_LIMIT + 2, 17):
        await asyncio.gather(*(create_user(client) for _ in range(17)))
    await settle()
    total = len(await stored(feed_runtime, client.tenant))
    assert total > DEFAULT_LIMIT
    assert len((await reader.page(client.tenant)).json["data"]) == DEFAULT_LIMIT
    assert len((await reader.page(client.tenant, limit="")).json["data"]) == DEFAULT_LIMIT
    assert len((await reader.page(client.tenant, limit=MAX_LIMIT)).json["data"]) == total
    assert len((await reader.page(client.tenant, limit=1)).json["data"]) == 1
    for bad in (0, MAX_LIMIT + 1, -1, "abc", "1.5", " 5", "1e3", "0x10", "10000000000000000000"):
        error = assert_error(await reader.page(client.tenant, limit=bad), 400, "invalid_limit")
        assert "1 to 1000" in error["message"]


async def test_without_after_the_feed_starts_at_the_oldest_retained_event(
    client: FunctionsClient, reader: EventsClient, feed_runtime: Runtime
) -> None:
    """An event older than the retention that the timer has not purged yet is not served (its
    cursor would be expired at once); the oldest retained one is first."""
    days = feed_runtime.settings.events_retention_days
    with clock_behind(feed_runtime, days * DAY + HOUR):
        expired = await create_user(client)
    with clock_behind(feed_runtime, days * DAY - HOUR):
        oldest = await create_user(client)
    recent = await create_user(client)
    await settle()
    assert ids(await stored(feed_runtime, client.tenant)) == [expired["id"], oldest["id"], recent["id"]]
    served, _ = await reader.follow(client.tenant)
    assert ids(served) == [oldest["id"], recent["id"]]


async def test_an_event_is_served_only_once_it_has_settled(
    client: FunctionsClient, reader: EventsClient, feed_runtime: Runtime
) -> None:
    settle_seconds = 2.0
    feed_runtime.settings = feed_runtime.settings.model_copy(update={"events_settle_seconds": settle_seconds})
    start = (await reader.page(client.tenant)).json
    assert start["data"] == []
    user = await create_user(client)
    early = await reader.page(client.tenant, after=start["next"])
    assert early.status == 200 and early.json["data"] == []  # committed, not settled yet
    await settle(settle_seconds)
    late = await reader.page(client.tenant, after=early.json["next"])
    assert ids(late.json["data"]) == [user["id"]]


async def test_a_page_is_one_read_of_the_store(
    client: FunctionsClient, reader: EventsClient, feed_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        await create_user(client)
    await settle()
    calls: list[dict[str, Any]] = []
    real = feed_runtime.store.read_events

    async def counted(tenant: str, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return await real(tenant, **kwargs)

    monkeypatch.setattr(feed_runtime.store, "read_events", counted)
    first = await reader.page(client.tenant, limit=2)
    second = await reader.page(client.tenant, after=first.json["next"], limit=2)
    assert [len(first.json["data"]), len(second.json["data"])] == [2, 1]
    assert len(calls) == 2 and [c["limit"] for c in calls] == [2, 2]
    assert calls[1]["after"] == feed.decode_cursor(client.tenant, first.json["next"])


# ---- cursors --------------------------------------------------------------------------------------


def _b64(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def test_an_expired_cursor_is_410_and_a_retained_one_is_served(
    client: FunctionsClient, reader: EventsClient, feed_runtime: Runtime
) -> None:
    days = feed_runtime.settings.events_retention_days
    expired = encode_cursor(client.tenant, f"{wall_us() - days * DAY - 60_000_000:016d}|evt_{'0' * 32}")
    error = assert_error(await reader.page(client.tenant, after=expired), 410, "cursor_expired")
    assert "EVENTS_RETENTION_DAYS" in error["message"] and "without 'after'" in error["message"]
    retained = encode_cursor(client.tenant, f"{wall_us() - days * DAY + 60_000_000:016d}")
    assert (await reader.page(client.tenant, after=retained)).status == 200


async def test_a_malformed_or_foreign_cursor_is_400(
    client: FunctionsClient, other_client: FunctionsClient, reader: EventsClient, feed_runtime: Runtime
) -> None:
    tenant = client.tenant
    position = f"{wall_us():016d}|evt_{'a' * 32}"
    bad = [
        "not a cursor",
        "!!!!",
        "A" * 2000,
        "é",
        _b64("not json"),
        _b64([1, tenant, position]),
        _b64({"v": 1, "t": tenant}),
        _b64({"v": 1, "t": tenant, "p": position, "x": 1}),
        _b64({"v": "1", "t": tenant, "p": position}),
        _b64({"v": True, "t": tenant, "p": position}),
        _b64({"v": 1, "t": tenant, "p": "123"}),
        _b64({"v": 1, "t": tenant, "p": position + "|more"}),
        _b64({"v": 1, "t": tenant, "p": f"{wall_us():016d}| space"}),
        _b64({"v": 1, "t": tenant, "p": 12}),
    ]
    for cursor in bad:
        assert_error(await reader.page(tenant, after=cursor), 400, "invalid_cursor")
    newer = assert_error(
        await reader.page(tenant, after=_b64({"v": 2, "t": tenant, "p": position})), 400, "invalid_cursor"
    )
    assert "version" in newer["message"]
    theirs = (await reader.page(other_client.tenant)).json["next"]
    foreign = assert_error(await reader.page(tenant, after=theirs), 400, "invalid_cursor")
    assert "another tenant" in foreign["message"]


async def test_the_cursor_is_versioned_url_safe_base64_json_without_padding(client: FunctionsClient) -> None:
    position = f"{wall_us():016d}|evt_{'b' * 32}"
    cursor = encode_cursor(client.tenant, position)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert decoded == {"v": 1, "t": client.tenant, "p": position}
    assert feed.decode_cursor(client.tenant, cursor) == position


# ---- the core, with an injected clock ---------------------------------------------------------------


async def test_the_horizon_is_exactly_now_minus_the_settle_delay(client: FunctionsClient, runtime: Runtime) -> None:
    user = await create_user(client)
    (event,) = await runtime.store.read_events(client.tenant, after=None, before=FAR, limit=10)
    stamp, settle_seconds = position_stamp(event.position), 15.0

    async def page(now: int, after: str | None = None) -> dict[str, Any]:
        return await read_page(
            runtime.store, client.tenant, after, 100, now, settle_seconds=settle_seconds, retention_days=30
        )

    at_horizon = await page(stamp + 15_000_000)
    assert at_horizon["data"] == []  # stamped at the horizon: not yet
    # next is the horizon, not before the event: polling with it serves the event later
    assert feed.decode_cursor(client.tenant, at_horizon["next"]) == f"{stamp:016d}"
    past = await page(stamp + 15_000_001, at_horizon["next"])
    assert ids(past["data"]) == [user["id"]]
    assert feed.decode_cursor(client.tenant, past["next"]) == event.position
    # an empty page never moves the cursor back (another instance's clock may be behind)
    behind = await page(stamp - 60_000_000, past["next"])
    assert behind["data"] == [] and behind["next"] == past["next"]
    # a cursor is expired once its position is older than the retention
    assert (await page(stamp + 30 * DAY, past["next"]))["data"] == []
    with pytest.raises(feed.CursorExpired) as expired:
        await page(stamp + 30 * DAY + 1, past["next"])
    assert expired.value.status == 410
    # an empty feed's cursor moves with the horizon, so polling an idle tenant never expires
    idle = await page(stamp + 40 * DAY, (await page(stamp + 29 * DAY, past["next"]))["next"])
    assert idle["data"] == []


async def test_read_page_refuses_what_is_not_a_tenant_or_a_limit(runtime: Runtime) -> None:
    async def page(tenant: str, limit: Any) -> dict[str, Any]:
        return await read_page(runtime.store, tenant, None, limit, settle_seconds=1, retention_days=1)

    for tenant in ("Not_A_Tenant", "dev\n", "", "a" * 64):
        with pytest.raises(feed.UnknownTenant):
            await page(tenant, 10)
    for limit in (0, 1001, True, "10"):
        with pytest.raises(feed.InvalidLimit):
            await page("dev", limit)
    assert feed.parse_limit(None) == feed.parse_limit("") == 100
    assert feed.parse_limit("1000") == 1000


# ---- who may read -----------------------------------------------------------------------------------


async def test_the_feed_needs_an_application_key(
    client: FunctionsClient, reader: EventsClient, feed_runtime: Runtime
) -> None:
    """No key, a malformed or unknown key, another scheme, a tenant's Secret Token: 401 with
    ``WWW-Authenticate: Bearer``, for an existing tenant and an unknown one alike."""
    key = reader.key
    assert key is not None
    unknown = "scimak_" + "A" * 43
    refusals: list[dict[str, str] | str | None] = [
        None,
        unknown,
        key + "x",
        key[:-1],
        client.token,  # the tenant's Secret Token is Entra's, not the application's
        {"Authorization": f"Basic {key}"},
        {"Authorization": "Bearer"},
        {"Authorization": key},
    ]
    for tenant in (client.tenant, "nobody-" + uuid.uuid4().hex[:8], "Not_A_Tenant"):
        for refused in refusals:
            if isinstance(refused, dict):
                response = await reader.page(tenant, key=None, headers=refused)
            else:
                response = await reader.page(tenant, key=refused, after="garbage", limit="0")
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
    assert (await reader.page(client.tenant, key=None, headers={"Authorization": f"bearer  {key} "})).status == 200


async def test_a_revoked_key_fails_at_once(client: FunctionsClient, feed_runtime: Runtime) -> None:
    name = "revoked-" + uuid.uuid4().hex[:8]
    key = await feed_runtime.app_keys.create(name)
    reader = EventsClient(key)
    assert (await reader.page(client.tenant)).status == 200
    await feed_runtime.app_keys.revoke(name)
    assert_error(await reader.page(client.tenant), 401, "unauthorized")


async def test_an_application_key_is_refused_by_the_scim_endpoint(
    client: FunctionsClient, reader: EventsClient, feed_runtime: Runtime
) -> None:
    assert_scim_error(await client.get("/Users", token=reader.key), 401)
    assert_scim_error(await client.post("/Users", {"userName": "x"}, token=reader.key), 401)
    assert (await client.get("/Users")).status == 200


async def test_another_tenant_s_events_never_appear(
    client: FunctionsClient, other_client: FunctionsClient, reader: EventsClient, feed_runtime: Runtime
) -> None:
    mine, theirs = [], []
    for _ in range(3):
        mine.append(await create_user(client))
        theirs.append(await create_user(other_client))
    theirs.append(await create_group(other_client))
    mine.append(await create_group(client))
    await settle()
    my_events, _ = await reader.follow(client.tenant, limit=2)
    their_events, _ = await reader.follow(other_client.tenant, limit=2)
    assert ids(my_events) == [r["id"] for r in mine]
    assert ids(their_events) == [r["id"] for r in theirs]
    assert {e["tenant"] for e in my_events} == {client.tenant}
    assert {e["tenant"] for e in their_events} == {other_client.tenant}
    assert not {e["id"] for e in my_events} & {e["id"] for e in their_events}


async def test_an_unknown_or_deleting_tenant_is_404(
    client: FunctionsClient, reader: EventsClient, feed_runtime: Runtime
) -> None:
    """An application key reads every tenant, so it may learn which exist."""
    for tenant in ("nobody-" + uuid.uuid4().hex[:8], "Not_A_Tenant", "a" * 64, "dev%0A"):
        error = assert_error(await reader.page(tenant), 404, "tenant_not_found")
        assert "no tenant" in error["message"]
    await feed_runtime.tenants.begin_delete(client.tenant)
    assert_error(await reader.page(client.tenant), 404, "tenant_not_found")


# ---- retention ------------------------------------------------------------------------------------


async def test_the_timer_purges_events_older_than_the_retention(client: FunctionsClient, feed_runtime: Runtime) -> None:
    days = feed_runtime.settings.events_retention_days
    with clock_behind(feed_runtime, days * DAY + HOUR):
        old = await create_user(client)
        assert (await client.patch(f"/Users/{old['id']}", DEACTIVATE)).status == 200
    with clock_behind(feed_runtime, days * DAY - HOUR):
        kept = await create_user(client)
    recent = await create_user(client)
    assert len(await stored(feed_runtime, client.tenant)) == 4
    await feed_runtime.log_writer.drain()
    await NOTIFY_TIMER(None)  # the registered timer function, as the Functions host runs it
    assert ids(await stored(feed_runtime, client.tenant)) == [kept["id"], recent["id"]]
    assert (await client.get(f"/Users/{old['id']}")).status == 200  # only events go


# ---- the admin CLI, as an operator runs it -----------------------------------------------------------

CLI_ENV = {"EVENTS_SETTLE_SECONDS": "0.2"}


def _next(stderr: str) -> str:
    found = re.search(r"^next: (\S+)$", stderr, re.M)
    assert found, stderr
    return found.group(1)


async def test_the_cli_prints_the_feed_and_resumes_with_after(
    azurite: str, table_prefix: str, client: FunctionsClient, runtime: Runtime
) -> None:
    env = admin_env(azurite, table_prefix, **CLI_ENV)
    users = [await create_user(client) for _ in range(3)]
    assert (await client.patch(f"/Users/{users[0]['id']}", DEACTIVATE)).status == 200
    await settle(0.2)

    done = await asyncio.to_thread(admin, env, "events", client.tenant, "--json", "--limit", "2")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["type"] for e in events] == ["user.created"] * 3 + ["user.deactivated"]
    assert ids(events) == [u["id"] for u in users] + [users[0]["id"]]
    assert len({e["id"] for e in events}) == 4 and {e["tenant"] for e in events} == {client.tenant}
    resume = _next(done.stderr)

    human = await asyncio.to_thread(admin, env, "events", client.tenant)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert len(lines) == 4 and "user.deactivated" in lines[3]
    assert users[1]["id"] in lines[1] and users[1]["userName"] in lines[1]

    assert (await client.delete(f"/Users/{users[2]['id']}")).status == 204
    await settle(0.2)
    resumed = await asyncio.to_thread(admin, env, "events", client.tenant, "--json", "--after", resume)
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(line)["type"] for line in resumed.stdout.splitlines()] == ["user.deleted"]
    nothing = await asyncio.to_thread(admin, env, "events", client.tenant, "--after", _next(resumed.stderr))
    assert nothing.returncode == 0 and nothing.stdout == ""

    for args, message in (
        (["nobody-" + uuid.uuid4().hex[:6]], "no tenant"),
        (["Not_A_Tenant"], "invalid tenant name"),
        ([client.tenant, "--limit", "0"], "limit must be"),
        ([client.tenant, "--after", "garbage"], "not a cursor"),
    ):
        failed = await asyncio.to_thread(admin, env, "events", *args)
        assert failed.returncode == 1 and message in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr


def _follow(env: dict[str, str], tenant: str) -> subprocess.Popen[str]:
    """``python -m scim.admin events TENANT --follow --json`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "scim.admin", "events", tenant, "--follow", "--json"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_the_cli_follows_new_events_and_stops_cleanly_on_ctrl_c(
    azurite: str, table_prefix: str, client: FunctionsClient, runtime: Runtime
) -> None:
    env = admin_env(azurite, table_prefix, **CLI_ENV)
    first = await create_user(client)
    proc = _follow(env, client.tenant)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        shown = json.loads(await asyncio.to_thread(lines.get, timeout=60))
        assert shown["type"] == "user.created" and shown["data"]["object"]["id"] == first["id"]
        second = await create_user(client)
        shown = json.loads(await asyncio.to_thread(lines.get, timeout=20))
        assert shown["type"] == "user.created" and shown["data"]["object"]["id"] == second["id"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("events --follow did not stop on Ctrl-C")
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    assert code == 0, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert feed.decode_cursor(client.tenant, _next(stderr))


# ---- over real HTTP, on the local host ----------------------------------------------------------------


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


async def test_the_local_host_serves_the_feed_over_http(local_server: Any) -> None:
    creds = await asyncio.to_thread(local_server.create_tenant, "feed")
    made = await asyncio.to_thread(admin, local_server.env, "app-key", "create", "bb-" + uuid.uuid4().hex[:8], "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    # An event committed a minute ago (the store's clock set back), so the server's 15 s settle
    # delay has passed already.
    writer = build_runtime(local_server.settings)
    use_runtime(writer)
    try:
        with clock_behind(writer, 60_000_000):
            user = await create_user(FunctionsClient(creds.tenant, creds.token))
    finally:
        use_runtime(None)
        await writer.close()

    url = f"{local_server.base_url}/api/v1/tenants/{creds.tenant}/events"
    status, headers, body = await asyncio.to_thread(_get, url + "?limit=10", {"Authorization": f"Bearer {key}"})
    assert status == 200, body
    assert headers["content-type"] == "application/json; charset=utf-8" and headers["cache-control"] == "no-store"
    page = json.loads(body)
    assert ids(page["data"]) == [user["id"]] and page["data"][0]["type"] == "user.created"
    assert feed.decode_cursor(creds.tenant, page["next"])

    status, headers, body = await asyncio.to_thread(_get, url, {"Authorization": f"Bearer {creds.token}"})
    assert status == 401 and headers["www-authenticate"] == "Bearer", body
    assert json.loads(body)["error"]["code"] == "unauthorized"
    unknown = f"{local_server.base_url}/api/v1/tenants/nobody-{uuid.uuid4().hex[:8]}/events"
    status, _, body = await asyncio.to_thread(_get, unknown, {"Authorization": f"Bearer {key}"})
    assert status == 404 and json.loads(body)["error"]["code"] == "tenant_not_found"
