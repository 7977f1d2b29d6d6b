"""An in-memory :class:`~scim.provisioning_log.base.ProvisioningLog` (tests, the memory runtime).

It follows every rule of :mod:`scim.provisioning_log.base` with the Table implementation's keys
(:mod:`scim.provisioning_log.keys`) in a sorted list per tenant, so it orders entries, cuts
windows and pages with cursors exactly as the table does; a cursor of one is a cursor of the
other. Every method runs to completion without awaiting anything, so under asyncio each call is
atomic.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from datetime import datetime

from scim.provisioning_log import keys
from scim.provisioning_log.base import ProvisioningLog
from scim.provisioning_log.entries import HourCount, HourTally, LogEntry, LogPage, one_transaction

__all__ = ["MemoryProvisioningLog"]


class _Partition:
    """One tenant's rows: key -> entry (``a``/``f`` rows), count (``x`` rows) or requests and
    failures (``h`` rows), and the keys in order."""

    def __init__(self) -> None:
        self.rows: dict[str, LogEntry | int | tuple[int, int]] = {}
        self.order: list[str] = []

    def put(self, key: str, value: LogEntry | int | tuple[int, int]) -> None:
        if key not in self.rows:
            bisect.insort(self.order, key)
        self.rows[key] = value

    def between(self, low: str, high: str) -> list[str]:
        """The keys strictly between ``low`` and ``high``, in order."""
        return self.order[bisect.bisect_right(self.order, low) : bisect.bisect_left(self.order, high)]

    def remove(self, doomed: Sequence[str]) -> None:
        for key in doomed:
            del self.rows[key]
        gone = set(doomed)
        self.order = [key for key in self.order if key not in gone]


class MemoryProvisioningLog(ProvisioningLog):
    """Every tenant's provisioning log in process memory (see the module docstring)."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Partition] = {}

    def _partition(self, tenant: str) -> _Partition:
        return self._tenants.get(tenant) or _Partition()

    async def record_many(
        self,
        tenant: str,
        entries: Sequence[LogEntry],
        unauthenticated: Mapping[datetime, int] | None = None,
        writer: str = "",
        hourly: Sequence[HourTally] = (),
    ) -> None:
        """Record entries of one tenant, ``writer``'s unauthenticated counts per period and the
        hourly tallies (see :meth:`ProvisioningLog.record_many`)."""
        if hourly and not one_transaction(entries, hourly):
            raise ValueError("the entries and their hourly tallies do not fit one transaction")
        partition = self._tenants.setdefault(tenant, _Partition())
        for bucket, n in (unauthenticated or {}).items():
            partition.put(keys.count_key(bucket, writer), n)
        for tally in hourly:
            partition.put(keys.hour_key(tally.hour, tally.series), (tally.requests, tally.failures))
        for entry in entries:
            kept = entry.clipped()
            partition.put(keys.entry_key("a", entry), kept)
            if entry.failed:
                partition.put(keys.entry_key("f", entry), kept)

    async def page(
        self,
        tenant: str,
        *,
        failures_only: bool = False,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> LogPage:
        """Entries with ``since <= time < until``, newest first, ``limit`` at a time."""
        partition = self._partition(tenant)
        found = partition.between(*keys.window("f" if failures_only else "a", since, until, cursor))[: limit + 1]
        entries = [partition.rows[key] for key in found[:limit]]
        next_cursor = found[limit - 1] if len(found) > limit else None
        return LogPage([e for e in entries if isinstance(e, LogEntry)], next_cursor)

    async def count(self, tenant: str, *, since: datetime | None, until: datetime) -> int:
        """How many authenticated requests the tenant made in the window."""
        return len(self._partition(tenant).between(*keys.window("a", since, until, None)))

    async def activity(self, tenant: str, *, since: datetime | None, until: datetime) -> list[HourCount]:
        """Requests and failures per hour starting in ``[since, until)``, oldest first."""
        partition = self._partition(tenant)
        totals: dict[datetime, tuple[int, int]] = {}
        for key in partition.between(*keys.window("h", since, until, None)):
            tally = partition.rows[key]
            if isinstance(tally, tuple):
                hour = keys.time_of(key)
                requests, failures = totals.get(hour, (0, 0))
                totals[hour] = (requests + tally[0], failures + tally[1])
        return [HourCount(hour, *totals[hour]) for hour in sorted(totals)]

    async def unauthenticated(self, tenant: str, *, since: datetime | None, until: datetime) -> int:
        """How many unauthenticated requests the tenant got in the periods starting in ``[since, until)``."""
        partition = self._partition(tenant)
        counts = [partition.rows[key] for key in partition.between(*keys.window("x", since, until, None))]
        return sum(n for n in counts if isinstance(n, int))

    async def purge(self, tenant: str, older_than: datetime) -> int:
        """Delete the tenant's entries, failures, counts and tallies ``older_than`` or older;
        returns how many rows went."""
        partition = self._tenants.get(tenant)
        if partition is None:
            return 0
        doomed = [
            key for kind in ("a", "f", "x", "h") for key in partition.between(*keys.purge_range(kind, older_than))
        ]
        partition.remove(doomed)
        if not partition.rows:
            del self._tenants[tenant]
        return len(doomed)
