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

This module is the host (:class:`LocalFunctionsHost`: routing, the host's limits, serving) and its
command line; the rest is by concern, its public names re-exported here: the routes
(:mod:`devtools.localhost_routes`), request and response conversion (:mod:`devtools.localhost_http`),
the timers (:mod:`devtools.localhost_timers`), configuration and limits (:mod:`devtools.localhost_config`).
All of them log to the ``devtools.localhost`` logger.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import azure.functions as func
from aiohttp import web

from devtools.localhost_config import (
    APP_MAX_BODY_BYTES,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEAD_TIMEOUT,
    HOST_BODY_FACTOR,
    PROJECT_ROOT,
    host_body_limit,
    load_app,
    load_local_settings,
    read_route_prefix,
)
from devtools.localhost_http import _Context, _safe_target, _to_web_response, http_request
from devtools.localhost_routes import DEFAULT_ROUTE_PREFIX, Route, UnsupportedRoute, compile_route, http_routes
from devtools.localhost_timers import Timer, TimerRunner, UnknownTimer, schedule_interval, timer_functions

__all__ = [
    "APP_MAX_BODY_BYTES",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEAD_TIMEOUT",
    "DEFAULT_ROUTE_PREFIX",
    "HOST_BODY_FACTOR",
    "PROJECT_ROOT",
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

READ_CHUNK = 64 * 1024


class LocalFunctionsHost(TimerRunner):
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
        req = http_request(request, route_params, body)
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
        return _to_web_response(route, result)

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
        await self._stop_timers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


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
    terminated = _stop_on_sigterm()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if not terminated:
            raise
        # SIGTERM is how a supervisor (make, a terminal's job control, a test) stops the host: a
        # normal end, not an error, so serve returns and the process exits without a traceback.
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        log.info("SIGTERM: stopping")
    finally:
        await local.stop()
        await close_app_runtime()


def _stop_on_sigterm() -> list[bool]:
    """While serving, SIGTERM cancels the serving task, once (its ``finally`` stops the timers and
    closes the runtime; a second SIGTERM, such as make's, does not cut that short). Before this,
    :func:`main`'s handler raised KeyboardInterrupt wherever the loop happened to be, which could
    land in a request's or the runtime's task ("Task exception was never retrieved"). Returns a
    list that is non-empty once SIGTERM came (the cancellation is then a normal stop)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopping: list[bool] = []
    if task is None:
        return stopping

    def cancel_once() -> None:
        if not stopping:
            stopping.append(True)
            task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals here (Windows, a thread)
        loop.add_signal_handler(signal.SIGTERM, cancel_once)
    return stopping


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
        module.reset_runtime()  # type: ignore[union-attr]  # the module found above is the app's runtime module


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
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
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
