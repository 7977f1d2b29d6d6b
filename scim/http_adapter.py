"""The Azure Functions HTTP trigger: the thin adapter between HTTP and :class:`ScimService`.

Every SCIM request of every tenant arrives at ``/scim/{tenant}/{*path}`` (host.json sets an
empty route prefix, so the Tenant URL is ``https://<app>/scim/<tenant>``). This module
authenticates the bearer token (RFC 6750), enforces the body size limit (413), and is the
one choke point that turns errors into SCIM error responses: client errors are logged at
INFO without detail (details can hold userNames), anything else is a bug logged with its
traceback while the client gets a generic 500 (ENTRA.md §5: never a stack trace).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import azure.functions as func

from .errors import PayloadTooLarge, ScimError, Unauthorized
from .runtime import get_runtime
from .service import ScimRequest, ScimResponse
from .tenants import InvalidTenantName, validate_tenant_name

__all__ = ["SCIM_CONTENT_TYPE", "bp", "handle_http"]

logger = logging.getLogger("scim.http")

# azure-core logs every storage request URL at INFO; our RowKeys carry userNames and emails.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

SCIM_CONTENT_TYPE = "application/scim+json"
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

bp = func.Blueprint()


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
    body = json.dumps(response.body, ensure_ascii=False, separators=(",", ":"))
    headers["Content-Type"] = f"{SCIM_CONTENT_TYPE}; charset=utf-8"
    return func.HttpResponse(
        body=body.encode("utf-8"),
        status_code=response.status,
        headers=headers,
        mimetype=SCIM_CONTENT_TYPE,
        charset="utf-8",
    )


def _error(error: ScimError) -> func.HttpResponse:
    return _to_http(ScimResponse(error.status, error.to_json(), dict(error.headers)))


async def handle_http(req: func.HttpRequest) -> func.HttpResponse:
    """Answer one SCIM HTTP request (all tenants, all endpoints)."""
    started = time.perf_counter()
    tenant = req.route_params.get("tenant", "")
    status = 500
    try:
        response = await _handle(req, tenant)
        status = response.status_code
        return response
    except ScimError as error:
        status = error.status
        return _error(error)
    except Exception:
        logger.exception("Unhandled error in %s %s", req.method, _route_kind(req))
        status = 500
        return _error(_InternalError("An internal error occurred; it has been logged."))
    finally:
        logger.info(
            "%s %s -> %d in %.1f ms", req.method, _route_kind(req), status, (time.perf_counter() - started) * 1000
        )


class _InternalError(ScimError):
    status = 500


def _route_kind(req: func.HttpRequest) -> str:
    """The endpoint without ids or query values, for logs (no identifiers of people in logs)."""
    path = (req.route_params.get("path") or "").strip("/")
    head = path.split("/", 1)[0] if path else ""
    return f"/{head}{'/{id}' if '/' in path else ''}"


async def _handle(req: func.HttpRequest, tenant: str) -> func.HttpResponse:
    headers = {k.lower(): v for k, v in req.headers.items()}
    runtime = await get_runtime()
    token = _bearer_token(headers)
    try:
        validate_tenant_name(tenant)
    except InvalidTenantName:
        raise Unauthorized() from None
    if token is None or not await runtime.tenants.authenticate(tenant, token):
        raise Unauthorized()
    declared = headers.get("content-length")
    limit = runtime.settings.max_body_bytes
    if declared and declared.isdigit() and int(declared) > limit:
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
    return _to_http(await runtime.service.handle(request))


def _query(req: func.HttpRequest) -> dict[str, Any]:
    return dict(req.params)


@bp.route(
    route="scim/{tenant}/{*path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
async def scim_endpoint(req: func.HttpRequest) -> func.HttpResponse:
    """The SCIM endpoint of every tenant (RFC 7644 §3)."""
    return await handle_http(req)
