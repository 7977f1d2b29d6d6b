"""The audit trail: every action taken on a tenant through the portal or the CLI, newest first.

An :class:`AuditEntry` says **when** (``time``, RFC 3339 UTC with milliseconds), **who**
(``actor``), **what** (``action``) and a few words more (``detail``), for one ``tenant``:

- ``actor``: ``operator:<email>`` (an operator signed in to the portal), ``entra:<oid>@<tid>`` (a
  customer's admin signed in with Entra), ``setup-link:<id>`` (a session started by a setup
  link, :mod:`scim.portal.links`), ``cli`` (``python -m scim.admin``);
- ``action``: a dotted name, lowercase (:data:`ACTIONS` lists those in use: ``token.rotated``,
  ``link.created``, ``session.started``...; others may be added);
- ``detail``: at most :data:`MAX_DETAIL_ITEMS` string values under short lowercase keys (a
  token's id, an expiry, a recipient list), at most :data:`MAX_DETAIL_VALUE` characters each.

**Never a secret.** The trail is shown to every admin of the tenant and kept for months: a
Secret Token, a client secret, a setup link, an application key or a webhook secret must not be
in it. Callers pass ids (a token's 8-hex id, a link's id), never the secret. As a backstop,
:class:`AuditEntry` refuses (:class:`SecretInAudit`, a ValueError) an actor or detail value that
:func:`looks_like_secret`: one holding a secret's prefix (``scimak_``, ``scimsl_``, ``scimcs_``,
``scimat_``, ``whsec_``), or a run of 22 or more URL-safe characters (``A-Z a-z 0-9 - _``) that
mixes capitals, small letters and digits (a random token: 22 such characters are 128 bits), or
a run of 40 or more mixing two of them (a hex digest). GUIDs, emails, ids and host names pass.
The check is a heuristic that catches generated secrets; it does not make logging one right.

**Order.** Each entry is stored under the key ``{inv}|{rec}|{suffix}`` (:func:`entry_key`):
``{inv}`` its time inverted as the provisioning log inverts it
(:func:`scim.provisioning_log.keys.inverted`, 17 digits, so ascending keys are newest first),
``{rec}`` the moment it was recorded (to the microsecond), inverted likewise, so entries of one
millisecond are newest first too, and ``{suffix}`` 8 random hex digits (entries recorded in the
same microsecond on two instances do not collide). :meth:`AuditTrail.page` reads a tenant's entries in key order,
``limit`` at a time; the cursor is the last key of a page. Implementations: memory
(:mod:`scim.store.audit_memory`) and Azure Tables (:mod:`scim.store.audit_tables`, one partition
per tenant in ``{prefix}audit``).
"""

from __future__ import annotations

import abc
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from scim.provisioning_log.entries import format_time, parse_time
from scim.provisioning_log.keys import inverted
from scim.tenants import validate_tenant_name

__all__ = [
    "ACTIONS",
    "MAX_ACTOR",
    "MAX_DETAIL_ITEMS",
    "MAX_DETAIL_VALUE",
    "MAX_PAGE",
    "AuditEntry",
    "AuditPage",
    "AuditTrail",
    "SecretInAudit",
    "check_cursor",
    "detail_from_json",
    "detail_to_json",
    "entry_key",
    "looks_like_secret",
    "older_than_bound",
    "page_limit",
]

ACTIONS = (
    "tenant.created",
    "token.regenerated",
    "token.rotated",
    "token.revoked",
    "token.lifetime_set",
    "notify.updated",
    "digest.test_sent",
    "link.created",
    "links.revoked",
    "session.started",
    "entra.bound",
    "oauth_client.created",
    "oauth_client.revoked",
    "webhook.added",
    "webhook.secret_rotated",
    "webhook.disabled",
    "webhook.enabled",
    "webhook.replayed",
    "webhook.removed",
)
"""The actions in use (documentation: :class:`AuditEntry` takes any dotted lowercase name)."""
MAX_ACTOR = 256
MAX_DETAIL_ITEMS = 16
MAX_DETAIL_VALUE = 256
MAX_PAGE = 1000
"""The most entries :meth:`AuditTrail.page` returns at once (a larger ``limit`` is lowered)."""

_ACTION = re.compile(r"[a-z][a-z_]*(\.[a-z][a-z_]*)+")
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CURSOR = re.compile(r"\d{17}\|\d{17}\|[0-9a-f]{8}")
_SECRET_PREFIX = re.compile(r"(scimak|scimsl|scimcs|scimat|whsec)_")
_URLSAFE_RUN = re.compile(r"[A-Za-z0-9_-]{22,}")
_CLASSES = (re.compile(r"[A-Z]"), re.compile(r"[a-z]"), re.compile(r"[0-9]"))


class SecretInAudit(ValueError):
    """An actor or detail value looks like a secret (:func:`looks_like_secret`); nothing was recorded."""


def looks_like_secret(value: str) -> bool:
    """Whether ``value`` holds what looks like a secret (see the module docstring, "Never a secret")."""
    if _SECRET_PREFIX.search(value):
        return True
    for run in _URLSAFE_RUN.findall(value):
        classes = sum(1 for pattern in _CLASSES if pattern.search(run))
        if classes == 3 or (classes == 2 and len(run) >= 40):
            return True
    return False


def _now_text() -> str:
    return format_time(datetime.now(UTC))


@dataclass(frozen=True)
class AuditEntry:
    """One action on a tenant (see the module docstring). ``time`` defaults to now; it is
    normalised to RFC 3339 UTC with milliseconds. Invalid fields raise ValueError
    (:class:`SecretInAudit` for what looks like a secret), so a bad entry fails where it is made."""

    tenant: str
    actor: str
    action: str
    detail: Mapping[str, str] = field(default_factory=dict)
    time: str = field(default_factory=_now_text)

    def __post_init__(self) -> None:
        validate_tenant_name(self.tenant)
        if not isinstance(self.actor, str) or not 0 < len(self.actor) <= MAX_ACTOR or not self.actor.isprintable():
            raise ValueError(f"an audit actor is 1-{MAX_ACTOR} printable characters")
        if not isinstance(self.action, str) or len(self.action) > 64 or not _ACTION.fullmatch(self.action):
            raise ValueError(f"an audit action is a dotted lowercase name (token.rotated), not {self.action!r}")
        detail = dict(self.detail)
        if len(detail) > MAX_DETAIL_ITEMS:
            raise ValueError(f"an audit entry's detail holds at most {MAX_DETAIL_ITEMS} values")
        for key, value in detail.items():
            if not isinstance(key, str) or not _DETAIL_KEY.fullmatch(key):
                raise ValueError(f"an audit detail key is 1-32 lowercase letters, digits and _, not {key!r}")
            if not isinstance(value, str) or len(value) > MAX_DETAIL_VALUE:
                raise ValueError(f"audit detail {key!r} must be a string of at most {MAX_DETAIL_VALUE} characters")
            if looks_like_secret(value):
                raise SecretInAudit(f"audit detail {key!r} looks like a secret; record its id instead")
        if looks_like_secret(self.actor):
            raise SecretInAudit("the audit actor looks like a secret")
        try:
            moment = parse_time(self.time)
        except (TypeError, ValueError, AttributeError):
            raise ValueError(f"an audit time is RFC 3339 (2026-12-01T18:00:00.000Z), not {self.time!r}") from None
        object.__setattr__(self, "detail", detail)
        object.__setattr__(self, "time", format_time(moment))

    def to_json(self) -> dict[str, Any]:
        """The entry as ``audit --json`` prints it."""
        return {
            "time": self.time,
            "tenant": self.tenant,
            "actor": self.actor,
            "action": self.action,
            "detail": dict(self.detail),
        }


class AuditPage(NamedTuple):
    """A page of entries, newest first, and the cursor of the next page (None: this is the last)."""

    entries: list[AuditEntry]
    cursor: str | None


def entry_key(entry: AuditEntry, recorded: datetime | None = None) -> str:
    """The key ``entry`` is stored under when recorded at ``recorded`` (default now):
    ``{inverted time}|{inverted recorded}|{8 random hex digits}``."""
    moment = datetime.now(UTC) if recorded is None else recorded
    return f"{inverted(parse_time(entry.time))}|{inverted(moment)}|{secrets.token_hex(4)}"


def older_than_bound(older_than: datetime) -> str:
    """The keys of entries at ``older_than`` or earlier are those greater than this."""
    return inverted(older_than)


def check_cursor(cursor: str | None) -> str | None:
    """``cursor`` if it is one :meth:`AuditTrail.page` returned (or None), else ValueError."""
    if cursor is not None and (not isinstance(cursor, str) or not _CURSOR.fullmatch(cursor)):
        raise ValueError("not an audit cursor: pass the one printed at the end of the previous page")
    return cursor


def page_limit(limit: int) -> int:
    """``limit`` within 1 .. :data:`MAX_PAGE`."""
    return max(1, min(int(limit), MAX_PAGE))


def detail_to_json(detail: Mapping[str, str]) -> str:
    return json.dumps(dict(detail), separators=(",", ":"), sort_keys=True)


def detail_from_json(text: str | None) -> dict[str, str]:
    loaded = json.loads(text) if text else {}
    return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


class AuditTrail(abc.ABC):
    """Where audit entries live (see the module docstring): one sequence per tenant, newest first.

    Tenant names are checked (InvalidTenantName, a ValueError). Storage failures surface as
    :class:`scim.store.base.StoreError` (``StoreUnavailable``: the caller answers 503).
    """

    @abc.abstractmethod
    async def record(self, entry: AuditEntry) -> None:
        """Store ``entry`` (one write; a lost answer is sent again without making two entries)."""

    @abc.abstractmethod
    async def page(self, tenant: str, limit: int = 50, cursor: str | None = None) -> AuditPage:
        """The tenant's entries newest first, ``limit`` (1 .. :data:`MAX_PAGE`) at a time, after
        ``cursor`` (from the previous page; ValueError for anything else)."""

    @abc.abstractmethod
    async def purge(self, tenant: str) -> None:
        """Delete every entry of the tenant (tenant delete)."""

    @abc.abstractmethod
    async def purge_older(self, tenant: str, older_than: datetime) -> int:
        """Delete the tenant's entries of ``older_than`` or earlier (retention); returns how many went."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""
