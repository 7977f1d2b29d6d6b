"""Portal sign-in, its configuration (:mod:`scim.portal.oidc` is the flow): :class:`OidcConfig`
(the provider, this app's registration, who counts as operator or tenant admin, from the
``PORTAL_*`` settings), the **client credential** of the code exchange, and :class:`SignInError`.

**Client credential** for the code exchange: a client secret (local development and the local
provider only: :mod:`scim.settings` refuses one in Azure), or a federated credential: the
app's managed identity's token for ``api://AzureADTokenExchange`` sent as ``client_assertion``
(docs/portal-signin.md).

Every name here is importable from :mod:`scim.portal.oidc` too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from scim.settings import Settings

__all__ = [
    "CALLBACK_PATH",
    "LEEWAY_SECONDS",
    "PENDING_MAX_AGE",
    "ClientCredential",
    "ClientSecret",
    "FederatedAssertion",
    "OidcConfig",
    "SignInError",
    "managed_identity_assertion",
    "require_secure",
]

CALLBACK_PATH = "/portal/auth/callback"
"""The redirect URI's path (the app registration's web redirect URI is the public base URL + this)."""
PENDING_MAX_AGE = 600
"""Seconds a started sign-in may take, from :func:`scim.portal.oidc.begin` to the callback."""
LEEWAY_SECONDS = 60
"""Clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"
"""Audience (as a scope) of a managed identity's token used as a federated credential (public cloud)."""
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TENANT_PLACEHOLDER = "{tenantid}"
"""Entra's multi-tenant discovery documents give ``issuer`` with this placeholder for the tenant id."""

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
UNAVAILABLE = "Sign-in is not available right now; please try again in a minute."


class SignInError(Exception):
    """The sign-in failed. ``code`` says why, for logs and tests (``state_mismatch``, ``expired``,
    ``provider_error``, ``missing_code``, ``replayed``, ``provider_unavailable``,
    ``credential_unavailable``, ``token_exchange_failed``, ``invalid_id_token``, ``unknown_key``,
    ``invalid_pending``); ``provider_error`` is the provider's ``error`` (e.g. ``access_denied``);
    ``detail`` is for the log (never a token, code or secret). ``str()`` is safe to show to the user.
    """

    def __init__(self, code: str, message: str, *, detail: str = "", provider_error: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail
        self.provider_error = provider_error


# ---- configuration -----------------------------------------------------------------------------


class ClientCredential(Protocol):
    """How the portal authenticates itself at the token endpoint."""

    async def token_request_fields(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class ClientSecret:
    """``client_secret`` in the token request's body (local development only)."""

    secret: str = field(repr=False)

    async def token_request_fields(self) -> dict[str, str]:
        return {"client_secret": self.secret}


@dataclass(frozen=True)
class FederatedAssertion:
    """A signed assertion (a managed identity's token, RFC 7523) as ``client_assertion``."""

    get_assertion: Callable[[], Awaitable[str]] = field(repr=False)

    async def token_request_fields(self) -> dict[str, str]:
        return {"client_assertion_type": JWT_BEARER_ASSERTION, "client_assertion": await self.get_assertion()}


def managed_identity_assertion(identity_client_id: str) -> FederatedAssertion:
    """The user-assigned managed identity ``identity_client_id``'s token for
    ``api://AzureADTokenExchange``, the federated credential of the app registration. The
    credential is made on first use and caches its token until shortly before it expires."""
    credential: Any = None

    async def get() -> str:
        nonlocal credential
        from azure.core.exceptions import AzureError
        from azure.identity.aio import ManagedIdentityCredential

        if credential is None:
            credential = ManagedIdentityCredential(client_id=identity_client_id)
        try:
            token = await credential.get_token(TOKEN_EXCHANGE_SCOPE)
        except AzureError as exc:
            raise SignInError(
                "credential_unavailable",
                "Sign-in is not available right now.",
                detail=f"managed identity {identity_client_id}: {type(exc).__name__}: {exc}"[:500],
            ) from None
        return str(token.token)

    return FederatedAssertion(get)


@dataclass(frozen=True)
class OidcConfig:
    """One OpenID Connect client: the provider (``authority``, its discovery document at
    ``metadata_url``), this app's registration and who counts as operator or tenant admin."""

    authority: str
    client_id: str
    redirect_uri: str
    credential: ClientCredential = field(repr=False)
    operator_tenant_id: str | None = None
    operator_role: str | None = "Portal.Operator"
    operator_group: str | None = None
    tenant_admin_role: str | None = "Portal.TenantAdmin"
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    metadata_url: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "authority", self.authority.rstrip("/"))
        if not self.metadata_url:
            object.__setattr__(self, "metadata_url", f"{self.authority}/.well-known/openid-configuration")
        for url in (self.authority, self.metadata_url):
            require_secure(url, self.authority)

    @classmethod
    def from_settings(cls, settings: Settings, redirect_uri: str | None = None) -> OidcConfig | None:
        """The configuration the settings give (``PORTAL_*``), None when portal sign-in is off.
        ``redirect_uri`` defaults to the public base URL + :data:`CALLBACK_PATH`."""
        if settings.portal_client_id is None:
            return None
        credential: ClientCredential
        if settings.portal_federated_client_id is not None:
            credential = managed_identity_assertion(settings.portal_federated_client_id)
        elif settings.portal_client_secret is not None and not settings.in_azure:
            credential = ClientSecret(settings.portal_client_secret.get_secret_value())
        else:  # Settings refuses this already; never a secret in Azure
            raise ValueError("portal sign-in needs PORTAL_OIDC_FEDERATED_CLIENT_ID in Azure")
        return cls(
            authority=settings.portal_authority,
            client_id=settings.portal_client_id,
            redirect_uri=redirect_uri or f"{settings.public_base_url}{CALLBACK_PATH}",
            credential=credential,
            operator_tenant_id=settings.portal_operator_tenant_id,
            operator_role=settings.portal_operator_role,
            operator_group=settings.portal_operator_group,
            tenant_admin_role=settings.portal_tenant_admin_role,
        )


def _is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK


def require_secure(url: str, authority: str) -> None:
    """https, or http on a loopback host when the authority itself is one (the local provider)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.netloc:
        return
    if _is_loopback_http(url) and _is_loopback_http(authority):
        return
    raise ValueError(f"OpenID Connect URL must be https (http only for a local provider): {url!r}")
