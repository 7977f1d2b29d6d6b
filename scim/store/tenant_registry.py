"""The tenant registry on Azure Table Storage: one row per tenant in ``{prefix}tenants``.

The row (PartitionKey ``tenant``, RowKey the tenant name) is the one of ``docs/table-layout.md``
("Tables"): ``created``, the credentials (``tokens``, ``oauthClients``, ``accessTokens``: JSON
arrays of :meth:`scim.credentials.TenantCredentials.to_properties`; ``tokenLifetime``),
``notifyTo``/``notifyEnabled``, and ``state`` = ``deleting`` with ``deletingSince`` once a delete
has begun. Rows written before tokens had ids hold one ``tokenHash``, read as one token and
emptied by the first credentials write. Every change after the insert is an
update guarded by the ETag of the row it read (learn.microsoft.com: "Update Entity", If-Match),
so concurrent operators never overwrite each other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import UpdateMode

from scim.credentials import TenantCredentials, regenerate
from scim.store import utc_now
from scim.store.azure_client import _FILTER_PARTITION, _TIMEOUT, _io, _TenantsTableOwner, resend_if_lost
from scim.store.base import ResourceNotFound, StoreUnavailable, VersionMismatch
from scim.store.entities import _etag
from scim.store.operations import MAX_ATTEMPTS, _guarded, _row
from scim.store.transactions import submit_transaction
from scim.tenants import (
    ACTIVE,
    DELETING,
    TenantDeleting,
    TenantExists,
    TenantInfo,
    TenantNotFound,
    TenantRegistry,
    new_token,
    validate_entra_tenant_id,
    validate_recipients,
    validate_tenant_name,
)

__all__ = ["TableTenantRegistry"]

_TENANT_PARTITION = "tenant"
_CREDENTIAL_COLUMNS = ["state", "created", "tokenHash", "tokens", "oauthClients", "accessTokens", "tokenLifetime"]


class TableTenantRegistry(_TenantsTableOwner, TenantRegistry):
    """Tenants in the ``{prefix}tenants`` table: PartitionKey ``tenant``, RowKey the name,
    properties ``created``, the credentials (``tokens``, ``oauthClients``, ``accessTokens``,
    ``tokenLifetime``), ``notifyTo``/``notifyEnabled`` and, once ``tenant delete`` has begun,
    ``state`` = ``deleting`` (and no credentials; a row without ``state`` is active). Every change after the insert is an update guarded by the
    ETag of the row it read (If-Match; 412 when the row changed in between)."""

    async def create(self, name: str, token: str | None = None, expires: int | None = None) -> str:
        """Insert the tenant row (atomic: an existing row makes the insert fail -> TenantExists)."""
        validate_tenant_name(name)
        await self._ready()
        token = token or new_token()
        first, _ = regenerate(TenantCredentials(), token, datetime.now(UTC), expires)
        entity = _row(_TENANT_PARTITION, name, created=utc_now(), **first.to_properties())

        sent = 0

        async def insert() -> None:
            nonlocal sent
            sent += 1
            try:
                await self._table.create_entity(entity, **_TIMEOUT)
            except ResourceExistsError:
                # After a resend, the row may be our own earlier insert: its tokens say so.
                if sent > 1:
                    stored = await self._table.get_entity(_TENANT_PARTITION, name, select=["tokens"], **_TIMEOUT)
                    if stored.get("tokens") == entity["tokens"]:
                        return
                raise TenantExists(name) from None

        await _io(lambda: resend_if_lost(insert))
        return token

    async def _read_row(self, name: str, select: list[str] | None = None) -> Any:
        """The tenant row (with its ETag in ``metadata``), or None."""
        try:
            return await _io(lambda: self._table.get_entity(_TENANT_PARTITION, name, select=select, **_TIMEOUT))
        except ResourceNotFound:
            return None

    async def _update_guarded(self, row: dict[str, Any], etag: str, mode: UpdateMode = UpdateMode.MERGE) -> None:
        """Update the row only if its ETag is still ``etag``: VersionMismatch (412) if it changed,
        ResourceNotFound if it is gone."""
        await _io(lambda: self._table.update_entity(row, mode=mode, **_guarded(etag), **_TIMEOUT))

    async def _load(self, name: str) -> tuple[str, TenantCredentials] | None:
        """One point read of the row's state and credential properties (and its ETag)."""
        if not _is_tenant_name(name):
            return None
        await self._ready()
        entity = await self._read_row(name, _CREDENTIAL_COLUMNS)
        if entity is None:
            return None
        return entity.get("state") or ACTIVE, TenantCredentials.from_properties(entity, _etag(entity))

    async def _store(self, name: str, credentials: TenantCredentials, version: str) -> None:
        """Merge the credential properties, guarded by the ETag ``version`` (412: VersionMismatch).
        ``tokenHash``, the one token of rows written before tokens had ids, is emptied: the
        ``tokens`` property holds it from then on."""
        row = _row(_TENANT_PARTITION, name, tokenHash="", **credentials.to_properties())
        try:
            await self._update_guarded(row, version)
        except ResourceNotFound:
            raise TenantNotFound(name) from None

    async def state(self, name: str) -> str | None:
        """``active``, ``deleting`` or None (one point read)."""
        if not _is_tenant_name(name):
            return None
        await self._ready()
        entity = await self._read_row(name, ["state"])
        return None if entity is None else entity.get("state") or ACTIVE

    async def begin_delete(self, name: str) -> None:
        """Replace the row by one with ``state`` = ``deleting``, no ``tokenHash`` and digests off,
        guarded by the ETag read (read again and retried if the row changed in between)."""
        if not _is_tenant_name(name):
            raise TenantNotFound(name)
        await self._ready()
        for _ in range(MAX_ATTEMPTS):
            current = await self._read_row(name)
            if current is None:
                raise TenantNotFound(name)
            if (current.get("state") or ACTIVE) == DELETING:
                return
            row = _row(
                _TENANT_PARTITION,
                name,
                state=DELETING,
                deletingSince=utc_now(),
                created=current.get("created") or "",
                notifyTo=current.get("notifyTo") or "[]",
                notifyEnabled=False,
            )
            try:
                await self._update_guarded(row, _etag(current), UpdateMode.REPLACE)
                return
            except (VersionMismatch, ResourceNotFound):
                continue
        raise StoreUnavailable(f"tenant {name} kept changing while its delete began")

    async def delete(self, name: str) -> None:
        """Delete the row; a one-operation transaction, because a plain delete ignores a 404."""
        if not _is_tenant_name(name):
            raise TenantNotFound(name)
        await self._ready()
        try:
            await _io(
                lambda: submit_transaction(self._table, [("delete", _row(_TENANT_PARTITION, name), {})], **_TIMEOUT)
            )
        except ResourceNotFound:
            raise TenantNotFound(name) from None

    async def list(self) -> list[TenantInfo]:
        """Every tenant, in RowKey (= name) order."""
        await self._ready()

        async def query() -> list[TenantInfo]:
            pager = self._table.query_entities(
                _FILTER_PARTITION,
                parameters={"pk": _TENANT_PARTITION},
                select=["RowKey", "created", "notifyTo", "notifyEnabled", "state", "entraTid"],
                **_TIMEOUT,
            )
            return [
                TenantInfo(
                    row["RowKey"],
                    row.get("created", ""),
                    tuple(json.loads(row.get("notifyTo") or "[]")),
                    bool(row.get("notifyEnabled")),
                    row.get("state") or ACTIVE,
                    row.get("entraTid") or None,
                )
                async for row in pager
            ]

        return await _io(query)

    async def set_notifications(self, name: str, recipients: Sequence[str], enabled: bool) -> None:
        """Merge ``notifyTo`` (JSON array) and ``notifyEnabled`` onto the tenant row."""
        cleaned = validate_recipients(recipients)
        await self._merge_settings(name, notifyTo=json.dumps(list(cleaned)), notifyEnabled=enabled)

    async def set_entra_tenant(self, name: str, tid: str | None) -> None:
        """Merge ``entraTid`` (empty: none) onto the tenant row."""
        await self._merge_settings(name, entraTid=validate_entra_tenant_id(tid) or "")

    async def _merge_settings(self, name: str, **values: Any) -> None:
        """Merge ``values`` onto the tenant row, guarded by the ETag read (retried if the row
        changed in between); TenantNotFound, or TenantDeleting once a delete began."""
        if not _is_tenant_name(name):
            raise TenantNotFound(name)
        await self._ready()
        row = _row(_TENANT_PARTITION, name, **values)
        for _ in range(MAX_ATTEMPTS):
            current = await self._read_row(name, ["state"])
            if current is None:
                raise TenantNotFound(name)
            if (current.get("state") or ACTIVE) == DELETING:
                raise TenantDeleting(name)
            try:
                await self._update_guarded(row, _etag(current))
                return
            except ResourceNotFound:
                raise TenantNotFound(name) from None
            except VersionMismatch:
                continue
        raise StoreUnavailable(f"tenant {name} kept changing")


def _is_tenant_name(name: str) -> bool:
    try:
        validate_tenant_name(name)
    except ValueError:
        return False
    return True
