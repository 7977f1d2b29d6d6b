"""The portal's secrets on Azure Table Storage: one row in the ``{prefix}portal`` table.

PartitionKey ``secret``, RowKey ``session`` (``docs/table-layout.md``, "Tables"): ``key``, the
session key's 32 bytes (a Binary property), and ``created``. Made by the first
:meth:`~scim.portal.secrets_store.PortalSecrets.session_key` anywhere: a point read, and when
there is no row an insert (of two instances inserting at once, one gets 409 and reads the
other's key). Storage calls go through the store's error mapping and time budget
(:func:`scim.store.azure_client._io`).
"""

from __future__ import annotations

from typing import Any

from scim.portal.secrets_store import PortalSecrets
from scim.store import utc_now
from scim.store.azure_client import _TIMEOUT, _budgeted, _io, resend_if_lost
from scim.store.base import ResourceExists, ResourceNotFound, StoreUnavailable
from scim.store.portal_links_tables import _PortalTableOwner

__all__ = ["SECRET_PARTITION", "TablePortalSecrets"]

SECRET_PARTITION = "secret"
_SESSION = "session"


class TablePortalSecrets(_PortalTableOwner, PortalSecrets):
    """The session key in ``{prefix}portal`` under PartitionKey ``secret`` (module docstring)."""

    async def _read(self) -> Any:
        try:
            return await _io(lambda: self._table.get_entity(SECRET_PARTITION, _SESSION, select=["key"], **_TIMEOUT))
        except ResourceNotFound:
            return None

    @_budgeted
    async def _stored_key(self, candidate: bytes) -> bytes:
        """Read the row; insert ``candidate`` if there is none (a 409: another instance's came
        first, or our own lost answer), and return what is stored."""
        await self._ready()
        row = await self._read()
        if row is None:
            entity = {"PartitionKey": SECRET_PARTITION, "RowKey": _SESSION, "key": candidate, "created": utc_now()}
            try:
                await _io(lambda: resend_if_lost(lambda: self._table.create_entity(entity, **_TIMEOUT)))
                return candidate
            except ResourceExists:
                row = await self._read()
            if row is None:
                raise StoreUnavailable("the portal session key was deleted while being made")
        return bytes(row["key"])
