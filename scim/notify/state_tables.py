"""The :class:`~scim.notify.state.NotifyStateStore` on Azure Table Storage (or Azurite).

One row per tenant in the ``{prefix}tenants`` table (PartitionKey ``notify``, RowKey the
tenant; ``docs/table-layout.md`` "Tables"): ``watermark``, ``credentialAlertAt``,
``leaseUntil`` and ``leaseOwner``. Every change after the insert is an update guarded by the
ETag of the row read (If-Match), so of two timer runs (or two instances) only one holds a
tenant's lease at a time.

Every operation goes through the directory store's time budget and error mapping
(:func:`scim.store.azure_client._budgeted`, :func:`~scim.store.azure_client._io`), so a dead
storage raises :class:`~scim.store.base.StoreUnavailable`, and the SDK's errors arrive as store
errors: a 404 as :class:`~scim.store.base.ResourceNotFound`, a 409 as
:class:`~scim.store.base.ResourceExists`, a 412 as :class:`~scim.store.base.VersionMismatch`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from azure.data.tables.aio import TableServiceClient

from scim.notify.state import (
    NotifyState,
    NotifyStateStore,
    _held_by_another,
    _lease_fields,
    _release_fields,
    _state,
)
from scim.store.azure_client import _budgeted, _io, _TableOwner, resend_if_lost
from scim.store.base import ResourceExists, ResourceNotFound, VersionMismatch
from scim.store.entities import _etag
from scim.store.operations import _guarded

__all__ = ["TableNotifyStateStore"]

_PARTITION = "notify"


class TableNotifyStateStore(_TableOwner, NotifyStateStore):
    """Leases and watermarks of failure digests in ``{prefix}tenants`` (see the module docstring),
    on a service client shared with the directory."""

    def __init__(self, service: TableServiceClient, prefix: str) -> None:
        super().__init__(service, f"{prefix}tenants")

    def _key(self, tenant: str, **fields: Any) -> dict[str, Any]:
        return {"PartitionKey": _PARTITION, "RowKey": tenant, **fields}

    async def _read(self, tenant: str, select: list[str] | None = None) -> Any:
        """The tenant's row (its ETag in ``metadata``), or None."""
        try:
            return await _io(lambda: self._table.get_entity(_PARTITION, tenant, select=select))
        except ResourceNotFound:
            return None

    @_budgeted
    async def acquire(self, tenant: str, owner: str, now: datetime, lease: timedelta) -> NotifyState | None:
        """Take the tenant's lease until ``now + lease``; None if another run holds it.

        A first acquire inserts the row (resent if its request or answer was lost); when the
        insert finds a row there (another run's, or this one's own whose answer was lost), the
        row is read again and judged as any other: only its lease holder may take it.
        """
        await self._ready()
        fields = _lease_fields(owner, now, lease)
        row = self._key(tenant, watermark="", **fields)
        for _ in range(2):
            current = await self._read(tenant)
            if current is not None:
                break
            try:
                created = await _io(lambda: resend_if_lost(lambda: self._table.create_entity(row)))
            except ResourceExists:
                continue
            return NotifyState(tenant, None, str(created["etag"]))
        if current is None or _held_by_another(current, owner, now):
            return None
        try:
            updated = await _io(
                lambda: self._table.update_entity(self._key(tenant, **fields), **_guarded(_etag(current)))
            )
        except (VersionMismatch, ResourceNotFound):
            return None
        return _state(tenant, current, str(updated["etag"]))

    @_budgeted
    async def release(
        self, state: NotifyState, watermark: datetime | None, *, credential_alert_at: datetime | None = None
    ) -> bool:
        """Give the lease back, moving the watermark to ``watermark`` if given (and recording when
        a credential alert was sent); False if the lease was lost (the row changed or went)."""
        row = self._key(state.tenant, **_release_fields(watermark, credential_alert_at))
        try:
            await _io(lambda: self._table.update_entity(row, **_guarded(state.etag)))
        except (VersionMismatch, ResourceNotFound):
            return False
        return True

    @_budgeted
    async def forget(self, tenant: str) -> None:
        """Remove a deleted tenant's state (the SDK's delete ignores a missing row or table)."""
        try:
            await _io(lambda: self._table.delete_entity(_PARTITION, tenant))
        except ResourceNotFound:
            return

    @_budgeted
    async def exists(self, tenant: str) -> bool:
        """Whether the tenant has digest state (one point read; False if the table is missing)."""
        return await self._read(tenant, ["RowKey"]) is not None
