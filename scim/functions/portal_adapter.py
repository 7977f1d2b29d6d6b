"""The Azure Functions HTTP trigger of the tenant portal (issue 14): ``/portal/{*path}``.

A thin adapter: it turns the ``func.HttpRequest`` into a :class:`~scim.portal.http.PortalRequest`,
hands it with the runtime to :func:`scim.portal.web.handle` (routes, sessions, authorization,
pages: see there) and turns the answer back into a ``func.HttpResponse``. It also gives the
portal its **probe** for Test connection: Entra's test request,
``GET /scim/{tenant}/Users?filter=userName eq "<guid>"`` with the pasted token, sent to the SCIM
function in-process (:func:`scim.functions.http_adapter.handle_http`, a synthetic request: no
network, the same authentication, answer and provisioning log entry as Entra's own); and the
operator's **Create tenant** and **Delete tenant** (:class:`RuntimeLifecycle`: the admin CLI's
:func:`~scim.admin.core.create_tenant_on` and :func:`~scim.admin.core.delete_tenant_on` on the
runtime). A response's cookies go out as one ``Set-Cookie`` header each (azure-functions sends
repeated ``Set-Cookie`` headers to the host as cookies).

Anonymous at the Functions level: the portal authenticates with its own session cookie. The
portal's modules are imported on its first request, not at the app's cold start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import azure.functions as func

from scim.functions.http_adapter import handle_http
from scim.functions.runtime import Runtime, get_runtime
from scim.portal.http import SECURITY_HEADERS, PortalRequest, PortalResponse

if TYPE_CHECKING:  # the portal's pages (Jinja2, cryptography, the notifier) load on its first request
    from scim.portal.connection import ProbeResult

__all__ = ["ROUTE", "RuntimeLifecycle", "bp", "handle_portal", "probe"]

logger = logging.getLogger("scim.portal")

ROUTE = "portal/{*path}"

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions declares no types for it


def _portal_request(req: func.HttpRequest) -> PortalRequest:
    headers = {k.lower(): v for k, v in req.headers.items()}
    return PortalRequest(
        method=req.method.upper(),
        path=req.route_params.get("path") or "",
        query=dict(req.params),
        headers=headers,
        body=(req.get_body() or b"") if req.method.upper() == "POST" else b"",
    )


def _http_response(response: PortalResponse) -> func.HttpResponse:
    mimetype, _, charset = response.content_type.partition("; charset=")
    answer = func.HttpResponse(
        body=response.body,
        status_code=response.status,
        headers=response.all_headers(),
        mimetype=mimetype,
        charset=charset or "utf-8",
    )
    for cookie in response.other_cookies:
        answer.headers.add_header("Set-Cookie", cookie)
    return answer


@dataclass(frozen=True)
class RuntimeLifecycle:
    """The portal's :class:`~scim.portal.context.TenantLifecycle` on ``runtime``: what ``tenant
    create`` and ``tenant delete`` do (:mod:`scim.admin.core`, imported on first use)."""

    runtime: Runtime

    async def create(self, name: str, notify: Sequence[str], expires: int | None) -> tuple[str, str | None, str | None]:
        from scim.admin.core import create_tenant_on

        made = await create_tenant_on(self.runtime, name, notify=notify, expires=expires)
        return made.token, made.token_id, made.expires

    async def delete(self, name: str) -> bool:
        from scim.admin.core import DeleteInterrupted, delete_tenant_on
        from scim.portal.context import TenantDeleteInterrupted

        try:
            return await delete_tenant_on(self.runtime, name)
        except DeleteInterrupted as exc:
            raise TenantDeleteInterrupted(str(exc)) from exc


async def probe(tenant: str, token: str, filter_: str) -> ProbeResult:
    """Entra's test request to ``tenant``'s SCIM endpoint, in-process."""
    from scim.portal.connection import ProbeResult

    runtime = await get_runtime()
    params = {"filter": filter_}
    request = func.HttpRequest(
        method="GET",
        url=f"{runtime.settings.tenant_url(tenant)}/Users?{urlencode(params)}",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/scim+json"},
        params=params,
        route_params={"tenant": tenant, "path": "Users"},
        body=b"",
    )
    response = await handle_http(request)
    try:
        body = json.loads(response.get_body() or b"null")
    except ValueError:
        body = None
    return ProbeResult(response.status_code, body)


async def handle_portal(req: func.HttpRequest) -> func.HttpResponse:
    """Answer one portal request."""
    from scim.portal.context import Portal
    from scim.portal.web import handle

    try:
        runtime = await get_runtime()
    except Exception:
        logger.exception("The portal could not start its runtime")
        return func.HttpResponse(
            body=b"The service is not available.",
            status_code=500,
            headers={**SECURITY_HEADERS, "Content-Type": "text/plain; charset=utf-8"},
            mimetype="text/plain",
            charset="utf-8",
        )
    return _http_response(await handle(_portal_request(req), Portal(runtime, probe, RuntimeLifecycle(runtime))))


@bp.route(route=ROUTE, methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def portal(req: func.HttpRequest) -> func.HttpResponse:
    """The tenant portal: pages for a tenant's IT admin, reached by a setup link."""
    return await handle_portal(req)
