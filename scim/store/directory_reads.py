"""The directory's reads: point reads, and the index plans of lookups, filters and scans.

:class:`_DirectoryReads` is the reading half of :class:`scim.store.tables.TableStore`: point
reads of one row, range queries on a RowKey prefix, and the ``lookup``/``lookup_prefix``/
``find``/``scan`` operations of :class:`~scim.store.base.DirectoryStore`, with the storage
round trips of ``docs/table-layout.md`` ("Operations and their storage round trips"): a unique
term is a point read of its ``U|``/``G|`` row, any other term or prefix a range query on its
``X|`` rows, and the candidates are point-read (up to :data:`POINT_READS`) or read by pages of
resource rows. Query filters and pages: learn.microsoft.com "Querying tables and entities"
(at most 1,000 entities a page, with a continuation token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from scim.store import keys
from scim.store.azure_client import _TIMEOUT, _budgeted, _io, _TableOwner
from scim.store.base import Member, Page, ResourceKind, ResourceNotFound, StoredResource, UnknownMembers
from scim.store.entities import _etag, _stored
from scim.store.operations import _Op

MAX_PAGE = 1000  # largest $top
_FILTER_RANGE = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
_FILTER_AFTER = "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi"
_FILTER_SPAN = "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi"
POINT_READS = 8
"""Candidates of a lookup read by concurrent point reads (one storage call each); more are read
by pages of resource rows (:meth:`_DirectoryReads._resources`), so that a lookup costs O(pages)."""
SPARSE_PAGE_HITS = 8
"""A page of resource rows holding fewer wanted candidates than this ends the paging: the rest
(scattered over a large tenant) are point-read instead."""
CONVERT_SLICE = 0.001
"""Seconds of converting rows into resources (about 30 µs a row of 20 emails) before handing the
event loop back, so that a page of 1,000 does not hold up every other tenant's requests."""

T = TypeVar("T")


class _DirectoryReads(_TableOwner):
    """Reads of the ``{prefix}directory`` table; :class:`~scim.store.tables.TableStore` sets
    ``_unique`` (the attributes indexed as unique, which :meth:`lookup` reads by point reads)."""

    _unique: Mapping[str, frozenset[str]]

    async def _read(self, pk: str, rk: str, select: list[str] | None = None) -> Any:
        return await _io(lambda: self._table.get_entity(pk, rk, select=select, **_TIMEOUT))

    async def _read_or_none(self, pk: str, rk: str, select: list[str] | None = None) -> Any:
        try:
            return await self._read(pk, rk, select)
        except ResourceNotFound:
            return None

    async def _range(self, pk: str, prefix: str, select: list[str] | None = None) -> list[Any]:
        """Every row whose RowKey starts with ``prefix`` (one query; pages of up to 1,000)."""
        lo, hi = keys.prefix_range(prefix)

        async def query() -> list[Any]:
            pager = self._table.query_entities(
                _FILTER_RANGE, parameters={"pk": pk, "lo": lo, "hi": hi}, select=select, **_TIMEOUT
            )
            return [row async for row in pager]

        return await _io(query)

    async def _members(self, pk: str, group_id: str) -> tuple[Member, ...]:
        prefix = keys.membership_prefix(group_id)
        rows = await self._range(pk, prefix, select=["RowKey", "type", "display"])
        return tuple(
            Member(keys.id_from_key(row["RowKey"], prefix), row.get("type") or "User", row.get("display") or None)
            for row in rows
        )

    async def _unknown(self, pk: str, members: Sequence[Member], failed: _Op | None) -> UnknownMembers:
        """Which of ``members`` do not exist (error path only: one concurrent point read each)."""
        found = await asyncio.gather(
            *(self._read_or_none(pk, keys.resource_key(m.type, m.value), ["RowKey"]) for m in members)
        )
        ids = [m.value for m, entity in zip(members, found, strict=True) if entity is None]
        if not ids and failed is not None:
            ids = [failed.subject]
        return UnknownMembers(ids)

    # ---- DirectoryStore ----

    @_budgeted
    async def lookup(self, tenant: str, resource_type: ResourceKind, attribute: str, key: str) -> list[StoredResource]:
        """RFC 7644 §3.4.2.2 ``eq`` on an indexed attribute (Entra's ``userName eq``, ``externalId eq``).

        Unique attribute: point read of ``U|{attr}|{key}`` then of the resource (2 round trips).
        Otherwise: range query on ``X|U|{attr}|{key}|`` then the candidates (:meth:`_resources`).
        """
        await self._ready()
        pk = keys.partition_key(tenant)
        wanted = await self._candidate_ids(pk, resource_type, (), ((attribute, key),), (), None)
        return await self._resources(pk, resource_type, wanted)

    @_budgeted
    async def lookup_prefix(
        self, tenant: str, resource_type: ResourceKind, attribute: str, prefix: str, *, limit: int
    ) -> list[StoredResource]:
        """RFC 7644 §3.4.2.2 ``sw`` on an indexed attribute: range queries on the index rows
        (verbatim keys, and hashed long keys for the caller to re-check), then the candidates
        (:meth:`_resources`)."""
        await self._ready()
        pk = keys.partition_key(tenant)
        wanted = await self._candidate_ids(pk, resource_type, (), (), ((attribute, prefix),), limit)
        return await self._resources(pk, resource_type, wanted)

    @_budgeted
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
        """A filter's index plan as one operation, within one :data:`STORAGE_BUDGET`: the index
        queries of every term and prefix run concurrently, then the candidates are read
        (:meth:`_resources`). ``userName eq``: 2 storage calls; ``userName sw ""`` on 300
        users: 2 index range queries + 1 page of user rows."""
        await self._ready()
        pk = keys.partition_key(tenant)
        wanted = await self._candidate_ids(pk, resource_type, tuple(ids), tuple(terms), tuple(prefixes), limit)
        return await self._resources(pk, resource_type, wanted)

    async def _candidate_ids(
        self,
        pk: str,
        resource_type: ResourceKind,
        ids: Sequence[str],
        terms: Sequence[tuple[str, str]],
        prefixes: Sequence[tuple[str, str]],
        limit: int | None,
    ) -> list[str]:
        """The ids the index rows of ``terms`` and ``prefixes`` name, after ``ids``: each unique
        term one point read, each other term or prefix one range query per 1,000 rows; at most
        ``limit + 1`` ids (all of them when ``limit`` is None)."""
        unique = self._unique.get(resource_type, frozenset())
        cap = None if limit is None else limit + 1

        async def by_term(attribute: str, key: str) -> list[str]:
            if attribute in unique:
                row = await self._read_or_none(pk, keys.unique_key(resource_type, attribute, key), ["id"])
                return [row["id"]] if row is not None else []
            prefix = keys.multi_prefix(resource_type, attribute, key)
            return [keys.id_from_key(r["RowKey"], prefix) for r in await self._index_rows(pk, prefix, ["RowKey"], cap)]

        async def by_prefix(row_prefix: str, is_unique: bool) -> list[str]:
            rows = await self._index_rows(pk, row_prefix, ["RowKey", "id"] if is_unique else ["RowKey"], cap)
            if is_unique:
                return [row["id"] for row in rows]
            return [keys.decode_value(row["RowKey"].rsplit(keys.SEPARATOR, 1)[1]) for row in rows]

        queries = [by_term(attribute, key) for attribute, key in terms]
        for attribute, prefix in prefixes:
            is_unique = attribute in unique
            verbatim, hashed = keys.index_prefixes(resource_type, attribute, prefix, is_unique)
            queries.append(by_prefix(verbatim, is_unique))
            if not hashed.startswith(verbatim):  # sw "": the verbatim range holds the hashed rows too
                queries.append(by_prefix(hashed, is_unique))
        found: dict[str, None] = dict.fromkeys(ids)
        for result in await _gather(queries):
            found.update(dict.fromkeys(result))
        wanted = list(found)
        return wanted if cap is None else wanted[:cap]

    async def _index_rows(self, pk: str, prefix: str, select: list[str], cap: int | None) -> list[Any]:
        """Rows whose RowKey starts with ``prefix``, at most ``cap`` (one storage call per 1,000)."""
        lo, hi = keys.prefix_range(prefix)

        async def query() -> list[Any]:
            rows: list[Any] = []
            pager = self._table.query_entities(
                _FILTER_RANGE,
                parameters={"pk": pk, "lo": lo, "hi": hi},
                select=select,
                results_per_page=MAX_PAGE,
                **_TIMEOUT,
            )
            async for row in pager:
                rows.append(row)
                if cap is not None and len(rows) >= cap:
                    break
            return rows

        return await _io(query)

    async def _resources(self, pk: str, resource_type: ResourceKind, ids: Sequence[str]) -> list[StoredResource]:
        """The resources of ``ids`` that exist, in storage calls O(pages), not O(ids).

        Up to :data:`POINT_READS` ids: concurrent point reads (Entra's lookups: one). More:
        pages of the ``u|``/``g|`` rows from the lowest wanted RowKey to the highest, keeping
        the wanted ones, until all are found; when a page holds fewer than
        :data:`SPARSE_PAGE_HITS` of them (a few matches scattered over a large tenant), the
        rest are point-read instead.
        """
        wanted = sorted({keys.resource_key(resource_type, i) for i in ids})
        if len(wanted) <= POINT_READS:
            return await self._point_reads(pk, resource_type, wanted)
        remaining = set(wanted)
        found: list[Any] = []
        pager: Any = self._table.query_entities(
            _FILTER_SPAN,
            parameters={"pk": pk, "lo": wanted[0], "hi": wanted[-1]},
            results_per_page=MAX_PAGE,
            **_TIMEOUT,
        ).by_page()
        while remaining:
            rows = await _io(lambda: _next_page(pager))
            if rows is None:
                break
            hits = [row for row in rows if row["RowKey"] in remaining]
            found += hits
            remaining.difference_update(row["RowKey"] for row in hits)
            if pager.continuation_token is None:
                break
            if rows and len(hits) < SPARSE_PAGE_HITS and remaining:
                rest = await self._point_reads(pk, resource_type, sorted(remaining))
                return await _converted(resource_type, found) + rest
        return await _converted(resource_type, found)

    async def _point_reads(self, pk: str, resource_type: ResourceKind, row_keys: Sequence[str]) -> list[StoredResource]:
        found = await _gather([self._read_or_none(pk, rk) for rk in row_keys])
        return [_stored(resource_type, e, _etag(e)) for e in found if e is not None]

    @_budgeted
    async def scan(
        self, tenant: str, resource_type: ResourceKind, *, cursor: str | None = None, limit: int = 100
    ) -> Page:
        """One page of ``u|``/``g|`` rows in RowKey order (RFC 7644 §3.4.2.4); ``cursor`` is the last RowKey's id part."""
        if limit < 1:
            raise ValueError("limit must be positive")
        await self._ready()
        prefix = keys.resource_prefix(resource_type)
        lo, hi = keys.prefix_range(prefix)
        params = {"pk": keys.partition_key(tenant), "lo": prefix + cursor if cursor else lo, "hi": hi}
        pager: Any = self._table.query_entities(
            _FILTER_AFTER, parameters=params, results_per_page=min(limit, MAX_PAGE), **_TIMEOUT
        ).by_page()
        rows = await _io(lambda: _first_rows(pager))
        more = bool(rows) and pager.continuation_token is not None
        next_cursor = rows[-1]["RowKey"][len(prefix) :] if more else None
        return Page(await _converted(resource_type, rows), next_cursor)


async def _converted(resource_type: ResourceKind, rows: Sequence[Any]) -> list[StoredResource]:
    """``rows`` as resources, handing the event loop back every :data:`CONVERT_SLICE` seconds."""
    resources: list[StoredResource] = []
    started = time.perf_counter()
    for row in rows:
        resources.append(_stored(resource_type, row, _etag(row)))
        if time.perf_counter() - started >= CONVERT_SLICE:
            await asyncio.sleep(0)
            started = time.perf_counter()
    return resources


async def _next_page(pager: AsyncIterator[Any]) -> list[Any] | None:
    """The rows of the next page (one storage call), or None after the last one."""
    try:
        page = await pager.__anext__()
    except StopAsyncIteration:
        return None
    return [row async for row in page]


async def _gather(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run storage calls concurrently (each task inherits the operation's deadline); the first
    failure is raised once all have ended, so none is left running past the operation."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    results: list[T] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(outcome)
    return results


async def _first_rows(pager: AsyncIterator[Any]) -> list[Any]:
    """The rows of the first non-empty page (the service may return an empty page with a continuation)."""
    async for page in pager:
        rows = [row async for row in page]
        if rows or getattr(pager, "continuation_token", None) is None:
            return rows
    return []
