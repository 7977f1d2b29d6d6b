"""The portal's pages that show (GET): a setup link's page, the tenant page and the
regeneration's confirmation; a setup link's Continue (:func:`redeem_setup_link`); and
:func:`message`, the page of every refusal and error (the home page and sign-in:
:mod:`scim.portal.signin`; the operator's: :mod:`scim.portal.operator`).

**A setup link** is ``{SCIM_PUBLIC_BASE_URL}/portal/setup#{secret}``
(:meth:`~scim.settings.Settings.portal_setup_url`): its secret is in the fragment, which a
browser never sends, so that no server, proxy or request log (the Functions host records every
request's URL in Application Insights) ever sees it. It takes two requests.
``GET /portal/setup`` (:func:`setup_page`) shows a form with a "Setup link" field, which the
portal's script fills in from the fragment (and then takes the fragment out of the address bar:
``history.replaceState``), or the admin pastes the link into; the page cannot know the tenant
before the form is sent, and nothing is checked, used up or started. ``POST /portal/setup``, the
Continue button (:func:`redeem_setup`), redeems the link in its ``link`` field. Mail scanners
(Microsoft Defender's Safe Links and the like) open the links of a message before its recipient
does: a GET that redeemed would hand them the link. So that no other site can post a link of its
own from a victim's browser (signing the victim into the attacker's tenant), the page sets a
sealed cookie (:data:`~scim.portal.sessions.SETUP_COOKIE`: ``SameSite=Lax``, never sent with
another site's POST; 10 minutes)
whose token the form carries too; the POST needs both (compared in constant time) and is refused
when its ``Origin`` is another site's or its ``Sec-Fetch-Site`` is not ``same-origin``: 403,
the link still open.

Links of the old form, ``/portal/setup/{secret}`` (handed out before the fragment form; they
keep working until they expire), still work as they did: ``GET`` (:func:`setup_link_page`)
checks the link and names its tenant, ``POST`` of the same URL (:func:`redeem_setup_link`)
redeems it, with the same cookie bound to the link (``Path`` its URL) and the same checks.

The tenant page reads, in parallel: the tenant (digest settings), its Secret Tokens, OAuth
clients and default token lifetime (:class:`~scim.tenants.TenantRegistry`), a page of its
provisioning log under the admin's filters and the 7-day activity (:mod:`scim.portal.logs`), the
requests refused for their token in the last 24 hours, and its latest audit entries. Never a
secret: a token or client secret is shown once, by :mod:`scim.portal.actions`, when it is made.
An operator sees more on it (:func:`scim.portal.operator.operator_sections`: setup links,
webhooks, recent change events); a setup link's session is offered Sign in with Microsoft, which
links the customer's Entra tenant to this tenant (:mod:`scim.portal.signin`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from scim.credentials import MAX_ACTIVE_TOKENS, MAX_OAUTH_CLIENTS, OAuthClient, SecretToken, format_duration
from scim.credentials import format_epoch as _epoch
from scim.portal.audit import AuditEntry
from scim.portal.chart import QUARANTINE_RATIO, WARN_RATIO, Activity, draw
from scim.portal.context import Context, Refused, require_tenant
from scim.portal.http import PortalResponse, redirect
from scim.portal.links import LINK_PREFIX
from scim.portal.logs import OPERATIONS, STATUSES, LogFilter, read_activity, read_logs
from scim.portal.render import page
from scim.portal.sessions import SETUP_COOKIE, SETUP_MAX_AGE, TENANT_ADMIN, new_session, new_session_id
from scim.tenants import ACTIVE, hash_token, token_matches

if TYPE_CHECKING:
    from scim.settings import Settings

__all__ = [
    "DEFAULT_OVERLAP",
    "OVERLAPS",
    "confirm_regenerate",
    "message",
    "own_origin",
    "parse_setup_link",
    "record_audit",
    "redeem_setup",
    "redeem_setup_link",
    "setup_link_page",
    "setup_page",
    "tenant_page",
]

logger = logging.getLogger("scim.portal")

OVERLAPS = (("1h", "1 hour"), ("24h", "24 hours"), ("72h", "3 days"), ("7d", "7 days"))
DEFAULT_OVERLAP = "24h"
AUDIT_SHOWN = 20
FLASHES = {
    "token-revoked": "The token was revoked: it fails from its next request on.",
    "client-revoked": "The OAuth client was revoked: it and its access tokens fail from their next request on.",
    "notify-saved": "Notification settings saved.",
    "links-revoked": "Every open setup link of this tenant was revoked: they fail from now on.",
}
"""Messages after a change (``?done=``): fixed texts, so a link cannot make the page say anything else."""
LINK_REFUSED = "This setup link is not valid: it was used, expired or revoked; ask your provider for a new one."
SETUP_TOKEN_FIELD = "setup_token"
"""The setup link page's form field that must match its cookie."""
SETUP_LINK_FIELD = "link"
"""The setup page's field that holds the link (its URL or its secret)."""
_LINK_IN_FIELD = re.compile(rf"(?:\S*(?:#|/portal/setup/))?({re.escape(LINK_PREFIX)}[A-Za-z0-9_-]{{43}})")
"""What the link field may hold: the secret, or a URL that ends with it (``…/portal/setup#``
the fragment form, ``…/portal/setup/`` the old form)."""
OPEN_AGAIN = (
    f"This form was not sent from the setup link's page in this browser, or that page is more than "
    f"{SETUP_MAX_AGE // 60} minutes old. Open the setup link again and click Continue: the link has not been used."
)


def message(
    ctx: Context, status: int, title: str, text: str, *, tone: str = "error", back: str | None = None
) -> PortalResponse:
    """A page that says one thing (errors, refusals, a link that does not open, signed out)."""
    back_label = "Back to the tenant page" if back and back.startswith("/portal/t/") else "Back"
    return page(
        status, "message.html", **ctx.values(title=title, text=text, tone=tone, back=back, back_label=back_label)
    )


async def record_audit(ctx: Context, tenant: str, action: str, **detail: str) -> None:
    """Record an audit entry of the session's actor. The action has happened already: a failure
    to record it is logged, not shown (the admin must still see, e.g., the token just made)."""
    actor = ctx.session.actor if ctx.session is not None else "portal"
    try:
        await ctx.services.audit.record(AuditEntry(tenant=tenant, actor=actor, action=action, detail=detail))
    except Exception:  # reported in the log; the change stands
        logger.exception("could not record the audit entry %s", action)


def parse_setup_link(text: str) -> str | None:
    """The secret of the setup link pasted (or filled in) in the setup page's field: the bare
    ``scimsl_…``, or a URL ending in ``#scimsl_…`` or ``/portal/setup/scimsl_…``; else None."""
    found = _LINK_IN_FIELD.fullmatch(text.strip())
    return found.group(1) if found else None


async def setup_page(ctx: Context) -> PortalResponse:
    """``GET /portal/setup``: the page with the "Setup link" field (the script fills it in from
    the URL's fragment, which never reaches the server), Continue and the cookie its token is
    checked against. Nothing is read, used up or started: which tenant the link opens is known
    only when the form is sent."""
    assert ctx.cookies is not None
    shown = _shown(ctx.cookies.open_setup(ctx.request.cookie(SETUP_COOKIE)))
    now = int(ctx.now.timestamp())
    # A still-valid cookie of an earlier setup page in this browser keeps its token (sealed again,
    # with this page's time): an admin who opens two links in two tabs can Continue in both, the
    # second page does not make the first one's token stale, also when both links were clicked
    # in a webmail (the cookie is SameSite=Lax: it comes with a top-level GET from another site).
    if shown is not None and "link" not in shown and now - shown["shown"] < SETUP_MAX_AGE:
        token = shown["token"]
    else:
        token = secrets.token_urlsafe(32)
    values = ctx.values(action="/portal/setup", setup_token=token, link_field=SETUP_LINK_FIELD)
    response = page(200, "setup_open.html", **values)
    sealed = json.dumps({"token": token, "shown": now}, separators=(",", ":"))
    response.other_cookies.append(ctx.cookies.setup_cookie(sealed))
    return response


async def redeem_setup(ctx: Context) -> PortalResponse:
    """``POST /portal/setup`` (Continue): from the setup page in this browser (else 403, nothing
    used), the link in its ``link`` field, if it opens, starts a tenant admin's session (cookie)
    and goes to the tenant's page; anything else gets one page, whatever the cause (410)."""
    _require_setup_page(ctx, None)
    presented = ctx.request.form().get(SETUP_LINK_FIELD) or [""]
    secret = parse_setup_link(presented[0])
    if secret is None:
        return message(ctx, 410, "Setup link not valid", LINK_REFUSED)
    return await _redeem(ctx, secret)


async def setup_link_page(ctx: Context, secret: str) -> PortalResponse:
    """``GET /portal/setup/{secret}`` (a link of the old form): a link that would open gets a
    page naming its tenant, with Continue (a form posting to the same URL) and the cookie its
    token is checked against (bound to the link); any other gets one page, whatever the cause
    (410). Nothing is used up and no session starts."""
    link = await ctx.services.portal_links.check(secret, now=ctx.now)
    if link is None or await ctx.services.tenants.state(link.tenant) != ACTIVE:
        return message(ctx, 410, "Setup link not valid", LINK_REFUSED)
    token = secrets.token_urlsafe(32)
    shown = {"link": hash_token(secret), "token": token, "shown": int(ctx.now.timestamp())}
    values = ctx.values(
        link_tenant=link.tenant,
        action=f"/portal/setup/{secret}",
        setup_token=token,
        expires=link.expires.strftime("%Y-%m-%d %H:%M"),
    )
    response = page(200, "setup_continue.html", **values)
    assert ctx.cookies is not None
    response.other_cookies.append(ctx.cookies.setup_cookie(json.dumps(shown, separators=(",", ":")), secret))
    return response


async def redeem_setup_link(ctx: Context, secret: str) -> PortalResponse:
    """``POST /portal/setup/{secret}`` (Continue on the page of a link of the old form): from the
    link's page in this browser (else 403, nothing used), as :func:`redeem_setup`."""
    _require_setup_page(ctx, secret)
    return await _redeem(ctx, secret)


async def _redeem(ctx: Context, secret: str) -> PortalResponse:
    """Redeem the link ``secret``: a tenant admin's session of its tenant (the audit's
    ``session.started``) and 303 to the tenant page; a link that does not open, or whose tenant is
    not active, 410 (the same page whatever the cause)."""
    services = ctx.services
    session_id = new_session_id()
    link = await services.portal_links.redeem(secret, used_by=f"portal-session:{session_id}", now=ctx.now)
    if link is None or await services.tenants.state(link.tenant) != ACTIVE:
        return message(ctx, 410, "Setup link not valid", LINK_REFUSED)
    ctx.session = new_session(TENANT_ADMIN, f"setup-link:{link.id}", ctx.now, link.tenant, session_id)
    await record_audit(ctx, link.tenant, "session.started", session=session_id, link=link.id)
    return redirect(f"/portal/t/{link.tenant}")


def own_origin(settings: Settings) -> str:
    """The portal's origin as a browser sends it in ``Origin``: of ``SCIM_PUBLIC_BASE_URL``."""
    parts = urlsplit(settings.public_base_url)
    scheme, host = parts.scheme.lower(), parts.netloc.rpartition("@")[2].lower()
    default_port = {"http": ":80", "https": ":443"}.get(scheme, "")
    if default_port and host.endswith(default_port):
        host = host.removesuffix(default_port)
    return f"{scheme}://{host}"


def _require_setup_page(ctx: Context, secret: str | None) -> None:
    """A Continue must come from the setup page in this browser, within :data:`SETUP_MAX_AGE`:
    its cookie and its form's token (for a link of the old form, ``secret``: its own page's, the
    cookie bound to it); not from another site. Else 403.

    ``Origin: null`` counts as no ``Origin``: browsers send it for the portal's own forms, whose
    pages send ``Referrer-Policy: no-referrer``; ``Sec-Fetch-Site`` tells those apart."""
    headers = ctx.request.headers
    origin, site = headers.get("origin"), headers.get("sec-fetch-site")
    foreign = origin not in (None, "null") and origin.strip().lower() != own_origin(ctx.settings)
    if foreign or (site is not None and site != "same-origin"):
        raise Refused(403, "Open the setup link again", OPEN_AGAIN)
    assert ctx.cookies is not None
    shown = _shown(ctx.cookies.open_setup(ctx.request.cookie(SETUP_COOKIE)))
    presented = ctx.request.form().get(SETUP_TOKEN_FIELD) or [""]
    if (
        shown is None
        or int(ctx.now.timestamp()) - shown["shown"] >= SETUP_MAX_AGE  # no lower bound: clocks of instances differ
        or (secret is not None and not token_matches(secret, shown.get("link") or ""))
        or not hmac.compare_digest(presented[0].encode("utf-8"), shown["token"].encode("utf-8"))
    ):
        raise Refused(403, "Open the setup link again", OPEN_AGAIN)


def _shown(text: str | None) -> dict[str, Any] | None:
    """What a setup page sealed in its cookie (``token``, ``shown``; the page of a link of the
    old form ``link`` too), or None."""
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("link", ""), str)
        or not isinstance(data.get("token"), str)
        or not isinstance(data.get("shown"), int)
    ):
        return None
    return data


async def confirm_regenerate(ctx: Context, tenant: str) -> PortalResponse:
    await require_tenant(ctx, tenant)
    return page(200, "confirm_regenerate.html", **ctx.values(tenant=tenant))


def _time(epoch: int | None, default: str = "never") -> str:
    return (_epoch(epoch) or default).replace("T", " ").replace("Z", "")


def _token_row(token: SecretToken) -> dict[str, str]:
    if token.retires is not None and (token.expires is None or token.retires <= token.expires):
        expires = f"{_time(token.retires)} (end of rotation overlap)"
    else:
        expires = _time(token.expires)
    return {"id": token.id, "created": _time(token.created), "expires": expires, "last_used": _time(token.last_used)}


def _client_row(client: OAuthClient) -> dict[str, str]:
    return {"id": client.id, "created": _time(client.created), "last_issued": _time(client.last_issued)}


def _audit_row(entry: AuditEntry) -> dict[str, str]:
    details = ", ".join(f"{key}: {value}" for key, value in entry.detail.items())
    return {
        "time": entry.time.replace("T", " ").replace("Z", ""),
        "action": entry.action,
        "actor": entry.actor,
        "details": details,
    }


def _ratio(data: Activity) -> dict[str, str]:
    """The failure ratio of the last 24 hours against Entra's quarantine threshold."""
    threshold = f"{QUARANTINE_RATIO * 100:g} %"
    ratio = data.day_ratio
    if ratio is None:
        return {
            "tone": "info",
            "headline": "No requests in the last 24 hours.",
            "detail": f"Entra quarantines a provisioning job when more than {threshold} of its requests fail.",
        }
    share = f"{ratio * 100:.1f} %"
    counts = f"{data.day_failures:,} of {data.day_requests:,} requests failed in the last 24 hours ({share})."
    if data.level == "quarantine":
        return {
            "tone": "error",
            "headline": f"Failure ratio {share}: above Entra's quarantine threshold of {threshold}.",
            "detail": f"{counts} Entra quarantines a job above {threshold}: look at the failures below and fix their cause.",
        }
    if data.level == "warning":
        return {
            "tone": "warning",
            "headline": f"Failure ratio {share}: near Entra's quarantine threshold of {threshold}.",
            "detail": f"{counts} From {WARN_RATIO * 100:g} % on this page warns; above {threshold} Entra quarantines the job.",
        }
    return {
        "tone": "success",
        "headline": f"Failure ratio {share}, well below Entra's quarantine threshold of {threshold}.",
        "detail": counts,
    }


def _logs_url(tenant: str, query: Mapping[str, str]) -> str:
    return f"/portal/t/{tenant}" + (f"?{urlencode(query)}" if query else "") + "#logs"


async def tenant_page(
    ctx: Context,
    tenant: str,
    *,
    status: int = 200,
    errors: Mapping[str, str] | None = None,
    notify_text: str | None = None,
    notify_enabled: bool | None = None,
) -> PortalResponse:
    """``GET /portal/t/{tenant}`` (and the same page with a form's errors, 400)."""
    session = await require_tenant(ctx, tenant)
    services, now = ctx.services, ctx.now
    filter_ = LogFilter.from_query(ctx.request.query)
    tenants, log = services.tenants, services.log
    credentials = asyncio.gather(
        tenants.info(tenant), tenants.list_tokens(tenant), tenants.list_clients(tenant), tenants.token_lifetime(tenant)
    )
    readings = asyncio.gather(
        read_logs(log, tenant, filter_),
        read_activity(log, tenant, now),
        log.unauthenticated(tenant, since=now - timedelta(hours=24), until=now),
        services.audit.page(tenant, limit=AUDIT_SHOWN),
    )
    operator = None
    if session.is_operator:
        from scim.portal.operator import operator_sections  # it imports this module

        (info, tokens, clients, lifetime), (logs, activity, refused, audit), operator = await asyncio.gather(
            credentials, readings, operator_sections(ctx, tenant)
        )
    else:
        (info, tokens, clients, lifetime), (logs, activity, refused, audit) = await asyncio.gather(
            credentials, readings
        )
    lifetime_note = (
        f"New tokens expire {format_duration(lifetime)} after they are made."
        if lifetime
        else "New tokens do not expire."
    )
    values: dict[str, Any] = ctx.values(
        tenant=tenant,
        tenant_url=ctx.settings.tenant_url(tenant),
        token_endpoint=ctx.settings.token_endpoint(tenant),
        flash=FLASHES.get(ctx.request.query.get("done", "")),
        errors=dict(errors or {}),
        tokens=[_token_row(t) for t in tokens],
        clients=[_client_row(c) for c in clients],
        max_tokens=MAX_ACTIVE_TOKENS,
        max_clients=MAX_OAUTH_CLIENTS,
        lifetime_note=lifetime_note,
        overlaps=OVERLAPS,
        default_overlap=DEFAULT_OVERLAP,
        notify_text=notify_text if notify_text is not None else "\n".join(info.notify),
        notify_enabled=info.notify_enabled if notify_enabled is None else notify_enabled,
        activity=activity,
        chart=draw(activity),
        ratio=_ratio(activity),
        refused=f"{refused:,}",
        logs=logs,
        logs_first_url=_logs_url(tenant, filter_.query()),
        logs_next_url=_logs_url(tenant, filter_.query(logs.cursor)),
        operations=OPERATIONS,
        statuses=STATUSES,
        audit=[_audit_row(e) for e in audit.entries],
        entra_tid=info.entra_tid,
        sign_in_enabled=ctx.settings.portal_sign_in,
        link_sign_in_url="/portal/auth/login?" + urlencode({"as": "tenant-admin", "return_to": f"/portal/t/{tenant}"}),
        operator=operator,
    )
    return page(status, "tenant.html", **values)


def not_found(ctx: Context) -> Refused:
    return Refused(404, "Page not found", "There is no such page in the portal.")
