"""devtools.localhost runs the app's timers: the webhook delivery sweep, as the Functions host would.

The pure part (which schedules are a fixed interval) and the timer loop (runs at its interval,
never two runs at once, an error logged and the host still serving, cancelled on stop) use a
tiny FunctionApp defined here. Then ``python -m devtools.localhost`` serves ``function_app:app``
on its own tables of the session's Azurite: a webhook registered for a tenant gets the event of
a SCIM write made over HTTP (the write's poke), an event committed by an instance that died
before delivering it (the timer's sweep), each verified with the Standard Webhooks reference
library; and a SIGTERM stops the host with its deliverer's lease given back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import azure.functions as func
import pytest

from devtools.azurite import PROJECT_ROOT, free_port
from devtools.children import app_env, stop_child
from devtools.localhost import LocalFunctionsHost, UnknownTimer, schedule_interval, timer_functions
from tests.localhost_server import WebhookReceiver

# -- which schedules this host runs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "seconds"),
    [
        ("*/10 * * * * *", 10.0),
        ("*/1 * * * * *", 1.0),
        ("0 */10 * * * *", 600.0),
        ("30 * * * * *", 60.0),
        ("0 0 * * * *", 3600.0),
        ("0 0 */6 * * *", 6 * 3600.0),
        ("0 30 9 * * *", 86400.0),
        ("00:00:10", 10.0),
        ("01:30:00", 5400.0),
        ("%EVERY%", 20.0),
        # not a fixed interval, or not a schedule: not run
        ("0 0 9 * * 1-5", None),
        ("0 5,35 * * * *", None),
        ("*/0 * * * * *", None),
        ("* * * * *", None),
        ("00:00:00", None),
        ("%UNSET_SCHEDULE%", None),
        ("", None),
    ],
)
def test_fixed_interval_schedules_are_read_and_others_are_not(schedule: str, seconds: float | None) -> None:
    assert schedule_interval(schedule, {"EVERY": "*/20 * * * * *"}) == seconds


def test_the_apps_timers_are_found_with_their_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SCHEDULE", "0 */10 * * * *")
    import function_app

    timers = {t.function_name: t for t in timer_functions(function_app.app)}
    assert timers["webhook_timer"].interval == 10.0  # issue 12: the delivery sweep every 10 s
    assert timers["notify_timer"].interval == 600.0
    assert timers["webhook_timer"].trigger_arg == "timer"
    monkeypatch.delenv("NOTIFY_SCHEDULE")
    assert {t.function_name: t.interval for t in timer_functions(function_app.app)}["notify_timer"] is None


# -- the timer loop, on a tiny app -----------------------------------------------------------------

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
RUNS: dict[str, list[float]] = {"tick": [], "slow": [], "boom": []}
ACTIVE = {"slow": 0, "most": 0}


@app.route(route="ping")
async def ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong")


@app.timer_trigger(schedule="*/1 * * * * *", arg_name="mytimer", run_on_startup=True)
async def tick(mytimer: func.TimerRequest) -> None:
    assert mytimer.past_due is False
    RUNS["tick"].append(time.monotonic())


@app.timer_trigger(schedule="*/1 * * * * *", arg_name="timer")
async def slow(timer: func.TimerRequest) -> None:
    ACTIVE["slow"] += 1
    ACTIVE["most"] = max(ACTIVE["most"], ACTIVE["slow"])
    try:
        await asyncio.sleep(0.3)
        RUNS["slow"].append(time.monotonic())
    finally:
        ACTIVE["slow"] -= 1


@app.timer_trigger(schedule="*/1 * * * * *", arg_name="timer")
def boom(timer: func.TimerRequest) -> None:  # a plain function: run in a thread
    RUNS["boom"].append(time.monotonic())
    raise RuntimeError("the timer failed")


@app.timer_trigger(schedule="0 0 9 * * 1-5", arg_name="timer")
async def weekdays(timer: func.TimerRequest) -> None:
    raise AssertionError("a schedule the host cannot read is not run")


async def test_timers_run_at_their_interval_one_run_at_a_time_and_stop_with_the_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for runs in RUNS.values():
        runs.clear()
    local = LocalFunctionsHost(app, route_prefix="", timer_intervals={"tick": 0.2, "slow": 0.05, "boom": 0.2})
    with caplog.at_level(logging.INFO, logger="devtools.localhost"):
        await local.start("127.0.0.1", 0)
        started = time.monotonic()
        try:
            await asyncio.sleep(1.1)
            async with aiohttp.ClientSession() as session, session.get(f"{local.base_url}/ping") as r:
                assert r.status == 200 and await r.text() == "pong"  # still serving, whatever the timers did
        finally:
            await local.stop()
    stopped = time.monotonic()
    served = stopped - started
    counts = {name: len(runs) for name, runs in RUNS.items()}
    assert 4 <= counts["tick"] <= served / 0.2 + 2, (counts, served)  # run_on_startup, then every 0.2 s
    # 0.3 s runs due every 0.05 s: the runs that fall due during one are skipped
    assert 2 <= counts["slow"] <= served / 0.3 + 1, (counts, served)
    assert ACTIVE["most"] == 1 and ACTIVE["slow"] == 0  # never two at once; the last one cancelled
    assert counts["boom"] >= 3, counts  # it raised, and ran again
    assert sum("timer boom raised" in r.getMessage() for r in caplog.records) == counts["boom"]
    assert any("weekdays" in r.getMessage() and "not run" in r.getMessage() for r in caplog.records)
    await asyncio.sleep(0.5)
    assert {name: len(runs) for name, runs in RUNS.items()} == counts, "a timer ran after the host stopped"
    assert all(t < stopped for runs in RUNS.values() for t in runs)


def test_timers_can_be_turned_off_and_unknown_intervals_are_refused() -> None:
    assert LocalFunctionsHost(app, route_prefix="", timers=False).timers == []
    with pytest.raises(UnknownTimer, match="nosuch"):
        LocalFunctionsHost(app, route_prefix="", timer_intervals={"nosuch": 1.0})
    with pytest.raises(UnknownTimer):
        LocalFunctionsHost(app, route_prefix="", timer_intervals={"tick": 0})


# -- the app: webhook delivery through `python -m devtools.localhost` ------------------------------


def user_names(receiver: WebhookReceiver, event_type: str) -> list[str]:
    """The userNames of the received events of ``event_type``, in arrival order."""
    return [m["data"]["data"]["object"].get("userName") for m in receiver.got if m["type"] == event_type]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = await WebhookReceiver().start()
    try:
        yield r
    finally:
        await r.stop()


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]


async def _wait_for(condition: Callable[[], bool], within: float, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s; host log:\n{_tail(log_path)}")
        await asyncio.sleep(0.05)


def _serve(env: dict[str, str], port: int, log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``python -m devtools.localhost`` on ``port``, once it accepts connections."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.localhost", "--port", str(port), *extra],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_child(proc)
                raise AssertionError(f"devtools.localhost did not start:\n{_tail(log_path)}") from None
            time.sleep(0.1)


@pytest.mark.azurite(reason="the local host on the session's Azurite")
async def test_the_local_host_delivers_webhooks_on_a_write_and_from_its_timer_and_stops_cleanly(
    azurite: str, table_prefix: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    from scim.admin.core import create_tenant
    from scim.functions.runtime import build_runtime, use_runtime
    from scim.settings import Settings
    from scim.webhooks.delivery import LEASE

    port = free_port()
    prefix = f"{table_prefix}lh"  # tables of its own: no other test's webhooks
    # a long settle horizon keeps the deliverer (and its lease) alive until the host stops
    env = {**app_env(azurite, prefix, "127.0.0.1", port), "EVENTS_SETTLE_SECONDS": "120"}
    env.pop("NOTIFY_SCHEDULE", None)
    settings = Settings.from_env(env)
    tenant = "hooks" + str(time.time_ns())[-6:]
    creds = await create_tenant(settings, tenant)
    admin = build_runtime(settings)
    log_path = tmp_path / "localhost.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        _id, receiver.secret = await admin.webhooks.add(f"http://127.0.0.1:{receiver.port}/hook", [tenant])
        proc = await asyncio.to_thread(_serve, env, port, log_path, "--timer", "webhook_timer=1")

        # 1. a SCIM write over HTTP: its poke delivers the event at once
        user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "http@contoso.com"}
        headers = {"Authorization": f"Bearer {creds.token}", "Content-Type": "application/scim+json"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{creds.url}/Users", data=json.dumps(user), headers=headers) as r,
        ):
            assert r.status == 201, await r.text()
            created = await r.json()
        await _wait_for(
            lambda: "http@contoso.com" in user_names(receiver, "user.created"), 10, "the write's event", log_path
        )
        message = receiver.got[0]
        assert message["data"]["tenant"] == tenant and message["data"]["data"]["object"]["id"] == created["id"]

        # 2. an event committed by an instance whose deliverer is gone: only the timer's sweep sends it
        from tests.functions_client import FunctionsClient

        await admin.delivery().close()  # this instance's pokes do nothing
        use_runtime(admin)
        try:
            response = await FunctionsClient(tenant, creds.token).post(
                "/Users", {"schemas": user["schemas"], "userName": "sweep@contoso.com"}
            )
        finally:
            use_runtime(None)
        assert response.status == 201
        await _wait_for(
            lambda: "sweep@contoso.com" in user_names(receiver, "user.created"), 15, "the sweep's event", log_path
        )
        assert receiver.refused == 0
        assert len({m["data"]["id"] for m in receiver.got}) == len(receiver.got) == 2

        # 3. SIGTERM: the timers stop, the runtime closes, the deliverer gives its lease back
        lease = await admin.deliveries.acquire(tenant, "the-test", datetime.now(UTC), LEASE)
        assert lease is None, "the host's deliverer holds the tenant's lease while it works"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        lease = await admin.deliveries.acquire(tenant, "the-test", datetime.now(UTC), LEASE)
        assert lease is not None, f"the lease was not given back on shutdown:\n{_tail(log_path)}"
        await admin.deliveries.release(lease)
        text = await asyncio.to_thread(log_path.read_text)
        assert "Traceback" not in text and "raised" not in text, text[-3000:]
        assert "webhook_timer: timer every 1 s" in text
    finally:
        stop_child(proc)
        await admin.close()
