"""The webhook delivery engine: every committed event to every endpoint that wants it, at least
once, each resource's events in order (issue 12, "Webhooks"; design in ``docs/events.md``,
"Webhook delivery").

**The event rows are the source of truth.** Nothing is queued in memory that is not in the
tenant's feed already: a deliverer reads the feed (:meth:`DirectoryStore.read_events`) and keeps
per endpoint a durable **cursor** (every event at or before it is delivered, waiting in a lane,
or not for the endpoint) and durable **lanes** (an endpoint's events of one resource waiting
behind a failed delivery), in :mod:`scim.webhooks.delivery_state`. An instance that dies after a commit
leaves the event in the feed after the cursor, and the next deliverer sends it.

**One deliverer per tenant** at a time (a lease, renewed while it works). It runs where the
events are made: after a SCIM write, the instance that committed it is *poked*
(:meth:`DeliveryEngine.poke`), takes the tenant's lease if it is free and delivers at once,
then keeps following the feed (every :data:`POLL_SECONDS`, so other instances' commits go out
too) until its cursors have caught up, about ``EVENTS_SETTLE_SECONDS`` after the last event. A
timer (:meth:`DeliveryEngine.sweep`, every 10 s in Azure) does the same for every tenant with
work and nobody on it: events of an instance that died, lanes whose retry is due.

**No event is skipped.** The deliverer reads the feed's unsettled tail (that is what makes it
fast) and remembers what it dispatched; a commit that becomes visible late (``docs/events.md``,
"Why the feed never skips an event") lands behind that tail, so every :data:`RESCAN_SECONDS`
the deliverer reads again from its cursors and dispatches what it had not seen. A cursor moves
only up to ``now - EVENTS_SETTLE_SECONDS`` as of the last complete rescan, and never past an
event still on its way: so every event before a cursor was seen. A deliverer that dies loses
only what it delivered after its cursors: those events go out again (at least once, same
``webhook-id``).

**Per-resource order.** An endpoint's events of one resource (a user; a group and its
membership events) go out one after another, each after the previous one succeeded; different
resources go out concurrently (:data:`CONCURRENCY` per endpoint). A failed delivery parks its
resource's lane: the lane is saved with every later event of that resource, and waits for its
retry (:func:`scim.core.delivery_schedule.next_attempt`: 5 s, 5 min, 30 min ... about three
days).

**An endpoint that fails.** After a failure, the endpoint is *failing*: new events do not try
it (their lanes are saved, waiting for it), and at most one attempt is in flight to it at a
time (a lane's retry, which probes it). The first success ends that: every waiting lane is due
at once, so a receiver that recovers gets its backlog within seconds, not at each lane's next
retry. ``410 Gone`` disables the endpoint; so does the last retry failing (after about three
days), with :attr:`DeliveryEngine.on_disabled` called (the operators' email). A disabled
endpoint keeps its cursor and lanes: ``webhook enable`` resumes where it stopped.

This module holds the engine (:class:`DeliveryEngine`: pokes, the timer's sweep, the lease, the
endpoints, outcomes on the registry); one tenant's deliverer while it holds the lease is
:mod:`scim.webhooks.pump`; what it keeps per endpoint (streams, lanes) is
:mod:`scim.webhooks.streams`; what is stored (cursors, lanes, leases) is :mod:`scim.webhooks.delivery_state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from scim.core.delivery_schedule import next_attempt
from scim.store.base import DirectoryStore, StoreError
from scim.telemetry import instruments
from scim.telemetry.instruments import background_context
from scim.webhooks import WebhookEndpoint, WebhookRegistry
from scim.webhooks.delivery_state import DeliveryStateStore
from scim.webhooks.pump import CONCURRENCY, LEASE, _Pump
from scim.webhooks.streams import _now, _wall_us, backlog_age, initial_position, resource_of

if TYPE_CHECKING:
    from scim.webhooks.sender import SendResult  # aiohttp: loaded by whoever sends

__all__ = [
    "CONCURRENCY",
    "LEASE",
    "POLL_SECONDS",
    "RESCAN_SECONDS",
    "SWEEP_SECONDS",
    "DeliveryEngine",
    "Schedule",
    "Sender",
    "initial_position",
    "resource_of",
]

logger = logging.getLogger("scim.webhooks.delivery")

POLL_SECONDS = 0.25
"""How often a working deliverer reads the feed's tail (a poke reads it at once)."""
RESCAN_SECONDS = 2.0
"""How often a working deliverer reads again from its cursors (late-visible commits)."""
ENDPOINTS_TTL = 5.0
"""Seconds the engine trusts its list of endpoints (added, removed, disabled ones show after it)."""
SUCCESS_RECORD_SECONDS = 60.0
"""How often a working endpoint's ``last_success`` is written at most."""
SWEEP_SECONDS = 50.0
"""How long a timer's sweep delivers at most (the timer runs every 10 s; Functions stops a
function after its timeout, minutes)."""
_FAR = 3600 * 1_000_000
"""How far beyond now :meth:`DeliveryEngine._has_work` looks (microseconds)."""

Sender = Callable[[str, Any], Awaitable["SendResult"]]
"""What sends one message: :meth:`scim.webhooks.sender.WebhookSender.send`."""
Schedule = Callable[[int, datetime, timedelta | None], datetime | None]
"""When a lane's next attempt is, after its n-th failure: :func:`scim.core.delivery_schedule.next_attempt`."""


class DeliveryEngine:
    """The process's deliverer (see the module docstring). ``send`` posts one message
    (:meth:`~scim.webhooks.sender.WebhookSender.send`); ``settle_seconds`` is the feed's horizon
    (``EVENTS_SETTLE_SECONDS``); ``on_disabled(endpoint, tenant, reason)`` is called when the
    engine disables an endpoint (the operators' email); ``schedule`` is the retry schedule
    (tests compress it)."""

    def __init__(
        self,
        store: DirectoryStore,
        webhooks: WebhookRegistry,
        state: DeliveryStateStore,
        send: Sender,
        *,
        settle_seconds: float,
        owner: str | None = None,
        on_disabled: Callable[[WebhookEndpoint, str, str], Awaitable[None]] | None = None,
        poll_seconds: float = POLL_SECONDS,
        rescan_seconds: float = RESCAN_SECONDS,
        schedule: Schedule = next_attempt,
    ) -> None:
        self.store = store
        self.webhooks = webhooks
        self.state = state
        self.send = send
        self.settle_us = int(settle_seconds * 1_000_000)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.on_disabled = on_disabled
        self.poll_seconds = poll_seconds
        self.rescan_seconds = rescan_seconds
        self.schedule = schedule
        self._endpoints: list[WebhookEndpoint] = []
        self._endpoints_at = -1e9
        self._endpoints_lock = asyncio.Lock()
        self._pumps: dict[str, _Pump] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._success_recorded: dict[str, float] = {}
        self.closed = False

    # ---- the endpoints ----------------------------------------------------------------------

    async def endpoints(self, *, fresh: bool = False) -> list[WebhookEndpoint]:
        """The registered endpoints, at most :data:`ENDPOINTS_TTL` old (``fresh``: read now)."""
        async with self._endpoints_lock:
            if fresh or time.monotonic() - self._endpoints_at > ENDPOINTS_TTL:
                self._endpoints = await self.webhooks.list()
                self._endpoints_at = time.monotonic()
            return self._endpoints

    async def endpoints_for(self, tenant: str) -> list[WebhookEndpoint]:
        """The enabled endpoints that want some of ``tenant``'s events."""
        return [e for e in await self.endpoints() if e.enabled and e.serves(tenant)]

    # ---- entry points -----------------------------------------------------------------------

    def poke(self, tenant: str) -> None:
        """``tenant`` committed events: deliver them now if this process may (non-blocking)."""
        if self.closed:
            return
        pump = self._pumps.get(tenant)
        if pump is not None:
            pump.wake.set()
            return
        self._spawn(self._start(tenant, only_if_work=False))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        # A context of its own: not the request's that poked (its correlation id, storage count
        # and span), as a deliverer goes on delivering other requests' events.
        task = asyncio.get_running_loop().create_task(coroutine, context=background_context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, tenant: str, *, only_if_work: bool, until: float | None = None) -> None:
        try:
            if tenant in self._pumps or not await self.endpoints_for(tenant):
                return
            if only_if_work and not await self._has_work(tenant):
                return
            await self.run(tenant, until=until)
        except StoreError as exc:
            logger.warning("webhook delivery for a tenant stopped: storage failed (%s)", type(exc).__name__)
        except Exception:
            logger.exception("webhook delivery for a tenant failed")

    async def _has_work(self, tenant: str) -> bool:
        """Whether a tenant's deliverer would find anything to do: a lane due (or waiting for an
        endpoint that may work again), or an event after an endpoint's cursor. Two reads.

        When there is nothing to do now, it records the tenant's ``scim.webhook.backlog_age``
        from what it read (lanes waiting for a retry, an event after a cursor); when there is,
        the deliverer does (``_Pump.record_backlog``, :mod:`scim.webhooks.pump`)."""
        state = await self.state.load(tenant)
        endpoints = {e.id: e for e in await self.endpoints_for(tenant)}
        now = _now()
        probing = {lane.endpoint for lane in state.lanes if lane.attempts > 0}
        oldest: str | None = None
        for lane in state.lanes:
            if lane.endpoint not in endpoints:
                continue
            if lane.next_at is not None and lane.next_at <= now:
                return True  # a retry is due
            if lane.next_at is None and lane.endpoint not in probing:
                return True  # waiting for an endpoint whose failed lane is gone (delivered or replayed)
            if lane.positions and (oldest is None or lane.positions[0] < oldest):
                oldest = lane.positions[0]
        positions = [
            state.cursors[e].position if e in state.cursors else initial_position(endpoints[e]) for e in endpoints
        ]
        if not positions:
            return False
        events = await self.store.read_events(tenant, after=min(positions), before=_wall_us() + _FAR, limit=1)
        if not events:
            instruments.webhook_backlog_age(tenant, backlog_age(oldest))
        return bool(events)

    async def sweep(self, tenants: Iterable[str], *, within: float = SWEEP_SECONDS) -> None:
        """The timer's pass: deliver for every tenant of ``tenants`` with work and no deliverer
        here, a few tenants at a time; returns when they are done (caught up, or waiting), or
        soon after ``within`` seconds (its deliverers then stop where they are, saving their
        progress: the next poke or sweep goes on), so that a timer run stays short."""
        if self.closed:
            return
        await self.endpoints(fresh=True)
        limit = asyncio.Semaphore(8)
        until = time.monotonic() + within

        async def one(tenant: str) -> None:
            async with limit:
                if time.monotonic() < until:
                    await self._start(tenant, only_if_work=True, until=until)

        await asyncio.gather(*(one(t) for t in tenants))

    async def run(self, tenant: str, *, until: float | None = None) -> bool:
        """Deliver ``tenant``'s events until caught up (or until the monotonic time ``until``);
        False if another deliverer holds the lease."""
        if tenant in self._pumps:
            self._pumps[tenant].wake.set()
            return True
        pump = _Pump(self, tenant, until)
        self._pumps[tenant] = pump  # before the first await: one deliverer per tenant per process
        try:
            lease = await self.state.acquire(tenant, self.owner, _now(), LEASE)
            if lease is None:
                return False
            pump.lease = lease
            try:
                await pump.run()
            finally:
                with contextlib.suppress(StoreError):
                    await self.state.release(pump.lease)
        finally:
            self._pumps.pop(tenant, None)
        return True

    async def idle(self, within: float = 60.0) -> None:
        """Wait (at most ``within`` seconds) until no deliverer this process started is working
        (tests, benchmarks, shutdown)."""
        deadline = time.monotonic() + within
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - time.monotonic()))

    async def close(self) -> None:
        """Stop delivering: deliverers stop (their leases are given back), tasks end."""
        self.closed = True
        for pump in list(self._pumps.values()):
            pump.stop()
        await self.idle(20.0)
        for task in list(self._tasks):
            task.cancel()

    # ---- outcomes on the registry -----------------------------------------------------------

    async def _record_success(self, endpoint: WebhookEndpoint) -> None:
        last = self._success_recorded.get(endpoint.id, -1e9)
        if endpoint.failing_since is None and time.monotonic() - last < SUCCESS_RECORD_SECONDS:
            return
        self._success_recorded[endpoint.id] = time.monotonic()
        with contextlib.suppress(StoreError):
            await self.webhooks.record_success(endpoint.id)
        # No longer failing, here too: else every delivery until the next read of the registry
        # would write the success again (thousands a second when a backlog drains).
        self._endpoints = [
            dataclasses.replace(e, failing_since=None) if e.id == endpoint.id else e for e in self._endpoints
        ]

    async def _disable(self, endpoint: WebhookEndpoint, tenant: str, reason: str) -> None:
        logger.warning("webhook endpoint %s disabled: %s", endpoint.id, reason)
        with contextlib.suppress(StoreError):
            await self.webhooks.disable(endpoint.id, reason)
        self._endpoints_at = -1e9  # read the registry again
        if self.on_disabled is not None:
            try:
                await self.on_disabled(endpoint, tenant, reason)
            except Exception:
                logger.exception("the alert of a disabled webhook endpoint failed")
