"""The contract of a :class:`~scim.tenants.TenantRegistry`'s credentials (issue 13), run against
the memory double and against Azurite: Secret Tokens (regenerate, rotate with overlap, revoke,
expiry, the tenant's default lifetime, last use) and OAuth clients with their access tokens.

The registry stamps with the real clock; :func:`scim.credentials.match` takes ``now`` as an
argument, so a test that needs a later "now" (expiry, the end of an overlap) matches what the
registry read (one read, as the SCIM endpoint does) at that later time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from scim import credentials
from scim.credentials import (
    ACCESS_TOKEN_SECONDS,
    ACCESS_TOKENS_PER_MINUTE,
    MAX_ACTIVE_TOKENS,
    MAX_OAUTH_CLIENTS,
    ClientNotFound,
    InvalidClient,
    TokenNotFound,
    TooManyClients,
    TooManyTokenRequests,
    TooManyTokens,
)
from scim.tenants import TenantDeleting, TenantNotFound, TenantRegistry, TokenConflict


async def _authenticates(registry: TenantRegistry, name: str, token: str, at: datetime | None = None) -> bool:
    stored = await registry.read_credentials(name)
    return credentials.match(stored, token, at or datetime.now(UTC)) is not None


@pytest.mark.asyncio
class TenantCredentialsContract:
    """Subclasses provide a ``registry`` fixture (a fresh, empty registry)."""

    async def test_regenerate_makes_every_other_token_fail_at_once(self, registry: TenantRegistry) -> None:
        first = await registry.create("acme")
        second, _ = await registry.rotate_token("acme", overlap=3600)
        assert await _authenticates(registry, "acme", first) and await _authenticates(registry, "acme", second)
        third = await registry.set_token("acme")
        assert await _authenticates(registry, "acme", third)
        assert not await _authenticates(registry, "acme", first)
        assert not await _authenticates(registry, "acme", second)
        assert len(await registry.list_tokens("acme")) == 1

    async def test_rotation_keeps_the_old_tokens_until_the_overlap_ends(self, registry: TenantRegistry) -> None:
        old = await registry.create("acme")
        new, record = await registry.rotate_token("acme", overlap=24 * 3600)
        now = datetime.now(UTC)
        assert await _authenticates(registry, "acme", old) and await _authenticates(registry, "acme", new)
        later = now + timedelta(hours=24, seconds=1)
        assert not await _authenticates(registry, "acme", old, later), "rotated out after the overlap"
        assert await _authenticates(registry, "acme", new, later)
        listed = await registry.list_tokens("acme")
        assert [t.id for t in listed][-1] == record.id and record.ends is None
        assert listed[0].retires is not None and abs(listed[0].retires - (now.timestamp() + 24 * 3600)) < 5

    async def test_a_rotation_never_extends_an_earlier_end(self, registry: TenantRegistry) -> None:
        await registry.create("acme")
        await registry.rotate_token("acme", overlap=60)
        await registry.rotate_token("acme", overlap=3600)
        first, second, third = await registry.list_tokens("acme")
        assert first.retires is not None and second.retires is not None and third.retires is None
        assert first.retires < second.retires, "the first token still retires after 60 s, not 1 h"

    async def test_at_most_three_active_tokens(self, registry: TenantRegistry) -> None:
        await registry.create("acme")
        for _ in range(MAX_ACTIVE_TOKENS - 1):
            await registry.rotate_token("acme", overlap=3600)
        with pytest.raises(TooManyTokens, match="revoke one"):
            await registry.rotate_token("acme", overlap=3600)
        assert len(await registry.list_tokens("acme")) == MAX_ACTIVE_TOKENS
        oldest = (await registry.list_tokens("acme"))[0]
        await registry.revoke_token("acme", oldest.id)
        await registry.rotate_token("acme", overlap=3600)  # room again

    async def test_revoke_makes_one_token_fail_at_once(self, registry: TenantRegistry) -> None:
        old = await registry.create("acme")
        new, record = await registry.rotate_token("acme", overlap=3600)
        await registry.revoke_token("acme", record.id)
        assert not await _authenticates(registry, "acme", new)
        assert await _authenticates(registry, "acme", old)
        with pytest.raises(TokenNotFound):
            await registry.revoke_token("acme", record.id)
        with pytest.raises(TenantNotFound):
            await registry.revoke_token("nobody", record.id)

    async def test_expiry_and_the_tenants_default_lifetime(self, registry: TenantRegistry) -> None:
        token = await registry.create("acme", expires=3600)
        now = datetime.now(UTC)
        assert await _authenticates(registry, "acme", token)
        assert not await _authenticates(registry, "acme", token, now + timedelta(seconds=3601))
        (listed,) = await registry.list_tokens("acme")
        assert listed.expires is not None and abs(listed.expires - (now.timestamp() + 3600)) < 5

        await registry.set_token_lifetime("acme", 90 * 86400)
        assert await registry.token_lifetime("acme") == 90 * 86400
        defaulted = await registry.set_token("acme")  # no expiry given: the tenant's default
        (listed,) = await registry.list_tokens("acme")
        assert listed.expires is not None and abs(listed.expires - (now.timestamp() + 90 * 86400)) < 5
        never = await registry.set_token("acme", expires=None)  # explicitly never
        (listed,) = await registry.list_tokens("acme")
        assert listed.expires is None and await _authenticates(registry, "acme", never, now + timedelta(days=3650))
        assert not await _authenticates(registry, "acme", defaulted)
        _, rotated = await registry.rotate_token("acme", overlap=60, expires=7 * 86400)
        assert rotated.expires is not None and abs(rotated.expires - (now.timestamp() + 7 * 86400)) < 5

    async def test_last_use_is_one_guarded_write(self, registry: TenantRegistry) -> None:
        await registry.create("acme")
        seen = await registry.read_credentials("acme")
        assert seen is not None and seen.tokens[0].last_used is None
        now = datetime.now(UTC)
        assert await registry.record_use("acme", seen, seen.tokens[0].id, now)
        (listed,) = await registry.list_tokens("acme")
        assert listed.last_used == int(now.timestamp())
        # A write from a stale read changes nothing (it could bring back a revoked token).
        _, record = await registry.rotate_token("acme", overlap=60)
        assert not await registry.record_use("acme", seen, seen.tokens[0].id, now + timedelta(hours=2))
        listed_again = await registry.list_tokens("acme")
        assert [t.id for t in listed_again] == [seen.tokens[0].id, record.id]
        assert listed_again[0].last_used == int(now.timestamp())

    async def test_a_last_use_between_read_and_write_does_not_fail_a_rotation(self, registry: TenantRegistry) -> None:
        await registry.create("acme")
        seen = await registry.read_credentials("acme")
        assert seen is not None

        async def use() -> None:
            await registry.record_use("acme", seen, seen.tokens[0].id, datetime.now(UTC))

        results = await asyncio.gather(use(), registry.rotate_token("acme", overlap=60), return_exceptions=True)
        assert not any(isinstance(r, BaseException) for r in results), results
        assert len(await registry.list_tokens("acme")) == 2

    async def test_concurrent_regenerations_one_wins_and_its_token_works(self, registry: TenantRegistry) -> None:
        await registry.create("acme")
        results = await asyncio.gather(registry.set_token("acme"), registry.set_token("acme"), return_exceptions=True)
        assert all(isinstance(r, (str, TokenConflict)) for r in results), results
        tokens = [r for r in results if isinstance(r, str)]
        # Interleaved: one fails with TokenConflict; one after the other: both succeed, and the
        # second replaced the first. Either way exactly one of the tokens printed works.
        assert [await _authenticates(registry, "acme", t) for t in tokens].count(True) == 1, results

    async def test_a_deleting_tenant_has_no_credentials(self, registry: TenantRegistry) -> None:
        token = await registry.create("acme")
        client, secret = await registry.create_client("acme")
        access, _ = await registry.issue_access_token("acme", client.id, secret)
        await registry.begin_delete("acme")
        assert await registry.read_credentials("acme") is None
        assert not await registry.authenticate("acme", token) and not await registry.authenticate("acme", access)
        with pytest.raises(TenantDeleting):
            await registry.rotate_token("acme", overlap=60)
        with pytest.raises(InvalidClient):
            await registry.issue_access_token("acme", client.id, secret)

    async def test_oauth_clients_issue_access_tokens_for_their_tenant_only(self, registry: TenantRegistry) -> None:
        await registry.create("acme")
        await registry.create("globex")
        client, secret = await registry.create_client("acme")
        assert client.id.startswith(credentials.CLIENT_ID_PREFIX) and secret.startswith(
            credentials.CLIENT_SECRET_PREFIX
        )
        assert [c.id for c in await registry.list_clients("acme")] == [client.id]
        stored = await registry.read_credentials("acme")
        assert stored is not None and secret not in repr(stored) and stored.clients[0].secret_hash != secret

        access, record = await registry.issue_access_token("acme", client.id, secret)
        assert record.expires - record.issued == ACCESS_TOKEN_SECONDS
        assert await registry.authenticate("acme", access)
        assert not await registry.authenticate("globex", access), "a token of tenant A on tenant B"
        later = datetime.now(UTC) + timedelta(seconds=ACCESS_TOKEN_SECONDS + 1)
        assert not await _authenticates(registry, "acme", access, later), "expired"
        assert (await registry.list_clients("acme"))[0].last_issued == record.issued

        for wrong in ((client.id, secret + "x"), ("scimc_nobody", secret), (client.id, "")):
            with pytest.raises(InvalidClient):
                await registry.issue_access_token("acme", *wrong)
        with pytest.raises(InvalidClient):
            await registry.issue_access_token("globex", client.id, secret)
        with pytest.raises(InvalidClient):
            await registry.issue_access_token("nobody", client.id, secret)

    async def test_revoking_a_client_revokes_its_access_tokens(self, registry: TenantRegistry) -> None:
        await registry.create("acme")
        kept, kept_secret = await registry.create_client("acme")
        gone, gone_secret = await registry.create_client("acme")
        kept_token, _ = await registry.issue_access_token("acme", kept.id, kept_secret)
        gone_token, _ = await registry.issue_access_token("acme", gone.id, gone_secret)
        await registry.revoke_client("acme", gone.id)
        assert not await registry.authenticate("acme", gone_token)
        assert await registry.authenticate("acme", kept_token)
        with pytest.raises(InvalidClient):
            await registry.issue_access_token("acme", gone.id, gone_secret)
        with pytest.raises(ClientNotFound):
            await registry.revoke_client("acme", gone.id)

    async def test_client_and_rate_limits(self, registry: TenantRegistry) -> None:
        await registry.create("acme")
        clients = [await registry.create_client("acme") for _ in range(MAX_OAUTH_CLIENTS)]
        with pytest.raises(TooManyClients):
            await registry.create_client("acme")
        client, secret = clients[0]
        for _ in range(ACCESS_TOKENS_PER_MINUTE):
            await registry.issue_access_token("acme", client.id, secret)
        with pytest.raises(TooManyTokenRequests) as limited:
            await registry.issue_access_token("acme", client.id, secret)
        assert 1 <= limited.value.retry_after <= 60
        other, other_secret = clients[1]
        await registry.issue_access_token("acme", other.id, other_secret)  # per client

    async def test_concurrent_token_requests_all_succeed(self, registry: TenantRegistry) -> None:
        await registry.create("acme")
        client, secret = await registry.create_client("acme")
        issued = await asyncio.gather(*(registry.issue_access_token("acme", client.id, secret) for _ in range(3)))
        for token, _ in issued:
            assert await registry.authenticate("acme", token)
