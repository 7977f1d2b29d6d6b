"""The Azure Functions HTTP trigger of the change events feed (issue 12, "The feed (pull)").

``GET /api/v1/tenants/{tenant}/events?after={cursor}&limit={n}`` (host.json sets an empty route
prefix) answers one page of the tenant's feed, ``{"data": [events, oldest first], "next":
cursor}``, from :func:`scim.core.feed.read_page` (the cursor, the settle horizon and retention
are described there and in the README, "Events").

**Authentication** is an application key (:mod:`scim.app_keys`), sent as ``Authorization:
Bearer <key>``: the application this service provisions reads the feed, not Entra, so a
tenant's Secret Token is not accepted here (and an application key is not accepted by the SCIM
endpoint). A key reads the feed of every tenant. A missing, unknown or revoked key gets 401 with
``WWW-Authenticate: Bearer``, the same answer for the same work (one point read, one
constant-time comparison) before anything else is looked at: no tenant, parameter or cursor
is checked for an unauthenticated caller.

**Errors** are JSON, ``{"error": {"code": ..., "message": ...}}``:

====== ===================== ===================================================================
status code                  when
====== ===================== ===================================================================
400    ``invalid_limit``     ``limit`` is not a whole number from 1 to 1000
400    ``invalid_cursor``    ``after`` is not a cursor this feed issued for this tenant
401    ``unauthorized``      no application key, or not a valid one (revoked keys fail at once)
404    ``tenant_not_found``  no such tenant (an application key may read every tenant, so
                             telling it which exist reveals nothing it could not list)
410    ``cursor_expired``    the cursor is older than ``EVENTS_RETENTION_DAYS``: start again
503    ``unavailable``       storage failed or timed out; ``Retry-After`` says when to retry
500    ``internal_error``    a bug (logged with its traceback; never a stack trace in the answer)
====== ===================== ===================================================================

Every answer carries ``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff``. A
page costs the key's point read, then the tenant's record and one range query of its events,
in parallel. Log lines name the endpoint, the status and the time, never the tenant, the
cursor or the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import azure.functions as func

from scim.core.feed import FeedError, UnknownTenant, parse_limit, read_page
from scim.functions.runtime import Runtime, get_runtime
from scim.store.base import StoreUnavailable
from scim.tenants import ACTIVE, InvalidTenantName, validate_tenant_name

__all__ = ["ROUTE", "bp", "handle_events"]

logger = logging.getLogger("scim.events")

ROUTE = "api/v1/tenants/{tenant}/events"
"""The feed's route (host.json's route prefix is empty)."""
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
RETRY_AFTER = 5

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions declares no types for it


class _Failure(Exception):
    """An error answer of this endpoint (other than a :class:`~scim.core.feed.FeedError`)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _unauthorized() -> _Failure:
    return _Failure(
        401,
        "unauthorized",
        "Send an application key as 'Authorization: Bearer <key>' (python -m scim.admin app-key create NAME). "
        "A tenant's Secret Token is Entra's and is not accepted here.",
        {"WWW-Authenticate": "Bearer"},
    )


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in an event: escape it rather than fail
        data = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return func.HttpResponse(
        body=data,
        status_code=status,
        headers={**SECURITY_HEADERS, **(headers or {}), "Content-Type": JSON_CONTENT_TYPE},
        mimetype="application/json",
        charset="utf-8",
    )


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return _json(status, {"error": {"code": code, "message": message}}, headers)


def _bearer(req: func.HttpRequest) -> str:
    value = next((v for k, v in req.headers.items() if k.lower() == "authorization"), "") or ""
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _page(req: func.HttpRequest, runtime: Runtime) -> dict[str, Any]:
    """Authenticate, check the request, then read the tenant's record and one page in parallel."""
    if await runtime.app_keys.authenticate(_bearer(req)) is None:
        raise _unauthorized()
    tenant = req.route_params.get("tenant", "")
    try:
        validate_tenant_name(tenant)
    except InvalidTenantName:
        raise UnknownTenant(tenant) from None
    limit = parse_limit(req.params.get("limit"))
    after = req.params.get("after")
    settings = runtime.settings
    state, page = await asyncio.gather(
        runtime.tenants.state(tenant),
        read_page(
            runtime.store,
            tenant,
            after if after else None,
            limit,
            settle_seconds=settings.events_settle_seconds,
            retention_days=settings.events_retention_days,
        ),
        return_exceptions=True,
    )
    if isinstance(state, BaseException):
        raise state
    if state != ACTIVE:  # unknown, or being deleted
        raise UnknownTenant(tenant)
    if isinstance(page, BaseException):
        raise page
    return dict(page)


async def handle_events(req: func.HttpRequest) -> func.HttpResponse:
    """Answer one request of the events feed (see the module docstring)."""
    started = time.perf_counter()
    try:
        page = await _page(req, await get_runtime())
        response = _json(200, page)
    except _Failure as failure:
        response = _error(failure.status, failure.code, failure.message, failure.headers)
    except FeedError as error:
        response = _error(error.status, error.code, error.message)
    except StoreUnavailable:
        response = _error(
            503,
            "unavailable",
            "The service is temporarily unavailable; retry later.",
            {"Retry-After": str(RETRY_AFTER)},
        )
    except Exception:
        logger.exception("Unhandled error in GET /api/v1/tenants/{tenant}/events")
        response = _error(500, "internal_error", "An internal error occurred; it has been logged.")
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.info("GET /api/v1/tenants/{tenant}/events -> %d in %.1f ms", response.status_code, elapsed_ms)
    return response


@bp.route(route=ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def events_feed(req: func.HttpRequest) -> func.HttpResponse:
    """The change events feed of every tenant, for the provisioned application."""
    return await handle_events(req)
