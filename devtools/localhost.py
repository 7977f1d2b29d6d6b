"""Serve an Azure Functions (Python v2 model) ``FunctionApp`` over HTTP without ``func``.

For ``make run``, black-box tests and the bench where Azure Functions Core Tools are not
installed (where they are, ``func start`` serves the same app). It does what the Functions
host does for this app's HTTP and timer triggers, and no more:

- serves the ``httpTrigger`` functions of :meth:`azure.functions.FunctionApp.get_functions`,
  each at host.json's ``extensions.http.routePrefix`` (default ``api``) joined to its route;
- runs the ``timerTrigger`` functions whose schedule is a fixed interval (:func:`schedule_interval`:
  an NCRONTAB such as ``*/10 * * * * *`` or ``0 */10 * * * *``, or a ``hh:mm:ss`` TimeSpan;
  ``%NAME%`` is read from the environment), every interval from start-up (not aligned to the
  clock), ``run_on_startup`` ones at once too; like the Functions host, a run never overlaps
  the previous one (runs that fall due meanwhile are skipped). A timer that raises is logged and
  runs again at its next time; a schedule this host cannot read is logged and not run. Timers are
  cancelled when the host stops. Other triggers (queues, blobs, ...) are not run;
- routes: literal segments (case-insensitive), ``{name}`` and a last ``{*name}``, which also
  matches an empty remainder (then absent from ``route_params``, as with the Functions host);
  literals are tried before parameters. Any other template (constraints, optional or ``**``
  parameters, parameters inside a segment) is refused at start-up with
  :class:`UnsupportedRoute`, naming the function and route: serve such an app with ``func start``;
- builds an :class:`azure.functions.HttpRequest` (repeated headers joined with ", ", the first
  value of a repeated query parameter), awaits an ``async def`` handler or runs a plain one in
  a thread, and writes its :class:`azure.functions.HttpResponse` back; 404 with an empty body
  when no route or method matches, 500 with an empty body when the handler raises;
- the host's own limits: a body over :func:`host_body_limit` is refused with 413 and the
  connection closed (a declared ``Content-Length`` before any body is read and without
  ``100 Continue``; a chunked body as soon as it passes the limit, so it is never held);
  ``head_timeout`` seconds (15) to send a request line and headers, counted from connecting or
  from the previous response (so idle keep-alive connections close too); ``body_timeout``
  seconds (30) to send the body, else 408 and the connection is closed.

Auth levels are not enforced (``func start`` does not enforce them locally either). One access
line per request at INFO: method, path, query parameter *names*, status, time, never header or
query values, with control characters escaped.

Run: ``python -m devtools.localhost [--host 127.0.0.1] [--port 7071] [--app function_app:app]
[--root DIR] [--head-timeout 15] [--body-timeout 30] [--no-timers] [--timer NAME=SECONDS ...]``
(``PORT`` overrides the default port; ``--timer`` runs one timer at another interval).
``local.settings.json``'s ``Values`` are loaded into the environment without overriding it, as
``func`` does. On shutdown (Ctrl-C, SIGTERM) the timers are cancelled, then the app's process-wide
runtime, if one was built (:mod:`scim.functions.runtime`), is closed: its webhook deliverers stop
and give their leases back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import json
import logging
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import azure.functions as func
import azure.functions.timer as func_timer
from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "LocalFunctionsHost",
    "Route",
    "Timer",
    "UnknownTimer",
    "UnsupportedRoute",
    "close_app_runtime",
    "compile_route",
    "host_body_limit",
    "http_routes",
    "load_app",
    "load_local_settings",
    "read_route_prefix",
    "schedule_interval",
    "serve",
    "timer_functions",
]

log = logging.getLogger("devtools.localhost")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROUTE_PREFIX = "api"
APP_MAX_BODY_BYTES = 1024 * 1024  # SCIM_MAX_BODY_BYTES's default (scim.settings)
HOST_BODY_FACTOR = 4  # the host's limit, when not set, is this many times the app's
DEFAULT_HEAD_TIMEOUT = 15.0  # seconds to send a request line and headers
DEFAULT_BODY_TIMEOUT = 30.0  # seconds to send a request body
READ_CHUNK = 64 * 1024
_HOP_BY_HOP = {"connection", "content-length", "keep-alive", "transfer-encoding", "upgrade"}
_NO_BODY_STATUSES = {204, 304}

# one whole route segment: a literal, {name} or {*name}
_SEGMENT = re.compile(r"\{(?P<star>\*?)(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}|[^{}]+")


# --------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------


class UnsupportedRoute(ValueError):
    """A route template this host does not serve (it is not the Functions host)."""


class UnknownTimer(ValueError):
    """A timer interval given for a function the app has no timer of, or not positive."""


def compile_route(template: str, function_name: str = "?") -> tuple[re.Pattern[str], tuple[int, ...]]:
    """The regex over the (still percent-encoded) path for ``template``, and its precedence.

    Supported: literal segments, ``{name}`` and a last ``{*name}``; anything else raises
    :class:`UnsupportedRoute`. Precedence, per segment: 0 literal, 1 parameter, 2 catch-all
    (lower is tried first).
    """
    segments = template.strip("/").split("/") if template.strip("/") else []
    regex, precedence, names = "", [], set()
    for index, segment in enumerate(segments):
        m = _SEGMENT.fullmatch(segment)
        name = m["name"] if m else None
        sep = "/" if index else ""
        if m is None or (m["star"] and index < len(segments) - 1) or (name and name in names):
            raise UnsupportedRoute(
                f"function {function_name!r}: route {template!r} is not supported by devtools.localhost "
                f"(segment {segment!r}): it serves literal segments, {{name}} and a last {{*name}} "
                "only; change the route or serve the app with `func start`"
            )
        if name is None:
            regex += sep + re.escape(segment)
            precedence.append(0)
        elif m["star"]:  # matches the empty remainder too ("scim/t" and "scim/t/")
            regex += f"(?:{sep}(?P<{name}>.*))?"
            precedence.append(2)
        else:
            regex += f"{sep}(?P<{name}>[^/]+)"
            precedence.append(1)
        names.add(name)
    return re.compile(regex + "/?", re.IGNORECASE), tuple(precedence)


@dataclass(frozen=True)
class Route:
    """One HTTP-triggered function as the host sees it."""

    function_name: str
    template: str  # full template, route prefix included, no leading slash
    methods: frozenset[str] | None  # None: every method
    handler: Callable[..., Any]
    trigger_arg: str
    regex: re.Pattern[str] = field(repr=False)
    precedence: tuple[int, ...] = field(repr=False)
    wants_context: bool = False


def _value(enum_or_str: Any) -> str:
    return str(getattr(enum_or_str, "value", enum_or_str))


def _functions(app: func.FunctionApp) -> list[Any]:
    """``app.get_functions()`` (which validates the app), callable more than once."""
    # get_functions() records the names it saw and raises on a second call ("does not have a
    # unique function name"); clear that record for our call and put it back after, so the same
    # app can be served (or indexed by the real worker) again.
    seen, app.functions_bindings = getattr(app, "functions_bindings", None), None
    try:
        return list(app.get_functions())
    finally:
        app.functions_bindings = seen


def _wants_context(handler: Callable[..., Any]) -> bool:
    try:
        return "context" in inspect.signature(handler).parameters
    except (TypeError, ValueError):
        return False


def http_routes(app: func.FunctionApp, route_prefix: str = DEFAULT_ROUTE_PREFIX) -> list[Route]:
    """The app's HTTP-triggered functions, in the order they are tried.

    From ``app.get_functions()`` (which validates the app): for each function whose trigger is
    an ``httpTrigger``, its ``route`` (the function name when unset) under ``route_prefix``,
    ``methods``, the argument that receives the request and the user function.
    """
    routes: list[Route] = []
    for fn in _functions(app):
        trigger = fn.get_trigger()
        if trigger is None or trigger.get_binding_name() != "httpTrigger":
            continue
        handler = fn.get_user_function()
        name = fn.get_function_name() or handler.__name__
        route = str(getattr(trigger, "route", None) or name).strip("/")
        route = "/".join(p for p in (route_prefix.strip("/"), route) if p)
        regex, precedence = compile_route(route, name)
        methods = getattr(trigger, "methods", None)
        wants_context = _wants_context(handler)
        routes.append(
            Route(
                function_name=name,
                template=route,
                methods=frozenset(_value(m).upper() for m in methods) if methods else None,
                handler=handler,
                trigger_arg=trigger.name,
                regex=regex,
                precedence=precedence,
                wants_context=wants_context,
            )
        )
    routes.sort(key=lambda r: r.precedence)  # stable: registration order among equals
    return routes


# --------------------------------------------------------------------------------------
# Timers
# --------------------------------------------------------------------------------------

_SETTING = re.compile(r"%([^%]+)%")
_NUMBER = re.compile(r"\d+")
_EVERY = re.compile(r"\*/(\d+)")
_TIMESPAN = re.compile(r"(\d+):(\d{2}):(\d{2})")


@dataclass(frozen=True)
class Timer:
    """One timer-triggered function as the host sees it."""

    function_name: str
    schedule: str  # as declared (``%NAME%`` not yet resolved)
    interval: float | None  # seconds between runs; None: a schedule this host does not run
    handler: Callable[..., Any]
    trigger_arg: str
    run_on_startup: bool = False
    wants_context: bool = False


def schedule_interval(schedule: str, environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between the runs of a timer ``schedule``, when it is a fixed interval; else None.

    ``%NAME%`` is first replaced by the setting ``NAME`` of ``environ`` (None when unset, as the
    Functions host refuses to start then). Read: a ``hh:mm:ss`` TimeSpan, and the six-field
    NCRONTABs (seconds first) that repeat at a fixed interval: ``*/N * * * * *`` (N seconds),
    ``S */N * * * *`` (N minutes), ``S M */N * * *`` (N hours), ``S * * * * *`` (every minute),
    ``S M * * * *`` (every hour) and ``S M H * * *`` (every day), where S, M and H are numbers.
    """
    environ = os.environ if environ is None else environ
    missing = False

    def setting(m: re.Match[str]) -> str:
        nonlocal missing
        value = environ.get(m[1])
        missing = missing or not value
        return value or ""

    text = _SETTING.sub(setting, schedule).strip()
    if missing or not text:
        return None
    span = _TIMESPAN.fullmatch(text)
    if span:
        seconds = int(span[1]) * 3600 + int(span[2]) * 60 + int(span[3])
        return float(seconds) if seconds > 0 else None
    fields = text.split()
    if len(fields) != 6 or fields[3:] != ["*", "*", "*"]:
        return None
    sec, minute, hour = fields[:3]

    def every(field: str) -> int | None:
        m = _EVERY.fullmatch(field)
        return int(m[1]) if m and int(m[1]) > 0 else None

    def number(field: str) -> bool:
        return _NUMBER.fullmatch(field) is not None

    if every(sec) and minute == "*" and hour == "*":
        return float(every(sec) or 0)
    if not number(sec):
        return None
    if minute == "*" and hour == "*":
        return 60.0
    if every(minute) and hour == "*":
        return 60.0 * (every(minute) or 0)
    if not number(minute):
        return None
    if hour == "*":
        return 3600.0
    if every(hour):
        return 3600.0 * (every(hour) or 0)
    return 86400.0 if number(hour) else None


def timer_functions(app: func.FunctionApp, environ: Mapping[str, str] | None = None) -> list[Timer]:
    """The app's timer-triggered functions, with their interval (:func:`schedule_interval`)."""
    timers: list[Timer] = []
    for fn in _functions(app):
        trigger = fn.get_trigger()
        if trigger is None or trigger.get_binding_name() != "timerTrigger":
            continue
        handler = fn.get_user_function()
        schedule = str(getattr(trigger, "schedule", "") or "")
        timers.append(
            Timer(
                function_name=fn.get_function_name() or handler.__name__,
                schedule=schedule,
                interval=schedule_interval(schedule, environ),
                handler=handler,
                trigger_arg=trigger.name,
                run_on_startup=bool(getattr(trigger, "run_on_startup", False)),
                wants_context=_wants_context(handler),
            )
        )
    return timers


# --------------------------------------------------------------------------------------
# Configuration: host.json, local.settings.json, the app
# --------------------------------------------------------------------------------------


def read_route_prefix(root: str | os.PathLike[str] = PROJECT_ROOT) -> str:
    """``extensions.http.routePrefix`` of ``root/host.json``; "api" if unset or no host.json."""
    path = Path(root) / "host.json"
    if not path.is_file():
        return DEFAULT_ROUTE_PREFIX
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    prefix = ((data.get("extensions") or {}).get("http") or {}).get("routePrefix")
    return DEFAULT_ROUTE_PREFIX if prefix is None else str(prefix)


def load_local_settings(
    root: str | os.PathLike[str] = PROJECT_ROOT, environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Copy ``Values`` of ``root/local.settings.json`` into the environment, never overriding.

    Returns the names set. A missing file is fine (nothing is set).
    """
    environ = os.environ if environ is None else environ
    path = Path(root) / "local.settings.json"
    if not path.is_file():
        return []
    values = json.loads(path.read_text(encoding="utf-8-sig")).get("Values") or {}
    added = []
    for key, value in values.items():
        if key not in environ and value is not None:
            environ[key] = str(value)
            added.append(key)
    return added


def load_app(spec: str) -> func.FunctionApp:
    """Import ``module:attribute`` (default attribute ``app``) and return the FunctionApp."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    app: func.FunctionApp = getattr(module, attr or "app")
    if not hasattr(app, "get_functions"):
        raise TypeError(f"{spec} is not an azure.functions.FunctionApp")
    return app


def _positive_int(name: str, value: str | None) -> int | None:
    raw = (value or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{name} must be a positive whole number of bytes, not {raw!r}")
    return int(raw)


def host_body_limit(environ: Mapping[str, str] | None = None) -> int:
    """The host's largest request body, in bytes.

    ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`` (the Azure Functions host's own setting) when set, else
    :data:`HOST_BODY_FACTOR` times the app's ``SCIM_MAX_BODY_BYTES`` (1 MiB by default: 4 MiB).
    Bodies between the two limits reach the app, which answers its own SCIM 413.
    """
    environ = os.environ if environ is None else environ
    host = _positive_int("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", environ.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"))
    if host is not None:
        return host
    app = _positive_int("SCIM_MAX_BODY_BYTES", environ.get("SCIM_MAX_BODY_BYTES"))
    return HOST_BODY_FACTOR * (app or APP_MAX_BODY_BYTES)


# --------------------------------------------------------------------------------------
# The host
# --------------------------------------------------------------------------------------


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


class LocalFunctionsHost:
    """An aiohttp application serving the HTTP functions of a FunctionApp."""

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        route_prefix: str | None = None,
        root: str | os.PathLike[str] = PROJECT_ROOT,
        max_body_bytes: int | None = None,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        timers: bool = True,
        timer_intervals: Mapping[str, float] | None = None,
    ) -> None:
        """``max_body_bytes``: the host's body limit (default :func:`host_body_limit` of the
        environment); ``head_timeout``: seconds a connection gets to send a whole request line
        and headers, counted from connecting or from the end of the previous response (so it
        also closes idle keep-alive connections); ``body_timeout``: seconds to send the body.
        ``timers``: run the app's timer functions while serving (:func:`timer_functions`);
        ``timer_intervals``: seconds between runs by function name, instead of the schedule's
        (a name the app has no timer of is refused with :class:`UnknownTimer`)."""
        if head_timeout <= 0 or body_timeout <= 0:
            raise ValueError("head_timeout and body_timeout must be positive")
        self.root = Path(root)
        self.route_prefix = read_route_prefix(self.root) if route_prefix is None else route_prefix
        self.routes = http_routes(app, self.route_prefix)
        self.timers = timer_functions(app) if timers else []
        overrides = dict(timer_intervals or {})
        unknown = sorted(set(overrides) - {t.function_name for t in self.timers})
        if unknown or any(v <= 0 for v in overrides.values()):
            names = ", ".join(t.function_name for t in self.timers) or "none"
            raise UnknownTimer(
                f"--timer: {', '.join(unknown) or 'intervals must be positive'} (the app's timer functions: {names})"
            )
        self.timers = [
            dataclasses.replace(t, interval=overrides[t.function_name]) if t.function_name in overrides else t
            for t in self.timers
        ]
        self._timer_tasks: list[asyncio.Task[None]] = []
        self.max_body_bytes = host_body_limit() if max_body_bytes is None else max_body_bytes
        self.head_timeout = float(head_timeout)
        self.body_timeout = float(body_timeout)
        self.web_app = web.Application(client_max_size=self.max_body_bytes)
        # every path (an encoded newline too) comes to _dispatch, which does the routing
        self.web_app.router.add_route("*", r"/{tail:[\s\S]*}", self._dispatch, expect_handler=self._expect)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port: int | None = None

    def match(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None:
        """The route serving ``method raw_path`` (percent-encoded path) and its parameters."""
        path = raw_path.lstrip("/")
        for route in self.routes:
            m = route.regex.fullmatch(path)
            if m and (route.methods is None or method.upper() in route.methods):
                return route, {k: unquote(v) for k, v in m.groupdict().items() if v}
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        status, name = 500, "-"
        try:
            refused = self._refuse_declared_size(request)
            if refused is not None:
                status = refused.status
                return refused
            found = self.match(request.method, request.raw_path.split("?", 1)[0])
            if found is None:
                status = 404
                return web.Response(status=404)
            route, route_params = found
            name = route.function_name
            response = await self._invoke(request, route, route_params)
            status = response.status
            return response
        finally:
            log.info(
                "%s %s -> %s (%s) %.1f ms",
                request.method,
                _safe_target(request),
                status,
                name,
                (time.perf_counter() - started) * 1000,
            )

    # -- the host's request limits ------------------------------------------------------

    @staticmethod
    def _closing(status: int) -> web.Response:
        """An empty answer after which the connection is closed (the rest of the body unread)."""
        response = web.Response(status=status)
        response.force_close()
        return response

    def _refuse_declared_size(self, request: web.BaseRequest) -> web.Response | None:
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            log.warning(
                "%s %s: declared body of %s bytes is over the host limit of %s bytes -> 413",
                request.method,
                request.path,
                declared,
                self.max_body_bytes,
            )
            return self._closing(413)
        return None

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: a body the host would refuse is refused before the client sends it."""
        refused = self._refuse_declared_size(request)
        if refused is not None:
            return refused
        if request.version != (1, 1):
            return None  # HTTP/1.0 has no 100 Continue
        if request.headers.get("Expect", "").lower() != "100-continue":
            return self._closing(417)
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        """The body, read a chunk at a time: never more than the limit is held, and it must
        arrive within ``body_timeout`` seconds. A refusal closes the connection."""
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout):
                while chunk := await request.content.read(READ_CHUNK):
                    body += chunk
                    if len(body) > self.max_body_bytes:
                        log.warning(
                            "%s %s: body over the host limit of %s bytes -> 413",
                            request.method,
                            request.path,
                            self.max_body_bytes,
                        )
                        return self._closing(413)
        except TimeoutError:
            log.warning(
                "%s %s: body not received within %s s (%s bytes so far) -> 408",
                request.method,
                request.path,
                self.body_timeout,
                len(body),
            )
            return self._closing(408)
        return bytes(body)

    async def _invoke(self, request: web.Request, route: Route, route_params: dict[str, str]) -> web.Response:
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        req = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=_join_headers(request.headers.items()),
            params=_first_values(request.query.items()),
            route_params=route_params,
            body=body,
        )
        kwargs: dict[str, Any] = {route.trigger_arg: req}
        if route.wants_context:
            kwargs["context"] = _Context(route.function_name, str(self.root))
        try:
            if inspect.iscoroutinefunction(route.handler):
                result = await route.handler(**kwargs)
            else:
                result = await asyncio.to_thread(route.handler, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
        except Exception:
            log.exception("function %s raised", route.function_name)
            return web.Response(status=500)
        return self._to_web_response(route, result)

    @staticmethod
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
            headers["Content-Type"] = (
                f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
            )
        status = int(result.status_code)
        body = result.get_body() or b""
        if status in _NO_BODY_STATUSES or status < 200:
            body = b""
            headers.popall("Content-Type", None)
        return web.Response(status=status, body=body, headers=headers)

    # -- serving -----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 7071) -> int:
        """Listen on host:port (0: a free port); returns the port."""
        self._runner = web.AppRunner(
            self.web_app,
            access_log=None,
            handle_signals=False,
            # aiohttp starts this timer when a connection opens and again after each response,
            # and closes the connection if no complete request head has arrived when it fires:
            # a header-read timeout for half-sent requests and an idle keep-alive timeout at once.
            # (Arming it at connection open is recent aiohttp, aio-libs/aiohttp#13681, present in
            # 3.14.5; with an older aiohttp a first request could stall forever, which
            # tests/test_localhost.py's head-timeout test catches.)
            keepalive_timeout=self.head_timeout,
            # a refused body (413, 408) is not drained: the connection is closed at once
            lingering_time=0,
        )
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await self._site.start()
        server = self._site._server  # the only way to learn an auto port
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        self._start_timers()
        return self.port

    async def stop(self) -> None:
        """Cancel the timers (a run in progress too), then stop serving."""
        tasks, self._timer_tasks = self._timer_tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- timers --------------------------------------------------------------------------

    def _start_timers(self) -> None:
        if self._timer_tasks:
            return
        for timer in self.timers:
            if timer.interval is None:
                log.warning(
                    "timer %s: schedule %r is not a fixed interval this host can run (or names an unset "
                    "setting): not run; serve the app with `func start` to run it",
                    timer.function_name,
                    timer.schedule,
                )
                continue
            task = asyncio.create_task(self._timer_loop(timer, timer.interval), name=f"timer {timer.function_name}")
            self._timer_tasks.append(task)

    async def _timer_loop(self, timer: Timer, interval: float) -> None:
        """Run ``timer`` every ``interval`` seconds until cancelled; never two runs at once."""
        loop = asyncio.get_running_loop()
        if timer.run_on_startup:
            await self.run_timer(timer)
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            await self.run_timer(timer)
            next_at += interval
            now = loop.time()
            if next_at <= now:  # the run overran: the occurrences it covered are skipped
                next_at += ((now - next_at) // interval + 1) * interval

    async def run_timer(self, timer: Timer) -> bool:
        """One run of ``timer`` (its handler gets a ``TimerRequest``); False if it raised (logged)."""
        started = time.perf_counter()
        kwargs: dict[str, Any] = {timer.trigger_arg: func_timer.TimerRequest(past_due=False)}
        if timer.wants_context:
            kwargs["context"] = _Context(timer.function_name, str(self.root))
        try:
            if inspect.iscoroutinefunction(timer.handler):
                await timer.handler(**kwargs)
            else:
                result = await asyncio.to_thread(timer.handler, **kwargs)
                if inspect.isawaitable(result):
                    await result
        except Exception:
            log.exception("timer %s raised; it runs again at its next time", timer.function_name)
            return False
        log.debug("timer %s ran in %.1f ms", timer.function_name, (time.perf_counter() - started) * 1000)
        return True


async def serve(
    app: func.FunctionApp,
    host: str = "127.0.0.1",
    port: int = 7071,
    *,
    root: str | os.PathLike[str] = PROJECT_ROOT,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    timers: bool = True,
    timer_intervals: Mapping[str, float] | None = None,
) -> None:
    """Serve ``app`` (and run its timers) until cancelled (Ctrl-C); :class:`UnsupportedRoute`
    before listening. On the way out the timers are cancelled, then the app's runtime is closed
    (:func:`close_app_runtime`)."""
    local = LocalFunctionsHost(
        app,
        root=root,
        head_timeout=head_timeout,
        body_timeout=body_timeout,
        timers=timers,
        timer_intervals=timer_intervals,
    )
    await local.start(host, port)
    for route in local.routes:
        methods = ",".join(sorted(route.methods)) if route.methods else "*"
        log.info("%s: [%s] http://%s:%s/%s", route.function_name, methods, host, local.port, route.template)
    for timer in local.timers:
        if timer.interval is not None:
            log.info("%s: timer every %g s (schedule %r)", timer.function_name, timer.interval, timer.schedule)
    log.info("serving on http://%s:%s (route prefix %r)", host, local.port, local.route_prefix)
    log.info(
        "host limits: request body %s bytes, %.0f s to send a request head, %.0f s to send a body",
        local.max_body_bytes,
        local.head_timeout,
        local.body_timeout,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await local.stop()
        await close_app_runtime()


async def close_app_runtime() -> None:
    """Close this project's process-wide runtime (:mod:`scim.functions.runtime`) if the app built
    one: its webhook deliverers stop and give their leases back, its clients close. Nothing for an
    app that has none; a failure is logged."""
    module = sys.modules.get("scim.functions.runtime")
    runtime = getattr(module, "_runtime", None) if module is not None else None
    if runtime is None:
        return
    try:
        await runtime.close()
    except Exception:
        log.exception("closing the app's runtime failed")
    finally:
        module.reset_runtime()  # type: ignore[union-attr]


def _timer_interval(text: str) -> tuple[str, float]:
    name, sep, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = 0.0
    if not sep or not name.strip() or value <= 0:
        raise argparse.ArgumentTypeError(f"expected NAME=SECONDS (seconds > 0), not {text!r}")
    return name.strip(), value


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.localhost",
        description="Serve a FunctionApp's HTTP functions without Azure Functions Core Tools.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: $PORT or 7071")
    parser.add_argument("--app", default="function_app:app", help="module:attribute (default function_app:app)")
    parser.add_argument("--root", default=str(PROJECT_ROOT), help="folder of host.json / local.settings.json")
    parser.add_argument(
        "--head-timeout",
        type=float,
        default=DEFAULT_HEAD_TIMEOUT,
        help=f"seconds to send a request line and headers, and idle keep-alive (default {DEFAULT_HEAD_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT,
        help=f"seconds to send a request body (default {DEFAULT_BODY_TIMEOUT:.0f})",
    )
    parser.add_argument("--no-timers", action="store_true", help="do not run the app's timer functions")
    parser.add_argument(
        "--timer",
        action="append",
        type=_timer_interval,
        default=[],
        metavar="NAME=SECONDS",
        help="run timer function NAME every SECONDS instead of at its schedule's interval (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    root = Path(args.root).resolve()
    load_local_settings(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    app = load_app(args.app)
    port = args.port if args.port is not None else int(os.environ.get("PORT") or 7071)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even from a background job
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                serve(
                    app,
                    args.host,
                    port,
                    root=root,
                    head_timeout=args.head_timeout,
                    body_timeout=args.body_timeout,
                    timers=not args.no_timers,
                    timer_intervals=dict(args.timer),
                )
            )
    except (UnsupportedRoute, UnknownTimer) as refused:
        parser.exit(2, f"devtools.localhost: {refused}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
