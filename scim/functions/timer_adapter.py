"""The Azure Functions timer trigger that emails failure digests and applies retention.

The schedule is the app setting ``NOTIFY_SCHEDULE`` (NCRONTAB, default every 10 minutes),
referenced as ``%NOTIFY_SCHEDULE%`` as the Functions host expects. Each run sends the digests,
then removes provisioning log entries older than ``LOG_RETENTION_DAYS`` and change events older
than ``EVENTS_RETENTION_DAYS`` (:func:`purge_events`), tenant by tenant.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import azure.functions as func

from scim.core.feed import retention_floor
from scim.functions.runtime import Runtime, get_runtime
from scim.store.base import StoreError
from scim.telemetry import instruments

if TYPE_CHECKING:
    from scim.notify.notifier import Notifier

__all__ = ["bp", "build_notifier", "purge_events", "run_notifications"]

logger = logging.getLogger("scim.timer")

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions declares no types for it


def build_notifier(runtime: Runtime, *, lag: timedelta | None = None) -> Notifier:
    """A :class:`~scim.notify.notifier.Notifier` on the runtime's tables (its digests report the
    webhook endpoints failing or disabled) and the configured sender."""
    from scim.notify.notifier import notifier_for

    return notifier_for(
        runtime.settings, runtime.tenants, runtime.log, states=runtime.states, lag=lag, webhooks=runtime.webhooks
    )


async def purge_events(runtime: Runtime, now: datetime | None = None) -> int:
    """Delete every tenant's change events stamped more than ``EVENTS_RETENTION_DAYS`` before
    ``now`` (:meth:`~scim.store.base.DirectoryStore.purge_events`); returns how many.

    The cutoff is the feed's retention floor (:func:`scim.core.feed.retention_floor`), so a feed
    cursor that is not expired never has an event after it removed. A tenant whose purge fails
    is logged and left for the next run; the others are still purged.
    """
    moment = now or datetime.now(UTC)
    cutoff = retention_floor(int(moment.timestamp() * 1_000_000), runtime.settings.events_retention_days)
    removed = 0
    for info in await runtime.tenants.list():
        try:
            removed += await runtime.store.purge_events(info.name, older_than=cutoff)
        except StoreError as exc:
            logger.warning("event retention: a tenant's purge failed (%s); the next run retries", type(exc).__name__)
    return removed


async def run_notifications(runtime: Runtime, now: datetime | None = None) -> None:
    """One timer run: digests for every tenant, then retention (the provisioning log, then the
    change events). ``now`` (default: the clock) is the time retention counts back from."""
    notifier = build_notifier(runtime)
    try:
        results = await notifier.run_all()
        removed = await notifier.purge(now)
    finally:
        if notifier.sender is not None:
            await notifier.sender.close()
    outcomes = Counter(r.outcome for r in results)
    logger.info("failure digests: %s; %d old log entries removed", dict(outcomes), removed)
    events = await purge_events(runtime, now)
    logger.info("event retention: %d events older than %d days removed", events, runtime.settings.events_retention_days)


@bp.timer_trigger(schedule="%NOTIFY_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def notify_timer(timer: func.TimerRequest) -> None:
    """Email each tenant's operators one digest of the failures since the last one, then apply
    the retention of the provisioning log and of the change events. One ``scim.notify`` span
    (telemetry on): the storage calls and the emails (``scim.email.send``) are under it."""
    runtime = await get_runtime()
    with instruments.span("scim.notify"):
        await run_notifications(runtime)
