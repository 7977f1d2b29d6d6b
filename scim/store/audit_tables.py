"""The audit trail on Azure Table Storage: the ``{prefix}audit`` table, one partition per tenant.

PartitionKey = tenant name, RowKey = :func:`scim.portal.audit.entry_key` (``{inverted
time}|{inverted time recorded}|{8 hex}``: ascending keys are newest first), properties ``time``, ``actor``, ``action`` and
``detail`` (the detail as a JSON object) (``docs/table-layout.md``, "Tables").

:meth:`~TableAuditTrail.record` is one upsert (its key is fresh, so a lost answer sent again
writes the same row once more: :func:`~scim.store.azure_client.resend_if_lost`);
:meth:`~TableAuditTrail.page` one range query for ``limit + 1`` rows (the one more tells whether
a next page exists); purges delete by transactions of 100 rows. Every storage call goes through
the store's error mapping and time budget (:func:`scim.store.azure_client._io`); the table is
created on first use locally (in Azure, ``infra/`` creates it).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

from azure.data.tables.aio import TableServiceClient

from scim.portal.audit import (
    AuditEntry,
    AuditPage,
    AuditTrail,
    check_cursor,
    detail_from_json,
    detail_to_json,
    entry_key,
    older_than_bound,
    page_limit,
)
from scim.store.azure_client import _TIMEOUT, _budgeted, _io, _TableOwner, resend_if_lost
from scim.store.base import ResourceNotFound, StoreUnavailable
from scim.store.directory_reads import _next_page
from scim.store.transactions import Operation, submit_transaction
from scim.tenants import validate_tenant_name

__all__ = ["TableAuditTrail"]

_PAGE = 1000  # the most rows the Table service returns per query page
_MAX_ROWS = 100  # an entity-group transaction's limit
_FILTER_RANGE = "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high"
_PURGE_ROUNDS = 10
_END = "~"  # after every key (keys are digits, '|' and hex digits)


def _entry(tenant: str, row: Any) -> AuditEntry:
    return AuditEntry(
        tenant=tenant,
        actor=str(row.get("actor") or ""),
        action=str(row.get("action") or ""),
        detail=detail_from_json(row.get("detail")),
        time=str(row.get("time") or ""),
    )


class TableAuditTrail(_TableOwner, AuditTrail):
    """The ``{prefix}audit`` table (see the module docstring), on a service client shared with the directory."""

    def __init__(self, service: TableServiceClient, prefix: str) -> None:
        super().__init__(service, f"{prefix}audit")

    @_budgeted
    async def record(self, entry: AuditEntry) -> None:
        """One upsert of the entry's row."""
        await self._ready()
        row = {
            "PartitionKey": entry.tenant,
            "RowKey": entry_key(entry),
            "time": entry.time,
            "actor": entry.actor,
            "action": entry.action,
            "detail": detail_to_json(entry.detail),
        }
        await _io(lambda: resend_if_lost(lambda: self._table.upsert_entity(row, **_TIMEOUT)))

    async def _query(
        self, tenant: str, low: str, *, select: list[str] | None = None, per_page: int = _PAGE
    ) -> AsyncGenerator[list[Any], None]:
        """The tenant's rows with RowKey after ``low``, a page at a time (one storage call each,
        with its own time budget)."""
        validate_tenant_name(tenant)
        await self._ready()
        pages: Any = self._table.query_entities(
            _FILTER_RANGE,
            parameters={"pk": tenant, "low": low, "high": _END},
            select=select,
            results_per_page=per_page,
            **_TIMEOUT,
        ).by_page()
        while (rows := await _io(lambda: _next_page(pages))) is not None:
            yield rows

    async def page(self, tenant: str, limit: int = 50, cursor: str | None = None) -> AuditPage:
        """Entries newest first, ``limit`` at a time: one query for ``limit + 1`` rows."""
        limit = page_limit(limit)
        low = check_cursor(cursor) or ""
        rows: list[Any] = []
        query = self._query(tenant, low, per_page=min(limit + 1, _PAGE))
        async with contextlib.aclosing(query):
            async for chunk in query:
                rows += chunk
                if len(rows) > limit:
                    break
        entries = [_entry(tenant, row) for row in rows[:limit]]
        return AuditPage(entries, str(rows[limit - 1]["RowKey"]) if len(rows) > limit else None)

    async def purge(self, tenant: str) -> None:
        """Delete every row of the tenant's partition, until a query finds none (rows recorded
        meanwhile go too; the tenant delete checks again)."""
        for _ in range(_PURGE_ROUNDS):
            found, _ = await self._delete_after(tenant, "")
            if not found:
                return
        raise StoreUnavailable(f"the audit trail of {tenant} kept changing while being purged")

    async def purge_older(self, tenant: str, older_than: datetime) -> int:
        """Delete the tenant's rows of ``older_than`` or earlier; returns how many went."""
        return (await self._delete_after(tenant, older_than_bound(older_than)))[1]

    async def _delete_after(self, tenant: str, low: str) -> tuple[int, int]:
        """Delete the rows with RowKey after ``low``, by transactions of 100: how many were found
        and how many deleted. A transaction one of whose rows had gone already (a concurrent
        purge) deletes nothing and is not counted."""
        found = [str(row["RowKey"]) async for rows in self._query(tenant, low, select=["RowKey"]) for row in rows]
        deleted = 0
        for start in range(0, len(found), _MAX_ROWS):
            batch = found[start : start + _MAX_ROWS]
            ops: list[Operation] = [("delete", {"PartitionKey": tenant, "RowKey": key}, {}) for key in batch]
            try:
                await _io(functools.partial(submit_transaction, self._table, ops, **_TIMEOUT))
            except ResourceNotFound:
                continue
            deleted += len(batch)
        return len(found), deleted
