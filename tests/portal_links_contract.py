"""The contract every :class:`~scim.portal.links.SetupLinkRegistry` passes (:mod:`scim.portal.links`).

A test module subclasses :class:`SetupLinkRegistryContract` (named ``Test...``) and provides a
``registry`` fixture (an empty registry) and ``stored_text``, everything the registry stored as
one string (to check that secrets are stored only as hashes).
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import scim.tenants
from scim.portal.links import LINK_PREFIX, SetupLink, SetupLinkRegistry, StoredLink
from scim.tenants import InvalidTenantName, hash_token

SECRET_SHAPE = re.compile(r"^scimsl_[A-Za-z0-9_-]{43}$")
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def tenant() -> str:
    return "t-" + uuid.uuid4().hex[:10]


class SetupLinkRegistryContract:
    """The :class:`~scim.portal.links.SetupLinkRegistry` behaviour; subclasses provide ``registry`` and ``stored_text``."""

    async def stored_text(self, registry: Any) -> str:
        raise NotImplementedError

    async def test_a_link_is_a_prefixed_random_secret_and_a_listed_id(self, registry: SetupLinkRegistry) -> None:
        name = tenant()
        secret, link = await registry.create(name, 7 * DAY, "operator:alice@contoso.com", now=T0)
        assert SECRET_SHAPE.match(secret), secret
        assert len(base64.urlsafe_b64decode(secret.removeprefix(LINK_PREFIX) + "=")) == 32  # 256 bits
        assert re.fullmatch(r"[0-9a-f]{8}", link.id)
        assert link == SetupLink(link.id, name, T0, T0 + 7 * DAY, "operator:alice@contoso.com")
        assert link.status(T0) == "open"
        other, second = await registry.create(name, DAY, "cli", now=T0)
        assert other != secret and second.id != link.id
        assert sorted(await registry.list(name), key=lambda x: x.id) == sorted([link, second], key=lambda x: x.id)

    async def test_secrets_are_stored_only_as_hashes_and_never_listed(self, registry: SetupLinkRegistry) -> None:
        name = tenant()
        secret, link = await registry.create(name, DAY, "cli")
        stored = await self.stored_text(registry)
        body = secret.removeprefix(LINK_PREFIX)
        assert secret not in stored and body not in stored and body[:16] not in stored
        assert base64.urlsafe_b64decode(body + "=").hex() not in stored
        assert hash_token(secret) in stored
        listed = await registry.list(name)
        shown = repr(listed) + repr([x.to_json() for x in listed])
        assert secret not in shown and body[:16] not in shown and hash_token(secret) not in shown
        found = await registry.lookup(hash_token(secret))
        assert isinstance(found, StoredLink) and found.link.id == link.id and found.key_hash == hash_token(secret)

    async def test_a_link_is_redeemed_once(self, registry: SetupLinkRegistry) -> None:
        name = tenant()
        secret, link = await registry.create(name, DAY, "cli", now=T0)
        used = await registry.redeem(secret, "session:abc", now=T0 + timedelta(hours=1))
        assert used is not None
        assert used.id == link.id and used.tenant == name and used.created_by == "cli"
        assert used.used == T0 + timedelta(hours=1) and used.used_by == "session:abc"
        assert await registry.redeem(secret, "session:again", now=T0 + timedelta(hours=2)) is None
        (listed,) = await registry.list(name)
        assert listed == used and listed.status(T0 + timedelta(hours=2)) == "used"
        assert await registry.lookup(hash_token(secret)) is None

    async def test_a_check_applies_the_rules_of_redeem_and_uses_nothing_up(self, registry: SetupLinkRegistry) -> None:
        name = tenant()
        secret, link = await registry.create(name, DAY, "cli", now=T0)
        for _ in range(3):
            assert await registry.check(secret, now=T0 + timedelta(hours=1)) == link
        assert await registry.list(name) == [link]
        assert await registry.check(secret, now=T0 + DAY) is None  # expired
        for presented in (secret[:-1], secret + "x", "nonsense", hash_token(secret), ""):
            assert await registry.check(presented, now=T0) is None, presented
        assert await registry.redeem(secret, "s", now=T0 + timedelta(hours=2)) is not None  # still open
        assert await registry.check(secret, now=T0 + timedelta(hours=2)) is None  # used
        revoked, _ = await registry.create(name, DAY, "cli", now=T0)
        assert await registry.check(revoked, now=T0) is not None
        assert await registry.revoke_all(name, now=T0 + timedelta(hours=3)) == 1
        assert await registry.check(revoked, now=T0 + timedelta(hours=3)) is None

    async def test_of_concurrent_redeems_exactly_one_succeeds(self, registry: SetupLinkRegistry) -> None:
        name = tenant()
        secret, _ = await registry.create(name, DAY, "cli")
        results = await asyncio.gather(*(registry.redeem(secret, f"session:{i}") for i in range(5)))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        (listed,) = await registry.list(name)
        assert listed.used_by == winners[0].used_by and listed.status() == "used"

    async def test_a_link_expires(self, registry: SetupLinkRegistry) -> None:
        name = tenant()
        late, link = await registry.create(name, timedelta(minutes=5), "cli", now=T0)
        early, _ = await registry.create(name, timedelta(minutes=5), "cli", now=T0)
        assert await registry.redeem(late, "s", now=T0 + timedelta(minutes=5)) is None
        assert await registry.redeem(late, "s", now=T0 + timedelta(days=3)) is None
        assert await registry.redeem(early, "s", now=T0 + timedelta(minutes=4, seconds=59)) is not None
        statuses = {x.id: x.status(T0 + timedelta(minutes=6)) for x in await registry.list(name)}
        assert statuses[link.id] == "expired" and sorted(statuses.values()) == ["expired", "used"]

    @pytest.mark.parametrize(
        "expires",
        [timedelta(minutes=4, seconds=59), timedelta(days=30, seconds=1), timedelta(0), -DAY, timedelta(days=365)],
    )
    async def test_expiry_is_5_minutes_to_30_days(self, registry: SetupLinkRegistry, expires: timedelta) -> None:
        name = tenant()
        with pytest.raises(ValueError, match="5 minutes to 30 days"):
            await registry.create(name, expires, "cli")
        assert await registry.list(name) == []

    async def test_the_bounds_of_expiry_are_accepted(self, registry: SetupLinkRegistry) -> None:
        name = tenant()
        for expires in (timedelta(minutes=5), timedelta(days=30)):
            _, link = await registry.create(name, expires, "cli", now=T0)
            assert link.expires == T0 + expires

    async def test_unknown_and_malformed_secrets_redeem_nothing(self, registry: SetupLinkRegistry) -> None:
        name = tenant()
        secret, _ = await registry.create(name, DAY, "cli")
        flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        for presented in (
            flipped,
            secret + "x",
            secret[:-1],
            secret.removeprefix(LINK_PREFIX),
            LINK_PREFIX,
            "",
            " " + secret,
            secret.upper(),
            hash_token(secret),  # someone who read the stored rows
            "scimak_" + secret.removeprefix(LINK_PREFIX),  # another kind of secret
            "scimsl_" + "é" * 43,
            "scimsl_" + "A" * 10_000,
            "/portal/setup/" + secret,
        ):
            assert await registry.redeem(presented, "s") is None, presented
        assert await registry.lookup("not a hash") is None and await registry.lookup("") is None
        assert await registry.redeem(secret, "s") is not None  # none of that used it up

    async def test_every_refusal_costs_one_lookup_and_one_comparison(
        self, registry: SetupLinkRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Unknown, malformed, used, expired, revoked and open: the same work before the answer,
        for a check and for a redeem."""
        name = tenant()
        now = datetime.now(UTC)
        used, _ = await registry.create(name, DAY, "cli")
        assert await registry.redeem(used, "s") is not None
        expired, _ = await registry.create(name, timedelta(minutes=5), "cli", now=now - DAY)
        revoked_name = tenant()
        revoked, _ = await registry.create(revoked_name, DAY, "cli")
        assert await registry.revoke_all(revoked_name) == 1
        open_secret, _ = await registry.create(name, DAY, "cli")
        compared: list[tuple[int, int]] = []
        looked_up: list[str] = []
        real_compare = scim.tenants.hmac.compare_digest
        real_lookup = registry.lookup

        def compare(a: Any, b: Any) -> bool:
            compared.append((len(a), len(b)))
            return real_compare(a, b)

        async def lookup(key_hash: str) -> StoredLink | None:
            looked_up.append(key_hash)
            return await real_lookup(key_hash)

        monkeypatch.setattr(scim.tenants.hmac, "compare_digest", compare)
        monkeypatch.setattr(registry, "lookup", lookup)
        cases = {
            "unknown": LINK_PREFIX + "Zz9" + open_secret.removeprefix(LINK_PREFIX)[3:],
            "malformed": "Bearer nonsense",
            "too long": "x" * 100_000,
            "used": used,
            "expired": expired,
            "revoked": revoked,
            "open": open_secret,
        }
        costs = {}
        for label, presented in cases.items():
            for how in ("check", "redeem"):  # a check first: it uses nothing up
                compared.clear()
                looked_up.clear()
                if how == "check":
                    result = await registry.check(presented)
                else:
                    result = await registry.redeem(presented, "s")
                assert (result is not None) == (label == "open"), (label, how)
                costs[label, how] = (tuple(compared), len(looked_up))
        assert set(costs.values()) == {(((64, 64),), 1)}, costs

    async def test_revoke_all_ends_every_open_link_of_the_tenant_only(self, registry: SetupLinkRegistry) -> None:
        name, other = tenant(), tenant()
        now = datetime.now(UTC)
        first, _ = await registry.create(name, DAY, "cli")
        second, _ = await registry.create(name, 2 * DAY, "cli")
        used, _ = await registry.create(name, DAY, "cli")
        assert await registry.redeem(used, "s") is not None
        await registry.create(name, timedelta(minutes=5), "cli", now=now - DAY)  # expired
        kept, _ = await registry.create(other, DAY, "cli")
        assert await registry.revoke_all(name) == 2
        assert await registry.redeem(first, "s") is None and await registry.redeem(second, "s") is None
        assert sorted(x.status() for x in await registry.list(name)) == ["expired", "revoked", "revoked", "used"]
        assert all(x.revoked is not None for x in await registry.list(name) if x.status() == "revoked")
        assert await registry.revoke_all(name) == 0
        assert await registry.redeem(kept, "s") is not None
        fresh, _ = await registry.create(name, DAY, "cli")  # links made later work
        assert await registry.redeem(fresh, "s") is not None

    async def test_a_redeem_racing_a_revoke_either_uses_or_loses_the_link(self, registry: SetupLinkRegistry) -> None:
        for _ in range(3):
            name = tenant()
            secret, _ = await registry.create(name, DAY, "cli")
            used, revoked = await asyncio.gather(registry.redeem(secret, "s"), registry.revoke_all(name))
            (link,) = await registry.list(name)
            if used is not None:
                assert revoked == 0 and link.status() == "used" and link.revoked is None
            else:
                assert revoked == 1 and link.status() == "revoked" and link.used is None

    async def test_list_is_newest_first_and_prunes_on_create(self, registry: SetupLinkRegistry) -> None:
        name = tenant()
        made = [
            (await registry.create(name, timedelta(minutes=5), "cli", now=T0 + timedelta(seconds=i)))[1]
            for i in range(3)
        ]
        assert [x.id for x in await registry.list(name)] == [x.id for x in reversed(made)]
        used_secret, _ = await registry.create(name, 30 * DAY, "cli", now=T0)
        await registry.redeem(used_secret, "s", now=T0 + 20 * DAY)  # ended on day 20: kept until day 50
        # 30 days after the 5-minute links ended, the next create prunes them.
        _, newest = await registry.create(name, DAY, "cli", now=T0 + 30 * DAY + timedelta(minutes=6))
        listed = await registry.list(name)
        assert listed[0].id == newest.id and len(listed) == 2
        assert {x.status(T0 + 31 * DAY) for x in listed} == {"open", "used"}

    async def test_purge_forgets_every_link_of_the_tenant_only(self, registry: SetupLinkRegistry) -> None:
        name, other = tenant(), tenant()
        await registry.create(name, DAY, "cli")
        assert await registry.revoke_all(name) == 1
        await registry.create(name, timedelta(minutes=5), "cli", now=datetime.now(UTC) - DAY)  # expired
        used, _ = await registry.create(name, DAY, "cli")
        await registry.redeem(used, "s")
        open_secret, _ = await registry.create(name, DAY, "cli")
        kept, _ = await registry.create(other, DAY, "cli")
        assert sorted(x.status() for x in await registry.list(name)) == ["expired", "open", "revoked", "used"]
        await registry.purge(name)
        assert await registry.list(name) == []
        assert await registry.redeem(open_secret, "s") is None
        assert await registry.lookup(hash_token(open_secret)) is None
        assert len(await registry.list(other)) == 1 and await registry.redeem(kept, "s") is not None
        await registry.purge(name)  # nothing left: nothing to do
        await registry.purge(tenant())

    async def test_names_and_labels_are_checked(self, registry: SetupLinkRegistry) -> None:
        for bad in ("", "UPPER", "a|b", "dev\n", "-x"):
            with pytest.raises(InvalidTenantName):
                await registry.create(bad, DAY, "cli")
            with pytest.raises(InvalidTenantName):
                await registry.list(bad)
            with pytest.raises(InvalidTenantName):
                await registry.revoke_all(bad)
            with pytest.raises(InvalidTenantName):
                await registry.purge(bad)
        name = tenant()
        for label in ("", "x" * 257, "cli\n", "a\x1bb"):
            with pytest.raises(ValueError, match="created_by"):
                await registry.create(name, DAY, label)
        secret, _ = await registry.create(name, DAY, "cli")
        with pytest.raises(ValueError, match="used_by"):
            await registry.redeem(secret, "")
        with pytest.raises(ValueError, match="timezone-aware"):
            await registry.create(name, DAY, "cli", now=datetime(2026, 1, 1))
        assert await registry.redeem(secret, "s") is not None  # the refused calls used nothing up
