"""Child processes that local tools start (the benchmark, the black-box tests): the app's
environment, and stopping a child by its own PID.

Both the benchmark (``bench/processes.py``) and the black-box test fixture
(``tests/localhost_server.py``) serve the app over HTTP from a child process pointed at a
given Table Storage (usually the Azurite they started), and stop what they started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping

__all__ = ["app_env", "stop_child"]


def app_env(
    connection_string: str, prefix: str, host: str, port: int, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of an app child serving on ``host:port`` from the tables ``{prefix}*`` of
    ``connection_string``.

    ``SCIM_TABLE_ENDPOINT`` and ``ACS_EMAIL_ENDPOINT`` are set, empty, so that a developer's
    ``local.settings.json`` cannot point the child at real Azure resources (``devtools.localhost``
    never overrides what the environment already holds).
    """
    env = dict(os.environ if base is None else base)
    env.update(
        SCIM_TABLE_CONNECTION_STRING=connection_string,
        SCIM_TABLE_PREFIX=prefix,
        SCIM_PUBLIC_BASE_URL=f"http://{host}:{port}",
        PORT=str(port),
        SCIM_TABLE_ENDPOINT="",
        ACS_EMAIL_ENDPOINT="",
        PYTHONUNBUFFERED="1",
    )
    return env


def stop_child(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop our own child by its PID: ``sig``, wait up to ``timeout`` seconds, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)
