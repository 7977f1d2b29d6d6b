"""What the browser tests (``tests/test_portal_browser.py``) run against: ``make run``'s stack on
free ports, Debian's Chromium driven by Playwright, and the screenshots they save.

- :func:`start_stack`: the local OpenID Connect provider (:class:`devtools.oidc_provider.OidcProviderProcess`)
  and the app served by ``python -m devtools.localhost`` on a free port of 127.0.0.1, pointed at a
  given Azurite and table prefix and at that provider, as ``make run`` points it. Both are our own
  children, stopped by their PIDs (:meth:`Stack.stop`).
- :func:`chromium_problem`: why the browser cannot run here, or None. Playwright's own browser
  download is not used (``playwright install`` is never run): ``make test`` installs Debian's
  ``chromium`` (Makefile, ``chromium`` target) and Playwright launches it by its path.
- :func:`save_screenshot`: a PNG of the page into :data:`SCREENSHOTS` (``make screenshots``: the
  README's, ``docs/screenshots/``).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.azurite import PROJECT_ROOT, free_port
from devtools.children import app_env, stop_child
from devtools.oidc_provider import OidcProviderProcess, portal_environment
from scim.settings import Settings

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "DESKTOP",
    "MOBILE",
    "SCREENSHOTS",
    "Stack",
    "chromium_problem",
    "save_screenshot",
    "start_stack",
]

HOST = "127.0.0.1"
CHROMIUM = os.environ.get("BROWSER_TESTS_CHROMIUM") or "/usr/bin/chromium"
"""Debian's ``chromium`` package (``make test`` installs it); another build by this variable."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""The machine's network is closed: nothing in the background may try to reach out."""
DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 390, "height": 844}
README_SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
"""The screenshots the README shows: ``make screenshots`` writes them (``SCREENSHOTS_DIR``)."""
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or PROJECT_ROOT / ".local" / "screenshots")
"""Where the tests save what they see: ``.local/screenshots/`` (ignored by git), so that ``make
test`` leaves the working tree as it found it; ``SCREENSHOTS_DIR`` elsewhere."""
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def chromium_problem() -> str | None:
    """Why the browser tests cannot run on this machine (Playwright or Chromium missing), or None."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (make venv installs requirements-dev.txt)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return (
            f"{CHROMIUM} is missing: make test installs Debian's chromium package "
            "(apt-get install -y --no-install-recommends chromium, as root)"
        )
    return None


def save_screenshot(data: bytes, name: str) -> Path:
    """Write a PNG taken by the tests to ``{SCREENSHOTS}/{name}``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    path.write_bytes(data)
    return path


def _answers(port: int, timeout: float = 1.0) -> bool:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", "/portal/", headers={"Connection": "close"})
        connection.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


@dataclass
class Stack:
    """The app (``base_url``, its ``settings`` and ``env``) and the OpenID Connect provider."""

    base_url: str
    settings: Settings
    env: dict[str, str]
    provider: OidcProviderProcess
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m scim.admin ARGS`` on the app's storage (as an operator runs it)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCIM_")}
        env.update({k: v for k, v in self.env.items() if k.startswith("SCIM_")})
        return subprocess.run(
            [sys.executable, "-m", "scim.admin", *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_child(self.proc, timeout=STOP_TIMEOUT)
        self.provider.stop()


def start_stack(connection_string: str, prefix: str, workdir: Path) -> Stack:
    """The provider, then the app on a free port (retried if the port was taken meanwhile)."""
    provider = OidcProviderProcess().start()
    try:
        last_error = ""
        for attempt in range(3):
            port = free_port(HOST)
            env = app_env(connection_string, prefix, HOST, port)
            env.update(portal_environment(provider.issuer))
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
            stack = Stack(f"http://{HOST}:{port}", Settings.from_env(env), env, provider, log_path, proc)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while proc.poll() is None and not _answers(port):
                if time.monotonic() > deadline:
                    stop_child(proc, timeout=STOP_TIMEOUT)
                    raise RuntimeError(f"the app did not answer on {stack.base_url}:\n{stack.log_tail()}")
                time.sleep(0.1)
            if proc.poll() is None:
                return stack
            last_error = stack.log_tail()
            if "address already in use" not in last_error.lower():
                break
        raise RuntimeError(f"the app could not start:\n{last_error}")
    except BaseException:
        provider.stop()
        raise
