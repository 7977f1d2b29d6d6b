"""Setup links on Azure Table Storage: two rows per link in the ``{prefix}portal`` table.

PartitionKey ``link`` for every link of every tenant (``docs/table-layout.md``, "Tables"):

- ``h|{sha256 hex of the secret}``: ``tenant``, ``id``, ``created``, ``expires``, ``createdBy``.
  What :meth:`~TableSetupLinkRegistry.lookup` reads: one point read whose key comes from the
  presented secret alone. It exists while the link is open or expired: redeeming or revoking
  the link deletes it;
- ``t|{tenant}|{id}``: ``linkHash``, ``created``, ``expires``, ``createdBy``, and once it ended
  ``used``/``usedBy`` (``redemption``: the redeem's nonce, to recognise its own lost answer) or
  ``revoked``. Serves ``list``, ``revoke_all`` and ``purge`` (a range query on ``t|{tenant}|``).

**One partition, so one transaction.** Redeeming must find the link from the secret alone (the
URL carries no tenant), so the hash row's PartitionKey cannot be the tenant; and the two rows of
a link change together, which only an entity-group transaction (one partition) does atomically.
So both live in the one ``link`` partition: creating inserts both in one transaction (a taken id
fails it whole: another id is picked); redeeming deletes the hash row guarded by the ETag read
(If-Match) and marks the tenant row used in the same transaction, so of two concurrent redeems
exactly one commits; revoking marks the tenant row (guarded by its ETag, so a redeem in between
wins) and deletes the hash row in one transaction. One partition serves about 2,000 entities/s;
links are made by operators and redeemed by people, a few a minute.

Every storage call goes through the store's error mapping and time budget
(:func:`scim.store.azure_client._io`, one :data:`~scim.store.azure_client.STORAGE_BUDGET` per
operation), as :mod:`scim.store.app_keys_tables` does; the table is created on first use
locally (in Azure, ``infra/`` creates it).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableServiceClient

from scim.portal.links import (
    SetupLink,
    SetupLinkRegistry,
    StoredLink,
    checked_create,
    current_time,
    format_time,
    new_link_id,
    new_link_secret,
    parse_time,
    prunable,
    redeemable,
)
from scim.store.azure_client import _TIMEOUT, _budgeted, _io, _TableOwner, resend_if_lost, service_client
from scim.store.base import ResourceNotFound, StoreUnavailable, VersionMismatch
from scim.store.operations import _guarded
from scim.store.transactions import Operation, submit_transaction
from scim.tenants import hash_token, validate_tenant_name

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    from scim.settings import Settings

__all__ = ["LINK_PARTITION", "TableSetupLinkRegistry"]

LINK_PARTITION = "link"
_HASH = "h|"
_TENANT = "t|"
_ATTEMPTS = 5
_MERGE: dict[str, Any] = {"mode": UpdateMode.MERGE}


class _PortalTableOwner(_TableOwner):
    """A record kind of the ``{prefix}portal`` table (setup links, the portal's secrets:
    ``docs/table-layout.md``, "Tables"), on a shared service client or its own."""

    def __init__(
        self,
        service: TableServiceClient,
        prefix: str = "scim",
        *,
        owns_client: bool = False,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        super().__init__(service, f"{prefix}portal", owns_client=owns_client, credential=credential)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, per_call_policies: Sequence[SansIOHTTPPolicy[Any, Any]] | None = None
    ) -> Self:
        """One on its own service client (tests; the app and the CLI share the runtime's client)."""
        service, credential = service_client(settings, per_call_policies=per_call_policies)
        return cls(service, settings.table_prefix, owns_client=True, credential=credential)


def _is_hash(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _time(row: Any, name: str) -> datetime | None:
    text = row.get(name)
    return parse_time(str(text)) if text else None


def _text(row: Any, name: str) -> str | None:
    return str(row[name]) if row.get(name) else None


def _link(row: Any, tenant: str, link_id: str) -> SetupLink:
    """The link a row (either kind) holds."""
    return SetupLink(
        id=link_id,
        tenant=tenant,
        created=parse_time(str(row["created"])),
        expires=parse_time(str(row["expires"])),
        created_by=str(row.get("createdBy") or ""),
        used=_time(row, "used"),
        used_by=_text(row, "usedBy"),
        revoked=_time(row, "revoked"),
    )


def _tenant_key(tenant: str, link_id: str) -> str:
    return f"{_TENANT}{tenant}|{link_id}"


def _key(row_key: str) -> dict[str, str]:
    return {"PartitionKey": LINK_PARTITION, "RowKey": row_key}


class TableSetupLinkRegistry(_PortalTableOwner, SetupLinkRegistry):
    """Setup links in ``{prefix}portal`` under PartitionKey ``link`` (module docstring)."""

    async def _read(self, row_key: str) -> Any:
        """The row (with its ETag in ``metadata``), or None."""
        try:
            return await _io(lambda: self._table.get_entity(LINK_PARTITION, row_key, **_TIMEOUT))
        except ResourceNotFound:
            return None

    async def _tenant_rows(self, tenant: str) -> list[Any]:
        """The tenant's ``t|`` rows: one range query."""
        validate_tenant_name(tenant)
        await self._ready()
        low = f"{_TENANT}{tenant}|"

        async def query() -> list[Any]:
            pager = self._table.query_entities(
                "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi",
                parameters={"pk": LINK_PARTITION, "lo": low, "hi": low + "~"},
                **_TIMEOUT,
            )
            return [row async for row in pager]

        return await _io(query)

    async def _submit(self, operations: list[Operation]) -> None:
        """One entity-group transaction, sent again if lost (a resent one fails if the first
        committed: the caller reads again)."""
        await _io(lambda: resend_if_lost(lambda: submit_transaction(self._table, operations, **_TIMEOUT)))

    @staticmethod
    def _of(row: Any) -> SetupLink:
        _, tenant, link_id = str(row["RowKey"]).split("|", 2)
        return _link(row, tenant, link_id)

    @_budgeted
    async def create(
        self, tenant: str, expires: timedelta, created_by: str, *, now: datetime | None = None
    ) -> tuple[str, SetupLink]:
        """Prune, then one transaction inserting ``t|{tenant}|{id}`` and ``h|{hash}``; see
        :meth:`SetupLinkRegistry.create`. A transaction whose answer was lost is sent again
        (:func:`resend_if_lost`); its 409 is recognised as our own when the row holds our hash."""
        created, until = checked_create(tenant, expires, created_by, now)
        rows = await self._tenant_rows(tenant)
        for row in rows:
            if prunable(self._of(row), created):
                await self._delete_link(row)
        taken = {self._of(row).id for row in rows}
        for _ in range(_ATTEMPTS):
            link_id = new_link_id()
            if link_id in taken:
                continue
            secret = new_link_secret()
            link = SetupLink(link_id, tenant, created, until, created_by)
            if await self._insert(link, hash_token(secret)):
                return secret, link
            taken.add(link_id)
        raise StoreUnavailable(f"no free setup link id for tenant {tenant}")

    async def _insert(self, link: SetupLink, digest: str) -> bool:
        """Insert both rows of ``link``: False if its id was taken meanwhile."""
        times = {"created": format_time(link.created), "expires": format_time(link.expires)}
        operations: list[Operation] = [
            (
                "create",
                {**_key(_tenant_key(link.tenant, link.id)), "linkHash": digest, "createdBy": link.created_by, **times},
                {},
            ),
            (
                "create",
                {**_key(_HASH + digest), "tenant": link.tenant, "id": link.id, "createdBy": link.created_by, **times},
                {},
            ),
        ]
        sent = 0

        async def insert() -> bool:
            nonlocal sent
            sent += 1
            try:
                await submit_transaction(self._table, operations, **_TIMEOUT)
            except TableTransactionError as exc:
                if exc.status_code != 409:
                    raise
                try:
                    row = await self._table.get_entity(
                        LINK_PARTITION, _tenant_key(link.tenant, link.id), select=["linkHash"], **_TIMEOUT
                    )
                except ResourceNotFoundError:
                    return False  # the hash was taken: as likely as guessing a secret
                return sent > 1 and row.get("linkHash") == digest  # our own earlier attempt had committed
            return True

        return await _io(lambda: resend_if_lost(insert))

    @_budgeted
    async def list(self, tenant: str) -> list[SetupLink]:
        """The ``t|{tenant}|`` rows, newest first: one range query."""
        links = [self._of(row) for row in await self._tenant_rows(tenant)]
        return sorted(links, key=lambda link: (link.created, link.id), reverse=True)

    @_budgeted
    async def revoke_all(self, tenant: str, *, now: datetime | None = None) -> int:
        """For each open link, one transaction: mark ``t|`` revoked (guarded by its ETag: a redeem
        in between wins) and delete ``h|``."""
        when = current_time(now)
        revoked = 0
        for row in await self._tenant_rows(tenant):
            if redeemable(self._of(row), when) and await self._revoke(row, when):
                revoked += 1
        return revoked

    async def _revoke(self, row: Any, when: datetime) -> bool:
        """Revoke one open link: True if this call did (False: it was redeemed or revoked meanwhile)."""
        stamp = format_time(when)
        with_hash = True
        for _ in range(_ATTEMPTS):
            operations: list[Operation] = [
                ("update", {**_key(row["RowKey"]), "revoked": stamp}, {**_MERGE, **_guarded(row.metadata["etag"])})
            ]
            if with_hash:
                operations.append(("delete", _key(_HASH + str(row["linkHash"])), {}))
            try:
                await self._submit(operations)
                return True
            except (ResourceNotFound, VersionMismatch):
                etag = row.metadata["etag"]
                row = await self._read(row["RowKey"])
                if row is None or not redeemable(self._of(row), when):
                    return row is not None and row.get("revoked") == stamp and not row.get("used")  # ours, resent
                with_hash = row.metadata["etag"] != etag  # unchanged: its hash row was missing
        raise StoreUnavailable("a setup link kept changing while being revoked")

    @_budgeted
    async def purge(self, tenant: str) -> None:
        """Delete both rows of every link of the tenant (one transaction per link)."""
        for row in await self._tenant_rows(tenant):
            await self._delete_link(row)

    async def _delete_link(self, row: Any) -> None:
        """One transaction deleting ``t|`` (guarded by its ETag) and, for a link not used or
        revoked, its ``h|`` row; read again and retried when the link changed meanwhile."""
        with_hash = True
        for _ in range(_ATTEMPTS):
            link = self._of(row)
            operations: list[Operation] = [("delete", _key(row["RowKey"]), _guarded(row.metadata["etag"]))]
            if with_hash and link.used is None and link.revoked is None:
                operations.append(("delete", _key(_HASH + str(row["linkHash"])), {}))
            try:
                await self._submit(operations)
                return
            except (ResourceNotFound, VersionMismatch):
                etag = row.metadata["etag"]
                row = await self._read(row["RowKey"])
                if row is None:
                    return
                with_hash = row.metadata["etag"] != etag  # unchanged: its hash row was missing
        raise StoreUnavailable("a setup link kept changing while being deleted")

    @_budgeted
    async def lookup(self, key_hash: str) -> StoredLink | None:
        """One point read of ``h|{key_hash}`` (after the table check, once per process)."""
        if not _is_hash(key_hash):
            return None
        await self._ready()
        row = await self._read(_HASH + key_hash)
        if row is None or not row.get("tenant"):
            return None
        link = _link(row, str(row["tenant"]), str(row.get("id") or ""))
        return StoredLink(link, str(row["RowKey"]).removeprefix(_HASH), str(row.metadata["etag"]))

    @_budgeted
    async def redeem(self, secret: str, used_by: str, *, now: datetime | None = None) -> SetupLink | None:
        """:meth:`SetupLinkRegistry.redeem` within one storage budget."""
        return await super().redeem(secret, used_by, now=now)

    async def _claim(self, found: StoredLink, used_by: str, now: datetime) -> SetupLink | None:
        """One transaction: delete ``h|`` if its ETag is still the one read, and mark ``t|`` used
        (which must exist). A lost answer sent again fails; the nonce in ``t|`` tells ours."""
        link = found.link
        nonce = secrets.token_hex(8)
        operations: list[Operation] = [
            ("delete", _key(_HASH + found.key_hash), _guarded(found.version)),
            (
                "update",
                {
                    **_key(_tenant_key(link.tenant, link.id)),
                    "used": format_time(now),
                    "usedBy": used_by,
                    "redemption": nonce,
                },
                _MERGE,
            ),
        ]
        sent = 0

        async def send() -> None:
            nonlocal sent
            sent += 1
            await submit_transaction(self._table, operations, **_TIMEOUT)

        try:
            await _io(lambda: resend_if_lost(send))
        except (ResourceNotFound, VersionMismatch):
            row = await self._read(_tenant_key(link.tenant, link.id)) if sent > 1 else None
            if row is None or row.get("redemption") != nonce:
                return None  # a concurrent redeem or revoke came first
        return dataclasses.replace(link, used=now, used_by=used_by)
