"""Direct seeding for the big tiers: users, groups and memberships written through the service's
own store (:class:`scim.store.tables.TableStore`, with :func:`scim.core.resource.parse_resource` and
:func:`scim.core.resource.index_terms`, exactly what ``POST /Users`` and a member ``PATCH`` do), in
the bench process, not over HTTP, and not measured.

Used by ``--seed-direct``: at 100,000 users a full HTTP initial cycle (~200,000 GET+POST at
the service's current pace, plus ~80,000 manager PATCHes) does not fit a bench run. The
measured phases then start from a directory that has those rows.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import dataset as D


async def seed_direct(
    settings: Any, tenant: str, ds: D.Dataset, concurrency: int = 6, progress: bool = True
) -> tuple[dict[int, str], dict[int, str], dict[str, float]]:
    from scim.core.resource import index_terms, parse_resource
    from scim.core.schema import GROUP, USER
    from scim.store.base import Member
    from scim.store.tables import TableStore

    store = TableStore.from_settings(settings)
    user_ids: dict[int, str] = {}
    group_ids: dict[int, str] = {}
    timings: dict[str, float] = {}
    sem = asyncio.Semaphore(concurrency)
    try:
        started = time.perf_counter()

        from scim.store.base import StoreUnavailable, UniquenessViolation

        async def create_user(spec: D.UserSpec) -> None:
            async with sem:
                parsed = parse_resource(USER, spec.post_body())
                for attempt in range(5):
                    try:
                        stored = await store.create(tenant, "User", parsed.doc, index_terms(USER, parsed.doc))
                        user_ids[spec.index] = stored.id
                        return
                    except UniquenessViolation:  # an earlier attempt did commit
                        found = await store.lookup(tenant, "User", "userName", spec.user_name.lower())
                        if found:
                            user_ids[spec.index] = found[0].id
                            return
                    except StoreUnavailable:
                        await asyncio.sleep(1 + attempt)

        for start in range(0, len(ds.users), 2000):
            await asyncio.gather(*(create_user(s) for s in ds.users[start : start + 2000]))
            if progress:
                print(
                    f"  seeded {min(start + 2000, len(ds.users))} users ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
        timings["users_seconds"] = round(time.perf_counter() - started, 1)

        started = time.perf_counter()
        for g in ds.groups:
            parsed = parse_resource(GROUP, g.post_body())
            stored = await store.create(tenant, "Group", parsed.doc, index_terms(GROUP, parsed.doc))
            group_ids[g.index] = stored.id

        failed: list[tuple[int, int]] = []

        async def add(gi: int, members: list[int]) -> None:
            async with sem:
                for attempt in range(5):  # adds are idempotent
                    try:
                        await store.add_members(
                            tenant, group_ids[gi], [Member(user_ids[m], "User") for m in members if m in user_ids]
                        )
                        return
                    except StoreUnavailable:
                        await asyncio.sleep(1 + attempt)
                # Azurite did not take it within the store's time bounds five times: some of these
                # members may be missing; the read-back must not count them as lost by the service.
                failed.extend((gi, m) for m in members)

        jobs = [(g.index, g.members[i : i + 100]) for g in ds.groups for i in range(0, len(g.members), 100)]
        done = 0
        for start in range(0, len(jobs), 200):
            chunk = jobs[start : start + 200]
            await asyncio.gather(*(add(gi, ms) for gi, ms in chunk))
            done += sum(len(ms) for _, ms in chunk)
            if progress:
                print(
                    f"  seeded {done} of {ds.memberships} memberships ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
        timings["failed_member_adds"] = len(failed)
        timings["failed"] = failed  # type: ignore[assignment]
        timings["memberships_seconds"] = round(time.perf_counter() - started, 1)
        if progress:
            print(f"  seeded {ds.memberships} memberships in {timings['memberships_seconds']} s", flush=True)
    finally:
        await store.close()
    return user_ids, group_ids, timings


class DirectSeeder:
    """Probe seeding through the store (``--seed-direct``): users, and 100-member adds."""

    def __init__(self, settings: Any, tenant: str, seed: int, concurrency: int = 6) -> None:
        self.settings, self.tenant, self.seed, self.concurrency = settings, tenant, seed, concurrency

    async def users(self, count: int) -> list[str]:
        ds = D.build(count, 0, self.seed + 101, tag="p")
        user_ids, _, _ = await seed_direct(self.settings, self.tenant, ds, self.concurrency)
        return [user_ids[i] for i in range(count) if i in user_ids]

    failed_chunks = 0

    async def members(self, group_id: str, ids: list[str]) -> None:
        from scim.store.base import Member
        from scim.store.tables import TableStore

        store = TableStore.from_settings(self.settings)
        sem = asyncio.Semaphore(2)
        try:
            from scim.store.base import StoreUnavailable

            async def add(chunk: list[str]) -> None:
                async with sem:
                    for attempt in range(5):  # adds are idempotent
                        try:
                            await store.add_members(self.tenant, group_id, [Member(i, "User") for i in chunk])
                            return
                        except StoreUnavailable:
                            await asyncio.sleep(1 + attempt)
                    self.failed_chunks += 1  # Azurite did not take it within the store's budget, 5 times

            await asyncio.gather(*(add(ids[i : i + 100]) for i in range(0, len(ids), 100)))
        finally:
            await store.close()
