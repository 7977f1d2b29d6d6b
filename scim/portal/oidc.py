"""Portal sign-in with OpenID Connect (issue 14): the authorization code flow with PKCE (RFC 7636,
``S256``) against Microsoft Entra ID, or locally against make run's provider
(:mod:`devtools.oidc_provider`). No pages and no cookies here: the web layer
(:mod:`scim.portal.signin`) calls

1. :func:`begin` (``config``, purpose ``"operator"`` or ``"tenant-admin"``, a local
   ``return_to`` path, an aiohttp session) -> ``(authorization_url, pending)``: it keeps
   ``pending.to_json()`` in its sealed cookie (``HttpOnly``, ``SameSite=Lax``, at most
   :data:`PENDING_MAX_AGE` seconds) and redirects the browser to ``authorization_url``;
2. on the callback (:data:`CALLBACK_PATH`), :meth:`PendingLogin.from_json` of that cookie, clears
   the cookie whatever happens next, and calls :func:`complete` with the callback's query
   parameters: an :class:`Identity`, or :class:`SignInError` for any failure;
3. :func:`is_operator` / :func:`is_tenant_admin` decide what that identity may do.

The module is split by concern, and every public name of the three is importable from here:

- :mod:`scim.portal.oidc_config`: :class:`OidcConfig` (from the ``PORTAL_*`` settings), the
  client credential of the code exchange (a client secret locally, the managed identity's
  federated assertion in Azure), :class:`SignInError`;
- :mod:`scim.portal.oidc_tokens`: the provider's discovery document and keys
  (:class:`ProviderCache`), the ID token's validation (:func:`validate_id_token`, signature and
  claims with Authlib/joserfc) and :class:`Identity`, the used nonces (:class:`UsedNonces`);
- this module: the flow (:class:`PendingLogin`, :func:`authorization_request`, :func:`begin`,
  :func:`complete`) and who may do what (:func:`is_operator`, :func:`is_tenant_admin`).

**Single use**: :func:`complete` claims the pending login's nonce in a per-process memory
(:class:`UsedNonces`) before it redeems the code, so the same callback (same state and nonce)
replayed to this instance fails without reaching the provider. The memory keeps a nonce
:data:`PENDING_MAX_AGE` seconds plus the leeway (an older pending login is refused anyway) and
at most :data:`~scim.portal.oidc_tokens.MAX_REMEMBERED_NONCES` of them (the oldest go first
beyond that: more sign-ins than that within 10 minutes on one instance). Across instances the
provider's single-use authorization code and the cleared cookie stop a replay.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import aiohttp
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]

from scim.portal.oidc_config import (
    CALLBACK_PATH,
    LEEWAY_SECONDS,
    PENDING_MAX_AGE,
    UNAVAILABLE,
    ClientCredential,
    ClientSecret,
    FederatedAssertion,
    OidcConfig,
    SignInError,
    managed_identity_assertion,
)
from scim.portal.oidc_tokens import (
    DEFAULT_CACHE,
    USED_NONCES,
    Identity,
    ProviderCache,
    UsedNonces,
    request_json,
    validate_id_token,
)

__all__ = [
    "CALLBACK_PATH",
    "LEEWAY_SECONDS",
    "PENDING_MAX_AGE",
    "PURPOSES",
    "ClientCredential",
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
MAX_RETURN_TO = 512
MAX_CONTEXT = 512
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{32,128}")


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
        raise SignInError("token_exchange_failed", UNAVAILABLE, detail="no id_token in the token response")

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
    status, document = await request_json(http, "POST", metadata["token_endpoint"], form)
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
