"""An in-memory :class:`DirectoryStore` and :class:`TenantRegistry` (tests, local development).

It follows every rule of :mod:`scim.store.base` with plain dictionaries. Every public method
runs to completion without awaiting anything, so under asyncio each call is atomic: two
concurrent creates of one ``userName`` see each other, concurrent member changes all take
effect (RFC 7644 §3.5.2 PATCH of ``members``, as Entra sends it one member at a time), and a
call that raises has changed nothing. The one exception is
:meth:`MemoryTenantRegistry._store` (every credentials change), which yields before writing, as a
Table write does, so that concurrent token changes conflict as they do on Tables.

Events (rule 10) are kept per tenant as JSON text by position (``{stamp:016d}|{id}``, or
``{stamp:016d}|{row id}|{index:03d}`` for membership events, in rows of 49), stamped by
the same :class:`~scim.store.event_timing.EventClock` rules as the Table store's, and written
by the same synchronous step as their change, after everything that may raise (the event's
``render`` included).
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import dataclasses
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scim.core.events import (
    GROUP_MEMBER_ADDED,
    GROUP_MEMBER_REMOVED,
    event_document,
    membership_document,
    new_event_id,
)
from scim.credentials import TenantCredentials, regenerate
from scim.store import MAX_GROUPS_PER_RESOURCE, check_members_allowed, dedupe_members, keys, new_id, utc_now
from scim.store.base import (
    DirectoryStore,
    EventIntent,
    IndexTerms,
    Member,
    MembershipEventIntent,
    Page,
    ResourceKind,
    ResourceNotFound,
    StoredEvent,
    StoredResource,
    TooManyGroups,
    UniquenessViolation,
    UnknownMembers,
    VersionMismatch,
)
from scim.store.entities import check_resource_fits
from scim.store.event_timing import EventClock, floor_after, stamp_time
from scim.tenants import (
    ACTIVE,
    DELETING,
    TenantDeleting,
    TenantExists,
    TenantInfo,
    TenantNotFound,
    TenantRegistry,
    new_token,
    validate_entra_tenant_id,
    validate_recipients,
    validate_tenant_name,
)

__all__ = ["MemoryStore", "MemoryTenantRegistry"]

MEMBERS_PER_ROW = 49
"""Membership events per event row: as many as a Table store's member transaction holds."""

_Key = tuple[ResourceKind, str]
_IndexKey = tuple[ResourceKind, str, str]


@dataclass
class _Record:
    """One resource as held in memory; never handed out (see :meth:`_Record.snapshot`)."""

    resource_type: ResourceKind
    id: str
    doc: dict[str, Any]
    index: IndexTerms
    created: str
    last_modified: str
    version: str
    groups: set[str] = field(default_factory=set)
    members: dict[str, Member] = field(default_factory=dict)
    event_stamp: int = 0  # the stamp of its last event

    def snapshot(self, with_members: bool = False) -> StoredResource:
        """A deep copy as a :class:`StoredResource` (rule 2: copies out)."""
        members = tuple(self.members[m] for m in sorted(self.members)) if with_members else None
        return StoredResource(
            resource_type=self.resource_type,
            id=self.id,
            doc=copy.deepcopy(self.doc),
            created=self.created,
            last_modified=self.last_modified,
            version=self.version,
            groups=tuple(sorted(self.groups)),
            members=members,
        )


@dataclass
class _Tenant:
    """Everything one tenant owns (rule 1: tenants never share any of it)."""

    records: dict[_Key, _Record] = field(default_factory=dict)
    unique: dict[_IndexKey, str] = field(default_factory=dict)
    multi: dict[_IndexKey, set[str]] = field(default_factory=dict)
    positions: list[str] = field(default_factory=list)  # of its events, sorted (feed order)
    events: dict[str, str] = field(default_factory=dict)  # position -> event JSON


def _frozen_terms(index: IndexTerms) -> IndexTerms:
    """A private copy of ``index`` (its ``unique`` mapping may be the caller's dict)."""
    return IndexTerms(unique=dict(index.unique), multi=frozenset(index.multi))


class MemoryStore(DirectoryStore):
    """Users, groups and memberships in process memory. Versions are weak ETags ``W/"n"``."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}
        self._counter = itertools.count(1)
        self._clock = EventClock()

    # ---- helpers ---------------------------------------------------------------------------

    def _tenant(self, tenant: str) -> _Tenant:
        return self._tenants.setdefault(tenant, _Tenant())

    def _next_version(self) -> str:
        return f'W/"{next(self._counter)}"'

    def _now(self) -> str:
        """The time of a change: from the store's clock, so that a resource's ``lastModified``
        never goes back within the process, whatever its events' stamps were."""
        return stamp_time(self._clock.stamp())

    def _touch(self, record: _Record, now: str | None = None) -> None:
        """Rule 3: every change gives the resource a new version (and lastModified, RFC 7643 §3.1)."""
        record.version = self._next_version()
        record.last_modified = now or self._now()

    def _record(self, tenant: str, resource_type: ResourceKind, id: str) -> _Record:
        record = self._tenant(tenant).records.get((resource_type, id))
        if record is None:
            raise ResourceNotFound(f"{resource_type} {id}")
        return record

    def _event(
        self, tenant: str, event: EventIntent, kind: str, stamp: int, subject: StoredResource
    ) -> tuple[str, str]:
        """(position, JSON) of an event; computed before the write changes anything."""
        event_id = new_event_id()
        document = event_document(
            id=event_id, type=kind, tenant=tenant, time=stamp_time(stamp), obj=event.render(subject)
        )
        return keys.event_position(keys.event_key(stamp, event_id)), json.dumps(document)

    @staticmethod
    def _append(t: _Tenant, event: tuple[str, str] | None) -> None:
        if event is not None:
            bisect.insort(t.positions, event[0])
            t.events[event[0]] = event[1]

    @staticmethod
    def _check_version(record: _Record, if_version: str | None) -> None:
        if if_version is not None and if_version != record.version:
            raise VersionMismatch(record.id)

    @staticmethod
    def _check_unique(t: _Tenant, resource_type: ResourceKind, index: IndexTerms, own_id: str | None) -> None:
        """Rule 4: no other resource of the type may hold one of ``index.unique``."""
        for attribute, key in index.unique.items():
            holder = t.unique.get((resource_type, attribute, key))
            if holder is not None and holder != own_id:
                raise UniquenessViolation(attribute)

    @staticmethod
    def _add_index(t: _Tenant, record: _Record) -> None:
        for attribute, key in record.index.unique.items():
            t.unique[(record.resource_type, attribute, key)] = record.id
        for attribute, key in record.index.multi:
            t.multi.setdefault((record.resource_type, attribute, key), set()).add(record.id)

    @staticmethod
    def _drop_index(t: _Tenant, record: _Record) -> None:
        for attribute, key in record.index.unique.items():
            t.unique.pop((record.resource_type, attribute, key), None)
        for attribute, key in record.index.multi:
            ids = t.multi.get((record.resource_type, attribute, key))
            if ids is not None:
                ids.discard(record.id)
                if not ids:
                    del t.multi[(record.resource_type, attribute, key)]

    @staticmethod
    def _check_members(t: _Tenant, group_id: str, members: Iterable[Member]) -> list[_Record]:
        """The member records, or UnknownMembers (rule 7) / TooManyGroups; nothing is written.

        A member must be a live resource of the type it is given as; a group cannot contain itself.
        """
        found: list[_Record] = []
        unknown: list[str] = []
        for member in members:
            record = t.records.get((member.type, member.value))
            if record is None or record.id == group_id:
                unknown.append(member.value)
            else:
                found.append(record)
        if unknown:
            raise UnknownMembers(unknown)
        for record in found:
            if group_id not in record.groups and len(record.groups) >= MAX_GROUPS_PER_RESOURCE:
                raise TooManyGroups(record.id)
        return found

    def _link(self, group: _Record, members: Sequence[Member], records: Sequence[_Record], now: str) -> bool:
        """Add memberships in both directions; returns whether anything changed."""
        changed = False
        for member, record in zip(members, records, strict=True):
            if member.value in group.members:
                continue  # a re-add changes nothing (rule 7), not even the display
            group.members[member.value] = member
            record.groups.add(group.id)
            self._touch(record, now)
            changed = True
        return changed

    # ---- DirectoryStore ----------------------------------------------------------------------

    async def create(
        self,
        tenant: str,
        resource_type: ResourceKind,
        doc: dict[str, Any],
        index: IndexTerms,
        members: Sequence[Member] = (),
        *,
        event: EventIntent | None = None,
    ) -> StoredResource:
        """Store a new resource (RFC 7644 §3.3); uniqueness first, then members (rule 4, 7); the event with it."""
        check_members_allowed(resource_type, members)
        t = self._tenant(tenant)
        index = _frozen_terms(index)
        self._check_unique(t, resource_type, index, None)
        wanted = dedupe_members(members)
        id = new_id()
        records = self._check_members(t, id, wanted)
        stamp = self._clock.stamp()
        now = stamp_time(stamp)
        check_resource_fits(tenant, resource_type, id, doc, index, now)
        record = _Record(resource_type, id, copy.deepcopy(doc), index, now, now, self._next_version())
        kind = event.resolve(dict) if event is not None else None  # a create has no previous document
        committed = None
        if event is not None and kind is not None:
            committed = self._event(tenant, event, kind, stamp, dataclasses.replace(record.snapshot(), version=""))
            record.event_stamp = stamp
        t.records[(resource_type, id)] = record
        self._add_index(t, record)
        self._link(record, wanted, records, now)
        self._append(t, committed)
        return record.snapshot(with_members=resource_type == "Group")

    async def get(self, tenant: str, resource_type: ResourceKind, id: str, *, members: bool = False) -> StoredResource:
        """Read one resource (RFC 7644 §3.4.1)."""
        return self._record(tenant, resource_type, id).snapshot(with_members=members and resource_type == "Group")

    async def replace(
        self,
        tenant: str,
        resource_type: ResourceKind,
        id: str,
        doc: dict[str, Any],
        index: IndexTerms,
        *,
        if_version: str | None = None,
        event: EventIntent | None = None,
    ) -> StoredResource:
        """Replace attributes (RFC 7644 §3.5.1), keeping id, created and memberships; the event with it."""
        t = self._tenant(tenant)
        record = self._record(tenant, resource_type, id)
        self._check_version(record, if_version)
        index = _frozen_terms(index)
        self._check_unique(t, resource_type, index, id)
        check_resource_fits(tenant, resource_type, id, doc, index, record.last_modified)
        stamp = self._clock.stamp(floor_after(record.last_modified, record.event_stamp))
        kind = event.resolve(lambda: record.doc) if event is not None else None
        committed = None
        if event is not None and kind is not None:
            after = dataclasses.replace(
                record.snapshot(), doc=copy.deepcopy(doc), last_modified=stamp_time(stamp), version=""
            )
            committed = self._event(tenant, event, kind, stamp, after)
            record.event_stamp = stamp
        self._drop_index(t, record)
        record.doc = copy.deepcopy(doc)
        record.index = index
        self._add_index(t, record)
        self._touch(record, stamp_time(stamp))
        self._append(t, committed)
        return record.snapshot()

    async def delete(
        self,
        tenant: str,
        resource_type: ResourceKind,
        id: str,
        *,
        if_version: str | None = None,
        event: EventIntent | None = None,
    ) -> None:
        """Delete a resource and every membership naming it (RFC 7644 §3.6, rule 8); the event
        (rendered from its last state) with it."""
        t = self._tenant(tenant)
        record = self._record(tenant, resource_type, id)
        self._check_version(record, if_version)
        kind = event.resolve(lambda: record.doc) if event is not None else None
        committed = None
        if event is not None and kind is not None:
            stamp = self._clock.stamp(floor_after(record.last_modified, record.event_stamp))
            committed = self._event(tenant, event, kind, stamp, dataclasses.replace(record.snapshot(), version=""))
        self._append(t, committed)
        now = self._now()
        for group_id in record.groups:
            group = t.records[("Group", group_id)]
            del group.members[id]
            self._touch(group, now)
        for member in record.members.values():
            member_record = t.records[(member.type, member.value)]
            member_record.groups.discard(id)
            self._touch(member_record, now)
        self._drop_index(t, record)
        del t.records[(resource_type, id)]

    async def lookup(self, tenant: str, resource_type: ResourceKind, attribute: str, key: str) -> list[StoredResource]:
        """Resources indexed under (attribute, key) (RFC 7644 §3.4.2.2 ``eq`` on an indexed attribute)."""
        t = self._tenant(tenant)
        ids = set(t.multi.get((resource_type, attribute, key), ()))
        holder = t.unique.get((resource_type, attribute, key))
        if holder is not None:
            ids.add(holder)
        return [t.records[(resource_type, i)].snapshot() for i in sorted(ids)]

    async def lookup_prefix(
        self, tenant: str, resource_type: ResourceKind, attribute: str, prefix: str, *, limit: int
    ) -> list[StoredResource]:
        """Resources with an index key of ``attribute`` starting with ``prefix`` (RFC 7644 §3.4.2.2 ``sw``)."""
        t = self._tenant(tenant)
        ids = self._prefix_ids(t, resource_type, attribute, prefix)
        return [t.records[(resource_type, i)].snapshot() for i in sorted(ids)[: limit + 1]]

    async def find(
        self,
        tenant: str,
        resource_type: ResourceKind,
        *,
        ids: Iterable[str] = (),
        terms: Iterable[tuple[str, str]] = (),
        prefixes: Iterable[tuple[str, str]] = (),
        limit: int,
    ) -> list[StoredResource]:
        """A filter's index candidates (:meth:`DirectoryStore.find`), at once like every call here."""
        t = self._tenant(tenant)
        wanted: dict[str, None] = dict.fromkeys(i for i in ids if (resource_type, i) in t.records)
        for attribute, key in terms:
            wanted.update(dict.fromkeys(sorted(t.multi.get((resource_type, attribute, key), ()))))
            holder = t.unique.get((resource_type, attribute, key))
            if holder is not None:
                wanted[holder] = None
        for attribute, prefix in prefixes:
            wanted.update(dict.fromkeys(sorted(self._prefix_ids(t, resource_type, attribute, prefix))))
        return [t.records[(resource_type, i)].snapshot() for i in list(wanted)[: limit + 1]]

    @staticmethod
    def _prefix_ids(t: _Tenant, resource_type: ResourceKind, attribute: str, prefix: str) -> set[str]:
        ids = {
            i
            for (rtype, attr, key), i in t.unique.items()
            if rtype == resource_type and attr == attribute and key.startswith(prefix)
        }
        for (rtype, attr, key), holders in t.multi.items():
            if rtype == resource_type and attr == attribute and key.startswith(prefix):
                ids.update(holders)
        return ids

    async def scan(
        self, tenant: str, resource_type: ResourceKind, *, cursor: str | None = None, limit: int = 100
    ) -> Page:
        """Up to ``limit`` resources with an id after ``cursor``, in id order (RFC 7644 §3.4.2.4 paging)."""
        if limit < 1:
            raise ValueError("limit must be positive")
        t = self._tenant(tenant)
        ids = sorted(i for (rtype, i) in t.records if rtype == resource_type and (cursor is None or i > cursor))
        chunk = ids[:limit]
        resources = [t.records[(resource_type, i)].snapshot() for i in chunk]
        return Page(resources, chunk[-1] if len(ids) > limit else None)

    def _membership_events(
        self, tenant: str, group: _Record, kind: str, members: Sequence[Member], event: MembershipEventIntent | None
    ) -> list[tuple[str, str]]:
        """(position, JSON) of the events of ``members`` joining or leaving ``group``, in rows of
        49 as the Table store's transactions hold them, each row with its own stamp after the
        group's previous change; computed before anything changes."""
        if event is None:
            return []
        committed: list[tuple[str, str]] = []
        for start in range(0, len(members), MEMBERS_PER_ROW):
            chunk = members[start : start + MEMBERS_PER_ROW]
            floor = floor_after(group.last_modified, group.event_stamp, event.not_before)
            stamp = self._clock.stamp(floor)
            documents = [
                membership_document(
                    id=new_event_id(), type=kind, tenant=tenant, time=stamp_time(stamp), data=event.data(m)
                )
                for m in chunk
            ]
            positions = keys.row_event_positions(keys.event_key(stamp, new_event_id()), len(documents))
            committed += [(p, json.dumps(d)) for p, d in zip(positions, documents, strict=True)]
            group.event_stamp = max(group.event_stamp, stamp)
        return committed

    async def add_members(
        self, tenant: str, group_id: str, members: Sequence[Member], *, event: MembershipEventIntent | None = None
    ) -> None:
        """Add members (RFC 7644 §3.5.2.1 ``add`` on ``members``); all or nothing; a
        ``group.member_added`` event per member that was not in the group."""
        t = self._tenant(tenant)
        group = self._record(tenant, "Group", group_id)
        wanted = dedupe_members(members)
        records = self._check_members(t, group_id, wanted)
        joining = [m for m in wanted if m.value not in group.members]
        committed = self._membership_events(tenant, group, GROUP_MEMBER_ADDED, joining, event)
        now = self._now()
        if self._link(group, wanted, records, now):
            self._touch(group, now)
        for row in committed:
            self._append(t, row)

    async def remove_members(
        self, tenant: str, group_id: str, member_ids: Sequence[str], *, event: MembershipEventIntent | None = None
    ) -> None:
        """Remove members (RFC 7644 §3.5.2.2 ``remove`` on ``members``); absent ids are ignored;
        a ``group.member_removed`` event per member that was in the group."""
        t = self._tenant(tenant)
        group = self._record(tenant, "Group", group_id)
        leaving = [group.members[i] for i in dict.fromkeys(member_ids) if i in group.members]
        committed = self._membership_events(tenant, group, GROUP_MEMBER_REMOVED, leaving, event)
        if not leaving:
            return
        now = self._now()
        for member in leaving:
            del group.members[member.value]
            record = t.records[(member.type, member.value)]
            record.groups.discard(group_id)
            self._touch(record, now)
        self._touch(group, now)
        for row in committed:
            self._append(t, row)

    async def read_events(self, tenant: str, *, after: str | None, before: int, limit: int) -> list[StoredEvent]:
        """Events after ``after``, stamped before ``before``, at most ``limit``, in feed order."""
        if limit < 1:
            raise ValueError("limit must be positive")
        t = self._tenants.get(tenant)
        if t is None:
            return []
        start = 0 if after is None else bisect.bisect_right(t.positions, after)
        end = bisect.bisect_left(t.positions, keys.event_position(keys.event_bound(before)))
        return [StoredEvent(p, json.loads(t.events[p])) for p in t.positions[start:end][:limit]]

    async def purge_events(self, tenant: str, *, older_than: int) -> int:
        """Delete the events stamped before ``older_than``; how many there were."""
        t = self._tenants.get(tenant)
        if t is None:
            return 0
        end = bisect.bisect_left(t.positions, keys.event_position(keys.event_bound(older_than)))
        for position in t.positions[:end]:
            del t.events[position]
        del t.positions[:end]
        return end

    async def delete_tenant(self, tenant: str) -> None:
        """Forget everything of the tenant, its events included."""
        self._tenants.pop(tenant, None)


@dataclass
class _TenantRecord:
    """One tenant record; ``version`` changes on every write (what a Table ETag is)."""

    credentials: TenantCredentials
    created: str
    version: int
    state: str = ACTIVE
    notify: tuple[str, ...] = ()
    notify_enabled: bool = False
    entra_tid: str | None = None


class MemoryTenantRegistry(TenantRegistry):
    """Tenants and their credentials in process memory, with the Table registry's behaviour:
    every write gives the record a new version, and a credentials write (:meth:`_store`)
    yields first, as a Table write waits for storage, then writes only if the version it was
    given is unchanged (so two concurrent regenerations: one TokenConflict)."""

    def __init__(self) -> None:
        self._tenants: dict[str, _TenantRecord] = {}
        self._versions = itertools.count(1)

    def _changed(self, record: _TenantRecord) -> None:
        record.version = next(self._versions)

    def _record(self, name: str) -> _TenantRecord:
        record = self._tenants.get(name)
        if record is None:
            raise TenantNotFound(name)
        return record

    async def create(self, name: str, token: str | None = None, expires: int | None = None) -> str:
        """Create a tenant; raises TenantExists (also while a tenant of that name is being deleted)."""
        validate_tenant_name(name)
        if name in self._tenants:
            raise TenantExists(name)
        token = token or new_token()
        first, _ = regenerate(TenantCredentials(), token, datetime.now(UTC), expires)
        self._tenants[name] = _TenantRecord(first, utc_now(), next(self._versions))
        return token

    async def _load(self, name: str) -> tuple[str, TenantCredentials] | None:
        record = self._tenants.get(name)
        if record is None:
            return None
        return record.state, dataclasses.replace(record.credentials, version=str(record.version))

    async def _store(self, name: str, credentials: TenantCredentials, version: str) -> None:
        await asyncio.sleep(0)  # where a Table write waits for storage
        record = self._tenants.get(name)
        if record is None:
            raise TenantNotFound(name)
        if str(record.version) != version:
            raise VersionMismatch(name)
        record.credentials = dataclasses.replace(credentials, version="")
        self._changed(record)

    async def state(self, name: str) -> str | None:
        """``active``, ``deleting`` or None."""
        record = self._tenants.get(name)
        return record.state if record is not None else None

    async def begin_delete(self, name: str) -> None:
        """Mark the record deleting, drop its token hash, switch digests off; idempotent."""
        record = self._record(name)
        if record.state == DELETING:
            return
        record.state, record.credentials, record.notify_enabled = DELETING, TenantCredentials(), False
        self._changed(record)

    async def delete(self, name: str) -> None:
        """Remove the tenant record; raises TenantNotFound."""
        if self._tenants.pop(name, None) is None:
            raise TenantNotFound(name)

    async def list(self) -> list[TenantInfo]:
        """Every tenant, sorted by name."""
        return [
            TenantInfo(name, r.created, r.notify, r.notify_enabled, r.state, r.entra_tid)
            for name, r in sorted(self._tenants.items())
        ]

    async def set_notifications(self, name: str, recipients: Sequence[str], enabled: bool) -> None:
        """Set the tenant's digest recipients and switch; raises TenantNotFound or TenantDeleting."""
        cleaned = validate_recipients(recipients)
        record = self._record(name)
        if record.state == DELETING:
            raise TenantDeleting(name)
        record.notify, record.notify_enabled = cleaned, enabled
        self._changed(record)

    async def set_entra_tenant(self, name: str, tid: str | None) -> None:
        """Record the Entra tenant whose admins may sign in; raises TenantNotFound or TenantDeleting."""
        cleaned = validate_entra_tenant_id(tid)
        record = self._record(name)
        if record.state == DELETING:
            raise TenantDeleting(name)
        record.entra_tid = cleaned
        self._changed(record)
