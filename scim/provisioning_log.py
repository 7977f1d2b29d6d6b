"""The provisioning log: the outcome of every SCIM request, per tenant, in Table Storage.

What is kept (README "Provisioning log"): time (UTC), operation (``PATCH /Groups/{id}``),
resource type and id, HTTP status, ``scimType`` and ``detail`` of errors, the correlation id
(also sent to the client as ``X-Correlation-ID``), the duration, and, for a failed create or
replace of a user, its ``userName`` (the operator needs it to act). Never tokens, headers or
request bodies.

Layout: table ``{prefix}log``, PartitionKey = tenant. Each request writes ``a|{inv}|{cid}``
(every entry) and, when it failed, ``f|{inv}|{cid}`` too, so failures can be read without
reading successes. ``{inv}`` is the time inverted (``10^17 - µs since epoch``, 17 digits), so a
range query returns the newest entries first.

Unauthenticated requests (a missing or wrong token) get no entry: anyone can send them, with
any path. They are only counted, per tenant and minute: one row ``x|{inv}|{writer}`` per
minute and writer (process), whose ``unauthenticated`` property is that writer's count for
the minute (upserted as it grows), so an attacker cannot fill the log or choose its text.

Writes are batched: :class:`LogWriter` gathers a tenant's entries for at most
:data:`FLUSH_WINDOW` seconds and writes them in one entity-group transaction (all rows share
the tenant's partition; at most 100 rows). Under Entra's traffic (about 5 requests in flight)
that is one storage round trip for many requests instead of one each. Every row is an upsert,
so a transaction whose request or answer was lost is simply sent again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["LogEntry", "LogPage", "LogWriter", "ProvisioningLog", "bucket_of", "format_time", "parse_time"]

logger = logging.getLogger("scim.provisioning_log")

_INVERT = 10**17
_PAGE = 1000
_MAX_ROWS = 100  # an entity-group transaction's limit
FLUSH_WINDOW = 0.25
"""Seconds a tenant's entries wait to share one transaction (:class:`LogWriter`)."""
COUNT_WINDOW = 10.0
"""Seconds a tenant's unauthenticated count waits before it is written (bounds the writes an
attacker can cause to one per tenant, writer and 10 s)."""
BUCKET_SECONDS = 60
"""Unauthenticated requests are counted per minute."""


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, the form every entry's ``time`` has."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Read an RFC 3339 time (``Z`` or an offset)."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _inverted(moment: datetime) -> str:
    micros = int(moment.timestamp() * 1_000_000)
    return f"{_INVERT - micros:017d}"


@dataclass(frozen=True)
class LogEntry:
    """One SCIM request's outcome."""

    time: str
    operation: str
    status: int
    correlation_id: str
    duration_ms: float
    resource_type: str | None = None
    resource_id: str | None = None
    scim_type: str | None = None
    detail: str | None = None
    subject: str | None = None

    @property
    def failed(self) -> bool:
        return self.status >= 400

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class LogPage:
    """Entries newest first, and the cursor of the next page (None on the last)."""

    entries: list[LogEntry]
    cursor: str | None


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
    moment = parse_time(entry.time)
    row: dict[str, Any] = {"PartitionKey": tenant, "RowKey": f"{kind}|{_inverted(moment)}|{entry.correlation_id}"}
    for name in _FIELDS:
        value = getattr(entry, name)
        if value is not None:
            row[name] = value[:2000] if isinstance(value, str) else value
    return row


def bucket_of(moment: datetime) -> datetime:
    """The start of the :data:`BUCKET_SECONDS` period ``moment`` falls in (unauthenticated
    requests are counted per period). A period is read by the digest window its start falls
    in; the digest's lag (2 minutes) exceeds a period plus :data:`COUNT_WINDOW`, so a period
    is complete and written when it is read."""
    seconds = int(moment.timestamp()) // BUCKET_SECONDS * BUCKET_SECONDS
    return datetime.fromtimestamp(seconds, UTC)


def _count_row(tenant: str, bucket: datetime, writer: str, count: int) -> dict[str, Any]:
    return {"PartitionKey": tenant, "RowKey": f"x|{_inverted(bucket)}|{writer}", "unauthenticated": count}


def _entry(row: dict[str, Any]) -> LogEntry:
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


class ProvisioningLog:
    """The ``{prefix}log`` table (see the module docstring)."""

    def __init__(self, service: Any, prefix: str) -> None:
        self._service = service
        self._table = service.get_table_client(f"{prefix}log")
        self._ready: asyncio.Future[None] | None = None

    @property
    def service_client(self) -> Any:
        """The shared Table service client."""
        return self._service

    async def _ensure_table(self) -> None:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            from scim.store.azure_client import create_table

            try:
                await create_table(self._service, self._table.table_name)
            except BaseException as exc:
                self._ready.set_exception(exc)
                fut, self._ready = self._ready, None
                fut.exception()
                raise
            self._ready.set_result(None)
        await self._ready

    async def record(self, tenant: str, entry: LogEntry) -> None:
        """Write one entry (see :meth:`record_many`)."""
        await self.record_many(tenant, [entry])

    async def record_many(
        self,
        tenant: str,
        entries: Sequence[LogEntry],
        unauthenticated: Mapping[datetime, int] | None = None,
        writer: str = "",
    ) -> None:
        """Write entries of one tenant: one upsert, or transactions of at most 100 rows.

        A failure is two rows (``a`` and ``f``), always in the same transaction. Upserts are
        idempotent, so a lost request or answer (connection reset, which azure-core does not
        retry for a POST) is sent again (:func:`scim.store.azure_client.resend_if_lost`).
        ``unauthenticated`` maps minutes to ``writer``'s count of unauthenticated requests in
        them (one ``x`` row each, upserted with the count so far).
        """
        await self._ensure_table()
        batch: dict[str, dict[str, Any]] = {}
        counted = [[_count_row(tenant, bucket, writer, n)] for bucket, n in (unauthenticated or {}).items()]
        for rows in [
            *counted,
            *([_row(tenant, "a", e)] + ([_row(tenant, "f", e)] if e.failed else []) for e in entries),
        ]:
            if len(batch) + len(rows) > _MAX_ROWS:
                await self._write(list(batch.values()))
                batch = {}
            for row in rows:
                batch[row["RowKey"]] = row  # a repeated key would fail the whole transaction
        if batch:
            await self._write(list(batch.values()))

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        from scim.store.azure_client import resend_if_lost
        from scim.store.transactions import submit_transaction

        if len(rows) == 1:
            await resend_if_lost(lambda: self._table.upsert_entity(rows[0]))
        else:
            await resend_if_lost(lambda: submit_transaction(self._table, [("upsert", row, {}) for row in rows]))

    def _bounds(self, kind: str, since: datetime | None, until: datetime | None, cursor: str | None) -> tuple[str, str]:
        # Newest first: an entry at time t has RowKey kind|inv(t); later times sort first.
        low = cursor or (f"{kind}|{_inverted(until)}|~" if until else f"{kind}|")
        high = f"{kind}|{_inverted(since)}}}" if since else f"{kind}}}"
        return low, high

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
        await self._ensure_table()
        low, high = self._bounds("f" if failures_only else "a", since, until, cursor)
        query = "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high"
        pager = self._table.query_entities(
            query, parameters={"pk": tenant, "low": low, "high": high}, results_per_page=min(limit, _PAGE)
        )
        rows: list[dict[str, Any]] = []
        async for row in pager:
            rows.append(row)
            if len(rows) > limit:
                break
        entries = [_entry(r) for r in rows[:limit]]
        next_cursor = rows[limit - 1]["RowKey"] if len(rows) > limit else None
        return LogPage(entries, next_cursor)

    async def failures(
        self, tenant: str, *, since: datetime | None, until: datetime, cap: int = 50_000
    ) -> list[LogEntry]:
        """Every failure in the window, oldest first (at most ``cap``)."""
        page = await self.page(tenant, failures_only=True, since=since, until=until, limit=cap)
        return list(reversed(page.entries))

    async def _rows(self, tenant: str, kind: str, since: datetime | None, until: datetime, select: list[str]) -> Any:
        """The ``kind`` rows of the window, with only the ``select`` properties (an async pager)."""
        await self._ensure_table()
        low, high = self._bounds(kind, since, until, None)
        return self._table.query_entities(
            "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
            parameters={"pk": tenant, "low": low, "high": high},
            select=select,
            results_per_page=_PAGE,
        )

    async def count(self, tenant: str, *, since: datetime | None, until: datetime) -> int:
        """How many authenticated requests the tenant made in the window (reads keys only)."""
        return sum([1 async for _ in await self._rows(tenant, "a", since, until, ["RowKey"])])

    async def unauthenticated(self, tenant: str, *, since: datetime | None, until: datetime) -> int:
        """How many unauthenticated requests the tenant got in the periods starting in ``[since, until)``."""
        rows = await self._rows(tenant, "x", since, until, ["unauthenticated"])
        return sum([int(row.get("unauthenticated") or 0) async for row in rows])

    async def purge(self, tenant: str, older_than: datetime) -> int:
        """Delete the tenant's entries older than ``older_than`` (retention); returns how many."""
        from scim.store.transactions import submit_transaction

        await self._ensure_table()
        deleted = 0
        for kind in ("a", "f", "x"):
            low, high = f"{kind}|{_inverted(older_than)}", f"{kind}}}"
            pager = self._table.query_entities(
                "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
                parameters={"pk": tenant, "low": low, "high": high},
                select=["PartitionKey", "RowKey"],
            )
            keys = [(r["PartitionKey"], r["RowKey"]) async for r in pager]
            for start in range(0, len(keys), 100):
                batch = keys[start : start + 100]
                await submit_transaction(
                    self._table, [("delete", {"PartitionKey": pk, "RowKey": rk}, {}) for pk, rk in batch]
                )
                deleted += len(batch)
        return deleted


class LogWriter:
    """Writes entries in the background so that logging never slows or breaks a SCIM response.

    Entries of a tenant submitted within :data:`FLUSH_WINDOW` seconds of each other share one
    write (:meth:`ProvisioningLog.record_many`). Unauthenticated requests are counted in memory
    (:meth:`count_unauthenticated`) and written with the tenant's next write, at the latest
    :data:`COUNT_WINDOW` seconds later. A failed write is logged (without its detail) and
    dropped; :meth:`drain` writes what is waiting at once and waits for the writes in flight
    (tests, the timer, shutdown).
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
        self._flushers: dict[str, asyncio.Task[None]] = {}
        self._wakes: dict[str, tuple[asyncio.Future[None], asyncio.TimerHandle]] = {}

    def submit(self, tenant: str, entry: LogEntry) -> None:
        self._waiting.setdefault(tenant, []).append(entry)
        self._schedule(tenant, self.window)

    def count_unauthenticated(self, tenant: str) -> None:
        """Count one request with a missing or wrong token (no path, no body: see the module docstring)."""
        bucket = bucket_of(datetime.now(UTC))
        counts = self._counts.setdefault(tenant, {})
        counts[bucket] = counts.get(bucket, 0) + 1
        self._counted.add(tenant)
        self._schedule(tenant, self.count_window)

    def _schedule(self, tenant: str, delay: float) -> None:
        if tenant not in self._flushers:
            loop = asyncio.get_running_loop()
            wake: asyncio.Future[None] = loop.create_future()
            self._wakes[tenant] = (wake, loop.call_later(delay, _wake, wake))
            self._flushers[tenant] = loop.create_task(self._flush(tenant, wake))

    async def _flush(self, tenant: str, wake: asyncio.Future[None]) -> None:
        try:
            await wake
            # Entries submitted while a write is in flight are written right after it.
            while self._waiting.get(tenant) or tenant in self._counted:
                entries = self._waiting.pop(tenant, [])
                counts = dict(self._counts.get(tenant, {})) if tenant in self._counted else None
                self._counted.discard(tenant)
                try:
                    await self.log.record_many(tenant, entries, counts, self.writer)
                    self._forget_written(tenant, counts or {})
                except Exception as exc:  # noqa: BLE001 - logging must never break provisioning
                    operations = ", ".join(sorted({e.operation for e in entries})) or "unauthenticated counts"
                    logger.warning(
                        "could not write %d provisioning log entries (%s): %s",
                        len(entries),
                        type(exc).__name__,
                        operations,
                    )
        finally:
            del self._flushers[tenant]
            self._wakes.pop(tenant)[1].cancel()

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


def _wake(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an RFC 3339 time, or a duration back from now (``30m``, ``2h``, ``7d``)."""
    now = now or datetime.now(UTC)
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    stripped = text.strip()
    if stripped[-1:].lower() in units and stripped[:-1].isdigit():
        return now - timedelta(**{units[stripped[-1].lower()]: int(stripped[:-1])})
    try:
        return parse_time(stripped)
    except ValueError:
        raise ValueError(
            f"--since takes a time (2026-11-26T10:00:00Z) or a duration (30m, 2h, 7d), not {text!r}"
        ) from None


def entries_as_json(entries: Sequence[LogEntry]) -> str:
    return json.dumps([e.to_json() for e in entries])
