"""Setup links: the single-use URLs that let a customer's IT admin into the tenant portal.

An operator makes one for a tenant (``python -m scim.admin portal link TENANT``, or the portal
for an operator signed in) and hands it over; the IT admin opens it (a ``GET`` that uses nothing
up, since mail scanners open links too: a page with a Continue button) and clicks Continue (a
``POST``: the web layer **redeems** it, :meth:`SetupLinkRegistry.redeem`, to start a portal
session for that tenant). The page of a link of the old form only **checks** it
(:meth:`SetupLinkRegistry.check`) to name its tenant.

**Secret format.** :data:`LINK_PREFIX` (``scimsl_``, "SCIM setup link") followed by 32 bytes from
the OS CSPRNG in URL-safe base64 (43 characters, 256 bits): ``scimsl_[A-Za-z0-9_-]{43}``, a
secret scanner's anchor like the application keys' ``scimak_`` (:mod:`scim.app_keys`). The URL
is :meth:`scim.settings.Settings.portal_setup_url`: ``{SCIM_PUBLIC_BASE_URL}/portal/setup#{secret}``,
the secret in the fragment, which browsers never send to a server (so that no request log holds
it); links of the old form, ``/portal/setup/{secret}``, keep working until they expire.
The URL is shown once, at creation; a link is listed by its **id** (8 hex digits, for listings
and the audit trail), never by its secret.

**Storage: the hash is the key.** Only the SHA-256 of the secret is stored
(:func:`scim.tenants.hash_token`; 256 random bits need no slow KDF). :meth:`~SetupLinkRegistry.redeem`
and :meth:`~SetupLinkRegistry.check` hash what they are given and make **one point read** of the
record stored under that hash, then compare the hashes in constant time (against a dummy hash
when nothing was found): for any string, known or not, well-formed or not, used, expired or
revoked, the work before the answer is the same (one SHA-256, one point read, one comparison)
and so is the answer (None).
Only a link that can be redeemed goes on to the write that claims it. Why a hash as the key
rather than an id inside the secret: see :mod:`scim.app_keys`, "Lookup".

**Single use.** Redeeming claims the link by a write guarded by the version read (a Table
ETag), in one atomic step with the per-tenant record: of two concurrent redeems of one link
exactly one gets the :class:`SetupLink`, the other None. A used or revoked link's hash record is
deleted in that step, so it is unknown from then on.

**Lifetime.** A link expires :data:`MIN_EXPIRY` (5 minutes) to :data:`MAX_EXPIRY` (30 days)
after its creation (``create(..., expires=...)``; anything else is a ValueError);
:meth:`~SetupLinkRegistry.revoke_all` makes every open link of a tenant fail at once. Used,
expired and revoked links stay listed for :data:`LINK_RETENTION` (30 days) after they ended, and
are pruned when the tenant's next link is made; deleting the tenant purges them
(:meth:`~SetupLinkRegistry.purge`).

**Per tenant.** Besides the hash record, each link has a record keyed by its tenant and id
(written in the same atomic step), which serves :meth:`~SetupLinkRegistry.list`,
:meth:`~SetupLinkRegistry.revoke_all` and :meth:`~SetupLinkRegistry.purge`; on Azure Tables
both live in one partition so that one entity-group transaction writes them
(``docs/table-layout.md``, ``{prefix}portal``).

The registry does not know tenants: the caller checks that the tenant exists before
:meth:`~SetupLinkRegistry.create` (the CLI does), and after a check or a redeem that it still
does (a link is purged with its tenant, but a redeem may race the delete).
"""

from __future__ import annotations

import abc
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from scim.provisioning_log.entries import format_time, parse_time
from scim.tenants import hash_token, new_token, token_matches, validate_tenant_name

__all__ = [
    "LINK_PREFIX",
    "LINK_RETENTION",
    "MAX_EXPIRY",
    "MAX_LABEL_LENGTH",
    "MIN_EXPIRY",
    "NO_LINK",
    "SetupLink",
    "SetupLinkRegistry",
    "StoredLink",
    "check_expiry",
    "check_label",
    "checked_create",
    "current_time",
    "format_time",
    "is_link_id",
    "is_well_formed",
    "new_link_id",
    "new_link_secret",
    "parse_time",
    "prunable",
    "redeemable",
]

LINK_PREFIX = "scimsl_"
"""What every setup link's secret starts with (a secret scanner's anchor)."""
MIN_EXPIRY = timedelta(minutes=5)
MAX_EXPIRY = timedelta(days=30)
LINK_RETENTION = timedelta(days=30)
"""How long a used, expired or revoked link stays listed (pruned by the tenant's next ``create``)."""
MAX_LABEL_LENGTH = 256
"""The most characters of ``created_by``/``used_by``."""
MAX_SECRET_LENGTH = 256
"""A presented string longer than this is hashed as the empty string (same work, no match)."""

_SECRET = re.compile(r"scimsl_[A-Za-z0-9_-]{43}")
_LINK_ID = re.compile(r"[0-9a-f]{8}")
NO_LINK = "0" * 64
"""The dummy hash compared against when nothing was found (no SHA-256 hex digest is all zeros)."""


@dataclass(frozen=True)
class SetupLink:
    """A setup link as listed and audited: never its secret or its hash. Times are aware UTC.

    ``used``/``used_by``: when and by whom it was redeemed (None while not); ``revoked``: when
    :meth:`SetupLinkRegistry.revoke_all` ended it unused (None otherwise).
    """

    id: str
    tenant: str
    created: datetime
    expires: datetime
    created_by: str
    used: datetime | None = None
    used_by: str | None = None
    revoked: datetime | None = None

    def status(self, now: datetime | None = None) -> str:
        """``used``, ``revoked``, ``expired`` or ``open`` (can still be redeemed) at ``now``."""
        if self.used is not None:
            return "used"
        if self.revoked is not None:
            return "revoked"
        return "expired" if current_time(now) >= self.expires else "open"

    @property
    def ended(self) -> datetime:
        """When it stopped being redeemable (or will): used, revoked, else its expiry."""
        return self.used or self.revoked or self.expires

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        """What ``portal links --json`` prints: RFC 3339 times (null when not), and the status."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "created": format_time(self.created),
            "expires": format_time(self.expires),
            "created_by": self.created_by,
            "used": None if self.used is None else format_time(self.used),
            "used_by": self.used_by,
            "revoked": None if self.revoked is None else format_time(self.revoked),
            "status": self.status(now),
        }


@dataclass(frozen=True)
class StoredLink:
    """What :meth:`SetupLinkRegistry.lookup` read: the link, the stored hash and the record's
    version (a Table ETag; a counter in memory) that guards the claim."""

    link: SetupLink
    key_hash: str
    version: str


def current_time(now: datetime | None = None) -> datetime:
    """``now`` (timezone-aware), or the current time, in UTC to the millisecond (what is stored)."""
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("a setup link time must be timezone-aware")
    now = now.astimezone(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_link_secret() -> str:
    """A fresh secret: :data:`LINK_PREFIX` + 256 bits from the OS CSPRNG in URL-safe base64."""
    return LINK_PREFIX + new_token()


def new_link_id() -> str:
    """A link's id: 8 hex digits (unique among its tenant's links; the registry picks another on a clash)."""
    return secrets.token_hex(4)


def is_link_id(value: str) -> bool:
    return isinstance(value, str) and _LINK_ID.fullmatch(value) is not None


def is_well_formed(presented: object) -> bool:
    """Whether ``presented`` has the form of a secret :func:`new_link_secret` makes."""
    return isinstance(presented, str) and _SECRET.fullmatch(presented) is not None


def check_expiry(expires: timedelta) -> timedelta:
    """Return ``expires`` if it is within :data:`MIN_EXPIRY` .. :data:`MAX_EXPIRY`, else raise ValueError."""
    if not isinstance(expires, timedelta) or not MIN_EXPIRY <= expires <= MAX_EXPIRY:
        raise ValueError(f"a setup link expires after 5 minutes to 30 days (5m .. 30d), not {expires}")
    return expires


def check_label(value: str, what: str) -> str:
    """Return ``value`` (``created_by``, ``used_by``) if it is 1-256 printable characters, else raise ValueError."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_LABEL_LENGTH or not value.isprintable():
        raise ValueError(f"{what} must be 1-{MAX_LABEL_LENGTH} printable characters")
    return value


def redeemable(link: SetupLink, now: datetime) -> bool:
    """Neither used nor revoked, and not expired at ``now``."""
    return link.used is None and link.revoked is None and now < link.expires


def prunable(link: SetupLink, now: datetime) -> bool:
    """Ended :data:`LINK_RETENTION` ago or more (``create`` removes it)."""
    return link.ended + LINK_RETENTION <= now


class SetupLinkRegistry(abc.ABC):
    """Where setup links live (see the module docstring). Implementations: memory
    (:mod:`scim.store.portal_links_memory`) and Azure Tables (:mod:`scim.store.portal_links_tables`).

    Tenant names are checked (:func:`scim.tenants.validate_tenant_name`: InvalidTenantName, a
    ValueError). Storage failures surface as :class:`scim.store.base.StoreError`
    (``StoreUnavailable``: the caller answers 503).
    """

    @abc.abstractmethod
    async def create(
        self, tenant: str, expires: timedelta, created_by: str, *, now: datetime | None = None
    ) -> tuple[str, SetupLink]:
        """Store a new link of ``tenant`` that expires ``expires`` after ``now`` and return its
        secret (shown once: only its hash is kept) and the link. Prunes the tenant's links that
        ended :data:`LINK_RETENTION` ago.

        Raises ValueError for an ``expires`` outside 5 minutes .. 30 days (:func:`check_expiry`),
        a ``created_by`` that is not 1-256 printable characters, or an invalid tenant name.
        """

    @abc.abstractmethod
    async def list(self, tenant: str) -> list[SetupLink]:
        """The tenant's links, newest first, open ones and those that ended within :data:`LINK_RETENTION`."""

    @abc.abstractmethod
    async def revoke_all(self, tenant: str, *, now: datetime | None = None) -> int:
        """End every open link of ``tenant`` at once (a redeem after this returns None, on every
        instance) and return how many were open. A link redeemed concurrently stays used."""

    @abc.abstractmethod
    async def purge(self, tenant: str) -> None:
        """Delete every link of ``tenant`` (tenant delete)."""

    @abc.abstractmethod
    async def lookup(self, key_hash: str) -> StoredLink | None:
        """The link stored under ``key_hash`` (open or expired; used and revoked ones are gone),
        or None: one point read (storage errors propagate)."""

    @abc.abstractmethod
    async def _claim(self, found: StoredLink, used_by: str, now: datetime) -> SetupLink | None:
        """Mark ``found`` used, guarded by ``found.version``: the used link, or None when a
        concurrent redeem or revoke changed it first."""

    async def check(self, secret: str, *, now: datetime | None = None) -> SetupLink | None:
        """The link ``secret`` would open at ``now``, left as it is (nothing is written), or None:
        the same rules and the same work as :meth:`redeem` before its claim. What the page of a
        ``GET`` of the link asks (a GET must not use it up: mail scanners follow links)."""
        found = await self._redeemable(secret, current_time(now))
        return None if found is None else found.link

    async def redeem(self, secret: str, used_by: str, *, now: datetime | None = None) -> SetupLink | None:
        """The link ``secret`` opens, now marked used by ``used_by`` (who redeemed it, e.g. a
        session id), or None.

        None for a secret that is unknown, malformed, used, expired or revoked, after the same
        work whatever it was: one SHA-256, one point read (:meth:`lookup`), one constant-time
        comparison. Only an open link then costs the guarded write that claims it; of concurrent
        redeems of one link, exactly one gets it. Raises ValueError for an invalid ``used_by``
        (before any storage call, whatever the secret).
        """
        check_label(used_by, "used_by")
        when = current_time(now)
        found = await self._redeemable(secret, when)
        if found is None:
            return None
        return await self._claim(found, used_by, when)

    async def _redeemable(self, secret: str, when: datetime) -> StoredLink | None:
        """The stored link ``secret`` opens if it can be redeemed at ``when``, else None: one
        SHA-256, one point read, one constant-time comparison, whatever ``secret`` is."""
        candidate = secret if isinstance(secret, str) and len(secret) <= MAX_SECRET_LENGTH else ""
        found = await self.lookup(hash_token(candidate))
        matched = token_matches(candidate, found.key_hash if found is not None else NO_LINK)
        if not matched or found is None or not is_well_formed(candidate) or not redeemable(found.link, when):
            return None
        return found

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""


def checked_create(tenant: str, expires: timedelta, created_by: str, now: datetime | None) -> tuple[datetime, datetime]:
    """The checks of :meth:`SetupLinkRegistry.create`, shared by the implementations: returns
    ``(created, expires at)``."""
    validate_tenant_name(tenant)
    check_expiry(expires)
    check_label(created_by, "created_by")
    created = current_time(now)
    return created, created + expires
