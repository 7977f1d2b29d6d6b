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
  the ``m_{group}`` flag onto the member entity, which fails if the member does not exist.

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
import functools
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableServiceClient

from scim.core.schema import RESOURCE_TYPES
from scim.store import check_members_allowed, dedupe_members, keys, new_id, utc_now
from scim.store.azure_client import (
    _FILTER_PARTITION,
    _TIMEOUT,
    SUBMIT_ATTEMPTS,
    _budgeted,
    _io,
    _remaining,
    service_client,
)
from scim.store.azure_errors import store_error
from scim.store.base import (
    DirectoryStore,
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
from scim.store.directory_members import MEMBERS_PER_TRANSACTION, _DirectoryMembers
from scim.store.directory_reads import MAX_PAGE, _first_rows
from scim.store.entities import (
    _doc_from,
    _etag,
    _groups,
    _live_flags,
    _resource_entity,
    _stored,
    _terms_from,
    _terms_json,
    _version,
)
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
from scim.store.transactions import submit_transaction

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


class TableStore(_DirectoryMembers, DirectoryStore):
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

    async def _submit(self, ops: Sequence[_Op]) -> Sequence[Mapping[str, Any]]:
        """One entity-group transaction; a failed one raises :class:`_OpFailed` naming the operation.

        A transaction whose request or response was lost (connection refused or reset, read
        timeout: azure-core does not retry a POST for those) is sent again, at most
        :data:`SUBMIT_ATTEMPTS` times with back-off, inside the operation's budget. Sending one
        twice is safe: every transaction of this store either is idempotent (membership upserts,
        flag merges) or fails on its first operation if the earlier attempt committed, and the
        caller recognises that (``_OpFailed.retried``): the insert of a fresh resource id (409,
        see :meth:`create`), an ETag-guarded write of the resource (412/404: read again).
        """
        retried = False
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                return await _io(lambda: self._send(ops))
            except _OpFailed as failed:
                failed.retried = retried
                raise
            except StoreUnavailable as exc:
                delay = 0.2 * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
                lost = isinstance(exc.__cause__, (ServiceRequestError, ServiceResponseError))
                if not lost or attempt == SUBMIT_ATTEMPTS or _remaining() <= delay:
                    raise
                retried = True
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _send(self, ops: Sequence[_Op]) -> Sequence[Mapping[str, Any]]:
        if len(ops) == 1 and ops[0].kind == "update":
            # One update (a PATCH that moves no index row: Entra's disable): the same atomic,
            # guarded write without a $batch envelope, whose multipart encoding costs the most CPU.
            try:
                return [dict(await self._table.update_entity(ops[0].entity, **ops[0].options, **_TIMEOUT))]
            except HttpResponseError as exc:
                raise _OpFailed(ops[0], store_error(exc, ops[0]), exc.status_code) from exc
        try:
            return await submit_transaction(self._table, [op.as_tuple() for op in ops], **_TIMEOUT)
        except TableTransactionError as exc:
            op = ops[exc.index] if 0 <= exc.index < len(ops) else None
            raise _OpFailed(op, store_error(exc, op), exc.status_code) from exc

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
    ) -> StoredResource:
        """RFC 7644 §3.3: one transaction with the resource, its index rows and the members that fit.

        A taken unique key fails the transaction (UniquenessViolation); so does an unknown member
        (UnknownMembers, listing every unknown id). Members beyond the transaction's 100
        operations are added with :meth:`add_members`; if that fails the new group is deleted
        again, so the create still happens entirely or not at all (when storage fails so that
        the delete fails too, the group stays, complete with its index rows and consistent
        memberships of the members added so far: the client's retry gets 409 and, like after a
        lost response, finds it by ``displayName`` and PATCHes its members).

        The transaction's first operation inserts a fresh id: if it fails with 409, an earlier
        attempt of this same transaction (sent again after a lost response, by :meth:`_submit`
        or azure-core) committed, and the create succeeded.
        """
        check_members_allowed(resource_type, members)
        self._check_terms(resource_type, index)
        await self._ready()
        pk = keys.partition_key(tenant)
        wanted = dedupe_members(members)
        id, now = new_id(), utc_now()
        entity = _resource_entity(pk, resource_type, id, doc, index, now, now, {})
        ops = [_Op("create", entity, role="resource"), *_index_ops(pk, resource_type, id, index)]
        room = max(0, (MAX_TRANSACTION_OPS - len(ops)) // 2)
        flag = keys.group_flag(id) or ""
        ops += [op for m in wanted[:room] for op in _link_ops(pk, id, flag, m, now)]
        try:
            version = (await self._submit(ops))[0]["etag"]
        except _OpFailed as failed:
            if isinstance(failed.error, UnknownMembers):
                raise await self._unknown(pk, wanted, failed.op) from None
            if not (failed.op is ops[0] and failed.status == 409):
                raise failed.error from None
            version = await self._created_before(pk, entity, failed.error)
        if wanted[room:]:
            version = await self._add_rest(tenant, pk, id, wanted[room:])
        group_members = tuple(sorted(wanted, key=lambda m: m.value)) if resource_type == "Group" else None
        return _stored(resource_type, entity, version, group_members)

    async def _created_before(self, pk: str, entity: Mapping[str, Any], error: StoreError) -> str:
        """The version of ``entity`` if an earlier attempt of its create committed it, else ``error``."""
        stored = await self._read_or_none(pk, entity["RowKey"])
        if stored is None or stored.get("created") != entity["created"] or _doc_from(stored) != _doc_from(entity):
            raise error
        return _etag(stored)

    async def _add_rest(self, tenant: str, pk: str, group_id: str, rest: Sequence[Member]) -> str:
        """Add the members that did not fit the create transaction; undo the create on failure."""
        try:
            await self.add_members(tenant, group_id, rest)
        except Exception:
            with contextlib.suppress(StoreError):
                await self.delete(tenant, "Group", group_id)
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
    ) -> StoredResource:
        """RFC 7644 §3.5.1: point read + one ETag-guarded transaction (entity REPLACE, index rows moved).

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
            if len(index_ops) >= MAX_TRANSACTION_OPS and old_terms.multi - index.multi:
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
            entity = _resource_entity(
                pk, resource_type, id, doc, index, current["created"], utc_now(), _live_flags(current)
            )
            guard = _Op("update", entity, {"mode": UpdateMode.REPLACE, **_guarded(etag)}, "guard")
            try:
                results = await self._submit([guard, *index_ops])
            except _OpFailed as failed:
                if not (isinstance(failed.error, VersionMismatch) and failed.op is guard):
                    raise failed.error from None
                if failed.retried:  # resent after a lost answer: did the first one commit?
                    now = await self._read(pk, rk)
                    if _doc_from(now) == doc and _terms_from(now) == index:
                        return _stored(resource_type, now, _etag(now))
                if if_version is not None:
                    raise failed.error from None
                continue
            return _stored(resource_type, entity, results[0]["etag"])
        raise StoreUnavailable(f"{resource_type} {id} kept changing; try again")

    @_budgeted
    async def delete(self, tenant: str, resource_type: ResourceKind, id: str, *, if_version: str | None = None) -> None:
        """RFC 7644 §3.6 and rule 8: the resource, its index rows and every membership naming it.

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
                await self._delete_once(pk, resource_type, id, current)
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

    async def _delete_once(self, pk: str, resource_type: ResourceKind, id: str, current: Any) -> None:
        rk = keys.resource_key(resource_type, id)
        now = utc_now()
        units: list[tuple[str | None, list[_Op]]] = [
            (keys.group_flag(group_id), _parent_ops(pk, group_id, id, now)) for group_id in _groups(current)
        ]
        if resource_type == "Group":
            flag = keys.group_flag(id) or ""
            units += [(None, _unlink_ops(pk, id, flag, m, now)) for m in await self._members(pk, id)]
        terms = _terms_from(current)
        etag, committed = _etag(current), False
        try:
            while len(_index_ops(pk, resource_type, id, _NO_TERMS, terms)) > FINAL_INDEX_OPS and terms.multi:
                etag, terms = await self._shed(pk, resource_type, id, etag, terms, _NO_TERMS)
                committed = True
            index_ops = _index_ops(pk, resource_type, id, _NO_TERMS, terms)
            fit = max(0, (MAX_TRANSACTION_OPS - 1 - len(index_ops)) // 2)
            split = max(0, len(units) - fit)
            for batch in _batches(units[:split], MEMBERS_PER_TRANSACTION):
                own_flags = {flag: False for flag, _ in batch if flag}
                guard = _merge(_row(pk, rk, lastModified=now, **own_flags), "guard", etag=etag)
                results = await self._submit([guard, *(op for _, ops in batch for op in ops)])
                etag, committed = results[0]["etag"], True
            final = _delete(pk, rk, "guard", etag=etag)
            await self._submit([final, *index_ops, *(op for _, ops in units[split:] for op in ops)])
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
