"""How many events wait for a webhook endpoint: its *backlog* (``python -m scim.admin webhook list``).

Per tenant the endpoint serves, the events waiting for it are those the deliverer keeps for it
(:mod:`scim.webhooks.delivery`, state in :mod:`scim.webhooks.delivery_state`):

- the events of its **lanes** (waiting behind a failed delivery, or for the endpoint to work
  again), and
- the events of the tenant's feed **after its cursor** (:func:`scim.webhooks.delivery.initial_position`
  for an endpoint that has no cursor there yet) that it wants (its ``events`` filter); an
  event also in a lane counts once.

Counting reads the feed (:meth:`~scim.store.base.DirectoryStore.read_events`, pages of
:data:`~scim.core.feed.MAX_LIMIT`) and stops at :data:`BACKLOG_CAP` events or after
:data:`MAX_READS` reads per tenant, whichever comes first, so that ``list`` stays fast whatever
the backlog: the count is then a lower bound (:attr:`TenantBacklog.capped`, shown ``10000+``).

The cursor trails the deliveries a little (the deliverer moves it up to the feed's settle
horizon, ``EVENTS_SETTLE_SECONDS``, and saves it about every second), so events delivered in
the last seconds may still count; a disabled endpoint's backlog grows until ``webhook enable``.

Nothing here writes; storage is reached only through the store contracts (the admin CLI passes
the Table stores, the tests the memory ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scim.core.feed import MAX_LIMIT
from scim.store.event_timing import wall_us
from scim.webhooks.delivery import initial_position

if TYPE_CHECKING:
    from scim.store.base import DirectoryStore
    from scim.webhooks import WebhookEndpoint
    from scim.webhooks.delivery_state import DeliveryState, DeliveryStateStore

__all__ = [
    "BACKLOG_CAP",
    "MAX_READS",
    "Backlog",
    "TenantBacklog",
    "endpoint_backlog",
    "served_tenants",
    "tenant_backlog",
]

BACKLOG_CAP = 10_000
"""Most events counted per tenant (beyond, the count shows as ``10000+``)."""
MAX_READS = 10
"""Most feed reads per tenant (of :data:`~scim.core.feed.MAX_LIMIT` events each)."""
CONCURRENT_TENANTS = 8
"""Tenants counted at the same time."""
_AHEAD_US = 3600 * 1_000_000
"""How far beyond now the feed is read (microseconds): every event committed so far."""


@dataclass(frozen=True)
class TenantBacklog:
    """The events waiting for one endpoint in one tenant: ``events`` in all (``lanes`` of them
    in its lanes); ``capped``: counting stopped early, at least ``events`` wait."""

    tenant: str
    events: int
    lanes: int
    capped: bool = False


@dataclass(frozen=True)
class Backlog:
    """The events waiting for one endpoint, over the tenants it serves (``tenants``, by name)."""

    tenants: tuple[TenantBacklog, ...] = ()

    @property
    def events(self) -> int:
        """How many events wait (at least, when :attr:`capped`)."""
        return sum(t.events for t in self.tenants)

    @property
    def capped(self) -> bool:
        """Whether counting stopped early in some tenant (then :attr:`events` is a lower bound)."""
        return any(t.capped for t in self.tenants)

    def __str__(self) -> str:
        """``12``, or ``10000+`` when capped."""
        return f"{self.events}{'+' if self.capped else ''}"

    def to_json(self) -> dict[str, object]:
        """``{"events": n, "capped": bool, "tenants": {name: n}}`` (tenants with events only)."""
        return {
            "events": self.events,
            "capped": self.capped,
            "tenants": {t.tenant: t.events for t in self.tenants if t.events or t.capped},
        }


def served_tenants(endpoint: WebhookEndpoint, tenants: Iterable[str]) -> list[str]:
    """Of the existing ``tenants``, those whose events ``endpoint`` is for (its ``tenants``
    filter; None: all), sorted."""
    return sorted({name for name in tenants if endpoint.serves(name)})


async def tenant_backlog(
    endpoint: WebhookEndpoint,
    tenant: str,
    directory: DirectoryStore,
    state: DeliveryState,
    *,
    now_us: int | None = None,
    cap: int = BACKLOG_CAP,
    max_reads: int = MAX_READS,
) -> TenantBacklog:
    """The events waiting for ``endpoint`` in ``tenant``, whose delivery ``state`` was loaded:
    its lanes' events, and the wanted events of the feed after its cursor (at most ``max_reads``
    reads, counting up to ``cap``)."""
    waiting = {p for lane in state.lanes if lane.endpoint == endpoint.id for p in lane.positions}
    in_lanes = len(waiting)
    cursor = state.cursors.get(endpoint.id)
    after = cursor.position if cursor is not None else initial_position(endpoint)
    before = (wall_us() if now_us is None else now_us) + _AHEAD_US
    count = in_lanes
    capped = False
    reads = 0
    while True:
        if count >= cap or reads >= max_reads:
            capped = True  # more may wait (a lower bound); the feed is not read further
            break
        events = await directory.read_events(tenant, after=after, before=before, limit=MAX_LIMIT)
        reads += 1
        if not events:  # a short page may have more after it: only an empty one ends the feed
            break
        for stored in events:
            if stored.position not in waiting and endpoint.wants(tenant, str(stored.event.get("type"))):
                count += 1
        after = events[-1].position
    return TenantBacklog(tenant, min(count, cap), min(in_lanes, cap), capped or count > cap)


async def endpoint_backlog(
    endpoint: WebhookEndpoint,
    tenants: Iterable[str],
    directory: DirectoryStore,
    deliveries: DeliveryStateStore,
    *,
    now_us: int | None = None,
    cap: int = BACKLOG_CAP,
    max_reads: int = MAX_READS,
    states: MutableMapping[str, DeliveryState] | None = None,
) -> Backlog:
    """The events waiting for ``endpoint`` in the tenants it serves of ``tenants`` (the names of
    the existing tenants: :func:`served_tenants`), a few tenants at a time: per tenant one
    :meth:`~scim.webhooks.delivery_state.DeliveryStateStore.load` and a few feed reads
    (:func:`tenant_backlog`).

    ``states`` caches the loaded delivery states by tenant, so that counting several endpoints
    loads each tenant's state once (``webhook list`` passes one dict for all its endpoints)."""
    cache: MutableMapping[str, DeliveryState] = {} if states is None else states
    limit = asyncio.Semaphore(CONCURRENT_TENANTS)
    now = wall_us() if now_us is None else now_us

    async def one(tenant: str) -> TenantBacklog:
        async with limit:
            state = cache.get(tenant)
            if state is None:
                state = cache[tenant] = await deliveries.load(tenant)
            return await tenant_backlog(endpoint, tenant, directory, state, now_us=now, cap=cap, max_reads=max_reads)

    counted = await asyncio.gather(*(one(t) for t in served_tenants(endpoint, tenants)))
    return Backlog(tuple(counted))
