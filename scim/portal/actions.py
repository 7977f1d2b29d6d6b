"""The portal's changes (POST): Secret Tokens, OAuth clients, Test connection, notifications and
the test digest. Each is reached only after :mod:`scim.portal.web` checked the session, the
tenant and the form's CSRF token, calls one service, records an audit entry (ids, never a
secret) and answers with a page (a new secret, shown once, or a result) or a redirect back to
the tenant page (303).

Bad input (an invalid address, a fourth token...) is answered with the tenant page and the
message beside the form (400); nothing is changed then.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta

from scim.credentials import (
    DEFAULT,
    ClientNotFound,
    TokenNotFound,
    TooManyClients,
    TooManyTokens,
    format_epoch,
    parse_duration,
)
from scim.notify.mail import EmailSender, SendError
from scim.notify.notifier import RunResult, notifier_for
from scim.portal.connection import check_connection
from scim.portal.context import Context
from scim.portal.http import PortalResponse, redirect
from scim.portal.pages import OVERLAPS, record_audit, tenant_page
from scim.portal.render import page
from scim.settings import Settings
from scim.tenants import TenantInfo, TokenConflict, validate_recipients

__all__ = [
    "create_client",
    "regenerate_token",
    "revoke_client",
    "revoke_token",
    "rotate_token",
    "save_notifications",
    "send_test_digest",
    "test_connection",
]

Form = dict[str, list[str]]

DIGEST_LAG = timedelta(seconds=5)
"""As ``notify run-now``: failures younger than this wait for the next run."""
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONFLICT = "The tokens were changed at the same moment by someone else; nothing was issued. Try again."


def _field(form: Form, name: str) -> str:
    values = form.get(name)
    return values[0].strip() if values else ""


def _back(tenant: str, done: str, anchor: str) -> PortalResponse:
    return redirect(f"/portal/t/{tenant}?done={done}#{anchor}")


def _new_token_page(
    ctx: Context, tenant: str, token: str, token_id: str, expires: str | None, overlap: str | None = None
) -> PortalResponse:
    """The new token, shown once; after a rotation, when the previous tokens stop working."""
    seconds = parse_duration(overlap) if overlap else None
    retires = format_epoch(int(ctx.now.timestamp()) + seconds) if seconds else None
    values = ctx.values(
        tenant=tenant,
        tenant_url=ctx.settings.tenant_url(tenant),
        token=token,
        token_id=token_id,
        expires=(expires or "").replace("T", " ").replace("Z", " UTC") or None,
        rotated=overlap is not None,
        overlap=dict(OVERLAPS).get(overlap or "", overlap),
        retires=(retires or "").replace("T", " ").replace("Z", ""),
    )
    return page(200, "new_token.html", **values)


async def regenerate_token(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    """A new Secret Token; every other token fails at once (after the confirmation page)."""
    tenants = ctx.services.tenants
    try:
        token = await tenants.set_token(tenant, expires=DEFAULT)
    except TokenConflict:
        return await tenant_page(ctx, tenant, status=409, errors={"regenerate": _CONFLICT})
    issued = max(await tenants.list_tokens(tenant), key=lambda t: t.created, default=None)
    token_id = issued.id if issued is not None else "?"
    await record_audit(ctx, tenant, "token.regenerated", token=token_id)
    return _new_token_page(ctx, tenant, token, token_id, format_epoch(issued.ends) if issued else None)


async def rotate_token(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    """A new Secret Token; the others keep working for the overlap chosen (24 h by default)."""
    overlap = _field(form, "overlap") or "24h"
    if overlap not in dict(OVERLAPS):
        return await tenant_page(ctx, tenant, status=400, errors={"overlap": "Choose one of the overlaps offered."})
    seconds = parse_duration(overlap)
    assert seconds is not None
    try:
        token, issued = await ctx.services.tenants.rotate_token(tenant, seconds, DEFAULT)
    except TooManyTokens:
        message = "This tenant already holds 3 active tokens, the most it may: revoke one before you rotate."
        return await tenant_page(ctx, tenant, status=400, errors={"rotate": message})
    except TokenConflict:
        return await tenant_page(ctx, tenant, status=409, errors={"rotate": _CONFLICT})
    await record_audit(ctx, tenant, "token.rotated", token=issued.id, overlap=overlap)
    return _new_token_page(ctx, tenant, token, issued.id, format_epoch(issued.ends), overlap)


async def revoke_token(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    token_id = _field(form, "token_id")
    try:
        if not _ID.fullmatch(token_id):
            raise TokenNotFound(token_id)
        await ctx.services.tenants.revoke_token(tenant, token_id)
    except TokenNotFound:
        message = "That token is not active any more (revoked, expired or replaced already)."
        return await tenant_page(ctx, tenant, status=400, errors={"revoke": message})
    await record_audit(ctx, tenant, "token.revoked", token=token_id)
    return _back(tenant, "token-revoked", "secret-token")


async def create_client(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    """A new OAuth client: Entra's four fields, the Client Secret shown once."""
    try:
        client, secret = await ctx.services.tenants.create_client(tenant)
    except TooManyClients:
        message = "This tenant already has 3 OAuth clients, the most it may: revoke one first."
        return await tenant_page(ctx, tenant, status=400, errors={"client": message})
    await record_audit(ctx, tenant, "oauth_client.created", client=client.id)
    values = ctx.values(
        tenant=tenant,
        tenant_url=ctx.settings.tenant_url(tenant),
        token_endpoint=ctx.settings.token_endpoint(tenant),
        client_id=client.id,
        client_secret=secret,
    )
    return page(200, "new_client.html", **values)


async def revoke_client(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    client_id = _field(form, "client_id")
    try:
        if not _ID.fullmatch(client_id):
            raise ClientNotFound(client_id)
        await ctx.services.tenants.revoke_client(tenant, client_id)
    except ClientNotFound:
        return await tenant_page(
            ctx, tenant, status=400, errors={"client": "That OAuth client does not exist any more."}
        )
    await record_audit(ctx, tenant, "oauth_client.revoked", client=client_id)
    return _back(tenant, "client-revoked", "oauth-client")


async def test_connection(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    """Entra's test request with the pasted token, in-process; the answer in Entra's words."""
    token = _field(form, "token")
    if not token:
        return await tenant_page(ctx, tenant, status=400, errors={"token": "Paste a Secret Token to test."})
    if len(token) > 1024 or not token.isprintable():
        verdict_ok, headline = False, "Entra will report invalid credentials."
        detail = "That is not a Secret Token of this service."
    else:
        verdict = await check_connection(ctx.portal.probe, tenant, token)
        verdict_ok, headline, detail = verdict.ok, verdict.headline, verdict.detail
    values = ctx.values(
        tenant=tenant,
        title="Test connection",
        ok=verdict_ok,
        headline=headline,
        detail=detail,
        anchor="#test-connection",
    )
    return page(200, "result.html", **values)


async def save_notifications(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    """**Notification Email** and **Send an email notification when a failure occurs**."""
    text = _field(form, "notify")
    enabled = _field(form, "enabled") in ("on", "1", "true")
    try:
        recipients = validate_recipients(re.split(r"[\s,;]+", text))
        if enabled and not recipients:
            raise ValueError("add at least one Notification Email to send notifications")
    except ValueError as exc:
        message = str(exc)
        return await tenant_page(
            ctx,
            tenant,
            status=400,
            errors={"notify": message[:1].upper() + message[1:] + "."},
            notify_text=text[:4000],
            notify_enabled=enabled,
        )
    await ctx.services.tenants.set_notifications(tenant, recipients, enabled)
    await record_audit(
        ctx, tenant, "notify.updated", recipients=", ".join(recipients)[:256], enabled="yes" if enabled else "no"
    )
    return _back(tenant, "notify-saved", "notifications")


async def send_test_digest(ctx: Context, tenant: str, form: Form) -> PortalResponse:
    """The tenant's failure digest now, as the timer and ``notify run-now`` send it."""
    services = ctx.services
    notifier = notifier_for(
        services.settings,
        services.tenants,
        services.log,
        states=services.states,
        lag=DIGEST_LAG,
        webhooks=services.webhooks,
    )
    info = await services.tenants.info(tenant)
    try:
        result = await notifier.run_tenant(info, ctx.now)
        if result.outcome == "nothing" and notifier.sender is not None:
            result = await _send_test_email(notifier.sender, services.settings, info)
    finally:
        if notifier.sender is not None:
            await notifier.sender.close()
    await record_audit(ctx, tenant, "digest.test_sent", outcome=result.outcome)
    ok, headline, detail = _digest_outcome(result)
    values = ctx.values(
        tenant=tenant, title="Send a test digest", ok=ok, headline=headline, detail=detail, anchor="#notifications"
    )
    return page(200, "result.html", **values)


async def _send_test_email(sender: EmailSender, settings: Settings, info: TenantInfo) -> RunResult:
    """With no failure to report, a short test email to the Notification Email addresses, so
    the admin who pressed the button sees that the addresses and the sender work (the digest's
    state is not touched: the next digest reports what it would have)."""
    url = settings.tenant_url(info.name)
    text = (
        f"This is a test email from the SCIM provisioning service of tenant {info.name} ({url}).\n\n"
        "Failure digests go to this address when requests from Microsoft Entra ID fail. "
        "There were no failures since the last digest, so this test carries none.\n"
    )
    body = html.escape(text).replace("\n\n", "</p><p>").replace("\n", "")
    try:
        await sender.send(
            sender=settings.notify_from,
            to=info.notify,
            subject=f"Test: failure digest of tenant {info.name}",
            text=text,
            html=f"<p>{body}</p>",
        )
    except SendError as exc:
        return RunResult(info.name, "failed", 0, reason=str(exc))
    return RunResult(info.name, "test_sent", 0)


def _digest_outcome(result: RunResult) -> tuple[bool, str, str]:
    if result.outcome == "test_sent":
        return (
            True,
            "Test email sent.",
            "There were no failures since the last digest, so a test email went to the Notification Email "
            "addresses instead. If it does not arrive, check the addresses and the spam folder.",
        )
    if result.outcome == "sent":
        what = f"{result.failures} failure(s)" if result.failures else "no failures"
        extra = f" {result.reason}" if result.reason else ""
        return True, "Digest sent.", f"The digest went to the Notification Email addresses, reporting {what}.{extra}"
    if result.outcome == "nothing":
        return (
            True,
            "Nothing to send.",
            "There were no failures since the last digest (failures of the last few seconds wait for the next run), "
            "so no email was sent.",
        )
    if result.outcome == "skipped":
        reason = result.reason or "the digest was skipped"
        return False, "No digest was sent.", reason[:1].upper() + reason[1:] + "."
    return False, "The digest could not be sent.", f"{result.reason or 'The send failed'}; the next run tries again."
