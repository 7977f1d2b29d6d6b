"""The work budget of one request and its slicing (security review H2): the attribute values a
request examines are counted against :data:`MAX_WORK`, and the event loop is handed back every
:data:`SLICE_SECONDS`, so that one tenant's heavy but legal request cannot stall the other
tenants that a Functions worker serves on the same event loop."""

from __future__ import annotations

import asyncio
import time

from scim.core.errors import TooMany

__all__ = ["MAX_WORK", "SLICE_SECONDS", "WorkMeter"]

MAX_WORK = 2_000_000
"""Work budget of one request, in attribute values examined: each value a filter term
compares (and each term evaluated, each value filter's item), and each pair of values a
PATCH compares to merge or remove multi-valued items. Past it the request answers 400
``tooMany`` ("this request would take too long").

About 1-3 s of CPU on one core. Entra's requests use a handful of units (an ``eq`` lookup
re-checks one candidate); a one-term ``co`` filter over the 10,000 resources a scan may
examine, each with 20 emails, uses about 210,000.
"""

SLICE_SECONDS = 0.001
"""Longest stretch of CPU a request's filter evaluation, scan or projection runs before it
hands the event loop back (``await asyncio.sleep(0)``, about 20 µs), so that the other
tenants served by the same worker wait at most about this long per step of their own
requests. A lookup on Table Storage takes some 30 steps of the event loop (the token read,
two storage calls): measured on Azurite during a heavy filter, its median latency was
~30 ms with 1 ms slices and ~150 ms with 5 ms slices (7 ms alone); the heavy request took
no longer with the smaller slices."""


class WorkMeter:
    """Counts one request's work against :data:`MAX_WORK` and slices it (:data:`SLICE_SECONDS`).

    ``charge`` raises 400 ``tooMany`` when the budget is spent; ``checkpoint`` hands the
    event loop back once the current slice has run :data:`SLICE_SECONDS`. One meter serves
    a whole request (both resource types of ``/.search``, every retry of a PATCH).
    """

    __slots__ = ("_slice_start", "hint", "limit", "pauses", "used")

    def __init__(
        self,
        limit: int = MAX_WORK,
        hint: str = "narrow it, e.g. with an eq filter on userName, externalId, emails, displayName or id",
    ) -> None:
        self.limit = limit
        self.hint = hint
        self.used = 0
        self.pauses = 0
        self._slice_start = time.perf_counter()

    def charge(self, units: int) -> None:
        """Count ``units`` of work; 400 ``tooMany`` once more than :attr:`limit` were counted."""
        self.used += units
        if self.used > self.limit:
            raise TooMany(
                "This request would take too long: it would examine more than "
                f"{self.limit} attribute values (the work limit of one request); {self.hint}."
            )

    def due(self) -> bool:
        """Whether the current slice has used up its :data:`SLICE_SECONDS`."""
        return time.perf_counter() - self._slice_start >= SLICE_SECONDS

    async def pause(self) -> None:
        """Let the event loop run everything else that is ready, then start a new slice."""
        self.pauses += 1
        await asyncio.sleep(0)
        self._slice_start = time.perf_counter()

    async def checkpoint(self) -> None:
        """Pause if the current slice is over."""
        if self.due():
            await self.pause()
