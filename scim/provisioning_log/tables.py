"""The :class:`~scim.provisioning_log.base.ProvisioningLog` on Azure Table Storage (or Azurite).

Layout: table ``{prefix}log``, PartitionKey = tenant, RowKey = the row's key of
:mod:`scim.provisioning_log.keys` (``a|``/``f|`` entries newest first, ``x|`` counts of
unauthenticated requests, whose ``unauthenticated`` property is the writer's count for the
period, upserted as it grows, so an attacker cannot fill the log or choose its text; ``h|``
hourly tallies, properties ``requests`` and ``failures``, upserted with the entries they count).

Writes: one upsert, or entity-group transactions of at most 100 rows and
:data:`~scim.provisioning_log.entries.MAX_TRANSACTION_BYTES` estimated (all rows share the
tenant's partition); an entry and its failure row always share one, and so do the entries of a
call with hourly tallies and those tallies. Every row is an upsert (no read, no ETag), so a
request or answer that was lost (connection reset, which azure-core does not retry for a POST)
is simply sent again (:func:`scim.store.azure_client.resend_if_lost`): a tally sent again is
the same value, never added twice.

Faults: every storage call goes through the directory store's time bounds and error mapping
(:func:`scim.store.azure_client._io`, :mod:`scim.store.azure_errors`), so a dead storage raises
:class:`~scim.store.base.StoreUnavailable` as the directory's calls do. :meth:`~TableProvisioningLog.record_many`
is one operation with one deadline (:func:`~scim.store.azure_client._budgeted`); reads that page
through many rows (a digest's failures, counts) and purges give each storage call its own.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import datetime
from typing import Any

from azure.data.tables.aio import TableServiceClient

from scim.provisioning_log import keys
from scim.provisioning_log.base import ProvisioningLog
from scim.provisioning_log.entries import (
    MAX_TRANSACTION_BYTES,
    MAX_TRANSACTION_ROWS,
    ROW_BYTES,
    HourCount,
    HourTally,
    LogEntry,
    LogPage,
    entry_cost,
    one_transaction,
)
from scim.store.azure_client import _budgeted, _io, _TableOwner, resend_if_lost
from scim.store.base import ResourceNotFound
from scim.store.directory_reads import _next_page
from scim.store.transactions import Operation, submit_transaction

__all__ = ["TableProvisioningLog"]

_PAGE = 1000  # the most rows the Table service returns per query page
_FILTER_RANGE = "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high"
_FIELDS = (
    "time",
    "operation",
    "status",
    "correlation_id",
    "duration_ms",
    "resource_type",
    "resource_id",
    "scim_type",
    "detail",
    "subject",
)


def _row(tenant: str, kind: str, entry: LogEntry) -> dict[str, Any]:
    """The ``kind`` row (``a`` or ``f``) of ``entry``: its fields as properties, text clipped."""
    kept = entry.clipped()
    row: dict[str, Any] = {"PartitionKey": tenant, "RowKey": keys.entry_key(kind, entry)}
    row.update({name: value for name in _FIELDS if (value := getattr(kept, name)) is not None})
    return row


def _count_row(tenant: str, bucket: datetime, writer: str, count: int) -> dict[str, Any]:
    return {"PartitionKey": tenant, "RowKey": keys.count_key(bucket, writer), "unauthenticated": count}


def _tally_row(tenant: str, tally: HourTally) -> dict[str, Any]:
    return {
        "PartitionKey": tenant,
        "RowKey": keys.hour_key(tally.hour, tally.series),
        "requests": tally.requests,
        "failures": tally.failures,
    }


def _entry(row: Mapping[str, Any]) -> LogEntry:
    def text(name: str) -> str | None:
        value = row.get(name)
        return None if value is None else str(value)

    return LogEntry(
        time=str(row.get("time") or ""),
        operation=str(row.get("operation") or ""),
        status=int(row.get("status") or 0),
        correlation_id=str(row.get("correlation_id") or ""),
        duration_ms=float(row.get("duration_ms") or 0.0),
        resource_type=text("resource_type"),
        resource_id=text("resource_id"),
        scim_type=text("scim_type"),
        detail=text("detail"),
        subject=text("subject"),
    )


class TableProvisioningLog(_TableOwner, ProvisioningLog):
    """The ``{prefix}log`` table (see the module docstring), on a service client shared with the
    directory (:attr:`scim.store.tables.TableStore.service_client`)."""

    def __init__(self, service: TableServiceClient, prefix: str) -> None:
        super().__init__(service, f"{prefix}log")

    @property
    def service_client(self) -> TableServiceClient:
        """The shared Table service client."""
        return self._service

    @_budgeted
    async def record_many(
        self,
        tenant: str,
        entries: Sequence[LogEntry],
        unauthenticated: Mapping[datetime, int] | None = None,
        writer: str = "",
        hourly: Sequence[HourTally] = (),
    ) -> None:
        """Write entries of one tenant: one upsert, or transactions of at most 100 rows (see
        :meth:`ProvisioningLog.record_many`); a failure's two rows always share a transaction,
        and so do the entries and their ``hourly`` tallies (the counts of unauthenticated
        requests join them when they fit)."""
        costs = [entry_cost(entry) for entry in entries]
        if hourly and not one_transaction(costs, hourly):
            raise ValueError("the entries and their hourly tallies do not fit one transaction")
        await self._ready()
        groups: list[tuple[list[dict[str, Any]], int]] = [
            ([_count_row(tenant, bucket, writer, n)], ROW_BYTES) for bucket, n in (unauthenticated or {}).items()
        ]
        counted = len(groups)
        for entry, (_, cost) in zip(entries, costs, strict=True):
            groups.append(([_row(tenant, "a", entry)] + ([_row(tenant, "f", entry)] if entry.failed else []), cost))
        if hourly:  # the entries and their tallies: one group, one transaction
            together = [row for rows, _ in groups[counted:] for row in rows]
            together += [_tally_row(tenant, tally) for tally in hourly]
            size = sum(cost for _, cost in groups[counted:]) + len(hourly) * ROW_BYTES
            groups[counted:] = [(together, size)]
        batch: dict[str, dict[str, Any]] = {}
        size = 0
        for rows, cost in groups:
            if batch and (len(batch) + len(rows) > MAX_TRANSACTION_ROWS or size + cost > MAX_TRANSACTION_BYTES):
                await self._write(list(batch.values()))
                batch, size = {}, 0
            for row in rows:
                batch[row["RowKey"]] = row  # a repeated key would fail the whole transaction
            size += cost
        if batch:
            await self._write(list(batch.values()))

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        """Upsert ``rows`` (one partition, at most 100) in one storage call, sent again if lost."""
        if len(rows) == 1:
            await _io(lambda: resend_if_lost(lambda: self._table.upsert_entity(rows[0])))
        else:
            ops: list[Operation] = [("upsert", row, {}) for row in rows]
            await _io(lambda: resend_if_lost(lambda: submit_transaction(self._table, ops)))

    async def _query(
        self, tenant: str, low: str, high: str, *, select: list[str] | None = None, per_page: int = _PAGE
    ) -> AsyncGenerator[list[Any], None]:
        """The rows with ``low < RowKey < high``, a page at a time (one storage call each, with its
        own time budget)."""
        await self._ready()
        pages: Any = self._table.query_entities(
            _FILTER_RANGE,
            parameters={"pk": tenant, "low": low, "high": high},
            select=select,
            results_per_page=per_page,
        ).by_page()
        while (rows := await _io(lambda: _next_page(pages))) is not None:
            yield rows

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
        """Entries with ``since <= time < until``, newest first, ``limit`` at a time (one query
        for ``limit + 1`` rows: the one more tells whether a next page exists)."""
        low, high = keys.window("f" if failures_only else "a", since, until, cursor)
        rows: list[Any] = []
        query = self._query(tenant, low, high, per_page=max(1, min(limit + 1, _PAGE)))
        async with contextlib.aclosing(query):
            async for chunk in query:
                rows += chunk
                if len(rows) > limit:
                    break
        entries = [_entry(r) for r in rows[:limit]]
        next_cursor = rows[limit - 1]["RowKey"] if len(rows) > limit else None
        return LogPage(entries, next_cursor)

    async def count(self, tenant: str, *, since: datetime | None, until: datetime) -> int:
        """How many authenticated requests the tenant made in the window (reads keys only)."""
        low, high = keys.window("a", since, until, None)
        return sum([len(rows) async for rows in self._query(tenant, low, high, select=["RowKey"])])

    async def activity(self, tenant: str, *, since: datetime | None, until: datetime) -> list[HourCount]:
        """Requests and failures per hour starting in ``[since, until)``, oldest first: one
        range query over the ``h|`` rows (a page per 1,000 rows: an hour has one row per series)."""
        low, high = keys.window("h", since, until, None)
        totals: dict[datetime, tuple[int, int]] = {}
        async for rows in self._query(tenant, low, high, select=["RowKey", "requests", "failures"]):
            for row in rows:
                hour = keys.time_of(row["RowKey"])
                requests, failures = totals.get(hour, (0, 0))
                totals[hour] = (requests + int(row.get("requests") or 0), failures + int(row.get("failures") or 0))
        return [HourCount(hour, *totals[hour]) for hour in sorted(totals)]

    async def unauthenticated(self, tenant: str, *, since: datetime | None, until: datetime) -> int:
        """How many unauthenticated requests the tenant got in the periods starting in ``[since, until)``."""
        low, high = keys.window("x", since, until, None)
        query = self._query(tenant, low, high, select=["unauthenticated"])
        return sum([int(row.get("unauthenticated") or 0) async for rows in query for row in rows])

    async def purge(self, tenant: str, older_than: datetime) -> int:
        """Delete the tenant's rows ``older_than`` or older, in transactions of 100; returns how
        many went. A transaction one of whose rows had gone already (another purge) deletes
        nothing and is not counted: the next purge deletes its rows."""
        deleted = 0
        for kind in ("a", "f", "x", "h"):
            low, high = keys.purge_range(kind, older_than)
            found = [row["RowKey"] async for rows in self._query(tenant, low, high, select=["RowKey"]) for row in rows]
            for start in range(0, len(found), MAX_TRANSACTION_ROWS):
                batch = found[start : start + MAX_TRANSACTION_ROWS]
                ops: list[Operation] = [
                    ("delete", {"PartitionKey": tenant, "RowKey": row_key}, {}) for row_key in batch
                ]
                try:
                    await _io(functools.partial(submit_transaction, self._table, ops))
                except ResourceNotFound:
                    continue
                deleted += len(batch)
        return deleted
