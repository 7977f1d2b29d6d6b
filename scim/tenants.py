"""Tenants and their Secret Tokens.

A tenant is one Entra provisioning job's view of the directory: it has its own Tenant URL
(``{base}/scim/{tenant}``) and exactly one valid Secret Token at a time. Tokens are
generated with :mod:`secrets` (256 bits), shown once, and stored only as a SHA-256 hash;
comparison is constant-time. Regenerating a token replaces the hash, so the previous token
fails on the very next request (no positive cache); the write is guarded by the version of the
record it read, so of two concurrent regenerations one fails (:class:`TokenConflict`) instead of
both printing a token of which only one works.

A token supplied by an operator (``SCIM_DEV_TOKEN``, ``create_tenant(token=...)``) must carry at
least 128 bits: see :func:`check_token_strength`.

Deleting a tenant is resumable (:mod:`scim.admin.core`): :meth:`TenantRegistry.begin_delete`
first marks the record ``deleting`` and drops its token hash (nobody authenticates from then
on), the tenant's data is purged, and :meth:`TenantRegistry.delete` removes the record last.
A name whose record is ``deleting`` cannot be created again until the delete is finished.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import itertools
import re
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ACTIVE",
    "DELETING",
    "InvalidTenantName",
    "TenantDeleting",
    "TenantExists",
    "TenantInfo",
    "TenantNotFound",
    "TenantRegistry",
    "TokenConflict",
    "WeakToken",
    "check_token_strength",
    "hash_token",
    "new_token",
    "token_matches",
    "validate_recipients",
    "validate_tenant_name",
]

_TENANT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # used with fullmatch: "dev\n" fails

ACTIVE = "active"
DELETING = "deleting"
"""The states of a tenant record (:attr:`TenantInfo.state`)."""


class TenantExists(Exception):
    """A tenant of that name already exists."""


class TenantNotFound(Exception):
    """No tenant of that name."""


class InvalidTenantName(ValueError):
    """Tenant names are 1-63 lowercase letters, digits and inner hyphens (they appear in URLs and keys)."""


class TenantDeleting(Exception):
    """The tenant is being deleted (its token is revoked, some of its data may remain): it can
    neither be changed nor created again until ``python -m scim.admin tenant delete NAME`` has
    finished. ``str()`` is the message for the operator."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"tenant {name!r} is being deleted: its token no longer works, but its data is not all gone; "
            f"finish the delete with `python -m scim.admin tenant delete {name}`"
        )
        self.name = name


class TokenConflict(Exception):
    """The tenant record changed between reading it and writing the new token hash (another
    ``token regenerate`` ran at the same time): nothing was written by this call."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the token of tenant {name!r} was changed concurrently; run token regenerate again")
        self.name = name


class WeakToken(ValueError):
    """A supplied token carries too little entropy (see :func:`check_token_strength`)."""


@dataclass(frozen=True)
class TenantInfo:
    """What an operator sees of a tenant (never the token or its hash).

    ``notify``: who receives failure digests; ``notify_enabled``: whether digests are sent;
    ``state``: :data:`ACTIVE`, or :data:`DELETING` while ``tenant delete`` has not finished.
    """

    name: str
    created: str
    notify: tuple[str, ...] = ()
    notify_enabled: bool = False
    state: str = ACTIVE

    @property
    def deleting(self) -> bool:
        return self.state == DELETING


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
    if not isinstance(name, str) or not _TENANT_NAME.fullmatch(name):
        raise InvalidTenantName(
            f"invalid tenant name {name!r}: use 1-63 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def new_token() -> str:
    """A fresh Secret Token: 256 bits from the OS CSPRNG, URL-safe base64."""
    return secrets.token_urlsafe(32)


_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
MIN_URLSAFE_CHARS = 22  # 22 x 6 bits = 132 bits if random
MIN_PRINTABLE_CHARS = 32
MIN_DISTINCT_CHARS = 8
_HOW_TO_MAKE_ONE = 'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


def check_token_strength(token: str) -> str:
    """Return ``token`` if it can carry 128 bits of entropy, else raise :class:`WeakToken`.

    The rule for tokens an operator supplies (``SCIM_DEV_TOKEN``, ``token=...``; generated
    tokens are 256 bits from :func:`new_token`):

    - at least 22 characters of the URL-safe base64 alphabet (``A-Z a-z 0-9 - _``), or at
      least 32 printable ASCII characters (no spaces or control characters);
    - not trivially repetitive: at least 8 different characters, not a repeated block
      (``abcabcabc...``), not mostly a constant step (``aaaa...``, ``abcdef...``).

    A string of the right length and alphabet can still be guessable; the rule only refuses
    what is certainly weak. Make a good one with
    ``python -c "import secrets; print(secrets.token_urlsafe(32))"``.
    """
    if not isinstance(token, str) or not token:
        raise WeakToken(f"a token is required; {_HOW_TO_MAKE_ONE}")
    printable = all("!" <= ch <= "~" for ch in token)
    urlsafe = all(ch in _URLSAFE for ch in token)
    if not printable:
        raise WeakToken(f"the token must be printable ASCII without spaces; {_HOW_TO_MAKE_ONE}")
    if not ((urlsafe and len(token) >= MIN_URLSAFE_CHARS) or len(token) >= MIN_PRINTABLE_CHARS):
        raise WeakToken(
            f"the token is too short for 128 bits: use at least {MIN_URLSAFE_CHARS} characters of "
            f"A-Z a-z 0-9 - _ or at least {MIN_PRINTABLE_CHARS} printable characters; {_HOW_TO_MAKE_ONE}"
        )
    if _repetitive(token):
        raise WeakToken(f"the token is a pattern, not random; {_HOW_TO_MAKE_ONE}")
    return token


def _repetitive(token: str) -> bool:
    """Few distinct characters, a repeated block, or mostly one step between neighbours."""
    if len(set(token)) < MIN_DISTINCT_CHARS:
        return True
    n = len(token)
    if any(token == (token[:p] * (n // p + 1))[:n] for p in range(1, n // 2 + 1)):
        return True
    steps = Counter(ord(b) - ord(a) for a, b in itertools.pairwise(token))
    return steps.most_common(1)[0][1] * 2 > n - 1


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256 hex (tokens are high-entropy, so no slow KDF is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented token with a stored hash."""
    return hmac.compare_digest(hash_token(token), stored_hash)


class TenantRegistry(abc.ABC):
    """Where tenants and token hashes live. Implementations: memory and Azure Tables.

    Every change of a record is guarded by the version of the record it read (Table ETags;
    a counter in memory), so a record marked deleting is never brought back to life by a
    concurrent token change, and of two concurrent token changes one fails.
    """

    @abc.abstractmethod
    async def create(self, name: str, token: str | None = None) -> str:
        """Create a tenant and return its token (``token`` or a new one).

        Raises TenantExists if a record of that name exists, including one being deleted
        (:meth:`state` tells which). The token is used as given: callers that take it from an
        operator check it first (:func:`check_token_strength`).
        """

    @abc.abstractmethod
    async def set_token(self, name: str, token: str | None = None) -> str:
        """Replace the tenant's token (regeneration) and return the new one.

        One guarded write of the record as read: raises TokenConflict if it changed in between
        (nothing written), TenantDeleting if it is being deleted, TenantNotFound if absent.
        """

    @abc.abstractmethod
    async def token_hash(self, name: str) -> str | None:
        """The stored hash of the tenant's token, or None if there is no such tenant or it is
        being deleted (so it authenticates nobody and its requests are not logged)."""

    @abc.abstractmethod
    async def state(self, name: str) -> str | None:
        """:data:`ACTIVE`, :data:`DELETING`, or None if there is no record of that name."""

    @abc.abstractmethod
    async def begin_delete(self, name: str) -> None:
        """First step of deleting a tenant: mark the record :data:`DELETING`, drop its token
        hash and switch its failure digests off, in one guarded write (retried if the record
        changed meanwhile). From then on the tenant authenticates nobody. Idempotent; raises
        TenantNotFound if there is no record."""

    @abc.abstractmethod
    async def delete(self, name: str) -> None:
        """Remove the tenant record (the last step of deleting a tenant, after its data is gone;
        its token stops working at once). Raises TenantNotFound."""

    @abc.abstractmethod
    async def list(self) -> list[TenantInfo]:
        """Every tenant, sorted by name, including tenants being deleted (``state``)."""

    @abc.abstractmethod
    async def set_notifications(self, name: str, recipients: Sequence[str], enabled: bool) -> None:
        """Set who receives the tenant's failure digests and whether they are sent.
        Raises TenantNotFound, or TenantDeleting if the tenant is being deleted."""

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
