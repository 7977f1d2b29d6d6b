"""The :class:`DirectoryStore` on Azure Table Storage (or Azurite), per ``docs/table-layout.md``.

One partition per tenant holds its users (``u|{id}``), groups (``g|{id}``), memberships
(``m|{group}|{member}``) and index rows (``U|``/``G|`` unique, ``X|`` non-unique). Every
multi-entity change is one entity-group transaction, so it happens entirely or not at all
(rule 4 of :mod:`scim.store.base`):

- create: the resource + its index rows (+ memberships) in one transaction; a taken unique
  key fails the insert of its index row, hence the whole transaction (RFC 7644 §3.3, 409);
- replace/delete: a point read, then one ETag-guarded transaction (RFC 7644 §3.5.1, §3.6;
  §3.14 versions); the version of a resource is its entity's ETag;
- member PATCH (RFC 7644 §3.5.2, how Entra adds and removes group members one at a time):
  ⌈k/49⌉ transactions that never read the member list: a merge on the group (existence
  check, new version), then per member an upsert/delete of the membership row and a merge of
  the ``m_{group}`` flag onto the member entity, which fails if the member does not exist;
- events (issue 12, ``docs/events.md``): a create, replace or delete given an
  :class:`~scim.store.base.EventIntent` inserts the event's ``e|{stamp}|{id}`` row in its
  (final) transaction, so the change and its event commit together or not at all. Every such
  transaction keeps one of its 100 operations free for it. The stamp is the commit time
  (:class:`~scim.store.event_timing.EventClock`), and the transaction is sent only within
  :data:`~scim.store.event_timing.MAX_SEND_DELAY` of it, with the service's server timeout
  (:mod:`scim.store.event_policy`), else built again with a fresh stamp (:meth:`TableStore._commit`).

Azure errors become store errors in one place, :func:`scim.store.azure_errors.store_error`.
The parts live beside it: the client and time budget (:mod:`scim.store.azure_client`), the
entity codecs (:mod:`scim.store.entities`), the transaction operations
(:mod:`scim.store.operations`), the reads and index plans (:mod:`scim.store.directory_reads`).

Faults (storage down, hanging, throttling, answers lost):

- every storage call is bounded in time (see "time bounds" below): a dead storage makes a
  call fail with :class:`StoreUnavailable` (the service answers 503 + Retry-After) within
  about 12 s when it hangs and under 1 s when it refuses, resets or answers 5xx; transient
  failures are retried with back-off inside that bound;
- a transaction whose answer was lost is sent again, and an earlier commit of it recognised
  (:meth:`TableStore._submit`), so the client gets the success it caused;
- operations that take several transactions (a group created with more members than one
  holds, member PATCHes of more than 49, deletes whose cleanup spans transactions) order them
  so that every prefix is a consistent directory (each transaction keeps memberships, member
  flags and index rows in step): a failure between two leaves no orphan and nothing visible
  that a deleted resource names, and repeating the request, as Entra does after a 503,
  completes it (``tests/test_faults.py`` fails each transaction in turn to check this).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableServiceClient

from scim.core.events import new_event_id
from scim.core.schema import RESOURCE_TYPES
from scim.store import check_members_allowed, dedupe_members, keys, new_id
from scim.store.azure_client import (
    _FILTER_PARTITION,
    _TIMEOUT,
    _budgeted,
    _io,
    service_client,
)
from scim.store.base import (
    DirectoryStore,
    EventIntent,
    IndexTerms,
    Member,
    ResourceKind,
    ResourceNotFound,
    StoredResource,
    StoreError,
    StoreUnavailable,
    UnknownMembers,
    VersionMismatch,
)
from scim.store.directory_commits import _Build, _DirectoryCommits
from scim.store.directory_events import _DirectoryEvents
from scim.store.directory_members import MEMBERS_PER_TRANSACTION, _DirectoryMembers
from scim.store.directory_reads import MAX_PAGE, _first_rows
from scim.store.entities import (
    _doc_from,
    _etag,
    _event_floor,
    _groups,
    _live_flags,
    _resource_entity,
    _stored,
    _terms_from,
    _terms_json,
    _version,
)
from scim.store.event_policy import directory_table_client
from scim.store.event_timing import EventClock, stamp_time
from scim.store.operations import (
    _NO_TERMS,
    MAX_ATTEMPTS,
    MAX_TRANSACTION_OPS,
    _batches,
    _delete,
    _guarded,
    _index_ops,
    _link_ops,
    _merge,
    _Op,
    _OpFailed,
    _parent_ops,
    _row,
    _unlink_ops,
)
from scim.store.tenant_registry import TableTenantRegistry

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    from scim.settings import Settings

__all__ = ["DEFAULT_UNIQUE_ATTRIBUTES", "TableStore"]

DEFAULT_UNIQUE_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    rtype.name: frozenset(rtype.unique) for rtype in RESOURCE_TYPES.values()
}
"""Attributes indexed as unique (``U|``/``G|`` rows), per :class:`~scim.store.base.IndexTerms`:
those the schema registry declares unique (:attr:`scim.core.schema.ResourceType.unique`, the one
place this is written; pure data, no protocol logic)."""

FINAL_INDEX_OPS = 60
"""Index rows a delete removes in its final transaction; a resource with more (the core bounds
indexed values, but older rows may exceed it) sheds the rest first (:meth:`TableStore._shed`)."""
RECENT_ENTITIES = 1024  # entities remembered per process for read-modify-write (about 1-4 KiB each)
EVENT_OPS = 1
"""Operations every resource write keeps free for its event row (``e|{stamp}|{id}``)."""


class TableStore(_DirectoryMembers, _DirectoryEvents, _DirectoryCommits, DirectoryStore):
    """Users, groups and memberships in the ``{prefix}directory`` table (``docs/table-layout.md``).

    Versions are derived from the entities' ETags, which every write, including a membership
    merge, changes. Create one per process (:meth:`from_settings`) and share it: it holds one
    HTTP connection pool, and remembers the entities it last read (:data:`RECENT_ENTITIES`) so
    that a read-modify-write (PATCH) whose ``if_version`` matches needs no second read: the
    write is ETag-guarded, so a stale memory only costs a retry, never a lost update.
    """

    def __init__(
        self,
        service: TableServiceClient,
        prefix: str = "scim",
        *,
        owns_client: bool = False,
        credential: AsyncTokenCredential | None = None,
        unique_attributes: Mapping[str, frozenset[str]] = DEFAULT_UNIQUE_ATTRIBUTES,
    ) -> None:
        super().__init__(service, f"{prefix}directory", owns_client=owns_client, credential=credential)
        self._table = directory_table_client(service, f"{prefix}directory")
        self._clock = EventClock()
        self._recent: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._prefix = prefix
        self._unique = unique_attributes

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        per_call_policies: Sequence[SansIOHTTPPolicy[Any, Any]] | None = None,
        **client_options: Any,
    ) -> TableStore:
        """A store on a new service client built from ``settings`` (see :func:`service_client`)."""
        service, credential = service_client(settings, per_call_policies=per_call_policies, **client_options)
        return cls(service, settings.table_prefix, owns_client=True, credential=credential)

    @property
    def service_client(self) -> TableServiceClient:
        """The shared service client (one connection pool per process), for the app's other tables."""
        return self._service

    def tenant_registry(self) -> TableTenantRegistry:
        """A :class:`TableTenantRegistry` sharing this store's client (closing it is this store's job)."""
        return TableTenantRegistry(self._service, self._prefix)

    def _remember(self, pk: str, rk: str, entity: Any) -> None:
        """Keep the last entities read (bounded LRU), for :meth:`replace` to skip its read."""
        self._recent[(pk, rk)] = entity
        self._recent.move_to_end((pk, rk))
        while len(self._recent) > RECENT_ENTITIES:
            self._recent.popitem(last=False)

    # ---- writes ----

    def _check_terms(self, resource_type: ResourceKind, index: IndexTerms) -> None:
        """Unique terms must be of the attributes :meth:`lookup` reads from the unique index."""
        extra = set(index.unique) - self._unique.get(resource_type, frozenset())
        if extra:
            raise ValueError(f"{resource_type} attributes {sorted(extra)} are not configured as unique")

    @_budgeted
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
        """RFC 7644 §3.3: one transaction with the resource, its index rows, the members that fit
        and the event.

        A taken unique key fails the transaction (UniquenessViolation); so does an unknown member
        (UnknownMembers, listing every unknown id). Members beyond the transaction's 100
        operations are added with :meth:`add_members`; if that fails the new group is deleted
        again (with ``event.undo``), so the create still happens entirely or not at all (when
        storage fails so that the delete fails too, the group stays, complete with its index
        rows, its event and consistent memberships of the members added so far: the client's
        retry gets 409 and, like after a lost response, finds it by ``displayName`` and PATCHes
        its members).

        The transaction's first operation inserts a fresh id: if it fails with 409, an earlier
        attempt of this same create (sent again after a lost response, by :meth:`_submit`,
        azure-core or :meth:`_commit`) committed, and the create succeeded.
        """
        check_members_allowed(resource_type, members)
        self._check_terms(resource_type, index)
        await self._ready()
        pk = keys.partition_key(tenant)
        wanted = dedupe_members(members)
        id, event_id = new_id(), new_event_id()
        index_ops = _index_ops(pk, resource_type, id, index)
        room = max(0, (MAX_TRANSACTION_OPS - EVENT_OPS - 1 - len(index_ops)) // 2)
        flag = keys.group_flag(id) or ""
        kind = event.resolve(dict) if event is not None else None  # a create has no previous document
        stamps: set[str] = set()

        def build(stamp: int) -> list[_Op]:
            now = stamp_time(stamp)
            stamps.add(now)
            entity = _resource_entity(
                pk, resource_type, id, doc, index, now, now, {}, f"{stamp:016d}" if kind else None
            )
            ops = [_Op("create", entity, role="resource"), *index_ops]
            ops += [op for m in wanted[:room] for op in _link_ops(pk, id, flag, m, now)]
            if event is not None and kind is not None:
                # No copy of ``doc``: _event_op serialises what render returns before anything else runs.
                after = StoredResource(resource_type, id, doc, now, now, "")
                ops.append(self._event_op(tenant, pk, event, kind, event_id, stamp, after))
            return ops

        entity: Mapping[str, Any]
        try:
            ops, results = await self._commit(build)
            entity, version = ops[0].entity, results[0]["etag"]
        except _OpFailed as failed:
            if isinstance(failed.error, UnknownMembers):
                raise await self._unknown(pk, wanted, failed.op) from None
            if not (failed.op is not None and failed.op.role == "resource" and failed.status == 409):
                raise failed.error from None
            entity = await self._created_before(pk, failed.op.entity, stamps, failed.error)
            version = _etag(entity)
        if wanted[room:]:
            version = await self._add_rest(tenant, pk, id, wanted[room:], event.undo if event else None)
        group_members = tuple(sorted(wanted, key=lambda m: m.value)) if resource_type == "Group" else None
        return _stored(resource_type, entity, version, group_members)

    async def _created_before(
        self, pk: str, entity: Mapping[str, Any], stamps: set[str], error: StoreError
    ) -> Mapping[str, Any]:
        """The stored ``entity`` if an earlier attempt of its create (stamped with one of
        ``stamps``) committed it, else ``error``."""
        stored: Mapping[str, Any] | None = await self._read_or_none(pk, entity["RowKey"])
        if stored is None or stored.get("created") not in stamps or _doc_from(stored) != _doc_from(entity):
            raise error
        return stored

    async def _add_rest(
        self, tenant: str, pk: str, group_id: str, rest: Sequence[Member], undo: EventIntent | None
    ) -> str:
        """Add the members that did not fit the create transaction; undo the create on failure."""
        try:
            await self.add_members(tenant, group_id, rest)
        except Exception:
            with contextlib.suppress(StoreError):
                await self.delete(tenant, "Group", group_id, event=undo)
            raise
        return _etag(await self._read(pk, keys.resource_key("Group", group_id), ["RowKey"]))

    @_budgeted
    async def get(self, tenant: str, resource_type: ResourceKind, id: str, *, members: bool = False) -> StoredResource:
        """RFC 7644 §3.4.1: one point read (``groups`` come from the ``m_*`` flags), plus a
        range query of ``m|{id}|`` for a group's members, run concurrently."""
        await self._ready()
        pk = keys.partition_key(tenant)
        rk = keys.resource_key(resource_type, id)
        if not (members and resource_type == "Group"):
            entity = await self._read(pk, rk)
            self._remember(pk, rk, entity)
            return _stored(resource_type, entity, _etag(entity))
        entity, group_members = await asyncio.gather(self._read(pk, rk), self._members(pk, id), return_exceptions=True)
        if isinstance(entity, BaseException):
            raise entity
        if isinstance(group_members, BaseException):
            raise group_members
        return _stored(resource_type, entity, _etag(entity), group_members)

    @_budgeted
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
        """RFC 7644 §3.5.1: point read + one ETag-guarded transaction (entity REPLACE, index rows
        moved, the event inserted).

        The REPLACE drops tombstoned group flags. Without ``if_version``, a concurrent change
        (typically a membership merge) makes it read and try again.
        """
        self._check_terms(resource_type, index)
        await self._ready()
        pk = keys.partition_key(tenant)
        rk = keys.resource_key(resource_type, id)
        remembered = self._recent.pop((pk, rk), None) if if_version is not None else None
        for _ in range(MAX_ATTEMPTS):
            if remembered is not None and _version(_etag(remembered)) == if_version:
                current, remembered = remembered, None
            else:
                current = await self._read(pk, rk)
            etag = _etag(current)
            if if_version is not None and if_version != _version(etag):
                raise VersionMismatch(id)
            old_terms = _terms_from(current)
            index_ops = _index_ops(pk, resource_type, id, index, old_terms)
            if len(index_ops) > MAX_TRANSACTION_OPS - EVENT_OPS - 1 and old_terms.multi - index.multi:
                # More index rows change than one transaction holds: shed old rows first (guarded), then retry.
                try:
                    etag, _ = await self._shed(pk, resource_type, id, etag, old_terms, index)
                except _OpFailed as failed:
                    if isinstance(failed.error, VersionMismatch) and if_version is None:
                        continue
                    raise failed.error from None
                if if_version is not None:
                    if_version = _version(etag)  # our own change
                continue
            # A fresh event id per attempt over a new read: the previous attempt may have committed
            # (then failed to recognise it: another change came between), and this is another change.
            build = self._replacement(tenant, pk, resource_type, id, doc, index, current, index_ops, event)
            try:
                ops, results = await self._commit(build, _event_floor(current))
            except _OpFailed as failed:
                if not (
                    isinstance(failed.error, VersionMismatch) and failed.op is not None and failed.op.role == "guard"
                ):
                    raise failed.error from None
                if failed.retried:  # sent again after a lost answer: did an earlier attempt commit?
                    now = await self._read(pk, rk)
                    if _doc_from(now) == doc and _terms_from(now) == index:
                        return _stored(resource_type, now, _etag(now))
                if if_version is not None:
                    raise failed.error from None
                continue
            return _stored(resource_type, ops[0].entity, results[0]["etag"])
        raise StoreUnavailable(f"{resource_type} {id} kept changing; try again")

    def _replacement(
        self,
        tenant: str,
        pk: str,
        resource_type: ResourceKind,
        id: str,
        doc: dict[str, Any],
        index: IndexTerms,
        current: Any,
        index_ops: list[_Op],
        event: EventIntent | None,
    ) -> _Build:
        """The builder of a replace's transaction over ``current``: the guarded REPLACE of the
        entity, the index rows moved and, when ``event`` resolves to a type, the event."""
        flags = _live_flags(current)
        kind = event.resolve(lambda: _doc_from(current)) if event is not None else None
        kept_stamp = current.get("eventStamp")
        event_id = new_event_id()  # the same for every stamp: only one of them can commit (ETag guard)

        def build(stamp: int) -> list[_Op]:
            now = stamp_time(stamp)
            entity = _resource_entity(
                pk,
                resource_type,
                id,
                doc,
                index,
                current["created"],
                now,
                flags,
                f"{stamp:016d}" if kind else kept_stamp,
            )
            ops = [_Op("update", entity, {"mode": UpdateMode.REPLACE, **_guarded(_etag(current))}, "guard"), *index_ops]
            if event is not None and kind is not None:
                # No copy of ``doc``: _event_op serialises what render returns before anything else runs.
                after = StoredResource(resource_type, id, doc, current["created"], now, "", _groups(entity))
                ops.append(self._event_op(tenant, pk, event, kind, event_id, stamp, after))
            return ops

        return build

    @_budgeted
    async def delete(
        self,
        tenant: str,
        resource_type: ResourceKind,
        id: str,
        *,
        if_version: str | None = None,
        event: EventIntent | None = None,
    ) -> None:
        """RFC 7644 §3.6 and rule 8: the resource, its index rows and every membership naming it,
        and the event (rendered from the resource as read) in the final transaction.

        A user in a few groups: point read + one transaction guarded by the user's ETag (which
        every membership merge changes, so a concurrent add makes the delete retry and clean
        it up too). A group also range-queries its members. Memberships that do not fit the
        final transaction go first, in transactions that also merge the resource (guarded).
        """
        await self._ready()
        pk = keys.partition_key(tenant)
        rk = keys.resource_key(resource_type, id)
        expected = if_version
        for _ in range(MAX_ATTEMPTS):
            current = await self._read(pk, rk)
            if expected is not None and expected != _version(_etag(current)):
                raise VersionMismatch(id)
            try:
                await self._delete_once(tenant, pk, resource_type, id, current, event)
                return
            except _OpFailed as failed:
                if failed.committed or failed.retried:
                    expected = None  # our own partial cleanup (or a lost-then-resent write) changed the version
                if (
                    failed.retried
                    and failed.op is not None
                    and failed.op.role == "guard"
                    and failed.op.kind == "delete"
                    and isinstance(failed.error, ResourceNotFound)
                ):
                    return  # the final transaction was resent after a lost response: it had committed
                if isinstance(failed.error, VersionMismatch) and failed.op is not None and failed.op.role == "guard":
                    if expected is not None:
                        raise failed.error from None
                    continue
                if isinstance(failed.error, (ResourceNotFound, UnknownMembers, VersionMismatch)):
                    continue  # a membership or member vanished concurrently: read again
                raise failed.error from None
        raise StoreUnavailable(f"{resource_type} {id} kept changing; try again")

    async def _delete_once(
        self,
        tenant: str,
        pk: str,
        resource_type: ResourceKind,
        id: str,
        current: Any,
        event: EventIntent | None,
    ) -> None:
        rk = keys.resource_key(resource_type, id)
        now = self._now()
        units: list[tuple[str | None, list[_Op]]] = [
            (keys.group_flag(group_id), _parent_ops(pk, group_id, id, now)) for group_id in _groups(current)
        ]
        if resource_type == "Group":
            flag = keys.group_flag(id) or ""
            units += [(None, _unlink_ops(pk, id, flag, m, now)) for m in await self._members(pk, id)]
        terms = _terms_from(current)
        etag, committed = _etag(current), False
        kind = event.resolve(lambda: _doc_from(current)) if event is not None else None
        last_state = dataclasses.replace(_stored(resource_type, current, ""), version="")
        event_id = new_event_id()
        try:
            while len(_index_ops(pk, resource_type, id, _NO_TERMS, terms)) > FINAL_INDEX_OPS and terms.multi:
                etag, terms = await self._shed(pk, resource_type, id, etag, terms, _NO_TERMS)
                committed = True
            index_ops = _index_ops(pk, resource_type, id, _NO_TERMS, terms)
            fit = max(0, (MAX_TRANSACTION_OPS - EVENT_OPS - 1 - len(index_ops)) // 2)
            split = max(0, len(units) - fit)
            for batch in _batches(units[:split], MEMBERS_PER_TRANSACTION):
                own_flags = {flag: False for flag, _ in batch if flag}
                guard = _merge(_row(pk, rk, lastModified=now, **own_flags), "guard", etag=etag)
                results = await self._submit([guard, *(op for _, ops in batch for op in ops)])
                etag, committed = results[0]["etag"], True
            final = [_delete(pk, rk, "guard", etag=etag), *index_ops, *(op for _, ops in units[split:] for op in ops)]

            def build(stamp: int) -> list[_Op]:
                if event is None or kind is None:
                    return final
                return [*final, self._event_op(tenant, pk, event, kind, event_id, stamp, last_state)]

            await self._commit(build, _event_floor(current))
        except _OpFailed as failed:
            failed.committed = committed
            raise

    async def _shed(
        self, pk: str, resource_type: ResourceKind, id: str, etag: str, terms: IndexTerms, keep: IndexTerms
    ) -> tuple[str, IndexTerms]:
        """One transaction guarded by the resource's ETag: delete up to 99 of its non-unique index
        rows that ``keep`` does not hold, and record the terms left on the resource, so that its
        recorded terms always name exactly its rows (a failure after it leaves a consistent
        resource, findable by fewer values until it is written again). Returns the new ETag and
        the terms left."""
        doomed = frozenset(sorted(terms.multi - keep.multi)[: MAX_TRANSACTION_OPS - 1])
        left = IndexTerms(unique=dict(terms.unique), multi=terms.multi - doomed)
        guard = _merge(_row(pk, keys.resource_key(resource_type, id), idx=_terms_json(left)), "guard", etag=etag)
        results = await self._submit([guard, *_index_ops(pk, resource_type, id, left, terms)])
        return str(results[0]["etag"]), left

    async def delete_tenant(self, tenant: str) -> None:
        """Delete every entity of the tenant's partition: pages of 1,000 RowKeys, each deleted by
        concurrent transactions of 100 deletes, until a query finds nothing.

        Resumable: a failure (raised once every transaction of the page has ended, none left in
        flight) leaves a partition that lacks some rows, and calling this again deletes the rest.
        """
        await self._ready()
        pk = keys.partition_key(tenant)
        stalls = 0
        while stalls < MAX_ATTEMPTS:
            pager: Any = self._table.query_entities(
                _FILTER_PARTITION, parameters={"pk": pk}, select=["RowKey"], results_per_page=MAX_PAGE, **_TIMEOUT
            ).by_page()
            rows = [row["RowKey"] for row in await _io(functools.partial(_first_rows, pager))]
            if not rows:
                return
            outcomes = await asyncio.gather(
                *(self._delete_rows(pk, b) for b in _batches(rows, MAX_TRANSACTION_OPS)), return_exceptions=True
            )
            failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failure is not None:
                raise failure
            stalls = 0 if any(outcomes) else stalls + 1
        raise StoreUnavailable(f"tenant {tenant} kept changing while being deleted")

    async def _delete_rows(self, pk: str, row_keys: Sequence[str]) -> bool:
        """One transaction of deletes; False if a row had gone already (the next query sees the rest)."""
        try:
            await self._submit([_delete(pk, rk) for rk in row_keys])
        except _OpFailed:
            return False
        return True
