"""The big-group probe: does a single-member PATCH (or a GET without members) cost the same on a
group of 100 as on a group of 5,000 or 50,000?

Groups of each size are filled with 100-member PATCHes (the seeding is timed and reported),
then, in rounds that alternate the order of the sizes so that all sizes see the same
storage state, one ``extra`` user (in no probe group) is added to and removed from each group
with single-member PATCHes (Entra's default dialect), and each group is read with
``excludedAttributes=members``. Requests are sequential (concurrency 1): this measures
latency, not throughput. Finally each group is read *with* its members a few times, with the
server's RSS before and after.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import dataset as D
from .client import Client, Recorder, run_pool, summarize

EXTRAS = 40


def _p50(recorder: Recorder, label: str) -> float | None:
    for row in summarize(recorder):
        if row["op"] == label:
            return row["p50_ms"]
    return None


async def seed_users(client: Client, recorder: Recorder, count: int, seed: int, concurrency: int) -> list[str]:
    """POST ``count`` users (no lookups: seeding, not replay); returns their ids in order."""
    ds = D.build(count, 0, seed + 101, tag="p")
    ids: list[str | None] = [None] * count

    async def post(spec: D.UserSpec) -> None:
        status, body = await client.request(
            "probe seed: POST /Users", "POST", "/Users", body=spec.post_body(), expect=(201,)
        )
        if status == 201:
            ids[spec.index] = body["id"]

    await run_pool((lambda s=s: post(s) for s in ds.users), concurrency)
    return [i for i in ids if i]


async def run_probe(
    client: Client,
    recorder: Recorder,
    sizes: list[int],
    *,
    iterations: int,
    seed: int,
    seed_concurrency: int,
    pool: list[str] | None,
    server_status: Callable[[], Any],
    direct: Any = None,
) -> dict[str, Any]:
    """``direct``: an async ``(count) -> ids`` and ``(group_id, ids)`` pair seeding through the store."""
    result: dict[str, Any] = {"sizes": sizes, "iterations": iterations}
    need = max(sizes) + EXTRAS
    recorder.phase = "probe-seed"
    started = time.perf_counter()
    if pool is None or len(pool) < need:
        if direct is not None:
            pool = await direct[0](need)
            result["seeded_users_direct"] = len(pool)
        else:
            pool = await seed_users(client, recorder, need, seed, seed_concurrency)
            result["seeded_users"] = len(pool)
    result["seed_users_seconds"] = round(time.perf_counter() - started, 1)
    members, extras = pool[: max(sizes)], pool[max(sizes) : need]

    groups: dict[int, str] = {}
    started = time.perf_counter()
    for size in sizes:
        body = D.GroupSpec(0, f"probe-{size}-{seed}", f"probe-{size}", []).post_body()
        status, created = await client.request("probe seed: POST /Groups", "POST", "/Groups", body=body, expect=(201,))
        if status != 201:
            result["error"] = f"could not create the probe group of {size}"
            return result
        groups[size] = created["id"]
        chunks = [members[i : i + 100] for i in range(0, size, 100)]
        chunks[-1] = members[(len(chunks) - 1) * 100 : size]

        async def add(gid: str, ids: list[str]) -> None:
            for _ in range(4):  # seeding, not measurement: retry what Azurite could not take in time
                status, _ = await client.request(
                    "probe seed: PATCH /Groups +100 members",
                    "PATCH",
                    f"/Groups/{gid}",
                    body=D.add_members_patch(ids),
                    expect=(204, 200),
                )
                if status in (200, 204):
                    return

        if direct is not None:
            started_group = time.perf_counter()
            await direct[1](groups[size], members[:size])
            result[f"seed_group_{size}_seconds"] = round(time.perf_counter() - started_group, 1)
        else:
            # two at a time: eight concurrent 100-member PATCHes to one group overran Azurite (see docs/performance.md)
            await run_pool((lambda c=c, g=groups[size]: add(g, c) for c in chunks), min(seed_concurrency, 2))
    result["seed_groups_seconds"] = round(time.perf_counter() - started, 1)

    recorder.phase = "probe"
    for it in range(iterations):
        order = sizes[it % len(sizes) :] + sizes[: it % len(sizes)]
        user = extras[it % len(extras)]
        for size in order:
            gid = groups[size]
            await client.request(
                f"probe: PATCH +1 member (group of {size})",
                "PATCH",
                f"/Groups/{gid}",
                body=D.add_members_patch([user]),
                expect=(204, 200),
            )
            await client.request(
                f"probe: PATCH -1 member (group of {size})",
                "PATCH",
                f"/Groups/{gid}",
                body=D.remove_member_patch(user),
                expect=(204, 200),
            )
            await client.request(
                f"probe: GET /Groups/{{id}}?excludedAttributes=members (group of {size})",
                "GET",
                f"/Groups/{gid}",
                query="excludedAttributes=members",
            )

    small = min(sizes)
    for verb in ("+1", "-1"):
        base = _p50(recorder, f"probe: PATCH {verb} member (group of {small})")
        for size in sizes:
            value = _p50(recorder, f"probe: PATCH {verb} member (group of {size})")
            result[f"patch_{'add' if verb == '+1' else 'remove'}_p50_ms_{size}"] = value
            if base and value is not None and size != small:
                result[f"patch_{'add' if verb == '+1' else 'remove'}_ratio_{size}_vs_{small}"] = round(value / base, 3)
    base = _p50(recorder, f"probe: GET /Groups/{{id}}?excludedAttributes=members (group of {small})")
    for size in sizes:
        value = _p50(recorder, f"probe: GET /Groups/{{id}}?excludedAttributes=members (group of {size})")
        result[f"get_excluded_p50_ms_{size}"] = value
        if base and value is not None and size != small:
            result[f"get_excluded_ratio_{size}_vs_{small}"] = round(value / base, 3)

    recorder.phase = "probe-members"
    for size in sizes:
        label = f"probe: GET /Groups/{{id}} with members (group of {size})"
        for _ in range(3):
            before = server_status()
            started = time.perf_counter()
            status, body = await client.request(label, "GET", f"/Groups/{groups[size]}")
            elapsed = time.perf_counter() - started
            after = server_status()
            got = len((body or {}).get("members") or []) if isinstance(body, dict) else 0
            if status == 200 and got != size:
                client.wrong(label, f"expected {size} members, got {got} (seeding incomplete: see seed errors)", {})
            result.setdefault(f"get_members_{size}", []).append(
                {
                    "seconds": round(elapsed, 3),
                    "members": got,
                    "server_rss_kb_before": before.get("VmRSS"),
                    "server_rss_kb_after": after.get("VmRSS"),
                    "server_hwm_kb_after": after.get("VmHWM"),
                }
            )
    return result
