"""Portal sessions, kept in a signed and encrypted cookie (no session store).

A session says who is signed in: its ``kind`` (:data:`TENANT_ADMIN`, bound to one tenant, or
:data:`OPERATOR`, who may open every tenant), an ``actor`` for audit entries
(``setup-link:<id>``, ``entra:<oid>@<tid>``, ``operator:<e-mail or name>``), when it started and
was last used, and a CSRF secret. A tenant admin signed in with Microsoft whose Entra tenant is
linked to several of our tenants holds them all (``tenants``, at most :data:`MAX_TENANTS`).

**The pending sign-in** (:mod:`scim.portal.signin`) has a cookie of its own,
:data:`PENDING_COOKIE`: the OpenID Connect ``state``, ``nonce`` and PKCE verifier sealed the same
way (under another associated data, so neither cookie opens as the other), ``Path=/portal/auth``,
``Max-Age`` the 10 minutes a sign-in may take, ``SameSite=Lax`` (the provider's redirect back
is a top-level GET from another site: a ``Strict`` cookie would not come with it).

**A setup link's page** (:func:`scim.portal.pages.setup_page`) has a cookie of its own too,
:data:`SETUP_COOKIE`: the page's form token and the time it was shown, sealed the same way (under
a third associated data), ``Path=/portal/setup``, ``Max-Age`` :data:`SETUP_MAX_AGE`,
``SameSite=Lax`` (the Continue button posts from the portal's own page; no other site's POST
carries it, and a link clicked in a webmail brings it to the page, which keeps its token).
Continue must send both the cookie and the token. The page of a link of
the old form (``/portal/setup/{secret}``, :func:`scim.portal.pages.setup_link_page`) sets it
bound to its link too, with ``Path`` that link's own URL.

**The cookie** is the session as JSON sealed with AES-256-GCM (authenticated encryption: a
cookie that was changed, made up, or sealed under another key does not open) under a key
derived with HKDF-SHA256 from the stored 32-byte portal key
(``runtime.portal_secrets.session_key()``), so no browser can read or forge one. Its
attributes: ``HttpOnly``; ``Secure`` whenever the public base URL is https (only the local
``http://127.0.0.1`` goes without); ``SameSite=Lax``; ``Path=/portal``; ``Max-Age`` at most the
idle timeout.

**Timeouts**: a session ends :data:`IDLE_TIMEOUT` (30 min) after its last use (every answer
to a request of a live session seals it again with a new ``last_seen``) and
:data:`ABSOLUTE_TIMEOUT` (8 h) after it started, whatever its use. Being stateless, a session
cannot be ended on the server before then: signing out clears the browser's cookie, and a new
portal key ends every session at once.

**CSRF**: every state-changing form carries :meth:`Session.csrf_token` (an HMAC of the
session's secret), checked in constant time on POST (:meth:`Session.csrf_ok`); state changes
only by POST. ``SameSite=Lax`` already keeps other sites' POSTs from carrying the cookie; the
token is the second lock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "ABSOLUTE_TIMEOUT",
    "COOKIE_NAME",
    "COOKIE_PATH",
    "IDLE_TIMEOUT",
    "MAX_TENANTS",
    "OPERATOR",
    "PENDING_COOKIE",
    "PENDING_PATH",
    "SETUP_COOKIE",
    "SETUP_MAX_AGE",
    "SETUP_PATH",
    "TENANT_ADMIN",
    "Session",
    "SessionCookies",
    "new_session",
    "new_session_id",
]

TENANT_ADMIN = "tenant-admin"
OPERATOR = "operator"
KINDS = frozenset({TENANT_ADMIN, OPERATOR})

IDLE_TIMEOUT = 30 * 60
"""Seconds a session lives after its last use."""
ABSOLUTE_TIMEOUT = 8 * 3600
"""Seconds a session lives after it started, however much it is used."""

COOKIE_NAME = "scim_portal"
COOKIE_PATH = "/portal"
PENDING_COOKIE = "scim_portal_signin"
PENDING_PATH = "/portal/auth"
SETUP_COOKIE = "scim_portal_setup"
SETUP_PATH = "/portal/setup"
SETUP_MAX_AGE = 10 * 60
"""Seconds a setup link's page stays good for its Continue button (then: open the link again)."""
MAX_TENANTS = 20
"""The most tenants one session holds (an Entra tenant linked to more: the first 20 by name)."""
_VERSION = b"\x01"
_NONCE_BYTES = 12
_AAD = b"scim-portal-session/v1"
_PENDING_AAD = b"scim-portal-pending-sign-in/v1"
_SETUP_AAD = b"scim-portal-setup-link-page/v1"
_HKDF_INFO = b"scim portal session cookie v1"
_MAX_COOKIE_CHARS = 4096


@dataclass(frozen=True)
class Session:
    """Who is signed in (see the module docstring); times are epoch seconds."""

    kind: str
    actor: str
    created: int
    last_seen: int
    csrf_secret: str
    tenant: str | None = None
    id: str = ""
    """A random id (16 hex digits), to name the session in audit entries and a link's ``used_by``."""
    tenants: tuple[str, ...] = ()
    """A tenant admin's other tenants (signed in with Microsoft, their Entra tenant linked to several)."""

    def may_open(self, tenant: str) -> bool:
        """An operator opens every tenant, a tenant admin its own only."""
        return self.kind == OPERATOR or (self.kind == TENANT_ADMIN and tenant in self.own_tenants)

    @property
    def own_tenants(self) -> tuple[str, ...]:
        """A tenant admin's tenants: ``tenant`` and ``tenants`` (none for an operator)."""
        if self.kind != TENANT_ADMIN or not self.tenant:
            return ()
        return (self.tenant, *(t for t in self.tenants if t != self.tenant))

    @property
    def by_setup_link(self) -> bool:
        """A tenant admin's session that a setup link started (not yet signed in with Microsoft)."""
        return self.kind == TENANT_ADMIN and self.actor.startswith("setup-link:")

    @property
    def is_operator(self) -> bool:
        return self.kind == OPERATOR

    def csrf_token(self) -> str:
        """The token of this session's forms."""
        digest = hmac.new(self.csrf_secret.encode("ascii"), b"portal-form", hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def csrf_ok(self, presented: str | None) -> bool:
        """Whether a form's token is this session's (constant-time comparison)."""
        return presented is not None and hmac.compare_digest(presented.encode("utf-8"), self.csrf_token().encode())

    def expired(self, now: int) -> bool:
        return now >= self.last_seen + IDLE_TIMEOUT or now >= self.created + ABSOLUTE_TIMEOUT

    def seen(self, now: int) -> Session:
        """The session used at ``now`` (the idle timeout starts again)."""
        return replace(self, last_seen=max(now, self.last_seen))

    def max_age(self, now: int) -> int:
        """Seconds the browser keeps the cookie: until the first of the two timeouts."""
        return max(0, min(self.last_seen + IDLE_TIMEOUT, self.created + ABSOLUTE_TIMEOUT) - now)


def new_session_id() -> str:
    return secrets.token_hex(8)


def new_session(
    kind: str,
    actor: str,
    now: datetime,
    tenant: str | None = None,
    session_id: str | None = None,
    tenants: tuple[str, ...] = (),
) -> Session:
    """A session that starts at ``now``, with a fresh CSRF secret (256 bits) and ``session_id``
    (default: a fresh one, :func:`new_session_id`); ``tenants``: a tenant admin's others."""
    if kind not in KINDS:
        raise ValueError(f"unknown session kind {kind!r}")
    if kind == TENANT_ADMIN and not tenant:
        raise ValueError("a tenant admin's session needs its tenant")
    moment = int(now.timestamp())
    tenant = tenant if kind == TENANT_ADMIN else None
    others = tuple(t for t in dict.fromkeys(tenants) if t != tenant)[: MAX_TENANTS - 1] if tenant else ()
    return Session(
        kind, actor, moment, moment, secrets.token_urlsafe(32), tenant, session_id or new_session_id(), others
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCookies:
    """Seals sessions into cookie values and opens them (see the module docstring).

    ``key``: the stored portal key (32 bytes); ``secure``: whether cookies carry ``Secure``
    (:meth:`for_base_url` says from the public base URL).
    """

    def __init__(self, key: bytes, *, secure: bool) -> None:
        if len(key) < 32:
            raise ValueError("the portal session key must be at least 32 bytes")
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(key)
        self._aead = AESGCM(derived)
        self.secure = secure

    @classmethod
    def for_base_url(cls, key: bytes, public_base_url: str) -> SessionCookies:
        """``Secure`` unless the portal is served over plain http (the local host)."""
        return cls(key, secure=not public_base_url.lower().startswith("http://"))

    def _seal(self, plain: bytes, aad: bytes) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _b64(_VERSION + nonce + self._aead.encrypt(nonce, plain, aad))

    def _open(self, value: str | None, aad: bytes) -> bytes | None:
        if not value or len(value) > _MAX_COOKIE_CHARS:
            return None
        try:
            raw = _unb64(value)
        except (binascii.Error, ValueError):
            return None
        if raw[:1] != _VERSION or len(raw) < 1 + _NONCE_BYTES + 16:
            return None
        nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            return None

    def seal(self, session: Session) -> str:
        data = asdict(session)
        if not session.tenants:
            del data["tenants"]
        else:
            data["tenants"] = list(session.tenants)
        return self._seal(json.dumps(data, separators=(",", ":")).encode("utf-8"), _AAD)

    def open(self, value: str | None, now: datetime) -> Session | None:
        """The live session in a cookie value; None when absent, not sealed by this key, or
        past a timeout."""
        plain = self._open(value, _AAD)
        if plain is None:
            return None
        try:
            session = _session(json.loads(plain))
        except (ValueError, TypeError, KeyError):
            return None
        if session is None or session.expired(int(now.timestamp())):
            return None
        return session

    def seal_pending(self, text: str) -> str:
        """A pending sign-in (:meth:`scim.portal.oidc.PendingLogin.to_json`) sealed for its cookie."""
        return self._seal(text.encode("utf-8"), _PENDING_AAD)

    def open_pending(self, value: str | None) -> str | None:
        """The pending sign-in sealed in ``value``; None when absent or not sealed by this key as one
        (its age is checked by :func:`scim.portal.oidc.complete`)."""
        return self._open_text(value, _PENDING_AAD)

    def _open_text(self, value: str | None, aad: bytes) -> str | None:
        plain = self._open(value, aad)
        try:
            return None if plain is None else plain.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def pending_cookie(self, text: str, max_age: int) -> str:
        """The ``Set-Cookie`` value of a pending sign-in (``Path=/portal/auth``, ``max_age`` seconds)."""
        return self._cookie(self.seal_pending(text), max_age, PENDING_COOKIE, PENDING_PATH)

    def clear_pending_cookie(self) -> str:
        """The ``Set-Cookie`` value that removes the pending sign-in's cookie."""
        return self._cookie("", 0, PENDING_COOKIE, PENDING_PATH)

    def setup_cookie(self, text: str, secret: str | None = None) -> str:
        """The ``Set-Cookie`` value of a setup link's page (``text``: what its form's token is
        checked against; :data:`SETUP_MAX_AGE`): ``Path=/portal/setup``, ``SameSite=Lax`` (sent
        with the top-level GET of a link clicked in a webmail, so that a second setup page keeps
        the first one's token; never with another site's POST); for the page of a link of the old
        form, ``secret``, ``Path=/portal/setup/{secret}`` and ``SameSite=Strict``, so that each
        such page has its own and two open in one browser do not replace each other's."""
        sealed = self._seal(text.encode("utf-8"), _SETUP_AAD)
        if secret is None:
            return self._cookie(sealed, SETUP_MAX_AGE, SETUP_COOKIE, SETUP_PATH, same_site="Lax")
        return self._cookie(sealed, SETUP_MAX_AGE, SETUP_COOKIE, f"{SETUP_PATH}/{secret}", same_site="Strict")

    def open_setup(self, value: str | None) -> str | None:
        """What :meth:`setup_cookie` sealed in ``value``; None when absent or not sealed by this
        key as one (its age is checked by the caller)."""
        return self._open_text(value, _SETUP_AAD)

    def set_cookie(self, session: Session, now: datetime) -> str:
        """The ``Set-Cookie`` value that stores ``session`` in the browser."""
        max_age = session.max_age(int(now.timestamp()))
        return self._cookie(self.seal(session), max_age)

    def clear_cookie(self) -> str:
        """The ``Set-Cookie`` value that removes the session cookie (signing out, an ended session)."""
        return self._cookie("", 0)

    def _cookie(
        self, value: str, max_age: int, name: str = COOKIE_NAME, path: str = COOKIE_PATH, *, same_site: str = "Lax"
    ) -> str:
        parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max_age}", "HttpOnly", f"SameSite={same_site}"]
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


def _session(data: Any) -> Session | None:
    if not isinstance(data, dict):
        return None
    session = Session(
        kind=str(data["kind"]),
        actor=str(data["actor"]),
        created=int(data["created"]),
        last_seen=int(data["last_seen"]),
        csrf_secret=str(data["csrf_secret"]),
        tenant=None if data.get("tenant") is None else str(data["tenant"]),
        id=str(data.get("id") or ""),
        tenants=tuple(str(t) for t in data.get("tenants") or ())[: MAX_TENANTS - 1],
    )
    if session.kind not in KINDS or (session.kind == TENANT_ADMIN and not session.tenant):
        return None
    return session
