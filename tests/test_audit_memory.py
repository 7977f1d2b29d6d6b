"""The audit trail contract (``tests/audit_contract.py``) on
:class:`~scim.store.audit_memory.MemoryAuditTrail`, and what an :class:`~scim.portal.audit.AuditEntry`
refuses (secrets above all)."""

from __future__ import annotations

import pytest

from scim.portal.audit import AuditEntry, SecretInAudit, entry_key, looks_like_secret
from scim.portal.links import new_link_secret
from scim.store.audit_memory import MemoryAuditTrail
from scim.tenants import InvalidTenantName, new_token
from tests.audit_contract import AuditTrailContract


class TestMemoryAuditTrail(AuditTrailContract):
    @pytest.fixture
    def trail(self) -> MemoryAuditTrail:
        return MemoryAuditTrail()


@pytest.mark.parametrize(
    "secret",
    [
        "-qmTm8-YaFlsVZtLsqpDqecg7k_CXzhY9pZXaAx4oR0",  # a Secret Token (secrets.token_urlsafe(32))
        "U6HAOrhWKqzBnCAqUcnibQ",  # a 22-character one, the shortest an operator may supply
        "scimak_bkWbfj6l1mclHXTpTcyXByuCW-AxHNOIdNYsv92fMLU",
        "scimsl_9YUkQyZxKY_mB_-Mmfij6WFjLKqZyisJfmping5JSXg",
        "scimcs_x",
        "scimat_x",
        "whsec_x",
        "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b",  # SHA-256 hex
        "Bearer _otB1pWyMcj3gfMtYIcM8IMUgSiGU2zEEg2fXUkhHgo",
        "https://hooks.example.com/in?token=W67JeDXjF7vzcRVeDDB0NN66j8mkLZIfjsmUERaxUYY",
    ],
)
def test_what_looks_like_a_secret_is_refused(secret: str) -> None:
    assert looks_like_secret(secret)
    with pytest.raises(SecretInAudit, match="looks like a secret"):
        AuditEntry("contoso", "cli", "token.rotated", {"token": secret})
    with pytest.raises(SecretInAudit):
        AuditEntry("contoso", f"operator:{secret}", "token.rotated")


def test_every_generated_secret_looks_like_one() -> None:
    """Secret Tokens, setup links, client secrets: 256 random bits in 43 characters."""
    assert all(looks_like_secret(new_token()) and looks_like_secret(new_link_secret()) for _ in range(2000))


@pytest.mark.parametrize(
    "value",
    [
        "0a1b2c3d",  # a token's or a link's id
        "scimc_0123456789abcdef",  # an OAuth client id
        "ep_" + "0123456789abcdef" * 2,  # a webhook endpoint id
        "0b1c2d3e-0000-4000-8000-00000000abcd@72f988bf-86f1-41af-91ab-2d7cd011db47",  # Entra oid@tid
        "alice@contoso.com, it-admins@fabrikam.example",
        "https://hooks.contoso.com/scim/events",
        "2026-12-01T09:00:00.000Z",
        "provisioning_notifications_enabled",
        "",
    ],
)
def test_ids_addresses_and_times_are_not_secrets(value: str) -> None:
    assert not looks_like_secret(value)
    assert AuditEntry("contoso", "cli", "token.rotated", {"value": value}).detail == {"value": value}


def test_an_entry_is_checked_where_it_is_made() -> None:
    ok = AuditEntry("contoso", "cli", "token.rotated", {"token": "0a1b2c3d"}, "2026-12-01T10:00:00+01:00")
    assert ok.time == "2026-12-01T09:00:00.000Z", "normalised to UTC with milliseconds"
    assert AuditEntry("contoso", "cli", "session.started").time.endswith("Z")
    with pytest.raises(InvalidTenantName):
        AuditEntry("Contoso", "cli", "token.rotated")
    for actor in ("", "x" * 257, "cli\n", "a\x1bb"):
        with pytest.raises(ValueError, match="actor"):
            AuditEntry("contoso", actor, "token.rotated")
    for action in ("", "token", "Token.Rotated", "token.", ".rotated", "token rotated", "a." + "b" * 70):
        with pytest.raises(ValueError, match="action"):
            AuditEntry("contoso", "cli", action)
    with pytest.raises(ValueError, match="at most 16"):
        AuditEntry("contoso", "cli", "token.rotated", {f"k{i}": "v" for i in range(17)})
    for detail in ({"Bad": "v"}, {"k-1": "v"}, {"": "v"}, {"k" * 33: "v"}):
        with pytest.raises(ValueError, match="detail key"):
            AuditEntry("contoso", "cli", "token.rotated", detail)
    for value in (1, None, "v" * 257):
        with pytest.raises(ValueError, match="string of at most 256"):
            AuditEntry("contoso", "cli", "token.rotated", {"k": value})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="RFC 3339"):
        AuditEntry("contoso", "cli", "token.rotated", {}, "yesterday")


def test_keys_sort_newest_first() -> None:
    older = AuditEntry("contoso", "cli", "token.rotated", {}, "2026-12-01T09:00:00.000Z")
    newer = AuditEntry("contoso", "cli", "token.rotated", {}, "2026-12-01T09:00:00.001Z")
    assert entry_key(newer) < entry_key(older)
