"""Races (issue #6, "Races"), on Azurite.

1. A mixed concurrent workload on one tenant (:mod:`tests.entra_workload`), through the SCIM
   service and the Table store (see :class:`ServiceClient`): :data:`WORKERS` workers, :data:`OPERATIONS`
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
from dataclasses import dataclass
from typing import Any

from scim.core.errors import ScimError
from scim.core.service import ScimRequest, ScimService
from scim.functions.http_adapter import error_response
from tests.entra_workload import Worker, World, create_groups, expected_state, patch_body, state_problems, work
from tests.functions_client import Response
from tests.helpers import USER_URN, raw_directory, violations
from tests.localhost_server import record_summary

WORKERS = 16
OPERATIONS = 125  # per worker: 2,000 in all
GROUPS = 6
NAMES = 160  # the shared pool of userNames creates and renames draw from
SEED = 6


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

    async def send(self, kind: str, method: str, path: str, body: Any) -> Response:
        """The workload's transport (:data:`tests.entra_workload.Send`)."""
        return await self.request(method, path, body)


async def test_mixed_concurrent_workload_keeps_every_invariant(client, runtime, azurite, table_prefix):
    client = ServiceClient(runtime.service, client.tenant)  # type: ignore[assignment]
    world = World(await create_groups(client, GROUPS, "race"), "race", NAMES)
    workers = [Worker(client.send, random.Random(SEED * 1000 + n)) for n in range(WORKERS)]
    started, cpu = time.monotonic(), time.process_time()
    done = await asyncio.wait_for(
        asyncio.gather(*(work(world, w, OPERATIONS, deadline=started + 90) for w in workers)), 120
    )
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    assert sum(done) == WORKERS * OPERATIONS, f"only {sum(done)} operations within the time limit"
    assert world.unexpected == [], world.unexpected[:10]

    directory = await raw_directory(azurite, table_prefix, client.tenant)
    expected = expected_state(world, workers)
    live = expected.live
    problems = violations(directory) + state_problems(directory, expected)
    for group in world.groups:  # the API agrees with the rows
        members = (await client.get(f"/Groups/{group}")).json.get("members") or []
        if {m["value"] for m in members} != expected.members[group]:
            problems.append(f"GET /Groups/{group} returns other members")
    sample = random.Random(SEED).sample(sorted(live), min(40, len(live)))
    for user in sample:  # Entra's lookup finds each live user by its name, in any case
        found = await client.get("/Users", params={"filter": f'userName eq "{live[user].swapcase()}"'})
        if [r["id"] for r in found.json["Resources"]] != [user]:
            problems.append(f"userName filter for {live[user]!r} finds {found.json['Resources']}")
    assert problems == [], problems[:10]

    lines = [
        f"{WORKERS} workers x {OPERATIONS} operations = {sum(done)} in {elapsed:.1f} s ({cpu:.1f} s CPU in the test process)",
        *world.status_lines(),
        f"end state: {len(live)} users ({len(expected.deleted)} deleted), "
        f"{sum(len(m) for m in expected.members.values())} memberships in {GROUPS} groups, "
        f"{len(directory.unique) + len(directory.multi)} index rows; all invariants hold",
    ]
    record_summary("races: mixed concurrent workload", "\n".join(lines))


CUSTOM = "urn:ietf:params:scim:schemas:extension:CustomExtension:2.0:User"


async def test_concurrent_patches_of_one_user_all_apply_and_412_only_with_if_match(client):
    created = await client.post(
        "/Users", {"schemas": [USER_URN], "userName": f"etag-{uuid.uuid4().hex[:8]}@contoso.com"}
    )
    assert created.status == 201, created.body
    user, version = created.json["id"], created.headers["etag"]

    def body(n: int) -> dict[str, Any]:
        return patch_body("Add", f"{CUSTOM}:attr{n}", f"value-{n}")

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
