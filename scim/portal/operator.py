"""The operator view: every tenant, creating and deleting them, setup links, webhooks (issue 14).

=======  ====================================  ================================================
method   path (under ``/portal/``)              what
=======  ====================================  ================================================
GET      ``ops``                                the tenants, with their status; Create tenant
POST     ``ops/create-tenant``                  a tenant (``name``, ``notify``, ``expires``):
                                                its Tenant URL and Secret Token, shown once
POST     ``ops/t/{tenant}/setup-link``          a setup link (``expires``), its URL shown once
POST     ``ops/t/{tenant}/revoke-links``        every open setup link of the tenant fails
GET      ``ops/t/{tenant}/delete``              the delete's confirmation (type the name)
POST     ``ops/t/{tenant}/delete``              delete the tenant (``confirm_name``), resumable
POST     ``ops/t/{tenant}/webhook-replay``      deliver again an endpoint's events ``since``
=======  ====================================  ================================================

Every route needs an operator's session (:func:`~scim.portal.context.require_operator`), every
POST its CSRF token too (:mod:`scim.portal.web` checks both first). On the tenant page an
operator sees besides (:func:`operator_sections`): the tenant's setup links, the webhook
endpoints serving it (state, backlog in this tenant, last error) with **Replay**, and its change
events of the last hour.

**The tenants' status**, cheap on purpose: per active tenant two reads, at most
:data:`STATUS_CONCURRENCY` tenants at a time: its credentials (one point read: the soonest
Secret Token expiry) and the newest entry of its provisioning log (one query of one entry: the
last request). The failure ratio of the last 24 hours, which needs the day's entries counted,
is on each tenant's page (Activity), not here.

Creating and deleting go through the portal's :class:`~scim.portal.context.TenantLifecycle`
(the admin CLI's own functions, :mod:`scim.admin.core`, on the app's runtime): a name whose
data an unfinished delete left is refused; a delete revokes the token first, then purges, and
when interrupted says so and finishes when run again. Each action is in the tenant's audit trail
(``tenant.created``, ``link.created``, ``links.revoked``, ``webhook.replayed``), but a delete,
whose trail goes with the tenant: it is logged (the operator's session id, not the tenant).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Mapping
from datetime import datetime, timedelta
from typing import Any

from scim.admin.webhooks import ReplayRefused, check_replay_time, replay_position
from scim.core.feed import FeedError, encode_cursor, read_page
from scim.credentials import format_epoch, parse_duration
from scim.portal.chart import Activity, Hour, hour_starts
from scim.portal.context import Context, Refused, TenantDeleteInterrupted, require_operator, require_tenant
from scim.portal.http import PortalResponse, redirect
from scim.portal.links import SetupLink, check_expiry
from scim.portal.pages import record_audit
from scim.portal.render import page
from scim.provisioning_log import format_time
from scim.tenants import (
    ACTIVE,
    DELETING,
    InvalidTenantName,
    TenantDeleting,
    TenantExists,
    TenantInfo,
    TenantNotFound,
    validate_tenant_name,
)
from scim.webhooks import WebhookEndpoint, WebhookNotFound
from scim.webhooks.backlog import tenant_backlog
from scim.webhooks.delivery import initial_position

__all__ = [
    "LINK_EXPIRIES",
    "TOKEN_EXPIRIES",
    "confirm_delete",
    "create_link",
    "create_tenant",
    "delete_tenant",
    "operator_sections",
    "ops_page",
    "replay_webhook",
    "revoke_links",
]

logger = logging.getLogger("scim.portal")

Form = dict[str, list[str]]

STATUS_CONCURRENCY = 16
TOKEN_EXPIRIES = (("never", "Never"), ("30d", "30 days"), ("90d", "90 days"), ("180d", "180 days"), ("365d", "1 year"))
LINK_EXPIRIES = (("1h", "1 hour"), ("24h", "24 hours"), ("7d", "7 days"), ("30d", "30 days"))
DEFAULT_LINK_EXPIRY = "7d"
REPLAY_SINCE = (("1h", "1 hour ago"), ("24h", "24 hours ago"), ("7d", "7 days ago"))
EXPIRY_WARNING = timedelta(days=14)
EVENTS_WINDOW = timedelta(hours=1)
EVENTS_SHOWN = 25
BACKLOG_READS = 2
"""Feed reads per endpoint for its backlog on the tenant page (then shown as a lower bound, ``2000+``)."""
OPS_FLASHES = {
    "deleted": "The tenant and all its data were deleted.",
    "delete-finished": "The unfinished delete was finished: the tenant and all its data are gone.",
}
NO_LIFECYCLE = "Creating and deleting tenants is not available here; use python -m scim.admin tenant create|delete."


def _field(form: Form, name: str) -> str:
    values = form.get(name)
    return values[0].strip() if values else ""


def _time(text: str | None, default: str = "never") -> str:
    """An RFC 3339 UTC time as the tables show it, to the second (``2026-12-02 16:45:00``)."""
    if not text:
        return default
    shown = text.replace("T", " ").replace("Z", "")
    return shown.split(".", 1)[0]


# ---- the tenants --------------------------------------------------------------------------------


async def _status(ctx: Context, info: TenantInfo, gate: asyncio.Semaphore) -> dict[str, Any]:
    """One row of the tenants table (an active tenant: its record, its newest log entry and one
    range query of its hourly tallies of the last 24 hours, in parallel)."""
    row: dict[str, Any] = {
        "name": info.name,
        "state": info.state,
        "deleting": info.deleting,
        "created": _time(info.created),
        "digests": (", ".join(info.notify) if info.notify_enabled and info.notify else "off"),
        "entra_tid": info.entra_tid or "",
        "expiry": "",
        "expiry_tone": "",
        "last_request": "",
        "ratio": "",
        "ratio_tone": "",
    }
    if info.state != ACTIVE:
        return row
    day = hour_starts(ctx.now)[-24:]
    async with gate:
        try:
            tokens, newest, hours = await asyncio.gather(
                ctx.services.tenants.list_tokens(info.name),
                ctx.services.log.page(info.name, limit=1),
                ctx.services.log.activity(info.name, since=day[0], until=ctx.now),
            )
        except (TenantNotFound, TenantDeleting):  # deleted meanwhile
            return row
    counted = Activity(tuple(Hour(h.hour, h.requests, h.failures) for h in hours))
    if counted.day_ratio is None:
        row["ratio"] = "no requests"
    else:
        row["ratio"] = f"{counted.day_ratio:.0%} of {counted.day_requests}"
        row["ratio_tone"] = {"quarantine": "error", "warning": "warning"}.get(counted.level, "")
    ends = [t.ends for t in tokens if t.ends is not None]
    now = int(ctx.now.timestamp())
    if not tokens:
        row["expiry"], row["expiry_tone"] = "no active token", "error"
    elif not ends:
        row["expiry"] = "never"
    else:
        soonest = min(ends)
        row["expiry"] = _time(format_epoch(soonest)) + (" (another never expires)" if len(ends) < len(tokens) else "")
        if soonest - now < EXPIRY_WARNING.total_seconds() and len(ends) == len(tokens):
            row["expiry_tone"] = "warning"
    row["last_request"] = _time(newest.entries[0].time) if newest.entries else "none logged"
    return row


async def ops_page(
    ctx: Context, *, status: int = 200, errors: Mapping[str, str] | None = None, form: Form | None = None
) -> PortalResponse:
    """``GET /portal/ops``: every tenant and its status, and Create tenant."""
    require_operator(ctx)
    listed = await ctx.services.tenants.list()
    gate = asyncio.Semaphore(STATUS_CONCURRENCY)
    rows = await asyncio.gather(*(_status(ctx, info, gate) for info in listed))
    form = form or {}
    values = ctx.values(
        tenants=rows,
        flash=OPS_FLASHES.get(ctx.request.query.get("done", "")),
        errors=dict(errors or {}),
        token_expiries=TOKEN_EXPIRIES,
        link_expiries=LINK_EXPIRIES,
        default_link_expiry=DEFAULT_LINK_EXPIRY,
        new_name=_field(form, "name")[:63],
        new_notify=_field(form, "notify")[:2000],
        new_expires=_field(form, "expires") or "never",
        can_create=ctx.portal.lifecycle is not None,
    )
    return page(status, "ops.html", **values)


async def create_tenant(ctx: Context, form: Form) -> PortalResponse:
    """``POST /portal/ops/create-tenant``: the Tenant URL and Secret Token, shown once."""
    lifecycle = ctx.portal.lifecycle
    if lifecycle is None:
        raise Refused(503, "Not available", NO_LIFECYCLE)
    name, expires_choice = _field(form, "name"), _field(form, "expires") or "never"
    notify = [a for a in re.split(r"[\s,;]+", _field(form, "notify")) if a]

    def refused(text: str, status: int = 400) -> Awaitable[PortalResponse]:
        return ops_page(ctx, status=status, errors={"create": text}, form=form)

    try:
        validate_tenant_name(name)
    except InvalidTenantName:
        return await refused(
            "A tenant name is 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit."
        )
    if expires_choice not in dict(TOKEN_EXPIRIES):
        return await refused("Choose one of the token expiries offered.")
    expires = None if expires_choice == "never" else parse_duration(expires_choice)
    try:
        token, token_id, token_expires = await lifecycle.create(name, notify, expires)
    except TenantExists:
        return await refused(f"A tenant named {name} exists already.", 409)
    except TenantDeleting:
        return await refused(
            f"A tenant named {name} is being deleted, or an unfinished delete left its data: finish its delete "
            "(Delete on its row) before you create it again.",
            409,
        )
    except ValueError as exc:  # a notification address
        text = str(exc)
        return await refused(text[:1].upper() + text[1:] + ".")
    await record_audit(ctx, name, "tenant.created", token=token_id or "?", expires=token_expires or "never")
    values = ctx.values(
        tenant=name,
        tenant_url=ctx.settings.tenant_url(name),
        token=token,
        token_id=token_id or "?",
        expires=_time(token_expires),
        link_expiries=LINK_EXPIRIES,
        default_link_expiry=DEFAULT_LINK_EXPIRY,
    )
    return page(200, "tenant_created.html", **values)


# ---- setup links ----------------------------------------------------------------------------------


async def create_link(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    """``POST /portal/ops/t/{tenant}/setup-link``: a setup link, its URL shown once."""
    session = require_operator(ctx)
    await require_tenant(ctx, tenant)
    choice = _field(form, "expires") or DEFAULT_LINK_EXPIRY
    if choice not in dict(LINK_EXPIRIES):
        raise Refused(400, "Setup link not made", "Choose one of the expiries offered.")
    seconds = parse_duration(choice)
    assert seconds is not None
    secret, link = await ctx.services.portal_links.create(
        tenant, check_expiry(timedelta(seconds=seconds)), session.actor, now=ctx.now
    )
    await record_audit(ctx, tenant, "link.created", link=link.id, expires=format_time(link.expires))
    values = ctx.values(
        tenant=tenant,
        url=ctx.settings.portal_setup_url(secret),
        link_id=link.id,
        expires=_time(format_time(link.expires)),
        duration=dict(LINK_EXPIRIES)[choice],
    )
    return page(200, "setup_link.html", **values)


async def revoke_links(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    """``POST /portal/ops/t/{tenant}/revoke-links``: every open setup link fails at once."""
    require_operator(ctx)
    await require_tenant(ctx, tenant)
    revoked = await ctx.services.portal_links.revoke_all(tenant, now=ctx.now)
    await record_audit(ctx, tenant, "links.revoked", count=str(revoked))
    return redirect(f"/portal/t/{tenant}?done=links-revoked#setup-links")


def _link_row(link: SetupLink, now: datetime) -> dict[str, str]:
    status = link.status(now)
    ended = {
        "used": f"used {_time(format_time(link.used))} by {link.used_by}" if link.used else "",
        "revoked": f"revoked {_time(format_time(link.revoked))}" if link.revoked else "",
    }.get(status, "")
    return {
        "id": link.id,
        "status": status,
        "created": _time(format_time(link.created)),
        "created_by": link.created_by,
        "expires": _time(format_time(link.expires)),
        "ended": ended,
    }


# ---- deleting a tenant ----------------------------------------------------------------------------


def _deletable(tenant: str) -> str:
    try:
        return validate_tenant_name(tenant)
    except InvalidTenantName:
        raise Refused(404, "No such tenant", "There is no such tenant.") from None


async def confirm_delete(
    ctx: Context, tenant: str, *, status: int = 200, error: str | None = None, interrupted: bool = False
) -> PortalResponse:
    """``GET /portal/ops/t/{tenant}/delete``: what is deleted, and the field to type the name into."""
    require_operator(ctx)
    state = await ctx.services.tenants.state(_deletable(tenant))
    if state is None and not interrupted:
        raise Refused(404, "No such tenant", "There is no such tenant (it may have been deleted).")
    values = ctx.values(
        tenant=tenant, unfinished=state == DELETING or interrupted, error=error, interrupted=interrupted
    )
    return page(status, "confirm_delete.html", **values)


async def delete_tenant(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    """``POST /portal/ops/t/{tenant}/delete``: with the tenant's name typed as ``confirm_name``."""
    session = require_operator(ctx)
    _deletable(tenant)
    lifecycle = ctx.portal.lifecycle
    if lifecycle is None:
        raise Refused(503, "Not available", NO_LIFECYCLE)
    if _field(form, "confirm_name") != tenant:
        return await confirm_delete(
            ctx, tenant, status=400, error=f"Type the tenant's name, {tenant}, exactly: nothing was deleted."
        )
    try:
        finished = await lifecycle.delete(tenant)
    except TenantNotFound:
        raise Refused(404, "No such tenant", "There is no such tenant (it may have been deleted).") from None
    except TenantDeleteInterrupted:
        logger.warning("portal: a tenant delete was interrupted (operator session %s)", session.id)
        return await confirm_delete(
            ctx,
            tenant,
            status=503,
            interrupted=True,
            error="The delete was interrupted (storage failed): the tenant's token is revoked already, but some "
            "of its data remains. Delete it again to finish.",
        )
    logger.info("portal: an operator deleted a tenant (session %s)", session.id)
    return redirect(f"/portal/ops?done={'delete-finished' if finished else 'deleted'}")


# ---- webhooks and events (the tenant page) -------------------------------------------------------


async def _webhook_rows(ctx: Context, tenant: str) -> list[dict[str, Any]]:
    services = ctx.services
    endpoints = [e for e in await services.webhooks.list() if e.serves(tenant)]
    if not endpoints:
        return []
    state = await services.deliveries.load(tenant)
    backlogs = await asyncio.gather(
        *(tenant_backlog(e, tenant, services.store, state, max_reads=BACKLOG_READS) for e in endpoints)
    )
    return [
        {
            "id": e.id,
            "url": e.url,
            "state": e.state,
            "disabled_reason": e.disabled_reason or "",
            "last_success": _time(e.last_success),
            "last_error": e.last_error or "",
            "last_error_at": _time(e.last_error_at, ""),
            "failing_since": _time(e.failing_since, ""),
            "backlog": f"{b.events:,}{'+' if b.capped else ''}",
        }
        for e, b in zip(endpoints, backlogs, strict=True)
    ]


def _event_subject(event: Mapping[str, Any]) -> str:
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    assert isinstance(data, dict)
    obj, group, member = data.get("object"), data.get("group"), data.get("member")
    if isinstance(group, dict) and isinstance(member, dict):
        who = member.get("userName") or member.get("displayName") or member.get("id")
        return f"{group.get('displayName') or group.get('id')}: {who}"
    if isinstance(obj, dict):
        return str(obj.get("userName") or obj.get("displayName") or obj.get("id") or "")
    return ""


async def _recent_events(ctx: Context, tenant: str) -> list[dict[str, str]]:
    """The tenant's change events of the last hour, oldest first (one feed read)."""
    settings = ctx.settings
    since = int((ctx.now - EVENTS_WINDOW).timestamp() * 1_000_000)
    try:
        found = await read_page(
            ctx.services.store,
            tenant,
            encode_cursor(tenant, f"{since:016d}"),
            EVENTS_SHOWN,
            settle_seconds=settings.events_settle_seconds,
            retention_days=settings.events_retention_days,
        )
    except FeedError:
        return []
    return [
        {"time": _time(str(e.get("time") or "")), "type": str(e.get("type") or ""), "subject": _event_subject(e)}
        for e in found["data"]
    ]


async def operator_sections(ctx: Context, tenant: str) -> dict[str, Any]:
    """What an operator sees besides on the tenant page: setup links, webhooks, recent events."""
    links, webhooks, events = await asyncio.gather(
        ctx.services.portal_links.list(tenant), _webhook_rows(ctx, tenant), _recent_events(ctx, tenant)
    )
    return {
        "links": [_link_row(link, ctx.now) for link in links],
        "webhooks": webhooks,
        "events": events,
        "events_shown": EVENTS_SHOWN,
        "link_expiries": LINK_EXPIRIES,
        "default_link_expiry": DEFAULT_LINK_EXPIRY,
        "replay_since": REPLAY_SINCE,
    }


async def replay_webhook(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    """``POST /portal/ops/t/{tenant}/webhook-replay``: move ``endpoint``'s cursor in this tenant
    back to ``since`` (as ``webhook replay --tenant``): the events since then are delivered again."""
    require_operator(ctx)
    await require_tenant(ctx, tenant)
    services = ctx.services
    endpoint_id, since = _field(form, "endpoint"), _field(form, "since")

    def result(ok: bool, headline: str, detail: str) -> PortalResponse:
        values = ctx.values(
            tenant=tenant, title="Replay webhook events", ok=ok, headline=headline, detail=detail, anchor="#webhooks"
        )
        return page(200 if ok else 400, "result.html", **values)

    if since not in dict(REPLAY_SINCE):
        return result(False, "Nothing was replayed.", "Choose one of the times offered.")
    try:
        endpoint: WebhookEndpoint = await services.webhooks.get(endpoint_id)
    except (WebhookNotFound, ValueError):
        return result(False, "Nothing was replayed.", "That webhook endpoint does not exist any more.")
    if not endpoint.serves(tenant):
        return result(False, "Nothing was replayed.", "That webhook endpoint does not serve this tenant.")
    seconds = parse_duration(since)
    assert seconds is not None
    when = ctx.now - timedelta(seconds=seconds)
    try:
        check_replay_time(when, ctx.settings.events_retention_days)
    except ReplayRefused as exc:
        return result(False, "Nothing was replayed.", str(exc))
    position = replay_position(when)
    cursor = (await services.deliveries.load(tenant)).cursors.get(endpoint.id)
    current = cursor.position if cursor is not None else initial_position(endpoint)
    moved = current > position
    if moved:
        await services.deliveries.rewind(tenant, endpoint.id, position)
    await record_audit(
        ctx, tenant, "webhook.replayed", endpoint=endpoint.id, since=format_time(when), rewound="yes" if moved else "no"
    )
    label = dict(REPLAY_SINCE)[since]
    if not moved:
        return result(
            True,
            "Nothing to replay.",
            f"The endpoint's delivery in this tenant is not past {label} yet: the events since then are still to "
            "be delivered.",
        )
    disabled = "" if endpoint.enabled else " The endpoint is disabled: the replay takes effect once it is enabled."
    return result(
        True,
        "Replay started.",
        f"The events committed since {label} are delivered again, with the same event ids (receivers deduplicate "
        f"on the webhook-id header).{disabled}",
    )
