"""The contract every :class:`~scim.webhooks.delivery_state.DeliveryStateStore` passes (rules 1-4 of
:mod:`scim.webhooks.delivery_state`; rule 5, storage failures, is the Table implementation's own test).

A test module subclasses :class:`DeliveryStateContract` (named ``Test...``) and provides a
``states`` fixture (the store); every test works on tenants of its own (the ``tenant`` fixture
here), so the store need not be empty.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from scim.store.base import VersionMismatch
from scim.webhooks.delivery_state import MAX_LANE_EVENTS, Cursor, DeliveryState, DeliveryStateStore, Lane

T0 = datetime(2026, 3, 2, 12, 0, 0, 500_000, tzinfo=UTC)
"""A fixed moment the leases are taken around (the store compares the times it is given)."""
SECOND = timedelta(seconds=1)
MS = timedelta(milliseconds=1)
LEASE = timedelta(minutes=5)
EP1 = "ep_" + "1" * 32
EP2 = "ep_" + "2" * 32


def position(n: int) -> str:
    """The feed position of the ``n``-th event, of the realistic form and length of a membership
    event's (``{stamp:016d}|{row id}|{index:03d}``, 57 characters); they sort by ``n``."""
    return f"{1796199374994562 + n:016d}|evt_{n:032x}|{n % 1000:03d}"


def lanes_of(state: DeliveryState) -> list[Lane]:
    """The state's lanes in (endpoint, resource) order (the contract promises no order)."""
    return sorted(state.lanes, key=lambda lane: (lane.endpoint, lane.resource))


def to_the_ms(when: datetime) -> datetime:
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


class DeliveryStateContract:
    """The :class:`~scim.webhooks.delivery_state.DeliveryStateStore` behaviour; subclasses provide ``states``."""

    @pytest.fixture
    def tenant(self) -> str:
        return "t" + secrets.token_hex(6)

    # ---- rule 4: load ----------------------------------------------------------------------

    async def test_an_unknown_tenant_has_no_state(self, states: DeliveryStateStore, tenant: str) -> None:
        state = await states.load(tenant)
        assert state.tenant == tenant
        assert dict(state.cursors) == {} and state.lanes == []
        assert state.lease_owner is None and state.lease_until is None

    # ---- rule 1: the lease -----------------------------------------------------------------

    async def test_a_lease_is_exclusive_until_it_expires(self, states: DeliveryStateStore, tenant: str) -> None:
        first = await states.acquire(tenant, "run-a", T0, LEASE)
        assert first is not None
        assert (first.tenant, first.owner, first.until) == (tenant, "run-a", T0 + LEASE)
        assert isinstance(first.etag, str) and first.etag
        loaded = await states.load(tenant)
        assert (loaded.lease_owner, loaded.lease_until) == ("run-a", T0 + LEASE)
        assert await states.acquire(tenant, "run-b", T0 + timedelta(minutes=4), LEASE) is None
        assert await states.acquire(tenant, "run-b", T0 + LEASE - MS, LEASE) is None
        taken = await states.acquire(tenant, "run-b", T0 + LEASE, LEASE)
        assert taken is not None, "a lease is over at its end"
        assert (taken.owner, taken.until) == ("run-b", T0 + 2 * LEASE)
        loaded = await states.load(tenant)
        assert (loaded.lease_owner, loaded.lease_until) == ("run-b", T0 + 2 * LEASE)
        assert await states.acquire(tenant, "run-a", T0 + LEASE + SECOND, LEASE) is None, "run-b holds it now"

    async def test_its_holder_may_acquire_again(self, states: DeliveryStateStore, tenant: str) -> None:
        first = await states.acquire(tenant, "run-a", T0, LEASE)
        again = await states.acquire(tenant, "run-a", T0 + SECOND, LEASE)
        assert first is not None and again is not None
        assert again.until == T0 + SECOND + LEASE and again.etag != first.etag
        assert await states.acquire(tenant, "run-b", T0 + LEASE, LEASE) is None, "extended from T0 + 1 s"
        assert await states.renew(first, T0 + 2 * SECOND, LEASE) is None, "the earlier lease's ETag is stale"
        assert (await states.load(tenant)).lease_until == T0 + SECOND + LEASE

    async def test_the_lease_is_stored_to_the_millisecond(self, states: DeliveryStateStore, tenant: str) -> None:
        now = T0 + timedelta(microseconds=1_999)
        lease = await states.acquire(tenant, "run-a", now, LEASE)
        assert lease is not None and lease.until == now + LEASE
        assert (await states.load(tenant)).lease_until == to_the_ms(now + LEASE)
        renewed = await states.renew(lease, now + SECOND, LEASE)
        assert renewed is not None and renewed.until == now + SECOND + LEASE
        assert (await states.load(tenant)).lease_until == to_the_ms(now + SECOND + LEASE)

    async def test_renew_extends_the_lease_until_it_is_taken_over(
        self, states: DeliveryStateStore, tenant: str
    ) -> None:
        minute = timedelta(minutes=1)
        lease = await states.acquire(tenant, "run-a", T0, minute)
        assert lease is not None
        renewed = await states.renew(lease, T0 + 30 * SECOND, minute)
        assert renewed is not None
        assert (renewed.tenant, renewed.owner, renewed.until) == (tenant, "run-a", T0 + 90 * SECOND)
        assert renewed.etag != lease.etag
        assert await states.acquire(tenant, "run-b", T0 + minute, minute) is None, "renewed: not expired at T0 + 60 s"
        assert (await states.load(tenant)).lease_until == T0 + 90 * SECOND
        taken = await states.acquire(tenant, "run-b", T0 + 90 * SECOND, minute)
        assert taken is not None, "not renewed in time: taken over"
        assert await states.renew(renewed, T0 + 91 * SECOND, minute) is None, "lost"
        assert await states.renew(lease, T0 + 91 * SECOND, minute) is None
        loaded = await states.load(tenant)
        assert (loaded.lease_owner, loaded.lease_until) == ("run-b", T0 + 150 * SECOND)

    async def test_a_release_frees_the_lease_at_once(self, states: DeliveryStateStore, tenant: str) -> None:
        first = await states.acquire(tenant, "run-a", T0, LEASE)
        assert first is not None
        await states.release(first)
        loaded = await states.load(tenant)
        assert loaded.lease_owner is None and loaded.lease_until is None
        second = await states.acquire(tenant, "run-b", T0 + SECOND, LEASE)
        assert second is not None
        await states.release(first)  # released once, and lost since: nothing happens
        assert await states.acquire(tenant, "run-c", T0 + 2 * SECOND, LEASE) is None, "run-b still holds it"
        assert (await states.load(tenant)).lease_owner == "run-b"
        assert await states.renew(first, T0 + 2 * SECOND, LEASE) is None

    async def test_of_concurrent_acquires_exactly_one_wins(self, states: DeliveryStateStore, tenant: str) -> None:
        created = await asyncio.gather(*(states.acquire(tenant, f"run-{i}", T0, LEASE) for i in range(5)))
        winners = [lease for lease in created if lease is not None]
        assert len(winners) == 1, "of concurrent first acquires (the insert)"
        assert (await states.load(tenant)).lease_owner == winners[0].owner
        later = T0 + LEASE  # expired: every acquire may take it over
        updated = await asyncio.gather(*(states.acquire(tenant, f"run-{i}", later, LEASE) for i in range(5, 10)))
        winners = [lease for lease in updated if lease is not None]
        assert len(winners) == 1, "of concurrent acquires of an expired lease (the guarded update)"
        assert (await states.load(tenant)).lease_owner == winners[0].owner

    # ---- rule 2: cursors -------------------------------------------------------------------

    async def test_a_cursor_is_inserted_then_moved_from_its_etag(self, states: DeliveryStateStore, tenant: str) -> None:
        first = await states.save_cursor(tenant, EP1, position(1), None)
        assert (first.endpoint, first.position) == (EP1, position(1))
        assert isinstance(first.etag, str) and first.etag
        assert dict((await states.load(tenant)).cursors) == {EP1: Cursor(EP1, position(1), first.etag)}
        moved = await states.save_cursor(tenant, EP1, position(2), first.etag)
        assert (moved.endpoint, moved.position) == (EP1, position(2)) and moved.etag != first.etag
        loaded = (await states.load(tenant)).cursors[EP1]
        assert loaded.position == position(2)
        moved_again = await states.save_cursor(tenant, EP1, position(3), loaded.etag)  # the ETag as loaded
        assert moved_again.position == position(3)
        assert (await states.load(tenant)).cursors[EP1] == moved_again

    async def test_a_cursor_does_not_move_from_a_stale_etag(self, states: DeliveryStateStore, tenant: str) -> None:
        first = await states.save_cursor(tenant, EP1, position(1), None)
        second = await states.save_cursor(tenant, EP1, position(2), first.etag)
        with pytest.raises(VersionMismatch):
            await states.save_cursor(tenant, EP1, position(3), first.etag)
        with pytest.raises(VersionMismatch):
            await states.save_cursor(tenant, EP1, position(3), None)  # it exists already
        with pytest.raises(VersionMismatch):
            await states.save_cursor(tenant, EP2, position(3), second.etag)  # EP2 has no cursor
        assert dict((await states.load(tenant)).cursors) == {EP1: second}

    async def test_a_rewind_fails_the_holders_next_save(self, states: DeliveryStateStore, tenant: str) -> None:
        held = await states.save_cursor(tenant, EP1, position(5), None)
        await states.rewind(tenant, EP1, position(1))
        loaded = (await states.load(tenant)).cursors[EP1]
        assert loaded.position == position(1) and loaded.etag != held.etag
        with pytest.raises(VersionMismatch):
            await states.save_cursor(tenant, EP1, position(6), held.etag)
        assert (await states.load(tenant)).cursors[EP1].position == position(1), "the failed save changed nothing"
        resumed = await states.save_cursor(tenant, EP1, position(2), loaded.etag)  # after loading again
        assert (await states.load(tenant)).cursors[EP1] == resumed

    async def test_a_rewind_sets_a_cursor_that_does_not_exist(self, states: DeliveryStateStore, tenant: str) -> None:
        await states.rewind(tenant, EP2, position(7))
        loaded = (await states.load(tenant)).cursors[EP2]
        assert loaded.position == position(7)
        with pytest.raises(VersionMismatch):
            await states.save_cursor(tenant, EP2, position(8), None)
        assert (await states.save_cursor(tenant, EP2, position(8), loaded.etag)).position == position(8)

    # ---- rule 3: lanes ---------------------------------------------------------------------

    async def test_a_lane_round_trips(self, states: DeliveryStateStore, tenant: str) -> None:
        retry_at = T0 + timedelta(seconds=5, microseconds=123_456)
        waiting = Lane(
            EP1,
            "User/2819c223-7f76-453a-919d-413861904646",
            [position(3), position(1), position(2)],  # the lane's order, not the positions'
            attempts=3,
            next_at=retry_at,
            last_error="HTTP 503 from https://hooks.example.com/scim: «Service Unavailable» | retry",
        )
        parked = Lane(EP2, "Group/e9e30dba-f08f-4109-8486-d5c6a331660a", [position(4)])
        await states.save_lane(tenant, waiting)
        await states.save_lane(tenant, parked)
        assert lanes_of(await states.load(tenant)) == [
            Lane(
                EP1,
                "User/2819c223-7f76-453a-919d-413861904646",
                [position(3), position(1), position(2)],
                attempts=3,
                next_at=to_the_ms(retry_at),
                last_error="HTTP 503 from https://hooks.example.com/scim: «Service Unavailable» | retry",
            ),
            Lane(EP2, "Group/e9e30dba-f08f-4109-8486-d5c6a331660a", [position(4)], 0, None, ""),
        ]
        loaded = lanes_of(await states.load(tenant))[0]
        assert loaded.next_at is not None and loaded.next_at.utcoffset() == timedelta(0)
        waiting.positions.append(position(9))  # the caller's lane is not the stored one
        assert lanes_of(await states.load(tenant))[0].positions == [position(3), position(1), position(2)]

    async def test_a_lane_is_saved_whole(self, states: DeliveryStateStore, tenant: str) -> None:
        resource = "User/" + "a" * 32
        long = Lane(EP1, resource, [position(n) for n in range(2_000)], 1, T0, "timeout")
        await states.save_lane(tenant, long)
        assert lanes_of(await states.load(tenant)) == [long]
        short = Lane(EP1, resource, [position(5_000), position(5_001)], 2, None, "")
        await states.save_lane(tenant, short)
        assert lanes_of(await states.load(tenant)) == [short], "nothing of the longer lane is left"
        await states.save_lane(tenant, long)
        assert lanes_of(await states.load(tenant)) == [long]

    async def test_a_lane_holds_at_most_max_lane_events(self, states: DeliveryStateStore, tenant: str) -> None:
        resource = "Group/" + "b" * 32
        full = Lane(EP1, resource, [position(n) for n in range(MAX_LANE_EVENTS)], 7, T0 + LEASE, "HTTP 500")
        await states.save_lane(tenant, full)
        assert lanes_of(await states.load(tenant)) == [full]
        over = Lane(EP1, resource, [position(n) for n in range(MAX_LANE_EVENTS + 1)], 8, None, "")
        with pytest.raises(ValueError):
            await states.save_lane(tenant, over)
        assert lanes_of(await states.load(tenant)) == [full], "the refused lane changed nothing"

    async def test_drop_lane_removes_one_lane(self, states: DeliveryStateStore, tenant: str) -> None:
        user, group = "User/" + "c" * 32, "Group/" + "d" * 32
        kept = [Lane(EP1, group, [position(2)]), Lane(EP2, user, [position(3)])]
        await states.save_lane(tenant, Lane(EP1, user, [position(1)]))
        for lane in kept:
            await states.save_lane(tenant, lane)
        await states.drop_lane(tenant, EP1, user)
        assert lanes_of(await states.load(tenant)) == kept
        await states.drop_lane(tenant, EP1, user)  # dropped already: no error
        await states.drop_lane(tenant, EP2, group)  # never there: no error
        await states.drop_lane("t" + secrets.token_hex(6), EP1, user)  # a tenant with no state at all
        assert lanes_of(await states.load(tenant)) == kept

    # ---- rule 4: tenants -------------------------------------------------------------------

    async def test_tenants_are_disjoint(self, states: DeliveryStateStore, tenant: str) -> None:
        other = tenant + "x"
        resource = "User/" + "e" * 32
        mine = await states.acquire(tenant, "run-a", T0, LEASE)
        theirs = await states.acquire(other, "run-b", T0, LEASE)
        assert mine is not None and theirs is not None, "one lease per tenant"
        cursor = await states.save_cursor(tenant, EP1, position(1), None)
        their_cursor = await states.save_cursor(other, EP1, position(9), None)  # an endpoint of both tenants
        await states.save_lane(tenant, Lane(EP1, resource, [position(2)]))
        await states.save_lane(other, Lane(EP1, resource, [position(10), position(11)], 1, T0, "boom"))
        await states.rewind(other, EP1, position(8))
        await states.save_cursor(tenant, EP1, position(3), cursor.etag)  # unaffected by the other's rewind
        with pytest.raises(VersionMismatch):
            await states.save_cursor(other, EP1, position(12), their_cursor.etag)
        await states.drop_lane(other, EP1, resource)
        mine_loaded, theirs_loaded = await states.load(tenant), await states.load(other)
        assert (mine_loaded.tenant, theirs_loaded.tenant) == (tenant, other)
        assert mine_loaded.lease_owner == "run-a" and theirs_loaded.lease_owner == "run-b"
        assert mine_loaded.cursors[EP1].position == position(3) and theirs_loaded.cursors[EP1].position == position(8)
        assert lanes_of(mine_loaded) == [Lane(EP1, resource, [position(2)])] and theirs_loaded.lanes == []
        await states.release(theirs)
        assert (await states.load(tenant)).lease_owner == "run-a"

    async def test_forget_endpoint_removes_its_cursor_and_lanes_in_one_tenant(
        self, states: DeliveryStateStore, tenant: str
    ) -> None:
        other = tenant + "x"
        await states.forget_endpoint(tenant, EP1)  # nothing there: no error
        # An endpoint id that EP1's lane keys start with must not be confused with it.
        longer = EP1 + "0"
        for name in (tenant, other):
            assert await states.acquire(name, "run-a", T0, LEASE) is not None
            for endpoint in (EP1, EP2, longer):
                await states.save_cursor(name, endpoint, position(1), None)
                await states.save_lane(name, Lane(endpoint, "User/" + "f" * 32, [position(3)], 1, T0, "boom"))
            await states.save_lane(name, Lane(EP1, "Group/" + "f" * 32, [position(n) for n in range(600)]))
        before = await states.load(other)
        await states.forget_endpoint(tenant, EP1)
        mine = await states.load(tenant)
        assert set(mine.cursors) == {EP2, longer}
        assert {(lane.endpoint, lane.resource) for lane in mine.lanes} == {
            (EP2, "User/" + "f" * 32),
            (longer, "User/" + "f" * 32),
        }
        assert (mine.lease_owner, mine.lease_until) == ("run-a", T0 + LEASE), "the lease stays"
        after = await states.load(other)
        assert dict(after.cursors) == dict(before.cursors) and lanes_of(after) == lanes_of(before)
        assert (await states.save_cursor(tenant, EP1, position(4), None)).position == position(4), "a new cursor"

    async def test_forget_removes_one_tenants_state(self, states: DeliveryStateStore, tenant: str) -> None:
        other = tenant + "x"
        await states.forget(tenant)  # nothing there: no error
        for name in (tenant, other):
            assert await states.acquire(name, "run-a", T0, LEASE) is not None
            await states.save_cursor(name, EP1, position(1), None)
            await states.save_cursor(name, EP2, position(2), None)
            await states.save_lane(name, Lane(EP1, "User/" + "f" * 32, [position(3)], 1, T0, "boom"))
            await states.save_lane(name, Lane(EP2, "Group/" + "f" * 32, [position(n) for n in range(600)]))
        before = await states.load(other)
        await states.forget(tenant)
        gone = await states.load(tenant)
        assert dict(gone.cursors) == {} and gone.lanes == [] and gone.lease_owner is None and gone.lease_until is None
        after = await states.load(other)
        assert dict(after.cursors) == dict(before.cursors) and lanes_of(after) == lanes_of(before)
        assert (after.lease_owner, after.lease_until) == ("run-a", T0 + LEASE)
        assert await states.acquire(tenant, "run-b", T0 + SECOND, LEASE) is not None, "the lease went too"
        assert (await states.save_cursor(tenant, EP1, position(4), None)).position == position(4), "a new cursor"
