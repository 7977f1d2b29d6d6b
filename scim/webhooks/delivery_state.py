"""Where webhook delivery keeps its progress: per tenant, a lease, each endpoint's cursor in the
tenant's event feed, and the *lanes* of events waiting for a retry (issue 12, "Webhooks").

The delivery engine (:mod:`scim.webhooks.delivery`) reads a tenant's feed (the event rows are the source
of truth: ``docs/events.md``) and pushes each event to every endpoint that wants it. What it
must remember between runs, and across instances, is this contract's; implementations: memory
(:mod:`scim.store.delivery_state_memory`) and Azure Tables
(:mod:`scim.store.delivery_state_tables`, the ``{prefix}deliveries`` table, one partition per
tenant). Both pass ``tests/delivery_state_contract.py``.

Rules of the contract
---------------------
1. **One deliverer per tenant.** :meth:`DeliveryStateStore.acquire` gives the tenant's lease to
   one owner until ``now + duration``; while it runs another owner gets None, and of concurrent
   acquires exactly one wins. The holder renews it with :meth:`~DeliveryStateStore.renew`
   (None when it was lost) and gives it back with :meth:`~DeliveryStateStore.release`.
2. **A cursor only moves from the value it was read as.** :meth:`~DeliveryStateStore.save_cursor`
   is guarded by the ETag of the cursor read (None: the cursor must not exist yet) and raises
   :class:`~scim.store.base.VersionMismatch` when it changed meanwhile: an operator's
   :meth:`~DeliveryStateStore.rewind` (``webhook replay``), or another deliverer that took the
   lease over. The deliverer then loads the state again.
3. **A lane is saved whole** (:meth:`~DeliveryStateStore.save_lane`, an upsert) and dropped
   when empty (:meth:`~DeliveryStateStore.drop_lane`, no error when absent). A lane holds at
   most :data:`MAX_LANE_EVENTS` positions.
4. :meth:`~DeliveryStateStore.load` returns all of a tenant's state in one read; tenants are
   disjoint; :meth:`~DeliveryStateStore.forget` removes a tenant's state.
5. Storage failures raise :class:`~scim.store.base.StoreUnavailable`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from scim.webhooks import format_time, parse_time

__all__ = [
    "MAX_LANE_EVENTS",
    "Cursor",
    "DeliveryState",
    "DeliveryStateStore",
    "Lane",
    "Lease",
]

MAX_LANE_EVENTS = 10_000
"""Most events one lane (one endpoint, one resource) holds; the engine disables an endpoint
rather than exceed it (a stored lane is one entity: 10,000 positions of ~60 characters fit, as
UTF-8 bytes: :mod:`scim.store.delivery_state_tables`)."""


@dataclass(frozen=True)
class Lease:
    """A tenant's delivery lease as its holder has it (``etag`` guards its renewal and release)."""

    tenant: str
    owner: str
    until: datetime
    etag: str


@dataclass(frozen=True)
class Cursor:
    """An endpoint's progress in a tenant's feed: every event at or before ``position`` was
    delivered, is in a lane, or was not for the endpoint. ``etag`` guards the next save."""

    endpoint: str
    position: str
    etag: str


@dataclass
class Lane:
    """An endpoint's events of one resource that wait behind a failed delivery, oldest first.

    ``resource`` is ``User/{id}`` or ``Group/{id}`` (membership events belong to their group);
    ``positions`` the events' feed positions; ``attempts`` the failed attempts of the first one
    (0: never tried: it waits for the endpoint to work again, see :mod:`scim.webhooks.delivery`);
    ``next_at`` when the first one is tried again (None: when the endpoint works again);
    ``last_error`` the last failure's text."""

    endpoint: str
    resource: str
    positions: list[str] = field(default_factory=list)
    attempts: int = 0
    next_at: datetime | None = None
    last_error: str = ""


@dataclass(frozen=True)
class DeliveryState:
    """All of a tenant's delivery state, as :meth:`DeliveryStateStore.load` read it."""

    tenant: str
    cursors: Mapping[str, Cursor]
    lanes: list[Lane]
    lease_owner: str | None = None
    lease_until: datetime | None = None


class DeliveryStateStore(abc.ABC):
    """Leases, cursors and lanes of webhook delivery (see the module docstring for the rules)."""

    @abc.abstractmethod
    async def load(self, tenant: str) -> DeliveryState:
        """The tenant's cursors, lanes and lease (rule 4): one read."""

    @abc.abstractmethod
    async def acquire(self, tenant: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Take the tenant's lease until ``now + duration``; None if another owner holds it."""

    @abc.abstractmethod
    async def renew(self, lease: Lease, now: datetime, duration: timedelta) -> Lease | None:
        """Extend a held lease to ``now + duration``; None if it was lost (taken over)."""

    @abc.abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give the lease back (nothing happens if it was lost)."""

    @abc.abstractmethod
    async def save_cursor(self, tenant: str, endpoint: str, position: str, etag: str | None) -> Cursor:
        """Move the endpoint's cursor to ``position``, guarded by ``etag`` (rule 2)."""

    @abc.abstractmethod
    async def rewind(self, tenant: str, endpoint: str, position: str) -> None:
        """Set the endpoint's cursor to ``position`` whatever it was (``webhook replay``): the
        deliverer's next save fails, and it delivers again from there."""

    @abc.abstractmethod
    async def save_lane(self, tenant: str, lane: Lane) -> None:
        """Store ``lane`` (rule 3); ValueError beyond :data:`MAX_LANE_EVENTS` positions."""

    @abc.abstractmethod
    async def drop_lane(self, tenant: str, endpoint: str, resource: str) -> None:
        """Remove a lane (no error when there is none)."""

    @abc.abstractmethod
    async def forget(self, tenant: str) -> None:
        """Remove the tenant's delivery state."""

    @abc.abstractmethod
    async def forget_endpoint(self, tenant: str, endpoint: str) -> None:
        """Remove ``endpoint``'s cursor and lanes in ``tenant`` (``webhook remove``: rows of an
        endpoint that no longer exists would stay forever); the other endpoints' rows and the
        lease stay. No error when there are none."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""


# ---- the stored form, shared by both implementations ------------------------------------------

LEASE_ROW = "lease"
CURSOR_PREFIX = "c|"
LANE_PREFIX = "l|"


def lane_key(endpoint: str, resource: str) -> str:
    """A lane's RowKey: ``l|{endpoint}|{resource}`` with the resource's ``/`` as ``:`` (a
    RowKey may not hold ``/``)."""
    return f"{LANE_PREFIX}{endpoint}|{resource.replace('/', ':')}"


def lane_fields(lane: Lane) -> dict[str, Any]:
    """A lane's properties but its positions (which the Table implementation stores as a JSON
    list, UTF-8, cut into Binary ``doc0..docN`` properties)."""
    if len(lane.positions) > MAX_LANE_EVENTS:
        raise ValueError(f"a lane holds at most {MAX_LANE_EVENTS} events")
    return {
        "endpoint": lane.endpoint,
        "resource": lane.resource,
        "attempts": lane.attempts,
        "nextAt": format_time(lane.next_at) if lane.next_at else "",
        "lastError": lane.last_error,
    }


def lane_from(fields: Mapping[str, Any], positions: list[str]) -> Lane:
    """The lane of :func:`lane_fields`' properties and its positions."""
    next_at = fields.get("nextAt") or ""
    return Lane(
        endpoint=fields["endpoint"],
        resource=fields["resource"],
        positions=list(positions),
        attempts=int(fields.get("attempts", 0)),
        next_at=parse_time(next_at) if next_at else None,
        last_error=fields.get("lastError", ""),
    )


def lease_holder(owner: str | None, until: datetime | None, now: datetime) -> str | None:
    """Who holds the lease at ``now`` (None: nobody, or it expired)."""
    return owner if owner and until is not None and until > now else None
