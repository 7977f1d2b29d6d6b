"""Emails about webhook endpoints (issue 12): the one sent when the delivery engine disables an
endpoint.

The delivery engine (:mod:`scim.webhooks.delivery`) disables an endpoint on a ``410 Gone``, when its retry
window (about three days) runs out, or when too many events wait for it, and then calls
:func:`alert_disabled_endpoint` for the tenant whose delivery stopped. That tenant's operators
(its failure digest recipients: ``tenant update NAME --notify ADDR``) get one email at once,
saying which endpoint, why, when, that the events are kept (``EVENTS_RETENTION_DAYS``) and what
to do. The failure digest of every tenant the endpoint serves reports it too (disabled in the
digest's window, :func:`scim.notify.notifier.webhook_issues`), so an email lost here, or a
tenant whose delivery did not trigger the disable, is still told.

No email when the tenant's notifications are off, it has no recipients, or no sender is
configured (``ACS_EMAIL_ENDPOINT``/``SMTP_HOST``): a log line says so. Nothing here raises: a
failed send is logged, and delivery goes on.

The email shows the URL without its query (:func:`~scim.notify.digest_webhooks.shown_url`: it may carry
a key) and never a signing secret; every value is cleaned to one line and HTML-escaped.
"""

from __future__ import annotations

import contextlib
import html
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from scim.notify.digest_webhooks import shown_url
from scim.notify.mail import EmailSender, SendError, sender_from_settings
from scim.notify.render import DETAIL_LIMIT, FIELD_LIMIT, clean_line
from scim.tenants import TenantNotFound
from scim.webhooks import WebhookEndpoint, current_time, format_time

if TYPE_CHECKING:
    from scim.settings import Settings
    from scim.tenants import TenantRegistry

__all__ = ["AlertEmail", "AlertRuntime", "alert_disabled_endpoint", "disabled_email"]

logger = logging.getLogger("scim.notify")


class AlertRuntime(Protocol):
    """What the alert needs of :class:`scim.functions.runtime.Runtime`: the settings (sender,
    ``NOTIFY_FROM``, ``EVENTS_RETENTION_DAYS``) and the tenants (the recipients)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def tenants(self) -> TenantRegistry: ...


@dataclass(frozen=True)
class AlertEmail:
    """One email: a one-line subject, a plain-text part and an HTML part."""

    subject: str
    text: str
    html: str


def _host(url: str) -> str:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    return clean_line(host, FIELD_LIMIT) if host else "(an unparsable URL)"


def disabled_email(
    endpoint: WebhookEndpoint, tenant: str, reason: str, *, disabled_at: str, retention_days: int
) -> AlertEmail:
    """The email telling ``tenant``'s operators that ``endpoint`` was disabled at ``disabled_at``
    (RFC 3339) for ``reason``, its events being kept ``retention_days`` days (pure)."""
    ep = clean_line(endpoint.id, FIELD_LIMIT)
    name = clean_line(tenant, FIELD_LIMIT)
    facts = [
        ("Endpoint", ep),
        ("URL", shown_url(endpoint.url)),
        ("Tenant", name),
        ("Reason", clean_line(reason, DETAIL_LIMIT) if reason else "(no reason given)"),
        ("Disabled at", clean_line(disabled_at, FIELD_LIMIT)),
    ]
    if endpoint.failing_since:
        facts.append(("Failing since", clean_line(endpoint.failing_since, FIELD_LIMIT)))
    if endpoint.last_error or endpoint.last_error_at:
        at = clean_line(endpoint.last_error_at, FIELD_LIMIT) if endpoint.last_error_at else "unknown time"
        error = clean_line(endpoint.last_error, DETAIL_LIMIT) if endpoint.last_error else "(no detail)"
        facts.append(("Last error", f"{at}: {error}"))
    days = f"{retention_days:,} day{'' if retention_days == 1 else 's'}"
    intro = (
        f"The webhook endpoint {ep} was disabled: this service no longer sends it the change events"
        f" of tenant {name} (nor of any other tenant it serves)."
    )
    kept = (
        f"The events are kept for {days} (EVENTS_RETENTION_DAYS) after they happen: enable the endpoint"
        " within that time and it receives them all; older ones are removed and can no longer be delivered."
    )
    advice = [
        "`python -m scim.admin webhook list` shows the endpoint, its state and last error. Fix the"
        " receiver: it must answer 2xx to a signed POST.",
        f"`python -m scim.admin webhook enable {ep}` then resumes delivery from where it stopped:"
        " every event kept since is sent, in order.",
        f"`python -m scim.admin webhook replay {ep} --since TIME` sends a range of events again"
        " (e.g. those the receiver lost).",
        f"If the endpoint is no longer used: `python -m scim.admin webhook remove {ep}`.",
    ]
    width = max(len(label) for label, _ in facts) + 1
    text = [intro, ""]
    text += [f"{label + ':':<{width}} {value}" for label, value in facts]
    text += ["", kept, "", "What to do"]
    text += [f"  - {a}" for a in advice]
    esc = html.escape
    rows = "".join(
        f'<tr><td style="padding:2px 8px">{esc(label)}</td><td style="padding:2px 8px">{esc(value)}</td></tr>'
        for label, value in facts
    )
    parts = [
        '<!DOCTYPE html><html><body style="font-family:sans-serif">',
        f"<h2>Webhook endpoint disabled: {esc(_host(endpoint.url))}</h2>",
        f"<p>{esc(intro)}</p>",
        f'<table style="border-collapse:collapse">{rows}</table>',
        f"<p>{esc(kept)}</p>",
        "<h3>What to do</h3>",
        "<ul>" + "".join(f"<li>{esc(a)}</li>" for a in advice) + "</ul>",
        "</body></html>",
    ]
    return AlertEmail(
        subject=f"Webhook endpoint disabled: {_host(endpoint.url)} (tenant {name})",
        text="\n".join(text) + "\n",
        html="\n".join(parts) + "\n",
    )


async def alert_disabled_endpoint(
    runtime: AlertRuntime,
    endpoint: WebhookEndpoint,
    tenant: str,
    reason: str,
    *,
    sender: EmailSender | None = None,
    now: datetime | None = None,
) -> bool:
    """Tell the operators of ``tenant`` that ``endpoint`` was disabled, and why; returns whether
    the email was sent. Never raises (see the module docstring).

    ``sender``: the email sender to use (left open); by default one is made from the settings
    and closed after the send. ``now``: the time shown when ``endpoint`` (as the engine saw it
    before disabling it) carries no ``disabled_at``.
    """
    try:
        return await _alert(runtime, endpoint, tenant, reason, sender, now)
    except Exception as exc:  # noqa: BLE001 - the alert must never stop delivery
        logger.warning("the email about disabled webhook endpoint %s failed: %s", endpoint.id, type(exc).__name__)
        return False


async def _alert(
    runtime: AlertRuntime,
    endpoint: WebhookEndpoint,
    tenant: str,
    reason: str,
    sender: EmailSender | None,
    now: datetime | None,
) -> bool:
    try:
        info = await runtime.tenants.info(tenant)
    except TenantNotFound:
        logger.info("no email about disabled webhook endpoint %s: the tenant no longer exists", endpoint.id)
        return False
    if not info.notify_enabled or not info.notify:
        logger.info("no email about disabled webhook endpoint %s: notifications are off for the tenant", endpoint.id)
        return False
    mail = sender if sender is not None else sender_from_settings(runtime.settings)
    if mail is None:
        logger.info(
            "no email about disabled webhook endpoint %s: no email sender configured (ACS_EMAIL_ENDPOINT or SMTP_HOST)",
            endpoint.id,
        )
        return False
    disabled_at = (
        endpoint.disabled_at if not endpoint.enabled and endpoint.disabled_at else format_time(current_time(now))
    )
    message = disabled_email(
        endpoint,
        tenant,
        reason,
        disabled_at=disabled_at,
        retention_days=runtime.settings.events_retention_days,
    )
    try:
        await mail.send(
            sender=runtime.settings.notify_from,
            to=info.notify,
            subject=message.subject,
            text=message.text,
            html=message.html,
        )
    except SendError as exc:
        logger.warning("the email about disabled webhook endpoint %s was not sent: %s", endpoint.id, exc)
        return False
    finally:
        if sender is None:
            with contextlib.suppress(Exception):
                await mail.close()
    logger.info("emailed the tenant's operators about disabled webhook endpoint %s", endpoint.id)
    return True
