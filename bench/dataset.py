"""A seeded, reproducible directory and the Entra requests that provision it.

Everything here is pure: the same ``(users, groups, seed)`` gives the same users, groups,
memberships, manager links and incremental changes, byte for byte, whatever the server.

Group sizes are heavy-tailed: one group of all users, one of half, three of 10 %, and the
rest small (Zipf-like, ``4 % / k`` of the users, at least 2).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
AD_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MANAGER_PATH = f"{ENTERPRISE}:manager"

DEPARTMENTS = ("Retail", "Finance", "Sales", "Engineering", "Legal", "Support", "Marketing", "HR")
TITLES = ("Engineer", "Manager", "Analyst", "Director", "Associate", "Consultant")
GIVEN = ("Ada", "Bao", "Chloé", "Dario", "Emeka", "Fatima", "Gunnar", "Hana", "Ivan", "José", "Kiri", "Lena")
FAMILY = ("Nguyen", "Okafor", "Müller", "Smith", "García", "Kowalski", "Tanaka", "Rossi", "Haddad", "Lund")


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class UserSpec:
    index: int
    user_name: str
    external_id: str
    email: str
    display_name: str
    given: str
    family: str
    department: str
    employee_number: str
    manager: int | None = None  # index of the manager
    title: str | None = None
    active: bool = True

    def post_body(self) -> dict[str, Any]:
        """Entra's POST /Users body (tests/payloads/entra-post-user.json), plus displayName."""
        return {
            "schemas": [CORE_USER, ENTERPRISE],
            "externalId": self.external_id,
            "userName": self.user_name,
            "active": True,
            "displayName": self.display_name,
            "emails": [{"primary": True, "type": "work", "value": self.email}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": f"{self.given} {self.family}", "familyName": self.family, "givenName": self.given},
            "roles": [],
            ENTERPRISE: {"department": self.department, "employeeNumber": self.employee_number},
        }


@dataclass
class GroupSpec:
    index: int
    display_name: str
    external_id: str
    members: list[int]  # user indexes, in the order Entra sends them

    def post_body(self) -> dict[str, Any]:
        return {
            "schemas": [CORE_GROUP, AD_GROUP],
            "externalId": self.external_id,
            "displayName": self.display_name,
            "meta": {"resourceType": "Group"},
            "members": [],
        }


def group_sizes(users: int, groups: int) -> list[int]:
    """All, half, three of 10 %, then ``max(2, 4 % / k)`` (k = 1, 2, ...)."""
    sizes = [users, users // 2, *([max(1, users // 10)] * 3)]
    k = 1
    while len(sizes) < groups:
        sizes.append(max(2, int(users * 0.04 / k)))
        k += 1
    return [min(users, s) for s in sizes[:groups]]


def make_user(rng: random.Random, index: int, tag: str) -> UserSpec:
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    uid = rng.getrandbits(40)
    user_name = f"{given.lower()}.{family.lower()}.{index:06d}{tag}@contoso.com"
    return UserSpec(
        index=index,
        user_name=user_name,
        external_id=_guid(rng),
        email=f"{given.lower()}.{family.lower()}.{uid:010x}@mail.contoso.com",
        display_name=f"{given} {family} {index:06d}{tag}",
        given=given,
        family=family,
        department=rng.choice(DEPARTMENTS),
        employee_number=f"E{index:07d}",
    )


@dataclass
class Dataset:
    seed: int
    users: list[UserSpec]
    groups: list[GroupSpec]
    test_guid: str

    @property
    def memberships(self) -> int:
        return sum(len(g.members) for g in self.groups)


def build(users: int, groups: int, seed: int, tag: str = "", max_group_size: int | None = None) -> Dataset:
    """The initial directory: users (80 % with a manager among the first 5 %), groups, memberships."""
    rng = random.Random(seed)
    specs = [make_user(rng, i, tag) for i in range(users)]
    managers = max(1, users // 20)
    for spec in specs[managers:]:
        if rng.random() < 0.8:
            spec.manager = rng.randrange(managers)
    everyone = list(range(users))
    group_specs: list[GroupSpec] = []
    for gi, size in enumerate(group_sizes(users, groups)):
        size = min(size, max_group_size or size)
        members = everyone[:] if size == users else rng.sample(everyone, size)
        rng.shuffle(members)
        group_specs.append(GroupSpec(gi, f"Group {gi:03d} {tag}".strip(), _guid(rng), members))
    return Dataset(seed, specs, group_specs, _guid(rng))


def member_chunks(members: list[int], single_cap: int = 1000) -> tuple[list[int], list[list[int]]]:
    """Split a group's members into single-member adds (Entra's observed pattern) and 100-member adds.

    At least half of a group's members (and all of a group under 200) go one per PATCH, but
    no more than ``single_cap`` per group; the rest go in PATCHes of exactly 100.
    """
    n = len(members)
    batched_chunks = max((n // 2) // 100, -(-(n - single_cap) // 100) if n > single_cap else 0)
    batched_chunks = min(batched_chunks, n // 100)
    batched = batched_chunks * 100
    singles = members[: n - batched]
    rest = members[n - batched :]
    return singles, [rest[i : i + 100] for i in range(0, len(rest), 100)]


# ---- PATCH bodies ----------------------------------------------------------------------------


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def manager_patch(manager_id: str) -> dict[str, Any]:
    return patch({"op": "Add", "path": MANAGER_PATH, "value": manager_id})


def add_members_patch(ids: list[str], dialect: str = "default") -> dict[str, Any]:
    if dialect == "default":
        return patch({"op": "Add", "path": "members", "value": [{"$ref": None, "value": i} for i in ids]})
    return patch({"op": "add", "path": "members", "value": [{"value": i} for i in ids]})


def remove_member_patch(member_id: str, dialect: str = "default") -> dict[str, Any]:
    if dialect == "default":
        return patch({"op": "Remove", "path": "members", "value": [{"value": member_id}]})
    return patch({"op": "remove", "path": f'members[value eq "{member_id}"]'})


def disable_patch(dialect: str = "default") -> dict[str, Any]:
    if dialect == "default":
        return patch({"op": "Replace", "path": "active", "value": "False"})
    return patch({"op": "replace", "path": "active", "value": False})


def attribute_patch(changes: dict[str, str], dialect: str = "default") -> dict[str, Any]:
    """Only the changed attributes. ``changes`` keys are Entra's paths (dotted / URN-qualified).

    default: one ``Replace`` per attribute with its ``path`` (``Add`` for title, as Entra
    mixes them); aadOptscim062020: one path-less ``replace`` whose value has dotted keys.
    """
    if dialect == "default":
        return patch(
            *(
                {"op": "Add" if path == "title" else "Replace", "path": path, "value": value}
                for path, value in changes.items()
            )
        )
    return patch({"op": "replace", "value": dict(changes)})


# ---- the incremental cycle ---------------------------------------------------------------------


@dataclass
class Change:
    kind: str  # attrs | disable | delete | new | add | remove
    dialect: str = "default"
    user: int | None = None
    group: int | None = None
    attrs: dict[str, str] = field(default_factory=dict)


def incremental(ds: Dataset, seed: int, base: int | None = None) -> tuple[list[Change], list[UserSpec]]:
    """Changes of a later cycle: 10 % attribute changes, 3 % disables, 1 % deletes, 2 % new users
    (each added to the all-users group and one more), 5 % single-member adds and 5 % removes.
    Dialects alternate, so both are exercised on every kind. Shares are of ``base`` users
    (default: all of them), so that a big tier can keep its incremental cycle bounded."""
    rng = random.Random(seed * 7919 + 1)
    n = len(ds.users)
    b = min(n, base or n)
    managers = {u.manager for u in ds.users if u.manager is not None}
    pool = [i for i in range(n) if i not in managers]
    rng.shuffle(pool)
    take = lambda share: [pool.pop() for _ in range(max(1, int(b * share)))]  # noqa: E731
    deletes, disables, changed = take(0.01), take(0.03), take(0.10)
    changes: list[Change] = []
    for k, i in enumerate(changed):
        u = ds.users[i]
        attrs: dict[str, str] = {}
        pick = k % 4
        attrs["title"] = rng.choice(TITLES)
        attrs[f"{ENTERPRISE}:department"] = rng.choice(DEPARTMENTS)
        if pick in (0, 2):
            attrs["displayName"] = f"{u.display_name} (moved)"
            attrs["name.givenName"] = u.given + "-Ann"
        if pick == 1:
            attrs['emails[type eq "work"].value'] = f"renamed.{u.index:06d}@mail.contoso.com"
        changes.append(Change("attrs", "default" if k % 2 == 0 else "aad", i, attrs=attrs))
    changes += [Change("disable", "default" if k % 2 == 0 else "aad", i) for k, i in enumerate(disables)]
    changes += [Change("delete", user=i) for i in deletes]
    new_users = [make_user(rng, n + j, "n") for j in range(max(1, int(b * 0.02)))]
    for spec in new_users:
        changes.append(Change("new", user=spec.index))
    deleted = set(deletes)
    movable = [g for g in ds.groups if 2 <= len(g.members) < n]
    for k in range(max(1, int(b * 0.05))):
        g = rng.choice(movable)
        members = set(g.members)
        outside = [i for i in rng.sample(range(n), min(n, 50)) if i not in members and i not in deleted]
        if outside:
            changes.append(Change("add", "default" if k % 2 == 0 else "aad", outside[0], g.index))
        inside = [i for i in g.members if i not in deleted]
        if inside:
            changes.append(Change("remove", "default" if k % 2 == 0 else "aad", rng.choice(inside), g.index))
    rng.shuffle(changes)
    return changes, new_users
