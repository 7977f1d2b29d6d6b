"""The contracts of the provisioning log (rules 1-9 and 11 of :mod:`scim.provisioning_log.base`,
and its :class:`~scim.provisioning_log.LogWriter`'s hourly tallies) and of the digest state
(rules 1-4 of :mod:`scim.notify.state`).

A test module subclasses :class:`ProvisioningLogContract` (named ``Test...``) and provides two
fixtures: ``log`` (the log under test) and ``tenant`` (a fresh, unique tenant name per test).
:class:`NotifyStateContract` does the same for a ``states`` fixture (and ``tenant``). Both run
on the memory doubles (``tests/test_log_memory.py``) and on Azurite (``tests/test_log_tables.py``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from scim.notify.state import NotifyStateStore
from scim.provisioning_log import (
    MAX_TEXT,
    HourCount,
    HourTally,
    LogEntry,
    LogPage,
    LogWriter,
    ProvisioningLog,
    bucket_of,
    format_time,
    hour_of,
    parse_time,
)
from scim.store.base import StoreUnavailable

T0 = datetime(2026, 3, 2, 12, 0, 0, 500_000, tzinfo=UTC)
"""A fixed moment the log tests' entries are placed around (tenants are fresh per test)."""
SECOND = timedelta(seconds=1)
MS = timedelta(milliseconds=1)
HOUR = timedelta(hours=1)
H0 = hour_of(T0)
SOON = hour_of(datetime.now(UTC)) + 3 * HOUR
"""An hour to come: a writer keeps its series of such hours across writes (those of T0's hour,
long over, it starts again each write round)."""


def entry(at: datetime, cid: str, status: int = 200, **fields: object) -> LogEntry:
    """An entry at ``at`` with correlation id ``cid`` (``GET /Users/{id}`` unless ``operation`` given)."""
    values: dict[str, object] = {"operation": "GET /Users/{id}", "duration_ms": 1.5, **fields}
    return LogEntry(time=format_time(at), status=status, correlation_id=cid, **values)  # type: ignore[arg-type]


def cids(entries: list[LogEntry]) -> list[str]:
    return [e.correlation_id for e in entries]


async def read_all(log: ProvisioningLog, tenant: str, limit: int, **window: object) -> tuple[list[str], int]:
    """Every entry of the window, page by page: (correlation ids, number of pages)."""
    found: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await log.page(tenant, limit=limit, cursor=cursor, **window)  # type: ignore[arg-type]
        pages += 1
        assert len(page.entries) <= limit
        found += cids(page.entries)
        cursor = page.cursor
        if cursor is None:
            return found, pages


async def hourly_of_entries(log: ProvisioningLog, tenant: str, since: datetime, until: datetime) -> list[HourCount]:
    """The requests and failures per hour of the entries recorded in the window, read entry by entry."""
    page = await log.page(tenant, since=since, until=until, limit=100_000)
    hours: dict[datetime, tuple[int, int]] = {}
    for e in page.entries:
        requests, failures = hours.get(hour_of(parse_time(e.time)), (0, 0))
        hours[hour_of(parse_time(e.time))] = (requests + 1, failures + e.failed)
    return [HourCount(hour, *hours[hour]) for hour in sorted(hours)]


class Flaky(ProvisioningLog):
    """A log whose next writes fail: ``before`` (nothing recorded, as a refused transaction) or
    ``after`` (recorded, then the answer lost for good: a timeout, resends that failed)."""

    def __init__(self, inner: ProvisioningLog) -> None:
        self.inner = inner
        self.faults: list[str] = []

    async def record_many(
        self,
        tenant: str,
        entries: Sequence[LogEntry],
        unauthenticated: Mapping[datetime, int] | None = None,
        writer: str = "",
        hourly: Sequence[HourTally] = (),
    ) -> None:
        fault = self.faults.pop(0) if self.faults else None
        if fault == "before":
            raise StoreUnavailable("refused (test)")
        await self.inner.record_many(tenant, entries, unauthenticated, writer, hourly)
        if fault == "after":
            raise StoreUnavailable("the answer was lost (test)")

    async def page(self, tenant: str, **kwargs: object) -> LogPage:  # type: ignore[override]
        return await self.inner.page(tenant, **kwargs)  # type: ignore[arg-type]

    async def count(self, tenant: str, *, since: datetime | None, until: datetime) -> int:
        return await self.inner.count(tenant, since=since, until=until)

    async def activity(self, tenant: str, *, since: datetime | None, until: datetime) -> list[HourCount]:
        return await self.inner.activity(tenant, since=since, until=until)

    async def unauthenticated(self, tenant: str, *, since: datetime | None, until: datetime) -> int:
        return await self.inner.unauthenticated(tenant, since=since, until=until)

    async def purge(self, tenant: str, older_than: datetime) -> int:
        return await self.inner.purge(tenant, older_than)


class ProvisioningLogContract:
    """Rules 1-9 and 11 of :mod:`scim.provisioning_log.base`, and the writer's hourly tallies;
    subclasses provide ``log`` and ``tenant`` fixtures."""

    # ---- rule 2: newest first; every field kept ---------------------------------------------

    async def test_entries_are_read_newest_first_with_every_field(self, log: ProvisioningLog, tenant: str) -> None:
        full = LogEntry(
            time=format_time(T0 + SECOND),
            operation="POST /Users",
            status=409,
            correlation_id="c-full",
            duration_ms=12.25,
            resource_type="User",
            resource_id="2819c223-7f76-453a-919d-413861904646",
            scim_type="uniqueness",
            detail="userName is already taken",
            subject="ann@contoso.example",
        )
        bare = entry(T0, "c-bare", 204, operation="DELETE /Users/{id}")
        newest = entry(T0 + 2 * SECOND, "c-newest", 200)
        await log.record(tenant, full)
        await log.record_many(tenant, [newest, bare])
        page = await log.page(tenant)
        assert page.entries == [newest, full, bare] and page.cursor is None
        assert page.entries[2].resource_id is None and page.entries[2].detail is None

    async def test_entries_of_the_same_time_are_in_correlation_id_order(
        self, log: ProvisioningLog, tenant: str
    ) -> None:
        same = [entry(T0, cid) for cid in ("c3", "c1", "c2")]
        await log.record_many(tenant, [*same, entry(T0 + MS, "c0"), entry(T0 - MS, "c9")])
        assert cids((await log.page(tenant)).entries) == ["c0", "c1", "c2", "c3", "c9"]

    # ---- rule 3: an entry is its time and correlation id ------------------------------------

    async def test_recording_an_entry_again_replaces_it(self, log: ProvisioningLog, tenant: str) -> None:
        await log.record(tenant, entry(T0, "c1", 200, duration_ms=1.0))
        await log.record_many(tenant, [entry(T0, "c1", 201, duration_ms=2.0), entry(T0, "c1", 201, duration_ms=3.0)])
        await log.record(tenant, entry(T0 + MS, "c1"))  # another time: another entry
        page = await log.page(tenant)
        assert [(e.correlation_id, e.status, e.duration_ms) for e in page.entries] == [
            ("c1", 200, 1.5),
            ("c1", 201, 3.0),
        ]
        assert await log.count(tenant, since=None, until=T0 + SECOND) == 2

    # ---- rule 4: failures apart --------------------------------------------------------------

    async def test_failures_are_read_without_successes(self, log: ProvisioningLog, tenant: str) -> None:
        statuses = [200, 404, 201, 409, 204, 400, 500, 399]
        entries = [entry(T0 + i * SECOND, f"c{i}", status) for i, status in enumerate(statuses)]
        await log.record_many(tenant, random.sample(entries, len(entries)))
        failures = await log.page(tenant, failures_only=True)
        assert cids(failures.entries) == ["c6", "c5", "c3", "c1"]
        assert all(e.failed for e in failures.entries) and failures.entries[0].status == 500
        everything = await log.page(tenant)
        assert len(everything.entries) == len(statuses)
        oldest_first = await log.failures(tenant, since=None, until=T0 + 10 * SECOND)
        assert cids(oldest_first) == ["c1", "c3", "c5", "c6"]
        assert cids(await log.failures(tenant, since=T0 + 2 * SECOND, until=T0 + 6 * SECOND)) == ["c3", "c5"]
        assert cids(await log.failures(tenant, since=None, until=T0 + 10 * SECOND, cap=2)) == ["c5", "c6"]

    async def test_a_large_write_keeps_every_entry_with_its_failure(self, log: ProvisioningLog, tenant: str) -> None:
        """More rows than one Table transaction holds (150 entries, 75 failed: 225 rows)."""
        entries = [entry(T0 + i * MS, f"c{i:03d}", 409 if i % 2 else 201) for i in range(150)]
        await log.record_many(tenant, entries)
        until = T0 + SECOND
        assert await log.count(tenant, since=T0, until=until) == 150
        failures = await log.failures(tenant, since=T0, until=until)
        assert cids(failures) == [f"c{i:03d}" for i in range(1, 150, 2)]

    # ---- rule 5: windows ---------------------------------------------------------------------

    async def test_windows_are_half_open(self, log: ProvisioningLog, tenant: str) -> None:
        times = {"before": T0 - MS, "at-since": T0, "inside": T0 + 500 * MS, "last": T0 + SECOND - MS}
        times |= {"at-until": T0 + SECOND, "after": T0 + SECOND + MS}
        await log.record_many(tenant, [entry(at, cid, 404) for cid, at in times.items()])
        inside = ["last", "inside", "at-since"]
        window = {"since": T0, "until": T0 + SECOND}
        assert cids((await log.page(tenant, **window)).entries) == inside  # type: ignore[arg-type]
        assert cids((await log.page(tenant, failures_only=True, **window)).entries) == inside  # type: ignore[arg-type]
        assert await log.count(tenant, **window) == 3  # type: ignore[arg-type]
        assert cids((await log.page(tenant, since=T0 + SECOND)).entries) == ["after", "at-until"]
        assert cids((await log.page(tenant, until=T0)).entries) == ["before"]
        assert await log.count(tenant, since=None, until=T0 + SECOND) == 4
        assert (await log.page(tenant, since=T0 + SECOND, until=T0 + SECOND)).entries == []

    # ---- rule 6: pages -----------------------------------------------------------------------

    async def test_pages_follow_the_cursor_to_the_end(self, log: ProvisioningLog, tenant: str) -> None:
        entries = [entry(T0 + i * SECOND, f"c{i}", 500 if i % 3 == 0 else 200) for i in range(7)]
        await log.record_many(tenant, entries)
        newest_first = [f"c{i}" for i in reversed(range(7))]
        assert await read_all(log, tenant, 3) == (newest_first, 3)
        assert await read_all(log, tenant, 1) == (newest_first, 7)
        assert await read_all(log, tenant, 7) == (newest_first, 1)
        assert await read_all(log, tenant, 50) == (newest_first, 1)
        assert await read_all(log, tenant, 2, failures_only=True) == (["c6", "c3", "c0"], 2)
        window = {"since": T0 + SECOND, "until": T0 + 5 * SECOND}
        assert await read_all(log, tenant, 3, **window) == (["c4", "c3", "c2", "c1"], 2)

    async def test_a_page_holds_at_most_limit_and_a_cursor_only_when_more_follow(
        self, log: ProvisioningLog, tenant: str
    ) -> None:
        await log.record_many(tenant, [entry(T0 + i * SECOND, f"c{i}") for i in range(4)])
        first = await log.page(tenant, limit=2)
        assert cids(first.entries) == ["c3", "c2"] and isinstance(first.cursor, str)
        second = await log.page(tenant, limit=2, cursor=first.cursor)
        assert cids(second.entries) == ["c1", "c0"] and second.cursor is None, "an exactly full last page"
        assert (await log.page(tenant, limit=4)).cursor is None
        assert cids((await log.page(tenant, limit=1)).entries) == ["c3"]
        # a cursor stays put: entries recorded after it was handed out, newer ones, are not in the next page
        await log.record(tenant, entry(T0 + 10 * SECOND, "c-new"))
        assert cids((await log.page(tenant, limit=2, cursor=first.cursor)).entries) == ["c1", "c0"]

    # ---- rule 7: text kept to MAX_TEXT -------------------------------------------------------

    async def test_long_text_is_cut_to_max_text(self, log: ProvisioningLog, tenant: str) -> None:
        long = "é" * (MAX_TEXT + 500)
        await log.record(tenant, entry(T0, "c1", 400, detail=long, subject="s" * (MAX_TEXT + 1), scim_type="x"))
        [kept] = (await log.page(tenant, failures_only=True)).entries
        assert kept.detail == long[:MAX_TEXT] and kept.subject == "s" * MAX_TEXT and kept.scim_type == "x"

    # ---- rule 8: unauthenticated counts ------------------------------------------------------

    async def test_unauthenticated_counts_per_period_and_writer(self, log: ProvisioningLog, tenant: str) -> None:
        minute = bucket_of(T0)
        earlier, later = minute - timedelta(minutes=1), minute + timedelta(minutes=1)
        await log.record_many(tenant, [], {minute: 3, earlier: 4}, "writer-a")
        await log.record_many(tenant, [], {minute: 5}, "writer-a")  # the count grew: the last one wins
        await log.record_many(tenant, [], {minute: 2, later: 1}, "writer-b")  # another process adds up
        assert await log.unauthenticated(tenant, since=minute, until=later) == 7
        assert await log.unauthenticated(tenant, since=None, until=later) == 11
        assert await log.unauthenticated(tenant, since=earlier, until=later + SECOND) == 12
        assert await log.unauthenticated(tenant, since=minute + SECOND, until=later) == 0, (
            "a period counts by its start"
        )
        assert await log.unauthenticated(tenant, since=later, until=later) == 0

    async def test_unauthenticated_counts_are_not_entries(self, log: ProvisioningLog, tenant: str) -> None:
        minute = bucket_of(T0)
        failed = entry(T0, "c1", 403)
        await log.record_many(tenant, [failed], {minute: 9}, "writer-a")
        until = minute + timedelta(minutes=1)
        assert (await log.page(tenant)).entries == [failed]
        assert await log.count(tenant, since=minute, until=until) == 1
        assert await log.unauthenticated(tenant, since=minute, until=until) == 9
        assert bucket_of(T0) == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

    # ---- rule 11: hourly tallies -------------------------------------------------------------

    async def test_hourly_tallies_replace_per_series_and_add_up_per_hour(
        self, log: ProvisioningLog, tenant: str
    ) -> None:
        later = H0 + HOUR
        await log.record_many(tenant, [], hourly=[HourTally(H0, "w1.1", 3, 1), HourTally(later, "w1.2", 1, 1)])
        await log.record_many(tenant, [], hourly=[HourTally(H0, "w1.1", 5, 2)])  # the series grew: the last one wins
        await log.record_many(tenant, [], hourly=[HourTally(H0, "w2.1", 2, 0)])  # another series adds up
        assert await log.activity(tenant, since=H0, until=later + HOUR) == [
            HourCount(H0, 7, 2),
            HourCount(later, 1, 1),
        ]
        assert await log.activity(tenant, since=None, until=later) == [HourCount(H0, 7, 2)]
        assert await log.activity(tenant, since=H0 + SECOND, until=later + SECOND) == [HourCount(later, 1, 1)], (
            "an hour counts by its start"
        )
        assert await log.activity(tenant, since=later, until=later) == []
        assert (await log.page(tenant)).entries == [] and await log.count(tenant, since=None, until=later + HOUR) == 0
        assert await log.activity(tenant + "b", since=None, until=later + HOUR) == [], "tenants are disjoint"

    async def test_tallies_are_recorded_with_their_entries_and_sent_again_add_nothing(
        self, log: ProvisioningLog, tenant: str
    ) -> None:
        entries = [entry(T0, "c1"), entry(T0 + MS, "c2", 500)]
        write = {"hourly": [HourTally(H0, "w.1", 2, 1)], "unauthenticated": {bucket_of(T0): 4}, "writer": "w"}
        await log.record_many(tenant, entries, **write)  # type: ignore[arg-type]
        await log.record_many(tenant, entries, **write)  # type: ignore[arg-type] # its answer was lost: sent again
        assert await log.activity(tenant, since=H0, until=H0 + HOUR) == [HourCount(H0, 2, 1)]
        assert await log.count(tenant, since=H0, until=H0 + HOUR) == 2
        assert await log.unauthenticated(tenant, since=H0, until=H0 + HOUR) == 4

    async def test_entries_and_tallies_that_do_not_fit_one_transaction_are_refused(
        self, log: ProvisioningLog, tenant: str
    ) -> None:
        tally = [HourTally(H0, "w.1", 99, 0)]
        with pytest.raises(ValueError, match="one transaction"):
            await log.record_many(tenant, [entry(T0 + i * MS, f"c{i:03d}") for i in range(100)], hourly=tally)
        texts = {"detail": "d" * MAX_TEXT, "subject": "s" * MAX_TEXT, "resource_id": "r" * MAX_TEXT}
        big = [entry(T0 + i * MS, f"b{i:02d}", 400, **texts) for i in range(30)]
        with pytest.raises(ValueError, match="one transaction"):  # 60 rows, but 4 MiB (escaped, at most)
            await log.record_many(tenant, big, hourly=[HourTally(H0, "w.1", 30, 30)])
        assert (await log.page(tenant)).entries == [] and await log.activity(tenant, since=None, until=T0) == []
        await log.record_many(tenant, [entry(T0 + i * MS, f"c{i:03d}") for i in range(99)], hourly=tally)
        assert await log.activity(tenant, since=None, until=T0 + HOUR) == [HourCount(H0, 99, 0)]

    @pytest.mark.parametrize("h0", [H0, SOON], ids=["past", "recent"])
    async def test_the_writer_tallies_every_hour_as_its_entries(
        self, log: ProvisioningLog, tenant: str, h0: datetime
    ) -> None:
        """Entries at both sides of hour boundaries, failures among them, more than one
        transaction holds, in several writes: each hour's tally is its entries."""
        writer = LogWriter(log)
        times = [h0 - MS, h0, h0 + HOUR - MS, h0 + HOUR, h0 + 2 * HOUR + 59 * timedelta(minutes=1)]
        times += [h0 + i * 10 * SECOND for i in range(150)]  # 150 entries in the first hour
        entries = [entry(at, f"c{i:03d}", 409 if i % 3 == 0 else 201) for i, at in enumerate(times)]
        for start in (0, 40, 120):
            for e in entries[start : start + (40 if start == 0 else 80)]:
                writer.submit(tenant, e)
            await writer.drain()
        since, until = h0 - HOUR, h0 + 3 * HOUR
        assert await log.count(tenant, since=since, until=until) == len(entries)
        hourly = await log.activity(tenant, since=since, until=until)
        assert hourly == await hourly_of_entries(log, tenant, since, until)
        assert [(h.hour, h.requests) for h in hourly] == [(h0 - HOUR, 1), (h0, 152), (h0 + HOUR, 1), (h0 + 2 * HOUR, 1)]
        assert await log.activity(tenant, since=h0, until=h0 + HOUR) == [hourly[1]]

    async def test_two_writers_add_up(self, log: ProvisioningLog, tenant: str) -> None:
        first, second = LogWriter(log), LogWriter(log)
        for i in range(40):
            (first if i % 3 else second).submit(
                tenant, entry(SOON + i * 90 * SECOND, f"c{i:02d}", 404 if i % 4 else 200)
            )
            if i % 10 == 9:
                await asyncio.gather(first.drain(), second.drain())
        expected = await hourly_of_entries(log, tenant, SOON, SOON + 2 * HOUR)
        assert sum(h.requests for h in expected) == 40 and len(expected) == 1
        assert await log.activity(tenant, since=SOON, until=SOON + 2 * HOUR) == expected

    async def test_an_entry_after_an_unauthenticated_count_is_written_within_the_flush_window(
        self, log: ProvisioningLog, tenant: str
    ) -> None:
        """A 401 is counted and written up to ``count_window`` later; an authenticated request's
        entry submitted meanwhile still waits only ``window`` (found by hand: the portal's Test
        connection with a wrong token, then a failed create, showed in the logs 8 s late)."""
        writer = LogWriter(log, window=0.05, count_window=30.0)
        writer.count_unauthenticated(tenant)
        writer.submit(tenant, entry(T0, "after-a-401", 400))
        for _ in range(100):  # up to 5 s on a slow store; the old writer waited the 30 s
            await asyncio.sleep(0.05)
            if await log.count(tenant, since=T0 - HOUR, until=T0 + HOUR):
                break
        assert cids((await log.page(tenant)).entries) == ["after-a-401"]
        await writer.drain()

    @pytest.mark.parametrize("fault", ["before", "after"])
    async def test_a_failed_write_leaves_the_tallies_equal_to_the_entries(
        self, log: ProvisioningLog, tenant: str, fault: str
    ) -> None:
        """A write that fails, whether it recorded nothing or recorded everything and lost its
        answer: the writer drops its entries and the next writes keep tallies and entries equal
        (never added twice, never overwritten by a smaller total). A recent hour: the writer
        keeps its series across the writes."""
        flaky = Flaky(log)
        writer = LogWriter(flaky)
        for round_, faults in enumerate([[], [fault], [], [fault], []]):
            flaky.faults = list(faults)
            for i in range(5):
                at = SOON + (round_ * 5 + i) * SECOND
                writer.submit(tenant, entry(at, f"r{round_}-{i}", 500 if i == 0 else 200))
            await writer.drain()
        recorded = await log.count(tenant, since=SOON, until=SOON + HOUR)
        assert recorded == (25 if fault == "after" else 15)
        assert await log.activity(tenant, since=SOON, until=SOON + HOUR) == [HourCount(SOON, recorded, recorded // 5)]

    # ---- rule 9: purge by age ----------------------------------------------------------------

    async def test_purge_removes_entries_failures_and_counts_of_that_age_or_older(
        self, log: ProvisioningLog, tenant: str
    ) -> None:
        cutoff = T0 - timedelta(days=5)
        old = [entry(T0 - timedelta(days=10), "old-ok"), entry(T0 - timedelta(days=9), "old-failed", 500)]
        at_cutoff = entry(cutoff, "at-cutoff", 404)
        kept = [entry(cutoff + MS, "young-failed", 409), entry(T0, "now")]
        old_minute, young_minute = bucket_of(cutoff - timedelta(days=1)), bucket_of(T0)
        await log.record_many(tenant, [*old, at_cutoff, *kept], {old_minute: 5, young_minute: 2}, "w")
        removed = await log.purge(tenant, cutoff)
        assert removed == 2 + 2 + 1 + 1  # old-ok, old-failed twice, at-cutoff twice, a count
        assert cids((await log.page(tenant)).entries) == ["now", "young-failed"]
        assert cids((await log.page(tenant, failures_only=True)).entries) == ["young-failed"]
        assert await log.unauthenticated(tenant, since=None, until=T0 + timedelta(days=1)) == 2
        assert await log.purge(tenant, cutoff) == 0

    async def test_purge_removes_the_tallies_of_hours_starting_that_old_or_older(
        self, log: ProvisioningLog, tenant: str
    ) -> None:
        cutoff = H0 - timedelta(days=5)
        hours = [cutoff - HOUR, cutoff, cutoff + HOUR, H0]
        await log.record_many(tenant, [], hourly=[HourTally(h, f"w.{i}", 2, 1) for i, h in enumerate(hours)])
        await log.record_many(tenant, [], hourly=[HourTally(cutoff, "v.1", 1, 0)])
        assert await log.purge(tenant, cutoff + 30 * timedelta(minutes=1)) == 3, "an hour goes by its start"
        assert await log.activity(tenant, since=None, until=H0 + HOUR) == [
            HourCount(cutoff + HOUR, 2, 1),
            HourCount(H0, 2, 1),
        ]

    # ---- rule 1: tenants are disjoint --------------------------------------------------------

    async def test_tenants_are_disjoint(self, log: ProvisioningLog, tenant: str) -> None:
        other = tenant + "b"
        minute = bucket_of(T0)
        await log.record_many(tenant, [entry(T0, "mine", 500)], {minute: 3}, "w")
        await log.record_many(other, [entry(T0, "theirs", 500)], {minute: 4}, "w")
        window = {"since": minute, "until": minute + timedelta(minutes=1)}
        assert cids((await log.page(tenant)).entries) == ["mine"]
        assert cids((await log.page(other, failures_only=True)).entries) == ["theirs"]
        assert await log.unauthenticated(tenant, **window) == 3  # type: ignore[arg-type]
        assert await log.purge(other, T0 + SECOND) == 3
        assert cids((await log.page(tenant)).entries) == ["mine"]
        assert await log.count(tenant, **window) == 1  # type: ignore[arg-type]

    async def test_an_unknown_tenant_has_an_empty_log(self, log: ProvisioningLog, tenant: str) -> None:
        page = await log.page(tenant)
        assert page.entries == [] and page.cursor is None
        assert await log.failures(tenant, since=None, until=T0) == []
        assert await log.count(tenant, since=None, until=T0) == 0
        assert await log.activity(tenant, since=None, until=T0) == []
        assert await log.unauthenticated(tenant, since=None, until=T0) == 0
        assert await log.purge(tenant, T0) == 0


class NotifyStateContract:
    """Rules 1-4 of :mod:`scim.notify.state`; subclasses provide ``states`` and ``tenant`` fixtures."""

    LEASE = timedelta(minutes=5)

    async def test_a_first_acquire_has_no_watermark(self, states: NotifyStateStore, tenant: str) -> None:
        assert not await states.exists(tenant)
        state = await states.acquire(tenant, "run-a", T0, self.LEASE)
        assert state is not None and state.tenant == tenant and isinstance(state.etag, str) and state.etag
        assert state.watermark is None and state.credential_alert_at is None
        assert await states.exists(tenant)

    async def test_a_lease_is_exclusive_until_it_expires(self, states: NotifyStateStore, tenant: str) -> None:
        first = await states.acquire(tenant, "run-a", T0, self.LEASE)
        assert first is not None
        assert await states.acquire(tenant, "run-b", T0 + timedelta(minutes=4), self.LEASE) is None
        assert await states.acquire(tenant, "run-b", T0 + self.LEASE - MS, self.LEASE) is None
        taken = await states.acquire(tenant, "run-b", T0 + self.LEASE, self.LEASE)
        assert taken is not None, "a lease is over at its end"
        assert not await states.release(first, T0 + SECOND), "the lease was taken over"
        assert await states.release(taken, None)

    async def test_its_holder_may_acquire_again(self, states: NotifyStateStore, tenant: str) -> None:
        first = await states.acquire(tenant, "run-a", T0, self.LEASE)
        again = await states.acquire(tenant, "run-a", T0 + SECOND, self.LEASE)
        assert first is not None and again is not None and again.etag != first.etag
        assert await states.acquire(tenant, "run-b", T0 + self.LEASE, self.LEASE) is None, "renewed from T0 + 1 s"
        assert not await states.release(first, T0), "the earlier state is stale"
        assert await states.release(again, None)

    async def test_a_release_frees_the_lease_at_once(self, states: NotifyStateStore, tenant: str) -> None:
        first = await states.acquire(tenant, "run-a", T0, self.LEASE)
        assert first is not None and await states.release(first, None)
        second = await states.acquire(tenant, "run-b", T0 + SECOND, self.LEASE)
        assert second is not None
        assert not await states.release(first, None), "released once: its ETag is spent"

    async def test_of_concurrent_acquires_exactly_one_wins(self, states: NotifyStateStore, tenant: str) -> None:
        created = await asyncio.gather(*(states.acquire(tenant, f"run-{i}", T0, self.LEASE) for i in range(5)))
        winners = [s for s in created if s is not None]
        assert len(winners) == 1, "of concurrent first acquires (the insert)"
        assert await states.release(winners[0], T0)
        later = T0 + SECOND
        updated = await asyncio.gather(*(states.acquire(tenant, f"run-{i}", later, self.LEASE) for i in range(5)))
        winners = [s for s in updated if s is not None]
        assert len(winners) == 1, "of concurrent acquires of an existing state (the guarded update)"
        assert winners[0].watermark == T0

    async def test_watermark_and_credential_alert_round_trip_to_the_millisecond(
        self, states: NotifyStateStore, tenant: str
    ) -> None:
        state = await states.acquire(tenant, "run-a", T0, self.LEASE)
        assert state is not None
        watermark, alerted = T0 - timedelta(microseconds=1_234_567), T0 - timedelta(hours=3)
        assert await states.release(state, watermark, credential_alert_at=alerted)
        read = await states.acquire(tenant, "run-b", T0 + SECOND, self.LEASE)
        assert read is not None
        assert read.watermark == watermark.replace(microsecond=watermark.microsecond // 1000 * 1000)
        assert read.credential_alert_at == alerted
        assert await states.release(read, None), "None keeps the watermark"
        kept = await states.acquire(tenant, "run-a", T0 + 2 * SECOND, self.LEASE)
        assert kept is not None and kept.watermark == read.watermark and kept.credential_alert_at == alerted
        assert await states.release(kept, T0 + SECOND), "a new watermark alone keeps the alert time"
        moved = await states.acquire(tenant, "run-b", T0 + 3 * SECOND, self.LEASE)
        assert moved is not None and moved.watermark == T0 + SECOND and moved.credential_alert_at == alerted

    async def test_a_release_with_a_lost_lease_changes_nothing(self, states: NotifyStateStore, tenant: str) -> None:
        slow = await states.acquire(tenant, "slow", T0, timedelta(minutes=1))
        assert slow is not None
        other = await states.acquire(tenant, "fast", T0 + timedelta(minutes=2), self.LEASE)
        assert other is not None
        assert not await states.release(slow, T0 + timedelta(hours=1), credential_alert_at=T0)
        assert await states.release(other, None)
        after = await states.acquire(tenant, "third", T0 + timedelta(minutes=3), self.LEASE)
        assert after is not None and after.watermark is None and after.credential_alert_at is None

    async def test_forget_removes_the_state(self, states: NotifyStateStore, tenant: str) -> None:
        await states.forget(tenant)  # nothing there: no error
        state = await states.acquire(tenant, "run-a", T0, self.LEASE)
        assert state is not None and await states.release(state, T0)
        held = await states.acquire(tenant, "run-a", T0 + SECOND, self.LEASE)
        assert held is not None
        await states.forget(tenant)
        assert not await states.exists(tenant)
        assert not await states.release(held, T0 + SECOND), "the state is gone"
        assert not await states.exists(tenant), "a failed release writes nothing"
        fresh = await states.acquire(tenant, "run-b", T0 + 2 * SECOND, self.LEASE)
        assert fresh is not None and fresh.watermark is None, "forgotten, it starts afresh (and its lease with it)"
        await states.forget(tenant)
        await states.forget(tenant)

    async def test_tenants_are_disjoint(self, states: NotifyStateStore, tenant: str) -> None:
        other = tenant + "b"
        mine = await states.acquire(tenant, "run-a", T0, self.LEASE)
        theirs = await states.acquire(other, "run-b", T0, self.LEASE)
        assert mine is not None and theirs is not None, "one tenant's lease does not hold another's"
        assert await states.release(mine, T0)
        await states.forget(other)
        assert await states.exists(tenant) and not await states.exists(other)
        again = await states.acquire(tenant, "run-b", T0 + SECOND, self.LEASE)
        assert again is not None and again.watermark == T0
