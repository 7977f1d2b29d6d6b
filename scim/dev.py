"""``make run``: Azurite, a dev tenant, and the app on http://127.0.0.1:$PORT.

1. Azurite: reuses one already answering on 127.0.0.1:10002, else starts one with its data
   in ``<project>/.azurite/`` (Blob and Queue too when ``func`` serves the app, for
   ``AzureWebJobsStorage``). When ``SCIM_TABLE_CONNECTION_STRING`` or ``SCIM_TABLE_ENDPOINT``
   is set, the app uses that storage and no Azurite is started for it.
2. The dev tenant: ``scim.admin.core.ensure_tenant(settings, name, token)`` with
   ``SCIM_DEV_TENANT`` (default ``dev``) and ``SCIM_DEV_TOKEN`` (default: a fresh token).
3. Starts a local SMTP sink on 127.0.0.1:1025 (unless mail goes elsewhere) and sends the dev
   tenant's failure digests to ``SCIM_DEV_NOTIFY`` (default ``operator@localhost``), so that
   ``python -m scim.admin notify run-now dev`` shows a digest arriving.
4. Prints exactly two lines to stdout (everything else goes to stderr)::

       Tenant URL: http://127.0.0.1:7071/scim/dev
       Secret Token: ...

5. Serves the app: ``func start --port PORT`` if ``func`` is on PATH, else
   :mod:`scim.localhost`. ``PORT`` defaults to 7071. Ctrl-C stops the server and the Azurite
   this started (by PID); a reused Azurite is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys

from scim.azurite import (
    DEFAULT_HOST,
    DEFAULT_TABLE_PORT,
    PROJECT_ROOT,
    AzuriteError,
    AzuriteProcess,
    is_running,
)
from scim.settings import Settings, azurite_connection_string
from scim.tenants import new_token

log = logging.getLogger("scim.dev")


def _ensure_azurite(with_blob_queue: bool) -> AzuriteProcess | None:
    """Reuse a running Azurite on 10002 (returns None) or start one (returned, to stop later)."""
    if is_running(DEFAULT_TABLE_PORT, DEFAULT_HOST):
        log.info("reusing the Azurite already running on %s:%s", DEFAULT_HOST, DEFAULT_TABLE_PORT)
        if with_blob_queue and not is_running(10000, DEFAULT_HOST, "blob"):
            log.warning("that Azurite has no Blob service on 10000: the Functions host may complain")
        return None
    az = AzuriteProcess(
        DEFAULT_TABLE_PORT,
        host=DEFAULT_HOST,
        in_memory=False,
        location=PROJECT_ROOT / ".azurite",
        all_services=with_blob_queue,
    )
    az.start()
    log.info("started Azurite (pid %s, ports %s, data in %s)", az.pid, az.ports, az.location)
    return az


async def _ensure_tenant(settings: Settings, name: str, token: str) -> None:
    from scim.admin.core import ensure_tenant  # written elsewhere; imported late on purpose

    await ensure_tenant(settings, name, token)


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def _ensure_notifications(settings: Settings, name: str, address: str) -> None:
    from scim.admin.core import update_notifications

    await update_notifications(settings, name, [address], True)


def _start_smtp_sink(settings: Settings):  # type: ignore[no-untyped-def]
    """The local SMTP sink, when digests go to it (the local default) and nothing listens there yet."""
    from scim.smtp_sink import SmtpSink

    if settings.acs_email_endpoint or settings.smtp_host != "127.0.0.1" or _port_open(settings.smtp_port):
        return None
    try:
        sink = SmtpSink(settings.smtp_port).start()
    except OSError as exc:
        log.warning("could not start the SMTP sink on port %s: %s", settings.smtp_port, exc)
        return None
    log.info("SMTP sink on 127.0.0.1:%s: failure digests are printed here and saved in .local/mail/", settings.smtp_port)
    return sink


def _run_func(port: int, env: dict[str, str]) -> int:
    """``func start --port PORT`` until it exits or Ctrl-C (then stopped by its PID)."""
    func_bin = shutil.which("func")
    assert func_bin is not None
    proc = subprocess.Popen(
        [func_bin, "start", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        start_new_session=True,  # stopped below by its process group, not by the terminal
    )
    try:
        return proc.wait()
    except KeyboardInterrupt:
        for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        return 0


def _run_localhost(port: int) -> int:
    from scim import localhost

    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    app = localhost.load_app("function_app:app")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(localhost.serve(app, "127.0.0.1", port, root=PROJECT_ROOT))
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # SIGTERM (e.g. `kill` of make) unwinds like Ctrl-C, so the Azurite we started is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    # local.settings.json first, as func does (never overriding the environment): the tenant
    # must be made with the same settings (table prefix, base URL) the served app will read.
    from scim.localhost import load_local_settings

    load_local_settings(PROJECT_ROOT)

    port = int(os.environ.get("PORT") or 7071)
    os.environ["PORT"] = str(port)
    use_func = shutil.which("func") is not None
    name = os.environ.get("SCIM_DEV_TENANT") or "dev"
    token = os.environ.get("SCIM_DEV_TOKEN") or new_token()

    configured = os.environ.get("SCIM_TABLE_CONNECTION_STRING") or os.environ.get("SCIM_TABLE_ENDPOINT")
    sink = None
    try:
        az = None if configured and not use_func else _ensure_azurite(with_blob_queue=use_func)
    except AzuriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        env = os.environ
        env.setdefault("SCIM_TABLE_CONNECTION_STRING", azurite_connection_string(DEFAULT_HOST, DEFAULT_TABLE_PORT))
        env.setdefault("NOTIFY_SCHEDULE", "0 */10 * * * *")
        if use_func:
            env.setdefault("FUNCTIONS_WORKER_RUNTIME", "python")
            env.setdefault(
                "AzureWebJobsStorage", az.storage_connection_string if az else "UseDevelopmentStorage=true"
            )
        settings = Settings.from_env()
        sink = _start_smtp_sink(settings)
        asyncio.run(_ensure_tenant(settings, name, token))
        notify = os.environ.get("SCIM_DEV_NOTIFY") or "operator@localhost"
        asyncio.run(_ensure_notifications(settings, name, notify))

        print(f"Tenant URL: {settings.tenant_url(name)}")
        print(f"Secret Token: {token}")
        sys.stdout.flush()

        if use_func:
            log.info("serving with Azure Functions Core Tools (func start --port %s)", port)
            return _run_func(port, dict(env))
        log.info("`func` not found: serving with scim.localhost on port %s", port)
        return _run_localhost(port)
    except KeyboardInterrupt:
        return 0
    finally:
        if sink is not None:
            sink.stop()
        if az is not None:
            log.info("stopping Azurite (pid %s)", az.pid)
            az.stop()


if __name__ == "__main__":
    sys.exit(main())
