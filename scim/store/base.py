"""The directory storage interface, and the rules every implementation follows.

The SCIM core (:mod:`scim.core.service`) does no I/O: it reads and writes resources only
through a :class:`DirectoryStore`. Two implementations exist and both pass the same
contract tests (``tests/store_contract.py``): :class:`scim.store.memory.MemoryStore`
and :class:`scim.store.tables.TableStore` (Azure Table Storage, or Azurite).

Rules of the contract
---------------------
1. **Tenants are disjoint.** Every call names a tenant; nothing written under one
   tenant is ever visible under another, whatever the ids.
2. **Copies in, copies out.** A store never keeps a reference to a ``doc`` it was
   given, and the :class:`StoredResource` it returns is never aliased by the store.
3. **The store owns ``id``, ``created``, ``lastModified`` and ``version``.** ``create``
   assigns a fresh id (a UUID string) and stamps times as RFC 3339 UTC strings;
   every successful change of a resource (including a change of its members, or of
   the groups a user belongs to) gives it a new ``version``.
4. **Uniqueness is enforced by the store, atomically.** ``IndexTerms.unique`` maps an
   attribute name to the resource's comparison key for it (already case-folded by the
   core). ``create`` and ``replace`` raise :class:`UniquenessViolation` when another
   resource of the same type in the tenant holds the same key, even when two calls
   race: of two concurrent creates of one key, exactly one succeeds. A write either
   happens entirely (resource and all its index entries) or not at all.
5. **Lookups come from the index.** ``lookup(attribute, key)`` returns every resource
   whose ``IndexTerms`` contained that (attribute, key) pair, in unique or multi terms;
   ``find`` answers a whole filter's index plan as one operation (one time budget).
6. **Optimistic concurrency.** ``replace`` and ``delete`` take a keyword-only
   ``if_version``: when given and different from the current version they raise
   :class:`VersionMismatch` and change nothing.
7. **Memberships commute.** ``add_members`` and ``remove_members`` never read-modify-write
   a member list: concurrent calls on one group all take effect. Adding an existing
   member or removing an absent one is a no-op, not an error: it changes nothing (not the
   ``display`` stored with the member, not the group's version). Their cost does not
   depend on the size of the group. A member id that is not a live resource of the
   tenant raises :class:`UnknownMembers` (listing the ids) and, for the members in
   the same storage transaction, nothing is written.
8. **Deletes clean up.** Deleting a user or group also removes it from every group it
   was a member of, and deleting a group removes its memberships; ``groups`` and
   ``members`` never name a deleted resource.
9. **Errors are these classes only.** Storage-level failures that are not the
   client's fault (timeouts, throttling) raise :class:`StoreUnavailable`.
10. **Events commit with their change** (issue 12, ``docs/events.md``). ``create``, ``replace``
    and ``delete`` take an optional :class:`EventIntent`; the store writes the event it
    describes in the same atomic write as the change (the same entity-group transaction on
    Tables): a write that fails leaves neither, and a write sent again after a lost answer
    never leaves two. The store stamps the event with the commit time (microseconds since the
    epoch), never earlier than 1 ms after the resource's previous change it knows of, so the
    events of one resource sort in the order of its commits. :meth:`DirectoryStore.read_events`
    reads them back in that order (by ``position``), :meth:`DirectoryStore.purge_events` drops
    old ones, and ``delete_tenant`` removes them with the rest. ``add_members`` and
    ``remove_members`` take an optional :class:`MembershipEventIntent`: one event per member
    that really joined or left the group (a re-added member or a non-member removed gives
    none), committed with that membership change; the events of one storage transaction share
    one stamp and are read back as consecutive positions.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ResourceKind = Literal["User", "Group"]
"""The kinds of resource the store holds (the names of :data:`scim.core.schema.USER` and :data:`scim.core.schema.GROUP`)."""

__all__ = [
    "DirectoryStore",
    "EntityTooLarge",
    "EventIntent",
    "IndexTerms",
    "Member",
    "MembershipEventIntent",
    "Page",
    "ResourceExists",
    "ResourceKind",
    "ResourceNotFound",
    "StoreError",
    "StoreUnavailable",
    "StoredEvent",
    "StoredResource",
    "TooManyGroups",
    "UniquenessViolation",
    "UnknownMembers",
    "VersionMismatch",
]


@dataclass(frozen=True)
class Member:
    """One member of a group (RFC 7643 §4.2 ``members``): its id, its type and the ``display`` sent with it."""

    value: str
    type: ResourceKind = "User"
    display: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class IndexTerms:
    """What a resource is findable by, computed by the core from its attributes.

    ``unique``: attribute name -> comparison key, unique per tenant and resource type
    (``userName`` for users, ``displayName`` for groups).
    ``multi``: (attribute name, comparison key) pairs that several resources may share
    (``externalId``, the work email, a user's ``displayName``).
    Keys are arbitrary Unicode strings; the store must encode them safely.
    """

    unique: Mapping[str, str] = field(default_factory=dict)
    multi: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class StoredResource:
    """A resource as the store holds it.

    ``doc`` holds the client-visible attributes exactly as last written by the core,
    without ``id``, ``meta``, a group's ``members`` or a user's ``groups``.
    ``groups`` lists the ids of the groups this resource is a direct member of.
    ``members`` is ``None`` unless the caller asked for them.
    """

    resource_type: ResourceKind
    id: str
    doc: dict[str, Any]
    created: str
    last_modified: str
    version: str
    groups: tuple[str, ...] = ()
    members: tuple[Member, ...] | None = None


@dataclass(frozen=True)
class EventIntent:
    """The event a write commits with its change (rule 10; the event's schema is
    :mod:`scim.core.events`, issue 12).

    ``type``: the event type (``user.updated``), or a function of the resource's document
    before the write that returns it, or None for "no event" (a PUT: only the store reads the
    previous document, and a PUT that changes nothing gives no event).
    ``render``: ``data.object`` of the event, from the resource as it is after the commit (for
    a delete: its last state), with ``created``/``last_modified`` as committed and ``version``
    ``""`` (the version is the storage's ETag, unknown before the commit); ``members`` is None.
    The store calls it while building the write, again whenever it builds the write anew (a
    fresh commit time), and before changing anything: if it raises, nothing is written.
    ``undo``: the event of the delete a store makes when it has to undo this create (a group
    created with more members than one transaction holds, whose later members failed).
    """

    type: str | Callable[[Mapping[str, Any]], str | None]
    render: Callable[[StoredResource], dict[str, Any]]
    undo: EventIntent | None = None

    def resolve(self, before: Callable[[], Mapping[str, Any]]) -> str | None:
        """The event type, given (lazily) the resource's document before the write."""
        return self.type if isinstance(self.type, str) else self.type(before())


@dataclass(frozen=True)
class MembershipEventIntent:
    """The events of a member PATCH (``group.member_added`` / ``group.member_removed``, rule 10;
    schema in :mod:`scim.core.events`): one per member whose membership the store really changes.

    ``data``: the event's ``data`` (``{"group": {...}, "member": {...}}``) for a member, given as
    the store commits it (its ``type`` is the one the store found: a member sent as a user may be
    a group). The names in it come from the caller (a member PATCH reads neither the group nor
    its members). ``not_before``: the group's ``lastModified`` the caller last saw, if any; the
    events are stamped at least 1 ms after it (the group's order, ``docs/events.md``).
    """

    data: Callable[[Member], dict[str, Any]]
    not_before: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    """One committed event as the store reads it back, in feed order by ``position``:
    ``{stamp:016d}|{id}`` for an event stored alone (``stamp``: the commit time in microseconds
    since the epoch), ``{stamp:016d}|{row id}|{index:03d}`` for the events of a member PATCH's
    transaction, stored together in one row (``docs/events.md``).

    ``previous``: the millisecond (as a stamp) of the resource's change before this one, as the
    write knew it (its ``lastModified``/``eventStamp``, or for a member PATCH the group's
    ``lastModified`` the service last saw); 0 when there was none or it is unknown. The webhook
    deliverer uses it to find an earlier event of the same resource that became visible late
    (:mod:`scim.webhooks.delivery`). The memory store, whose commits are visible at once, leaves it 0."""

    position: str
    event: dict[str, Any]
    previous: int = 0


@dataclass(frozen=True)
class Page:
    """One page of a scan, in a stable order; ``cursor`` is ``None`` on the last page."""

    resources: list[StoredResource]
    cursor: str | None


class StoreError(Exception):
    """Base class of the errors a store raises."""


class ResourceNotFound(StoreError):
    """No resource of that type and id in the tenant."""


class ResourceExists(StoreError):
    """An insert found its row there already (a 409 other than a unique key's, which is
    :class:`UniquenessViolation`): a digest lease row another run created first."""


class UniquenessViolation(StoreError):
    """Another resource already holds a unique key; ``attribute`` names which."""

    def __init__(self, attribute: str) -> None:
        super().__init__(attribute)
        self.attribute = attribute


class VersionMismatch(StoreError):
    """``if_version`` did not match the stored version."""


class UnknownMembers(StoreError):
    """Some member ids are not live resources of the tenant."""

    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(", ".join(ids))
        self.ids = list(ids)


class StoreUnavailable(StoreError):
    """The storage service failed or timed out; the request may be retried."""


class DirectoryStore(abc.ABC):
    """Users, groups and memberships of every tenant. See the module docstring for the rules."""

    @abc.abstractmethod
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
        """Store a new resource with a fresh id (RFC 7644 §3.3), and ``event`` with it (rule 10).
        Raises UniquenessViolation, UnknownMembers."""

    @abc.abstractmethod
    async def get(self, tenant: str, resource_type: ResourceKind, id: str, *, members: bool = False) -> StoredResource:
        """Read one resource (RFC 7644 §3.4.1); ``members=True`` also reads a group's members. Raises ResourceNotFound."""

    @abc.abstractmethod
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
        """Replace a resource's attributes, keeping its id, created time and memberships, and
        commit ``event`` with it (rule 10).

        Raises ResourceNotFound, VersionMismatch, UniquenessViolation.
        """

    @abc.abstractmethod
    async def delete(
        self,
        tenant: str,
        resource_type: ResourceKind,
        id: str,
        *,
        if_version: str | None = None,
        event: EventIntent | None = None,
    ) -> None:
        """Delete a resource and every membership that names it (RFC 7644 §3.6), committing
        ``event`` (rendered from the resource's last state) with the deletion (rule 10)."""

    @abc.abstractmethod
    async def lookup(self, tenant: str, resource_type: ResourceKind, attribute: str, key: str) -> list[StoredResource]:
        """Every resource indexed under (attribute, key), from the index (never a scan)."""

    @abc.abstractmethod
    async def lookup_prefix(
        self, tenant: str, resource_type: ResourceKind, attribute: str, prefix: str, *, limit: int
    ) -> list[StoredResource]:
        """Resources with an index key of ``attribute`` that starts with ``prefix`` (``sw`` filters).

        Answered from the index, never from a scan of resources. At most ``limit + 1`` are
        returned, so a caller can tell "more than ``limit``". May include resources whose key
        does not start with ``prefix`` (keys too long to store verbatim are hashed): callers
        re-check the filter.
        """

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
        """The candidates of a filter's index plan, as **one** store operation: the resources
        with one of ``ids``, those :meth:`lookup` finds for each (attribute, key) of ``terms``
        and those :meth:`lookup_prefix` finds for each (attribute, prefix) of ``prefixes``,
        each resource once, in no particular order.

        At most ``limit + 1`` are returned, so a caller can tell "more than ``limit``". Like
        :meth:`lookup_prefix`, may include resources that do not match (hashed keys): callers
        re-check the filter. One operation means one storage time budget for all of it, and
        a store may read the resources in whatever way costs fewest storage calls (a range of
        resource rows rather than a point read per match). This default composes the three
        single lookups.
        """
        import asyncio

        async def by_id(resource_id: str) -> list[StoredResource]:
            try:
                return [await self.get(tenant, resource_type, resource_id)]
            except ResourceNotFound:
                return []

        results = await asyncio.gather(
            *(by_id(i) for i in ids),
            *(self.lookup(tenant, resource_type, attribute, key) for attribute, key in terms),
            *(
                self.lookup_prefix(tenant, resource_type, attribute, prefix, limit=limit)
                for attribute, prefix in prefixes
            ),
        )
        unique: dict[str, StoredResource] = {}
        for found in results:
            for stored in found:
                unique.setdefault(stored.id, stored)
        return list(unique.values())[: limit + 1]

    @abc.abstractmethod
    async def scan(
        self, tenant: str, resource_type: ResourceKind, *, cursor: str | None = None, limit: int = 100
    ) -> Page:
        """Up to ``limit`` resources after ``cursor``, in a stable order (members not included)."""

    @abc.abstractmethod
    async def add_members(
        self,
        tenant: str,
        group_id: str,
        members: Sequence[Member],
        *,
        event: MembershipEventIntent | None = None,
    ) -> None:
        """Add members to a group, with a ``group.member_added`` event per member that was not in
        it yet (rule 10). Raises ResourceNotFound (group), UnknownMembers."""

    @abc.abstractmethod
    async def remove_members(
        self,
        tenant: str,
        group_id: str,
        member_ids: Sequence[str],
        *,
        event: MembershipEventIntent | None = None,
    ) -> None:
        """Remove members from a group, with a ``group.member_removed`` event per member that was
        in it; absent ones are ignored. Raises ResourceNotFound (group)."""

    @abc.abstractmethod
    async def read_events(self, tenant: str, *, after: str | None, before: int, limit: int) -> list[StoredEvent]:
        """The tenant's committed events in feed order (ascending ``position``): those after
        ``after`` (all when None), stamped before ``before`` (microseconds since the epoch), at
        most ``limit`` (fewer does not mean there are no more). One storage query."""

    @abc.abstractmethod
    async def purge_events(self, tenant: str, *, older_than: int) -> int:
        """Delete the tenant's events stamped before ``older_than`` (microseconds since the
        epoch); returns how many were deleted."""

    @abc.abstractmethod
    async def delete_tenant(self, tenant: str) -> None:
        """Remove everything stored for a tenant, its events included."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""


class EntityTooLarge(StoreError):
    """The resource does not fit the storage's limits (Azure Table entity: 1 MiB, 252 properties)."""


class TooManyGroups(StoreError):
    """A resource may be a direct member of at most 200 groups (``docs/table-layout.md``)."""
