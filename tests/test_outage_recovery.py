"""Storage outages under load, and the recovery of everything without a restart (issue 15).

One app process (``python -m devtools.localhost``, :func:`tests.localhost_server.app_processes`)
reaches the session's Azurite through the fault-playing TCP proxy of ``tests/tcp_proxy.py``; it
runs the webhook delivery timer and the failure digest timer every second, with a webhook
endpoint of its tenant (a :class:`~tests.localhost_server.WebhookReceiver` here) and a real SMTP
server. :data:`WORKERS` Entra-like clients keep sending requests over HTTP (creates, ``active``
PATCHes, member adds, filter lookups) the whole time. Storage then goes away (the proxy refuses
connections, or accepts them and never answers) for a while, and comes back. Proved, per mode:

1. **Requests**: every request is answered (never a dropped connection, never a 500), each
   sent while storage is away within the fault tests' :data:`BOUND` (15 s: README "Guarantees",
   a storage outage is a 503, not a hang), each in flight when it went away within the store's
   20 s budget per operation (:data:`IN_FLIGHT_BOUND`); every one sent while storage is away answers 503 with ``Retry-After`` and a SCIM
   error body; once storage is back, every request succeeds again, from the same process.
   ``GET /api/health`` answers 503 meanwhile and 200 after.
2. **Event delivery**: events committed while this process cannot reach storage (by another
   instance, written here straight to Azurite with its own delivery off) and every event
   committed before and after are delivered to the endpoint once storage is back: every event
   row at least once.
3. **The timer**: the digest timer's runs during the outage fail cleanly and send nothing (the
   host logs a run that raised the storage error and runs it again at its next time; a part that
   fails inside a run, such as the retention of a tenant, is logged by the timer itself); the first run after
   recovery sends the tenant's digest (its Secret Token expires within 14 days: the warning is
   due, and notifications were turned on during the outage), and later runs send no second one.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devtools.children import app_env
from devtools.local_defaults import azurite_connection_string
from scim.admin.core import create_tenant
from scim.functions.runtime import build_runtime, use_runtime
from scim.settings import Settings
from scim.store.azure_client import STORAGE_BUDGET
from tests.event_checks import event_violations, raw_events
from tests.functions_client import FunctionsClient
from tests.helpers import GROUP_URN, PATCH_URN, USER_URN, raw_directory, smtp_server, violations
from tests.localhost_server import HttpScimClient, NoAnswer, WebhookReceiver, app_processes, record_summary
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.azurite(reason="an app process whose storage is behind a TCP proxy")

BOUND = 15.0
"""Seconds within which a request must answer when storage refuses, resets or hangs (tests/test_faults.py)."""
IN_FLIGHT_BOUND = STORAGE_BUDGET + 1.0
"""Seconds within which a request in flight when storage goes away must answer: its store
operation gives up after ``STORAGE_BUDGET`` (20 s, README "Guarantees"), its token was read before."""
WORKERS = 12
BEFORE = 2.0
"""Seconds of load before the outage."""
OUTAGE = {"refuse": 4.0, "hang": 16.0}
"""Seconds storage stays away, per mode (a hung request answers after about 12 s)."""
FRESH_BEFORE_END = {"refuse": 1.0, "hang": 13.0}
"""Seconds before storage comes back that the fresh requests stop (so they are answered while it is away)."""
AFTER = 3.0
"""Seconds of load after storage is back."""
SETTLING = 1.0
"""Seconds after a switch of the proxy within which a request may still see the previous state."""
NOTIFY = "outage-ops@example.test"
ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"


@dataclass
class Answer:
    kind: str
    sent: float
    answered: float
    status: int
    problem: str | None = None


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)  # created user id -> userName


def _check(response: Any) -> str | None:
    """What is wrong with an answer, if anything (503: Retry-After and a SCIM error body)."""
    if response.status not in (200, 201, 204, 503):
        return f"status {response.status}: {response.body[:200]!r}"
    if response.status == 503:
        body = response.json
        if int(response.headers.get("retry-after", "0")) <= 0:
            return "503 without Retry-After"
        if body.get("schemas") != [ERROR_URN] or body.get("status") != "503" or "Traceback" in json.dumps(body):
            return f"503 body {body}"
    return None


async def _one(client: HttpScimClient, group: str, load: Load, rng: random.Random, mine: list[str]) -> Answer:
    """One Entra request of a random kind (on the users of ``mine``), recorded in ``load``."""
    roll = rng.random()
    if roll < 0.35 or not mine:
        kind, name = "create", f"out-{uuid.uuid4().hex[:10]}@contoso.com"
        call = client.post("/Users", {"schemas": [USER_URN], "userName": name, "active": True})
    elif roll < 0.6:
        kind, user = "active", rng.choice(mine)
        body = {"schemas": [PATCH_URN], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}
        call = client.patch(f"/Users/{user}", body)
    elif roll < 0.8:
        kind, user = "add", rng.choice(mine)
        body = {"schemas": [PATCH_URN], "Operations": [{"op": "Add", "path": "members", "value": [{"value": user}]}]}
        call = client.patch(f"/Groups/{group}", body)
    else:
        kind = "lookup"
        call = client.get(
            "/Users", params={"filter": f'userName eq "{load.users.get(rng.choice(mine), "x") if mine else "x"}"'}
        )
    sent = time.monotonic()
    try:
        response = await call
    except NoAnswer as lost:
        answer = Answer(kind, sent, time.monotonic(), 0, f"no answer: {lost}")
        load.answers.append(answer)
        return answer
    answer = Answer(kind, sent, time.monotonic(), response.status, _check(response))
    load.answers.append(answer)
    if kind == "create" and response.status == 201:
        mine.append(response.json["id"])
        load.users[response.json["id"]] = name
    return answer


async def _entra(client: HttpScimClient, group: str, load: Load, stop: asyncio.Event, seed: int) -> None:
    """One client's requests, one after another, until ``stop``."""
    rng, mine = random.Random(seed), []  # type: ignore[var-annotated]
    while not stop.is_set():
        if (await _one(client, group, load, rng, mine)).status == 503:
            await asyncio.sleep(rng.uniform(0.05, 0.2))  # Entra backs off; a little here, to keep the load on


async def _fresh_requests(client: HttpScimClient, group: str, load: Load, until: float) -> None:
    """A new request every 0.25 s until ``until``, none waiting for another: requests that reach
    the app while storage is away (the clients' own may all be waiting on one sent before)."""
    rng, mine, sent = random.Random(7), list(load.users), []
    while time.monotonic() < until:
        sent.append(asyncio.create_task(_one(client, group, load, rng, mine)))
        await asyncio.sleep(0.25)
    await asyncio.gather(*sent)


async def _health(base: str, session: aiohttp.ClientSession) -> tuple[int, bytes, float]:
    started = time.monotonic()
    async with session.get(f"{base}/api/health") as answer:
        return answer.status, await answer.read(), time.monotonic() - started


async def _first_mail(mailbox: Any, to: str, within: float = 20.0) -> float | None:
    """When the first message to ``to`` arrived (``time.monotonic()``, polled), or None."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if mailbox.to(to):
            return time.monotonic()
        await asyncio.sleep(0.05)
    return None


async def _until(condition: Any, within: float, what: str, log: Any) -> float:
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < within, f"{what}: not within {within} s\n{log()}"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


@pytest.mark.parametrize("mode", ["refuse", "hang"])
async def test_a_storage_outage_under_load_answers_503_in_bounded_time_and_everything_recovers_without_a_restart(
    azurite: str, table_prefix: str, tmp_path: Path, mode: str
) -> None:
    began = time.monotonic()
    prefix = f"{table_prefix}o{mode[0]}"  # tables of its own: its timers see this tenant only
    settings = Settings.from_env(app_env(azurite, prefix, "127.0.0.1", 7071))  # straight to Azurite
    port = int(azurite.split("TableEndpoint=http://127.0.0.1:")[1].split("/")[0])
    creds = await create_tenant(settings, "o" + uuid.uuid4().hex[:11], expires=10 * 86400)
    admin, other = build_runtime(settings), build_runtime(settings)
    receiver = await WebhookReceiver().start()
    try:
        _, receiver.secret = await admin.webhooks.add(receiver.url, [creds.tenant])
        await other.delivery().close()  # "another instance" whose deliverer is gone: only the app can deliver
        with (
            smtp_server() as (mailbox, smtp_port),
            TcpProxy(port) as proxy,
            app_processes(
                1,
                azurite_connection_string("127.0.0.1", proxy.port),
                prefix,
                tmp_path,
                env={
                    "SMTP_HOST": "127.0.0.1",
                    "SMTP_PORT": str(smtp_port),
                    "NOTIFY_FROM": "scim@example.test",
                    "NOTIFY_SCHEDULE": "0 */10 * * * *",
                },
                args=["--timer", "webhook_timer=1", "--timer", "notify_timer=1"],
            ) as (app,),
        ):
            async with aiohttp.ClientSession() as session:
                client = HttpScimClient(creds.tenant, creds.token, [app.base_url], session, timeout=BOUND + 10)
                group = await client.post("/Groups", {"schemas": [GROUP_URN], "displayName": f"outage-{mode}"})
                assert group.status == 201, group.body
                load, stop = Load(), asyncio.Event()
                workers = [
                    asyncio.create_task(_entra(client, group.json["id"], load, stop, seed)) for seed in range(WORKERS)
                ]
                try:
                    await asyncio.sleep(BEFORE)
                    proxy.set_mode(mode)
                    down = time.monotonic()
                    # meanwhile: notifications turned on, and another instance commits events
                    await admin.tenants.set_notifications(creds.tenant, (NOTIFY,), True)
                    use_runtime(other)
                    try:
                        elsewhere = FunctionsClient(creds.tenant, creds.token)
                        committed_elsewhere = []
                        for _ in range(5):
                            made = await elsewhere.post(
                                "/Users",
                                {"schemas": [USER_URN], "userName": f"else-{uuid.uuid4().hex[:8]}@contoso.com"},
                            )
                            assert made.status == 201, made.body
                            committed_elsewhere.append(made.json["id"])
                    finally:
                        use_runtime(None)
                    fresh = asyncio.create_task(
                        _fresh_requests(client, group.json["id"], load, down + OUTAGE[mode] - FRESH_BEFORE_END[mode])
                    )
                    await asyncio.sleep(1.1)
                    status, body, health_down = await _health(app.base_url, session)
                    assert (status, body) == (503, b'{"status":"unavailable"}') and health_down <= BOUND, (
                        status,
                        health_down,
                    )
                    await asyncio.sleep(max(0.0, down + OUTAGE[mode] - time.monotonic()))
                    assert mailbox.to(NOTIFY) == [], "a digest went out while storage was away"
                    proxy.set_mode("pass")
                    up = time.monotonic()
                    mailed = asyncio.create_task(_first_mail(mailbox, NOTIFY))
                    await asyncio.sleep(AFTER)
                    await fresh
                finally:
                    stop.set()
                    await asyncio.wait_for(asyncio.gather(*workers), BOUND + 15)

                # 1. every request answered in bounded time; 503 while storage was away; success after
                problems = [f"{a.kind}: {a.problem}" for a in load.answers if a.problem]
                slow = [
                    a
                    for a in load.answers
                    if a.answered - a.sent > (BOUND if a.sent > down + SETTLING else IN_FLIGHT_BOUND)
                ]
                during = [a for a in load.answers if down + SETTLING < a.sent and a.answered < up]
                after = [a for a in load.answers if a.sent > up + SETTLING]
                assert problems == [], problems[:10]
                assert slow == [], [(a.kind, a.status, round(a.answered - a.sent, 1)) for a in slow[:10]]
                assert during and {a.status for a in during} == {503}, Counter(a.status for a in during)
                assert after and 503 not in {a.status for a in after}, Counter(a.status for a in after)
                health_up = await _until(lambda: _healthy(app.base_url, session), 5, "healthy", app.server.log_tail)

                # 2. every committed event delivered, those of the other instance during the outage too
                created = [
                    e.event
                    for e in await raw_events(azurite, prefix, creds.tenant)
                    if e.event["type"] == "user.created"
                ]
                elsewhere_events = [e["id"] for e in created if e["data"]["object"]["id"] in committed_elsewhere]
                assert len(elsewhere_events) == len(committed_elsewhere)

                async def delivered() -> bool:
                    events = await raw_events(azurite, prefix, creds.tenant)
                    return {e.event["id"] for e in events} <= receiver.event_ids()

                await _until(delivered, 30, "delivery after the outage", app.server.log_tail)
                arrivals = [receiver.first_arrival(e) or 0.0 for e in elsewhere_events]
                events = await raw_events(azurite, prefix, creds.tenant)
                assert min(arrivals) > up, "an event committed during the outage was delivered before it ended"
                delivery = max(arrivals) - up
                assert receiver.refused == 0
                directory = await raw_directory(azurite, prefix, creds.tenant)
                assert violations(directory) + event_violations(directory, events, creds.tenant) == []
                assert set(load.users) <= directory.ids("User")

                # 3. the digest timer: failed while storage was away, sends once after
                async def sent() -> bool:
                    return len(mailbox.to(NOTIFY)) >= 1

                await _until(sent, 15, "the digest after the outage", app.server.log_tail)
                first_mail = await mailed
                assert first_mail is not None and first_mail > up
                digest = first_mail - up
                await asyncio.sleep(2.5)  # two more runs of the timer: nothing more to send
                [message] = mailbox.to(NOTIFY)
                assert creds.tenant in message["Subject"] + message.as_string()
                log = app.server.log_path.read_text(errors="replace")
                # the runs during the outage: the host logged the run's storage error (a run that raised), or the
                # timer logged the part that failed (retention, a tenant's digest), and went on at its next time
                failed = re.findall(r"timer notify_timer raised|scim\.(?:timer|notify): .*StoreUnavailable", log)
                assert failed, log[-3000:]
                assert app.alive and app.starts == 1, "the app was restarted"
    finally:
        await receiver.stop()
        await admin.close()
        await other.close()

    statuses = Counter(a.status for a in load.answers)
    slowest = max(a.answered - a.sent for a in load.answers if a.sent > down + SETTLING)
    in_flight = max(a.answered - a.sent for a in load.answers if a.sent <= down + SETTLING)
    lines = [
        f"{mode}: storage away {up - down:.1f} s under {WORKERS} concurrent clients: {len(load.answers)} requests, "
        f"{dict(sorted(statuses.items()))}; slowest answer {slowest:.1f} s (bound {BOUND:g} s), of a request in flight "
        f"when storage went away {in_flight:.1f} s (bound {IN_FLIGHT_BOUND:g} s)",
        f"  all {len(during)} requests sent while storage was away: 503 + Retry-After; all {len(after)} sent after: success",
        f"  /api/health 503 in {health_down:.1f} s while away, 200 {health_up:.1f} s after; {len(events)} events all "
        f"delivered, the 5 committed by another instance during the outage {delivery:.1f} s after storage was back",
        f"  digest timer failed during the outage, sent 1 digest {digest:.1f} s after storage was back; the same process "
        "throughout; "
        f"wall time {time.monotonic() - began:.1f} s",
    ]
    record_summary(f"storage outage under load ({mode}) and recovery", "\n".join(lines))


async def _healthy(base: str, session: aiohttp.ClientSession) -> bool:
    status, body, _ = await _health(base, session)
    return status == 200 and body == b'{"status":"ok"}'
