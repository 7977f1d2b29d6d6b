"""The provisioning log as the tenant page shows it: filtered pages and the 7-day activity.

Pages come from :meth:`scim.provisioning_log.ProvisioningLog.page` (newest first, with its
cursor); the filters the log does not know itself (operation, status, a resource id or
``userName``) are applied to the pages read, up to :data:`SCAN_LIMIT` entries per page shown, so a
rare match costs a bounded number of reads and the admin pages on with the log's own cursor.
The activity chart reads the hourly counts of the 7 days (:meth:`~ProvisioningLog.activity`:
one range query over one row per hour and writer, however many requests were logged).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scim.portal.chart import Activity, activity, hour_starts
from scim.provisioning_log import LogEntry, ProvisioningLog

__all__ = ["OPERATIONS", "PAGE_SIZE", "SCAN_LIMIT", "STATUSES", "LogFilter", "LogView", "read_activity", "read_logs"]

PAGE_SIZE = 50
SCAN_LIMIT = 2000
"""The most entries read to fill one filtered page."""
_CURSOR = re.compile(r"[af]\|\d{17}\|[!-~]{0,128}")

OPERATIONS = tuple(
    f"{method} {path}"
    for path, methods in (
        ("/Users", ("GET", "POST")),
        ("/Users/{id}", ("GET", "PUT", "PATCH", "DELETE")),
        ("/Groups", ("GET", "POST")),
        ("/Groups/{id}", ("GET", "PUT", "PATCH", "DELETE")),
        ("/Users/.search", ("POST",)),
        ("/Groups/.search", ("POST",)),
        ("/.search", ("POST",)),
        ("/ServiceProviderConfig", ("GET",)),
        ("/Schemas", ("GET",)),
        ("/ResourceTypes", ("GET",)),
        ("/Bulk", ("POST",)),
    )
    for method in methods
)
"""The operations the log names (``PATCH /Groups/{id}``), offered by the operation filter."""
STATUSES = ("2xx", "4xx", "5xx", "400", "404", "409", "412", "413", "429", "500", "503")


@dataclass(frozen=True)
class LogFilter:
    """The log section's filters, read from the page's query string (anything unknown is ignored)."""

    failures_only: bool = False
    operation: str = ""
    status: str = ""
    search: str = ""
    cursor: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> LogFilter:
        operation = query.get("operation", "")
        status = query.get("status", "")
        cursor = query.get("cursor") or None
        return cls(
            failures_only=query.get("failures") in ("1", "on", "true"),
            operation=operation if operation in OPERATIONS else "",
            status=status if status in STATUSES else "",
            search=" ".join(query.get("q", "").split())[:256],
            cursor=cursor if cursor is not None and _CURSOR.fullmatch(cursor) else None,
        )

    @property
    def narrows(self) -> bool:
        """Whether a filter the log cannot apply itself is set."""
        return bool(self.operation or self.status or self.search)

    @property
    def active(self) -> bool:
        return self.narrows or self.failures_only

    def matches(self, entry: LogEntry) -> bool:
        if self.operation and entry.operation != self.operation:
            return False
        if self.status:
            code = str(entry.status)
            if self.status.endswith("xx") and code[:1] != self.status[0]:
                return False
            if not self.status.endswith("xx") and code != self.status:
                return False
        if self.search:
            needle = self.search.casefold()
            return any(needle in (value or "").casefold() for value in (entry.resource_id, entry.subject))
        return True

    def query(self, cursor: str | None = None) -> dict[str, str]:
        """The query string of this filter (and ``cursor``), for links."""
        values = {
            "failures": "1" if self.failures_only else "",
            "operation": self.operation,
            "status": self.status,
            "q": self.search,
            "cursor": cursor or "",
        }
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class LogView:
    """One page of the log section: its entries, the cursor of the next page, and how many
    entries were read to fill it (``scanned``; ``cut``: the scan stopped at :data:`SCAN_LIMIT`)."""

    entries: list[LogEntry]
    cursor: str | None
    filter: LogFilter = field(default_factory=LogFilter)
    scanned: int = 0
    cut: bool = False


async def read_logs(log: ProvisioningLog, tenant: str, filter_: LogFilter) -> LogView:
    """One page of the tenant's log, newest first, under ``filter_``."""
    if not filter_.narrows:
        page = await log.page(tenant, failures_only=filter_.failures_only, limit=PAGE_SIZE, cursor=filter_.cursor)
        return LogView(page.entries, page.cursor, filter_, len(page.entries))
    found: list[LogEntry] = []
    cursor, scanned = filter_.cursor, 0
    while True:
        page = await log.page(tenant, failures_only=filter_.failures_only, limit=PAGE_SIZE * 2, cursor=cursor)
        scanned += len(page.entries)
        found += [entry for entry in page.entries if filter_.matches(entry)]
        cursor = page.cursor
        if cursor is None or len(found) >= PAGE_SIZE:
            return LogView(found, cursor, filter_, scanned)
        if scanned >= SCAN_LIMIT:
            return LogView(found, cursor, filter_, scanned, cut=True)


async def read_activity(log: ProvisioningLog, tenant: str, now: datetime) -> Activity:
    """Requests and failures per hour over the last 7 days (one read of the hourly counts)."""
    starts = hour_starts(now)
    counts = await log.activity(tenant, since=starts[0], until=starts[-1] + timedelta(hours=1))
    return activity(starts, counts)
