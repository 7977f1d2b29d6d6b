"""The failure digest run: one email per tenant with failures since the last email.

For each tenant with notifications on, a run:

1. takes the tenant's lease (:class:`NotifyStateStore`), or skips the tenant if another run
   or instance holds it;
2. reads the failures logged in ``[watermark, now - lag)``: the lag lets writes of requests
   still in flight land first, so no failure is stamped before the watermark after the
   query has passed it; and the count of requests refused for their token in that window;
3. reads the tenant's webhook endpoints to report (:func:`webhook_issues`: failing with an
   error in the window, or disabled in the window), when the notifier has the registry, and,
   under the lease, its Secret Tokens: the expiry warnings due
   (:func:`~scim.notify.token_expiry.due_warnings`: 14 and 3 days before a token expires);
4. sends one digest (:func:`build_digest`) through the configured sender, if there is anything
   to say (failures, a credential alert, webhook endpoints, or token expiry warnings);
5. records each expiry warning sent (:meth:`~scim.tenants.TenantRegistry.mark_warned`, a
   guarded write of the tenant record) while it still holds the lease, so the next holder reads
   it and does not send it again; then
6. moves the watermark to the end of the window only after a successful send, in the same
   ETag-guarded write that releases the lease. A failed send releases the lease and leaves
   the watermark (and marks no warning), so the next run retries with a larger window:
   delivery is at least once, and never twice in the normal path.

The window also keeps the webhook section from repeating: a failing endpoint is reported when
its last error falls in the window (it failed again since the last digest), a disabled one when
it was disabled in the window. An endpoint failing for days (retries: 5 s, 5 min, 30 min ...)
is so reported once per digest that follows a new failed attempt, not in every digest.

Expiry warnings are not tied to the window: they are due from the token's state (``warned``),
so a run whose window is empty (a run right after another) still sends one that is due. A
warning whose record fails after the send (storage down) is sent again by the next run.

Each digest sent or failed counts in the ``scim.digest.emails`` metric (:mod:`scim.telemetry`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scim.notify.digest import Failure, build_digest
from scim.notify.mail import EmailSender, SendError
from scim.notify.state import NotifyState, NotifyStateStore
from scim.notify.token_expiry import TokenWarning, due_warnings, format_left
from scim.provisioning_log import LogEntry, ProvisioningLog, format_time, parse_time
from scim.settings import Settings
from scim.telemetry import instruments
from scim.tenants import TenantDeleting, TenantInfo, TenantNotFound, TenantRegistry
from scim.webhooks import WebhookEndpoint, WebhookRegistry
from scim.webhooks import parse_time as parse_endpoint_time

__all__ = ["Notifier", "RunResult", "notifier_for", "webhook_issues"]

logger = logging.getLogger("scim.notify")

DEFAULT_LAG = timedelta(minutes=2)
DEFAULT_LEASE = timedelta(minutes=5)
RECENT_SUCCESS = timedelta(hours=1)
"""A credential alert needs an accepted request this long before the window (Entra runs a
cycle about every 40 minutes, docs/ENTRA.md §2)."""
CREDENTIAL_ALERT_INTERVAL = timedelta(hours=24)
"""At most one credential alert per tenant in this time."""
_SLOT = timedelta(minutes=10)
"""A run's turn (:meth:`Notifier.run_all` starts each 10-minute slot at another tenant)."""


@dataclass(frozen=True)
class RunResult:
    """What a run did for one tenant: ``outcome`` is sent, nothing, skipped, failed or deferred
    (left for the next run, within the sending limit: :meth:`Notifier.run_all`); ``webhooks``
    counts the webhook endpoints the digest reported, ``token_warnings`` the Secret Token expiry
    warnings it carried (``reason`` names them when sent); ``throttled``: the send failed for the
    email service's sending limit."""

    tenant: str
    outcome: str
    failures: int = 0
    reason: str = ""
    webhooks: int = 0
    token_warnings: int = 0
    throttled: bool = False


def webhook_issues(
    endpoints: Iterable[WebhookEndpoint], tenant: str, since: datetime | None, until: datetime
) -> list[WebhookEndpoint]:
    """The endpoints a digest of ``tenant`` for ``[since, until)`` reports: those serving the
    tenant (``tenants`` None or naming it) that are enabled and failing with their last error
    in the window (new failures since the previous digest), or were disabled in the window.
    ``since`` None: from the beginning."""

    def within(moment: str | None) -> bool:
        if not moment:
            return False
        try:
            at = parse_endpoint_time(moment)
        except ValueError:
            return False
        return at.tzinfo is not None and (since is None or at >= since) and at < until

    return [
        e
        for e in endpoints
        if e.serves(tenant)
        and (
            (e.enabled and e.failing_since is not None and within(e.last_error_at))
            or (not e.enabled and within(e.disabled_at))
        )
    ]


def _failure(entry: LogEntry) -> Failure:
    return Failure(
        time=entry.time,
        operation=entry.operation,
        status=entry.status,
        correlation_id=entry.correlation_id,
        resource_type=entry.resource_type,
        resource_id=entry.resource_id,
        scim_type=entry.scim_type,
        detail=entry.detail,
        subject=entry.subject,
    )


def notifier_for(
    settings: Settings,
    tenants: TenantRegistry,
    log: ProvisioningLog,
    *,
    states: NotifyStateStore,
    lag: timedelta | None = None,
    webhooks: WebhookRegistry | None = None,
) -> Notifier:
    """A notifier on a runtime's tenants, log and digest state (Table Storage, or the memory
    doubles) and the sender the settings configure (ACS Email, SMTP or none); ``lag`` defaults
    to :data:`DEFAULT_LAG`; ``webhooks``: the registry whose failing or disabled endpoints the
    digests report (None: no webhook section). Used by the timer and by ``notify run-now``."""
    from scim.notify.mail import sender_from_settings

    return Notifier(
        settings,
        tenants,
        log,
        states,
        sender_from_settings(settings),
        lag=DEFAULT_LAG if lag is None else lag,
        webhooks=webhooks,
    )


class Notifier:
    """Sends failure digests for every tenant (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        tenants: TenantRegistry,
        log: ProvisioningLog,
        states: NotifyStateStore,
        sender: EmailSender | None,
        *,
        lag: timedelta = DEFAULT_LAG,
        lease: timedelta = DEFAULT_LEASE,
        webhooks: WebhookRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.tenants = tenants
        self.log = log
        self.states = states
        self.sender = sender
        self.lag = lag
        self.lease = lease
        self.webhooks = webhooks
        self.owner = uuid.uuid4().hex

    async def run_all(self, now: datetime | None = None) -> list[RunResult]:
        """One run over every tenant; a tenant's error never stops the others. The webhook
        registry is read once, by the first tenant that needs it (again by the next one if it
        fails: that tenant's digest waits for the next run).

        Within the email service's sending limit: the run sends at most
        ``NOTIFY_MAX_EMAILS_PER_RUN`` digests (0: no cap) and stops sending at the first
        throttled send (ACS's 429); the tenants left are ``deferred``, untouched (no lease, no
        watermark moved), so the next run's digest covers their longer window. Each run starts
        at another tenant (the run's 10-minute slot, modulo the tenants), so none waits forever.
        """
        now = now or datetime.now(UTC)
        results = []
        read: list[list[WebhookEndpoint]] = []

        async def endpoints() -> Sequence[WebhookEndpoint]:
            if not read:
                read.append(await self._endpoints())
            return read[0]

        tenants = await self.tenants.list()
        if tenants:
            first = int(now.timestamp() // _SLOT.total_seconds()) % len(tenants)
            tenants = tenants[first:] + tenants[:first]
        cap = self.settings.notify_max_emails_per_run
        sent, stop = 0, ""
        for info in tenants:
            if stop and info.notify_enabled and info.notify:
                results.append(RunResult(info.name, "deferred", reason=stop))
                continue
            try:
                result = await self._run_tenant(info, now, endpoints)
            except Exception as exc:  # noqa: BLE001 - reported, retried on the next run
                logger.warning("failure digest for a tenant failed: %s", type(exc).__name__)
                result = RunResult(info.name, "failed", reason=type(exc).__name__)
            results.append(result)
            sent += result.outcome == "sent"
            if result.throttled:
                stop = "the email service's sending limit was reached; the next run sends it"
            elif cap and sent >= cap:
                stop = f"this run sent its {cap} email(s) (NOTIFY_MAX_EMAILS_PER_RUN); the next run sends it"
        if stop:
            deferred = sum(r.outcome == "deferred" for r in results)
            logger.warning("failure digests: %d tenant(s) deferred to the next run: %s", deferred, stop)
        return results

    async def _endpoints(self) -> list[WebhookEndpoint]:
        return await self.webhooks.list() if self.webhooks is not None else []

    async def run_tenant(self, info: TenantInfo, now: datetime | None = None) -> RunResult:
        """Send the tenant's digest of failures (and webhook endpoints failing or disabled, and
        Secret Token expiry warnings) since its watermark, if any."""
        return await self._run_tenant(info, now or datetime.now(UTC), self._endpoints)

    async def _run_tenant(
        self, info: TenantInfo, now: datetime, endpoints: Callable[[], Awaitable[Sequence[WebhookEndpoint]]]
    ) -> RunResult:
        if not info.notify_enabled or not info.notify:
            return RunResult(info.name, "skipped", reason="notifications are off for this tenant")
        if self.sender is None:
            return RunResult(
                info.name, "skipped", reason="no email sender configured (ACS_EMAIL_ENDPOINT or SMTP_HOST)"
            )
        # Read before the lease (a failed read then holds nothing), and after ``now``: every
        # failure or disable recorded before the window's end is in what is read.
        registered = await endpoints()
        state = await self.states.acquire(info.name, self.owner, now, self.lease)
        if state is None:
            return RunResult(info.name, "skipped", reason="another run holds this tenant's lease")
        # The tokens are read under the lease: the previous holder recorded its warnings before
        # releasing it, so a warning is never sent twice by two runs.
        try:
            warnings = due_warnings(await self.tenants.list_tokens(info.name), now)
        except (TenantNotFound, TenantDeleting):
            await self.states.release(state, None)
            return RunResult(info.name, "skipped", reason="the tenant is being deleted")
        # The window ends on a millisecond, as entry times and the stored watermark do: an entry
        # of its last millisecond is then never read again by the next run's window.
        until = parse_time(format_time(now - self.lag))
        since = state.watermark or (parse_time(info.created) if info.created else None)
        empty = since is not None and since >= until  # a run right after another: no window
        if empty and not warnings:
            await self.states.release(state, None)
            return RunResult(info.name, "nothing")
        watermark = None if empty else until
        entries = [] if empty else await self.log.failures(info.name, since=since, until=until)
        refused = 0 if empty else await self.log.unauthenticated(info.name, since=since, until=until)
        total = await self.log.count(info.name, since=since, until=until) if entries or refused else 0
        credential_alert = bool(refused) and await self._entra_token_fails(info.name, state, since, until, total, now)
        hooks = [] if empty else webhook_issues(registered, info.name, since, until)
        if not entries and not credential_alert and not hooks and not warnings:
            await self.states.release(state, watermark)
            return RunResult(info.name, "nothing")
        digest = build_digest(
            info.name,
            [_failure(e) for e in entries],
            max(total, len(entries)),
            window_start=format_time(since) if since else entries[0].time if entries else "the tenant's creation",
            window_end=format_time(until),
            tenant_url=self.settings.tenant_url(info.name),
            unauthenticated=refused,
            credential_alert=credential_alert,
            webhooks=hooks,
            events_retention_days=self.settings.events_retention_days,
            token_warnings=warnings,
        )
        try:
            await self.sender.send(
                sender=self.settings.notify_from,
                to=info.notify,
                subject=digest.subject,
                text=digest.text,
                html=digest.html,
            )
        except SendError as exc:
            instruments.digest_email(False)
            await self.states.release(state, None)
            logger.warning("failure digest not sent, will retry on the next run: %s", exc)
            return RunResult(
                info.name,
                "failed",
                len(entries),
                reason=str(exc),
                webhooks=len(hooks),
                token_warnings=len(warnings),
                throttled=exc.throttled,
            )
        instruments.digest_email(True)
        reason = await self._record_warnings(info.name, warnings)
        if not await self.states.release(state, watermark, credential_alert_at=now if credential_alert else None):
            logger.warning("lost the digest lease after sending; the next run may repeat this digest")
        return RunResult(
            info.name, "sent", len(entries), reason=reason, webhooks=len(hooks), token_warnings=len(warnings)
        )

    async def _record_warnings(self, tenant: str, warnings: Sequence[TokenWarning]) -> str:
        """Record the expiry warnings just sent (each is sent once); what the run says of them.
        A warning whose record fails is sent again by the next run (the email went out)."""
        said = []
        for w in warnings:
            told = f"warned that Secret Token {w.token_id} {w.verb} in {format_left(w.left)} ({w.days}-day warning)"
            try:
                await self.tenants.mark_warned(tenant, w.token_id, w.days)
            except Exception as exc:  # noqa: BLE001 - the email is sent; the next run repeats the warning
                logger.warning("could not record a token expiry warning: %s", type(exc).__name__)
                told += f", not recorded ({type(exc).__name__}): the next run sends it again"
            said.append(told)
        return "; ".join(said)

    async def _entra_token_fails(
        self, tenant: str, state: NotifyState, since: datetime | None, until: datetime, accepted: int, now: datetime
    ) -> bool:
        """Whether the refused requests of the window are evidence that Entra's own token fails.

        Anyone who knows a Tenant URL can send a wrong token, so a 401 alone proves nothing
        (and must not let a stranger email the operators). The evidence: no request of the
        window was accepted, yet one was in the hour before it (Entra was provisioning with a
        token that now fails, e.g. regenerated but not pasted into Entra). Rate-limited to one
        alert per tenant per :data:`CREDENTIAL_ALERT_INTERVAL`.
        """
        if accepted or since is None:
            return False
        if state.credential_alert_at is not None and now - state.credential_alert_at < CREDENTIAL_ALERT_INTERVAL:
            return False
        before = await self.log.page(tenant, since=since - RECENT_SUCCESS, until=since, limit=1)
        return bool(before.entries)

    async def purge(self, now: datetime | None = None) -> int:
        """Delete provisioning log entries older than the retention (``LOG_RETENTION_DAYS``)."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.settings.log_retention_days)
        removed = 0
        for info in await self.tenants.list():
            removed += await self.log.purge(info.name, cutoff)
        return removed
