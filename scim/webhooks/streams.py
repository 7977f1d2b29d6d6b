"""What a tenant's deliverer keeps per endpoint while it holds the lease (:mod:`scim.webhooks.delivery`):
the endpoint's **stream** (its cursor, the events it has seen, those still on their way) and its
**lanes** being worked on (an endpoint's events of one resource, delivered one after another);
which resource an event is ordered under (:func:`resource_of`) and where a new endpoint starts
(:func:`initial_position`). The stored forms are :mod:`scim.webhooks.delivery_state`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scim.core.events import MEMBERSHIP_TYPES
from scim.core.feed import position_stamp
from scim.webhooks import WebhookEndpoint, parse_time
from scim.webhooks.delivery_state import Cursor, DeliveryState, Lane

__all__ = ["backlog_age", "initial_position", "resource_of"]


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


def backlog_age(oldest: str | None) -> float:
    """Seconds since the event at position ``oldest`` was stamped (``scim.webhook.backlog_age``);
    0 for None: nothing waits."""
    if oldest is None:
        return 0.0
    return max(0.0, (_wall_us() - position_stamp(oldest)) / 1_000_000)


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
