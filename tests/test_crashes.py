"""Crashes (issue 15): app processes killed with SIGKILL at random moments lose nothing.

:data:`SLOTS` app processes (``python -m devtools.localhost``, :func:`tests.localhost_server.app_processes`)
serve one tenant's tables on the session's Azurite, with a webhook endpoint registered for the
tenant (a :class:`~tests.localhost_server.WebhookReceiver` in this process that verifies every
delivery with ``standardwebhooks``) and the delivery timer every second. One killer per
process waits a random 0.05-0.6 s after the process answers, kills it with SIGKILL (no clean-up
of any kind: requests, storage calls, deliveries and leases in flight are cut) and starts it
again on its port, until :data:`KILLS` kills are done. Meanwhile :data:`WORKERS` Entra-like
clients (each its own connections, every request to the next process in turn) create users,
PATCH group memberships (adds and removes on the same few groups) and ``active``, and delete
users; each worker owns its users (so what each must look like is the last answer of its
owner's requests). A request that gets no answer is sent again, as Entra does, until it is
answered: a create whose first attempt committed answers 409 and is then found by a
``userName`` filter (Entra's path), a delete whose first attempt committed answers 404.

At the end (README "Guarantees", "Events", "Webhooks"/"Delivery"):

1. the state read raw from the table is exactly what the answers imply: the live users, their
   ``userName`` and ``active``, the deleted users gone, every group's members (also as each
   process's API returns them); every invariant of :func:`tests.helpers.violations` holds, and
   every change has its event and every event its change (:func:`tests.event_checks.event_violations`);
2. nothing is orphaned: every userName whose create went unanswered, and every deleted one, can
   be created again (201), or is found by a filter when its user is alive (409, then found);
3. no committed event is lost: every event row is delivered to the endpoint at least once
   (signatures verified; the same ``webhook-id`` when delivered again), each resource's events
   first arriving in the feed's order, and the events feed (``next`` followed from the start,
   over HTTP) serves every one of them.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devtools.children import app_env
from scim.admin.core import create_tenant
from scim.functions.runtime import build_runtime
from scim.settings import Settings
from tests.entra_workload import create_groups, patch_body
from tests.event_checks import by_resource, event_violations, membership_violations, raw_events
from tests.functions_client import Response
from tests.helpers import USER_URN, raw_directory, violations
from tests.localhost_server import (
    AppProcess,
    HttpScimClient,
    NoAnswer,
    WebhookReceiver,
    app_processes,
    record_summary,
)

pytestmark = pytest.mark.azurite(reason="app processes killed on the session's Azurite")

SLOTS = 2
KILLS = 60
MIN_KILLS = 50
KILL_AFTER = (0.05, 0.6)
"""Seconds after a process answers before it is killed (uniform)."""
KILL_PHASE = 90.0
BOTH_EVERY = 10
WORKERS = 8
GROUPS = 4
SEED = 1515
DELIVERY_WAIT = 75.0
"""Seconds for the last deliveries: a killed deliverer's lease (30 s) must run out first."""

ALLOWED = {
    "create": {201},
    "add": {204},
    "remove": {204},
    "active": {200},
    "delete": {204},
    "lookup": {200},
}
AFTER_A_LOST_ANSWER = {"create": {409}, "delete": {404}}
"""What a resend may answer when the first attempt committed."""


@dataclass
class Ledger:
    """What every worker counts."""

    attempts: Counter[str] = field(default_factory=Counter)  # per kind
    answered: int = 0
    refused: int = 0  # no process listening: the request never reached one
    cut: int = 0  # the connection broke with the request sent or in flight (a kill, or a closed keep-alive)
    resent_ops: Counter[str] = field(default_factory=Counter)  # operations sent more than once
    committed_before: Counter[str] = field(default_factory=Counter)  # resends that found the first attempt done
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)


@dataclass
class Entra:
    """One worker: its connections, its users and what they must look like."""

    number: int
    client: HttpScimClient
    rng: random.Random
    ledger: Ledger
    groups: list[str]
    names: dict[str, str] = field(default_factory=dict)  # live user id -> userName
    active: dict[str, bool] = field(default_factory=dict)
    member_of: dict[str, set[str]] = field(default_factory=dict)
    deleted: dict[str, str] = field(default_factory=dict)  # user id -> its userName
    unanswered_creates: set[str] = field(default_factory=set)  # userNames
    ops: int = 0

    async def send(self, kind: str, method: str, path: str, body: Any = None, **kw: Any) -> tuple[Response, bool]:
        """Send until answered (a resend after a short pause, to the next process); the answer
        and whether the request had to be sent again."""
        tries = 0
        while True:
            tries += 1
            self.ledger.attempts[kind] += 1
            try:
                response: Response = await self.client.request(method, path, body, **kw)
            except NoAnswer as lost:
                if isinstance(lost.__cause__, aiohttp.ClientConnectorError):
                    self.ledger.refused += 1
                else:
                    self.ledger.cut += 1
                if tries >= 400:
                    raise AssertionError(f"{kind}: no answer after {tries} attempts") from None
                await asyncio.sleep(self.rng.uniform(0.05, 0.25))
                continue
            self.ledger.answered += 1
            self.ledger.statuses[(kind, response.status)] += 1
            if tries > 1:
                self.ledger.resent_ops[kind] += 1
            allowed = ALLOWED[kind] | (AFTER_A_LOST_ANSWER.get(kind, set()) if tries > 1 else set())
            if response.status not in allowed:
                self.ledger.unexpected.append(f"{kind} (try {tries}): {response.status} {response.body[:200]!r}")
            return response, tries > 1

    async def step(self) -> None:
        rng, mine, roll = self.rng, sorted(self.names), self.rng.random()
        self.ops += 1
        if roll < 0.25 or not mine:
            name = f"crash-{self.number}-{self.ops}-{uuid.uuid4().hex[:6]}@contoso.com"
            response, resent = await self.send(
                "create", "POST", "/Users", {"schemas": [USER_URN], "userName": name, "active": True}
            )
            if resent:
                self.unanswered_creates.add(name)
            if response.status == 201:
                user = response.json["id"]
            elif response.status == 409:  # the lost attempt had committed: Entra looks it up
                self.ledger.committed_before["create"] += 1
                found, _ = await self.send("lookup", "GET", "/Users", params={"filter": f'userName eq "{name}"'})
                ids = [r["id"] for r in found.json["Resources"]] if found.status == 200 else []
                if len(ids) != 1:
                    self.ledger.unexpected.append(f"create of {name}: 409, then the filter finds {ids}")
                    return
                user = ids[0]
            else:
                return
            self.names[user], self.active[user], self.member_of[user] = name, True, set()
        elif roll < 0.50:
            users = rng.sample(mine, min(len(mine), rng.choice((1, 1, 2, 3))))
            group = rng.choice(self.groups)
            body = patch_body("Add", "members", [{"value": u} for u in users])
            if (await self.send("add", "PATCH", f"/Groups/{group}", body))[0].status == 204:
                for user in users:
                    self.member_of[user].add(group)
        elif roll < 0.70:
            user, group = rng.choice(mine), rng.choice(self.groups)
            body = patch_body("Remove", "members", [{"value": user}])
            if (await self.send("remove", "PATCH", f"/Groups/{group}", body))[0].status == 204:
                self.member_of[user].discard(group)
        elif roll < 0.85:
            user, value = rng.choice(mine), rng.random() < 0.5
            body = patch_body("Replace", "active", "True" if value else "False")
            if (await self.send("active", "PATCH", f"/Users/{user}", body))[0].status == 200:
                self.active[user] = value
        else:
            user = rng.choice(mine)
            response, _ = await self.send("delete", "DELETE", f"/Users/{user}")
            if response.status in (204, 404):
                if response.status == 404:
                    self.ledger.committed_before["delete"] += 1
                self.deleted[user] = self.names.pop(user)
                del self.active[user], self.member_of[user]

    async def work(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()


@dataclass
class Killer:
    """Kills the processes in turn, each a random :data:`KILL_AFTER` after the last start
    answered (so one is serving while the other starts again), and every :data:`BOTH_EVERY`-th
    time both at once (no process answers until they are back)."""

    kills: int = 0
    both: int = 0

    async def run(self, apps: list[AppProcess], rng: random.Random, deadline: float) -> None:
        turn = 0
        while self.kills < KILLS and time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(*KILL_AFTER))
            turn += 1
            victims = apps if turn % BOTH_EVERY == 0 else [apps[turn % len(apps)]]
            for app in victims:
                await asyncio.to_thread(app.kill)
            self.kills += len(victims)
            self.both += len(victims) > 1
            await asyncio.gather(*(asyncio.to_thread(app.start) for app in victims))


async def _check_state(
    azurite: str, prefix: str, client: HttpScimClient, workers: list[Entra], apps: list[AppProcess]
) -> list[str]:
    """Everything the answers imply, read raw and through every process; the problems found."""
    directory = await raw_directory(azurite, prefix, client.tenant)
    events = await raw_events(azurite, prefix, client.tenant)
    problems = violations(directory) + event_violations(directory, events, client.tenant)
    problems += membership_violations(directory, events)
    live = {u: n for w in workers for u, n in w.names.items()}
    active = {u: a for w in workers for u, a in w.active.items()}
    deleted = {u for w in workers for u in w.deleted}
    groups = workers[0].groups
    expected = {g: {u for w in workers for u, gs in w.member_of.items() if g in gs} for g in groups}
    if directory.ids("User") != set(live):
        problems.append(
            f"live users differ from what the answers imply by {sorted(directory.ids('User') ^ set(live))[:5]}"
        )
    problems += [f"deleted user {u} is there" for u in deleted & directory.ids("User")]
    for user, name in live.items():
        if ("User", user) in directory.resources:
            doc = directory.doc("User", user)
            if doc["userName"] != name or doc.get("active") is not active[user]:
                problems.append(
                    f"user {user}: {doc['userName']!r} active={doc.get('active')}, expected {name!r} {active[user]}"
                )
    problems += [
        f"group {g}: members differ by {sorted(directory.members(g) ^ want)[:5]}"
        for g, want in expected.items()
        if directory.members(g) != want
    ]
    for app in apps:
        for group in groups:
            answer = await client.get(f"/Groups/{group}", base=app.base_url)
            if {m["value"] for m in answer.json.get("members") or []} != expected[group]:
                problems.append(f"GET /Groups/{group} on {app.base_url} returns other members")
    return problems


async def _orphans(client: HttpScimClient, workers: list[Entra]) -> tuple[list[str], Counter[str]]:
    """Every userName whose create went unanswered, and every deleted one, is usable again:
    created anew (201), or (its user alive) 409 and found by a filter."""
    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    live_by_name = {n: u for w in workers for u, n in w.names.items()}
    names = {n for w in workers for n in w.unanswered_creates} | {n for w in workers for n in w.deleted.values()}
    for name in sorted(names):
        created = await client.post("/Users", {"schemas": [USER_URN], "userName": name})
        if name in live_by_name:
            found = await client.get("/Users", params={"filter": f'userName eq "{name}"'})
            ids = [r["id"] for r in found.json["Resources"]]
            if created.status != 409 or ids != [live_by_name[name]]:
                problems.append(f"{name}: alive, but POST {created.status} and the filter finds {ids}")
            outcomes["alive: 409, found by filter"] += 1
        else:
            if created.status != 201:
                problems.append(f"{name}: POST answers {created.status} {created.body[:200]!r}: an orphan blocks it")
            outcomes["gone: created again"] += 1
    return problems, outcomes


async def _feed_ids(session: aiohttp.ClientSession, base: str, tenant: str, key: str) -> list[str]:
    """Every event id the feed serves now, following ``next`` from the start."""
    ids: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": "1000", **({"after": after} if after else {})}
        async with session.get(
            f"{base}/api/v1/tenants/{tenant}/events", params=params, headers={"Authorization": f"Bearer {key}"}
        ) as answer:
            assert answer.status == 200, await answer.text()
            page = await answer.json()
        ids += [e["id"] for e in page["data"]]
        if not page["data"]:
            return ids
        after = page["next"]


def _order_problems(events: list[Any], receiver: WebhookReceiver) -> list[str]:
    """Each resource's events first arrive in the feed's order."""
    first: dict[str, int] = {}
    for n, message in enumerate(receiver.got):
        first.setdefault(message["data"]["id"], n)
    problems = []
    for (kind, rid), mine in by_resource(events).items():
        arrivals = [first[e.event["id"]] for e in mine if e.event["id"] in first]
        if arrivals != sorted(arrivals):
            problems.append(f"{kind} {rid}: events first arrived out of order {[e.event['type'] for e in mine]}")
    return problems


async def test_sigkilled_app_processes_lose_no_answered_change_no_username_and_no_event(
    azurite: str, table_prefix: str, tmp_path: Path
) -> None:
    prefix = f"{table_prefix}cr"  # tables of its own: only this test's endpoint and tenant
    began = time.monotonic()
    env = app_env(azurite, prefix, "127.0.0.1", 7071)
    settings = Settings.from_env(env)
    creds = await create_tenant(settings, "cr" + uuid.uuid4().hex[:10])
    receiver = await WebhookReceiver().start()
    admin = build_runtime(settings)
    try:
        _, receiver.secret = await admin.webhooks.add(receiver.url, [creds.tenant])
        key = await admin.app_keys.create("crash-" + uuid.uuid4().hex[:8])
        with app_processes(SLOTS, azurite, prefix, tmp_path, args=["--timer", "webhook_timer=1"]) as apps:
            bases = [app.base_url for app in apps]
            async with aiohttp.ClientSession() as setup:
                client = HttpScimClient(creds.tenant, creds.token, bases, setup)
                groups = await create_groups(client, GROUPS, "crash")

                # the workload, while the processes are killed and started again
                ledger, stop = Ledger(), asyncio.Event()
                sessions = [aiohttp.ClientSession() for _ in range(WORKERS)]
                rng = random.Random(SEED)
                workers = [
                    Entra(
                        n,
                        HttpScimClient(creds.tenant, creds.token, bases, s, timeout=20),
                        random.Random(SEED + n),
                        ledger,
                        groups,
                    )
                    for n, s in enumerate(sessions)
                ]
                killer = Killer()
                try:
                    work = [asyncio.create_task(w.work(stop)) for w in workers]
                    kill_started = time.monotonic()
                    await killer.run(apps, rng, kill_started + KILL_PHASE)
                    kill_phase = time.monotonic() - kill_started
                    stop.set()
                    await asyncio.wait_for(asyncio.gather(*work), 60)
                    workload_ended = time.monotonic()
                finally:
                    stop.set()
                    for s in sessions:
                        await s.close()
                kills = killer.kills
                assert kills >= MIN_KILLS, f"only {kills} kills within {KILL_PHASE:.0f} s"
                assert all(app.alive for app in apps)
                assert ledger.unexpected == [], ledger.unexpected[:10]

                # 1. the state the answers imply, and every invariant
                problems = await _check_state(azurite, prefix, client, workers, apps)
                assert problems == [], problems[:10]

                # 2. nothing orphaned
                orphans, reused = await _orphans(client, workers)
                assert orphans == [], orphans[:10]

                # 3. every committed event delivered (a killed deliverer's lease runs out first), and in the feed
                directory = await raw_directory(azurite, prefix, creds.tenant)
                events = await raw_events(azurite, prefix, creds.tenant)
                assert event_violations(directory, events, creds.tenant) == []
                committed = {e.event["id"] for e in events}
                drain_started = time.monotonic()
                while committed - receiver.event_ids():
                    missing = len(committed - receiver.event_ids())
                    assert time.monotonic() - drain_started < DELIVERY_WAIT, (
                        f"{missing} committed events never delivered"
                    )
                    await asyncio.sleep(0.25)
                first: dict[str, float] = {}
                for message, at in zip(receiver.got, receiver.arrived, strict=True):
                    first.setdefault(message["data"]["id"], at)
                drained = max(first[i] for i in committed) - workload_ended
                late = sum(1 for i in committed if first[i] > workload_ended)
                assert receiver.refused == 0
                assert _order_problems(events, receiver) == []
                while not committed <= set(served := await _feed_ids(setup, bases[0], creds.tenant, key)):
                    assert time.monotonic() - drain_started < DELIVERY_WAIT + 20, len(committed - set(served))
                    await asyncio.sleep(1)
                assert len(served) == len(set(served)), "the feed served an event twice"
            starts = sum(app.starts for app in apps)
            boot = sorted(t for app in apps for t in app.start_seconds)
    finally:
        await receiver.stop()
        await admin.close()

    attempts = sum(ledger.attempts.values())
    operations = sum(w.ops for w in workers)
    delivered = len(receiver.got)
    lines = [
        f"{kills} SIGKILLs in {kill_phase:.1f} s ({SLOTS} app processes, {starts} process starts; killed in turn "
        f"{KILL_AFTER[0]}-{KILL_AFTER[1]} s after the last start answered, both at once {killer.both} times; a start "
        f"took {boot[len(boot) // 2]:.2f} s median, {boot[-1]:.2f} s max)",
        f"{operations} operations by {WORKERS} workers: {attempts} requests, {ledger.answered} answered, "
        f"{ledger.refused + ledger.cut} unanswered and sent again ({ledger.cut} cut in flight, {ledger.refused} refused)",
        "  " + ", ".join(f"{kind} {n}" for kind, n in sorted(ledger.attempts.items())),
        f"  operations that needed a resend: {dict(ledger.resent_ops)}; the lost attempt had committed: "
        f"{dict(ledger.committed_before)} (create: 409 then found by filter; delete: 404)",
        f"end state as the answers imply: {len(directory.ids('User'))} users, "
        f"{sum(len(w.deleted) for w in workers)} deleted, {len(directory.memberships)} memberships; every invariant holds",
        f"userNames usable again: {dict(reused)}",
        f"{len(committed)} committed events: all delivered ({delivered} deliveries, {delivered - len(receiver.event_ids())} "
        f"sent again after a crash; {late} first after the workload, the last {drained:.1f} s after it: a killed "
        "deliverer's lease runs out first), each resource's in order, all in the feed",
        f"wall time {time.monotonic() - began:.1f} s",
    ]
    record_summary("crashes: app processes killed with SIGKILL", "\n".join(lines))
