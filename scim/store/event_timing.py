"""When an event may commit: the stamps of events and the bounds that keep the feed from skipping one.

Every event is stamped with its commit time, in microseconds since the epoch, and the feed
(issue 12) is read in stamp order. A cursor on commit time alone skips commits that become
visible late: a reader that has passed stamp ``s`` never goes back, so an event stamped ``s``
that a slow write makes visible after the reader passed it is lost for that reader. The rule
(``docs/events.md``, "Why the feed never skips an event"):

- **the reader** serves only events stamped before ``now - EVENTS_SETTLE_SECONDS``
  (:func:`settled_before`);
- **the writer** guarantees that an event is visible within that horizon of its stamp, or
  never:

  1. a transaction is stamped when it is built, and an attempt to send it is refused later
     than :data:`MAX_SEND_DELAY` after its stamp (:class:`SendTicket`, checked by the pipeline
     policy :class:`scim.store.event_policy.EventSendPolicy` on every attempt, azure-core's
     retries included, just before the transport): the store builds it again with a fresh
     stamp (at most :data:`STAMP_ATTEMPTS` times), so a request that waited for a retry's
     back-off, the event loop or the operation's other calls cannot commit an old stamp;
  2. the transaction carries the Table service's server timeout, :data:`SERVER_TIMEOUT`
     seconds (learn.microsoft.com, "Setting timeouts for Table service operations": an
     insert, update or delete not finished within it fails), so once storage has the request
     it commits within that time or not at all;
  3. between the two, the request is on its way: the TCP connect (bounded by the client's
     3 s ``connection_timeout``) and the transfer.

  So an event is visible at most ``MAX_SEND_DELAY + 3 + SERVER_TIMEOUT`` = 10 s (plus network
  transit) after its stamp; ``EVENTS_SETTLE_SECONDS`` (15 s) leaves 5 s for transit and for
  the clock difference between the writing and the reading instance (Azure's hosts keep
  their clocks synchronised within milliseconds).

Stamps also order one resource's events (:class:`EventClock`): a stamp is never earlier than
the previous stamp of the process, nor than 1 ms after the resource's previous change the
store read (its ``lastModified`` and the stamp of its last event), so an instance whose clock
is behind still stamps after the commit it read; the write is guarded by the resource's
ETag, so that commit is the resource's previous one.

Every function here is pure but :func:`wall_us` (the clock).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = [
    "EVENTS_SETTLE_SECONDS",
    "MAX_SEND_DELAY",
    "SERVER_TIMEOUT",
    "STAMP_ATTEMPTS",
    "EventClock",
    "SendTicket",
    "StaleStamp",
    "settled_before",
    "stamp_time",
    "time_us",
    "wall_us",
]

EVENTS_SETTLE_SECONDS = 15.0
"""The feed serves events stamped at least this long ago (setting ``EVENTS_SETTLE_SECONDS``)."""
MAX_SEND_DELAY = 2.0
"""Seconds after its stamp past which an attempt to send a transaction is refused (rebuilt)."""
SERVER_TIMEOUT = 5
"""The Table service's server timeout of the directory's transactions (``?timeout=``), seconds.
Below the client's 6 s read timeout (``scim.store.azure_client.READ_TIMEOUT``), so a slow
storage fails the transaction before the client gives up on it."""
STAMP_ATTEMPTS = 3
"""Times a transaction is stamped and built before the store gives up (StoreUnavailable)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = 1000


def wall_us() -> int:
    """The wall clock, in microseconds since the epoch."""
    return time.time_ns() // 1000


def stamp_time(stamp: int) -> str:
    """A stamp as ``meta.lastModified`` writes times: RFC 3339 UTC with milliseconds, truncated.

    >>> stamp_time(1_796_148_000_123_999)
    '2026-12-01T18:00:00.123Z'
    """
    moment = _EPOCH + timedelta(microseconds=stamp)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def time_us(text: object) -> int | None:
    """An RFC 3339 time (as the store writes ``lastModified``) in microseconds, None if it is not one."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def settled_before(now: int | None = None, settle: float | None = None) -> int:
    """The feed's horizon: stamps before it are served (``now - EVENTS_SETTLE_SECONDS``)."""
    seconds = EVENTS_SETTLE_SECONDS if settle is None else settle
    return (wall_us() if now is None else now) - int(seconds * 1_000_000)


def floor_after(*times: object) -> int:
    """The earliest stamp allowed after a resource's previous change: 1 ms after the latest of
    ``times`` (``lastModified`` strings or stamps; others ignored), counted from its millisecond,
    so that the new ``lastModified`` is strictly later."""
    latest = 0
    for value in times:
        us = value if isinstance(value, int) and not isinstance(value, bool) else time_us(value)
        if us is not None:
            latest = max(latest, us)
    return 0 if latest == 0 else latest - latest % _MS + _MS


class EventClock:
    """Stamps of one store (one per process): never earlier than the previous one, nor than
    ``not_before``. ``wall`` is the clock (tests replace it)."""

    def __init__(self, wall: Callable[[], int] = wall_us) -> None:
        self.wall = wall
        self._last = 0

    def stamp(self, not_before: int = 0) -> int:
        """A new stamp: the wall clock, raised to ``not_before`` and past the previous stamp."""
        stamp = max(self.wall(), self._last + 1, not_before)
        self._last = stamp
        return stamp


class StaleStamp(Exception):
    """An attempt to send a stamped transaction came too late (:data:`MAX_SEND_DELAY`); it was
    not sent. ``sent``: an earlier attempt of it may have reached storage."""

    def __init__(self, stamp: int, late: float, sent: bool) -> None:
        super().__init__(f"a transaction stamped {late:.3f} s ago was not sent")
        self.stamp = stamp
        self.sent = sent


@dataclass
class SendTicket:
    """What the pipeline policy checks before each attempt of one transaction: its ``stamp``
    (None: no event, only the server timeout applies) and the clock it was stamped by.
    ``attempts`` counts the attempts admitted (azure-core retries a POST after 500/503/504)."""

    stamp: int | None
    wall: Callable[[], int] = field(default=wall_us)
    attempts: int = 0

    def admit(self) -> None:
        """Count one attempt, or raise :class:`StaleStamp` if it is too late to send it."""
        if self.stamp is not None:
            late = (self.wall() - self.stamp) / 1_000_000
            if late > MAX_SEND_DELAY:
                raise StaleStamp(self.stamp, late, sent=self.attempts > 0)
        self.attempts += 1
