"""Sign in with Microsoft: the portal's pages and routes around :mod:`scim.portal.oidc`.

=======  ==========================  ==========================================================
method   path (under ``/portal/``)   what
=======  ==========================  ==========================================================
GET      (empty), signed out         the sign-in page (:func:`sign_in_page`)
GET      ``auth/login``              ``?as=operator|tenant-admin&return_to=/portal/...``: the
                                     pending sign-in in its cookie, 303 to the provider
GET      ``auth/callback``           the provider's answer: a session, or a page saying why not
=======  ==========================  ==========================================================

**The pending sign-in** (:class:`~scim.portal.oidc.PendingLogin`: ``state``, ``nonce``, PKCE
verifier, ``return_to``) lives in its own sealed cookie (:data:`~scim.portal.sessions.PENDING_COOKIE`,
``Path=/portal/auth``, 10 minutes, ``SameSite=Lax`` so that the provider's redirect back carries
it); the callback clears it whatever happens, and a sign-in completes once
(:func:`scim.portal.oidc.complete`).

**Who the callback lets in**, in this order:

1. a sign-in started from a tenant admin's **setup-link session** (the pending sign-in's
   ``context`` names that session and its tenant, and the same session must still be live):
   the identity's Entra tenant id (``tid``) is recorded for the tenant
   (:meth:`~scim.tenants.TenantRegistry.set_entra_tenant`, audit ``entra.bound``) and the
   session goes on as ``entra:<oid>@<tid>``. No app role is asked for here: before this first
   sign-in the app does not exist in the customer's tenant, so nobody there can hold one;
2. an **operator** (:func:`~scim.portal.oidc.is_operator`): an operator's session, to
   ``/portal/ops`` (or ``return_to``);
3. a user of an Entra tenant **linked** to tenants of ours (``entra_tid``) who holds the tenant
   admin role (:func:`~scim.portal.oidc.is_tenant_admin`): a tenant admin's session for those
   tenants (a chooser at ``/portal/`` when there are several), audit ``session.started``;
4. anyone else: 403, a page saying which of the two they are not.

A :class:`~scim.portal.oidc.SignInError` is a page with its message (``str()``, safe to show) and
a log line with its ``code`` and ``detail`` (never a code, token or secret).

**HTTP**: the provider's discovery document, keys and token endpoint are reached with one
aiohttp session per process (:func:`http_session`, made on first use; :func:`close_http`
closes it: the runtime has no close hook for the portal, so it lives as long as the process,
and tests close it). The :class:`~scim.portal.oidc.OidcConfig` is made once per settings
object (:func:`oidc_config`: its managed identity credential caches its token).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, cast
from urllib.parse import urlencode

import aiohttp

from scim.portal import oidc
from scim.portal.context import Context, Refused
from scim.portal.http import PortalResponse, redirect
from scim.portal.oidc import PURPOSES, Identity, OidcConfig, PendingLogin, Purpose, SignInError
from scim.portal.pages import message, record_audit
from scim.portal.render import page
from scim.portal.sessions import MAX_TENANTS, OPERATOR, PENDING_COOKIE, TENANT_ADMIN, new_session
from scim.settings import Settings
from scim.tenants import ACTIVE, TenantDeleting, TenantNotFound, validate_entra_tenant_id

__all__ = [
    "LOGIN_PATH",
    "callback",
    "close_http",
    "home",
    "http_session",
    "login",
    "login_url",
    "oidc_config",
    "sign_in_page",
]

logger = logging.getLogger("scim.portal")

LOGIN_PATH = "/portal/auth/login"
OPS_HOME = "/portal/ops"
HOME = "/portal/"
_BIND = "bind"
_UNAVAILABLE_CODES = frozenset({"provider_unavailable", "credential_unavailable"})
NOT_CONFIGURED = (
    "Sign in with Microsoft is not set up for this portal. To open your tenant's page, use the setup link "
    "your provider gave you."
)
NOT_OPERATOR = (
    "Your account is not an operator of this deployment (operators hold the app role {role} in the "
    "deployment's own Microsoft Entra tenant)."
)
NOT_LINKED = (
    "Your organisation is not linked to a tenant of this service: ask your provider for a setup link, open it, "
    "and choose Sign in with Microsoft there once."
)
NO_ROLE = (
    "Your organisation is linked to a tenant of this service, but your account does not hold the app role "
    "{role} there. Ask your Microsoft Entra admin to assign it to you (Enterprise applications, this app, "
    "Users and groups)."
)


# ---- the provider's HTTP session and the configuration ---------------------------------------------

_http: aiohttp.ClientSession | None = None
_http_lock: asyncio.Lock | None = None
_config: tuple[Settings, OidcConfig | None] | None = None


async def http_session() -> aiohttp.ClientSession:
    """The process's aiohttp session for the provider (made on first use, again after :func:`close_http`)."""
    global _http, _http_lock
    if _http is not None and not _http.closed:
        return _http
    if _http_lock is None:
        _http_lock = asyncio.Lock()
    async with _http_lock:
        if _http is None or _http.closed:
            _http = aiohttp.ClientSession()
    return _http


async def close_http() -> None:
    """Close the process's session for the provider, if any."""
    global _http
    session, _http = _http, None
    if session is not None and not session.closed:
        await session.close()


def oidc_config(settings: Settings) -> OidcConfig | None:
    """The sign-in configuration of ``settings`` (None: sign-in is off), made once per settings object."""
    global _config
    if _config is None or _config[0] is not settings:
        _config = (settings, OidcConfig.from_settings(settings))
    return _config[1]


# ---- pages ---------------------------------------------------------------------------------------


def login_url(purpose: Purpose, return_to: str | None = None) -> str:
    """The address of the sign-in's start (a link, not a form: a form's redirect to the provider
    would break the CSP's ``form-action 'self'``)."""
    query = {"as": purpose, **({"return_to": return_to} if return_to else {})}
    return f"{LOGIN_PATH}?{urlencode(query)}"


def sign_in_page(ctx: Context, *, status: int = 200) -> PortalResponse:
    """``/portal/`` signed out: Sign in with Microsoft, or how to get a setup link when it is off."""
    enabled = oidc_config(ctx.settings) is not None
    values = ctx.values(
        enabled=enabled,
        tenant_admin_url=login_url("tenant-admin"),
        operator_url=login_url("operator"),
        not_configured=NOT_CONFIGURED,
    )
    return page(status, "signin.html", **values)


def home(ctx: Context) -> PortalResponse:
    """``GET /portal/``: signed out, the sign-in page; an operator goes to the operator view, a
    tenant admin to their tenant (or chooses one, holding several)."""
    session = ctx.session
    if session is None:
        return sign_in_page(ctx)
    if session.is_operator:
        return redirect(OPS_HOME)
    if len(session.own_tenants) > 1:
        return choose_tenant_page(ctx)
    return redirect(f"/portal/t/{session.tenant}")


def choose_tenant_page(ctx: Context) -> PortalResponse:
    """``/portal/`` for a tenant admin whose Entra tenant is linked to several tenants."""
    assert ctx.session is not None
    return page(200, "choose_tenant.html", **ctx.values(tenants=ctx.session.own_tenants))


def _failed(ctx: Context, err: SignInError) -> PortalResponse:
    logger.warning("portal sign-in failed: %s: %s", err.code, err.detail or "-")
    status = 503 if err.code in _UNAVAILABLE_CODES else 400
    return message(ctx, status, "Sign-in failed", str(err), back=HOME)


def _refused(ctx: Context, text: str) -> PortalResponse:
    return message(ctx, 403, "Not allowed in", text, back=HOME)


# ---- the routes ----------------------------------------------------------------------------------


def _required_config(ctx: Context) -> OidcConfig:
    config = oidc_config(ctx.settings)
    if config is None:
        raise Refused(404, "Sign-in not set up", NOT_CONFIGURED)
    return config


def _return_to(value: str | None) -> str:
    """``value`` if it is a page of the portal (a path under ``/portal/``), else ``/portal/``."""
    if not value or not value.startswith(HOME) or len(value) > oidc.MAX_RETURN_TO:
        return HOME
    if value.startswith(("//", "/\\")) or any(not 0x21 <= ord(ch) <= 0x7E or ch == "\\" for ch in value):
        return HOME
    return value


async def login(ctx: Context) -> PortalResponse:
    """``GET /portal/auth/login``: start a sign-in (the pending cookie, 303 to the provider)."""
    config = _required_config(ctx)
    purpose = ctx.request.query.get("as") or "tenant-admin"
    if purpose not in PURPOSES:
        raise Refused(400, "Unknown sign-in", "Sign in as an operator or as a tenant admin (as=operator|tenant-admin).")
    return_to = _return_to(ctx.request.query.get("return_to"))
    context = None
    session = ctx.session
    if purpose == "tenant-admin" and session is not None and session.by_setup_link and session.tenant:
        context = json.dumps({_BIND: session.tenant, "session": session.id}, separators=(",", ":"))
    try:
        url, pending = await oidc.begin(
            config, cast(Purpose, purpose), return_to, await http_session(), context=context
        )
    except SignInError as err:
        return _failed(ctx, err)
    assert ctx.cookies is not None
    response = redirect(url)
    response.other_cookies.append(ctx.cookies.pending_cookie(pending.to_json(), oidc.PENDING_MAX_AGE))
    return response


async def callback(ctx: Context) -> PortalResponse:
    """``GET /portal/auth/callback``: finish the sign-in (module docstring); the pending cookie is
    cleared whatever the outcome."""
    assert ctx.cookies is not None
    clear = ctx.cookies.clear_pending_cookie()
    try:
        response = await _complete(ctx)
    except SignInError as err:
        response = _failed(ctx, err)
    except Refused as refused:
        response = message(ctx, refused.status, refused.title, refused.text, back=HOME)
    response.other_cookies.append(clear)
    return response


async def _complete(ctx: Context) -> PortalResponse:
    config = _required_config(ctx)
    assert ctx.cookies is not None
    text = ctx.cookies.open_pending(ctx.request.cookie(PENDING_COOKIE))
    if text is None:
        raise SignInError(
            "invalid_pending", "The sign-in expired or did not start in this browser; please sign in again."
        )
    pending = PendingLogin.from_json(text)
    identity = await oidc.complete(config, pending, ctx.request.query, await http_session())
    bind = _binding(pending)
    if bind is not None:
        return await _bind_tenant(ctx, identity, pending, *bind)
    if oidc.is_operator(identity, config):
        return _operator(ctx, identity, pending)
    return await _tenant_admin(ctx, identity, config, pending)


def _binding(pending: PendingLogin) -> tuple[str, str] | None:
    """``(tenant, session id)`` of a sign-in started from a setup-link session, else None."""
    if pending.context is None:
        return None
    try:
        data: Any = json.loads(pending.context)
        tenant, session_id = data[_BIND], data["session"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(tenant, str) or not isinstance(session_id, str):
        return None
    return tenant, session_id


def _entra_actor(identity: Identity, tid: str) -> str:
    return f"entra:{identity.oid or identity.subject}@{tid}"


def _tid(identity: Identity) -> str | None:
    try:
        return validate_entra_tenant_id(identity.tid)
    except ValueError:
        return None


async def _bind_tenant(
    ctx: Context, identity: Identity, pending: PendingLogin, tenant: str, session_id: str
) -> PortalResponse:
    """Step 1: record the identity's ``tid`` for the setup-link session's tenant."""
    session = ctx.session
    if session is None or session.id != session_id or not session.by_setup_link or session.tenant != tenant:
        return _refused(
            ctx,
            "The setup link's session ended before the sign-in finished, or this browser holds another one: "
            "open a new setup link and choose Sign in with Microsoft again.",
        )
    tid = _tid(identity)
    if tid is None:
        return _refused(ctx, "Your account has no Microsoft Entra tenant: sign in with a work or school account.")
    tenants = ctx.services.tenants
    try:
        previous = (await tenants.info(tenant)).entra_tid
        await tenants.set_entra_tenant(tenant, tid)
    except (TenantNotFound, TenantDeleting):
        raise Refused(404, "No such tenant", "There is no such tenant (it may have been deleted).") from None
    via = session.actor
    ctx.session = new_session(TENANT_ADMIN, _entra_actor(identity, tid), ctx.now, tenant, session.id)
    detail = {"tid": tid, "via": via, **({"previous": previous} if previous and previous != tid else {})}
    await record_audit(ctx, tenant, "entra.bound", **detail)
    target = pending.return_to if pending.return_to.startswith(f"/portal/t/{tenant}") else f"/portal/t/{tenant}"
    return redirect(target)


def _operator(ctx: Context, identity: Identity, pending: PendingLogin) -> PortalResponse:
    """Step 2: an operator's session."""
    who = identity.email or identity.username or identity.name or identity.oid or identity.subject
    ctx.session = new_session(OPERATOR, f"operator:{who}"[:200], ctx.now)
    return redirect(pending.return_to if pending.return_to != HOME else OPS_HOME)


async def _tenant_admin(ctx: Context, identity: Identity, config: OidcConfig, pending: PendingLogin) -> PortalResponse:
    """Step 3 (a tenant admin of a linked Entra tenant) or 4 (refused)."""
    role_refusal = NOT_OPERATOR.format(role=config.operator_role or "Portal.Operator")
    tid = _tid(identity)
    linked = (
        [t.name for t in await ctx.services.tenants.list() if t.entra_tid == tid and t.state == ACTIVE]
        if tid is not None
        else []
    )
    if not linked:
        text = NOT_LINKED if pending.purpose == "tenant-admin" else f"{role_refusal} {NOT_LINKED}"
        return _refused(ctx, text)
    if not oidc.is_tenant_admin(identity, config):
        return _refused(ctx, NO_ROLE.format(role=config.tenant_admin_role or "Portal.TenantAdmin"))
    assert tid is not None
    linked = linked[:MAX_TENANTS]
    ctx.session = new_session(TENANT_ADMIN, _entra_actor(identity, tid), ctx.now, linked[0], tenants=tuple(linked))
    for name in linked:
        await record_audit(ctx, name, "session.started", session=ctx.session.id, method="entra")
    target = pending.return_to
    if any(target == f"/portal/t/{name}" or target.startswith(f"/portal/t/{name}/") for name in linked):
        return redirect(target)
    return redirect(f"/portal/t/{linked[0]}" if len(linked) == 1 else HOME)
