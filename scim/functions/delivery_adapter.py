"""The Azure Functions timer that keeps webhook delivery going (issue 12, "Webhooks").

Deliveries start on the instance that committed the events (the HTTP adapter pokes the
engine after every write: :meth:`scim.webhooks.delivery.DeliveryEngine.poke`). This timer is the durable
half: every :data:`SCHEDULE` (10 s; NCRONTAB with seconds) it hands every tenant to
:meth:`~scim.webhooks.delivery.DeliveryEngine.sweep`, which delivers wherever there is work and no
deliverer: the events of an instance that died or was frozen right after its commit, and the
lanes whose retry is due. The Functions host runs a timer function on one instance at a time
and waits for a run to end before the next (``use_monitor`` keeps the schedule across restarts).
"""

from __future__ import annotations

import logging

import azure.functions as func

from scim.functions.runtime import Runtime, get_runtime
from scim.telemetry import instruments

__all__ = ["SCHEDULE", "bp", "run_delivery_sweep"]

logger = logging.getLogger("scim.webhooks.delivery")

SCHEDULE = "*/10 * * * * *"
"""Every 10 seconds (the sixth NCRONTAB field is the seconds)."""

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions declares no types for it


async def run_delivery_sweep(runtime: Runtime) -> None:
    """One sweep over every tenant (:meth:`~scim.webhooks.delivery.DeliveryEngine.sweep`)."""
    tenants = [info.name for info in await runtime.tenants.list()]
    await runtime.delivery().sweep(tenants)


@bp.timer_trigger(schedule=SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=False)
async def webhook_timer(timer: func.TimerRequest) -> None:
    """Deliver what no instance is delivering: events left behind, retries that are due.

    Quiet for telemetry (:func:`scim.telemetry.instruments.quiet`): the sweep's storage calls
    (every tenant's state, every 10 s) make no spans; its deliveries are spans of their own
    (``scim.webhook.deliver``), and it records each tenant's ``scim.webhook.backlog_age``."""
    runtime = await get_runtime()
    with instruments.quiet():
        await run_delivery_sweep(runtime)
