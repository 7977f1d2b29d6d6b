"""One tenant's deliverer while it holds the lease (:class:`_Pump`, run by
:meth:`scim.webhooks.delivery.DeliveryEngine.run`; the design is :mod:`scim.webhooks.delivery`'s docstring): it
reads the feed (the tail, and again from the cursors every ``rescan_seconds``, an earlier event
of a resource first), dispatches each event to the lanes of the endpoints that want it, delivers
the due lanes (:data:`CONCURRENCY` per endpoint, one at a time to a failing endpoint), parks a
failed lane for its retry, and makes its progress durable: the changed lanes, then the cursors
as far as is safe.

Telemetry (:mod:`scim.telemetry`): each delivery attempt is a ``scim.webhook.deliver`` span
(the root of a trace of its own: a deliverer runs in the background) and counts in
``scim.webhook.deliveries``; each pass records ``scim.webhook.backlog_age``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from scim.core.delivery_schedule import Outcome
from scim.core.feed import position_stamp
from scim.core.webhook_messages import build_message
from scim.store.base import StoredEvent, StoreError, VersionMismatch
from scim.telemetry import instruments
from scim.webhooks.delivery_state import MAX_LANE_EVENTS, Lease
from scim.webhooks.streams import _Lane, _now, _Stream, _stream, _wall_us, backlog_age, resource_of

if TYPE_CHECKING:
    from scim.webhooks.delivery import DeliveryEngine
    from scim.webhooks.sender import SendResult  # aiohttp: loaded by whoever sends

__all__ = ["BACKLOG_RECORD_SECONDS", "CONCURRENCY", "CURSOR_SAVE_SECONDS", "LEASE", "PAGE"]

logger = logging.getLogger("scim.webhooks.delivery")

LEASE = timedelta(seconds=30)
"""A deliverer's lease; renewed every third of it while it works."""
CONCURRENCY = 16
"""Deliveries in flight to one endpoint at most (of different resources)."""
PAGE = 1000
"""Events per feed read."""
CURSOR_SAVE_SECONDS = 1.0
"""How often a deliverer saves a moving cursor at most (and when it stops)."""
BACKLOG_RECORD_SECONDS = 1.0
"""How often a deliverer records ``scim.webhook.backlog_age`` at most (and when it stops)."""


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
        self._backlog_recorded_at = -1e9

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
                self.record_backlog()
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
            self.record_backlog(final=True)

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
                message = build_message(event, endpoint.signing_secrets(now), now)
                with instruments.span("scim.webhook.deliver", {instruments.TENANT: self.tenant}, "client") as span:
                    result = await self.engine.send(endpoint.url, message)
                    outcome = result.outcome
                    delivered = outcome is Outcome.SUCCESS
                    instruments.webhook_delivery(self.tenant, delivered)
                    instruments.set_attributes(
                        span,
                        {
                            instruments.OUTCOME: "delivered" if delivered else "failed",
                            instruments.STATUS_CODE: result.status or 0,
                        },
                        failed=not delivered,
                    )
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

    def record_backlog(self, *, final: bool = False) -> None:
        """Record ``scim.webhook.backlog_age``: the age of the oldest event this deliverer holds
        for an endpoint (waiting in a lane, or on its way), 0 when none; at most every
        :data:`BACKLOG_RECORD_SECONDS` (a pass may follow each delivery), and when it stops
        (``final``). Telemetry off: nothing."""
        if instruments.active() is None:
            return
        moment = time.monotonic()
        if not final and moment - self._backlog_recorded_at < BACKLOG_RECORD_SECONDS:
            return
        self._backlog_recorded_at = moment
        oldest: str | None = None
        for stream in self.streams.values():
            if stream.stopped:
                continue
            firsts = [lane.lane.positions[0] for lane in stream.lanes.values() if lane.lane.positions]
            if stream.outstanding:
                firsts.append(min(stream.outstanding))
            if firsts and (oldest is None or min(firsts) < oldest):
                oldest = min(firsts)
        instruments.webhook_backlog_age(self.tenant, backlog_age(oldest))

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
