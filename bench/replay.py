"""The Entra replay: initial cycle, lookups, incremental cycle, and the read-back check."""

from __future__ import annotations

import functools
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import dataset as D
from .client import Client, Recorder, eq, filter_query, run_pool

WORK_EMAIL = 'emails[type eq "work"].value'
DEPARTMENT = f"{D.ENTERPRISE}:department"


@dataclass
class Expected:
    """What the directory must hold at the end, by dataset index."""

    user_ids: dict[int, str] = field(default_factory=dict)
    group_ids: dict[int, str] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)  # index -> expected attributes
    deleted: set[int] = field(default_factory=set)
    members: dict[int, set[int]] = field(default_factory=dict)  # group index -> user indexes


def _user_attrs(spec: D.UserSpec) -> dict[str, Any]:
    return {
        "userName": spec.user_name,
        "active": True,
        "displayName": spec.display_name,
        "email": spec.email,
        "title": None,
        "department": spec.department,
    }


def _first_id(body: Any) -> str | None:
    if isinstance(body, dict):
        resources = body.get("Resources") or []
        if resources and isinstance(resources[0], dict):
            return resources[0].get("id")
    return None


def _total(body: Any) -> int | None:
    if isinstance(body, dict):
        total = body.get("totalResults")
        if isinstance(total, int):
            return total
        resources = body.get("Resources")
        return len(resources) if isinstance(resources, list) else None
    return None


class Replay:
    """Replays one data set against one Tenant URL (our service or a peer)."""

    def __init__(
        self,
        client: Client,
        recorder: Recorder,
        ds: D.Dataset,
        concurrency: int,
        seed: int,
        *,
        incremental_base: int | None = None,
    ) -> None:
        self.c = client
        self.r = recorder
        self.ds = ds
        self.concurrency = concurrency
        self.seed = seed
        self.exp = Expected()
        self.incremental_base = incremental_base
        self.new_specs: dict[int, D.UserSpec] = {}

    # ---- phases ---------------------------------------------------------------------------

    async def phase(self, name: str, coro: Any) -> None:
        self.r.phase = name
        before = self.r.total_requests
        started = time.perf_counter()
        await coro
        elapsed = time.perf_counter() - started
        count = self.r.total_requests - before
        self.r.phases[name] = {
            "seconds": round(elapsed, 2),
            "requests": count,
            "req_per_s": round(count / elapsed, 1) if elapsed else 0.0,
        }

    def adopt(self, user_ids: dict[int, str], group_ids: dict[int, str], failed: list[tuple[int, int]] = ()) -> None:  # type: ignore[assignment]
        """Start from a directory seeded directly (``--seed-direct``): the initial cycle's result."""
        for spec in self.ds.users:
            if spec.index in user_ids:
                self.exp.user_ids[spec.index] = user_ids[spec.index]
                self.exp.users[spec.index] = _user_attrs(spec)
        for g in self.ds.groups:
            self.exp.group_ids[g.index] = group_ids[g.index]
            self.exp.members[g.index] = {m for m in g.members if m in user_ids}
        # members whose seeding add failed may or may not be there: the bench cannot know, so
        # they are read back as "uncertain" rather than counted as lost
        self.uncertain = {(gi, m) for gi, m in failed}

    async def run(self, *, lookups: int, verify: bool = True, seeded: bool = False) -> None:
        if seeded:
            await self.phase("initial", self.test_connection())
        else:
            await self.phase("initial", self.initial())
        await self.phase("lookups", self.lookups(lookups))
        await self.phase("incremental", self.incremental())
        if verify:
            await self.phase("verify", self.verify())

    # ---- initial cycle -------------------------------------------------------------------

    async def create_user(self, spec: D.UserSpec) -> None:
        status, body = await self.c.request(
            "GET /Users?filter=userName eq (miss)", "GET", "/Users", query=filter_query(eq("userName", spec.user_name))
        )
        found = _first_id(body) if status == 200 else None
        if found is None:
            status, body = await self.c.request("POST /Users", "POST", "/Users", body=spec.post_body(), expect=(201,))
            found = body.get("id") if status == 201 and isinstance(body, dict) else None
        if found is not None:
            self.exp.user_ids[spec.index] = found
            self.exp.users[spec.index] = _user_attrs(spec)

    async def test_connection(self) -> None:
        status, body = await self.c.request(
            "test connection (userName eq <guid>)",
            "GET",
            "/Users",
            query=filter_query(eq("userName", self.ds.test_guid)),
        )
        if status == 200 and _total(body) != 0:
            self.c.wrong(
                "test connection (userName eq <guid>)", "expected an empty ListResponse", {"response": str(body)[:300]}
            )

    async def initial(self) -> None:
        ds = self.ds
        await self.test_connection()

        await run_pool((lambda s=s: self.create_user(s) for s in ds.users), self.concurrency)

        async def set_manager(spec: D.UserSpec) -> None:
            uid, mid = self.exp.user_ids.get(spec.index), self.exp.user_ids.get(spec.manager)  # type: ignore[arg-type]
            if uid and mid:
                await self.c.request(
                    "PATCH /Users manager", "PATCH", f"/Users/{uid}", body=D.manager_patch(mid), expect=(200, 204)
                )

        await run_pool((lambda s=s: set_manager(s) for s in ds.users if s.manager is not None), self.concurrency)

        async def create_group(g: D.GroupSpec) -> None:
            status, body = await self.c.request(
                "GET /Groups?filter=displayName eq&excludedAttributes=members (miss)",
                "GET",
                "/Groups",
                query=filter_query(eq("displayName", g.display_name), excludedAttributes="members"),
            )
            found = _first_id(body) if status == 200 else None
            if found is None:
                status, body = await self.c.request(
                    "POST /Groups", "POST", "/Groups", body=g.post_body(), expect=(201,)
                )
                found = body.get("id") if status == 201 and isinstance(body, dict) else None
            if found is not None:
                self.exp.group_ids[g.index] = found
                self.exp.members[g.index] = set()

        await run_pool((lambda g=g: create_group(g) for g in ds.groups), self.concurrency)

        requests: list[tuple[int, list[int]]] = []
        for g in ds.groups:
            singles, chunks = D.member_chunks(g.members)
            requests += [(g.index, [m]) for m in singles]
            requests += [(g.index, chunk) for chunk in chunks]
        random.Random(self.seed + 17).shuffle(requests)  # interleaved across groups

        async def add(gi: int, members: list[int]) -> None:
            gid = self.exp.group_ids.get(gi)
            ids = [self.exp.user_ids[m] for m in members if m in self.exp.user_ids]
            if not gid or not ids:
                return
            label = "PATCH /Groups +1 member" if len(ids) == 1 else "PATCH /Groups +100 members"
            status, _ = await self.c.request(
                label, "PATCH", f"/Groups/{gid}", body=D.add_members_patch(ids), expect=(204, 200)
            )
            if status in (200, 204):
                self.exp.members[gi].update(m for m in members if m in self.exp.user_ids)

        await run_pool((lambda gi=gi, ms=ms: add(gi, ms) for gi, ms in requests), self.concurrency)

    # ---- lookups (Entra's matching queries on an existing directory) --------------------------

    async def lookups(self, count: int) -> None:
        rng = random.Random(self.seed + 29)
        present = sorted(self.exp.user_ids)
        sample = rng.sample(present, min(count, len(present)))
        kinds = (
            ("GET /Users?filter=userName eq (hit)", "userName", lambda s: s.user_name),
            ("GET /Users?filter=externalId eq (hit)", "externalId", lambda s: s.external_id),
            ("GET /Users?filter=emails[type eq work].value eq (hit)", WORK_EMAIL, lambda s: s.email),
            ("GET /Users?filter=displayName eq (hit)", "displayName", lambda s: s.display_name),
        )

        async def lookup(index: int, label: str, attribute: str, value: str) -> None:
            status, body = await self.c.request(label, "GET", "/Users", query=filter_query(eq(attribute, value)))
            if status == 200 and (_total(body) != 1 or _first_id(body) != self.exp.user_ids[index]):
                self.c.wrong(
                    label,
                    "expected exactly the one user",
                    {"request": f"{attribute} eq {value}", "response": str(body)[:300]},
                )

        # One kind after another, each at the replay's concurrency: Entra matches on one attribute
        # (userName unless the admin changed it), and on Azurite a query-based kind (externalId,
        # email, displayName: one range query each, which Azurite answers by scanning the table)
        # would otherwise show up in the latency of the point-read kinds queued behind it.
        for lab, a, get in kinds:
            tasks = [functools.partial(lookup, i, lab, a, get(self.ds.users[i])) for i in sample]
            await run_pool(tasks, self.concurrency)
        group_label = "GET /Groups?filter=displayName eq&excludedAttributes=members (hit)"

        async def group_lookup(g: D.GroupSpec) -> None:
            status, body = await self.c.request(
                group_label,
                "GET",
                "/Groups",
                query=filter_query(eq("displayName", g.display_name), excludedAttributes="members"),
            )
            if status == 200:
                resources = (body or {}).get("Resources") or []
                if (
                    len(resources) != 1
                    or resources[0].get("id") != self.exp.group_ids.get(g.index)
                    or resources[0].get("members")
                ):
                    self.c.wrong(group_label, "expected the one group, without members", {"response": str(body)[:300]})

        tasks = [(lambda g=g: group_lookup(g)) for g in self.ds.groups] * max(
            1, min(10, count // max(1, len(self.ds.groups)))
        )
        rng.shuffle(tasks)
        await run_pool(tasks, self.concurrency)

    # ---- incremental cycle -------------------------------------------------------------------

    async def incremental(self) -> None:
        changes, new_users = D.incremental(self.ds, self.seed, self.incremental_base)
        self.new_specs = {s.index: s for s in new_users}
        rng = random.Random(self.seed + 31)
        new_groups = {s.index: rng.choice([g.index for g in self.ds.groups[1:]]) for s in new_users}
        tag = {"default": "default", "aad": "aadOpt"}

        async def do(change: D.Change) -> None:
            i = change.user
            assert i is not None
            if change.kind == "new":
                spec = self.new_specs[i]
                await self.create_user(spec)
                uid = self.exp.user_ids.get(i)
                if uid:
                    for gi in (0, new_groups[i]):
                        await self._member(gi, i, "add", "default", "PATCH /Groups +1 member (new user)")
                return
            uid = self.exp.user_ids.get(i)
            if uid is None:
                return
            if change.kind in ("attrs", "disable"):
                await self.c.request("GET /Users/{id}", "GET", f"/Users/{uid}")
                if change.kind == "attrs":
                    body = D.attribute_patch(change.attrs, change.dialect)
                    label = f"PATCH /Users attributes ({tag[change.dialect]})"
                else:
                    body = D.disable_patch(change.dialect)
                    label = f"PATCH /Users active=false ({tag[change.dialect]})"
                status, _ = await self.c.request(label, "PATCH", f"/Users/{uid}", body=body, expect=(200, 204))
                if status in (200, 204):
                    self._apply(i, change)
            elif change.kind == "delete":
                status, _ = await self.c.request("DELETE /Users/{id}", "DELETE", f"/Users/{uid}", expect=(204,))
                if status == 204:
                    self.exp.deleted.add(i)
                    for members in self.exp.members.values():
                        members.discard(i)
            elif change.kind in ("add", "remove"):
                sign = "+1" if change.kind == "add" else "-1"
                label = f"PATCH /Groups {sign} member ({tag[change.dialect]})"
                await self._member(change.group, i, change.kind, change.dialect, label)  # type: ignore[arg-type]

        await run_pool((lambda ch=ch: do(ch) for ch in changes), self.concurrency)

    async def _member(self, gi: int, i: int, kind: str, dialect: str, label: str) -> None:
        gid, uid = self.exp.group_ids.get(gi), self.exp.user_ids.get(i)
        if not gid or not uid:
            return
        body = D.add_members_patch([uid], dialect) if kind == "add" else D.remove_member_patch(uid, dialect)
        status, _ = await self.c.request(label, "PATCH", f"/Groups/{gid}", body=body, expect=(204, 200))
        if status in (200, 204):
            (self.exp.members[gi].add if kind == "add" else self.exp.members[gi].discard)(i)

    def _apply(self, i: int, change: D.Change) -> None:
        attrs = self.exp.users[i]
        if change.kind == "disable":
            attrs["active"] = False
            return
        for path, value in change.attrs.items():
            key = {"title": "title", DEPARTMENT: "department", "displayName": "displayName", WORK_EMAIL: "email"}.get(
                path
            )
            if key:
                attrs[key] = value

    # ---- read back -------------------------------------------------------------------------

    async def list_users(self) -> list[dict[str, Any]] | None:
        """Every user, by cursor pagination (RFC 9865) where the server offers it, else by startIndex."""
        label = "verify: GET /Users page (count=1000)"
        users: list[dict[str, Any]] = []
        status, body = await self.c.request(
            "verify: GET /Users?cursor= (cursor support)",
            "GET",
            "/Users",
            query="count=1000&cursor=",
            expect=(200, 400, 501),
        )
        if status == 200 and isinstance(body, dict) and ("nextCursor" in body or "totalResults" not in body):
            while True:
                users += body.get("Resources") or []
                cursor = body.get("nextCursor")
                if not cursor:
                    return users
                status, body = await self.c.request(label, "GET", "/Users", query=f"count=1000&cursor={cursor}")
                if status != 200 or not isinstance(body, dict):
                    return None
        start = 1
        while True:
            status, body = await self.c.request(label, "GET", "/Users", query=f"count=1000&startIndex={start}")
            if status != 200 or not isinstance(body, dict):
                return None
            page = body.get("Resources") or []
            users += page
            start += len(page)
            if not page or start > int(body.get("totalResults") or 0):
                return users

    async def verify(self) -> dict[str, Any]:
        """Every user present with the expected attributes, deleted users gone, every group's members exact."""
        result: dict[str, Any] = {
            "users_expected": 0,
            "users_missing": 0,
            "users_unexpected": 0,
            "user_attribute_mismatches": 0,
            "groups_checked": 0,
            "memberships_expected": 0,
            "memberships_lost": 0,
            "memberships_extra": 0,
            "examples": [],
        }
        expected = {self.exp.user_ids[i]: i for i in self.exp.users if i not in self.exp.deleted}
        result["users_expected"] = len(expected)
        listed = await self.list_users()
        if listed is None:
            result["error"] = "could not list users"
        else:
            seen = {u.get("id"): u for u in listed if isinstance(u, dict)}
            missing = [uid for uid in expected if uid not in seen]
            extra = [uid for uid in seen if uid not in expected]
            result["users_missing"], result["users_unexpected"] = len(missing), len(extra)
            for uid in missing[:3]:
                result["examples"].append({"missing user": uid, "userName": self.exp.users[expected[uid]]["userName"]})
            for uid, i in expected.items():
                got = seen.get(uid)
                if got is None:
                    continue
                want = self.exp.users[i]
                actual = {
                    "userName": got.get("userName"),
                    "active": got.get("active"),
                    "displayName": got.get("displayName"),
                    "email": next((e.get("value") for e in got.get("emails") or [] if e.get("type") == "work"), None),
                    "title": got.get("title"),
                    "department": (got.get(D.ENTERPRISE) or {}).get("department"),
                }
                if actual != want:
                    result["user_attribute_mismatches"] += 1
                    if len(result["examples"]) < 8:
                        diff = {k: (want[k], actual[k]) for k in want if want[k] != actual[k]}
                        result["examples"].append({"user": uid, "expected_vs_actual": diff})

        label = "verify: GET /Groups/{id} (with members)"

        async def check(gi: int) -> None:
            gid = self.exp.group_ids[gi]
            status, body = await self.c.request(label, "GET", f"/Groups/{gid}")
            if status != 200 or not isinstance(body, dict):
                return
            got = {m.get("value") for m in body.get("members") or []}
            uncertain = {
                self.exp.user_ids[m] for g, m in getattr(self, "uncertain", set()) if g == gi and m in self.exp.user_ids
            }
            got -= uncertain
            want = {self.exp.user_ids[i] for i in self.exp.members[gi]} - uncertain
            result["groups_checked"] += 1
            result["memberships_expected"] += len(want)
            lost, extra = want - got, got - want
            result["memberships_lost"] += len(lost)
            result["memberships_extra"] += len(extra)
            if (lost or extra) and len(result["examples"]) < 12:
                result["examples"].append({"group": gid, "lost": sorted(lost)[:5], "extra": sorted(extra)[:5]})

        await run_pool((lambda gi=gi: check(gi) for gi in sorted(self.exp.group_ids)), min(self.concurrency, 3))
        result["ok"] = not (
            result.get("error")
            or result["users_missing"]
            or result["users_unexpected"]
            or result["user_attribute_mismatches"]
            or result["memberships_lost"]
            or result["memberships_extra"]
            or result["groups_checked"] != len(self.exp.group_ids)
        )
        self.verification = result
        return result


def new_guid() -> str:
    return str(uuid.uuid4())
