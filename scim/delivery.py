"""The webhook delivery engine: every committed event to every endpoint that wants it, at least
once, each resource's events in order (issue 12, "Webhooks"; design in ``docs/events.md``,
"Webhook delivery").

**The event rows are the source of truth.** Nothing is queued in memory that is not in the
tenant's feed already: a deliverer reads the feed (:meth:`DirectoryStore.read_events`) and keeps
per endpoint a durable **cursor** (every event at or before it is delivered, waiting in a lane,
or not for the endpoint) and durable **lanes** (an endpoint's events of one resource waiting
behind a failed delivery), in :mod:`scim.delivery_state`. An instance that dies after a commit
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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from scim.core.delivery_schedule import Outcome, next_attempt
from scim.core.events import MEMBERSHIP_TYPES
from scim.core.feed import position_stamp
from scim.core.webhook_messages import build_message
from scim.delivery_state import MAX_LANE_EVENTS, Cursor, DeliveryState, DeliveryStateStore, Lane, Lease
from scim.store.base import DirectoryStore, StoredEvent, StoreError, VersionMismatch
from scim.webhooks import WebhookEndpoint, WebhookRegistry, parse_time

if TYPE_CHECKING:
    from scim.webhook_sender import SendResult  # aiohttp: loaded by whoever sends

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

logger = logging.getLogger("scim.delivery")

POLL_SECONDS = 0.25
"""How often a working deliverer reads the feed's tail (a poke reads it at once)."""
RESCAN_SECONDS = 2.0
"""How often a working deliverer reads again from its cursors (late-visible commits)."""
LEASE = timedelta(seconds=30)
"""A deliverer's lease; renewed every third of it while it works."""
CONCURRENCY = 16
"""Deliveries in flight to one endpoint at most (of different resources)."""
PAGE = 1000
"""Events per feed read."""
ENDPOINTS_TTL = 5.0
"""Seconds the engine trusts its list of endpoints (added, removed, disabled ones show after it)."""
SUCCESS_RECORD_SECONDS = 60.0
"""How often a working endpoint's ``last_success`` is written at most."""
SWEEP_SECONDS = 50.0
"""How long a timer's sweep delivers at most (the timer runs every 10 s; Functions stops a
function after its timeout, minutes)."""
CURSOR_SAVE_SECONDS = 1.0
"""How often a deliverer saves a moving cursor at most (and when it stops)."""
_FAR = 3600 * 1_000_000
"""How far beyond now :meth:`DeliveryEngine._has_work` looks (microseconds)."""

Sender = Callable[[str, Any], Awaitable["SendResult"]]
"""What sends one message: :meth:`scim.webhook_sender.WebhookSender.send`."""
Schedule = Callable[[int, datetime, timedelta | None], datetime | None]
"""When a lane's next attempt is, after its n-th failure: :func:`scim.core.delivery_schedule.next_attempt`."""


def resource_of(event: dict[str, Any]) -> str:
    """The resource an event belongs to, for ordering: ``User/{id}`` or ``Group/{id}``; a
    membership event belongs to its group."""
    data = event.get("data") or {}
    if event.get("type") in MEMBERSHIP_TYPES:
        return f"Group/{(data.get('group') or {}).get('id', '')}"
    obj = data.get("object") or {}
    kind = "Group" if str(event.get("type", "")).startswith("group.") else "User"
    return f"{kind}/{obj.get('id', '')}"


def initial_position(endpoint: WebhookEndpoint) -> str:
    """Where a new endpoint starts: the events committed after it was registered."""
    return f"{int(parse_time(endpoint.created).timestamp() * 1_000_000):016d}|"


def _now() -> datetime:
    return datetime.now(UTC)


def _wall_us() -> int:
    return time.time_ns() // 1000


@dataclass
class _Lane:
    """A lane being worked on: the stored form, the events' bodies known so far, whether it is
    stored (``saved``) and whether it changed since (``dirty``)."""

    lane: Lane
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    saved: bool = False
    dirty: bool = False
    running: bool = False

    def due(self, now: datetime, failing: bool) -> bool:
        if not self.lane.positions or self.running:
            return False
        if self.lane.next_at is None:
            return not failing and self.lane.attempts == 0
        return self.lane.next_at <= now


@dataclass
class _Stream:
    """One endpoint's delivery of one tenant's events while the lease is held."""

    endpoint: WebhookEndpoint
    cursor: Cursor | None
    position: str
    seen: set[str] = field(default_factory=set)
    outstanding: set[str] = field(default_factory=set)
    lanes: dict[str, _Lane] = field(default_factory=dict)
    failing: bool = False
    stopped: bool = False
    in_flight: int = 0
    cursor_saved_at: float = 0.0

    def lane(self, resource: str) -> _Lane:
        if resource not in self.lanes:
            self.lanes[resource] = _Lane(Lane(self.endpoint.id, resource))
        return self.lanes[resource]

    def add_saved(self, lane: Lane) -> None:
        """A lane loaded from storage: its events are handled (the feed may show them again)."""
        self.lanes[lane.resource] = _Lane(lane, saved=True)
        self.failing = self.failing or lane.attempts > 0
        self.seen.update(p for p in lane.positions if p > self.position)

    def busy(self) -> bool:
        return bool(self.outstanding) or self.in_flight > 0 or any(x.dirty for x in self.lanes.values())


def _stream(endpoint: WebhookEndpoint, state: DeliveryState) -> _Stream:
    """An endpoint's stream as stored: its cursor (or its registration) and its saved lanes."""
    cursor = state.cursors.get(endpoint.id)
    stream = _Stream(endpoint, cursor, cursor.position if cursor else initial_position(endpoint))
    for lane in state.lanes:
        if lane.endpoint == endpoint.id:
            stream.add_saved(lane)
    return stream


class DeliveryEngine:
    """The process's deliverer (see the module docstring). ``send`` posts one message
    (:meth:`~scim.webhook_sender.WebhookSender.send`); ``settle_seconds`` is the feed's horizon
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

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
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
        endpoint that may work again), or an event after an endpoint's cursor. Two reads."""
        state = await self.state.load(tenant)
        endpoints = {e.id: e for e in await self.endpoints_for(tenant)}
        now = _now()
        probing = {lane.endpoint for lane in state.lanes if lane.attempts > 0}
        for lane in state.lanes:
            if lane.endpoint not in endpoints:
                continue
            if lane.next_at is not None and lane.next_at <= now:
                return True  # a retry is due
            if lane.next_at is None and lane.endpoint not in probing:
                return True  # waiting for an endpoint whose failed lane is gone (delivered or replayed)
        positions = [
            state.cursors[e].position if e in state.cursors else initial_position(endpoints[e]) for e in endpoints
        ]
        if not positions:
            return False
        events = await self.store.read_events(tenant, after=min(positions), before=_wall_us() + _FAR, limit=1)
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


class _Pump:
    """One tenant's deliverer while it holds the lease (see the module docstring)."""

    def __init__(self, engine: DeliveryEngine, tenant: str, until: float | None = None) -> None:
        self.engine = engine
        self.tenant = tenant
        self.until = until
        self.lease = Lease(tenant, engine.owner, _now(), "")  # until acquired
        self.wake = asyncio.Event()
        self.streams: dict[str, _Stream] = {}
        self.tail: str | None = None
        self.covered = ""
        self.rescanned_at = -1e9
        self.last_seen: dict[str, int] = {}
        """Per resource, the latest stamp of its events this deliverer has dispatched."""
        self._stopping = False
        self._workers: set[asyncio.Task[None]] = set()
        self._flushing = asyncio.Lock()

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()

    async def run(self) -> None:
        engine = self.engine
        try:
            await self._load()
            while not self._stopping and any(not s.stopped for s in self.streams.values()):
                self.wake.clear()
                rescan = time.monotonic() - self.rescanned_at >= engine.rescan_seconds
                await self._read(rescan)
                await self._schedule()
                await self._flush()
                if await self._done() or (self.until is not None and time.monotonic() > self.until):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), engine.poll_seconds)
                if not await self._renew():
                    break
                await self._refresh_endpoints()
        finally:
            self._stopping = True
            if self._workers:
                await asyncio.gather(*self._workers, return_exceptions=True)
            with contextlib.suppress(StoreError):
                await self._flush(final=True)

    # ---- state ------------------------------------------------------------------------------

    async def _load(self) -> None:
        state = await self.engine.state.load(self.tenant)
        self.streams = {e.id: _stream(e, state) for e in await self.engine.endpoints_for(self.tenant)}
        self.tail = None
        self.covered = ""
        self.rescanned_at = -1e9

    async def _refresh_endpoints(self) -> None:
        current = {e.id: e for e in await self.engine.endpoints_for(self.tenant)}
        for endpoint_id in list(self.streams):
            if endpoint_id not in current:
                self.streams[endpoint_id].stopped = True
                del self.streams[endpoint_id]
            else:
                self.streams[endpoint_id].endpoint = current[endpoint_id]
        if any(e not in self.streams for e in current):
            state = await self.engine.state.load(self.tenant)
            for endpoint_id, endpoint in current.items():
                if endpoint_id in self.streams:
                    continue
                self.streams[endpoint_id] = _stream(endpoint, state)
                self.tail = None  # read the new endpoint's events from its cursor
                self.covered = ""

    async def _renew(self) -> bool:
        if (self.lease.until - _now()).total_seconds() > LEASE.total_seconds() * 2 / 3:
            return True
        renewed = await self.engine.state.renew(self.lease, _now(), LEASE)
        if renewed is None:
            logger.warning("webhook delivery lost a tenant's lease; another deliverer goes on")
            return False
        self.lease = renewed
        return True

    # ---- reading the feed -------------------------------------------------------------------

    async def _read(self, rescan: bool) -> None:
        """Dispatch the events after the tail, or on a rescan after the cursors (from where the
        previous rescan had seen everything, if later), stamped before now: events committed
        meanwhile are the next read's (reading until no page is left would chase the writers)."""
        if self.tail is None:
            rescan = True
        live = [s.position for s in self.streams.values() if not s.stopped]
        if not live:
            return
        started = _wall_us()
        after = max(min(live), self.covered) if rescan or self.tail is None else self.tail
        read = await self._read_from(after, started + 1)
        if not rescan:
            read = await self._with_predecessors(read, position_stamp(min(live)))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("read %s after %s: %s", "again" if rescan else "tail", after, [e.position for e in read])
        for stored in read:
            self._dispatch(stored)
            if self.tail is None or stored.position > self.tail:
                self.tail = stored.position
        if self.tail is None:
            self.tail = min(live)
        if rescan:
            self.rescanned_at = time.monotonic()
            self.covered = f"{started - self.engine.settle_us:016d}|"

    async def _read_from(self, after: str, before: int) -> list[StoredEvent]:
        """Every event after ``after`` stamped before ``before``, page by page until an empty one."""
        found: list[StoredEvent] = []
        while True:
            events = await self.engine.store.read_events(self.tenant, after=after, before=before, limit=PAGE)
            if not events:
                return found
            found += events
            after = events[-1].position

    async def _with_predecessors(self, read: list[StoredEvent], floor: int) -> list[StoredEvent]:
        """``read`` (a tail read) with the earlier events of its resources that it missed: an
        event whose resource changed (``previous``) after ``floor`` (the cursors) at a time this
        deliverer has seen no event of that resource makes it read the feed again from that time
        to the end of ``read``, so that each resource's events are dispatched in order. The
        earlier event may be behind the tail (it became visible late) or inside the range the
        tail read covered (Azurite's queries are not snapshots: a commit landing during one may
        show its later rows without its earlier ones). One more read, only when a commit became
        visible out of order (or a change made no event)."""
        gap = None
        pending: dict[str, int] = {}
        for stored in read:
            resource = resource_of(stored.event)
            seen = max(self.last_seen.get(resource, 0), pending.get(resource, 0))
            if stored.previous > floor and stored.previous > seen:
                gap = stored.previous if gap is None else min(gap, stored.previous)
            pending[resource] = max(pending.get(resource, 0), position_stamp(stored.position))
        if gap is None or not read:
            return read
        logger.debug("an earlier event of a resource may be behind the tail: reading from %d again", gap)
        earlier = await self._read_from(f"{gap:016d}", position_stamp(read[-1].position) + 1)
        merged = {e.position: e for e in earlier}
        merged.update((e.position, e) for e in read)
        for stored in read:  # checked: do not look again for these resources' predecessors
            resource = resource_of(stored.event)
            self.last_seen[resource] = max(self.last_seen.get(resource, 0), stored.previous)
        return [merged[p] for p in sorted(merged)]

    def _dispatch(self, stored: StoredEvent) -> None:
        position, event = stored.position, stored.event
        resource = resource_of(event)
        self.last_seen[resource] = max(self.last_seen.get(resource, 0), position_stamp(position))
        for stream in self.streams.values():
            if position <= stream.position or position in stream.seen:
                continue
            stream.seen.add(position)
            if not stream.endpoint.wants(self.tenant, str(event.get("type"))):
                continue
            lane = stream.lane(resource)
            lane.lane.positions.append(position)
            lane.events[position] = event
            stream.outstanding.add(position)
            if lane.saved or stream.failing:
                lane.dirty = True  # durable once the lane is saved

    # ---- delivering -------------------------------------------------------------------------

    async def _schedule(self) -> None:
        now = _now()
        for stream in self.streams.values():
            if stream.stopped:
                continue
            limit = 1 if stream.failing else CONCURRENCY
            due = [lane for lane in stream.lanes.values() if lane.due(now, stream.failing)]
            due.sort(key=lambda x: x.lane.next_at or now)
            for lane in due:
                if stream.in_flight >= limit:
                    break
                lane.running = True
                stream.in_flight += 1
                task = asyncio.ensure_future(self._work(stream, lane))
                self._workers.add(task)
                task.add_done_callback(self._workers.discard)

    async def _work(self, stream: _Stream, lane: _Lane) -> None:
        """Deliver ``lane``'s events in order until it is empty, or one fails."""
        try:
            while lane.lane.positions and not stream.stopped and not self._stopping:
                position = lane.lane.positions[0]
                event = lane.events.get(position) or await self._event_at(position)
                if event is None:  # purged by retention meanwhile
                    self._delivered(stream, lane, position)
                    continue
                endpoint = stream.endpoint
                now = _now()
                result = await self.engine.send(endpoint.url, build_message(event, endpoint.signing_secrets(now), now))
                outcome = result.outcome
                if outcome is Outcome.SUCCESS:
                    self._delivered(stream, lane, position)
                    if stream.failing:
                        self._recovered(stream)
                    await self.engine._record_success(endpoint)
                    if stream.endpoint.failing_since is not None:
                        stream.endpoint = dataclasses.replace(stream.endpoint, failing_since=None)
                    continue
                if outcome is Outcome.GONE:
                    await self._stop_endpoint(stream, lane, f"{result.error} (410 Gone: the receiver asked to stop)")
                    return
                await self._failed(stream, lane, result)
                return
        except StoreError as exc:
            logger.warning("webhook delivery: storage failed (%s); the next run goes on", type(exc).__name__)
            stream.stopped = True
        except Exception:  # a bug, or the sender closed at shutdown: the next run goes on
            logger.exception("webhook delivery to an endpoint stopped")
            stream.stopped = True
        finally:
            lane.running = False
            stream.in_flight -= 1
            self.wake.set()

    async def _event_at(self, position: str) -> dict[str, Any] | None:
        """The event at ``position`` (a lane loaded from storage): one read of its stamp's rows."""
        stamp = position_stamp(position)
        events = await self.engine.store.read_events(self.tenant, after=f"{stamp:016d}|", before=stamp + 1, limit=PAGE)
        return next((e.event for e in events if e.position == position), None)

    def _delivered(self, stream: _Stream, lane: _Lane, position: str) -> None:
        lane.lane.positions.pop(0)
        lane.events.pop(position, None)
        lane.lane.attempts, lane.lane.next_at, lane.lane.last_error = 0, None, ""
        stream.outstanding.discard(position)
        if lane.saved:
            lane.dirty = True
        elif not lane.lane.positions:
            stream.lanes.pop(lane.lane.resource, None)

    def _recovered(self, stream: _Stream) -> None:
        """The endpoint works again: every waiting lane is due now."""
        stream.failing = False
        now = _now()
        for other in stream.lanes.values():
            if other.lane.positions and other.lane.next_at is not None:
                other.lane.next_at = now
            elif other.lane.positions:
                other.lane.attempts = 0

    async def _failed(self, stream: _Stream, lane: _Lane, result: SendResult) -> None:
        error = result.error or "delivery failed"
        now = _now()
        lane.lane.attempts += 1
        lane.lane.last_error = error
        retry = self.engine.schedule(lane.lane.attempts, now, result.retry_after)
        stream.failing = True
        with contextlib.suppress(StoreError):
            endpoint = await self.engine.webhooks.record_failure(stream.endpoint.id, error, now)
            stream.endpoint = endpoint
        if retry is None:
            await self._stop_endpoint(
                stream, lane, f"the retry window is over ({lane.lane.attempts} attempts); last error: {error}"
            )
            return
        lane.lane.next_at = retry
        await self._park(stream, lane)

    async def _stop_endpoint(self, stream: _Stream, lane: _Lane, reason: str) -> None:
        await self._park(stream, lane)
        stream.stopped = True
        await self.engine._disable(stream.endpoint, self.tenant, reason)

    async def _park(self, stream: _Stream, lane: _Lane) -> None:
        """Save the failed ``lane`` and every lane of the endpoint not stored yet: they wait for it now."""
        lane.dirty = True
        for other in stream.lanes.values():
            if other.lane.positions and not other.saved:
                other.dirty = True
        await self._flush()

    # ---- making progress durable ------------------------------------------------------------

    async def _flush(self, *, final: bool = False) -> None:
        """Save the changed lanes, then move the cursors as far as is safe (at most every
        :data:`CURSOR_SAVE_SECONDS`, or now when ``final``). One flush at a time (the loop's and
        a failed delivery's): two would race their writes of one lane (a drop overtaken by an
        older save would bring the lane back)."""
        async with self._flushing:
            await self._flush_now(final)

    async def _flush_now(self, final: bool) -> None:
        for stream in list(self.streams.values()):
            for lane in list(stream.lanes.values()):
                if lane.dirty:
                    await self._save_lane(stream, lane)
            if final or time.monotonic() - stream.cursor_saved_at >= CURSOR_SAVE_SECONDS:
                await self._save_cursor(stream)

    async def _save_lane(self, stream: _Stream, lane: _Lane) -> None:
        lane.dirty = False
        state = self.engine.state
        if not lane.lane.positions:
            if lane.saved:
                await state.drop_lane(self.tenant, lane.lane.endpoint, lane.lane.resource)
            stream.lanes.pop(lane.lane.resource, None)
            return
        if len(lane.lane.positions) > MAX_LANE_EVENTS:
            del lane.lane.positions[MAX_LANE_EVENTS:]  # the rest stays after the cursor, in the feed
            stream.stopped = True
            self._spawn_disable(stream, f"more than {MAX_LANE_EVENTS} events of one resource wait for it")
        await state.save_lane(self.tenant, lane.lane)
        lane.saved = True
        stream.outstanding.difference_update(lane.lane.positions)

    def _spawn_disable(self, stream: _Stream, reason: str) -> None:
        task = asyncio.ensure_future(self.engine._disable(stream.endpoint, self.tenant, reason))
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    async def _save_cursor(self, stream: _Stream) -> None:
        """Move the cursor to the last event seen that is settled (before ``covered``) with no
        event before it still on its way."""
        first_open = min(stream.outstanding) if stream.outstanding else None
        candidates = [p for p in stream.seen if p < self.covered and (first_open is None or p < first_open)]
        if not candidates:
            return
        position = max(candidates)
        stream.seen = {p for p in stream.seen if p > position}
        if position <= stream.position:
            return
        stream.position = position
        try:
            stream.cursor = await self.engine.state.save_cursor(
                self.tenant, stream.endpoint.id, position, stream.cursor.etag if stream.cursor else None
            )
        except VersionMismatch:
            logger.info("a webhook cursor was moved (replay, or another deliverer): loading the state again")
            self._stopping = True
            return
        stream.cursor_saved_at = time.monotonic()

    async def _done(self) -> bool:
        """Whether everything seen is delivered or saved, and every cursor has caught up."""
        now = _now()
        for stream in self.streams.values():
            if stream.stopped:
                continue
            if stream.busy() or any(lane.due(now, stream.failing) for lane in stream.lanes.values()):
                return False
            if stream.seen:  # not settled yet: the cursor has events to move past
                return False
        return True
