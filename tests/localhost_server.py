"""The app served over real HTTP, as a subprocess, for black-box tests (newman, scim2-tester).

Loaded as a pytest plugin (``pytest_plugins`` in ``tests/conftest.py``, or ``-p tests.localhost_server``).

- ``local_server`` (session): ``python -m devtools.localhost`` on a free port of 127.0.0.1, talking to
  the session's Azurite (``azurite`` fixture) with the session's ``table_prefix``. The value has
  ``.base_url``, ``.port``, ``.settings`` (the app's :class:`scim.settings.Settings`), ``.pid``,
  ``.log_path`` and ``.create_tenant()``. Stopped by its PID at the end (SIGTERM, wait, SIGKILL).
- :func:`create_fresh_tenant`: a new tenant (random name) through ``scim.admin.core.create_tenant``
  with the same settings; returns its Credentials (``tenant``, ``url``, ``token``).
- :func:`record_summary`: black-box tests store a plain-text summary here; a
  ``pytest_terminal_summary`` hook prints every stored summary at the end of the run, so it shows
  under ``pytest -q`` whether the tests passed or not.

For the scale-out, crash and outage tests (issue 15), several app processes a test controls:

- :func:`app_processes`: N children ``python -m devtools.localhost`` on free ports of one storage
  and table prefix (extra environment and arguments allowed), each an :class:`AppProcess` that
  can be killed with SIGKILL and started again on its port; every one is stopped by its PID when
  the ``with`` block ends, whatever happened in it;
- :class:`HttpScimClient`: a SCIM client of one tenant over real HTTP (aiohttp), sending each
  request to the next of several base URLs in turn (round-robin); a request that gets no answer
  raises :class:`NoAnswer`;
- :class:`WebhookReceiver`: an aiohttp receiver on 127.0.0.1 that verifies every delivery with
  ``standardwebhooks`` and keeps what arrived, in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from devtools.azurite import PROJECT_ROOT, free_port
from devtools.children import app_env, stop_child
from scim.admin.core import Credentials, create_tenant
from scim.settings import Settings

__all__ = [
    "AppProcess",
    "HttpScimClient",
    "LocalServer",
    "NoAnswer",
    "WebhookReceiver",
    "app_processes",
    "create_fresh_tenant",
    "record_summary",
]

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# (title, text) pairs printed by pytest_terminal_summary, in the order they were recorded.
_SUMMARIES: list[tuple[str, str]] = []


def record_summary(title: str, text: str) -> None:
    """Keep ``text`` to print at the end of the run under a ``title`` separator."""
    _SUMMARIES.append((title, text))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for title, text in _SUMMARIES:
        terminalreporter.write_sep("=", title)
        for line in text.rstrip("\n").splitlines():
            terminalreporter.write_line(line)


def _run_coroutine(coro_factory):  # type: ignore[no-untyped-def]
    """Run a coroutine to completion on a fresh loop in a worker thread.

    Keeps clear of the event loop pytest-asyncio shares across the session (a sync fixture or
    test must not call ``asyncio.run`` on the main thread: it would reset the current loop).
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result(timeout=60)


def create_fresh_tenant(settings: Settings, prefix: str = "bb") -> Credentials:
    """Create a tenant with a random name (``<prefix>-<8 hex>``) and return its Credentials."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    return _run_coroutine(lambda: create_tenant(settings, name))


@dataclass
class LocalServer:
    base_url: str
    port: int
    settings: Settings
    env: dict[str, str]
    pid: int
    log_path: Path

    def create_tenant(self, prefix: str = "bb") -> Credentials:
        return create_fresh_tenant(self.settings, prefix)

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def _answers(port: int, timeout: float = 1.0) -> bool:
    """True when anything HTTP answers on 127.0.0.1:port (any status: 404 for ``/`` is fine)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _start(connection_string: str, prefix: str, workdir: Path) -> tuple[subprocess.Popen[bytes], LocalServer]:
    last_error = ""
    for attempt in range(3):  # a free port can be taken between our pick and the child's bind
        port = free_port(HOST)
        env = app_env(connection_string, prefix, HOST, port)
        log_path = workdir / f"localhost-{attempt}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "devtools.localhost", "--host", HOST, "--port", str(port)],
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = LocalServer(
            base_url=f"http://{HOST}:{port}",
            port=port,
            settings=Settings.from_env(env),
            env=env,
            pid=proc.pid,
            log_path=log_path,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                last_error = f"exited with code {proc.returncode}:\n{server.log_tail()}"
                break
            if _answers(port):
                return proc, server
            if time.monotonic() > deadline:
                stop_child(proc, timeout=STOP_TIMEOUT)
                raise RuntimeError(
                    f"devtools.localhost did not answer on {server.base_url} within {STARTUP_TIMEOUT:.0f}s:\n"
                    f"{server.log_tail()}"
                )
            time.sleep(0.1)
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(f"devtools.localhost could not start: {last_error}")


# ---- several app processes a test controls (issue 15) -------------------------------------------


@dataclass
class AppProcess:
    """One ``python -m devtools.localhost`` child on a fixed port, which a test may kill with
    SIGKILL (:meth:`kill`) and start again on the same port (:meth:`restart`); its output of every
    start goes to one log file. :meth:`stop` stops it by its PID (SIGTERM, then SIGKILL)."""

    server: LocalServer
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    start_seconds: list[float] = field(default_factory=list)
    """How long each start took until the host answered."""

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Start the host on its port and return once it answers HTTP."""
        if self.alive:
            raise RuntimeError(f"{self.server.base_url} is running")
        port = self.server.port
        with open(self.server.log_path, "ab") as log:
            log.write(f"---- start {self.starts + 1} ----\n".encode())
            log.flush()
            started = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devtools.localhost", "--host", HOST, "--port", str(port), *self.args],
                cwd=PROJECT_ROOT,
                env=self.server.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.server.pid = self.proc.pid
        self.starts += 1
        deadline = started + timeout
        while not _answers(port, timeout=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                stop_child(self.proc, timeout=STOP_TIMEOUT)
                raise RuntimeError(f"devtools.localhost did not answer on {self.base_url}:\n{self.server.log_tail()}")
            time.sleep(0.02)
        self.start_seconds.append(time.monotonic() - started)

    def kill(self) -> None:
        """SIGKILL, by the child's own PID (it gets no chance to clean up), and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)
        self.kills += 1

    def restart(self, timeout: float = STARTUP_TIMEOUT) -> None:
        self.kill()
        self.start(timeout)

    def stop(self) -> int | None:
        """SIGTERM (the host stops its timers and closes its runtime), then SIGKILL after
        STOP_TIMEOUT; returns the exit code (None if it was not running)."""
        if self.proc is None:
            return None
        stop_child(self.proc, timeout=STOP_TIMEOUT)
        return self.proc.returncode


@contextlib.contextmanager
def app_processes(
    count: int,
    connection_string: str,
    prefix: str,
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    unset: Sequence[str] = ("NOTIFY_SCHEDULE",),
) -> Iterator[list[AppProcess]]:
    """``count`` independent app processes on free ports of 127.0.0.1, each serving the tables
    ``{prefix}*`` of ``connection_string``, started and answering; ``env`` is added to each one's
    environment (:func:`devtools.children.app_env`, without the variables named in ``unset``),
    ``args`` to its command line. Every one is stopped by its PID on the way out."""
    apps: list[AppProcess] = []
    try:
        for n in range(count):
            port = free_port(HOST)
            child_env = app_env(connection_string, prefix, HOST, port)
            for name in unset:
                child_env.pop(name, None)
            child_env.update(env or {})
            server = LocalServer(
                base_url=f"http://{HOST}:{port}",
                port=port,
                settings=Settings.from_env(child_env),
                env=child_env,
                pid=0,
                log_path=workdir / f"app-{n}.log",
            )
            app = AppProcess(server, tuple(args))
            apps.append(app)
            app.start()
        yield apps
    finally:
        for app in apps:
            app.stop()


class NoAnswer(Exception):
    """The request got no HTTP answer (connection refused, reset or closed, or timed out)."""


@dataclass
class HttpScimClient:
    """A SCIM client of one tenant over HTTP, each request to the next of ``bases`` in turn.

    ``session`` is an ``aiohttp.ClientSession`` (its connections are this client's); answers are
    :class:`tests.functions_client.Response`. A request without an answer raises :class:`NoAnswer`.
    """

    tenant: str
    token: str
    bases: Sequence[str]
    session: Any
    timeout: float = 30.0
    sent: int = 0

    def next_base(self) -> str:
        base = self.bases[self.sent % len(self.bases)]
        self.sent += 1
        return base

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        token: str | None = None,
        base: str | None = None,
    ) -> Any:
        import aiohttp

        from tests.functions_client import Response

        url = f"{base or self.next_base()}/scim/{self.tenant}/{path.lstrip('/')}"
        if params:
            url += "?" + urlencode(params)
        headers = {"Authorization": f"Bearer {token or self.token}"}
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/scim+json"
        try:
            async with self.session.request(
                method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as answer:
                return Response(answer.status, {k.lower(): v for k, v in answer.headers.items()}, await answer.read())
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise NoAnswer(f"{method} {url}: {type(exc).__name__}") from exc

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any, **kw: Any) -> Any:
        return await self.request("POST", path, body, **kw)

    async def patch(self, path: str, body: Any, **kw: Any) -> Any:
        return await self.request("PATCH", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> Any:
        return await self.request("DELETE", path, **kw)


@dataclass
class WebhookReceiver:
    """A webhook receiver on 127.0.0.1 (``POST /hook``): each delivery is verified with the
    Standard Webhooks reference library and kept (``got``: the messages in arrival order; a
    refused one counts in ``refused`` and is answered 400). ``secret``: set it to the
    endpoint's ``whsec_...`` before anything is delivered."""

    secret: str = ""
    got: list[dict[str, Any]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    """``time.monotonic()`` of each message of ``got``."""
    refused: int = 0
    port: int = 0
    _runner: Any = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web
        from standardwebhooks import Webhook

        body = await request.read()
        try:
            message = Webhook(self.secret).verify(body, dict(request.headers))
        except Exception:  # noqa: BLE001 - any refusal counts
            self.refused += 1
            return web.Response(status=400)
        self.got.append(message)
        self.arrived.append(time.monotonic())
        return web.Response(status=204)

    async def start(self) -> WebhookReceiver:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def event_ids(self) -> set[str]:
        """The ids of the events received (each event's ``webhook-id``)."""
        return {m["data"]["id"] for m in self.got}

    def first_arrival(self, event_id: str) -> float | None:
        """When the event first arrived (``time.monotonic()``), or None."""
        return next((t for m, t in zip(self.got, self.arrived, strict=True) if m["data"]["id"] == event_id), None)


@pytest.fixture(scope="session")
def local_server(azurite: str, table_prefix: str) -> Iterator[LocalServer]:
    with tempfile.TemporaryDirectory(prefix="scim-localhost-") as tmp:
        proc, server = _start(azurite, table_prefix, Path(tmp))
        try:
            yield server
        finally:
            stop_child(proc, timeout=STOP_TIMEOUT)
