"""What a portal request is handled with, and who may do what.

- :class:`PortalServices`: the services the portal calls (the runtime has them all: the adapter
  passes :class:`scim.functions.runtime.Runtime`); the portal has no logic of its own beyond
  presentation and authorization, and imports no adapter and not the runtime module.
- :class:`Portal`: those services, the :data:`~scim.portal.connection.Probe` (the SCIM
  endpoint, called in-process for Test connection) and the :class:`TenantLifecycle` (the
  operator's Create tenant and Delete tenant: the admin CLI's own, on the runtime).
- :class:`Context`: one request, its time and its session (if a live one came with it).
- Authorization: :func:`require_session`, :func:`require_tenant` (a tenant admin's session
  reaches its own tenant only, an operator's every tenant), :func:`require_operator`, and
  :func:`require_csrf` for every POST. Each refuses with :class:`Refused` (403, 404).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from scim.portal.connection import Probe
from scim.portal.http import PortalRequest
from scim.portal.sessions import Session, SessionCookies
from scim.tenants import ACTIVE, InvalidTenantName, validate_tenant_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    from scim.notify.state import NotifyStateStore
    from scim.portal.audit import AuditTrail
    from scim.portal.links import SetupLinkRegistry
    from scim.portal.secrets_store import PortalSecrets
    from scim.provisioning_log import ProvisioningLog
    from scim.settings import Settings
    from scim.store.base import DirectoryStore
    from scim.tenants import TenantRegistry
    from scim.webhooks import WebhookRegistry
    from scim.webhooks.delivery_state import DeliveryStateStore

__all__ = [
    "Context",
    "Portal",
    "PortalServices",
    "Refused",
    "TenantDeleteInterrupted",
    "TenantLifecycle",
    "require_csrf",
    "require_operator",
    "require_session",
    "require_tenant",
]


class PortalServices(Protocol):
    """The services the portal uses (read-only attributes of the runtime)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def tenants(self) -> TenantRegistry: ...
    @property
    def log(self) -> ProvisioningLog: ...
    @property
    def states(self) -> NotifyStateStore: ...
    @property
    def webhooks(self) -> WebhookRegistry: ...
    @property
    def portal_links(self) -> SetupLinkRegistry: ...
    @property
    def portal_secrets(self) -> PortalSecrets: ...
    @property
    def audit(self) -> AuditTrail: ...
    @property
    def store(self) -> DirectoryStore: ...
    @property
    def deliveries(self) -> DeliveryStateStore: ...


class TenantLifecycle(Protocol):
    """Creating and deleting tenants as the admin CLI does (:mod:`scim.admin.core`: a name whose
    data an unfinished delete left is refused; a delete is resumable), on the portal's runtime."""

    async def create(self, name: str, notify: Sequence[str], expires: int | None) -> tuple[str, str | None, str | None]:
        """The new tenant's Secret Token, its id and its expiry (RFC 3339, None: never), the first
        token expiring ``expires`` seconds after it is made (None: never); failure digests to
        ``notify``. Raises TenantExists, TenantDeleting, InvalidTenantName or ValueError (an address)."""
        ...

    async def delete(self, name: str) -> bool:
        """Delete ``name`` and all its data; True if this finished an interrupted delete. Raises
        TenantNotFound, or :class:`TenantDeleteInterrupted` (its token is revoked; running it again
        finishes the delete)."""
        ...


class TenantDeleteInterrupted(Exception):
    """A tenant's delete stopped before the end (storage failed): its token is revoked, some data
    remains, and deleting it again finishes the job."""


@dataclass(frozen=True)
class Portal:
    """The portal's services, the in-process SCIM probe (Test connection) and the tenants'
    creation and deletion (None: the operator view offers neither)."""

    services: PortalServices
    probe: Probe
    lifecycle: TenantLifecycle | None = None


class Refused(Exception):
    """An answer that is not the page asked for: 400, 403, 404, 405, 410. ``text`` is shown as is
    (escaped); it never holds a secret or a stack trace."""

    def __init__(self, status: int, title: str, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(title)
        self.status, self.title, self.text, self.headers = status, title, text, headers or {}


NOT_SIGNED_IN = (
    "You are not signed in, or your session ended (after 30 minutes without use, or 8 hours after it started). "
    "Sign in again at /portal/ (Sign in with Microsoft), or open a new setup link from your provider."
)


@dataclass
class Context:
    """One request: the portal, its time, the session cookie's codec (None for static files) and
    the live session that came with it (None: none, or one that ended or was not ours)."""

    request: PortalRequest
    portal: Portal
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    cookies: SessionCookies | None = None
    session: Session | None = None
    cookie_refused: bool = False
    """A session cookie came but did not open (ended, forged, another key): it is cleared."""

    @property
    def services(self) -> PortalServices:
        return self.portal.services

    @property
    def settings(self) -> Settings:
        return self.portal.services.settings

    def values(self, **extra: Any) -> dict[str, Any]:
        """What every page gets: the session and its CSRF token (empty when signed out)."""
        token = self.session.csrf_token() if self.session is not None else ""
        return {"session": self.session, "csrf_token": token, **extra}


def require_session(ctx: Context) -> Session:
    if ctx.session is None:
        raise Refused(403, "Not signed in", NOT_SIGNED_IN)
    return ctx.session


def require_operator(ctx: Context) -> Session:
    """The session of an operator (who may open every tenant), else 403."""
    session = require_session(ctx)
    if not session.is_operator:
        raise Refused(403, "Operators only", "This page is for the service's operators.")
    return session


async def require_tenant(ctx: Context, tenant: str) -> Session:
    """A session that may open ``tenant``, which exists: 403 for another tenant's admin (whether
    or not that tenant exists), 404 for a tenant that does not exist or is being deleted."""
    session = require_session(ctx)
    if not session.may_open(tenant):
        raise Refused(403, "Not your tenant", "Your session opens your own tenant's page only.")
    try:
        validate_tenant_name(tenant)
    except InvalidTenantName:
        raise _no_tenant() from None
    if await ctx.services.tenants.state(tenant) != ACTIVE:
        raise _no_tenant()
    return session


def _no_tenant() -> Refused:
    return Refused(404, "No such tenant", "There is no such tenant (it may have been deleted).")


def require_csrf(ctx: Context, form: dict[str, list[str]]) -> None:
    """A POST's form must carry this session's CSRF token, else 403 (nothing is changed)."""
    session = require_session(ctx)
    if not session.csrf_ok(_first(form, "csrf_token")):
        raise Refused(
            403,
            "Form refused",
            "This form was not sent from your current portal page (its security token is missing or wrong). "
            "Reload the page and try again.",
        )


def _first(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None
