"""Races (issue #6, "Races"), on Azurite.

1. A mixed concurrent workload on one tenant, through the SCIM service and the Table store (see
   :class:`ServiceClient`): :data:`WORKERS` workers, :data:`OPERATIONS`
   operations each (creates of users from a shared pool of userNames in random case, renames
   into that pool, member adds and removes on the same few groups, disables and enables of
   any worker's users, deletes). Each worker owns the users it created: only the owner renames,
   deletes, or changes the memberships of its users (so "expected" is well defined: the last
   operation of the owner that SUCCEEDED); every worker PATCHes everyone's ``active``, which
   races with the owners' renames and deletes. At the end, read raw from the table: every
   invariant of :func:`tests.helpers.violations` (no two users share a userName
   case-insensitively, every index row points at a live resource that is indexed by it,
   memberships and member flags agree and name live resources), every group's members are
   exactly the expected set (also as the API returns them), every live user has the userName
   of its owner's last successful create/rename, every deleted user is gone, and no request
   answered anything but the statuses its operation allows (never 412, 500 or 503).
2. ETag-guarded updates under contention, through the registered Functions entry point:
   concurrent PATCHes of different attributes of one user all apply (the service retries on
   conflict) when no ``If-Match`` is sent; with ``If-Match`` of the same version, exactly one
   applies and the others answer 412.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from scim.core.errors import ScimError
from scim.core.service import ScimRequest, ScimService
from scim.functions.http_adapter import error_response
from tests.functions_client import Response
from tests.helpers import GROUP_URN, PATCH_URN, USER_URN, raw_directory, violations
from tests.localhost_server import record_summary

WORKERS = 16
OPERATIONS = 125  # per worker: 2,000 in all
GROUPS = 6
NAMES = 160  # the shared pool of userNames creates and renames draw from
SEED = 6

ALLOWED = {
    "create": {201, 409},
    "rename": {200, 409},
    "add": {204},
    "remove": {204},
    "active": {200, 404},
    "delete": {204},
}


@dataclass
class ServiceClient:
    """Calls :class:`ScimService` of one tenant directly, answering like :class:`FunctionsClient`.

    The workload goes through the SCIM service and the store, where every race is decided; the
    Functions adapter in front of them (token check, provisioning log) would only triple the
    CPU cost per operation, and is exercised by the other tests.
    """

    service: ScimService
    tenant: str

    async def request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Response:
        request = ScimRequest(
            method=method,
            tenant=self.tenant,
            path=path,
            base_url=f"http://127.0.0.1/scim/{self.tenant}",
            query=params or {},
            headers={},
            body=json.dumps(body).encode() if body is not None else b"",
        )
        try:
            answer = await self.service.handle(request)
        except ScimError as error:  # rendered as the HTTP adapter renders it (the one choke point)
            answer = error_response(error)
        return Response(
            answer.status,
            {k.lower(): v for k, v in answer.headers.items()},
            json.dumps(answer.body).encode() if answer.body is not None else b"",
        )

    async def get(self, path: str, params: dict[str, str] | None = None) -> Response:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any) -> Response:
        return await self.request("POST", path, body)

    async def patch(self, path: str, body: Any) -> Response:
        return await self.request("PATCH", path, body)

    async def delete(self, path: str) -> Response:
        return await self.request("DELETE", path)


@dataclass
class World:
    """What the workers share: the groups, every user id ever created, the outcome counts."""

    client: ServiceClient
    groups: list[str]
    all_users: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)


@dataclass
class Worker:
    """One worker's users and what it expects of them, from its successful operations only."""

    number: int
    rng: random.Random
    names: dict[str, str] = field(default_factory=dict)  # live user id -> userName last set
    groups: dict[str, set[str]] = field(default_factory=dict)  # live user id -> groups it is in
    deleted: set[str] = field(default_factory=set)


def _name(rng: random.Random) -> str:
    name = f"race-{rng.randrange(NAMES)}@contoso.com"
    return name.upper() if rng.random() < 0.3 else name


def _patch(op: str, path: str, value: Any) -> dict[str, Any]:
    return {"schemas": [PATCH_URN], "Operations": [{"op": op, "path": path, "value": value}]}


async def _request(world: World, kind: str, call: Any) -> Response:
    response: Response = await call
    world.statuses[(kind, response.status)] += 1
    if response.status not in ALLOWED[kind]:
        world.unexpected.append(f"{kind}: {response.status} {response.body[:200]!r}")
    return response


async def _step(world: World, me: Worker) -> None:
    client, rng = world.client, me.rng
    mine = sorted(me.names)
    roll = rng.random()
    if roll < 0.15 or not mine:
        response = await _request(
            world, "create", client.post("/Users", {"schemas": [USER_URN], "userName": _name(rng)})
        )
        if response.status == 201:
            me.names[response.json["id"]] = response.json["userName"]
            me.groups[response.json["id"]] = set()
            world.all_users.append(response.json["id"])
    elif roll < 0.30:
        user, name = rng.choice(mine), _name(rng)
        response = await _request(world, "rename", client.patch(f"/Users/{user}", _patch("Replace", "userName", name)))
        if response.status == 200:
            me.names[user] = name
    elif roll < 0.55:
        users = rng.sample(mine, min(len(mine), rng.choice((1, 1, 1, 3))))
        group = rng.choice(world.groups)
        body = _patch("Add", "members", [{"value": u} for u in users])
        if (await _request(world, "add", client.patch(f"/Groups/{group}", body))).status == 204:
            for user in users:
                me.groups[user].add(group)
    elif roll < 0.70:
        user, group = rng.choice(mine), rng.choice(world.groups)
        body = _patch("Remove", "members", [{"value": user}])
        if (await _request(world, "remove", client.patch(f"/Groups/{group}", body))).status == 204:
            me.groups[user].discard(group)
    elif roll < 0.93:
        user = rng.choice(world.all_users)
        await _request(
            world, "active", client.patch(f"/Users/{user}", _patch("Replace", "active", rng.choice(("False", "True"))))
        )
    else:
        user = rng.choice(mine)
        if (await _request(world, "delete", client.delete(f"/Users/{user}"))).status == 204:
            del me.names[user], me.groups[user]
            me.deleted.add(user)


async def _work(world: World, me: Worker, deadline: float) -> int:
    done = 0
    for _ in range(OPERATIONS):
        if time.monotonic() > deadline:
            break
        await _step(world, me)
        done += 1
    return done


async def test_mixed_concurrent_workload_keeps_every_invariant(client, runtime, azurite, table_prefix):
    client = ServiceClient(runtime.service, client.tenant)  # type: ignore[assignment]
    groups = []
    for n in range(GROUPS):
        response = await client.post("/Groups", {"schemas": [GROUP_URN], "displayName": f"race-group-{n}"})
        assert response.status == 201, response.body
        groups.append(response.json["id"])
    world = World(client, groups)
    workers = [Worker(n, random.Random(SEED * 1000 + n)) for n in range(WORKERS)]
    started, cpu = time.monotonic(), time.process_time()
    done = await asyncio.wait_for(asyncio.gather(*(_work(world, w, started + 90) for w in workers)), 120)
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    assert sum(done) == WORKERS * OPERATIONS, f"only {sum(done)} operations within the time limit"
    assert world.unexpected == [], world.unexpected[:10]

    directory = await raw_directory(azurite, table_prefix, client.tenant)
    problems = violations(directory)
    live = {u: name for w in workers for u, name in w.names.items()}
    deleted = {u for w in workers for u in w.deleted}
    expected = {g: {u for w in workers for u, gs in w.groups.items() if g in gs} for g in groups}
    assert directory.ids("User") == set(live), "live users differ from the successful creates minus deletes"
    assert not deleted & directory.ids("User")
    problems += [
        f"user {u}: userName {directory.doc('User', u)['userName']!r}, expected {n!r}"
        for u, n in live.items()
        if directory.doc("User", u)["userName"] != n
    ]
    problems += [
        f"group {g}: members differ by {len(directory.members(g) ^ want)}"
        for g, want in expected.items()
        if directory.members(g) != want
    ]
    for group in groups:  # the API agrees with the rows
        members = (await client.get(f"/Groups/{group}")).json.get("members") or []
        if {m["value"] for m in members} != expected[group]:
            problems.append(f"GET /Groups/{group} returns other members")
    sample = random.Random(SEED).sample(sorted(live), min(40, len(live)))
    for user in sample:  # Entra's lookup finds each live user by its name, in any case
        found = await client.get("/Users", params={"filter": f'userName eq "{live[user].swapcase()}"'})
        if [r["id"] for r in found.json["Resources"]] != [user]:
            problems.append(f"userName filter for {live[user]!r} finds {found.json['Resources']}")
    assert problems == [], problems[:10]

    kinds = Counter(kind for kind, _ in world.statuses.elements())
    lines = [
        f"{WORKERS} workers x {OPERATIONS} operations = {sum(done)} in {elapsed:.1f} s ({cpu:.1f} s CPU in the test process)"
    ]
    lines += [
        f"  {kind:<7} {kinds[kind]:>5}: "
        + ", ".join(f"{status} x {count}" for (k, status), count in sorted(world.statuses.items()) if k == kind)
        for kind in ALLOWED
    ]
    lines.append(
        f"end state: {len(live)} users ({len(deleted)} deleted), "
        f"{sum(len(m) for m in expected.values())} memberships in {GROUPS} groups, "
        f"{len(directory.unique) + len(directory.multi)} index rows; all invariants hold"
    )
    record_summary("races: mixed concurrent workload", "\n".join(lines))


CUSTOM = "urn:ietf:params:scim:schemas:extension:CustomExtension:2.0:User"


async def test_concurrent_patches_of_one_user_all_apply_and_412_only_with_if_match(client):
    created = await client.post(
        "/Users", {"schemas": [USER_URN], "userName": f"etag-{uuid.uuid4().hex[:8]}@contoso.com"}
    )
    assert created.status == 201, created.body
    user, version = created.json["id"], created.headers["etag"]

    def body(n: int) -> dict[str, Any]:
        return _patch("Add", f"{CUSTOM}:attr{n}", f"value-{n}")

    unguarded = await asyncio.wait_for(
        asyncio.gather(*(client.patch(f"/Users/{user}", body(n)) for n in range(WORKERS))), 60
    )
    assert [r.status for r in unguarded] == [200] * WORKERS, [
        (r.status, r.body[:120]) for r in unguarded if r.status != 200
    ]
    stored = (await client.get(f"/Users/{user}")).json
    assert stored[CUSTOM] == {f"attr{n}": f"value-{n}" for n in range(WORKERS)}

    version = (await client.get(f"/Users/{user}")).headers["etag"]
    guarded = await asyncio.wait_for(
        asyncio.gather(
            *(client.patch(f"/Users/{user}", body(100 + n), headers={"If-Match": version}) for n in range(WORKERS))
        ),
        60,
    )
    statuses = Counter(r.status for r in guarded)
    assert statuses == {200: 1, 412: WORKERS - 1}, statuses
    winner = next(n for n, r in enumerate(guarded) if r.status == 200)
    stored = (await client.get(f"/Users/{user}")).json[CUSTOM]
    assert {f"attr{100 + n}" for n in range(WORKERS)} & set(stored) == {f"attr{100 + winner}"}
    assert all(stored[f"attr{n}"] == f"value-{n}" for n in range(WORKERS))  # nothing lost by the losers
