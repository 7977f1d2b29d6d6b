"""Tenants and their Secret Tokens.

A tenant is one Entra provisioning job's view of the directory: it has its own Tenant URL
(``{base}/scim/{tenant}``) and exactly one valid Secret Token at a time. Tokens are
generated with :mod:`secrets` (256 bits), shown once, and stored only as a SHA-256 hash;
comparison is constant-time. Regenerating a token replaces the hash, so the previous token
fails on the very next request (no positive cache).
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "InvalidTenantName",
    "TenantExists",
    "TenantInfo",
    "TenantNotFound",
    "TenantRegistry",
    "hash_token",
    "new_token",
    "token_matches",
    "validate_recipients",
    "validate_tenant_name",
]

_TENANT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class TenantExists(Exception):
    """A tenant of that name already exists."""


class TenantNotFound(Exception):
    """No tenant of that name."""


class InvalidTenantName(ValueError):
    """Tenant names are 1-63 lowercase letters, digits and inner hyphens (they appear in URLs and keys)."""


@dataclass(frozen=True)
class TenantInfo:
    """What an operator sees of a tenant (never the token or its hash).

    ``notify``: who receives failure digests; ``notify_enabled``: whether digests are sent.
    """

    name: str
    created: str
    notify: tuple[str, ...] = ()
    notify_enabled: bool = False


_EMAIL = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+$")


def validate_recipients(addresses: Sequence[str]) -> tuple[str, ...]:
    """Notification recipients: plain addresses (``ops@contoso.com``), deduplicated, at most 20."""
    cleaned = tuple(dict.fromkeys(a.strip() for a in addresses if a.strip()))
    bad = [a for a in cleaned if not _EMAIL.match(a)]
    if bad:
        raise ValueError(f"not an email address: {', '.join(bad)}")
    if len(cleaned) > 20:
        raise ValueError("at most 20 notification recipients per tenant")
    return cleaned


def validate_tenant_name(name: str) -> str:
    """Return ``name`` if it is a valid tenant name, else raise InvalidTenantName."""
    if not isinstance(name, str) or not _TENANT_NAME.match(name):
        raise InvalidTenantName(
            f"invalid tenant name {name!r}: use 1-63 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def new_token() -> str:
    """A fresh Secret Token: 256 bits from the OS CSPRNG, URL-safe base64."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256 hex (tokens are high-entropy, so no slow KDF is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented token with a stored hash."""
    return hmac.compare_digest(hash_token(token), stored_hash)


class TenantRegistry(abc.ABC):
    """Where tenants and token hashes live. Implementations: memory and Azure Tables."""

    @abc.abstractmethod
    async def create(self, name: str, token: str | None = None) -> str:
        """Create a tenant and return its token (``token`` or a new one). Raises TenantExists."""

    @abc.abstractmethod
    async def set_token(self, name: str, token: str | None = None) -> str:
        """Replace the tenant's token (regeneration) and return the new one. Raises TenantNotFound."""

    @abc.abstractmethod
    async def token_hash(self, name: str) -> str | None:
        """The stored hash of the tenant's token, or None if there is no such tenant."""

    @abc.abstractmethod
    async def delete(self, name: str) -> None:
        """Delete the tenant record (its token stops working at once). Raises TenantNotFound."""

    @abc.abstractmethod
    async def list(self) -> list[TenantInfo]:
        """Every tenant, sorted by name."""

    @abc.abstractmethod
    async def set_notifications(self, name: str, recipients: Sequence[str], enabled: bool) -> None:
        """Set who receives the tenant's failure digests and whether they are sent. Raises TenantNotFound."""

    async def info(self, name: str) -> TenantInfo:
        """One tenant's information. Raises TenantNotFound."""
        for tenant in await self.list():
            if tenant.name == name:
                return tenant
        raise TenantNotFound(name)

    async def authenticate(self, name: str, token: str) -> bool:
        """Whether ``token`` is the current token of tenant ``name``.

        The answer is the same (False) for an unknown tenant and a wrong token, and a hash is
        compared in both cases, so a caller learns nothing about which tenants exist.
        """
        stored = await self.token_hash(name)
        if stored is None:
            token_matches(token, "0" * 64)
            return False
        return token_matches(token, stored)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""
