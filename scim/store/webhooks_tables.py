"""Webhook endpoints on Azure Table Storage: one row per endpoint in the ``{prefix}tenants`` table.

PartitionKey ``webhook`` (beside the ``tenant``, ``notify`` and ``appkey`` rows:
``docs/table-layout.md``, "Tables"), so no table is added to ``infra/``; RowKey the endpoint id
(``ep_`` + 32 hex digits). Properties: ``url``, ``tenants`` and ``events`` (JSON lists; absent
for "all"), ``created``, ``state``, ``disabledReason``, ``disabledAt``, ``lastSuccess``,
``lastError``, ``lastErrorAt``, ``failingSince``, ``secret``, ``previousSecret``,
``previousSecretUntil`` (an empty string is "none": a merge cannot remove a property).

The secrets are stored as they are (why: :mod:`scim.webhooks`).

- ``add``: one insert; a lost answer is sent again and its 409 recognised as our own insert
  (the row holds our secret).
- ``list``: one query of the partition. ``get``: one point read.
- ``rotate_secret``, ``record_failure``: a point read, then a merge guarded by the row's ETag,
  again on a conflict (a rotation whose answer was lost and whose resend met its own change is
  recognised by the secret it wrote).
- ``record_success``, ``disable``, ``enable``: one blind merge (``If-Match: *``: a removed
  endpoint is not brought back; it answers 404, :class:`~scim.webhooks.WebhookNotFound`).
- ``remove``: a point read (404: not found), then a delete; a 404 then means it is gone already.

Every storage call goes through the store's error mapping and time budget
(:func:`scim.store.azure_client._io`, one budget per operation), as
:mod:`scim.store.app_keys_tables` does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import UpdateMode

from scim.core.webhook_messages import new_secret
from scim.store.azure_client import _TIMEOUT, _budgeted, _io, _TenantsTableOwner, resend_if_lost
from scim.store.base import ResourceNotFound, StoreUnavailable, VersionMismatch
from scim.webhooks import (
    DISABLED,
    ENABLED,
    WebhookEndpoint,
    WebhookNotFound,
    WebhookRegistry,
    check_url_form,
    current_time,
    failure_fields,
    format_time,
    is_endpoint_id,
    new_endpoint_id,
    normalise_events,
    normalise_tenants,
    rotated_fields,
)

if TYPE_CHECKING:
    pass

__all__ = ["WEBHOOK_PARTITION", "TableWebhookRegistry"]

WEBHOOK_PARTITION = "webhook"
_ATTEMPTS = 5
_PROPERTIES = {  # WebhookEndpoint field -> row property (nullable strings)
    "url": "url",
    "created": "created",
    "state": "state",
    "disabled_reason": "disabledReason",
    "disabled_at": "disabledAt",
    "last_success": "lastSuccess",
    "last_error": "lastError",
    "last_error_at": "lastErrorAt",
    "failing_since": "failingSince",
    "secret": "secret",
    "previous_secret": "previousSecret",
    "previous_secret_until": "previousSecretUntil",
}


def _filter_list(value: tuple[str, ...] | None) -> str:
    return "" if value is None else json.dumps(list(value))


def _row(endpoint: WebhookEndpoint) -> dict[str, Any]:
    row: dict[str, Any] = {"PartitionKey": WEBHOOK_PARTITION, "RowKey": endpoint.id}
    row.update({prop: getattr(endpoint, name) or "" for name, prop in _PROPERTIES.items()})
    row["tenants"] = _filter_list(endpoint.tenants)
    row["events"] = _filter_list(endpoint.events)
    return row


def _changes(changes: Mapping[str, str | None]) -> dict[str, Any]:
    return {_PROPERTIES[name]: value or "" for name, value in changes.items()}


def _endpoint(row: Any) -> WebhookEndpoint:
    def listed(name: str) -> tuple[str, ...] | None:
        text = row.get(name) or ""
        return tuple(json.loads(text)) if text else None

    values = {name: (row.get(prop) or None) for name, prop in _PROPERTIES.items()}
    return WebhookEndpoint(
        id=str(row["RowKey"]),
        url=str(values.pop("url") or ""),
        created=str(values.pop("created") or ""),
        state=str(values.pop("state") or ENABLED),
        secret=str(values.pop("secret") or ""),
        tenants=listed("tenants"),
        events=listed("events"),
        **values,
    )


class TableWebhookRegistry(_TenantsTableOwner, WebhookRegistry):
    """Webhook endpoints in ``{prefix}tenants`` under PartitionKey ``webhook`` (module docstring)."""

    async def _read(self, endpoint_id: str) -> Any:
        """The row (with its ETag in ``metadata``); WebhookNotFound if there is none."""
        if not is_endpoint_id(endpoint_id):
            raise WebhookNotFound(endpoint_id)
        await self._ready()
        try:
            return await _io(lambda: self._table.get_entity(WEBHOOK_PARTITION, endpoint_id, **_TIMEOUT))
        except ResourceNotFound:
            raise WebhookNotFound(endpoint_id) from None

    async def _merge(self, endpoint_id: str, properties: dict[str, Any], etag: str | None = None) -> None:
        """Merge ``properties`` into the row: guarded by ``etag`` if given, else ``If-Match: *``."""
        entity = {"PartitionKey": WEBHOOK_PARTITION, "RowKey": endpoint_id, **properties}
        guard: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        try:
            await _io(
                lambda: resend_if_lost(
                    lambda: self._table.update_entity(entity, mode=UpdateMode.MERGE, **guard, **_TIMEOUT)
                )
            )
        except ResourceNotFound:
            raise WebhookNotFound(endpoint_id) from None

    @_budgeted
    async def add(
        self, url: str, tenants: Iterable[str] | None = None, events: Iterable[str] | None = None
    ) -> tuple[str, str]:
        """One insert; see :meth:`WebhookRegistry.add`."""
        endpoint = WebhookEndpoint(
            id=new_endpoint_id(),
            url=check_url_form(url),
            tenants=normalise_tenants(tenants),
            events=normalise_events(events),
            created=format_time(current_time(None)),
            secret=new_secret(),
        )
        await self._ready()
        row = _row(endpoint)
        sent = 0

        async def insert() -> None:
            nonlocal sent
            sent += 1
            try:
                await self._table.create_entity(row, **_TIMEOUT)
            except ResourceExistsError:
                if sent == 1:
                    raise  # 128 random bits taken: not ours, and not expected in this universe
                found = await self._table.get_entity(WEBHOOK_PARTITION, endpoint.id, select=["secret"], **_TIMEOUT)
                if found.get("secret") != endpoint.secret:
                    raise

        await _io(lambda: resend_if_lost(insert))
        return endpoint.id, endpoint.secret

    @_budgeted
    async def list(self) -> list[WebhookEndpoint]:
        """One query of the partition; by creation time then id."""
        await self._ready()

        async def query() -> list[WebhookEndpoint]:
            pager = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": WEBHOOK_PARTITION}, **_TIMEOUT)
            return [_endpoint(row) async for row in pager]

        return sorted(await _io(query), key=lambda e: (e.created, e.id))

    @_budgeted
    async def get(self, endpoint_id: str) -> WebhookEndpoint:
        """One point read."""
        return _endpoint(await self._read(endpoint_id))

    @_budgeted
    async def remove(self, endpoint_id: str) -> None:
        """A point read, then a delete (see the module docstring)."""
        await self._read(endpoint_id)
        with contextlib.suppress(ResourceNotFound):  # removed meanwhile (concurrently, or our lost answer)
            await _io(
                lambda: resend_if_lost(
                    lambda: self._table.delete_entity(
                        WEBHOOK_PARTITION, endpoint_id, match_condition=MatchConditions.Unconditionally, **_TIMEOUT
                    )
                )
            )

    @_budgeted
    async def rotate_secret(self, endpoint_id: str, now: datetime | None = None) -> str:
        """Read, then an ETag-guarded merge; see :meth:`WebhookRegistry.rotate_secret`."""
        moment = current_time(now)
        new = new_secret()
        for _ in range(_ATTEMPTS):
            row = await self._read(endpoint_id)
            if row.get("secret") == new:
                return new  # our earlier merge had committed (its answer was lost)
            changes = _changes(rotated_fields(_endpoint(row), new, moment))
            try:
                await self._merge(endpoint_id, changes, row.metadata["etag"])
                return new
            except VersionMismatch:
                continue
        raise StoreUnavailable(f"webhook endpoint {endpoint_id} kept changing during the rotation")

    @_budgeted
    async def record_success(self, endpoint_id: str, when: datetime | None = None) -> None:
        """One blind merge."""
        if not is_endpoint_id(endpoint_id):
            raise WebhookNotFound(endpoint_id)
        await self._ready()
        await self._merge(
            endpoint_id, _changes({"last_success": format_time(current_time(when)), "failing_since": None})
        )

    @_budgeted
    async def record_failure(self, endpoint_id: str, error: str, when: datetime | None = None) -> WebhookEndpoint:
        """Read, then an ETag-guarded merge; see :meth:`WebhookRegistry.record_failure`."""
        moment = current_time(when)
        for _ in range(_ATTEMPTS):
            row = await self._read(endpoint_id)
            current = _endpoint(row)
            fields = failure_fields(current, error, moment)
            try:
                await self._merge(endpoint_id, _changes(fields), row.metadata["etag"])
            except VersionMismatch:
                continue
            return dataclasses.replace(current, **fields)  # type: ignore[arg-type]  # the keyword names are the string fields of WebhookEndpoint
        raise StoreUnavailable(f"webhook endpoint {endpoint_id} kept changing while recording a failure")

    @_budgeted
    async def disable(self, endpoint_id: str, reason: str, when: datetime | None = None) -> None:
        """One blind merge."""
        if not is_endpoint_id(endpoint_id):
            raise WebhookNotFound(endpoint_id)
        await self._ready()
        fields = {"state": DISABLED, "disabled_reason": reason, "disabled_at": format_time(current_time(when))}
        await self._merge(endpoint_id, _changes(fields))

    @_budgeted
    async def enable(self, endpoint_id: str) -> None:
        """One blind merge."""
        if not is_endpoint_id(endpoint_id):
            raise WebhookNotFound(endpoint_id)
        await self._ready()
        fields = {"state": ENABLED, "disabled_reason": None, "disabled_at": None, "failing_since": None}
        await self._merge(endpoint_id, _changes(fields))
