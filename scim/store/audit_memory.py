"""The audit trail in process memory (tests, local runs): the double of
:class:`~scim.store.audit_tables.TableAuditTrail`, with its behaviour.

Per tenant, the entries under their keys (:func:`scim.portal.audit.entry_key`) in a sorted list,
read as the Table's range queries read a partition.
"""

from __future__ import annotations

import bisect
from datetime import datetime

from scim.portal.audit import (
    AuditEntry,
    AuditPage,
    AuditTrail,
    check_cursor,
    entry_key,
    older_than_bound,
    page_limit,
)
from scim.tenants import validate_tenant_name

__all__ = ["MemoryAuditTrail"]


class MemoryAuditTrail(AuditTrail):
    """Entries by tenant, in key order (newest first)."""

    def __init__(self) -> None:
        self._keys: dict[str, list[str]] = {}
        self._entries: dict[str, dict[str, AuditEntry]] = {}

    async def record(self, entry: AuditEntry) -> None:
        key = entry_key(entry)
        bisect.insort(self._keys.setdefault(entry.tenant, []), key)
        self._entries.setdefault(entry.tenant, {})[key] = entry

    async def page(self, tenant: str, limit: int = 50, cursor: str | None = None) -> AuditPage:
        validate_tenant_name(tenant)
        limit = page_limit(limit)
        after = check_cursor(cursor)
        keys = self._keys.get(tenant, [])
        start = 0 if after is None else bisect.bisect_right(keys, after)
        chosen = keys[start : start + limit + 1]
        entries = [self._entries[tenant][key] for key in chosen[:limit]]
        return AuditPage(entries, chosen[limit - 1] if len(chosen) > limit else None)

    async def purge(self, tenant: str) -> None:
        validate_tenant_name(tenant)
        self._keys.pop(tenant, None)
        self._entries.pop(tenant, None)

    async def purge_older(self, tenant: str, older_than: datetime) -> int:
        validate_tenant_name(tenant)
        keys = self._keys.get(tenant, [])
        start = bisect.bisect_right(keys, older_than_bound(older_than))
        gone = keys[start:]
        del keys[start:]
        for key in gone:
            del self._entries[tenant][key]
        return len(gone)
