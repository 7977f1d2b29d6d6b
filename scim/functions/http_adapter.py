"""The Azure Functions HTTP trigger: the thin adapter between HTTP and :class:`ScimService`.

Every SCIM request of every tenant arrives at ``/scim/{tenant}/{*path}`` (host.json sets an
empty route prefix, so the Tenant URL is ``https://<app>/scim/<tenant>``). This module
authenticates the bearer token (RFC 6750), enforces the body size limit (413), and is the
one choke point that turns errors into SCIM error responses: client errors are logged at
INFO without detail (details can hold userNames), anything else is a bug logged with its
traceback while the client gets a generic 500 (docs/ENTRA.md §5: never a stack trace). Every
authenticated request is recorded in the provisioning log, in the background, with the
``X-Correlation-ID`` returned to the client; unauthenticated requests to an existing tenant
are only counted, per minute, with no path and no body (anyone may send them).

A request authenticates with a Secret Token of the tenant or an OAuth access token issued to
one of its clients (:mod:`scim.credentials`, :mod:`scim.functions.oauth_adapter`). An
unauthenticated request costs the same whatever its body and whether its tenant exists: one
read of the tenant's credentials and constant-time comparisons, then 401; its body is never
parsed. An authenticated request's body is parsed once, by the service; the provisioning
log takes a failed create's ``userName`` from that parse.

Telemetry (:mod:`scim.telemetry`, when on): each request is one span, a child of the host's
invocation, with the storage calls under it, and is counted in the ``scim.requests``,
``scim.request.duration`` and ``scim.request.storage_calls`` metrics; its correlation id is
minted before it is handled and is on every log line of it (:func:`handle_http`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import azure.functions as func

from scim.core.errors import PayloadTooLarge, ScimError, ServiceUnavailable, Unauthorized
from scim.core.service import ScimRequest, ScimResponse
from scim.credentials import match
from scim.functions.runtime import Runtime, get_runtime
from scim.provisioning_log import LogEntry, format_time
from scim.store.base import StoreUnavailable
from scim.telemetry import instruments
from scim.telemetry.context import RequestScope, begin_request, end_request
from scim.tenants import InvalidTenantName, validate_tenant_name

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["SCIM_CONTENT_TYPE", "bp", "error_response", "handle_http"]

logger = logging.getLogger("scim.http")

SCIM_CONTENT_TYPE = "application/scim+json"
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions declares no types for it
_NO_INVOCATION = cast("func.Context", None)
"""``scim_endpoint``'s default context: none (the worker always passes one)."""


def _bearer_token(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _to_http(response: ScimResponse) -> func.HttpResponse:
    headers = {**SECURITY_HEADERS, **response.headers}
    if response.body is None:
        return func.HttpResponse(status_code=response.status, headers=headers)
    text = json.dumps(response.body, ensure_ascii=False, separators=(",", ":"))
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape it rather than fail outside every handler
        body = json.dumps(response.body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    headers["Content-Type"] = f"{SCIM_CONTENT_TYPE}; charset=utf-8"
    return func.HttpResponse(
        body=body,
        status_code=response.status,
        headers=headers,
        mimetype=SCIM_CONTENT_TYPE,
        charset="utf-8",
    )


def error_response(error: ScimError) -> ScimResponse:
    """A SCIM error response (RFC 7644 §3.12): its status, the error body and its headers
    (``WWW-Authenticate`` on 401, ``Retry-After`` on 503). The only renderer of errors:
    :meth:`ScimService.handle` raises them and :func:`handle_http` answers with this."""
    return ScimResponse(error.status, error.to_json(), dict(error.headers))


class _InternalError(ScimError):
    status = 500


@dataclass
class _Context:
    """What the provisioning log needs to know about a request once it is answered.

    ``tenant_checked``: its credentials were read; ``tenant_exists``: the tenant has a record
    (known only after its token hash was read);
    ``authenticated``: the bearer token matched; ``request``: the SCIM request handed to the
    service, whose body it parsed at most once (:meth:`ScimRequest.json`).
    """

    runtime: Runtime | None = None
    tenant_checked: bool = False
    tenant_exists: bool = False
    authenticated: bool = False
    request: ScimRequest | None = None


async def handle_http(req: func.HttpRequest, invocation: func.Context | None = None) -> func.HttpResponse:
    """Answer one SCIM HTTP request (all tenants, all endpoints), and record its outcome.

    The correlation id is minted first, so that every log line of the request carries it
    (:mod:`scim.telemetry.context`); it is the ``X-Correlation-ID`` of the answer, the
    provisioning log entry's, and the ``scim.correlation_id`` of the request's span. It is a
    fresh random id (``uuid4().hex``), not the trace id: the trace id is the Functions host's,
    which continues a caller's ``traceparent`` (so callers could choose it, and share it
    between requests), while a correlation id names one request, also in the provisioning log
    (part of its row key), and exists with telemetry off. ``invocation``: the host's context,
    whose ``trace_context`` makes the request's span a child of the host's invocation.
    """
    started = time.perf_counter()
    scope = begin_request(uuid.uuid4().hex)
    try:
        operation = _operation(req)
        tel = instruments.active()
        if tel is None:
            return await _serve(req, operation, scope, started, None)
        trace_parent, trace_state = _trace_context(invocation)
        route = "/scim/{tenant}" + operation.partition(" ")[2]
        with tel.request_span(operation, route, scope.correlation_id, trace_parent, trace_state) as span:
            return await _serve(req, operation, scope, started, span)
    finally:
        end_request(scope)


async def _serve(
    req: func.HttpRequest, operation: str, scope: RequestScope, started: float, span: Span | None
) -> func.HttpResponse:
    tenant = req.route_params.get("tenant", "")
    context = _Context()
    try:
        response = await _handle(req, tenant, context)
    except ScimError as error:
        response = error_response(error)
    except StoreUnavailable:
        # Storage is down or timed out (e.g. while authenticating): Entra should retry later.
        response = error_response(ServiceUnavailable())
    except Exception:
        logger.exception("Unhandled error in %s", operation)
        response = error_response(_InternalError("An internal error occurred; it has been logged."))
    elapsed_ms = (time.perf_counter() - started) * 1000
    response.headers["X-Correlation-ID"] = scope.correlation_id
    logger.info("%s -> %d in %.1f ms", operation, response.status, elapsed_ms)
    if context.runtime is not None and context.authenticated:
        entry = _log_entry(req, context.request, response, scope.correlation_id, elapsed_ms, operation)
        context.runtime.log_writer.submit(tenant, entry)
        if req.method in _WRITES:
            context.runtime.delivery().poke(tenant)  # its events, if any, to the webhooks now
    elif context.runtime is not None and context.tenant_exists:
        # Unauthenticated: no per-request entry (its path and body are the caller's), only a
        # count per minute, written in the background (see LogWriter.count_unauthenticated).
        context.runtime.log_writer.count_unauthenticated(tenant)
    tel = instruments.active()
    if tel is not None:
        tel.request_done(
            span,
            tenant=_tenant_label(tenant, context),
            operation=operation,
            status=response.status,
            elapsed_ms=elapsed_ms,
            storage_calls=scope.storage_calls,
        )
    return _to_http(response)


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def _operation(req: func.HttpRequest) -> str:
    """``METHOD /endpoint`` without ids (:func:`_route_kind`): logs, the provisioning log, telemetry."""
    method = req.method.upper()
    return f"{method if method in _METHODS else 'OTHER'} {_route_kind(req)}"


def _tenant_label(tenant: str, context: _Context) -> str:
    """The request's ``scim.tenant``: the tenant's name, :data:`~scim.telemetry.instruments.INVALID_TENANT`
    for a name that is not valid (never the caller's text), :data:`~scim.telemetry.instruments.UNKNOWN_TENANT`
    for a valid name of no tenant (a stranger's names would grow the number of series)."""
    try:
        validate_tenant_name(tenant)
    except InvalidTenantName:
        return instruments.INVALID_TENANT
    return instruments.UNKNOWN_TENANT if context.tenant_checked and not context.tenant_exists else tenant


def _trace_context(invocation: func.Context | None) -> tuple[str | None, str | None]:
    """The host's W3C ``traceparent`` and ``tracestate`` of this invocation, when it gave them."""
    trace = getattr(invocation, "trace_context", None)
    return getattr(trace, "trace_parent", None) or None, getattr(trace, "trace_state", None) or None


_ENDPOINTS = {
    name.lower(): name
    for name in ("Users", "Groups", "Schemas", "ResourceTypes", "ServiceProviderConfig", ".search", "Bulk", "Me")
}


def _route_kind(req: func.HttpRequest) -> str:
    """The endpoint without ids or query values, for logs: ``/Users/{id}``, ``/Groups``.

    Only the names of SCIM endpoints are ever written; anything else a caller puts in the path
    is ``/{other}``, so no identifier of a person, no attacker-chosen text and no control
    character reaches a log line or the provisioning log.
    """
    parts = [p for p in (req.route_params.get("path") or "").split("/") if p]
    if not parts:
        return "/"
    head = _ENDPOINTS.get(parts[0].lower(), "{other}")
    if len(parts) == 1:
        return f"/{head}"
    if len(parts) == 2 and parts[1] == ".search":
        return f"/{head}/.search"
    return f"/{head}/{{id}}" + ("/{other}" if len(parts) > 2 else "")


def _log_entry(
    req: func.HttpRequest,
    request: ScimRequest | None,
    response: ScimResponse,
    correlation_id: str,
    elapsed_ms: float,
    operation: str,
) -> LogEntry:
    """The provisioning log's record of an authenticated request (see :mod:`scim.provisioning_log`)."""
    parts = [p for p in (req.route_params.get("path") or "").split("/") if p]
    head = parts[0].lower() if parts else ""
    resource_type = {"users": "User", "groups": "Group"}.get(head)
    resource_id = parts[1][:100] if resource_type and len(parts) == 2 and parts[1] != ".search" else None
    body = response.body or {}
    if resource_type and resource_id is None and response.status == 201:
        resource_id = body.get("id")
    failed = response.status >= 400
    subject = None
    if failed and resource_type == "User" and req.method in ("POST", "PUT") and request is not None:
        subject = _user_name(request.parsed_json())
    return LogEntry(
        time=format_time(datetime.now(UTC)),
        operation=operation,
        status=response.status,
        correlation_id=correlation_id,
        duration_ms=round(elapsed_ms, 1),
        resource_type=resource_type,
        resource_id=resource_id,
        scim_type=body.get("scimType") if failed else None,
        detail=body.get("detail") if failed else None,
        subject=subject,
    )


def _user_name(parsed: Any) -> str | None:
    """The userName of a failed create/replace, so the operator knows which user to look at.

    Read from the body the service already parsed (never parsed a second time); None when
    the body was not parsed (it failed before, e.g. 413 or malformed JSON) or has none.
    """
    if not isinstance(parsed, dict):
        return None
    value = next((v for k, v in parsed.items() if isinstance(k, str) and k.lower() == "username"), None)
    return value[:256] if isinstance(value, str) else None


async def _handle(req: func.HttpRequest, tenant: str, context: _Context) -> ScimResponse:
    headers = {k.lower(): v for k, v in req.headers.items()}
    runtime = await get_runtime()
    context.runtime = runtime
    token = _bearer_token(headers)
    try:
        validate_tenant_name(tenant)
    except InvalidTenantName:
        raise Unauthorized() from None
    # The same work for every unauthenticated request: one read of the tenant's credentials,
    # one SHA-256 of the presented token compared in constant time with every stored hash (a
    # dummy when there is no tenant or no token), and a 401 before the body is looked at, so
    # neither the body nor the tenant's existence changes the answer or its cost (no
    # tenant-existence oracle). An expired, revoked or rotated-out token fails like a wrong one.
    stored = await runtime.tenants.read_credentials(tenant)
    context.tenant_checked = True
    context.tenant_exists = stored is not None
    now = datetime.now(UTC)
    found = match(stored, token or "", now)
    if token is None or stored is None or found is None:
        raise Unauthorized()
    if found.token is not None:
        runtime.token_use().note(tenant, stored, found.token, now)  # at most one write an hour, in the background
    context.authenticated = True
    declared = headers.get("content-length")
    limit = runtime.settings.max_body_bytes
    if declared and declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    body = req.get_body() or b""
    if len(body) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    request = ScimRequest(
        method=req.method,
        tenant=tenant,
        path="/" + (req.route_params.get("path") or ""),
        base_url=runtime.settings.tenant_url(tenant),
        query=_query(req),
        headers=headers,
        body=body,
    )
    context.request = request
    return await runtime.service.handle(request)


def _query(req: func.HttpRequest) -> dict[str, Any]:
    return dict(req.params)


@bp.route(
    route="scim/{tenant}/{*path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
async def scim_endpoint(req: func.HttpRequest, context: func.Context = _NO_INVOCATION) -> func.HttpResponse:
    """The SCIM endpoint of every tenant (RFC 7644 §3). ``context``: the host's invocation
    context (its ``trace_context`` parents the request's span); the worker requires this exact
    annotation (``azure.functions.Context``), and callers without one (tests) may leave it out."""
    return await handle_http(req, context)
