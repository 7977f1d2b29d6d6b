"""The event part of the store contract (rule 10 of :mod:`scim.store.base`, issue 12), for every store.

A test module subclasses :class:`EventContract` next to ``DirectoryStoreContract`` (same
fixtures: ``store`` and ``tenant``). Both stores stamp with an
:class:`~scim.store.event_timing.EventClock` in ``store._clock`` (one per store: per process),
which the clock tests replace by one whose wall clock is behind, as another instance's may be.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from typing import Any

import pytest

from scim.core import events
from scim.store.base import (
    DirectoryStore,
    EventIntent,
    IndexTerms,
    Member,
    MembershipEventIntent,
    ResourceNotFound,
    StoredEvent,
    StoredResource,
    UniquenessViolation,
    UnknownMembers,
    VersionMismatch,
)
from scim.store.event_timing import EventClock, stamp_time, wall_us
from tests.event_checks import EVENT_ID, FAR, TIME, all_events


def user_terms(user_name: str) -> IndexTerms:
    return IndexTerms(unique={"userName": user_name.lower()})


def group_terms(name: str) -> IndexTerms:
    return IndexTerms(unique={"displayName": name.lower()})


def rendered(stored: StoredResource) -> dict[str, Any]:
    """What the test intents render: everything the store hands to ``render``."""
    return {
        "id": stored.id,
        "doc": stored.doc,
        "created": stored.created,
        "lastModified": stored.last_modified,
        "version": stored.version,
        "groups": list(stored.groups),
        "members": stored.members,
    }


def intent(kind: Any) -> EventIntent:
    return EventIntent(kind, rendered)


def _stamp(stored: StoredEvent) -> int:
    return int(stored.position.split("|")[0])


async def _user(store: DirectoryStore, tenant: str, name: str, **doc: Any) -> StoredResource:
    return await store.create(tenant, "User", {"userName": name, **doc}, user_terms(name), event=intent("user.created"))


@pytest.mark.asyncio
class EventContract:
    """Rule 10: events commit with their change, and read back in commit order."""

    async def test_each_write_commits_its_event_with_the_change(self, store: DirectoryStore, tenant: str) -> None:
        before = wall_us()
        user = await _user(store, tenant, "ev@example.com", active=True)
        replaced = await store.replace(
            tenant,
            "User",
            user.id,
            {"userName": "ev@example.com", "active": False},
            user_terms("ev@example.com"),
            event=intent("user.deactivated"),
        )
        await store.delete(tenant, "User", user.id, event=intent("user.deleted"))
        events = await all_events(store, tenant)
        assert [e.event["type"] for e in events] == ["user.created", "user.deactivated", "user.deleted"]
        for stored in events:
            event = stored.event
            assert EVENT_ID.match(event["id"]) and stored.position.endswith("|" + event["id"])
            assert event["tenant"] == tenant and TIME.match(event["time"])
            assert event["time"] == stamp_time(_stamp(stored)) and _stamp(stored) >= before
        created, updated, deleted = (e.event for e in events)
        assert created["data"]["object"] == rendered(dataclasses.replace(user, version=""))
        assert created["time"] == user.created == user.last_modified
        assert updated["data"]["object"] == rendered(dataclasses.replace(replaced, version=""))
        assert updated["time"] == replaced.last_modified
        assert deleted["data"]["object"] == rendered(dataclasses.replace(replaced, version=""))  # its last state
        assert deleted["time"] > updated["time"] > created["time"]
        assert len({e.event["id"] for e in events}) == 3

    async def test_writes_without_an_event_commit_none(self, store: DirectoryStore, tenant: str) -> None:
        user = await store.create(tenant, "User", {"userName": "quiet"}, user_terms("quiet"))
        await store.replace(tenant, "User", user.id, {"userName": "quiet", "x": 1}, user_terms("quiet"))
        group = await store.create(tenant, "Group", {"displayName": "g"}, group_terms("g"), [Member(user.id)])
        await store.add_members(tenant, group.id, [Member(user.id)])
        await store.delete(tenant, "Group", group.id)
        await store.delete(tenant, "User", user.id)
        assert await all_events(store, tenant) == []

    async def test_the_type_may_depend_on_the_previous_document(self, store: DirectoryStore, tenant: str) -> None:
        """A PUT's intent: classified against the document it replaces; None means no event."""
        user = await _user(store, tenant, "put@example.com", active=True)
        seen: list[dict[str, Any]] = []

        def classify(before: Any) -> str | None:
            seen.append(dict(before))
            return None if before.get("nickName") == "same" else "user.updated"

        doc = {"userName": "put@example.com", "active": True, "nickName": "same"}
        await store.replace(tenant, "User", user.id, doc, user_terms("put@example.com"), event=intent(classify))
        await store.replace(tenant, "User", user.id, doc, user_terms("put@example.com"), event=intent(classify))
        assert seen[0] == {"userName": "put@example.com", "active": True} and seen[-1] == doc
        types = [e.event["type"] for e in await all_events(store, tenant)]
        assert types == ["user.created", "user.updated"]
        assert (await store.get(tenant, "User", user.id)).doc == doc

    async def test_a_failing_write_leaves_no_event(self, store: DirectoryStore, tenant: str) -> None:
        taken = await _user(store, tenant, "taken@example.com")
        other = await _user(store, tenant, "other@example.com")
        stale = other.version
        other = await store.replace(
            tenant, "User", other.id, {"userName": "other@example.com", "n": 1}, user_terms("other@example.com")
        )
        baseline = await all_events(store, tenant)
        missing = str(uuid.uuid4())
        failing = [
            (UniquenessViolation, store.create(tenant, "User", {"userName": "TAKEN@example.com"},
                                               user_terms("TAKEN@example.com"), event=intent("user.created"))),
            (UniquenessViolation, store.replace(tenant, "User", other.id, {"userName": "taken@example.com"},
                                                user_terms("taken@example.com"), event=intent("user.updated"))),
            (VersionMismatch, store.replace(tenant, "User", other.id, {"userName": "other@example.com", "n": 2},
                                            user_terms("other@example.com"), if_version=stale,
                                            event=intent("user.updated"))),
            (VersionMismatch, store.delete(tenant, "User", other.id, if_version=stale, event=intent("user.deleted"))),
            (ResourceNotFound, store.replace(tenant, "User", missing, {"userName": "m"}, user_terms("m"),
                                             event=intent("user.updated"))),
            (ResourceNotFound, store.delete(tenant, "Group", missing, event=intent("group.deleted"))),
            (UnknownMembers, store.create(tenant, "Group", {"displayName": "ghosts"}, group_terms("ghosts"),
                                          [Member(missing)], event=intent("group.created"))),
        ]  # fmt: skip
        for error, call in failing:
            with pytest.raises(error):
                await call
        assert await all_events(store, tenant) == baseline
        assert await store.get(tenant, "User", other.id) == other
        assert await store.get(tenant, "User", taken.id) == taken
        assert await store.lookup(tenant, "Group", "displayName", "ghosts") == []

    async def test_a_render_that_raises_writes_nothing(self, store: DirectoryStore, tenant: str) -> None:
        def broken(stored: StoredResource) -> dict[str, Any]:
            raise RuntimeError("render failed")

        user = await _user(store, tenant, "render@example.com")
        with pytest.raises(RuntimeError):
            await store.create(tenant, "User", {"userName": "r2"}, user_terms("r2"), event=EventIntent("x", broken))
        with pytest.raises(RuntimeError):
            await store.replace(
                tenant, "User", user.id, {"userName": "r3"}, user_terms("r3"), event=EventIntent("x", broken)
            )
        with pytest.raises(RuntimeError):
            await store.delete(tenant, "User", user.id, event=EventIntent("x", broken))
        assert await store.lookup(tenant, "User", "userName", "r2") == []
        assert await store.get(tenant, "User", user.id) == user
        assert [e.event["type"] for e in await all_events(store, tenant)] == ["user.created"]

    async def test_read_events_pages_by_position_within_the_horizon(self, store: DirectoryStore, tenant: str) -> None:
        other = tenant + "-other"
        try:
            for n in range(7):
                await _user(store, tenant, f"p{n}@example.com")
            await _user(store, other, "p0@example.com")
            events = await store.read_events(tenant, after=None, before=FAR, limit=100)
            assert len(events) == 7 and [e.position for e in events] == sorted(e.position for e in events)
            assert [e.event["data"]["object"]["doc"]["userName"] for e in events] == [
                f"p{n}@example.com" for n in range(7)
            ]
            pages, after = [], None
            while page := await store.read_events(tenant, after=after, before=FAR, limit=3):
                pages.append(page)
                after = page[-1].position
            assert [len(p) for p in pages] == [3, 3, 1]
            assert [e for p in pages for e in p] == events
            horizon = _stamp(events[4])  # stamps before it only: the first four
            assert await store.read_events(tenant, after=None, before=horizon, limit=100) == events[:4]
            assert await store.read_events(tenant, after=events[1].position, before=horizon, limit=100) == events[2:4]
            assert await store.read_events(tenant, after=events[3].position, before=horizon, limit=100) == []
            assert await store.read_events(tenant, after=None, before=FAR, limit=2) == events[:2]
            theirs = await store.read_events(other, after=None, before=FAR, limit=100)
            assert [e.event["tenant"] for e in theirs] == [other]
            assert not {e.event["id"] for e in theirs} & {e.event["id"] for e in events}
            assert await store.read_events(tenant + "-nobody", after=None, before=FAR, limit=10) == []
        finally:
            await store.delete_tenant(other)

    async def test_purge_events(self, store: DirectoryStore, tenant: str) -> None:
        for n in range(5):
            await _user(store, tenant, f"old{n}@example.com")
        events = await all_events(store, tenant)
        assert await store.purge_events(tenant, older_than=_stamp(events[3])) == 3
        assert await all_events(store, tenant) == events[3:]
        assert await store.purge_events(tenant, older_than=_stamp(events[3])) == 0
        assert await store.purge_events(tenant + "-nobody", older_than=FAR) == 0
        assert len((await store.scan(tenant, "User")).resources) == 5  # only events go

    async def test_delete_tenant_removes_its_events(self, store: DirectoryStore, tenant: str) -> None:
        user = await _user(store, tenant, "gone@example.com")
        await store.delete(tenant, "User", user.id, event=intent("user.deleted"))
        assert len(await all_events(store, tenant)) == 2
        await store.delete_tenant(tenant)
        assert await all_events(store, tenant) == []

    async def test_one_resource_s_events_follow_its_commits_when_a_clock_is_behind(
        self, store: DirectoryStore, tenant: str
    ) -> None:
        """Another instance whose clock is an hour behind writes the resource next: its stamps
        still follow the commit it read (1 ms after it), so the feed keeps the resource's order."""
        user = await _user(store, tenant, "skew@example.com")
        group = await store.create(tenant, "Group", {"displayName": "skew"}, group_terms("skew"), event=intent("x"))
        real = store._clock  # type: ignore[attr-defined]  # both stores stamp with an EventClock
        try:
            behind = EventClock(wall=lambda: wall_us() - 3_600_000_000)
            store._clock = behind  # type: ignore[attr-defined]
            await store.add_members(tenant, group.id, [Member(user.id)])  # moves lastModified, no event
            for n in range(3):
                doc = {"userName": "skew@example.com", "n": n}
                await store.replace(
                    tenant, "User", user.id, doc, user_terms("skew@example.com"), event=intent("user.updated")
                )
            await store.delete(tenant, "User", user.id, event=intent("user.deleted"))
            late = await store.create(tenant, "User", {"userName": "late"}, user_terms("late"), event=intent("y"))
        finally:
            store._clock = real  # type: ignore[attr-defined]
        mine = [e for e in await all_events(store, tenant) if e.event["data"]["object"]["id"] == user.id]
        assert [e.event["type"] for e in mine] == ["user.created", *["user.updated"] * 3, "user.deleted"]
        stamps = [_stamp(e) for e in mine]
        assert all(b // 1000 > a // 1000 for a, b in itertools.pairwise(stamps)), stamps  # later milliseconds
        times = [e.event["time"] for e in mine]
        assert times == sorted(set(times))
        assert [o["doc"].get("n") for o in (e.event["data"]["object"] for e in mine[1:4])] == [0, 1, 2]
        assert mine[3].event["data"]["object"]["groups"] == [group.id]
        assert late.created >= mine[-1].event["time"]  # the clock never goes back within a store

    async def test_a_resource_with_the_most_index_rows_still_commits_its_events(
        self, store: DirectoryStore, tenant: str
    ) -> None:
        """45 index rows (the core's bound): a create (1 + 45 + the event) and a replace moving
        every row (1 + 45 + 45 + the event) each fit one transaction; a resource stored with more
        (older data) sheds rows first, and still commits one event per change."""

        def terms(name: str, emails: list[str]) -> IndexTerms:
            return IndexTerms(unique={"userName": name}, multi=frozenset(("emails.value", e) for e in emails))

        first = [f"a{i}@contoso.com" for i in range(44)]
        doc = {"userName": "most", "emails": [{"value": e} for e in first]}
        user = await store.create(tenant, "User", doc, terms("most", first), event=intent("user.created"))
        second = [f"b{i}@contoso.com" for i in range(44)]
        doc = {"userName": "most2", "emails": [{"value": e} for e in second]}
        await store.replace(tenant, "User", user.id, doc, terms("most2", second), event=intent("user.updated"))
        older = [f"c{i}@contoso.com" for i in range(90)]  # older data: more rows than the core allows
        doc = {"userName": "most2", "emails": [{"value": e} for e in older]}
        await store.replace(tenant, "User", user.id, doc, terms("most2", older), event=intent("user.updated"))
        older += [f"c{i}@contoso.com" for i in range(90, 110)]  # 110: more than a transaction deletes
        doc = {"userName": "most2", "emails": [{"value": e} for e in older]}
        await store.replace(tenant, "User", user.id, doc, terms("most2", older), event=intent("user.updated"))
        doc = {"userName": "most3", "emails": [{"value": "d@contoso.com"}]}
        await store.replace(
            tenant, "User", user.id, doc, terms("most3", ["d@contoso.com"]), event=intent("user.updated")
        )
        await store.replace(
            tenant, "User", user.id, doc | {"x": 1}, terms("most3", older[:90]), event=intent("user.updated")
        )
        doc = {"userName": "most3", "emails": [{"value": e} for e in older]}
        await store.replace(tenant, "User", user.id, doc, terms("most3", older), event=intent("user.updated"))
        await store.delete(tenant, "User", user.id, event=intent("user.deleted"))
        kinds = [e.event["type"] for e in await all_events(store, tenant)]
        assert kinds == ["user.created", *["user.updated"] * 6, "user.deleted"]
        assert await store.lookup(tenant, "User", "emails.value", "c1@contoso.com") == []


def _row(stored: StoredEvent) -> str:
    """The row part of a position (``{stamp}|{row id}``)."""
    return stored.position.rsplit("|", 1)[0]


@pytest.mark.asyncio
class MembershipEventContract:
    """Rule 10 for member PATCHes: one event per member that really joined or left, committed
    with the change, a transaction's events in one row (``docs/events.md``, "Membership events")."""

    async def _setup(self, store: DirectoryStore, tenant: str, n: int) -> tuple[StoredResource, list[StoredResource]]:
        group = await store.create(tenant, "Group", {"displayName": "Team"}, group_terms("Team"))
        people = list(
            await asyncio.gather(
                *(store.create(tenant, "User", {"userName": f"m{i}@x"}, user_terms(f"m{i}@x")) for i in range(n))
            )
        )
        return group, people

    @staticmethod
    def _intent(group: StoredResource, people: list[StoredResource]) -> MembershipEventIntent:
        names: dict[tuple[str, str], str | None] = {(p.resource_type, p.id): p.doc.get("userName") for p in people}
        names.update({(p.resource_type, p.id): p.doc.get("displayName") for p in people if p.resource_type == "Group"})
        return events.membership(group.id, "Team", names, group.last_modified)

    async def test_added_members_give_one_event_each_in_one_row(self, store: DirectoryStore, tenant: str) -> None:
        group, people = await self._setup(store, tenant, 3)
        before = wall_us()
        await store.add_members(tenant, group.id, [Member(p.id) for p in people], event=self._intent(group, people))
        found = await all_events(store, tenant)
        assert [e.event["type"] for e in found] == ["group.member_added"] * 3
        assert len({_row(e) for e in found}) == 1, "one transaction, one row"
        assert [e.position.rsplit("|", 1)[1] for e in found] == ["000", "001", "002"]
        assert len({e.event["id"] for e in found}) == 3 and all(EVENT_ID.match(e.event["id"]) for e in found)
        assert {e.event["time"] for e in found} == {stamp_time(_stamp(found[0]))} and _stamp(found[0]) >= before
        assert [e.event["data"] for e in found] == [
            {"group": {"id": group.id, "displayName": "Team"}, "member": {"id": p.id, "type": "User", "userName": f"m{i}@x"}}
            for i, p in enumerate(people)
        ]  # fmt: skip
        assert all(e.event["tenant"] == tenant for e in found)
        assert {m.value for m in (await store.get(tenant, "Group", group.id, members=True)).members or ()} == {
            p.id for p in people
        }

    async def test_re_adds_and_removals_of_non_members_change_nothing(self, store: DirectoryStore, tenant: str) -> None:
        group, people = await self._setup(store, tenant, 4)
        intent = self._intent(group, people)
        await store.add_members(tenant, group.id, [Member(p.id, display="first") for p in people[:2]], event=intent)
        baseline = await all_events(store, tenant)
        state = await store.get(tenant, "Group", group.id, members=True)
        users = [await store.get(tenant, "User", p.id) for p in people[:2]]
        await store.add_members(tenant, group.id, [Member(p.id, display="again") for p in people[:2]], event=intent)
        await store.remove_members(tenant, group.id, [people[2].id, people[3].id, str(uuid.uuid4())], event=intent)
        assert await all_events(store, tenant) == baseline
        after = await store.get(tenant, "Group", group.id, members=True)
        assert after == state and [m.display for m in after.members or ()] == ["first", "first"]
        assert [await store.get(tenant, "User", p.id) for p in people[:2]] == users

    async def test_a_mixed_batch_gives_events_for_the_real_changes_only(
        self, store: DirectoryStore, tenant: str
    ) -> None:
        group, people = await self._setup(store, tenant, 6)
        intent = self._intent(group, people)
        await store.add_members(tenant, group.id, [Member(p.id) for p in people[:3]], event=intent)
        await store.add_members(tenant, group.id, [Member(p.id) for p in people], event=intent)  # 3 old, 3 new
        ids = [people[0].id, people[4].id, str(uuid.uuid4()), "not/an?id"]
        await store.remove_members(tenant, group.id, ids, event=intent)  # 2 members, 2 not
        found = await all_events(store, tenant)
        got = [(e.event["type"].rsplit("_", 1)[1], e.event["data"]["member"]["id"]) for e in found]
        assert got == [("added", p.id) for p in people] + [("removed", people[0].id), ("removed", people[4].id)]
        assert len({_row(e) for e in found}) == 3
        members = (await store.get(tenant, "Group", group.id, members=True)).members or ()
        assert {m.value for m in members} == {p.id for p in people} - {people[0].id, people[4].id}

    async def test_a_hundred_members_give_a_hundred_events_in_three_transactions(
        self, store: DirectoryStore, tenant: str
    ) -> None:
        group, people = await self._setup(store, tenant, 100)
        intent = self._intent(group, people)
        await store.add_members(tenant, group.id, [Member(p.id) for p in people], event=intent)
        found = await all_events(store, tenant)
        assert len(found) == 100 and len({e.event["id"] for e in found}) == 100
        assert sorted(len(list(rows)) for _, rows in itertools.groupby(found, _row)) == [2, 49, 49]
        assert {e.event["data"]["member"]["id"] for e in found} == {p.id for p in people}
        await store.remove_members(tenant, group.id, [p.id for p in people], event=intent)
        removed = (await all_events(store, tenant))[100:]
        assert [e.event["type"] for e in removed] == ["group.member_removed"] * 100
        assert len({_row(e) for e in removed}) == 3

    async def test_groups_as_members_are_named_as_groups(self, store: DirectoryStore, tenant: str) -> None:
        group, people = await self._setup(store, tenant, 1)
        child = await store.create(tenant, "Group", {"displayName": "Child"}, group_terms("Child"))
        intent = self._intent(group, [*people, child])
        await store.add_members(tenant, group.id, [Member(child.id, "Group")], event=intent)
        other = await store.create(tenant, "Group", {"displayName": "Other"}, group_terms("Other"))
        with pytest.raises(UnknownMembers):  # a group sent as a user: refused, nothing written
            await store.add_members(tenant, group.id, [Member(people[0].id), Member(other.id)], event=intent)
        await store.remove_members(tenant, group.id, [child.id], event=intent)  # tried as a user, then a group
        found = await all_events(store, tenant)
        member = {"id": child.id, "type": "Group", "displayName": "Child"}
        assert [(e.event["type"], e.event["data"]["member"]) for e in found] == [
            ("group.member_added", member),
            ("group.member_removed", member),
        ]

    async def test_paging_resumes_inside_a_row_without_skipping_or_repeating(
        self, store: DirectoryStore, tenant: str
    ) -> None:
        group, people = await self._setup(store, tenant, 60)
        intent = self._intent(group, people)
        await _user(store, tenant, "first@example.com")
        await store.add_members(tenant, group.id, [Member(p.id) for p in people[:5]], event=intent)
        await _user(store, tenant, "middle@example.com")
        await store.add_members(tenant, group.id, [Member(p.id) for p in people[5:]], event=intent)  # 49 + 6
        await _user(store, tenant, "last@example.com")
        everything = await all_events(store, tenant)
        assert len(everything) == 63
        assert [e.position for e in everything] == sorted({e.position for e in everything})
        for limit in (1, 2, 3, 7, 48, 50):
            pages, after = [], None
            while page := await store.read_events(tenant, after=after, before=FAR, limit=limit):
                assert len(page) <= limit
                pages += page
                after = page[-1].position
            assert pages == everything, limit
        inside = everything[3]  # the third event of the first member row
        assert await store.read_events(tenant, after=inside.position, before=FAR, limit=2) == everything[4:6]
        horizon = _stamp(everything[-1])  # before the last user's event: the rows only
        rest = await store.read_events(tenant, after=everything[10].position, before=horizon, limit=1000)
        assert rest == everything[11:-1]
        end_of_row = everything[5]  # the last event of the first member row
        assert await store.read_events(tenant, after=end_of_row.position, before=FAR, limit=1) == [everything[6]]
