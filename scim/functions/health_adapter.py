"""The Azure Functions HTTP trigger of the health check: ``GET /api/health`` (issue 15).

It answers one question, for a platform or an uptime monitor: can this instance reach its table
storage, without which it serves nothing?

- ``200 {"status":"ok"}``: storage answered;
- ``503 {"status":"unavailable"}`` with ``Retry-After``: storage refused, reset, failed or did
  not answer within :data:`TIMEOUT` seconds (or the runtime could not be built).

Both carry ``Cache-Control: no-store``; nothing else is ever in the answer (no tenant, no error,
no version). It is anonymous: the platform's probe sends no credentials.

**The check** is one point read of the tenant row of :data:`PROBE_TENANT` (a name no tenant
needs to have) through :meth:`scim.tenants.TenantRegistry.read_credentials`: the very call that
authenticates every SCIM request, with the store's timeouts and retries (an unreachable storage
fails it in under 1 s when it refuses or resets, in about 12 s when it hangs; :data:`TIMEOUT`
caps it at 10 s whatever happens). It writes no row. Like every first storage call of a
process, it makes sure the ``{prefix}tenants`` table exists (once per process: in Azure
``infra/`` created it, and creating a table there is refused and taken as provisioned). Requests
arriving together share one read, and a result is reused for :data:`REUSE_SECONDS` (1 s), so an
anonymous caller cannot turn the endpoint into a storage load: at most one read per second per
instance, whatever the request rate.

**What the platforms do with it** (learn.microsoft.com, "Monitor App Service instances by using
Health check" and, for Functions, "Monitor function apps using Health check" in "Configure
monitoring for Azure Functions"): App Service's Health check pings the configured path (here
``/api/health``: host.json's route prefix is empty) on every instance every minute; a status from
200 to 299 is healthy; an instance that fails the configured number of pings (default 10, at
least 2: ``WEBSITE_HEALTHCHECK_MAXPINGFAILURES``) or does not answer within a minute is taken out
of the load balancer, and replaced after an hour of failing. The function serving the path must
allow anonymous access, and a 5xx is the documented answer when a critical dependency cannot be
reached. **Limitation: that Health check is an option on the Premium and Dedicated plans only,
not on Flex Consumption** (nor Consumption), where this app runs (``infra/``): there the platform
does not call the endpoint and manages instances itself; point an external monitor at it (an
Application Insights availability test, a load balancer's or Front Door's probe, an uptime
service), and keep it in mind for a move to a Premium or Dedicated plan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import azure.functions as func

from scim.functions.runtime import Runtime, get_runtime
from scim.store.base import StoreUnavailable

__all__ = ["PROBE_TENANT", "RETRY_AFTER", "REUSE_SECONDS", "ROUTE", "TIMEOUT", "bp", "handle_health"]

logger = logging.getLogger("scim.health")

ROUTE = "api/health"
"""The route (host.json's route prefix is empty, so this is the whole path)."""
PROBE_TENANT = "health-probe"
"""The tenant name whose row the check reads (a valid name: an invalid one is refused before any read)."""
TIMEOUT = 10.0
"""Seconds the check waits for storage at most (the store's own bounds answer sooner)."""
REUSE_SECONDS = 1.0
"""Seconds a finished check's result answers later requests."""
RETRY_AFTER = 5
"""``Retry-After`` (seconds) of a 503."""

OK = b'{"status":"ok"}'
UNAVAILABLE = b'{"status":"unavailable"}'
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions declares no types for it


@dataclass
class _Check:
    """One storage check: the runtime and event loop it runs for, and its task."""

    runtime: Runtime
    loop: asyncio.AbstractEventLoop
    task: asyncio.Task[tuple[bool, float]]

    def answers(self, runtime: Runtime, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this check answers a request now: the same runtime and loop, and running or
        finished less than :data:`REUSE_SECONDS` ago."""
        if self.runtime is not runtime or self.loop is not loop or self.task.cancelled():
            return False
        return not self.task.done() or time.monotonic() - self.task.result()[1] < REUSE_SECONDS


_last: _Check | None = None


async def _read(runtime: Runtime) -> tuple[bool, float]:
    """One bounded point read; (reachable, when it finished). Never raises."""
    try:
        async with asyncio.timeout(TIMEOUT):
            await runtime.tenants.read_credentials(PROBE_TENANT)
        reachable = True
    except (StoreUnavailable, TimeoutError) as exc:
        logger.warning("health check: storage unavailable (%s)", type(exc).__name__)
        reachable = False
    except Exception:  # anything else also means this instance cannot serve
        logger.exception("health check: the storage read failed")
        reachable = False
    return reachable, time.monotonic()


async def storage_reachable(runtime: Runtime) -> bool:
    """Whether storage answers (one read shared by concurrent callers, reused for a second)."""
    global _last
    loop = asyncio.get_running_loop()
    check = _last
    if check is None or not check.answers(runtime, loop):
        check = _Check(runtime, loop, loop.create_task(_read(runtime)))
        _last = check
    reachable, _ = await asyncio.shield(check.task)
    return reachable


def _answer(reachable: bool) -> func.HttpResponse:
    headers = dict(HEADERS) if reachable else {**HEADERS, "Retry-After": str(RETRY_AFTER)}
    return func.HttpResponse(
        body=OK if reachable else UNAVAILABLE,
        status_code=200 if reachable else 503,
        headers={**headers, "Content-Type": "application/json; charset=utf-8"},
        mimetype="application/json",
        charset="utf-8",
    )


async def handle_health(req: func.HttpRequest) -> func.HttpResponse:
    """Answer one health check (see the module docstring); the request itself is not read."""
    try:
        runtime = await get_runtime()
    except Exception:
        logger.exception("health check: the runtime could not be built")
        return _answer(False)
    return _answer(await storage_reachable(runtime))


@bp.route(route=ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    """Whether this instance reaches its storage: 200 or 503, no data."""
    return await handle_health(req)
