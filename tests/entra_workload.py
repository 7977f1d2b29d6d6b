"""The mixed Entra workload of the race and scale-out tests (``tests/test_races.py``, ``tests/test_scale_out.py``).

Workers (:class:`Worker`, each its own seeded ``random.Random``) run :func:`work`: creates of
users from a shared pool of userNames in random case, renames into that pool, member adds and
removes on the same few groups, disables and enables of any worker's users, deletes. Each worker
owns the users it created: only the owner renames, deletes or changes the memberships of its
users, so what each resource must look like is the last operation of its owner that succeeded
(:func:`expected_state`, compared with the rows by :func:`state_problems`). Every worker PATCHes
everyone's ``active``, which races with the owners' renames and deletes. Every answer is counted
per operation kind (:attr:`World.statuses`), and one its kind does not allow (:data:`ALLOWED`:
never 412, 500 or 503) is recorded in :attr:`World.unexpected`.

The transport is the test's: each worker's ``send(kind, method, path, body)`` (:data:`Send`)
returns the :class:`~tests.functions_client.Response` (in-process through the SCIM service in
the race test, over HTTP round-robin over the app processes in the scale-out test).
:func:`create_groups` makes the groups a workload works on (the crash test's too).
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.functions_client import Response
from tests.helpers import GROUP_URN, PATCH_URN, USER_URN, Directory

ALLOWED = {
    "create": {201, 409},
    "rename": {200, 409},
    "add": {204},
    "remove": {204},
    "active": {200, 404},
    "delete": {204},
}
"""The statuses each kind of operation may answer."""

Send = Callable[[str, str, str, Any], Awaitable[Response]]
"""``send(kind, method, path, body)``: one request of the workload (``body`` None for none), its answer."""


def patch_body(op: str, path: str, value: Any) -> dict[str, Any]:
    """A SCIM PATCH of one operation."""
    return {"schemas": [PATCH_URN], "Operations": [{"op": op, "path": path, "value": value}]}


async def create_groups(client: Any, count: int, prefix: str) -> list[str]:
    """The ids of ``count`` new groups ``{prefix}-group-{n}``, created through ``client.post``."""
    groups = []
    for n in range(count):
        response = await client.post("/Groups", {"schemas": [GROUP_URN], "displayName": f"{prefix}-group-{n}"})
        assert response.status == 201, response.body
        groups.append(response.json["id"])
    return groups


@dataclass
class World:
    """What the workers share: the groups, the pool of userNames, every user id ever created, the
    outcome counts."""

    groups: list[str]
    prefix: str  # userNames are {prefix}-{n}@contoso.com ...
    pool: int  # ... for n < pool
    all_users: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def name(self, rng: random.Random) -> str:
        name = f"{self.prefix}-{rng.randrange(self.pool)}@contoso.com"
        return name.upper() if rng.random() < 0.3 else name

    def status_lines(self) -> list[str]:
        """One summary line per kind: how many requests, and how many answered each status."""
        kinds = Counter(kind for kind, _ in self.statuses.elements())
        return [
            f"  {kind:<7} {kinds[kind]:>5}: "
            + ", ".join(f"{status} x {count}" for (k, status), count in sorted(self.statuses.items()) if k == kind)
            for kind in ALLOWED
        ]


@dataclass
class Worker:
    """One worker's transport, its users and what it expects of them, from its successful operations only."""

    send: Send
    rng: random.Random
    names: dict[str, str] = field(default_factory=dict)  # live user id -> userName last set
    groups: dict[str, set[str]] = field(default_factory=dict)  # live user id -> groups it is in
    deleted: set[str] = field(default_factory=set)


async def _request(world: World, me: Worker, kind: str, method: str, path: str, body: Any = None) -> Response:
    response = await me.send(kind, method, path, body)
    world.statuses[(kind, response.status)] += 1
    if response.status not in ALLOWED[kind]:
        world.unexpected.append(f"{kind}: {response.status} {response.body[:200]!r}")
    return response


async def step(world: World, me: Worker) -> None:
    """One operation of ``me``, drawn from the mix; its bookkeeping when it succeeds."""
    rng, mine, roll = me.rng, sorted(me.names), me.rng.random()
    if roll < 0.15 or not mine:
        body = {"schemas": [USER_URN], "userName": world.name(rng)}
        response = await _request(world, me, "create", "POST", "/Users", body)
        if response.status == 201:
            me.names[response.json["id"]] = response.json["userName"]
            me.groups[response.json["id"]] = set()
            world.all_users.append(response.json["id"])
    elif roll < 0.30:
        user, name = rng.choice(mine), world.name(rng)
        body = patch_body("Replace", "userName", name)
        if (await _request(world, me, "rename", "PATCH", f"/Users/{user}", body)).status == 200:
            me.names[user] = name
    elif roll < 0.55:
        users = rng.sample(mine, min(len(mine), rng.choice((1, 1, 1, 3))))
        group = rng.choice(world.groups)
        body = patch_body("Add", "members", [{"value": u} for u in users])
        if (await _request(world, me, "add", "PATCH", f"/Groups/{group}", body)).status == 204:
            for user in users:
                me.groups[user].add(group)
    elif roll < 0.70:
        user, group = rng.choice(mine), rng.choice(world.groups)
        body = patch_body("Remove", "members", [{"value": user}])
        if (await _request(world, me, "remove", "PATCH", f"/Groups/{group}", body)).status == 204:
            me.groups[user].discard(group)
    elif roll < 0.93:
        user = rng.choice(world.all_users)
        body = patch_body("Replace", "active", rng.choice(("False", "True")))
        await _request(world, me, "active", "PATCH", f"/Users/{user}", body)
    else:
        user = rng.choice(mine)
        if (await _request(world, me, "delete", "DELETE", f"/Users/{user}")).status == 204:
            del me.names[user], me.groups[user]
            me.deleted.add(user)


async def work(world: World, me: Worker, operations: int, deadline: float = math.inf) -> int:
    """Up to ``operations`` steps of ``me``, none begun after ``deadline`` (``time.monotonic()``);
    how many were done."""
    done = 0
    for _ in range(operations):
        if time.monotonic() > deadline:
            break
        await step(world, me)
        done += 1
    return done


@dataclass
class Expected:
    """What the successful operations of all workers imply."""

    live: dict[str, str]  # user id -> userName
    deleted: set[str]
    members: dict[str, set[str]]  # group id -> its member ids


def expected_state(world: World, workers: list[Worker]) -> Expected:
    return Expected(
        live={u: name for w in workers for u, name in w.names.items()},
        deleted={u for w in workers for u in w.deleted},
        members={g: {u for w in workers for u, gs in w.groups.items() if g in gs} for g in world.groups},
    )


def state_problems(directory: Directory, expected: Expected) -> list[str]:
    """How the rows differ from ``expected``: the live users, their userNames, the deleted users,
    every group's members."""
    problems = []
    if directory.ids("User") != set(expected.live):
        problems.append(
            f"live users differ from the successful creates minus deletes by {directory.ids('User') ^ set(expected.live)}"
        )
    problems += [f"deleted user {u} is there" for u in expected.deleted & directory.ids("User")]
    problems += [
        f"user {u}: userName {directory.doc('User', u)['userName']!r}, expected {n!r}"
        for u, n in expected.live.items()
        if ("User", u) in directory.resources and directory.doc("User", u)["userName"] != n
    ]
    problems += [
        f"group {g}: members differ by {len(directory.members(g) ^ want)}"
        for g, want in expected.members.items()
        if directory.members(g) != want
    ]
    return problems
