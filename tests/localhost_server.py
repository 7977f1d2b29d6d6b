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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.azurite import PROJECT_ROOT, free_port
from devtools.children import app_env, stop_child
from scim.admin.core import Credentials, create_tenant
from scim.settings import Settings

__all__ = ["LocalServer", "create_fresh_tenant", "record_summary"]

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


@pytest.fixture(scope="session")
def local_server(azurite: str, table_prefix: str) -> Iterator[LocalServer]:
    with tempfile.TemporaryDirectory(prefix="scim-localhost-") as tmp:
        proc, server = _start(azurite, table_prefix, Path(tmp))
        try:
            yield server
        finally:
            stop_child(proc, timeout=STOP_TIMEOUT)
