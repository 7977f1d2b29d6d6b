"""Portal sign-in, the provider's documents and the ID token (:mod:`scim.portal.oidc` is the flow).

**Validation** of the ID token (OpenID Connect Core 3.1.3.7, :func:`validate_id_token`): the
signature with the provider's JWKS, RS256 only (``alg: none``, HS* and every other algorithm are
refused), ``iss`` (for Entra's multi-tenant authorities the discovery document's
``https://login.microsoftonline.com/{tenantid}/v2.0`` with the token's own ``tid``, never a fixed
tenant; a key carrying an ``issuer`` must match it too), ``aud`` (and ``azp``) == the client id,
``exp``/``nbf``/``iat`` with :data:`~scim.portal.oidc_config.LEEWAY_SECONDS` of clock skew,
``nonce`` == the pending login's, ``at_hash`` when present. Authlib does this: joserfc
(Authlib's JOSE library) the signature, ``authlib.oidc.core.CodeIDToken`` the claims. MSAL for
Python was not used: its ID token decoding checks no signature (it relies on TLS to the token
endpoint) and only logs an expired token.

**Discovery and keys** are fetched with the caller's aiohttp session and cached per process
(:class:`ProviderCache`): :data:`CACHE_TTL_SECONDS`, a stale copy when the provider cannot be
reached, and the JWKS fetched again when a token names an unknown ``kid`` (key rotation), at
most once per :data:`KEY_REFRESH_INTERVAL_SECONDS`.

**Single use** of a sign-in: :class:`UsedNonces`, the per-process memory of used nonces
(:func:`scim.portal.oidc.complete` claims one before it redeems the code).

Every name here is importable from :mod:`scim.portal.oidc` too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet, RSAKey
from joserfc.jws import JWSRegistry

from scim.portal.oidc_config import (
    LEEWAY_SECONDS,
    TENANT_PLACEHOLDER,
    UNAVAILABLE,
    OidcConfig,
    SignInError,
    require_secure,
)

__all__ = [
    "CACHE_TTL_SECONDS",
    "DEFAULT_CACHE",
    "KEY_REFRESH_INTERVAL_SECONDS",
    "MAX_REMEMBERED_NONCES",
    "USED_NONCES",
    "Identity",
    "ProviderCache",
    "UsedNonces",
    "request_json",
    "validate_id_token",
]

MAX_REMEMBERED_NONCES = 10_000
"""Bound of the per-process memory of used nonces (about 1.5 MB when full)."""
CACHE_TTL_SECONDS = 3600.0
KEY_REFRESH_INTERVAL_SECONDS = 60.0
HTTP_TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 256 * 1024
SIGNING_ALGORITHMS = ("RS256",)


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
            raise SignInError("provider_unavailable", UNAVAILABLE, detail=f"{uri}: no 'keys' list")
        self._jwks[uri] = (self._clock(), document)
        return document

    async def _get(self, http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        self.fetches += 1
        status, document = await request_json(http, "GET", url)
        if status != 200:
            raise SignInError("provider_unavailable", UNAVAILABLE, detail=f"GET {url}: HTTP {status}")
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


# ---- HTTP --------------------------------------------------------------------------------------


async def request_json(
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
        raise SignInError("provider_unavailable", UNAVAILABLE, detail=f"{method} {url}: {type(exc).__name__}") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise SignInError("provider_unavailable", UNAVAILABLE, detail=f"{method} {url}: response too large")
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise SignInError("provider_unavailable", UNAVAILABLE, detail=f"{method} {url}: HTTP {status}, not JSON")
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
            require_secure(url, config.authority)
    except (KeyError, ValueError) as exc:
        raise SignInError(
            "provider_unavailable", UNAVAILABLE, detail=f"{config.metadata_url}: unusable discovery document: {exc}"
        ) from None
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
        raise SignInError("unknown_key", UNAVAILABLE, detail="the ID token's kid is not in the key set") from None
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
