"""Portal sign-in with OpenID Connect (issue 14): the authorization code flow with PKCE (RFC 7636,
``S256``) against Microsoft Entra ID, or locally against make run's provider
(:mod:`devtools.oidc_provider`). No pages and no cookies here: the web layer calls

1. :func:`begin` (``config``, purpose ``"operator"`` or ``"tenant-admin"``, a local
   ``return_to`` path, an aiohttp session) -> ``(authorization_url, pending)``: it keeps
   ``pending.to_json()`` in its sealed cookie (``HttpOnly``, ``SameSite=Lax``, at most
   :data:`PENDING_MAX_AGE` seconds) and redirects the browser to ``authorization_url``;
2. on the callback (:data:`CALLBACK_PATH`), :meth:`PendingLogin.from_json` of that cookie, clears
   the cookie whatever happens next, and calls :func:`complete` with the callback's query
   parameters: an :class:`Identity`, or :class:`SignInError` for any failure;
3. :func:`is_operator` / :func:`is_tenant_admin` decide what that identity may do.

**Validation** of the ID token (OpenID Connect Core 3.1.3.7): the signature with the provider's
JWKS, RS256 only (``alg: none``, HS* and every other algorithm are refused), ``iss`` (for Entra's
multi-tenant authorities the discovery document's ``https://login.microsoftonline.com/{tenantid}/v2.0``
with the token's own ``tid``, never a fixed tenant; a key carrying an ``issuer`` must match it
too), ``aud`` (and ``azp``) == the client id, ``exp``/``nbf``/``iat`` with :data:`LEEWAY_SECONDS`
of clock skew, ``nonce`` == the pending login's, ``at_hash`` when present. Authlib does this:
joserfc (Authlib's JOSE library) the signature, ``authlib.oidc.core.CodeIDToken`` the claims.
MSAL for Python was not used: its ID token decoding checks no signature (it relies on TLS to
the token endpoint) and only logs an expired token.

**Single use**: :func:`complete` claims the pending login's nonce in a per-process memory
(:class:`UsedNonces`) before it redeems the code, so the same callback (same state and nonce)
replayed to this instance fails without reaching the provider. The memory keeps a nonce
:data:`PENDING_MAX_AGE` seconds plus the leeway (an older pending login is refused anyway) and
at most :data:`MAX_REMEMBERED_NONCES` of them (the oldest go first beyond that: more sign-ins
than that within 10 minutes on one instance). Across instances the provider's single-use
authorization code and the cleared cookie stop a replay.

**Discovery and keys** are fetched with the caller's aiohttp session and cached per process
(:class:`ProviderCache`): :data:`CACHE_TTL_SECONDS`, a stale copy when the provider cannot be
reached, and the JWKS fetched again when a token names an unknown ``kid`` (key rotation), at
most once per :data:`KEY_REFRESH_INTERVAL_SECONDS`.

**Client credential** for the code exchange: a client secret (local development and the local
provider only: :mod:`scim.settings` refuses one in Azure), or a federated credential: the
app's managed identity's token for ``api://AzureADTokenExchange`` sent as ``client_assertion``
(docs/portal-signin.md).
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, get_args
from urllib.parse import urlsplit

import aiohttp
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet, RSAKey
from joserfc.jws import JWSRegistry

if TYPE_CHECKING:
    from scim.settings import Settings

__all__ = [
    "CALLBACK_PATH",
    "PENDING_MAX_AGE",
    "ClientSecret",
    "FederatedAssertion",
    "Identity",
    "OidcConfig",
    "PendingLogin",
    "ProviderCache",
    "Purpose",
    "SignInError",
    "UsedNonces",
    "authorization_request",
    "begin",
    "complete",
    "is_operator",
    "is_tenant_admin",
    "managed_identity_assertion",
    "validate_id_token",
]

Purpose = Literal["operator", "tenant-admin"]
PURPOSES: frozenset[str] = frozenset(get_args(Purpose))

CALLBACK_PATH = "/portal/auth/callback"
"""The redirect URI's path (the app registration's web redirect URI is the public base URL + this)."""
PENDING_MAX_AGE = 600
"""Seconds a started sign-in may take, from :func:`begin` to the callback."""
LEEWAY_SECONDS = 60
"""Clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
MAX_REMEMBERED_NONCES = 10_000
"""Bound of the per-process memory of used nonces (about 1.5 MB when full)."""
CACHE_TTL_SECONDS = 3600.0
KEY_REFRESH_INTERVAL_SECONDS = 60.0
HTTP_TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 256 * 1024
MAX_RETURN_TO = 512
MAX_CONTEXT = 512
SIGNING_ALGORITHMS = ("RS256",)
TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"
"""Audience (as a scope) of a managed identity's token used as a federated credential (public cloud)."""
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TENANT_PLACEHOLDER = "{tenantid}"
"""Entra's multi-tenant discovery documents give ``issuer`` with this placeholder for the tenant id."""

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{32,128}")


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
            _require_secure(url, self.authority)

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


def _require_secure(url: str, authority: str) -> None:
    """https, or http on a loopback host when the authority itself is one (the local provider)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.netloc:
        return
    if _is_loopback_http(url) and _is_loopback_http(authority):
        return
    raise ValueError(f"OpenID Connect URL must be https (http only for a local provider): {url!r}")


# ---- the pending sign-in -----------------------------------------------------------------------


@dataclass(frozen=True)
class PendingLogin:
    """A started sign-in, kept by the web layer in its sealed cookie between :func:`begin` and the
    callback. ``context`` is the web layer's own (e.g. which setup link started it), opaque here."""

    purpose: Purpose
    state: str
    nonce: str
    code_verifier: str
    return_to: str
    created_at: int
    context: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "p": self.purpose,
                "s": self.state,
                "n": self.nonce,
                "v": self.code_verifier,
                "r": self.return_to,
                "t": self.created_at,
                "c": self.context,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> PendingLogin:
        """The pending login in ``text``; :class:`SignInError` ``invalid_pending`` if it is not one."""
        try:
            data = json.loads(text)
            purpose, created, context = data["p"], data["t"], data.get("c")
            tokens = (data["s"], data["n"], data["v"])
            if (
                purpose not in PURPOSES
                or not all(isinstance(t, str) and _TOKEN_CHARS.fullmatch(t) for t in tokens)
                or not (isinstance(created, int) and not isinstance(created, bool))
                or not (context is None or (isinstance(context, str) and len(context) <= MAX_CONTEXT))
            ):
                raise ValueError("bad field")
            return cls(purpose, *tokens, return_to=_local_path(data["r"]), created_at=created, context=context)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SignInError("invalid_pending", "The sign-in expired; please sign in again.") from exc


def _local_path(value: object) -> str:
    """``value`` if it is a path on this site (no scheme, host or ``//``), else ValueError (no open redirect)."""
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or len(value) > MAX_RETURN_TO
        or any(not 0x21 <= ord(ch) <= 0x7E or ch == "\\" for ch in value)  # ASCII, no spaces or controls
    ):
        raise ValueError("return_to must be a path on this site, e.g. /portal/")
    return value


# ---- the caches --------------------------------------------------------------------------------


class ProviderCache:
    """Discovery documents and key sets, per process, for ``ttl`` seconds; a forced key refresh
    (an unknown ``kid``) at most once per ``refresh_interval`` per key set."""

    def __init__(
        self,
        ttl: float = CACHE_TTL_SECONDS,
        refresh_interval: float = KEY_REFRESH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._metadata: dict[str, tuple[float, dict[str, Any]]] = {}
        self._jwks: dict[str, tuple[float, dict[str, Any]]] = {}
        self._refreshed: dict[str, float] = {}
        self.fetches = 0  # HTTP GETs made, for tests

    async def metadata(self, config: OidcConfig, http: aiohttp.ClientSession) -> dict[str, Any]:
        url = config.metadata_url
        hit = self._metadata.get(url)
        if hit and self._clock() - hit[0] < self.ttl:
            return hit[1]
        try:
            document = _checked_metadata(config, await self._get(http, url))
        except SignInError:
            if hit:  # the provider is unreachable or odd for now: the last good copy
                return hit[1]
            raise
        self._metadata[url] = (self._clock(), document)
        return document

    async def jwks(self, uri: str, http: aiohttp.ClientSession) -> dict[str, Any]:
        """The key set at ``uri`` (cached; a stale copy while the provider cannot be reached)."""
        hit = self._jwks.get(uri)
        if hit and self._clock() - hit[0] < self.ttl:
            return hit[1]
        try:
            return await self._fetch_jwks(uri, http)
        except SignInError:
            if hit:
                return hit[1]
            raise

    async def refresh_jwks(self, uri: str, http: aiohttp.ClientSession) -> dict[str, Any] | None:
        """The key set at ``uri`` fetched again (a token named an unknown ``kid``), or None when that
        was done within ``refresh_interval``."""
        now = self._clock()
        last = self._refreshed.get(uri)
        if last is not None and now - last < self.refresh_interval:
            return None
        self._refreshed[uri] = now
        return await self._fetch_jwks(uri, http)

    async def _fetch_jwks(self, uri: str, http: aiohttp.ClientSession) -> dict[str, Any]:
        document = await self._get(http, uri)
        if not isinstance(document.get("keys"), list):
            raise SignInError("provider_unavailable", _UNAVAILABLE, detail=f"{uri}: no 'keys' list")
        self._jwks[uri] = (self._clock(), document)
        return document

    async def _get(self, http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        self.fetches += 1
        status, document = await _request_json(http, "GET", url)
        if status != 200:
            raise SignInError("provider_unavailable", _UNAVAILABLE, detail=f"GET {url}: HTTP {status}")
        return document


class UsedNonces:
    """Nonces already used, each until its time is up; at most ``max_entries`` (oldest dropped)."""

    def __init__(self, max_entries: int = MAX_REMEMBERED_NONCES, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()

    def claim(self, nonce: str, until: float) -> bool:
        """Record ``nonce`` as used until ``until`` (epoch seconds); False if it already was."""
        now = self._clock()
        expiry = self._until.pop(nonce, None)
        if expiry is not None and expiry > now:
            self._until[nonce] = expiry
            return False
        while self._until:  # in claim order; a pending login lives a fixed time, so mostly oldest first
            oldest, expiry = next(iter(self._until.items()))
            if expiry > now and len(self._until) < self.max_entries:
                break
            del self._until[oldest]
        self._until[nonce] = until
        return True

    def __len__(self) -> int:
        return len(self._until)


DEFAULT_CACHE = ProviderCache()
USED_NONCES = UsedNonces()
_UNAVAILABLE = "Sign-in is not available right now; please try again in a minute."


# ---- HTTP --------------------------------------------------------------------------------------


async def _request_json(
    http: aiohttp.ClientSession, method: str, url: str, data: Mapping[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """``(status, JSON object)`` of one request; SignInError ``provider_unavailable`` when there is no
    JSON object to read (an error status with a JSON body is returned, for its ``error``)."""
    try:
        async with http.request(
            method,
            url,
            data=dict(data) if data is not None else None,
            headers={"Accept": "application/json"},
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS),
        ) as response:
            body = await response.content.read(MAX_RESPONSE_BYTES + 1)
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SignInError(
            "provider_unavailable", _UNAVAILABLE, detail=f"{method} {url}: {type(exc).__name__}"
        ) from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise SignInError("provider_unavailable", _UNAVAILABLE, detail=f"{method} {url}: response too large")
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise SignInError("provider_unavailable", _UNAVAILABLE, detail=f"{method} {url}: HTTP {status}, not JSON")
    return status, document


def _checked_metadata(config: OidcConfig, document: dict[str, Any]) -> dict[str, Any]:
    """The discovery document, if its issuer is the authority (or Entra's multi-tenant template on
    the authority's host) and its endpoints are https (http only for a local provider)."""
    try:
        issuer = document["issuer"]
        endpoints = [document[name] for name in ("authorization_endpoint", "token_endpoint", "jwks_uri")]
        if not all(isinstance(value, str) for value in (issuer, *endpoints)):
            raise ValueError("not strings")
        if issuer.rstrip("/") != config.authority and not (
            TENANT_PLACEHOLDER in issuer and urlsplit(issuer).netloc == urlsplit(config.authority).netloc
        ):
            raise ValueError(f"issuer {issuer!r} is not the authority {config.authority!r}")
        for url in endpoints:
            _require_secure(url, config.authority)
    except (KeyError, ValueError) as exc:
        raise SignInError(
            "provider_unavailable", _UNAVAILABLE, detail=f"{config.metadata_url}: unusable discovery document: {exc}"
        ) from None
    return document


# ---- the flow ----------------------------------------------------------------------------------


def authorization_request(
    config: OidcConfig,
    metadata: Mapping[str, Any],
    purpose: Purpose,
    return_to: str,
    *,
    context: str | None = None,
    now: int | None = None,
) -> tuple[str, PendingLogin]:
    """The authorization URL and the pending login it starts (pure: fresh ``state``, ``nonce`` and
    PKCE verifier from :mod:`secrets`). ValueError for an unknown purpose or a ``return_to`` that is
    not a path on this site."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {sorted(PURPOSES)}")
    if context is not None and len(context) > MAX_CONTEXT:
        raise ValueError(f"context is longer than {MAX_CONTEXT} characters")
    pending = PendingLogin(
        purpose=purpose,
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        code_verifier=secrets.token_urlsafe(64),  # 86 characters: RFC 7636 allows 43 to 128
        return_to=_local_path(return_to),
        created_at=int(time.time()) if now is None else now,
        context=context,
    )
    url = prepare_grant_uri(
        metadata["authorization_endpoint"],
        config.client_id,
        "code",
        redirect_uri=config.redirect_uri,
        scope=list(config.scopes),
        state=pending.state,
        nonce=pending.nonce,
        code_challenge=create_s256_code_challenge(pending.code_verifier),
        code_challenge_method="S256",
        response_mode="query",
        prompt="select_account",
    )
    return str(url), pending


async def begin(
    config: OidcConfig,
    purpose: Purpose,
    return_to: str,
    http: aiohttp.ClientSession,
    *,
    context: str | None = None,
    cache: ProviderCache | None = None,
) -> tuple[str, PendingLogin]:
    """:func:`authorization_request` with the provider's (cached) discovery document."""
    metadata = await (cache or DEFAULT_CACHE).metadata(config, http)
    return authorization_request(config, metadata, purpose, return_to, context=context)


async def complete(
    config: OidcConfig,
    pending: PendingLogin,
    callback_params: Mapping[str, str],
    http: aiohttp.ClientSession,
    *,
    cache: ProviderCache | None = None,
    used_nonces: UsedNonces | None = None,
) -> Identity:
    """The identity the callback proves, or :class:`SignInError`: the state must be the pending
    login's, the provider's ``error`` is reported, the code is redeemed (with the PKCE verifier
    and the client credential) and the ID token validated (:func:`validate_id_token`)."""
    cache = cache or DEFAULT_CACHE
    used_nonces = USED_NONCES if used_nonces is None else used_nonces
    if time.time() > pending.created_at + PENDING_MAX_AGE:
        raise SignInError("expired", "The sign-in took too long; please sign in again.")
    state = callback_params.get("state")
    # An error answer without a state (RFC 6749 asks for one; oidc-provider-mock's deny sends none)
    # is reported as the error: it signs nobody in, and the pending login stays unused.
    if not (state is None and "error" in callback_params) and not hmac.compare_digest(
        (state or "").encode(), pending.state.encode()
    ):
        raise SignInError("state_mismatch", "The sign-in could not be matched to this browser; please sign in again.")
    if "error" in callback_params:
        error = callback_params["error"]
        error = error if _ERROR_CODE.fullmatch(error) else "unknown"
        raise SignInError(
            "provider_error",
            "Sign-in was cancelled or refused." if error == "access_denied" else "Sign-in failed at the provider.",
            detail=f"provider error {error}",
            provider_error=error,
        )
    code = callback_params.get("code")
    if not code:
        raise SignInError("missing_code", "The sign-in response was incomplete; please sign in again.")
    if not used_nonces.claim(pending.nonce, until=pending.created_at + PENDING_MAX_AGE + LEEWAY_SECONDS):
        raise SignInError("replayed", "This sign-in was already used; please sign in again.")

    metadata = await cache.metadata(config, http)
    tokens = await _redeem(config, metadata, code, pending, http)
    id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
    if not isinstance(id_token, str):
        raise SignInError("token_exchange_failed", _UNAVAILABLE, detail="no id_token in the token response")

    def validate(jwks: Mapping[str, Any]) -> Identity:
        return validate_id_token(
            id_token,
            config=config,
            metadata=metadata,
            jwks=jwks,
            nonce=pending.nonce,
            access_token=access_token if isinstance(access_token, str) else None,
        )

    try:
        return validate(await cache.jwks(metadata["jwks_uri"], http))
    except SignInError as exc:
        if exc.code != "unknown_key":
            raise
        fresh = await cache.refresh_jwks(metadata["jwks_uri"], http)
        if fresh is None:
            raise
        return validate(fresh)


async def _redeem(
    config: OidcConfig, metadata: Mapping[str, Any], code: str, pending: PendingLogin, http: aiohttp.ClientSession
) -> dict[str, Any]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": config.redirect_uri,
        "client_id": config.client_id,
        "code_verifier": pending.code_verifier,
        **(await config.credential.token_request_fields()),
    }
    status, document = await _request_json(http, "POST", metadata["token_endpoint"], form)
    if status != 200:
        error = document.get("error")
        described = str(document.get("error_description") or "")[:300]
        raise SignInError(
            "token_exchange_failed",
            "Sign-in failed at the provider; please sign in again.",
            detail=f"token endpoint HTTP {status} {error}: {described}",
            provider_error=error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else None,
        )
    return document


# ---- the ID token ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who signed in, from a validated ID token. Entra's stable key for a user is ``(tid, oid)``;
    ``subject`` is pairwise (per application). ``groups_overage``: Entra left the groups out (too
    many) and ``groups`` is incomplete: use app roles."""

    subject: str
    issuer: str
    oid: str | None = None
    tid: str | None = None
    name: str | None = None
    email: str | None = None
    username: str | None = None
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    groups_overage: bool = False

    @property
    def display(self) -> str:
        """A name for pages and audit entries: the name, else the e-mail or user name, else the subject."""
        return self.name or self.email or self.username or self.subject


def validate_id_token(
    id_token: str,
    *,
    config: OidcConfig,
    metadata: Mapping[str, Any],
    jwks: Mapping[str, Any],
    nonce: str,
    access_token: str | None = None,
    now: int | None = None,
) -> Identity:
    """Validate ``id_token`` (OpenID Connect Core 3.1.3.7, module docstring) and return its
    :class:`Identity`; :class:`SignInError` ``invalid_id_token``, or ``unknown_key`` when its
    ``kid`` is not in ``jwks`` (fetch the keys again and retry)."""

    def invalid(why: str) -> SignInError:
        return SignInError("invalid_id_token", "Sign-in failed: the provider's answer was not valid.", detail=why)

    keys = _signing_keys(jwks)
    if not keys:
        raise invalid("no usable RSA signing key in the key set")
    registry = JWSRegistry(algorithms=list(SIGNING_ALGORITHMS), strict_check_header=False)
    try:
        token = jwt.decode(id_token, keys, registry=registry)
    except InvalidKeyIdError:
        raise SignInError("unknown_key", _UNAVAILABLE, detail="the ID token's kid is not in the key set") from None
    except (JoseError, ValueError, TypeError) as exc:
        raise invalid(f"signature: {type(exc).__name__}: {exc}"[:300]) from None
    header, claims = token.header, token.claims
    if header.get("alg") not in SIGNING_ALGORITHMS:
        raise invalid(f"algorithm {header.get('alg')!r}")

    expected_issuer = str(metadata["issuer"])
    tid = claims.get("tid")
    if TENANT_PLACEHOLDER in expected_issuer:  # Entra multi-tenant: the issuer of the token's own tenant
        if not isinstance(tid, str) or not _is_guid(tid):
            raise invalid("multi-tenant issuer and no tid claim")
        expected_issuer = expected_issuer.replace(TENANT_PLACEHOLDER, tid)
    key_issuer = next(
        (k.get("issuer") for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == header.get("kid")),
        None,
    )
    if isinstance(key_issuer, str) and key_issuer.replace(TENANT_PLACEHOLDER, str(tid)) != expected_issuer:
        raise invalid("the signing key belongs to another issuer")

    options = {
        "iss": {"essential": True, "value": expected_issuer},
        "aud": {"essential": True, "value": config.client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
        "nonce": {"essential": True},
    }
    params = {"nonce": nonce, "client_id": config.client_id, "access_token": access_token}
    try:
        CodeIDToken(claims, header, options, params).validate(now=now, leeway=LEEWAY_SECONDS)
    except (JoseError, ValueError, TypeError) as exc:
        raise invalid(f"claims: {type(exc).__name__}: {exc}"[:300]) from None

    groups_overage = claims.get("hasgroups") is True or "groups" in (claims.get("_claim_names") or {})
    return Identity(
        subject=str(claims["sub"]),
        issuer=str(claims["iss"]),
        oid=_text(claims.get("oid")),
        tid=_text(tid),
        name=_text(claims.get("name")),
        email=_text(claims.get("email")),
        username=_text(claims.get("preferred_username")),
        roles=_texts(claims.get("roles")),
        groups=_texts(claims.get("groups")),
        groups_overage=groups_overage,
    )


def _signing_keys(jwks: Mapping[str, Any]) -> KeySet | None:
    """The RSA signature keys of ``jwks``; a key that does not import is skipped (RFC 7517 §5), so
    that one odd key of the provider's does not stop every sign-in."""
    keys: list[RSAKey] = []
    entries = jwks.get("keys")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
            continue
        try:
            keys.append(RSAKey.import_key(cast(Any, entry)))
        except (JoseError, ValueError, TypeError):
            continue
    return KeySet(cast(Any, keys)) if keys else None


def _is_guid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _texts(value: object) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


# ---- who may do what ---------------------------------------------------------------------------


def is_operator(identity: Identity, config: OidcConfig) -> bool:
    """An operator of this deployment: from the operators' tenant (when configured: always with a
    multi-tenant authority, where any tenant's admin can assign our app roles to their own users)
    and holding the operator app role or in the operator group."""
    if config.operator_tenant_id is not None and (identity.tid or "").lower() != config.operator_tenant_id.lower():
        return False
    by_role = config.operator_role is not None and config.operator_role in identity.roles
    by_group = config.operator_group is not None and config.operator_group.lower() in {
        g.lower() for g in identity.groups
    }
    return by_role or by_group


def is_tenant_admin(identity: Identity, config: OidcConfig) -> bool:
    """Holds the tenant-admin app role in its own Entra tenant (``identity.tid``); which SCIM tenant
    that ``tid`` may manage is the portal's record, not this module's."""
    return config.tenant_admin_role is not None and config.tenant_admin_role in identity.roles and bool(identity.tid)
