"""The Azure Functions timer trigger that emails failure digests and applies log retention.

The schedule is the app setting ``NOTIFY_SCHEDULE`` (NCRONTAB, default every 10 minutes),
referenced as ``%NOTIFY_SCHEDULE%`` as the Functions host expects.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING

import azure.functions as func

from scim.functions.runtime import Runtime, get_runtime

if TYPE_CHECKING:
    from scim.notify.notifier import Notifier

__all__ = ["bp", "build_notifier", "run_notifications"]

logger = logging.getLogger("scim.timer")

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions declares no types for it


def build_notifier(runtime: Runtime, *, lag: timedelta | None = None) -> Notifier:
    """A :class:`~scim.notify.notifier.Notifier` on the runtime's tables and the configured sender."""
    from scim.notify.notifier import notifier_for

    return notifier_for(runtime.settings, runtime.tenants, runtime.log, lag=lag)


async def run_notifications(runtime: Runtime) -> None:
    """One timer run: digests for every tenant, then retention."""
    notifier = build_notifier(runtime)
    try:
        results = await notifier.run_all()
        removed = await notifier.purge()
    finally:
        if notifier.sender is not None:
            await notifier.sender.close()
    outcomes = Counter(r.outcome for r in results)
    logger.info("failure digests: %s; %d old log entries removed", dict(outcomes), removed)


@bp.timer_trigger(schedule="%NOTIFY_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def notify_timer(timer: func.TimerRequest) -> None:
    """Email each tenant's operators one digest of the failures since the last one."""
    await run_notifications(await get_runtime())
