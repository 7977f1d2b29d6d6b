"""The portal's routes, and the one place where its requests become answers.

=======  =====================================  ===============================================
method   path (under ``/portal/``)               what
=======  =====================================  ===============================================
GET      (empty)                                 sign in; signed in: a tenant admin goes to their
                                                 tenant's page (or chooses), an operator to ``ops``
GET      ``static/{name}``                       the stylesheet and the script (long caching)
GET      ``setup``                               a setup link's page (the link is
                                                 ``setup#{secret}``: the secret, in the fragment,
                                                 never reaches the server; the script puts it
                                                 into the form): Continue, nothing is used up
POST     ``setup``                               Continue (the page's token, ``link``): redeem
                                                 the link, session, 303 to the tenant
GET      ``setup/{secret}``                      a link of the old form: its tenant, Continue
                                                 (the link is only checked)
POST     ``setup/{secret}``                      its Continue (the page's token): as ``setup``
GET      ``auth/login``                          Sign in with Microsoft (:mod:`~scim.portal.signin`:
                                                 ``as``, ``return_to``): 303 to the provider
GET      ``auth/callback``                       the provider's answer: a session, or why not
POST     ``logout``                              end the session (clears the cookie)
GET      ``ops``                                 the operator view (:mod:`~scim.portal.operator`)
POST     ``ops/create-tenant``                   a tenant: its Tenant URL and token, shown once
POST     ``ops/t/{tenant}/setup-link``           a setup link (``expires``), shown once
POST     ``ops/t/{tenant}/revoke-links``         every open setup link fails
GET      ``ops/t/{tenant}/delete``               the delete's confirmation (type the name)
POST     ``ops/t/{tenant}/delete``               delete the tenant (``confirm_name``)
POST     ``ops/t/{tenant}/webhook-replay``       deliver an endpoint's events again (``since``)
GET      ``t/{tenant}``                          the tenant page (filters: ``failures``,
                                                 ``operation``, ``status``, ``q``, ``cursor``)
GET      ``t/{tenant}/token/regenerate``         the confirmation of a regeneration
POST     ``t/{tenant}/token/regenerate``         a new token, every other fails at once
POST     ``t/{tenant}/token/rotate``             a new token, the others keep the overlap
POST     ``t/{tenant}/token/revoke``             one token fails at once (``token_id``)
POST     ``t/{tenant}/oauth-client/create``      an OAuth client (secret shown once)
POST     ``t/{tenant}/oauth-client/revoke``      ``client_id`` and its access tokens fail
POST     ``t/{tenant}/test-connection``          Entra's test request with ``token``
POST     ``t/{tenant}/notifications``            ``notify`` addresses, ``enabled``
POST     ``t/{tenant}/digest``                   send the failure digest now
=======  =====================================  ===============================================

**Authorization**, before anything else is read: a tenant page needs a live session that may
open the tenant in the URL (a tenant admin's own; an operator's any: :func:`require_tenant`),
else 403; ``ops`` and everything under it an operator's session (:func:`require_operator`),
else 403; a POST needs the session's CSRF token too, else 403 (a setup link's Continue, which
starts a session, needs its page's token and cookie instead: :func:`pages.redeem_setup`);
state changes only by POST (but the sign-in's two GETs, which set cookies: the OpenID Connect
``state`` guards them).
A live session's cookie is sealed again on every answer (the idle timeout starts over); a
cookie that does not open is cleared.

**Errors** (:func:`handle`): refusals are pages with their status (400, 403, 404, 405, 410);
storage that fails is a 503 page; anything else is logged with its traceback and answered
with a plain 500 page, never a stack trace. Every answer carries the security headers
(:mod:`scim.portal.http`). Log lines name the route, never a tenant, a token or a link.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from scim.portal import actions, operator, pages, signin
from scim.portal.context import (
    Context,
    Portal,
    Refused,
    require_csrf,
    require_operator,
    require_session,
    require_tenant,
)
from scim.portal.http import PortalRequest, PortalResponse
from scim.portal.render import static_file
from scim.portal.sessions import COOKIE_NAME, SessionCookies
from scim.store.base import StoreUnavailable

__all__ = ["handle", "route_kind", "use_clock"]

logger = logging.getLogger("scim.portal")

Clock = Callable[[], datetime]
Action = Callable[[Context, str, dict[str, list[str]]], Awaitable[PortalResponse]]
RETRY_AFTER = 5

_ACTIONS: dict[tuple[str, ...], Action] = {
    ("token", "regenerate"): actions.regenerate_token,
    ("token", "rotate"): actions.rotate_token,
    ("token", "revoke"): actions.revoke_token,
    ("oauth-client", "create"): actions.create_client,
    ("oauth-client", "revoke"): actions.revoke_client,
    ("test-connection",): actions.test_connection,
    ("notifications",): actions.save_notifications,
    ("digest",): actions.send_test_digest,
}
"""The tenant's POST routes (after ``t/{tenant}/``)."""
_VIEWS = {(), ("token", "regenerate")}
"""The tenant's GET routes."""
OpsAction = Callable[[Context, str, dict[str, list[str]]], Awaitable[PortalResponse]]
_OPS_ACTIONS: dict[str, OpsAction] = {
    "setup-link": operator.create_link,
    "revoke-links": operator.revoke_links,
    "delete": operator.delete_tenant,
    "webhook-replay": operator.replay_webhook,
}
"""The operator's POST routes of a tenant (``ops/t/{tenant}/NAME``)."""
_LITERAL_ROUTES = {("logout",), ("auth", "login"), ("auth", "callback")}


def _system_clock() -> datetime:
    return datetime.now(UTC)


_clock: Clock = _system_clock


def use_clock(clock: Clock | None) -> None:
    """Replace the portal's clock (tests: sessions' timeouts, links' expiry); None: the system's."""
    global _clock
    _clock = clock or _system_clock


def route_kind(path: str) -> str:
    """The route of ``path`` for log lines: no tenant, no secret, no file name."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "/portal/"
    if parts[0] == "t" and len(parts) >= 2:
        rest = tuple(parts[2:])
        known = rest in _ACTIONS or rest in _VIEWS
        return "/portal/t/{tenant}" + ("".join(f"/{p}" for p in rest) if known else ("/{other}" if rest else ""))
    if parts == ["setup"]:
        return "/portal/setup"
    if parts[0] in ("setup", "static") and len(parts) == 2:
        return f"/portal/{parts[0]}/{{{'secret' if parts[0] == 'setup' else 'name'}}}"
    if parts[0] == "ops":
        if len(parts) == 4 and parts[1] == "t" and parts[3] in _OPS_ACTIONS:
            return f"/portal/ops/t/{{tenant}}/{parts[3]}"
        return "/portal/ops" + ("/create-tenant" if parts[1:] == ["create-tenant"] else "/{other}" if parts[1:] else "")
    return "/portal/" + "/".join(parts) if tuple(parts) in _LITERAL_ROUTES else "/portal/{other}"


async def handle(request: PortalRequest, portal: Portal) -> PortalResponse:
    """Answer one portal request (see the module docstring)."""
    started = time.perf_counter()
    ctx = Context(request, portal, _clock())
    try:
        response = await _dispatch(ctx)
    except Refused as refused:
        response = pages.message(ctx, refused.status, refused.title, refused.text)
        response.headers.update(refused.headers)
    except StoreUnavailable:
        response = pages.message(
            ctx, 503, "Temporarily unavailable", "The service could not reach its storage. Try again in a minute."
        )
        response.headers["Retry-After"] = str(RETRY_AFTER)
    except Exception:
        logger.exception("Unhandled error in %s %s", request.method, route_kind(request.path))
        response = pages.message(ctx, 500, "Something went wrong", "An internal error occurred; it has been logged.")
    if response.set_cookie is None and ctx.cookies is not None:
        if ctx.session is not None:
            response.set_cookie = ctx.cookies.set_cookie(ctx.session.seen(int(ctx.now.timestamp())), ctx.now)
        elif ctx.cookie_refused:
            response.set_cookie = ctx.cookies.clear_cookie()
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.info("%s %s -> %d in %.1f ms", request.method, route_kind(request.path), response.status, elapsed_ms)
    return response


async def _open_session(ctx: Context) -> None:
    """Read the session cookie, if any (the key is read only then, and for setup links)."""
    services = ctx.services
    key = await services.portal_secrets.session_key()
    ctx.cookies = SessionCookies.for_base_url(key, services.settings.public_base_url)
    presented = ctx.request.cookie(COOKIE_NAME)
    ctx.session = ctx.cookies.open(presented, ctx.now)
    ctx.cookie_refused = bool(presented) and ctx.session is None


def _method(ctx: Context, allowed: str) -> None:
    if ctx.request.method != allowed:
        raise Refused(
            405,
            "Method not allowed",
            "Use the page's buttons and forms." if allowed == "POST" else "This address only shows a page.",
            {"Allow": allowed},
        )


async def _dispatch(ctx: Context) -> PortalResponse:
    parts = [p for p in ctx.request.path.split("/") if p]
    if len(parts) == 2 and parts[0] == "static":
        _method(ctx, "GET")
        found = static_file(parts[1])
        if found is None:
            raise pages.not_found(ctx)
        return found
    await _open_session(ctx)
    if not parts:
        _method(ctx, "GET")
        return signin.home(ctx)
    if parts[0] == "setup" and len(parts) <= 2:  # setup (the fragment form), setup/{secret} (the old form)
        secret = parts[1] if len(parts) == 2 else None
        if ctx.request.method == "POST":
            return await (pages.redeem_setup(ctx) if secret is None else pages.redeem_setup_link(ctx, secret))
        if ctx.request.method != "GET":
            raise Refused(405, "Method not allowed", "Open the link, then click Continue.", {"Allow": "GET, POST"})
        return await (pages.setup_page(ctx) if secret is None else pages.setup_link_page(ctx, secret))
    if parts == ["logout"]:
        _method(ctx, "POST")
        return _logout(ctx)
    if parts == ["auth", "login"]:
        _method(ctx, "GET")
        return await signin.login(ctx)
    if parts == ["auth", "callback"]:
        _method(ctx, "GET")
        return await signin.callback(ctx)
    if parts[0] == "ops":
        return await _ops_route(ctx, tuple(parts[1:]))
    if len(parts) >= 2 and parts[0] == "t":
        return await _tenant_route(ctx, parts[1], tuple(parts[2:]))
    raise pages.not_found(ctx)


async def _ops_route(ctx: Context, rest: tuple[str, ...]) -> PortalResponse:
    """``ops`` and under it: an operator's session first (403 for anyone else), then the route."""
    if rest == ():
        _method(ctx, "GET")
        require_operator(ctx)
        return await operator.ops_page(ctx)
    if rest == ("create-tenant",):
        _method(ctx, "POST")
        form = _operator_form(ctx)
        return await operator.create_tenant(ctx, form)
    if len(rest) == 3 and rest[0] == "t" and rest[2] in _OPS_ACTIONS:
        tenant, name = rest[1], rest[2]
        if name == "delete" and ctx.request.method == "GET":
            require_operator(ctx)
            return await operator.confirm_delete(ctx, tenant)
        _method(ctx, "POST")
        form = _operator_form(ctx)
        return await _OPS_ACTIONS[name](ctx, tenant, form)
    raise pages.not_found(ctx)


def _operator_form(ctx: Context) -> dict[str, list[str]]:
    """An operator's POST: the session, then its CSRF token (403 either way), then its form."""
    require_operator(ctx)
    form = ctx.request.form()
    require_csrf(ctx, form)
    return form


async def _tenant_route(ctx: Context, tenant: str, rest: tuple[str, ...]) -> PortalResponse:
    action = _ACTIONS.get(rest)
    if action is None and rest not in _VIEWS:
        raise pages.not_found(ctx)
    if ctx.request.method == "GET" and rest in _VIEWS:
        if rest == ("token", "regenerate"):
            return await pages.confirm_regenerate(ctx, tenant)
        return await pages.tenant_page(ctx, tenant)
    if action is None:
        _method(ctx, "GET")
        raise pages.not_found(ctx)
    _method(ctx, "POST")
    await require_tenant(ctx, tenant)
    form = ctx.request.form()
    require_csrf(ctx, form)
    return await action(ctx, tenant, form)


def _logout(ctx: Context) -> PortalResponse:
    require_session(ctx)
    require_csrf(ctx, ctx.request.form())
    assert ctx.cookies is not None
    ctx.session = None
    response = pages.message(ctx, 200, "Signed out", "You are signed out.", tone="info")
    response.set_cookie = ctx.cookies.clear_cookie()
    return response
