"""The provisioning log's interface, and the rules every implementation follows.

Two implementations exist and both pass the same contract tests (``tests/log_contract.py``):
:class:`scim.provisioning_log.memory.MemoryProvisioningLog` (tests, the memory runtime) and
:class:`scim.provisioning_log.tables.TableProvisioningLog` (Azure Table Storage, or Azurite).

Rules of the contract
---------------------
1. **Tenants are disjoint.** Nothing recorded for one tenant is read, counted or purged under
   another.
2. **Newest first.** Entries are read in descending time; entries of the same time in
   ascending correlation id. :meth:`ProvisioningLog.failures` alone reads oldest first.
3. **An entry is its time and correlation id.** Recording an entry of the same time and
   correlation id again replaces it (every write is an upsert, so a write whose answer was
   lost can be sent again without duplicating anything).
4. **Failures are kept apart.** An entry with a status of 400 or more is also a failure, and
   failures can be read without reading successes (``failures_only``).
5. **Windows are half-open.** ``since <= time < until``, either end open when None, to the
   microsecond of the entry's ``time`` (which :func:`~scim.provisioning_log.entries.format_time`
   gives to the millisecond).
6. **Pages.** A page holds at most ``limit`` entries and, when more follow in its window, a
   cursor: passed back with the same tenant, kind and window, it gives the entries after the
   last one returned. The last page's cursor is None. Cursors are opaque strings.
7. **Text is kept to** :data:`~scim.provisioning_log.entries.MAX_TEXT` **characters** per
   field; longer values are cut when recorded.
8. **Unauthenticated requests are counts, not entries.** Each writer (process) writes its count
   per period (:func:`~scim.provisioning_log.entries.bucket_of`); writing a writer's count of a
   period again replaces it (the last count written wins), and the counts of different writers
   of a period add up. A period counts in a window when its start is in ``[since, until)``.
9. **Purge by age.** :meth:`ProvisioningLog.purge` removes a tenant's entries, failures, counts
   and tallies whose time (a count's or tally's: its period's start) is ``older_than`` or older.
10. **Errors.** A storage that fails or does not answer in time raises
    :class:`~scim.store.base.StoreUnavailable` (the Table implementation maps Azure errors and
    bounds time as the directory store does, :mod:`scim.store.azure_client`).
11. **Hourly tallies go with their entries.** A call's ``hourly`` tallies
    (:class:`~scim.provisioning_log.entries.HourTally`: an hour's start, a series, requests and
    failures) are recorded with its entries all or nothing (on Table Storage: one entity-group
    transaction); a call with tallies whose entries and tallies do not fit one transaction
    (:func:`~scim.provisioning_log.entries.one_transaction`) raises ``ValueError`` and records
    nothing (without tallies, entries may take several transactions). Recording a series' tally
    of an hour again replaces it (the last written wins); the tallies of different series of an
    hour add up, and :meth:`ProvisioningLog.activity` reads them per hour (an hour counts in a
    window when its start is in ``[since, until)``). The log does not check tallies against
    entries: the :class:`~scim.provisioning_log.writer.LogWriter` keeps each series equal to the
    entries it recorded with it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from datetime import datetime

from scim.provisioning_log.entries import HourCount, HourTally, LogEntry, LogPage

__all__ = ["ProvisioningLog"]


class ProvisioningLog(abc.ABC):
    """Every tenant's provisioning log: entries of authenticated requests, counts of the others.
    See the module docstring for the rules."""

    @abc.abstractmethod
    async def record_many(
        self,
        tenant: str,
        entries: Sequence[LogEntry],
        unauthenticated: Mapping[datetime, int] | None = None,
        writer: str = "",
        hourly: Sequence[HourTally] = (),
    ) -> None:
        """Record entries of one tenant (rules 3, 4, 7), ``unauthenticated``: periods (their
        starts) mapped to ``writer``'s count of unauthenticated requests in them so far (rule 8),
        and ``hourly`` tallies, with the entries (rule 11).

        A failed entry is recorded as an entry and a failure together, never one without the
        other. The Table implementation writes one upsert, or transactions of at most 100 rows
        (with ``hourly``: the entries and tallies in one, the counts in it or beside it).
        """

    async def record(self, tenant: str, entry: LogEntry) -> None:
        """Record one entry (see :meth:`record_many`)."""
        await self.record_many(tenant, [entry])

    @abc.abstractmethod
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
        """Entries (only failures with ``failures_only``) with ``since <= time < until``, newest
        first, ``limit`` at a time, after ``cursor`` (rules 2, 5, 6)."""

    async def failures(
        self, tenant: str, *, since: datetime | None, until: datetime, cap: int = 50_000
    ) -> list[LogEntry]:
        """Every failure in the window, oldest first (at most ``cap``: the newest ``cap``)."""
        page = await self.page(tenant, failures_only=True, since=since, until=until, limit=cap)
        return list(reversed(page.entries))

    @abc.abstractmethod
    async def count(self, tenant: str, *, since: datetime | None, until: datetime) -> int:
        """How many authenticated requests the tenant made in the window (failed ones included)."""

    @abc.abstractmethod
    async def activity(self, tenant: str, *, since: datetime | None, until: datetime) -> list[HourCount]:
        """Requests and failures per hour starting in ``[since, until)``, oldest first, every
        series' tallies added up (rule 11); hours without tallies are left out."""

    @abc.abstractmethod
    async def unauthenticated(self, tenant: str, *, since: datetime | None, until: datetime) -> int:
        """How many unauthenticated requests the tenant got in the periods starting in ``[since, until)``
        (every writer's count added up, rule 8)."""

    @abc.abstractmethod
    async def purge(self, tenant: str, older_than: datetime) -> int:
        """Delete the tenant's entries, failures, counts and tallies ``older_than`` or older
        (retention, rule 9); returns how many rows went (an entry that failed is two: entry and
        failure)."""
