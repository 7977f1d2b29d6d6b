"""The contract every :class:`~scim.store.base.DirectoryStore` passes (rules 1-9 of its docstring).

A test module subclasses :class:`DirectoryStoreContract` (named ``Test...``) and provides two
fixtures: ``store`` (the store under test) and ``tenant`` (a fresh, unique tenant name per
test). :class:`TenantRegistryContract` does the same for a ``registry`` fixture.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest

from scim.store import MAX_GROUPS_PER_RESOURCE
from scim.store.base import (
    DirectoryStore,
    EntityTooLarge,
    IndexTerms,
    Member,
    ResourceNotFound,
    StoredResource,
    TooManyGroups,
    UniquenessViolation,
    UnknownMembers,
    VersionMismatch,
)
from scim.tenants import InvalidTenantName, TenantExists, TenantNotFound, TenantRegistry, hash_token

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

# Keys Table Storage forbids or that clash with the key syntax (docs/table-layout.md, "Key encoding").
AWKWARD_KEYS = [
    "a/b",
    "a\\b",
    "a#b",
    "a?b",
    "a|b",
    "a%7Cb",
    "100%",
    "%",
    "ctl\x00\x01\x1f\x7f\x85",
    "é漢字😀",
    "~h" + "0" * 64,
    "~",
    "m|x|y",
    "",
    " ",
]


def user_terms(user_name: str, external_id: str | None = None, emails: tuple[str, ...] = ()) -> IndexTerms:
    """Index terms as the core computes them (``scim.core.resource.index_terms``), keys case-folded."""
    multi = {("emails.value", e.lower()) for e in emails}
    if external_id is not None:
        multi.add(("externalId", external_id))
    return IndexTerms(unique={"userName": user_name.lower()}, multi=frozenset(multi))


def group_terms(display_name: str, external_id: str | None = None) -> IndexTerms:
    multi = frozenset({("externalId", external_id)}) if external_id is not None else frozenset()
    return IndexTerms(unique={"displayName": display_name.lower()}, multi=multi)


async def new_user(
    store: DirectoryStore, tenant: str, user_name: str, external_id: str | None = None, **extra: Any
) -> StoredResource:
    doc = {"userName": user_name, **extra}
    if external_id is not None:
        doc["externalId"] = external_id
    return await store.create(tenant, "User", doc, user_terms(user_name, external_id))


async def new_group(
    store: DirectoryStore, tenant: str, name: str, members: tuple[Member, ...] | list[Member] = ()
) -> StoredResource:
    return await store.create(tenant, "Group", {"displayName": name}, group_terms(name), members)


async def member_ids(store: DirectoryStore, tenant: str, group_id: str) -> set[str]:
    group = await store.get(tenant, "Group", group_id, members=True)
    assert group.members is not None
    return {m.value for m in group.members}


async def users(store: DirectoryStore, tenant: str, n: int, stem: str = "user") -> list[StoredResource]:
    return list(await asyncio.gather(*(new_user(store, tenant, f"{stem}{i}@example.com") for i in range(n))))


@pytest.mark.asyncio
class DirectoryStoreContract:
    """Rules 1-9 of :mod:`scim.store.base`; subclasses provide ``store`` and ``tenant`` fixtures."""

    enforces_group_limit = True
    """Whether adding a resource to a 201st group raises TooManyGroups (see the Table store)."""

    # ---- rule 3: create / get / replace / delete ------------------------------------------------

    async def test_a_resource_too_large_for_one_table_entity_is_refused(
        self, store: DirectoryStore, tenant: str
    ) -> None:
        # Azure Table entities hold at most 1 MiB (strings count two bytes a character, UTF-16):
        # both stores refuse what Azure would, so a test on the memory store cannot accept it.
        huge = {"userName": "huge@example.com", "blob": "x" * 600_000}  # 1.2 MB as UTF-16
        with pytest.raises(EntityTooLarge):
            await store.create(tenant, "User", huge, user_terms("huge@example.com"))
        assert await store.lookup(tenant, "User", "userName", "huge@example.com") == []
        user = await new_user(store, tenant, "huge@example.com")
        with pytest.raises(EntityTooLarge):
            await store.replace(tenant, "User", user.id, huge, user_terms("huge@example.com"))
        assert await store.get(tenant, "User", user.id) == user
        fits = {"userName": "huge@example.com", "blob": "x" * 400_000}  # 0.8 MB: fits
        assert (await store.replace(tenant, "User", user.id, fits, user_terms("huge@example.com"))).doc == fits

    async def test_create_then_get(self, store: DirectoryStore, tenant: str) -> None:
        created = await new_user(store, tenant, "Ada@example.com", active=True, name={"givenName": "Ada"})
        assert str(uuid.UUID(created.id)) == created.id
        assert RFC3339_UTC.match(created.created) and created.last_modified == created.created
        assert created.version.startswith('W/"') and created.version.endswith('"')
        assert created.doc == {"userName": "Ada@example.com", "active": True, "name": {"givenName": "Ada"}}
        assert created.groups == () and created.members is None
        got = await store.get(tenant, "User", created.id)
        assert got == created

    async def test_get_unknown_raises(self, store: DirectoryStore, tenant: str) -> None:
        user = await new_user(store, tenant, "a@example.com")
        for rtype, id in [("User", str(uuid.uuid4())), ("Group", user.id), ("User", "a/b?c#d"), ("User", "")]:
            with pytest.raises(ResourceNotFound):
                await store.get(tenant, rtype, id)  # type: ignore[arg-type]

    async def test_copies_in_and_out(self, store: DirectoryStore, tenant: str) -> None:
        doc: dict[str, Any] = {"userName": "c@example.com", "emails": [{"value": "c@example.com"}]}
        created = await store.create(tenant, "User", doc, user_terms("c@example.com"))
        doc["emails"][0]["value"] = "changed"
        doc["userName"] = "changed"
        created.doc["emails"].append({"value": "x"})
        got = await store.get(tenant, "User", created.id)
        assert got.doc == {"userName": "c@example.com", "emails": [{"value": "c@example.com"}]}
        got.doc["userName"] = "mutated"
        assert (await store.get(tenant, "User", created.id)).doc["userName"] == "c@example.com"
        new_doc: dict[str, Any] = {"userName": "c@example.com", "nickName": "n"}
        replaced = await store.replace(tenant, "User", created.id, new_doc, user_terms("c@example.com"))
        new_doc["nickName"] = "mutated"
        replaced.doc["nickName"] = "mutated too"
        assert (await store.get(tenant, "User", created.id)).doc["nickName"] == "n"

    async def test_replace_keeps_id_created_and_changes_version(self, store: DirectoryStore, tenant: str) -> None:
        user = await new_user(store, tenant, "r@example.com", displayName="Old")
        replaced = await store.replace(
            tenant, "User", user.id, {"userName": "r@example.com", "displayName": "New"}, user_terms("r@example.com")
        )
        assert (replaced.id, replaced.created) == (user.id, user.created)
        assert replaced.version != user.version
        assert replaced.last_modified >= user.last_modified
        assert replaced.doc == {"userName": "r@example.com", "displayName": "New"}
        assert await store.get(tenant, "User", user.id) == replaced

    async def test_replace_and_delete_unknown_raise(self, store: DirectoryStore, tenant: str) -> None:
        missing = str(uuid.uuid4())
        with pytest.raises(ResourceNotFound):
            await store.replace(tenant, "User", missing, {"userName": "x"}, user_terms("x"))
        with pytest.raises(ResourceNotFound):
            await store.delete(tenant, "Group", missing)

    async def test_delete(self, store: DirectoryStore, tenant: str) -> None:
        user = await new_user(store, tenant, "d@example.com", external_id="ext-d")
        await store.delete(tenant, "User", user.id)
        with pytest.raises(ResourceNotFound):
            await store.get(tenant, "User", user.id)
        with pytest.raises(ResourceNotFound):
            await store.delete(tenant, "User", user.id)
        assert await store.lookup(tenant, "User", "userName", "d@example.com") == []
        assert await store.lookup(tenant, "User", "externalId", "ext-d") == []
        again = await new_user(store, tenant, "d@example.com", external_id="ext-d")  # the key is free again
        assert again.id != user.id

    async def test_version_changes_on_every_change(self, store: DirectoryStore, tenant: str) -> None:
        """Every change gives the resource a version it never had (RFC 7644 §3.14). Versions are
        per resource: two resources changed in one transaction may share one (Table Storage
        derives the ETag from the commit time, and Azurite's can coincide within a batch)."""
        user = await new_user(store, tenant, "v@example.com")
        group = await new_group(store, tenant, "V")
        seen: dict[str, set[str]] = {"User": {user.version}, "Group": {group.version}}
        user = await store.replace(
            tenant, "User", user.id, {"userName": "v@example.com", "a": 1}, user_terms("v@example.com")
        )
        assert user.version not in seen["User"]
        seen["User"].add(user.version)
        for change, label in (
            (lambda: store.add_members(tenant, group.id, [Member(user.id)]), "an added"),
            (lambda: store.remove_members(tenant, group.id, [user.id]), "a removed"),
        ):
            await change()
            for rtype, id in (("User", user.id), ("Group", group.id)):
                version = (await store.get(tenant, rtype, id)).version  # type: ignore[arg-type]
                assert version not in seen[rtype], f"{rtype} version unchanged by {label} membership"
                seen[rtype].add(version)

    async def test_user_cannot_have_members(self, store: DirectoryStore, tenant: str) -> None:
        other = await new_user(store, tenant, "o@example.com")
        with pytest.raises(ValueError):
            await store.create(tenant, "User", {"userName": "m"}, user_terms("m"), [Member(other.id)])

    # ---- rule 4: uniqueness --------------------------------------------------------------------------

    async def test_uniqueness_on_create(self, store: DirectoryStore, tenant: str) -> None:
        await new_user(store, tenant, "Same@example.com")
        with pytest.raises(UniquenessViolation) as info:
            await new_user(store, tenant, "same@EXAMPLE.com")
        assert info.value.attribute == "userName"
        await new_group(store, tenant, "same@example.com")  # another resource type: no clash
        with pytest.raises(UniquenessViolation) as ginfo:
            await new_group(store, tenant, "SAME@example.com")
        assert ginfo.value.attribute == "displayName"
        assert len(await store.lookup(tenant, "User", "userName", "same@example.com")) == 1

    async def test_concurrent_creates_of_one_key(self, store: DirectoryStore, tenant: str) -> None:
        results = await asyncio.gather(
            *(new_user(store, tenant, "race@example.com", n=i) for i in range(8)), return_exceptions=True
        )
        winners = [r for r in results if isinstance(r, StoredResource)]
        assert len(winners) == 1
        assert all(isinstance(r, UniquenessViolation) for r in results if r not in winners)
        found = await store.lookup(tenant, "User", "userName", "race@example.com")
        assert [r.id for r in found] == [winners[0].id]
        page = await store.scan(tenant, "User")
        assert [r.id for r in page.resources] == [winners[0].id]

    async def test_rename_frees_the_old_key(self, store: DirectoryStore, tenant: str) -> None:
        user = await new_user(store, tenant, "old@example.com")
        await store.replace(tenant, "User", user.id, {"userName": "new@example.com"}, user_terms("new@example.com"))
        assert await store.lookup(tenant, "User", "userName", "old@example.com") == []
        assert [r.id for r in await store.lookup(tenant, "User", "userName", "new@example.com")] == [user.id]
        other = await new_user(store, tenant, "old@example.com")
        assert other.id != user.id
        with pytest.raises(UniquenessViolation):
            await new_user(store, tenant, "new@example.com")

    async def test_replace_onto_a_taken_key_changes_nothing(self, store: DirectoryStore, tenant: str) -> None:
        first = await new_user(store, tenant, "first@example.com")
        second = await new_user(store, tenant, "second@example.com", external_id="e2")
        with pytest.raises(UniquenessViolation):
            await store.replace(
                tenant, "User", second.id, {"userName": "first@example.com"}, user_terms("first@example.com", "e3")
            )
        assert await store.get(tenant, "User", second.id) == second
        assert [r.id for r in await store.lookup(tenant, "User", "userName", "second@example.com")] == [second.id]
        assert [r.id for r in await store.lookup(tenant, "User", "userName", "first@example.com")] == [first.id]
        assert [r.id for r in await store.lookup(tenant, "User", "externalId", "e2")] == [second.id]
        assert await store.lookup(tenant, "User", "externalId", "e3") == []

    # ---- rule 6: optimistic concurrency ---------------------------------------------------------------

    async def test_if_version(self, store: DirectoryStore, tenant: str) -> None:
        user = await new_user(store, tenant, "iv@example.com")
        stale = user.version
        user = await store.replace(
            tenant, "User", user.id, {"userName": "iv@example.com", "x": 1}, user_terms("iv@example.com")
        )
        with pytest.raises(VersionMismatch):
            await store.replace(
                tenant,
                "User",
                user.id,
                {"userName": "iv2@example.com"},
                user_terms("iv2@example.com"),
                if_version=stale,
            )
        with pytest.raises(VersionMismatch):
            await store.delete(tenant, "User", user.id, if_version=stale)
        assert await store.get(tenant, "User", user.id) == user
        assert await store.lookup(tenant, "User", "userName", "iv2@example.com") == []
        user = await store.replace(
            tenant,
            "User",
            user.id,
            {"userName": "iv@example.com", "x": 2},
            user_terms("iv@example.com"),
            if_version=user.version,
        )
        assert user.doc["x"] == 2
        await store.delete(tenant, "User", user.id, if_version=user.version)
        with pytest.raises(ResourceNotFound):
            await store.get(tenant, "User", user.id)

    # ---- rule 5: lookups --------------------------------------------------------------------------------

    async def test_lookup_unique_and_multi(self, store: DirectoryStore, tenant: str) -> None:
        a = await store.create(
            tenant, "User", {"userName": "a@x.com"}, user_terms("a@x.com", "shared", ("A@Mail.com",))
        )
        b = await store.create(tenant, "User", {"userName": "b@x.com"}, user_terms("b@x.com", "shared"))
        c = await store.create(tenant, "User", {"userName": "c@x.com"}, user_terms("c@x.com", "only-c"))
        assert sorted(r.id for r in await store.lookup(tenant, "User", "externalId", "shared")) == sorted([a.id, b.id])
        assert [r.id for r in await store.lookup(tenant, "User", "externalId", "only-c")] == [c.id]
        assert [r.id for r in await store.lookup(tenant, "User", "emails.value", "a@mail.com")] == [a.id]
        assert [r for r in await store.lookup(tenant, "User", "userName", "b@x.com")] == [b]
        assert await store.lookup(tenant, "User", "userName", "nobody@x.com") == []
        assert await store.lookup(tenant, "User", "externalId", "nobody") == []
        assert await store.lookup(tenant, "Group", "externalId", "shared") == []
        await store.replace(tenant, "User", a.id, {"userName": "a@x.com"}, user_terms("a@x.com", "moved"))
        assert [r.id for r in await store.lookup(tenant, "User", "externalId", "shared")] == [b.id]
        assert [r.id for r in await store.lookup(tenant, "User", "externalId", "moved")] == [a.id]
        assert await store.lookup(tenant, "User", "emails.value", "a@mail.com") == []

    async def test_lookup_prefix_finds_keys_that_start_with_it(self, store: DirectoryStore, tenant: str) -> None:
        long_name = "al" + "x" * 600 + "@x.com"
        found = [
            await store.create(tenant, "User", {"userName": n}, user_terms(n, f"ext-{n[:3]}"))
            for n in ("alice@x.com", "al/ex|#?@x.com", long_name, "bob@x.com")
        ]
        ids = lambda rs: {r.id for r in rs}  # noqa: E731
        by_name = await store.lookup_prefix(tenant, "User", "userName", "al", limit=10)
        # a hashed (long) key may come back as a candidate; the caller re-checks the filter
        assert ids(found[:2]) <= ids(by_name) <= ids(found[:3])
        assert ids(await store.lookup_prefix(tenant, "User", "externalId", "ext-b", limit=10)) == {found[3].id}
        assert len(await store.lookup_prefix(tenant, "User", "userName", "", limit=2)) == 3
        assert ids(await store.lookup_prefix(tenant, "User", "userName", "zz", limit=10)) <= {found[2].id}
        assert await store.lookup_prefix(tenant, "Group", "displayName", "al", limit=10) == []

    async def test_lookup_groups(self, store: DirectoryStore, tenant: str) -> None:
        group = await store.create(tenant, "Group", {"displayName": "Sales"}, group_terms("Sales", "ext-1"))
        assert [r.id for r in await store.lookup(tenant, "Group", "displayName", "sales")] == [group.id]
        assert [r.id for r in await store.lookup(tenant, "Group", "externalId", "ext-1")] == [group.id]
        assert await store.lookup(tenant, "User", "externalId", "ext-1") == []

    # ---- scan -----------------------------------------------------------------------------------------------

    async def test_scan_pages_are_disjoint_and_complete(self, store: DirectoryStore, tenant: str) -> None:
        assert (await store.scan(tenant, "User")).resources == []
        created = {u.id for u in await users(store, tenant, 7)}
        await new_group(store, tenant, "not a user")
        seen: list[str] = []
        cursor: str | None = None
        sizes = []
        for _ in range(10):
            page = await store.scan(tenant, "User", cursor=cursor, limit=3)
            sizes.append(len(page.resources))
            assert all(r.resource_type == "User" and r.members is None for r in page.resources)
            seen += [r.id for r in page.resources]
            cursor = page.cursor
            if cursor is None:
                break
        assert cursor is None
        assert sizes[:2] == [3, 3]
        assert len(seen) == len(set(seen)) == 7 and set(seen) == created
        again = await store.scan(tenant, "User", limit=100)
        assert [r.id for r in again.resources] == seen and again.cursor is None

    # ---- rule 7: memberships ----------------------------------------------------------------------------------

    async def test_members_add_and_remove_are_idempotent(self, store: DirectoryStore, tenant: str) -> None:
        u1, u2 = await users(store, tenant, 2)
        group = await new_group(store, tenant, "G")
        assert (await store.get(tenant, "Group", group.id)).members is None
        await store.add_members(tenant, group.id, [Member(u1.id)])
        await store.add_members(tenant, group.id, [Member(u1.id), Member(u1.id)])
        assert await member_ids(store, tenant, group.id) == {u1.id}
        got = await store.get(tenant, "Group", group.id, members=True)
        assert got.members == (Member(u1.id, "User"),)
        assert (await store.get(tenant, "User", u1.id)).groups == (group.id,)
        await store.remove_members(tenant, group.id, [u2.id, str(uuid.uuid4()), "not/an?id"])
        assert await member_ids(store, tenant, group.id) == {u1.id}
        await store.remove_members(tenant, group.id, [u1.id])
        await store.remove_members(tenant, group.id, [u1.id])
        assert await member_ids(store, tenant, group.id) == set()
        assert (await store.get(tenant, "User", u1.id)).groups == ()
        await store.add_members(tenant, group.id, [])
        await store.remove_members(tenant, group.id, [])

    async def test_create_group_with_members(self, store: DirectoryStore, tenant: str) -> None:
        u1, u2 = await users(store, tenant, 2)
        group = await new_group(store, tenant, "With", [Member(u1.id), Member(u2.id), Member(u1.id)])
        assert group.members is not None and {m.value for m in group.members} == {u1.id, u2.id}
        assert await member_ids(store, tenant, group.id) == {u1.id, u2.id}
        assert (await store.get(tenant, "User", u2.id)).groups == (group.id,)

    async def test_groups_as_members(self, store: DirectoryStore, tenant: str) -> None:
        parent = await new_group(store, tenant, "Parent")
        child = await new_group(store, tenant, "Child")
        await store.add_members(tenant, parent.id, [Member(child.id, "Group")])
        assert (await store.get(tenant, "Group", parent.id, members=True)).members == (Member(child.id, "Group"),)
        assert (await store.get(tenant, "Group", child.id)).groups == (parent.id,)
        with pytest.raises(UnknownMembers):
            await store.add_members(tenant, parent.id, [Member(parent.id, "Group")])  # not its own member
        await store.remove_members(tenant, parent.id, [child.id])
        assert (await store.get(tenant, "Group", child.id)).groups == ()
        assert await member_ids(store, tenant, parent.id) == set()

    async def test_concurrent_single_member_adds_lose_nothing(self, store: DirectoryStore, tenant: str) -> None:
        people = await users(store, tenant, 20)
        group = await new_group(store, tenant, "Busy")
        await asyncio.gather(*(store.add_members(tenant, group.id, [Member(u.id)]) for u in people))
        assert await member_ids(store, tenant, group.id) == {u.id for u in people}
        for user in await asyncio.gather(*(store.get(tenant, "User", u.id) for u in people)):
            assert user.groups == (group.id,)

    async def test_concurrent_adds_and_removes(self, store: DirectoryStore, tenant: str) -> None:
        people = await users(store, tenant, 12)
        stay, leave, join = people[:4], people[4:8], people[8:]
        group = await new_group(store, tenant, "Churn", [Member(u.id) for u in stay + leave])
        await asyncio.gather(
            *(store.remove_members(tenant, group.id, [u.id]) for u in leave),
            *(store.add_members(tenant, group.id, [Member(u.id)]) for u in join),
        )
        assert await member_ids(store, tenant, group.id) == {u.id for u in stay + join}
        for user in leave:
            assert (await store.get(tenant, "User", user.id)).groups == ()

    async def test_unknown_members(self, store: DirectoryStore, tenant: str) -> None:
        known = await new_user(store, tenant, "known@example.com")
        other_group = await new_group(store, tenant, "Other")
        group = await new_group(store, tenant, "G")
        ghost = str(uuid.uuid4())
        with pytest.raises(UnknownMembers) as info:
            await store.add_members(
                tenant, group.id, [Member(known.id), Member(ghost), Member(other_group.id, "User"), Member("x/y")]
            )
        assert set(info.value.ids) == {ghost, other_group.id, "x/y"}
        assert await member_ids(store, tenant, group.id) == set()
        assert (await store.get(tenant, "User", known.id)).groups == ()
        with pytest.raises(UnknownMembers) as created_info:
            await new_group(store, tenant, "Never", [Member(known.id), Member(ghost)])
        assert created_info.value.ids == [ghost]
        assert await store.lookup(tenant, "Group", "displayName", "never") == []
        assert (await store.get(tenant, "User", known.id)).groups == ()

    async def test_member_changes_spanning_several_transactions(self, store: DirectoryStore, tenant: str) -> None:
        """More members than one transaction holds (the Table store sends its parts at once):
        unknown ids in any part are all reported; adds and removes are complete."""
        people = await users(store, tenant, 120, stem="big")
        group = await new_group(store, tenant, "Big")
        ghosts = [str(uuid.uuid4()) for _ in range(3)]
        wanted = [Member(u.id) for u in people]
        for position, ghost in zip((5, 70, 121), ghosts, strict=True):
            wanted.insert(position, Member(ghost))
        with pytest.raises(UnknownMembers) as info:
            await store.add_members(tenant, group.id, wanted)
        assert set(info.value.ids) == set(ghosts)
        await store.add_members(tenant, group.id, [m for m in wanted if m.value not in ghosts])
        assert await member_ids(store, tenant, group.id) == {u.id for u in people}
        await store.remove_members(tenant, group.id, [u.id for u in people[:110]] + ghosts)
        assert await member_ids(store, tenant, group.id) == {u.id for u in people[110:]}
        assert (await store.get(tenant, "User", people[0].id)).groups == ()
        assert (await store.get(tenant, "User", people[115].id)).groups == (group.id,)

    async def test_member_changes_on_a_missing_group(self, store: DirectoryStore, tenant: str) -> None:
        user = await new_user(store, tenant, "m@example.com")
        for group_id in (str(uuid.uuid4()), user.id, "not-a-uuid"):
            with pytest.raises(ResourceNotFound):
                await store.add_members(tenant, group_id, [Member(user.id)])
            with pytest.raises(ResourceNotFound):
                await store.remove_members(tenant, group_id, [user.id])
        assert (await store.get(tenant, "User", user.id)).groups == ()

    async def test_group_limit(self, store: DirectoryStore, tenant: str) -> None:
        if not self.enforces_group_limit:
            pytest.skip("this store cannot enforce the 200-group limit here")
        user = await new_user(store, tenant, "joiner@example.com")
        groups = await asyncio.gather(*(new_group(store, tenant, f"g{i}") for i in range(MAX_GROUPS_PER_RESOURCE + 1)))
        await asyncio.gather(*(store.add_members(tenant, g.id, [Member(user.id)]) for g in groups[:-1]))
        with pytest.raises(TooManyGroups):
            await store.add_members(tenant, groups[-1].id, [Member(user.id)])
        await store.add_members(tenant, groups[0].id, [Member(user.id)])  # already a member: fine
        assert len((await store.get(tenant, "User", user.id)).groups) == MAX_GROUPS_PER_RESOURCE

    # ---- rule 8: deletes clean up ------------------------------------------------------------------------------

    async def test_deleting_a_user_removes_it_from_its_groups(self, store: DirectoryStore, tenant: str) -> None:
        doomed, kept = await users(store, tenant, 2)
        g1 = await new_group(store, tenant, "One", [Member(doomed.id), Member(kept.id)])
        g2 = await new_group(store, tenant, "Two", [Member(doomed.id)])
        before = {g.id: (await store.get(tenant, "Group", g.id)).version for g in (g1, g2)}
        await store.delete(tenant, "User", doomed.id)
        assert await member_ids(store, tenant, g1.id) == {kept.id}
        assert await member_ids(store, tenant, g2.id) == set()
        for group_id, version in before.items():
            assert (await store.get(tenant, "Group", group_id)).version != version
        await store.remove_members(tenant, g1.id, [doomed.id])  # a member that no longer exists: no-op
        with pytest.raises(UnknownMembers):
            await store.add_members(tenant, g1.id, [Member(doomed.id)])

    async def test_deleting_a_group_removes_its_memberships(self, store: DirectoryStore, tenant: str) -> None:
        u1, u2 = await users(store, tenant, 2)
        parent = await new_group(store, tenant, "Parent")
        sub = await new_group(store, tenant, "Sub")
        doomed = await new_group(store, tenant, "Doomed", [Member(u1.id), Member(u2.id), Member(sub.id, "Group")])
        await store.add_members(tenant, parent.id, [Member(doomed.id, "Group"), Member(u1.id)])
        u1_version = (await store.get(tenant, "User", u1.id)).version
        await store.delete(tenant, "Group", doomed.id)
        assert (await store.get(tenant, "User", u1.id)).groups == (parent.id,)
        assert (await store.get(tenant, "User", u1.id)).version != u1_version
        assert (await store.get(tenant, "User", u2.id)).groups == ()
        assert (await store.get(tenant, "Group", sub.id)).groups == ()
        assert await member_ids(store, tenant, parent.id) == {u1.id}
        assert await store.lookup(tenant, "Group", "displayName", "doomed") == []
        again = await new_group(store, tenant, "Doomed")
        assert await member_ids(store, tenant, again.id) == set()

    # ---- rule 1: tenants ------------------------------------------------------------------------------------------

    async def test_tenants_are_isolated(self, store: DirectoryStore, tenant: str) -> None:
        other = tenant + "-other"
        try:
            mine = await new_user(store, tenant, "same@example.com", external_id="ext")
            theirs = await new_user(store, other, "same@example.com", external_id="ext")
            group = await new_group(store, tenant, "G", [Member(mine.id)])
            with pytest.raises(ResourceNotFound):
                await store.get(other, "User", mine.id)
            with pytest.raises(ResourceNotFound):
                await store.add_members(other, group.id, [Member(theirs.id)])
            with pytest.raises(UnknownMembers):
                await store.add_members(tenant, group.id, [Member(theirs.id)])
            assert [r.id for r in await store.lookup(other, "User", "userName", "same@example.com")] == [theirs.id]
            assert [r.id for r in await store.lookup(other, "User", "externalId", "ext")] == [theirs.id]
            assert [r.id for r in (await store.scan(other, "User")).resources] == [theirs.id]
            await store.delete_tenant(other)
            assert (await store.scan(other, "User")).resources == []
            assert (await store.get(tenant, "User", mine.id)).groups == (group.id,)
            assert await member_ids(store, tenant, group.id) == {mine.id}
            assert [r.id for r in (await store.scan(tenant, "User")).resources] == [mine.id]
        finally:
            await store.delete_tenant(other)

    async def test_delete_tenant(self, store: DirectoryStore, tenant: str) -> None:
        people = await users(store, tenant, 3)
        await new_group(store, tenant, "G", [Member(u.id) for u in people])
        await store.delete_tenant(tenant)
        assert (await store.scan(tenant, "User")).resources == []
        assert (await store.scan(tenant, "Group")).resources == []
        assert await store.lookup(tenant, "User", "userName", "user0@example.com") == []
        await new_user(store, tenant, "user0@example.com")

    # ---- keys: encoding ------------------------------------------------------------------------------------------

    async def test_awkward_keys(self, store: DirectoryStore, tenant: str) -> None:
        created = {}
        for key in AWKWARD_KEYS:
            created[key] = await store.create(
                tenant, "User", {"userName": key}, IndexTerms({"userName": key}, frozenset({("externalId", key)}))
            )
        for key, user in created.items():
            assert [r.id for r in await store.lookup(tenant, "User", "userName", key)] == [user.id], key
            assert [r.id for r in await store.lookup(tenant, "User", "externalId", key)] == [user.id], key
            assert (await store.get(tenant, "User", user.id)).doc == {"userName": key}
        group = await new_group(store, tenant, "a/b|c\\d#e?f%g\x01ü")
        assert [r.id for r in await store.lookup(tenant, "Group", "displayName", "a/b|c\\d#e?f%g\x01ü")] == [group.id]
        assert len((await store.scan(tenant, "User", limit=1000)).resources) == len(AWKWARD_KEYS)

    async def test_long_keys(self, store: DirectoryStore, tenant: str) -> None:
        base = "x" * 2000
        first = await new_user(store, tenant, base + "1", external_id="é" * 3000)
        second = await new_user(store, tenant, base + "2", external_id="é" * 3001)
        assert [r.id for r in await store.lookup(tenant, "User", "username", "nope")] == []
        assert [r.id for r in await store.lookup(tenant, "User", "userName", (base + "1").lower())] == [first.id]
        assert [r.id for r in await store.lookup(tenant, "User", "userName", (base + "2").lower())] == [second.id]
        assert [r.id for r in await store.lookup(tenant, "User", "externalId", "é" * 3000)] == [first.id]
        assert [r.id for r in await store.lookup(tenant, "User", "externalId", "é" * 3001)] == [second.id]
        with pytest.raises(UniquenessViolation):
            await new_user(store, tenant, base + "1")
        await store.replace(tenant, "User", first.id, {"userName": base + "3"}, user_terms(base + "3"))
        assert await store.lookup(tenant, "User", "externalId", "é" * 3000) == []
        await new_user(store, tenant, base + "1")

    async def test_a_resource_with_more_index_rows_than_a_transaction_holds_can_change_and_be_deleted(
        self, store: DirectoryStore, tenant: str
    ) -> None:
        """Resources stored before the core bounded indexed values (or by any other writer) may have
        more index rows than one entity-group transaction (100 operations) can delete: every one
        must still be replaceable and deletable (security review L5: a user with 110 emails could
        never be deleted, so deprovisioning failed for ever)."""
        emails = tuple(f"mail{i}@contoso.com" for i in range(90))
        doc = {"userName": "many", "emails": [{"value": e} for e in emails]}
        user = await store.create(tenant, "User", doc, user_terms("many", "ext", emails))
        more = emails + tuple(f"more{i}@contoso.com" for i in range(20))
        doc = {"userName": "many", "emails": [{"value": e} for e in more]}
        await store.replace(tenant, "User", user.id, doc, user_terms("many", "ext", more))
        assert [r.id for r in await store.lookup(tenant, "User", "emails.value", "more19@contoso.com")] == [user.id]
        fresh = tuple(f"fresh{i}@contoso.com" for i in range(5))
        current = await store.get(tenant, "User", user.id)
        replaced = await store.replace(
            tenant, "User", user.id, {"userName": "many2"}, user_terms("many2", None, fresh), if_version=current.version
        )
        assert replaced.doc == {"userName": "many2"}
        assert await store.lookup(tenant, "User", "emails.value", "mail0@contoso.com") == []
        assert await store.lookup(tenant, "User", "userName", "many") == []
        assert [r.id for r in await store.lookup(tenant, "User", "emails.value", "fresh4@contoso.com")] == [user.id]
        big = tuple(f"big{i}@contoso.com" for i in range(40))
        await store.replace(tenant, "User", user.id, {"userName": "many2"}, user_terms("many2", "ext", fresh + big))
        more_big = big + tuple(f"bigger{i}@contoso.com" for i in range(70))
        await store.replace(tenant, "User", user.id, {"userName": "many2"}, user_terms("many2", "ext", more_big))
        group = await store.create(
            tenant, "Group", {"displayName": "g"}, IndexTerms(unique={"displayName": "g"}), [Member(user.id)]
        )
        await store.delete(tenant, "User", user.id)
        with pytest.raises(ResourceNotFound):
            await store.get(tenant, "User", user.id)
        assert await store.lookup(tenant, "User", "emails.value", "bigger69@contoso.com") == []
        assert await store.lookup(tenant, "User", "userName", "many2") == []
        assert (await store.get(tenant, "Group", group.id, members=True)).members == ()
        await new_user(store, tenant, "many2")  # the unique key is free again


@pytest.mark.asyncio
class TenantRegistryContract:
    """The :class:`~scim.tenants.TenantRegistry` behaviour; subclasses provide a ``registry`` fixture."""

    async def test_create_and_authenticate(self, registry: TenantRegistry) -> None:
        token = await registry.create("contoso")
        assert len(token) >= 43
        assert await registry.authenticate("contoso", token)
        assert not await registry.authenticate("contoso", token + "x")
        assert not await registry.authenticate("fabrikam", token)
        stored = await registry.read_credentials("contoso")
        assert stored is not None and [t.hash for t in stored.tokens] == [hash_token(token)]
        assert await registry.read_credentials("nobody") is None
        assert await registry.read_credentials("Not/Valid") is None
        given = await registry.create("fabrikam", token="chosen-token")
        assert given == "chosen-token" and await registry.authenticate("fabrikam", "chosen-token")

    async def test_duplicate_and_invalid_names(self, registry: TenantRegistry) -> None:
        await registry.create("dup")
        with pytest.raises(TenantExists):
            await registry.create("dup")
        results = await asyncio.gather(*(registry.create("race") for _ in range(5)), return_exceptions=True)
        assert sum(isinstance(r, str) for r in results) == 1
        assert all(isinstance(r, (str, TenantExists)) for r in results)
        for bad in ("", "UPPER", "a/b", "-x", "x" * 64):
            with pytest.raises(InvalidTenantName):
                await registry.create(bad)

    async def test_set_token_replaces_the_old_one(self, registry: TenantRegistry) -> None:
        old = await registry.create("rotate")
        new = await registry.set_token("rotate")
        assert new != old
        assert await registry.authenticate("rotate", new)
        assert not await registry.authenticate("rotate", old)
        assert await registry.set_token("rotate", "explicit") == "explicit"
        assert await registry.authenticate("rotate", "explicit")
        with pytest.raises(TenantNotFound):
            await registry.set_token("missing")

    async def test_delete_and_list(self, registry: TenantRegistry) -> None:
        token = await registry.create("b-tenant")
        await registry.create("a-tenant")
        listed = await registry.list()
        assert [t.name for t in listed] == ["a-tenant", "b-tenant"]
        assert all(RFC3339_UTC.match(t.created) for t in listed)
        await registry.delete("b-tenant")
        assert not await registry.authenticate("b-tenant", token)
        assert [t.name for t in await registry.list()] == ["a-tenant"]
        with pytest.raises(TenantNotFound):
            await registry.delete("b-tenant")
        await registry.create("b-tenant")  # the name is free again

    async def test_notification_settings(self, registry: TenantRegistry) -> None:
        await registry.create("notified")
        assert (await registry.info("notified")).notify == ()
        await registry.set_notifications("notified", ["a@x.com", " b@y.org ", "a@x.com"], True)
        info = await registry.info("notified")
        assert info.notify == ("a@x.com", "b@y.org") and info.notify_enabled is True
        await registry.set_token("notified")  # a token change keeps the settings
        await registry.set_notifications("notified", info.notify, False)
        assert (await registry.info("notified")).notify_enabled is False
        with pytest.raises(ValueError):
            await registry.set_notifications("notified", ["not an address"], True)
        with pytest.raises(TenantNotFound):
            await registry.set_notifications("ghost", ["a@x.com"], True)

    async def test_entra_tenant_binding(self, registry: TenantRegistry) -> None:
        await registry.create("bound")
        assert (await registry.info("bound")).entra_tid is None
        tid = "72F988BF-86F1-41AF-91AB-2D7CD011DB47"
        await registry.set_entra_tenant("bound", tid)
        info = await registry.info("bound")
        assert info.entra_tid == tid.lower()
        await registry.set_notifications("bound", ["a@x.com"], True)  # other settings keep it
        assert (await registry.info("bound")).entra_tid == tid.lower()
        with pytest.raises(ValueError):
            await registry.set_entra_tenant("bound", "contoso.onmicrosoft.com")
        await registry.set_entra_tenant("bound", None)
        assert (await registry.info("bound")).entra_tid is None
        with pytest.raises(TenantNotFound):
            await registry.set_entra_tenant("ghost", tid)
