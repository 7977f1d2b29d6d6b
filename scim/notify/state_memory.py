"""An in-memory :class:`~scim.notify.state.NotifyStateStore` (tests, the memory runtime).

It follows the rules of :mod:`scim.notify.state` with the Table row's properties in a dict per
tenant and a fresh ETag on every write. :meth:`MemoryNotifyStateStore.acquire` yields between
reading the state and writing it, as the Table implementation's two storage calls do, so that
concurrent acquires meet the same ETag guard there as on the table.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta
from typing import Any

from scim.notify.state import (
    NotifyState,
    NotifyStateStore,
    _held_by_another,
    _lease_fields,
    _release_fields,
    _state,
)

__all__ = ["MemoryNotifyStateStore"]


class MemoryNotifyStateStore(NotifyStateStore):
    """Leases and watermarks of failure digests in process memory (see the module docstring)."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}  # tenant -> properties, "etag" among them
        self._etags = itertools.count(1)

    def _write(self, tenant: str, fields: dict[str, Any], etag: str | None) -> str | None:
        """Merge ``fields`` into the tenant's row if its ETag is still ``etag`` (None: insert, if
        there is no row); the new ETag, or None when the guard failed."""
        current = self._rows.get(tenant)
        if (current is None) != (etag is None) or (current is not None and current["etag"] != etag):
            return None
        new_etag = f'W/"{next(self._etags)}"'
        self._rows[tenant] = {**(current or {"watermark": ""}), **fields, "etag": new_etag}
        return new_etag

    async def acquire(self, tenant: str, owner: str, now: datetime, lease: timedelta) -> NotifyState | None:
        """Take the tenant's lease until ``now + lease``; None if another run holds it."""
        current = dict(self._rows.get(tenant) or {})
        await asyncio.sleep(0)  # a read, then a guarded write, as on the table
        if not current:
            etag = self._write(tenant, _lease_fields(owner, now, lease), None)
            return None if etag is None else NotifyState(tenant, None, etag)
        if _held_by_another(current, owner, now):
            return None
        etag = self._write(tenant, _lease_fields(owner, now, lease), current["etag"])
        return None if etag is None else _state(tenant, current, etag)

    async def release(
        self, state: NotifyState, watermark: datetime | None, *, credential_alert_at: datetime | None = None
    ) -> bool:
        """Give the lease back, moving the watermark if given; False if the lease was lost."""
        return self._write(state.tenant, _release_fields(watermark, credential_alert_at), state.etag) is not None

    async def forget(self, tenant: str) -> None:
        """Remove a deleted tenant's state (nothing to do if there is none)."""
        self._rows.pop(tenant, None)

    async def exists(self, tenant: str) -> bool:
        """Whether the tenant has digest state."""
        return tenant in self._rows
