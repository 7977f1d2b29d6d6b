"""The in-memory :class:`~scim.webhooks.delivery_state.DeliveryStateStore`: tests and the memory runtime.

Rows are kept as the Table implementation keeps them (a lease, ``c|`` cursors, ``l|`` lanes per
tenant; times to the millisecond, as stored) with a counter as ETag; every method does its work
in one synchronous step, so concurrent calls see each other's changes whole, as storage
transactions would.
"""

from __future__ import annotations

import copy
import itertools
from datetime import datetime, timedelta

from scim.store.base import VersionMismatch
from scim.webhooks import format_time, parse_time
from scim.webhooks.delivery_state import (
    Cursor,
    DeliveryState,
    DeliveryStateStore,
    Lane,
    Lease,
    lane_fields,
    lane_from,
    lease_holder,
)

__all__ = ["MemoryDeliveryStateStore"]


class MemoryDeliveryStateStore(DeliveryStateStore):
    def __init__(self) -> None:
        self._etags = itertools.count(1)
        self._leases: dict[str, Lease] = {}
        self._cursors: dict[str, dict[str, Cursor]] = {}
        self._lanes: dict[str, dict[tuple[str, str], Lane]] = {}

    def _etag(self) -> str:
        return f"m{next(self._etags)}"

    def _hold(self, tenant: str, owner: str, until: datetime) -> Lease:
        """Store the lease with ``until`` as the Table row keeps it (to the millisecond); the
        holder's copy has it as given, as the Table implementation returns it."""
        etag = self._etag()
        self._leases[tenant] = Lease(tenant, owner, parse_time(format_time(until)), etag)
        return Lease(tenant, owner, until, etag)

    async def load(self, tenant: str) -> DeliveryState:
        lease = self._leases.get(tenant)
        return DeliveryState(
            tenant,
            dict(self._cursors.get(tenant, {})),
            [copy.deepcopy(lane) for _, lane in sorted(self._lanes.get(tenant, {}).items())],
            lease.owner if lease else None,
            lease.until if lease else None,
        )

    async def acquire(self, tenant: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        current = self._leases.get(tenant)
        holder = lease_holder(current.owner, current.until, now) if current else None
        if holder is not None and holder != owner:
            return None
        return self._hold(tenant, owner, now + duration)

    async def renew(self, lease: Lease, now: datetime, duration: timedelta) -> Lease | None:
        current = self._leases.get(lease.tenant)
        if current is None or current.etag != lease.etag:
            return None
        return self._hold(lease.tenant, lease.owner, now + duration)

    async def release(self, lease: Lease) -> None:
        current = self._leases.get(lease.tenant)
        if current is not None and current.etag == lease.etag:
            del self._leases[lease.tenant]

    async def save_cursor(self, tenant: str, endpoint: str, position: str, etag: str | None) -> Cursor:
        cursors = self._cursors.setdefault(tenant, {})
        current = cursors.get(endpoint)
        if (current.etag if current else None) != etag:
            raise VersionMismatch(f"the cursor of {endpoint} changed")
        cursor = Cursor(endpoint, position, self._etag())
        cursors[endpoint] = cursor
        return cursor

    async def rewind(self, tenant: str, endpoint: str, position: str) -> None:
        self._cursors.setdefault(tenant, {})[endpoint] = Cursor(endpoint, position, self._etag())

    async def save_lane(self, tenant: str, lane: Lane) -> None:
        stored = lane_from(lane_fields(lane), lane.positions)  # the Table row's limit and precision
        self._lanes.setdefault(tenant, {})[(lane.endpoint, lane.resource)] = stored

    async def drop_lane(self, tenant: str, endpoint: str, resource: str) -> None:
        self._lanes.get(tenant, {}).pop((endpoint, resource), None)

    async def forget(self, tenant: str) -> None:
        self._leases.pop(tenant, None)
        self._cursors.pop(tenant, None)
        self._lanes.pop(tenant, None)

    async def forget_endpoint(self, tenant: str, endpoint: str) -> None:
        self._cursors.get(tenant, {}).pop(endpoint, None)
        lanes = self._lanes.get(tenant, {})
        for key in [key for key in lanes if key[0] == endpoint]:
            del lanes[key]
