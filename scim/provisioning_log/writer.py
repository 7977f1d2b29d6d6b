"""The background writer of the provisioning log: batches a tenant's entries, tallies them per
hour, counts the unauthenticated requests, and never lets a write slow or break a SCIM response.

Writes are batched: :class:`LogWriter` gathers a tenant's entries for at most
:data:`~scim.provisioning_log.entries.FLUSH_WINDOW` seconds and records them with one
:meth:`~scim.provisioning_log.base.ProvisioningLog.record_many` (on Table Storage: one
entity-group transaction). Under Entra's traffic (about 5 requests in flight) that is one
storage round trip for many requests instead of one each.

Hourly tallies (what the portal's 7-day chart reads instead of every entry): the writer keeps,
per tenant and hour, a *series*: a running count of the requests and failures it has recorded,
under an id of its own (``{writer}.{n}``). Each write carries, in the same transaction as its
entries, the series' new totals for the hours its entries fall in (an upsert, no read: no other
process writes that row). So a tally always equals the entries recorded with its series: a
write either commits entries and tallies or neither, and a write sent again (a lost answer)
sends the same totals. A write that fails may still have committed (its answer lost for good, a
timeout), so the series' stored value is unknown: the writer drops the series, and the hour's
next entries start a new one (a row of its own) rather than overwrite it. Series of hours over
for more than an hour are dropped too (memory); a late entry of such an hour starts a new one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from scim.provisioning_log.base import ProvisioningLog
from scim.provisioning_log.entries import (
    COUNT_WINDOW,
    FLUSH_WINDOW,
    MAX_TRANSACTION_BYTES,
    MAX_TRANSACTION_ROWS,
    ROW_BYTES,
    HourTally,
    LogEntry,
    bucket_of,
    entry_cost,
    hour_of,
    parse_time,
)
from scim.telemetry.instruments import background_context, log_dropped

__all__ = ["LogWriter"]

logger = logging.getLogger("scim.provisioning_log")


class LogWriter:
    """Writes entries in the background so that logging never slows or breaks a SCIM response.

    Entries of a tenant submitted within :data:`FLUSH_WINDOW` seconds of each other share one
    write (:meth:`ProvisioningLog.record_many`), with the tallies of their hours (see the module
    docstring); more than one transaction holds are written in several, one after the other.
    Unauthenticated requests are counted in memory (:meth:`count_unauthenticated`) and written
    with the tenant's next write, at the latest :data:`COUNT_WINDOW` seconds later. A failed
    write is logged (without its detail) and dropped, with the entries gathered after it
    (counted in the ``scim.log.dropped`` metric, :mod:`scim.telemetry`);
    :meth:`drain` writes what is waiting at once and waits for the writes in flight (tests, the
    timer, shutdown).
    """

    def __init__(
        self, log: ProvisioningLog, *, window: float = FLUSH_WINDOW, count_window: float = COUNT_WINDOW
    ) -> None:
        self.log = log
        self.window = window
        self.count_window = count_window
        self.writer = uuid.uuid4().hex[:16]
        self._waiting: dict[str, list[LogEntry]] = {}
        self._counts: dict[str, dict[datetime, int]] = {}  # tenant -> minute -> this writer's count
        self._counted: set[str] = set()  # tenants whose counts changed since they were written
        self._series: dict[str, dict[datetime, HourTally]] = {}  # tenant -> hour -> its series, as recorded
        self._series_ids = itertools.count(1)
        self._flushers: dict[str, asyncio.Task[None]] = {}
        self._wakes: dict[str, tuple[asyncio.Future[None], asyncio.TimerHandle]] = {}

    def submit(self, tenant: str, entry: LogEntry) -> None:
        self._waiting.setdefault(tenant, []).append(entry)
        self._schedule(tenant, self.window)

    def count_unauthenticated(self, tenant: str) -> None:
        """Count one request with a missing or wrong token (no path, no body: an attacker can
        neither fill the log nor choose its text)."""
        bucket = bucket_of(datetime.now(UTC))
        counts = self._counts.setdefault(tenant, {})
        counts[bucket] = counts.get(bucket, 0) + 1
        self._counted.add(tenant)
        self._schedule(tenant, self.count_window)

    def _schedule(self, tenant: str, delay: float) -> None:
        """Wake the tenant's flusher within ``delay``: start one, or bring the wake of a waiting
        one forward (an entry after a 401's count waits a flush window, not the count window)."""
        loop = asyncio.get_running_loop()
        if tenant not in self._flushers:
            wake: asyncio.Future[None] = loop.create_future()
            self._wakes[tenant] = (wake, loop.call_later(delay, _wake, wake))
            # A context of its own: not the request's that happened to start it (its correlation
            # id, storage count and span), as it writes the entries of many requests.
            self._flushers[tenant] = loop.create_task(self._flush(tenant, wake), context=background_context())
            return
        wake, timer = self._wakes[tenant]
        if not wake.done() and timer.when() > loop.time() + delay:
            timer.cancel()
            self._wakes[tenant] = (wake, loop.call_later(delay, _wake, wake))

    async def _flush(self, tenant: str, wake: asyncio.Future[None]) -> None:
        try:
            await wake
            # Entries submitted while a write is in flight are written right after it.
            while self._waiting.get(tenant) or tenant in self._counted:
                entries = self._waiting.pop(tenant, [])
                counts = dict(self._counts.get(tenant, {})) if tenant in self._counted else None
                self._counted.discard(tenant)
                await self._write(tenant, entries, counts)
                self._forget_old_series(tenant)
        finally:
            del self._flushers[tenant]
            self._wakes.pop(tenant)[1].cancel()

    async def _write(self, tenant: str, entries: list[LogEntry], counts: dict[datetime, int] | None) -> None:
        """Record ``entries`` (and ``counts``) a transaction at a time, each with its tallies; on
        a failure, log it and drop the entries left."""
        done = 0
        while True:
            taken, added = _next_part(entries, done, len(counts or {}))
            part = entries[done : done + taken]
            tallies = self._tallies(tenant, added)
            try:
                await self.log.record_many(tenant, part, counts, self.writer, tallies)
            except Exception as exc:  # noqa: BLE001 - logging must never break provisioning
                for tally in tallies:  # committed or not: unknown, so never written again
                    self._series.get(tenant, {}).pop(tally.hour, None)
                operations = ", ".join(sorted({e.operation for e in entries[done:]})) or "unauthenticated counts"
                log_dropped(tenant, len(entries) - done)
                logger.warning(
                    "could not write %d provisioning log entries (%s): %s",
                    len(entries) - done,
                    type(exc).__name__,
                    operations,
                )
                return
            self._series.setdefault(tenant, {}).update((tally.hour, tally) for tally in tallies)
            if counts is not None:
                self._forget_written(tenant, counts)
                counts = None
            done += len(part)
            if done >= len(entries):
                return

    def _tallies(self, tenant: str, added: Mapping[datetime, tuple[int, int]]) -> list[HourTally]:
        """The tallies of the hours of a part once it is recorded: their series' totals plus
        ``added``, the part's requests and failures per hour (a new series for an hour without one)."""
        series = self._series.get(tenant, {})
        tallies = []
        for hour, (requests, failures) in added.items():
            known = series.get(hour) or HourTally(hour, f"{self.writer}.{next(self._series_ids)}", 0, 0)
            tallies.append(HourTally(hour, known.series, known.requests + requests, known.failures + failures))
        return tallies

    def _forget_old_series(self, tenant: str) -> None:
        """Drop the series of hours that ended more than an hour ago (their entries are written)."""
        series = self._series.get(tenant)
        if series is None:
            return
        horizon = hour_of(datetime.now(UTC)) - _SERIES_KEPT
        for hour in [h for h in series if h < horizon]:
            del series[hour]
        if not series:
            del self._series[tenant]

    def _forget_written(self, tenant: str, written: Mapping[datetime, int]) -> None:
        """Drop the counts of minutes that are over and were written as they are (final)."""
        current = bucket_of(datetime.now(UTC))
        counts = self._counts.get(tenant, {})
        for bucket in [b for b, n in counts.items() if b < current and written.get(b) == n]:
            del counts[bucket]
        if not counts:
            self._counts.pop(tenant, None)

    async def drain(self) -> None:
        """Write every waiting entry now, and wait until all writes are done."""
        while self._flushers:
            for wake, _ in self._wakes.values():
                _wake(wake)
            await asyncio.gather(*list(self._flushers.values()), return_exceptions=True)


_SERIES_KEPT = timedelta(hours=1)
"""A series is kept for the current hour and the one before (an entry's time is its response's,
and it waits at most a flush window and the writes in flight)."""


def _next_part(entries: Sequence[LogEntry], start: int, count_rows: int) -> tuple[int, dict[datetime, tuple[int, int]]]:
    """How many of ``entries`` from ``start`` fit one transaction with their tallies (one row per
    hour) and ``count_rows`` counts, and their requests and failures per hour. At least one entry
    is taken: when the counts leave no room, the log writes them in a transaction of their own."""
    rows, size = count_rows, count_rows * ROW_BYTES
    added: dict[datetime, tuple[int, int]] = {}
    for taken in range(len(entries) - start):
        entry = entries[start + taken]
        more_rows, more_bytes = entry_cost(entry)
        hour = hour_of(parse_time(entry.time))
        requests, failures = added.get(hour) or (0, 0)
        if not requests:
            more_rows, more_bytes = more_rows + 1, more_bytes + ROW_BYTES
        if taken and (rows + more_rows > MAX_TRANSACTION_ROWS or size + more_bytes > MAX_TRANSACTION_BYTES):
            return taken, added
        rows, size = rows + more_rows, size + more_bytes
        added[hour] = (requests + 1, failures + entry.failed)
    return len(entries) - start, added


def _wake(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)
