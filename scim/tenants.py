"""Tenants and their credentials.

A tenant is one Entra provisioning job's view of the directory: it has its own Tenant URL
(``{base}/scim/{tenant}``) and up to three active Secret Tokens, plus OAuth clients whose
access tokens also authenticate to it (:mod:`scim.credentials`: the rules for regeneration,
rotation with overlap, revocation, expiry, last use and the client credentials grant).
Tokens are generated with :mod:`secrets` (256 bits), shown once, and stored only as SHA-256
hashes; comparison is constant-time. Authentication reads the tenant record on every request
(no positive cache), so a regenerated, revoked, expired or rotated-out token fails on the very
next request on every instance. Every change of the credentials is a write guarded by the
version of the record read (:meth:`TenantRegistry._update_credentials`): of two concurrent
regenerations one fails (:class:`TokenConflict`) instead of both printing a token of which only
one works.

A token supplied by an operator (``SCIM_DEV_TOKEN``, ``create_tenant(token=...)``) must carry at
least 128 bits: see :func:`check_token_strength`.

Deleting a tenant is resumable (:mod:`scim.admin.core`): :meth:`TenantRegistry.begin_delete`
first marks the record ``deleting`` and drops its credentials (nobody authenticates from then
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from scim import credentials
from scim.credentials import DEFAULT, AccessToken, Expiry, InvalidClient, OAuthClient, SecretToken, TenantCredentials
from scim.store.base import ResourceNotFound, StoreUnavailable, VersionMismatch

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
    "validate_entra_tenant_id",
    "validate_recipients",
    "validate_tenant_name",
]

_TENANT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # used with fullmatch: "dev\n" fails

ACTIVE = "active"
DELETING = "deleting"
"""The states of a tenant record (:attr:`TenantInfo.state`)."""


_T = TypeVar("_T")


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
        super().__init__(f"the tokens of tenant {name!r} were changed concurrently; run the command again")
        self.name = name


class WeakToken(ValueError):
    """A supplied token carries too little entropy (see :func:`check_token_strength`)."""


@dataclass(frozen=True)
class TenantInfo:
    """What an operator sees of a tenant (never the token or its hash).

    ``notify``: who receives failure digests; ``notify_enabled``: whether digests are sent;
    ``state``: :data:`ACTIVE`, or :data:`DELETING` while ``tenant delete`` has not finished;
    ``entra_tid``: the Microsoft Entra tenant (directory) id whose admins may sign into this
    tenant's portal page with Microsoft (recorded at their first sign-in from a setup link).
    """

    name: str
    created: str
    notify: tuple[str, ...] = ()
    notify_enabled: bool = False
    state: str = ACTIVE
    entra_tid: str | None = None

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


_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def validate_entra_tenant_id(tid: str | None) -> str | None:
    """An Entra tenant id (a GUID, lower-cased), or None; ValueError for anything else."""
    if tid is None or tid == "":
        return None
    cleaned = tid.strip().lower()
    if not _GUID.fullmatch(cleaned):
        raise ValueError(f"not an Entra tenant id (a GUID): {tid[:40]!r}")
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


def _same_tokens(before: TenantCredentials, after: TenantCredentials) -> bool:
    """Retry a token change only if nobody changed the tokens meanwhile (then something else
    of the record changed: a last use, a client, an access token); else TokenConflict, so that
    of two concurrent regenerations one fails instead of both printing a token."""
    return before.token_ids() == after.token_ids()


class TenantRegistry(abc.ABC):
    """Where tenants and their credentials live. Implementations: memory and Azure Tables.

    Every change of a record is guarded by the version of the record it read (Table ETags;
    a counter in memory), so a record marked deleting is never brought back to life by a
    concurrent token change, and of two concurrent token changes one fails.

    The credentials (:mod:`scim.credentials`) are read with one point read
    (:meth:`_load`) and written by one guarded write (:meth:`_store`); every change of them is
    :meth:`_update_credentials`: read, compute the next value, write guarded by the version
    read, and when another writer came in between, read again and either retry or refuse
    (:class:`TokenConflict`), as the change asks.
    """

    @abc.abstractmethod
    async def create(self, name: str, token: str | None = None, expires: int | None = None) -> str:
        """Create a tenant and return its token (``token`` or a new one), which expires after
        ``expires`` seconds (None: never).

        Raises TenantExists if a record of that name exists, including one being deleted
        (:meth:`state` tells which). The token is used as given: callers that take it from an
        operator check it first (:func:`check_token_strength`).
        """

    @abc.abstractmethod
    async def _load(self, name: str) -> tuple[str, TenantCredentials] | None:
        """One point read of the tenant record: its state and credentials (with the record's
        version), or None when there is no record (or the name is not a tenant name)."""

    @abc.abstractmethod
    async def _store(self, name: str, credentials: TenantCredentials, version: str) -> None:
        """Write ``credentials`` onto the record if its version is still ``version``: raises
        VersionMismatch if it changed, TenantNotFound if it is gone."""

    async def read_credentials(self, name: str) -> TenantCredentials | None:
        """The tenant's credentials (one point read), or None if there is no such tenant or it
        is being deleted (so it authenticates nobody and its requests are not logged)."""
        loaded = await self._load(name)
        if loaded is None or loaded[0] == DELETING:
            return None
        return loaded[1]

    async def _update_credentials(
        self,
        name: str,
        change: Callable[[TenantCredentials], tuple[TenantCredentials, _T]],
        *,
        retry: Callable[[TenantCredentials, TenantCredentials], bool] = lambda _before, _after: True,
    ) -> _T:
        """Apply ``change`` to the tenant's credentials with a guarded write; return its result.

        When the record changed between the read and the write: if it now holds what this call
        wrote, the write went through (an answer lost and the request resent); else
        ``retry(read, now)`` says whether to apply ``change`` again to the new value (True) or
        to refuse with :class:`TokenConflict` (nothing written by this call). Raises
        TenantNotFound, or TenantDeleting if the tenant is being deleted.
        """
        for _ in range(10):
            loaded = await self._load(name)
            if loaded is None:
                raise TenantNotFound(name)
            if loaded[0] == DELETING:
                raise TenantDeleting(name)
            current = loaded[1]
            updated, result = change(current)
            if updated.same_content(current):
                return result
            try:
                await self._store(name, updated, current.version)
                return result
            except VersionMismatch:
                again = await self._load(name)
                if again is not None and again[0] != DELETING and again[1].same_content(updated):
                    return result
                if again is None:
                    raise TenantNotFound(name) from None
                if again[0] == DELETING:
                    raise TenantDeleting(name) from None
                if not retry(current, again[1]):
                    raise TokenConflict(name) from None
        raise StoreUnavailable(f"the credentials of tenant {name} kept changing")

    async def set_token(self, name: str, token: str | None = None, expires: Expiry = DEFAULT) -> str:
        """Replace every token of the tenant by one (regeneration) and return it; the others
        fail on their next request. ``expires``: seconds (None: never; not given: the tenant's
        default lifetime).

        Raises TokenConflict if another change of the tenant's tokens came in between (nothing
        written), TenantDeleting if it is being deleted, TenantNotFound if absent.
        """
        token = token or new_token()
        now = datetime.now(UTC)
        await self._update_credentials(
            name, lambda c: credentials.regenerate(c, token, now, expires), retry=_same_tokens
        )
        return token

    async def rotate_token(
        self, name: str, overlap: int, expires: Expiry = DEFAULT, token: str | None = None
    ) -> tuple[str, SecretToken]:
        """Add a token; the others keep working ``overlap`` seconds more. Returns the token and
        its record. Raises TooManyTokens, TokenConflict, TenantDeleting, TenantNotFound."""
        token = token or new_token()
        now = datetime.now(UTC)
        issued = await self._update_credentials(
            name, lambda c: credentials.rotate(c, token, now, overlap, expires), retry=_same_tokens
        )
        return token, issued

    async def revoke_token(self, name: str, token_id: str) -> None:
        """The token ``token_id`` fails from its next request on. Raises TokenNotFound."""
        now = datetime.now(UTC)
        await self._update_credentials(name, lambda c: (credentials.revoke(c, token_id, now), None))

    async def list_tokens(self, name: str) -> tuple[SecretToken, ...]:
        """The tenant's active tokens, oldest first. Raises TenantNotFound, TenantDeleting."""
        return (await self._credentials_or_raise(name)).active_tokens(datetime.now(UTC))

    async def set_token_lifetime(self, name: str, lifetime: int | None) -> None:
        """The default lifetime (seconds; None: no expiry) of the tenant's new tokens."""
        await self._update_credentials(name, lambda c: (credentials.set_lifetime(c, lifetime), None))

    async def token_lifetime(self, name: str) -> int | None:
        return (await self._credentials_or_raise(name)).lifetime

    async def mark_warned(self, name: str, token_id: str, days: int) -> None:
        """Record that the ``days``-day expiry warning of ``token_id`` was sent."""
        await self._update_credentials(name, lambda c: (credentials.with_warning(c, token_id, days), None))

    async def record_use(self, name: str, seen: TenantCredentials, token_id: str, now: datetime) -> bool:
        """Set token ``token_id``'s last use to ``now`` with one write guarded by the version
        ``seen`` was read at; False (nothing written) if the record changed since."""
        try:
            await self._store(name, credentials.with_use(seen, token_id, now), seen.version)
        except (VersionMismatch, TenantNotFound, ResourceNotFound):
            return False
        return True

    async def create_client(self, name: str) -> tuple[OAuthClient, str]:
        """A new OAuth client of the tenant and its secret (shown once; stored as a hash)."""
        now = datetime.now(UTC)

        def add(c: TenantCredentials) -> tuple[TenantCredentials, tuple[OAuthClient, str]]:
            updated, client, secret = credentials.add_client(c, now)
            return updated, (client, secret)

        return await self._update_credentials(name, add)

    async def list_clients(self, name: str) -> tuple[OAuthClient, ...]:
        return (await self._credentials_or_raise(name)).clients

    async def revoke_client(self, name: str, client_id: str) -> None:
        """Drop the client and its access tokens (they fail on their next request)."""
        now = datetime.now(UTC)
        await self._update_credentials(name, lambda c: (credentials.revoke_client(c, client_id, now), None))

    async def issue_access_token(self, name: str, client_id: str, secret: str) -> tuple[str, AccessToken]:
        """RFC 6749 §4.4: authenticate the client by its secret and issue an access token.

        Raises InvalidClient (unknown tenant, tenant being deleted, unknown client or wrong
        secret: the same answer after the same work, one read and one constant-time
        comparison) or TooManyTokenRequests. Costs one read, and one guarded write when issued.
        """
        now = datetime.now(UTC)

        def issue(c: TenantCredentials) -> tuple[TenantCredentials, tuple[str, AccessToken]]:
            client = credentials.authenticate_client(c, client_id, secret)
            updated, token, record = credentials.issue_access_token(c, client, now)
            return updated, (token, record)

        try:
            return await self._update_credentials(name, issue)
        except (TenantNotFound, TenantDeleting):
            credentials.authenticate_client(None, client_id, secret)  # the same comparison as for a tenant
            raise InvalidClient() from None

    async def _credentials_or_raise(self, name: str) -> TenantCredentials:
        loaded = await self._load(name)
        if loaded is None:
            raise TenantNotFound(name)
        if loaded[0] == DELETING:
            raise TenantDeleting(name)
        return loaded[1]

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
    async def set_entra_tenant(self, name: str, tid: str | None) -> None:
        """Record the Entra tenant id (``tid``) whose admins may sign into this tenant's portal
        page with Microsoft (None: nobody). Raises TenantNotFound, TenantDeleting, or ValueError
        for a tid that is not a GUID."""

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
        """Whether ``token`` authenticates to tenant ``name`` now (a Secret Token or an access
        token). The answer is the same (False) for an unknown tenant and a wrong token, after
        the same work (:func:`scim.credentials.match`)."""
        return credentials.match(await self.read_credentials(name), token, datetime.now(UTC)) is not None

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""
