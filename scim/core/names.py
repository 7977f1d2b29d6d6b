"""Names for membership events without storage reads (issue 12, ``docs/events.md``, "Membership events").

A ``group.member_added``/``group.member_removed`` event names the group (``displayName``) and
the member (a user's ``userName``, a group's ``displayName``), but a member PATCH, Entra's
commonest write, reads neither: it is one storage transaction. :class:`NameCache` remembers,
per process, the names of the resources the service has just seen: every
:class:`~scim.store.base.StoredResource` a create, GET, PUT, PATCH or query returned, updated by
the renames and deletes the service commits. In Entra's flow the group and its members were
created or looked up moments before their member PATCH, so their names are known. A name that
is not (another instance served those requests, or it aged out) is read before the write by
:func:`resolve`, with the store's ordinary reads, all at once: a cold cache costs one round
trip of latency, a warm one none.

Bounds: at most :data:`MAX_ENTRIES` entries (least recently used dropped first, about 300 bytes
each), each trusted for :data:`MAX_AGE` seconds. So a name in a membership event may be up to
:data:`MAX_AGE` old when the resource was renamed through another instance meanwhile (a rename
through this instance updates the entry at once).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from scim.store.base import DirectoryStore, Member, ResourceKind, ResourceNotFound, StoredResource

__all__ = ["MAX_AGE", "MAX_ENTRIES", "Known", "NameCache", "resolve"]

MAX_AGE = 600.0
"""Seconds a remembered name is trusted (10 minutes)."""
MAX_ENTRIES = 50_000
"""Names remembered per process (about 15 MB)."""


@dataclass(frozen=True)
class Known:
    """What the cache knows of a resource: its name, and its ``lastModified`` when last seen."""

    kind: ResourceKind
    name: str | None
    last_modified: str | None


def _name(stored: StoredResource) -> str | None:
    value = stored.doc.get("userName" if stored.resource_type == "User" else "displayName")
    return value if isinstance(value, str) else None


class NameCache:
    """(tenant, type, id) → :class:`Known`, bounded (LRU) and aged; one per service (per process)."""

    def __init__(
        self, max_entries: int = MAX_ENTRIES, max_age: float = MAX_AGE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: OrderedDict[tuple[str, str, str], tuple[float, Known]] = OrderedDict()
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock

    def note(self, tenant: str, stored: StoredResource) -> None:
        """Remember a resource the service has seen (as the store returned it)."""
        key = (tenant, stored.resource_type, stored.id)
        self._entries[key] = (self._clock(), Known(stored.resource_type, _name(stored), stored.last_modified))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def note_all(self, tenant: str, resources: Iterable[StoredResource]) -> None:
        for stored in resources:
            self.note(tenant, stored)

    def forget(self, tenant: str, kind: ResourceKind, id: str) -> None:
        """Drop a resource (deleted, or its name unknown after a failed write)."""
        self._entries.pop((tenant, kind, id), None)

    def get(self, tenant: str, kind: ResourceKind, id: str) -> Known | None:
        """The resource's entry, if seen less than ``max_age`` ago."""
        key = (tenant, kind, id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry[0] > self.max_age:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def __len__(self) -> int:
        return len(self._entries)


async def resolve(
    cache: NameCache, store: DirectoryStore, tenant: str, group_id: str, members: Sequence[Member]
) -> tuple[Known | None, dict[tuple[str, str], str | None]]:
    """The group's entry and the members' names ((type, id) → name), from ``cache``, reading
    the missing ones concurrently (one round trip of latency, none when all are known).

    A member is looked up as the type it was given (``User`` unless sent as a group), then as
    the other type (a member sent without ``type`` may be a group); one that is neither has no
    name (the store will refuse it, or it is not in the group). The group is None when it does
    not exist; a storage failure propagates.
    """

    def cached(kind: ResourceKind, id: str) -> Known | None:
        return cache.get(tenant, kind, id)

    async def read(kind: ResourceKind, id: str) -> Known | None:
        try:
            stored = await store.get(tenant, kind, id)
        except ResourceNotFound:
            return None
        cache.note(tenant, stored)
        return cached(kind, id)

    async def member(m: Member) -> Known | None:
        other: ResourceKind = "Group" if m.type == "User" else "User"
        known = cached(m.type, m.value) or cached(other, m.value)
        if known is None:
            known = await read(m.type, m.value) or await read(other, m.value)
        return known

    group = cached("Group", group_id)
    found = await asyncio.gather(
        *(member(m) for m in members), read("Group", group_id) if group is None else _done(group)
    )
    names: dict[tuple[str, str], str | None] = {
        (k.kind, m.value): k.name for m, k in zip(members, found[:-1], strict=True) if k is not None
    }
    return found[-1], names


async def _done(value: Known) -> Known:
    return value
