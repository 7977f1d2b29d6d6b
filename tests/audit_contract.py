"""The contract every :class:`~scim.portal.audit.AuditTrail` passes (:mod:`scim.portal.audit`).

A test module subclasses :class:`AuditTrailContract` (named ``Test...``) and provides a ``trail``
fixture. Tenant names are fresh per test, so the trail may be shared.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from scim.portal.audit import AuditEntry, AuditTrail
from scim.provisioning_log import format_time
from scim.tenants import InvalidTenantName

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def tenant() -> str:
    return "a-" + uuid.uuid4().hex[:10]


def entry(name: str, n: int, when: datetime | None = None, action: str = "token.rotated") -> AuditEntry:
    kwargs = {} if when is None else {"time": format_time(when)}
    return AuditEntry(name, "operator:alice@contoso.com", action, {"n": str(n)}, **kwargs)


class AuditTrailContract:
    """The :class:`~scim.portal.audit.AuditTrail` behaviour; subclasses provide ``trail``."""

    async def test_entries_come_back_newest_first_as_recorded(self, trail: AuditTrail) -> None:
        name = tenant()
        times = [T0 + timedelta(minutes=m) for m in (3, 1, 4, 2, 0)]
        for n, when in enumerate(times):
            await trail.record(entry(name, n, when))
        page = await trail.page(name)
        assert [e.time for e in page.entries] == [format_time(t) for t in sorted(times, reverse=True)]
        assert page.cursor is None
        first = page.entries[0]
        assert first == AuditEntry(
            name, "operator:alice@contoso.com", "token.rotated", {"n": "2"}, format_time(times[2])
        )

    async def test_entries_of_one_millisecond_are_newest_first_too(self, trail: AuditTrail) -> None:
        name = tenant()
        for n in range(6):
            await trail.record(entry(name, n, T0))
        assert [e.detail["n"] for e in (await trail.page(name)).entries] == ["5", "4", "3", "2", "1", "0"]

    async def test_pages_follow_each_other_without_gap_or_repeat(self, trail: AuditTrail) -> None:
        name = tenant()
        for n in range(7):
            await trail.record(entry(name, n, T0 + timedelta(seconds=n)))
        seen: list[str] = []
        cursor = None
        sizes = []
        while True:
            page = await trail.page(name, limit=3, cursor=cursor)
            sizes.append(len(page.entries))
            seen += [e.detail["n"] for e in page.entries]
            if page.cursor is None:
                break
            cursor = page.cursor
        assert sizes == [3, 3, 1] and seen == ["6", "5", "4", "3", "2", "1", "0"]
        exact = await trail.page(name, limit=7)
        assert len(exact.entries) == 7 and exact.cursor is None
        assert (await trail.page(name, limit=0)).entries == (await trail.page(name, limit=1)).entries
        assert len((await trail.page(name, limit=5000)).entries) == 7

    async def test_a_cursor_is_checked(self, trail: AuditTrail) -> None:
        name = tenant()
        await trail.record(entry(name, 0))
        for bad in ("", "x", "' or 1 eq 1", "0" * 17, "9" * 17 + "|" + "9" * 17 + "|zzzzzzzz"):
            with pytest.raises(ValueError, match="not an audit cursor"):
                await trail.page(name, cursor=bad)

    async def test_tenants_see_their_own_entries(self, trail: AuditTrail) -> None:
        one, two = tenant(), tenant()
        await trail.record(entry(one, 1))
        await trail.record(entry(two, 2))
        assert [e.tenant for e in (await trail.page(one)).entries] == [one]
        assert [e.detail for e in (await trail.page(two)).entries] == [{"n": "2"}]
        assert (await trail.page(tenant())).entries == []

    async def test_details_and_actors_round_trip(self, trail: AuditTrail) -> None:
        name = tenant()
        recorded = [
            AuditEntry(name, "cli", "links.revoked", {}),
            AuditEntry(
                name,
                "entra:0b1c2d3e-0000-4000-8000-00000000abcd@72f988bf-86f1-41af-91ab-2d7cd011db47",
                "notify.updated",
                {"to": "ops@contoso.com, it@contoso.com", "enabled": "true"},
            ),
            AuditEntry(name, "setup-link:0a1b2c3d", "session.started", {"note": "é \x1b[2J\u202e ✓"}),
        ]
        for e in recorded:
            await trail.record(e)
        assert sorted((await trail.page(name)).entries, key=lambda e: e.action) == sorted(
            recorded, key=lambda e: e.action
        )

    async def test_concurrent_records_are_all_kept(self, trail: AuditTrail) -> None:
        name = tenant()
        await asyncio.gather(*(trail.record(entry(name, n, T0)) for n in range(20)))
        assert sorted(int(e.detail["n"]) for e in (await trail.page(name)).entries) == list(range(20))

    async def test_purge_forgets_the_tenant_only(self, trail: AuditTrail) -> None:
        name, other = tenant(), tenant()
        for n in range(3):
            await trail.record(entry(name, n))
        await trail.record(entry(other, 9))
        await trail.purge(name)
        assert (await trail.page(name)).entries == []
        assert len((await trail.page(other)).entries) == 1
        await trail.purge(name)

    async def test_purge_older_deletes_entries_up_to_a_time(self, trail: AuditTrail) -> None:
        name = tenant()
        for days in range(5):
            await trail.record(entry(name, days, T0 - timedelta(days=days)))
        assert await trail.purge_older(name, T0 - timedelta(days=3)) == 2  # days 3 and 4
        assert [e.detail["n"] for e in (await trail.page(name)).entries] == ["0", "1", "2"]
        assert await trail.purge_older(name, T0 - timedelta(days=10)) == 0

    async def test_tenant_names_are_checked(self, trail: AuditTrail) -> None:
        for bad in ("", "UPPER", "a|b", "dev\n"):
            with pytest.raises(InvalidTenantName):
                await trail.page(bad)
            with pytest.raises(InvalidTenantName):
                await trail.purge(bad)
            with pytest.raises(InvalidTenantName):
                await trail.purge_older(bad, T0)
