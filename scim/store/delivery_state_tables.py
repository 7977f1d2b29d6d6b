"""The :class:`~scim.webhooks.delivery_state.DeliveryStateStore` on Azure Table Storage (or Azurite).

The ``{prefix}deliveries`` table, one partition per tenant (``docs/table-layout.md``, "Tables"):

| RowKey | properties |
|---|---|
| ``lease`` | ``owner``, ``until`` (RFC 3339): the tenant's deliverer |
| ``c\\|{endpoint}`` | ``position``: the endpoint's cursor in the tenant's feed |
| ``l\\|{endpoint}\\|{resource}`` | ``endpoint``, ``resource``, ``attempts``, ``nextAt``, ``lastError``, and the positions as a JSON list (UTF-8) in the binary ``doc0..docN`` |

A lane's positions are Binary properties, not strings: Table Storage counts a string's characters
two bytes each (UTF-16) against an entity's 1 MiB, and :data:`~scim.webhooks.delivery_state.MAX_LANE_EVENTS`
positions of 57 characters are 1.2 MB as strings, 0.6 MB as UTF-8 bytes (Azurite does not enforce
the limit: ``tests/test_delivery_state_tables.py`` checks the size of a full lane's row).

:meth:`~TableDeliveryStateStore.load` is one partition query. The lease and the cursors change
by ETag-guarded updates (If-Match) or inserts, so of two deliverers only one wins; lanes are
upserts (only the lease holder writes them). Errors and time bounds are the directory's
(:func:`scim.store.azure_client._budgeted`, :func:`~scim.store.azure_client._io`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableServiceClient

from scim.store.azure_client import _budgeted, _io, _TableOwner, resend_if_lost
from scim.store.base import ResourceExists, ResourceNotFound, VersionMismatch
from scim.store.entities import _etag
from scim.store.operations import _guarded
from scim.webhooks import format_time, parse_time
from scim.webhooks.delivery_state import (
    CURSOR_PREFIX,
    LANE_PREFIX,
    LEASE_ROW,
    Cursor,
    DeliveryState,
    DeliveryStateStore,
    Lane,
    Lease,
    lane_fields,
    lane_from,
    lane_key,
    lease_holder,
)

__all__ = ["TableDeliveryStateStore"]

POSITIONS_CHUNK = 64_000
"""Bytes of a lane's positions per ``doc{i}`` property (a Binary property holds 64 KiB)."""


def _positions_properties(positions: list[str]) -> dict[str, bytes]:
    """``doc0..docN``: the positions as a JSON list, UTF-8, in Binary properties (see the module
    docstring: as strings, a full lane would not fit one entity)."""
    data = json.dumps(positions, separators=(",", ":")).encode()
    return {
        f"doc{i}": data[start : start + POSITIONS_CHUNK] for i, start in enumerate(range(0, len(data), POSITIONS_CHUNK))
    }


def _positions_from(row: Mapping[str, Any]) -> list[str]:
    """The positions :func:`_positions_properties` stored."""
    parts = sorted(
        (int(name[3:]), value) for name, value in row.items() if name.startswith("doc") and name[3:].isdigit()
    )
    positions: list[str] = json.loads(b"".join(bytes(value) for _, value in parts))
    return positions


class TableDeliveryStateStore(_TableOwner, DeliveryStateStore):
    """Delivery leases, cursors and lanes in ``{prefix}deliveries`` (see the module docstring),
    on a service client shared with the directory."""

    def __init__(self, service: TableServiceClient, prefix: str) -> None:
        super().__init__(service, f"{prefix}deliveries")

    @_budgeted
    async def load(self, tenant: str) -> DeliveryState:
        await self._ready()

        async def query() -> list[Any]:
            pager = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": tenant})
            return [row async for row in pager]

        cursors: dict[str, Cursor] = {}
        lanes: list[Lane] = []
        owner: str | None = None
        until: datetime | None = None
        for row in await _io(query):
            key = row["RowKey"]
            if key == LEASE_ROW:
                owner, until = row.get("owner") or None, parse_time(row["until"]) if row.get("until") else None
            elif key.startswith(CURSOR_PREFIX):
                endpoint = key.removeprefix(CURSOR_PREFIX)
                cursors[endpoint] = Cursor(endpoint, row["position"], _etag(row))
            elif key.startswith(LANE_PREFIX):
                lanes.append(lane_from(row, _positions_from(row)))
        return DeliveryState(tenant, cursors, lanes, owner, until)

    async def _lease_row(self, tenant: str) -> Any:
        try:
            return await _io(lambda: self._table.get_entity(tenant, LEASE_ROW))
        except ResourceNotFound:
            return None

    @_budgeted
    async def acquire(self, tenant: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Insert the lease row, or take it over by an ETag-guarded update when it is free,
        expired or already ours; None when another owner holds it or wins a race for it."""
        await self._ready()
        until = now + duration
        row = {"PartitionKey": tenant, "RowKey": LEASE_ROW, "owner": owner, "until": format_time(until)}
        current = await self._lease_row(tenant)
        if current is None:
            try:
                created = await _io(lambda: self._table.create_entity(row))
            except ResourceExists:
                return None  # a concurrent acquire won
            return Lease(tenant, owner, until, str(created["etag"]))
        held_until = parse_time(current["until"]) if current.get("until") else None
        holder = lease_holder(current.get("owner"), held_until, now)
        if holder is not None and holder != owner:
            return None
        return await self._update_lease(row, tenant, owner, until, _etag(current))

    async def _update_lease(
        self, row: dict[str, Any], tenant: str, owner: str, until: datetime, etag: str
    ) -> Lease | None:
        try:
            updated = await _io(lambda: self._table.update_entity(row, mode=UpdateMode.REPLACE, **_guarded(etag)))
        except (VersionMismatch, ResourceNotFound):
            return None
        return Lease(tenant, owner, until, str(updated["etag"]))

    @_budgeted
    async def renew(self, lease: Lease, now: datetime, duration: timedelta) -> Lease | None:
        until = now + duration
        row = {"PartitionKey": lease.tenant, "RowKey": LEASE_ROW, "owner": lease.owner, "until": format_time(until)}
        return await self._update_lease(row, lease.tenant, lease.owner, until, lease.etag)

    @_budgeted
    async def release(self, lease: Lease) -> None:
        try:
            await _io(lambda: self._table.delete_entity(lease.tenant, LEASE_ROW, **_guarded(lease.etag)))
        except (VersionMismatch, ResourceNotFound):
            return

    @_budgeted
    async def save_cursor(self, tenant: str, endpoint: str, position: str, etag: str | None) -> Cursor:
        await self._ready()
        row = {"PartitionKey": tenant, "RowKey": CURSOR_PREFIX + endpoint, "position": position}
        if etag is None:
            try:
                written = await _io(lambda: self._table.create_entity(row))
            except ResourceExists:
                raise VersionMismatch(f"the cursor of {endpoint} exists already") from None
        else:
            try:
                written = await _io(lambda: self._table.update_entity(row, mode=UpdateMode.REPLACE, **_guarded(etag)))
            except ResourceNotFound:
                raise VersionMismatch(f"the cursor of {endpoint} is gone") from None
        return Cursor(endpoint, position, str(written["etag"]))

    @_budgeted
    async def rewind(self, tenant: str, endpoint: str, position: str) -> None:
        await self._ready()
        row = {"PartitionKey": tenant, "RowKey": CURSOR_PREFIX + endpoint, "position": position}
        await _io(lambda: resend_if_lost(lambda: self._table.upsert_entity(row, mode=UpdateMode.REPLACE)))

    @_budgeted
    async def save_lane(self, tenant: str, lane: Lane) -> None:
        row = {
            "PartitionKey": tenant,
            "RowKey": lane_key(lane.endpoint, lane.resource),
            **lane_fields(lane),
            **_positions_properties(lane.positions),
        }
        await self._ready()
        await _io(lambda: resend_if_lost(lambda: self._table.upsert_entity(row, mode=UpdateMode.REPLACE)))

    @_budgeted
    async def drop_lane(self, tenant: str, endpoint: str, resource: str) -> None:
        await self._ready()
        await _io(lambda: self._table.delete_entity(tenant, lane_key(endpoint, resource)))

    @_budgeted
    async def forget(self, tenant: str) -> None:
        await self._ready()

        async def keys() -> list[str]:
            pager = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": tenant}, select=["RowKey"])
            return [row["RowKey"] async for row in pager]

        await self._delete_rows(tenant, await _io(keys))

    async def _delete_rows(self, tenant: str, keys: list[str]) -> None:
        for key in keys:
            await _io(lambda key=key: self._table.delete_entity(tenant, key))  # type: ignore[misc]  # the default binds this iteration's key; mypy cannot type it

    @_budgeted
    async def forget_endpoint(self, tenant: str, endpoint: str) -> None:
        """One query of the endpoint's rows (its cursor, and its lanes: the RowKeys from
        ``l|{endpoint}|`` up to the next prefix), then a delete of each."""
        await self._ready()
        lanes_from = lane_key(endpoint, "")
        lanes_to = lanes_from[:-1] + chr(ord(lanes_from[-1]) + 1)

        async def keys() -> list[str]:
            pager = self._table.query_entities(
                # Space-separated: the SDK substitutes a parameter only as a whole word.
                "PartitionKey eq @pk and ( RowKey eq @cursor or ( RowKey ge @lo and RowKey lt @hi ) )",
                parameters={"pk": tenant, "cursor": CURSOR_PREFIX + endpoint, "lo": lanes_from, "hi": lanes_to},
                select=["RowKey"],
            )
            return [row["RowKey"] async for row in pager]

        await self._delete_rows(tenant, await _io(keys))
