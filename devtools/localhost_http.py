"""Between aiohttp and the function, for :mod:`devtools.localhost`: the
:class:`azure.functions.HttpRequest` a function gets (repeated headers joined with ", ", the
first value of a repeated query parameter), the ``context`` it may ask for, its
:class:`azure.functions.HttpResponse` written back as an aiohttp response (hop-by-hop headers
dropped, no body on 1xx, 204 and 304), and what of a request may go in a log line.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict

from devtools.localhost_routes import Route

__all__ = ["http_request"]

log = logging.getLogger("devtools.localhost")  # the host's one logger

_HOP_BY_HOP = {"connection", "content-length", "keep-alive", "transfer-encoding", "upgrade"}
_NO_BODY_STATUSES = {204, 304}


class _Context(func.Context):
    """The ``context`` argument a function may ask for."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self._info = (str(uuid.uuid4()), function_name, function_directory)

    invocation_id = property(lambda self: self._info[0])
    function_name = property(lambda self: self._info[1])
    function_directory = property(lambda self: self._info[2])
    trace_context = retry_context = thread_local_storage = property(lambda self: None)


def _safe_target(request: web.BaseRequest) -> str:
    """Path plus query parameter names, values elided: what may go in a log line. Control and
    other non-printable characters are escaped and the line is capped at 300 characters, so a
    caller's URL cannot forge log lines or drive a terminal (security review L1)."""
    names = list(dict.fromkeys(request.query.keys()))
    target = request.path + ("?" + "&".join(f"{n}=*" for n in names) if names else "")
    if not target.isprintable():
        target = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in target)
    return target if len(target) <= 300 else target[:299] + "…"


def _join_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for key, value in headers:
        k = key.lower()
        joined[k] = f"{joined[k]}, {value}" if k in joined else value
    return joined


def _first_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    first: dict[str, str] = {}
    for key, value in pairs:
        first.setdefault(key, value)
    return first


def http_request(request: web.BaseRequest, route_params: dict[str, str], body: bytes) -> func.HttpRequest:
    """The :class:`azure.functions.HttpRequest` a function gets for ``request``."""
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=_join_headers(request.headers.items()),
        params=_first_values(request.query.items()),
        route_params=route_params,
        body=body,
    )


def _to_web_response(route: Route, result: Any) -> web.Response:
    if isinstance(result, str):
        result = func.HttpResponse(result)
    if not isinstance(result, func.HttpResponse):
        log.error("function %s returned %s, not an HttpResponse", route.function_name, type(result).__name__)
        return web.Response(status=500)
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in result.headers.items():
        if key.lower() not in _HOP_BY_HOP:
            headers.add(key, value)
    if "content-type" not in headers:
        mimetype = result.mimetype
        headers["Content-Type"] = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
    status = int(result.status_code)
    body = result.get_body() or b""
    if status in _NO_BODY_STATUSES or status < 200:
        body = b""
        headers.popall("Content-Type", None)
    return web.Response(status=status, body=body, headers=headers)
