"""The provisioning log's values: an entry, a page of entries, their times, and the constants of
writing and counting them.

An entry (:class:`LogEntry`) is one authenticated SCIM request's outcome (README "Provisioning
log"): time (UTC, RFC 3339 with milliseconds), operation (``PATCH /Groups/{id}``), resource type
and id, HTTP status, ``scimType`` and ``detail`` of errors, the correlation id (also sent to the
client as ``X-Correlation-ID``), the duration, and, for a failed create or replace of a user, its
``userName`` (the operator needs it to act). Never tokens, headers or request bodies.

Unauthenticated requests get no entry, only a count per :data:`BUCKET_SECONDS` period
(:func:`bucket_of`). Authenticated requests are also counted per hour (:class:`HourTally`
written with the entries, :class:`HourCount` read back), so that a chart of days reads one row
per hour and writer instead of every entry. Pure: no I/O, nothing imported from the storage.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "BUCKET_SECONDS",
    "COUNT_WINDOW",
    "FLUSH_WINDOW",
    "MAX_TEXT",
    "MAX_TRANSACTION_BYTES",
    "MAX_TRANSACTION_ROWS",
    "ROW_BYTES",
    "HourCount",
    "HourTally",
    "LogEntry",
    "LogPage",
    "bucket_of",
    "entries_as_json",
    "entry_cost",
    "format_time",
    "hour_of",
    "one_transaction",
    "parse_since",
    "parse_time",
]

FLUSH_WINDOW = 0.25
"""Seconds a tenant's entries wait to share one write (:class:`~scim.provisioning_log.writer.LogWriter`)."""
COUNT_WINDOW = 10.0
"""Seconds a tenant's unauthenticated count waits before it is written (bounds the writes an
attacker can cause to one per tenant, writer and 10 s)."""
BUCKET_SECONDS = 60
"""Unauthenticated requests are counted per minute."""
MAX_TEXT = 2000
"""Characters of a text field an entry keeps (longer values are cut when recorded)."""
MAX_TRANSACTION_ROWS = 100
"""Rows of one entity-group transaction (the Table service's limit)."""
MAX_TRANSACTION_BYTES = 3584 * 1024
"""Estimated bytes (:func:`entry_cost`) put in one transaction at most: the Table service takes
4 MiB, and the estimate is an upper bound, so half a MiB is left over."""
ROW_BYTES = 1024
"""Estimated bytes of a row besides its text: the part's headers, the keys, property names and
numbers (a count or tally row is this alone)."""


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, the form every entry's ``time`` has."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Read an RFC 3339 time (``Z`` or an offset)."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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

    def clipped(self) -> LogEntry:
        """The entry as the log keeps it: every text field cut at :data:`MAX_TEXT` characters."""
        long: dict[str, Any] = {
            f.name: value[:MAX_TEXT]
            for f in dataclasses.fields(self)
            if isinstance(value := getattr(self, f.name), str) and len(value) > MAX_TEXT
        }
        return dataclasses.replace(self, **long) if long else self


@dataclass(frozen=True)
class LogPage:
    """Entries newest first, and the cursor of the next page (None on the last)."""

    entries: list[LogEntry]
    cursor: str | None


@dataclass(frozen=True)
class HourTally:
    """What one series (a writer's running count, :class:`~scim.provisioning_log.writer.LogWriter`)
    has recorded of an hour so far: the hour's start (UTC), its requests and its failures."""

    hour: datetime
    series: str
    requests: int
    failures: int


@dataclass(frozen=True)
class HourCount:
    """An hour's requests and failures (every series' tallies added up); ``hour`` is its start."""

    hour: datetime
    requests: int
    failures: int


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour ``moment`` falls in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def entry_cost(entry: LogEntry) -> tuple[int, int]:
    """The rows (2 for a failure: the entry and its failure row) and the bytes, at most, that
    ``entry`` adds to a transaction: every text character (as kept, :data:`MAX_TEXT` at most)
    counted as 12 bytes (a JSON escaped surrogate pair), the correlation id three times (it is
    in the RowKey and the URL too)."""
    e = entry
    chars = 3 * min(len(e.correlation_id), MAX_TEXT)
    for text in (e.time, e.operation, e.resource_type, e.resource_id, e.scim_type, e.detail, e.subject):
        if text:
            chars += min(len(text), MAX_TEXT)
    rows = 2 if entry.status >= 400 else 1
    return rows, rows * (ROW_BYTES + 12 * chars)


def one_transaction(entries: Sequence[LogEntry | tuple[int, int]], tallies: Sequence[HourTally]) -> bool:
    """Whether ``entries`` (or their :func:`entry_cost`) and ``tallies`` fit one transaction."""
    rows, size = len(tallies), len(tallies) * ROW_BYTES
    for entry in entries:
        more_rows, more_bytes = entry if isinstance(entry, tuple) else entry_cost(entry)
        rows, size = rows + more_rows, size + more_bytes
    return rows <= MAX_TRANSACTION_ROWS and size <= MAX_TRANSACTION_BYTES


def bucket_of(moment: datetime) -> datetime:
    """The start of the :data:`BUCKET_SECONDS` period ``moment`` falls in (unauthenticated
    requests are counted per period). A period is read by the digest window its start falls
    in; the digest's lag (2 minutes) exceeds a period plus :data:`COUNT_WINDOW`, so a period
    is complete and written when it is read."""
    seconds = int(moment.timestamp()) // BUCKET_SECONDS * BUCKET_SECONDS
    return datetime.fromtimestamp(seconds, UTC)


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
    """The entries as a JSON array of objects (``scim.admin log --json``); absent fields left out."""
    return json.dumps([e.to_json() for e in entries])
