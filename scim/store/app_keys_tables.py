"""Application keys on Azure Table Storage: two rows per key in the ``{prefix}tenants`` table.

PartitionKey ``appkey`` (beside the ``tenant`` and ``notify`` rows: ``docs/table-layout.md``,
"Tables"), so no table is added to ``infra/``:

- ``h|{sha256 hex of the key}``: ``name``, ``created``. What :meth:`lookup` reads: one point
  read whose key comes from the presented key alone (why: :mod:`scim.app_keys`, "Lookup");
- ``n|{name}``: ``keyHash``, ``created``. Keeps names unique, and serves ``list`` (a range
  query on ``n|``) and ``revoke`` (by name).

Both rows are inserted by one entity-group transaction (a taken name or hash fails the whole
creation: nothing is written) and deleted by one (the name row guarded by the ETag read). Every
storage call goes through the store's error mapping and time budget
(:func:`scim.store.azure_client._io`, one :data:`~scim.store.azure_client.STORAGE_BUDGET` per
operation), as :mod:`scim.store.tenant_registry` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableTransactionError

from scim.app_keys import (
    AppKeyExists,
    AppKeyInfo,
    AppKeyInUse,
    AppKeyNotFound,
    AppKeyRegistry,
    check_app_key,
    new_app_key,
    validate_key_name,
)
from scim.store import utc_now
from scim.store.azure_client import _TIMEOUT, _budgeted, _io, _TenantsTableOwner, resend_if_lost
from scim.store.base import ResourceNotFound, StoreUnavailable, VersionMismatch
from scim.store.transactions import submit_transaction
from scim.tenants import hash_token

if TYPE_CHECKING:
    pass

__all__ = ["APP_KEY_PARTITION", "TableAppKeyRegistry"]

APP_KEY_PARTITION = "appkey"
_HASH = "h|"
_NAME = "n|"
_NAME_END = "n}"  # the first RowKey after every "n|..." ('}' follows '|' in ASCII)
_REVOKE_ATTEMPTS = 5


def _is_hash(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _is_key_name(name: str) -> bool:
    try:
        validate_key_name(name)
    except ValueError:
        return False
    return True


class TableAppKeyRegistry(_TenantsTableOwner, AppKeyRegistry):
    """Application keys in ``{prefix}tenants`` under PartitionKey ``appkey`` (module docstring)."""

    async def _read(self, row_key: str, select: list[str]) -> Any:
        """The row (with its ETag in ``metadata``), or None."""
        try:
            return await _io(lambda: self._table.get_entity(APP_KEY_PARTITION, row_key, select=select, **_TIMEOUT))
        except ResourceNotFound:
            return None

    @_budgeted
    async def create(self, name: str, key: str | None = None) -> str:
        """One transaction inserting ``n|{name}`` and ``h|{hash}``; see :meth:`AppKeyRegistry.create`.

        A transaction whose answer was lost is sent again (:func:`resend_if_lost`); its 409 is
        recognised as our own earlier success when the name row holds our hash.
        """
        validate_key_name(name)
        key = new_app_key() if key is None else check_app_key(key)
        digest = hash_token(key)
        await self._ready()
        created = utc_now()
        operations: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            (
                "create",
                {"PartitionKey": APP_KEY_PARTITION, "RowKey": _NAME + name, "keyHash": digest, "created": created},
                {},
            ),
            (
                "create",
                {"PartitionKey": APP_KEY_PARTITION, "RowKey": _HASH + digest, "name": name, "created": created},
                {},
            ),
        ]
        sent = 0

        async def insert() -> None:
            nonlocal sent
            sent += 1
            try:
                await submit_transaction(self._table, operations, **_TIMEOUT)
            except TableTransactionError as exc:
                if exc.status_code != 409:
                    raise
                # Which row was taken: the name (usual), or the hash (a supplied key reused).
                try:
                    row = await self._table.get_entity(APP_KEY_PARTITION, _NAME + name, select=["keyHash"], **_TIMEOUT)
                except ResourceNotFoundError:
                    raise AppKeyInUse() from None
                if sent > 1 and row.get("keyHash") == digest:
                    return  # our own earlier attempt had committed
                raise AppKeyExists(name) from None

        await _io(lambda: resend_if_lost(insert))
        return key

    @_budgeted
    async def list(self) -> list[AppKeyInfo]:
        """The ``n|`` rows, in RowKey (= name) order: one range query."""
        await self._ready()

        async def query() -> list[AppKeyInfo]:
            pager = self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": APP_KEY_PARTITION, "lo": _NAME, "hi": _NAME_END},
                select=["RowKey", "created"],
                **_TIMEOUT,
            )
            return [AppKeyInfo(row["RowKey"].removeprefix(_NAME), row.get("created", "")) async for row in pager]

        return await _io(query)

    @_budgeted
    async def revoke(self, name: str) -> None:
        """Read ``n|{name}``, then one transaction deleting it (guarded by its ETag) and the
        ``h|`` row of the hash it holds.

        The transaction fails (404/412) only if the key read is gone meanwhile (a concurrent
        revoke, or our own transaction whose answer was lost and which was sent again): the
        name row is read again, and a row that is missing or holds another hash means the key
        read is revoked. Raises AppKeyNotFound if there is no key of that name at first.
        """
        if not _is_key_name(name):
            raise AppKeyNotFound(name)
        await self._ready()
        current = await self._read(_NAME + name, ["keyHash"])
        if current is None:
            raise AppKeyNotFound(name)
        digest = str(current.get("keyHash") or "")
        for _ in range(_REVOKE_ATTEMPTS):
            try:
                await self._delete_rows(name, digest, current.metadata["etag"])
                return
            except (ResourceNotFound, VersionMismatch):
                current = await self._read(_NAME + name, ["keyHash"])
                if current is None or current.get("keyHash") != digest:
                    return
        raise StoreUnavailable(f"application key {name} kept changing while being revoked")

    async def _delete_rows(self, name: str, digest: str, etag: str) -> None:
        """One transaction: ``n|{name}`` if its ETag is still ``etag``, and ``h|{digest}``."""
        operations: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            (
                "delete",
                {"PartitionKey": APP_KEY_PARTITION, "RowKey": _NAME + name},
                {"etag": etag, "match_condition": MatchConditions.IfNotModified},
            ),
            ("delete", {"PartitionKey": APP_KEY_PARTITION, "RowKey": _HASH + digest}, {}),
        ]
        await _io(lambda: resend_if_lost(lambda: submit_transaction(self._table, operations, **_TIMEOUT)))

    @_budgeted
    async def lookup(self, key_hash: str) -> tuple[str, str] | None:
        """One point read of ``h|{key_hash}`` (after the table check, once per process)."""
        if not _is_hash(key_hash):
            return None
        await self._ready()
        row = await self._read(_HASH + key_hash, ["RowKey", "name"])
        if row is None or not row.get("name"):
            return None
        return str(row["name"]), str(row["RowKey"]).removeprefix(_HASH)
