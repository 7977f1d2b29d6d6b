"""Per-tenant digest state: the watermark (failures up to it were emailed) and a lease.

One row per tenant in the ``{prefix}tenants`` table (PartitionKey ``notify``, RowKey the
tenant). Every change is ETag-guarded, so of two timer runs (or two instances) only one
holds a tenant's lease at a time, and the watermark only moves forward from the state the
lease holder read: a digest is never sent twice in the normal path.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from scim.provisioning_log import format_time, parse_time

__all__ = ["NotifyState", "NotifyStateStore"]

_PARTITION = "notify"


@dataclass(frozen=True)
class NotifyState:
    """A tenant's state as the lease holder read it."""

    tenant: str
    watermark: datetime | None
    etag: str
    credential_alert_at: datetime | None = None


class NotifyStateStore:
    """Leases and watermarks of failure digests (see the module docstring)."""

    def __init__(self, service: Any, prefix: str) -> None:
        self._service = service
        self._table = service.get_table_client(f"{prefix}tenants")

    async def acquire(self, tenant: str, owner: str, now: datetime, lease: timedelta) -> NotifyState | None:
        """Take the tenant's lease until ``now + lease``; None if another run holds it."""
        until = format_time(now + lease)
        try:
            current = await self._table.get_entity(_PARTITION, tenant)
        except ResourceNotFoundError:
            row = {
                "PartitionKey": _PARTITION,
                "RowKey": tenant,
                "watermark": "",
                "leaseUntil": until,
                "leaseOwner": owner,
            }
            try:
                created = await self._table.create_entity(row)
            except ResourceExistsError:
                return None
            return NotifyState(tenant, None, created["etag"])
        lease_until = current.get("leaseUntil") or ""
        if lease_until and parse_time(lease_until) > now and current.get("leaseOwner") != owner:
            return None
        row = {"PartitionKey": _PARTITION, "RowKey": tenant, "leaseUntil": until, "leaseOwner": owner}
        try:
            updated = await self._table.update_entity(
                row, mode=UpdateMode.MERGE, etag=current.metadata["etag"], match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        watermark = current.get("watermark") or ""
        alerted = current.get("credentialAlertAt") or ""
        return NotifyState(
            tenant,
            parse_time(watermark) if watermark else None,
            updated["etag"],
            parse_time(alerted) if alerted else None,
        )

    async def release(
        self, state: NotifyState, watermark: datetime | None, *, credential_alert_at: datetime | None = None
    ) -> bool:
        """Give the lease back, moving the watermark to ``watermark`` if given (and recording when
        a credential alert was sent, for its rate limit); False if the lease was lost."""
        row: dict[str, Any] = {"PartitionKey": _PARTITION, "RowKey": state.tenant, "leaseUntil": "", "leaseOwner": ""}
        if watermark is not None:
            row["watermark"] = format_time(watermark)
        if credential_alert_at is not None:
            row["credentialAlertAt"] = format_time(credential_alert_at)
        try:
            await self._table.update_entity(
                row, mode=UpdateMode.MERGE, etag=state.etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    async def forget(self, tenant: str) -> None:
        """Remove a deleted tenant's state (nothing to do if there is none)."""
        with contextlib.suppress(ResourceNotFoundError):
            await self._table.delete_entity(_PARTITION, tenant)

    async def exists(self, tenant: str) -> bool:
        """Whether the tenant has digest state (one point read; False if the table is missing)."""
        try:
            await self._table.get_entity(_PARTITION, tenant, select=["RowKey"])
        except ResourceNotFoundError:
            return False
        return True
