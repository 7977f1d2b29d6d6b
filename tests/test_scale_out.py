"""Scale-out (issue 15, "Two and more instances"): independent app processes on one storage.

:data:`INSTANCES` processes ``python -m devtools.localhost`` (:func:`tests.localhost_server.app_processes`)
serve the same Azurite tables. An Entra workload goes to them round-robin over real HTTP, from
:data:`WORKERS` connections at once (each worker its own aiohttp session, every request to the
next instance in turn), the mixed workload of ``tests/test_races.py`` (:mod:`tests.entra_workload`):
creates from a shared pool of userNames in random case, renames into that pool, member adds and
removes on the same few groups, disables and enables of any worker's users, deletes. Each worker
owns the users it created (only the owner renames, deletes or changes their memberships), so
what each resource must look like is the last successful operation of its owner. Then:

1. read raw from the table, every invariant of :func:`tests.helpers.violations` holds (no two users
   share a userName case-insensitively, every index row points at a live resource indexed by
   it, memberships and member flags agree and name live resources), the live users and their
   userNames, the deleted users and every group's members are exactly what the successful
   requests imply (also as each instance's API returns them), the change events agree with the
   rows (:func:`tests.event_checks.event_violations`), and no request was answered with a status
   its operation does not allow (never 412, 500 or 503);
2. the tenant's Secret Token is regenerated through the portal of one instance (over HTTP: setup
   link, its page's Continue, confirmation with its CSRF token): the old token fails on the
   *other* instance on its very next request (401), the new one works on both;
3. the failure digest timer function runs in two more processes at the same instant (a start time
   both wait for) against the same tables and SMTP server: exactly one digest arrives.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devtools.azurite import PROJECT_ROOT
from devtools.children import app_env
from scim.admin.core import create_tenant
from scim.functions.runtime import build_runtime
from scim.settings import Settings
from tests.entra_workload import Send, Worker, World, create_groups, expected_state, state_problems, work
from tests.event_checks import event_violations, membership_violations, raw_events
from tests.functions_client import Response
from tests.helpers import raw_directory, smtp_server, violations
from tests.localhost_server import AppProcess, HttpScimClient, app_processes, record_summary

pytestmark = pytest.mark.azurite(reason="independent app processes on the session's Azurite")

INSTANCES = 2
WORKERS = 16
OPERATIONS = 80  # per worker
GROUPS = 5
NAMES = 200
SEED = 15
NOTIFY = "scaleout-ops@example.test"


def _round_robin(client: HttpScimClient, by_instance: Counter[str]) -> Send:
    """A worker's transport: each request to the next instance in turn, counted per instance."""

    async def send(kind: str, method: str, path: str, body: Any) -> Response:
        base = client.next_base()
        response: Response = await client.request(method, path, body, base=base)
        by_instance[base] += 1
        return response

    return send


async def _check_state(
    azurite: str, client: HttpScimClient, world: World, workers: list[Worker], apps: list[AppProcess]
) -> tuple[list[str], dict[str, Any]]:
    """Everything the successful requests imply, read raw and through every instance."""
    prefix, tenant = apps[0].server.settings.table_prefix, client.tenant
    directory = await raw_directory(azurite, prefix, tenant)
    events = await raw_events(azurite, prefix, tenant)
    problems = violations(directory) + event_violations(directory, events, tenant)
    problems += membership_violations(directory, events)
    expected = expected_state(world, workers)
    live = expected.live
    problems += state_problems(directory, expected)
    for app in apps:  # every instance's API agrees with the rows
        for group in world.groups:
            members = (await client.get(f"/Groups/{group}", base=app.base_url)).json.get("members") or []
            if {m["value"] for m in members} != expected.members[group]:
                problems.append(f"GET /Groups/{group} on {app.base_url} returns other members")
    for n, user in enumerate(random.Random(SEED).sample(sorted(live), min(30, len(live)))):
        base = apps[n % len(apps)].base_url  # Entra's lookup, in any case, on either instance
        found = await client.get("/Users", params={"filter": f'userName eq "{live[user].swapcase()}"'}, base=base)
        if [r["id"] for r in found.json["Resources"]] != [user]:
            problems.append(f"userName filter for {live[user]!r} on {base} finds {found.json['Resources']}")
    facts = {
        "users": len(live),
        "deleted": len(expected.deleted),
        "memberships": sum(len(m) for m in expected.members.values()),
        "index rows": len(directory.unique) + len(directory.multi),
        "events": len(events),
    }
    return problems, facts


async def _regenerate_through_the_portal(session: aiohttp.ClientSession, base: str, tenant: str, secret: str) -> str:
    """Open a setup link on ``base`` and click Continue, read the confirmation page, POST it with its
    CSRF token; the new token shown."""
    link = f"{base}/portal/setup#{secret}"  # the fragment is not sent: GET /portal/setup
    async with session.get(f"{base}/portal/setup", allow_redirects=False) as shown:
        assert shown.status == 200, await shown.text()
        setup_cookie = shown.headers["Set-Cookie"].split(";", 1)[0]
        setup_token = re.search(r'name="setup_token" value="([^"]+)"', await shown.text())
    assert setup_token
    async with session.post(
        f"{base}/portal/setup",
        data={"setup_token": setup_token.group(1), "link": link},
        headers={"Cookie": setup_cookie},
        allow_redirects=False,
    ) as opened:
        assert opened.status == 303 and opened.headers["Location"] == f"/portal/t/{tenant}", await opened.text()
        cookie = opened.headers["Set-Cookie"].split(";", 1)[0]
    async with session.get(f"{base}/portal/t/{tenant}/token/regenerate", headers={"Cookie": cookie}) as confirm:
        assert confirm.status == 200, await confirm.text()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', await confirm.text())
    assert csrf
    async with session.post(
        f"{base}/portal/t/{tenant}/token/regenerate", data={"csrf_token": csrf.group(1)}, headers={"Cookie": cookie}
    ) as regenerated:
        assert regenerated.status == 200, await regenerated.text()
        token = re.search(r'id="new-token" type="text" readonly value="([^"]+)"', await regenerated.text())
    assert token
    return token.group(1)


DIGEST_RUN = r"""
import asyncio, json, logging, sys, time
from datetime import timedelta

from scim.notify import notifier

# The workload's failures are seconds old: no lag before they are reported (as in tests/test_notifications.py).
notifier.DEFAULT_LAG = timedelta(0)

import function_app
from devtools.localhost import close_app_runtime

timer = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}["notify_timer"]


async def main(at):
    await asyncio.sleep(max(0.0, at - time.time()))
    started = time.time()
    try:
        await timer(None)
    finally:
        ended = time.time()
        await close_app_runtime()
    print(json.dumps({"started": started, "ended": ended}), flush=True)


logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
asyncio.run(main(float(sys.argv[1])))
"""


async def _timer_run(env: dict[str, str], at: float) -> tuple[dict[str, float], str]:
    """The registered digest timer function, run once in a process of its own at wall time ``at``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DIGEST_RUN,
        str(at),
        cwd=PROJECT_ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1]), err.decode()


async def test_an_entra_workload_over_two_instances_then_token_regeneration_and_two_timer_runs(
    azurite: str, table_prefix: str, tmp_path: Path
) -> None:
    prefix = f"{table_prefix}so"  # tables of its own: its digest run sees this tenant only
    started = time.monotonic()
    with smtp_server() as (mailbox, smtp_port):
        mail = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port), "NOTIFY_FROM": "scim@example.test"}
        base_env = app_env(azurite, prefix, "127.0.0.1", 7071)
        base_env.pop("NOTIFY_SCHEDULE", None)
        settings = Settings.from_env(base_env)
        creds = await create_tenant(settings, "so" + uuid.uuid4().hex[:10], notify=(NOTIFY,))
        with app_processes(INSTANCES, azurite, prefix, tmp_path, env=mail, args=["--no-timers"]) as apps:
            bases = [app.base_url for app in apps]
            async with aiohttp.ClientSession() as setup:
                client = HttpScimClient(creds.tenant, creds.token, bases, setup)
                world = World(await create_groups(client, GROUPS, "scale"), "scale", NAMES)
                by_instance: Counter[str] = Counter()
                sessions = [aiohttp.ClientSession() for _ in range(WORKERS)]
                try:
                    workers = [
                        Worker(
                            _round_robin(HttpScimClient(creds.tenant, creds.token, bases, s), by_instance),
                            random.Random(SEED * 100 + n),
                        )
                        for n, s in enumerate(sessions)
                    ]
                    workload_started = time.monotonic()
                    done = await asyncio.wait_for(asyncio.gather(*(work(world, w, OPERATIONS) for w in workers)), 120)
                    workload = time.monotonic() - workload_started
                finally:
                    for s in sessions:
                        await s.close()
                assert world.unexpected == [], world.unexpected[:10]
                problems, facts = await _check_state(azurite, client, world, workers, apps)
                assert problems == [], problems[:10]

                # 2. regenerate through one instance's portal; the other refuses the old token at once
                admin = build_runtime(settings)
                try:
                    secret, _ = await admin.portal_links.create(creds.tenant, timedelta(minutes=10), "operator:test")
                finally:
                    await admin.close()
                async with aiohttp.ClientSession() as browser:
                    new = await _regenerate_through_the_portal(browser, apps[0].base_url, creds.tenant, secret)
                for app in reversed(apps):  # the other instance first: its very next request
                    old = await client.get("/Users", params={"count": "1"}, base=app.base_url)
                    assert old.status == 401, (app.base_url, old.status, old.body)
                    assert (await client.get("/Users", token=new, base=app.base_url)).status == 200
            logs = "".join(app.server.log_path.read_text(errors="replace") for app in apps)
            assert "Traceback" not in logs, logs[logs.index("Traceback") - 500 :][:4000]  # no error while serving
            for app in apps:
                assert app.stop() == 0, app.server.log_tail()  # SIGTERM: logs written, runtime closed
            assert all(app.starts == 1 for app in apps)

        # 3. two timer runs at once, in two more processes: one digest
        env = {**base_env, **mail}
        at = time.time() + 3.0  # both have imported the app by then
        (first, log_a), (second, log_b) = await asyncio.gather(_timer_run(env, at), _timer_run(env, at))
        overlap = min(first["ended"], second["ended"]) - max(first["started"], second["started"])
        assert overlap > 0, (first, second)  # the two runs were at work at the same time
        await asyncio.sleep(0.5)
        digests = mailbox.to(NOTIFY)
        assert len(digests) == 1, [m["Subject"] for m in digests]
        assert creds.tenant in digests[0]["Subject"] + digests[0].get_payload()[0].get_payload(decode=True).decode()
    outcomes = [m.group(1) for text in (log_a, log_b) for m in re.finditer(r"failure digests: (\{.*?\})", text)]

    lines = [
        f"{INSTANCES} app processes, {WORKERS} connections x {OPERATIONS} operations = {sum(done)} requests "
        f"round-robin in {workload:.1f} s ({', '.join(f'{n}' for n in by_instance.values())} per instance)",
        *world.status_lines(),
        f"end state: {facts['users']} users ({facts['deleted']} deleted), {facts['memberships']} memberships in "
        f"{GROUPS} groups, {facts['index rows']} index rows, {facts['events']} events; every invariant holds",
        "token regenerated through instance 1's portal: the old token 401 on instance 2 at its next request",
        f"digest timer in 2 processes at once (overlapping {overlap * 1000:.0f} ms): 1 digest sent "
        f"(runs: {'; '.join(outcomes) or 'outcomes not logged'})",
        f"wall time {time.monotonic() - started:.1f} s",
    ]
    record_summary("scale-out: two app processes on one storage", "\n".join(lines))
