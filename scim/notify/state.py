"""Per-tenant digest state: the watermark (failures up to it were emailed), when a credential
alert was last sent, and a lease; the interface and the rules every implementation follows.

Two implementations exist and both pass the same contract tests (``tests/log_contract.py``):
:class:`scim.notify.state_memory.MemoryNotifyStateStore` (tests, the memory runtime) and
:class:`scim.notify.state_tables.TableNotifyStateStore` (one row per tenant in the
``{prefix}tenants`` table, Azure Table Storage or Azurite).

Rules of the contract
---------------------
1. **A lease is exclusive.** :meth:`NotifyStateStore.acquire` gives the tenant's lease to one
   owner until ``now + lease``; while it runs, another owner's acquire gets None, and of
   concurrent acquires exactly one wins. Its holder may acquire it again (renewing it); an
   expired lease may be taken by anyone.
2. **Every change is guarded by the state it was read from.** The state an acquire returns
   carries an ETag; :meth:`NotifyStateStore.release` changes nothing and returns False when
   the tenant's state changed since (the lease was taken over, or acquired again, or the
   state forgotten). Of two runs, only the lease holder moves the watermark, and only forward
   from the state it read: a digest is never sent twice in the normal path.
3. **The watermark and the credential alert time change only on release**, each when given;
   the next acquire returns them, to the millisecond
   (:func:`~scim.provisioning_log.entries.format_time`). A tenant's first acquire has neither.
4. **Tenants are disjoint.** :meth:`NotifyStateStore.forget` removes one tenant's state (a
   no-op when there is none) and :meth:`NotifyStateStore.exists` tells whether it has any.
5. **Errors.** A storage that fails or does not answer in time raises
   :class:`~scim.store.base.StoreUnavailable` (the Table implementation maps Azure errors and
   bounds time as the directory store does, :mod:`scim.store.azure_client`).

Both implementations keep a tenant's state as the same properties (:func:`_lease_fields`,
:func:`_release_fields`, :func:`_state`), so they round times and judge leases alike.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scim.provisioning_log.entries import format_time, parse_time

__all__ = ["NotifyState", "NotifyStateStore"]


@dataclass(frozen=True)
class NotifyState:
    """A tenant's state as the lease holder read it."""

    tenant: str
    watermark: datetime | None
    etag: str
    credential_alert_at: datetime | None = None


class NotifyStateStore(abc.ABC):
    """Leases and watermarks of failure digests (see the module docstring for the rules)."""

    @abc.abstractmethod
    async def acquire(self, tenant: str, owner: str, now: datetime, lease: timedelta) -> NotifyState | None:
        """Take the tenant's lease until ``now + lease``; None if another owner holds it (rule 1)."""

    @abc.abstractmethod
    async def release(
        self, state: NotifyState, watermark: datetime | None, *, credential_alert_at: datetime | None = None
    ) -> bool:
        """Give the lease back, moving the watermark to ``watermark`` if given (and recording when
        a credential alert was sent, for its rate limit); False if the lease was lost (rule 2)."""

    @abc.abstractmethod
    async def forget(self, tenant: str) -> None:
        """Remove a deleted tenant's state (nothing to do if there is none)."""

    @abc.abstractmethod
    async def exists(self, tenant: str) -> bool:
        """Whether the tenant has digest state."""


# ---- the stored form, shared by both implementations ------------------------------------------


def _lease_fields(owner: str, now: datetime, lease: timedelta) -> dict[str, Any]:
    """The properties an acquire writes."""
    return {"leaseUntil": format_time(now + lease), "leaseOwner": owner}


def _release_fields(watermark: datetime | None, credential_alert_at: datetime | None) -> dict[str, Any]:
    """The properties a release writes (an empty ``leaseUntil`` is no lease)."""
    fields: dict[str, Any] = {"leaseUntil": "", "leaseOwner": ""}
    if watermark is not None:
        fields["watermark"] = format_time(watermark)
    if credential_alert_at is not None:
        fields["credentialAlertAt"] = format_time(credential_alert_at)
    return fields


def _held_by_another(stored: Mapping[str, Any], owner: str, now: datetime) -> bool:
    """Whether another owner holds an unexpired lease on the stored state."""
    lease_until = stored.get("leaseUntil") or ""
    return bool(lease_until) and parse_time(lease_until) > now and stored.get("leaseOwner") != owner


def _state(tenant: str, stored: Mapping[str, Any], etag: str) -> NotifyState:
    """The state an acquire returns: the stored watermark and alert time, and the new ETag."""
    watermark = stored.get("watermark") or ""
    alerted = stored.get("credentialAlertAt") or ""
    return NotifyState(
        tenant,
        parse_time(watermark) if watermark else None,
        etag,
        parse_time(alerted) if alerted else None,
    )
