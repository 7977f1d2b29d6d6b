"""The service as the bench serves it: ``devtools.localhost``'s host in a child process, plus counters.

``python -m bench.server --port N --log FILE`` (with ``SCIM_TABLE_CONNECTION_STRING``,
``SCIM_TABLE_PREFIX`` and ``SCIM_PUBLIC_BASE_URL`` in the environment) serves
``function_app:app`` exactly as ``python -m devtools.localhost`` does, with two additions that
only the bench sees:

- **storage round trips per request.** The runtime is built by
  :func:`scim.functions.runtime.build_runtime` with one azure-core policy (installed with
  :func:`scim.functions.runtime.use_runtime`) that sees every HTTP request sent to storage, retries
  included. An aiohttp middleware puts a fresh per-request record in a
  :class:`contextvars.ContextVar` before the handler runs; every storage call made while
  handling the request runs in that task or in tasks created from it (``asyncio.gather``,
  the provisioning log's background write), which inherit the context, so each call is
  attributed to the request that caused it, whatever the concurrency. The response carries
  ``X-Bench-Storage: <directory>,<tenants>`` (the calls made before the response was
  sent); the provisioning log is written in the background after the response (a tenant's
  entries of 0.25 s in one transaction) and counted in the totals only (``/_bench/stats``).
  ``X-Bench-Storage-Detail`` adds a finer count of the same calls, ``name=count`` pairs:
  ``directory_queries`` (GETs of the directory's entity set, a query page each),
  ``directory_continuations`` (those that follow a continuation token) and ``app_keys``
  (point reads of the application keys' partition of the tenants table), for the feed's
  backlog benchmark (:mod:`bench.feed_backlog`).
- **``GET /_bench/stats``**: totals per table, requests, and this process's ``VmHWM``
  (peak RSS) and ``VmRSS`` from ``/proc/self/status``.

Everything else (routing, the handler, the Table client) is the app's own code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
_current: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar("bench_storage", default=None)
APP_KEY_PARTITION = "appkey"  # scim.store.app_keys_tables.APP_KEY_PARTITION (tests/test_bench_feed_backlog.py)
TOTALS: dict[str, int] = {"directory": 0, "tenants": 0, "log": 0, "other": 0, "requests": 0}


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmHWM / VmRSS (KiB) of a process, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def _classify(request: Any, prefix: str) -> str:
    http = request.http_request
    resource = http.url.split("?", 1)[0].rsplit("/", 1)[-1]
    if resource.startswith(f"{prefix}tenants"):
        return "tenants"
    if resource.startswith(f"{prefix}log"):
        return "log"
    if resource.startswith(f"{prefix}directory"):
        return "directory"
    if resource == "$batch":
        body = http.body or b""
        if not isinstance(body, bytes | bytearray):
            body = str(body).encode()
        if f"/{prefix}log(".encode() in body or f"/{prefix}log?".encode() in body:
            return "log"
        if f"/{prefix}directory".encode() in body:
            return "directory"
        if f"/{prefix}tenants".encode() in body:
            return "tenants"
    if resource == "Tables":  # create_table on first use
        return "other"
    return "other"


def _details(request: Any, kind: str) -> list[str]:
    """The finer kinds of a call (``X-Bench-Storage-Detail``), beside its table's ``kind``."""
    http = request.http_request
    path, _, query = http.url.partition("?")
    resource = unquote(path.rsplit("/", 1)[-1])
    out = []
    if kind == "directory" and http.method == "GET" and resource.endswith("()"):
        out.append("directory_queries")
        if "NextPartitionKey=" in query or "NextRowKey=" in query:
            out.append("directory_continuations")
    if kind == "tenants" and f"PartitionKey='{APP_KEY_PARTITION}'" in resource:
        out.append("app_keys")
    return out


class AttributingCounter:
    """azure-core policy (``on_request`` only, as :mod:`scim.store.roundtrips` calls it)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def on_request(self, request: Any) -> None:
        kind = _classify(request, self.prefix)
        TOTALS[kind] += 1
        record = _current.get()
        if record is not None:
            record[kind] = record.get(kind, 0) + 1
            for detail in _details(request, kind):
                record[detail] = record.get(detail, 0) + 1


def _middleware():  # type: ignore[no-untyped-def]
    from aiohttp import web

    @web.middleware
    async def count_storage(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path == "/_bench/stats":
            body = {"totals": dict(TOTALS), "status": proc_status(), "pid": os.getpid()}
            return web.json_response(body)
        TOTALS["requests"] += 1
        record: dict[str, int] = {"directory": 0, "tenants": 0}
        token = _current.set(record)
        try:
            response = await handler(request)
        finally:
            _current.reset(token)
        response.headers["X-Bench-Storage"] = f"{record['directory']},{record['tenants']}"
        response.headers["X-Bench-Storage-Detail"] = ",".join(f"{k}={v}" for k, v in sorted(record.items()))
        return response

    return count_storage


async def _serve(host: str, port: int, ready_file: str | None) -> None:
    from devtools.localhost import LocalFunctionsHost, load_app
    from scim.functions.runtime import build_runtime, use_runtime
    from scim.settings import Settings

    settings = Settings.from_env()
    runtime = build_runtime(settings, per_call_policies=[AttributingCounter(settings.table_prefix)])
    use_runtime(runtime)
    app = load_app("function_app:app")
    local = LocalFunctionsHost(app, root=ROOT)
    local.web_app.middlewares.append(_middleware())
    bound = await local.start(host, port)
    if ready_file:
        Path(ready_file).write_text(json.dumps({"port": bound, "pid": os.getpid()}))  # noqa: ASYNC240 - once, at start-up
    try:
        await asyncio.Event().wait()
    finally:
        await local.stop()
        await runtime.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", help="written with {port, pid} once listening")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
