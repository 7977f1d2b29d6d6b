"""Calls the registered Azure Functions entry points directly, with ``func.HttpRequest``.

Azure Functions Core Tools cannot be installed on our machines, so protocol tests call the
function that ``function_app.app`` registered, exactly as the Functions host would:
:class:`FunctionsClient` the SCIM endpoint of one tenant, :class:`EventsClient` the events feed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import azure.functions as func

import function_app

# FunctionApp.get_functions() may be called only once per app: keep what it returns.
REGISTERED: dict[str, Any] = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
SCIM_FUNCTION = REGISTERED["scim_endpoint"]
EVENTS_FUNCTION = REGISTERED["events_feed"]


@dataclass
class Response:
    """An HTTP response as a SCIM client sees it."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass
class FunctionsClient:
    """A SCIM client for one tenant that invokes the Functions entry point in-process."""

    tenant: str
    token: str | None
    base: str = "http://127.0.0.1:7071"
    default_headers: dict[str, str] = field(default_factory=dict)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        tenant: str | None = None,
        token: str | bool | None = True,
    ) -> Response:
        tenant = tenant or self.tenant
        all_headers = dict(self.default_headers)
        bearer = self.token if token is True else token
        if bearer:
            all_headers["Authorization"] = f"Bearer {bearer}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        if data:
            all_headers.setdefault("Content-Type", "application/scim+json; charset=utf-8")
        all_headers.update(headers or {})
        rest = path.lstrip("/")
        url = f"{self.base}/scim/{tenant}/{rest}"
        if params:
            url += "?" + urlencode(params)
        request = func.HttpRequest(
            method=method,
            url=url,
            headers=all_headers,
            params=params or {},
            route_params={"tenant": tenant, "path": rest},
            body=data,
        )
        response = await SCIM_FUNCTION(request)
        return Response(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.get_body() or b"",
        )

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any, **kw: Any) -> Response:
        return await self.request("POST", path, body, **kw)

    async def patch(self, path: str, body: Any, **kw: Any) -> Response:
        return await self.request("PATCH", path, body, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> Response:
        return await self.request("PUT", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> Response:
        return await self.request("DELETE", path, **kw)


@dataclass
class EventsClient:
    """A reader of the events feed (``GET /api/v1/tenants/{tenant}/events``) holding an
    application key, invoking the registered Functions entry point in-process."""

    key: str | None
    base: str = "http://127.0.0.1:7071"

    async def page(
        self,
        tenant: str,
        *,
        after: str | None = None,
        limit: int | str | None = None,
        key: str | bool | None = True,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One request; ``key=True`` sends this client's key, a string another, None/False none."""
        params = {name: str(value) for name, value in (("after", after), ("limit", limit)) if value is not None}
        bearer = self.key if key is True else key
        all_headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        all_headers.update(headers or {})
        url = f"{self.base}/api/v1/tenants/{tenant}/events" + ("?" + urlencode(params) if params else "")
        request = func.HttpRequest(
            method="GET", url=url, headers=all_headers, params=params, route_params={"tenant": tenant}, body=b""
        )
        response = await EVENTS_FUNCTION(request)
        return Response(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.get_body() or b"",
        )

    async def follow(self, tenant: str, *, after: str | None = None, limit: int | None = None) -> tuple[list, str]:
        """Every page from ``after`` until an empty one: the events, and the last ``next``."""
        events: list = []
        while True:
            response = await self.page(tenant, after=after, limit=limit)
            assert response.status == 200, response.body
            body = response.json
            events += body["data"]
            after = body["next"]
            if not body["data"]:
                return events, after
