"""``make run``: Azurite, a dev tenant, and the app on http://127.0.0.1:$PORT.

The app itself has no local defaults (:mod:`scim.settings` refuses to start without table
storage): make run gives it the local set-up of :mod:`devtools.local_defaults` (Azurite on
127.0.0.1:10002, the SMTP sink on 127.0.0.1:1025) wherever the environment and
``local.settings.json`` leave a setting unset.

- ``local.settings.json``: when it does not exist, and the environment sets no table storage,
  make run writes it from ``local.settings.sample.json`` (:func:`write_local_settings`), so that
  ``python -m scim.admin`` in another terminal reads the same settings and reaches the same
  Azurite and SMTP sink. An existing file is never changed. Its values are then loaded into
  the environment, never overriding it, as ``func`` does.

0. Storage must be the local emulator: step 2 resets the dev tenant's token and digest
   recipients, so when ``SCIM_TABLE_ENDPOINT`` or ``SCIM_TABLE_CONNECTION_STRING`` (environment
   or ``local.settings.json``) points anywhere else (:func:`storage_target`), ``make run``
   stops with an error before any network I/O, unless ``SCIM_DEV_ALLOW_REMOTE=1``.
1. Azurite: reuses one already answering on 127.0.0.1:10002, else starts one with its data
   in ``<project>/.azurite/`` (Blob and Queue too when ``func`` serves the app, for
   ``AzureWebJobsStorage``). One stderr line tells how large ``.azurite/`` is, plus a warning
   with the way to reset it (``make clean-data``) once it is over 50 MiB, where it slows
   Azurite down (:func:`azurite_data_report`). When ``SCIM_TABLE_CONNECTION_STRING`` or
   ``SCIM_TABLE_ENDPOINT`` is set to other storage, the app uses that and no Azurite is started
   for it; ``UseDevelopmentStorage=true`` (the sample's) is this Azurite on 127.0.0.1:10002.
2. The dev tenant: ``scim.admin.core.ensure_tenant(settings, name, token)`` with
   ``SCIM_DEV_TENANT`` (default ``dev``) and ``SCIM_DEV_TOKEN`` (default: a fresh token). A
   value it refuses (``ValueError``: a token too short, a bad name) ends ``make run`` with one
   ``error: ...`` line and exit status 1.
3. Unless ``PORTAL_OIDC_CLIENT_ID`` is set (a real app registration), starts a local OpenID
   Connect provider (:mod:`devtools.oidc_provider`, oidc-provider-mock) and points the
   portal's sign-in at it. Then starts a local SMTP sink on 127.0.0.1:1025 (unless mail goes elsewhere) and sends the dev
   tenant's failure digests to ``SCIM_DEV_NOTIFY`` (default ``operator@localhost``), so that
   ``python -m scim.admin notify run-now dev`` shows a digest arriving.
4. Prints exactly two lines to stdout (everything else goes to stderr)::

       Tenant URL: http://127.0.0.1:7071/scim/dev
       Secret Token: ...

   and, on stderr right under them, a setup link of the dev tenant's portal page (one use, a
   day; ``python -m scim.admin portal link dev`` makes another), the operator view's URL
   (``/portal/ops``: sign in as ``dev-operator`` on the local provider's page) and what to do next: paste
   them into Entra or try a ``curl``,
   watch the change events (``python -m scim.admin events dev --follow``), push them to a
   receiver of yours (``python -m scim.admin webhook add http://127.0.0.1:8080/hook --tenant
   dev``; locally ``http://`` to this machine is allowed), send a digest.

5. Serves the app: ``func start --port PORT`` if ``func`` is on PATH, else
   :mod:`devtools.localhost`, which also runs the app's timers as the Functions host would: the
   webhook delivery sweep every 10 s (events a write's own delivery left behind, retries that
   are due) and the digest and retention timer at ``NOTIFY_SCHEDULE`` (every 10 minutes).
   ``PORT`` defaults to 7071. Ctrl-C stops the server and the Azurite this started (by PID); a
   reused Azurite is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from devtools.azurite import (
    DEFAULT_HOST,
    DEFAULT_TABLE_PORT,
    PROJECT_ROOT,
    AzuriteError,
    AzuriteProcess,
    folder_size,
    is_running,
)
from devtools.local_defaults import AZURITE_ACCOUNT, SMTP_SINK_HOST, apply_local_defaults
from devtools.oidc_provider import OidcProviderError, OidcProviderProcess, apply_portal_defaults, uses_local_provider
from scim.settings import Settings, SettingsError
from scim.tenants import new_token

if TYPE_CHECKING:
    from devtools.smtp_sink import SmtpSink

log = logging.getLogger("devtools.dev")

ALLOW_REMOTE = "SCIM_DEV_ALLOW_REMOTE"
MIB = 1024 * 1024
AZURITE_DATA_WARN_BYTES = 50 * MIB  # above this, Azurite's saves of its one LokiJS file slow every request


# --------------------------------------------------------------------------------------
# Which storage make run would reset the dev tenant in
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageTarget:
    """Where the app's tables are: ``local`` when that is the storage emulator (Azurite)."""

    local: bool
    where: str  # for messages: a URL without credentials, never the connection string
    setting: str | None  # the setting that chose it; None: nothing set (make run's Azurite on 127.0.0.1)


def _is_emulator_url(url: str) -> bool:
    """A loopback host (127.0.0.0/8, ::1, localhost), or Azurite's path-style account
    (``http://azurite:10002/devstoreaccount1``: Azure itself only has ``<account>.table.…`` hosts)."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return True
    return bool(host) and parts.path.strip("/").split("/", 1)[0] == AZURITE_ACCOUNT


def _safe_url(url: str) -> str:
    """Scheme, host, port and path of a URL: no user info, query (SAS) or fragment."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an unparsable URL"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}" if host else "an unparsable URL"


def _connection_fields(text: str) -> dict[str, str]:
    """A connection string's ``key=value`` pairs, keys in lower case."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            fields[key.strip().lower()] = value.strip()
    return fields


def _development_storage(fields: Mapping[str, str]) -> bool:
    return fields.get("usedevelopmentstorage", "").lower() == "true"


def uses_own_azurite(environ: Mapping[str, str]) -> bool:
    """Whether the app's storage is make run's own Azurite on 127.0.0.1:10002: no table storage
    set (make run fills it in), or ``UseDevelopmentStorage=true``, which means that Azurite."""
    if (environ.get("SCIM_TABLE_ENDPOINT") or "").strip():
        return False
    text = (environ.get("SCIM_TABLE_CONNECTION_STRING") or "").strip()
    return not text or _development_storage(_connection_fields(text))


def storage_target(environ: Mapping[str, str]) -> StorageTarget:
    """The Table storage ``environ`` points the app at, as :class:`scim.settings.Settings` reads
    it (``SCIM_TABLE_ENDPOINT`` wins over ``SCIM_TABLE_CONNECTION_STRING``; neither: make run
    sets its own Azurite)."""
    endpoint = (environ.get("SCIM_TABLE_ENDPOINT") or "").strip()
    if endpoint:
        return StorageTarget(_is_emulator_url(endpoint), _safe_url(endpoint), "SCIM_TABLE_ENDPOINT")
    text = (environ.get("SCIM_TABLE_CONNECTION_STRING") or "").strip()
    if not text:
        return StorageTarget(True, f"Azurite on {DEFAULT_HOST}:{DEFAULT_TABLE_PORT}", None)
    setting = "SCIM_TABLE_CONNECTION_STRING"
    fields = _connection_fields(text)
    if _development_storage(fields):
        return StorageTarget(True, "UseDevelopmentStorage=true (Azurite on 127.0.0.1)", setting)
    if fields.get("tableendpoint"):
        url = fields["tableendpoint"]
        return StorageTarget(_is_emulator_url(url), _safe_url(url), setting)
    account = fields.get("accountname")
    if account:
        scheme = fields.get("defaultendpointsprotocol") or "https"
        suffix = fields.get("endpointsuffix") or "core.windows.net"
        return StorageTarget(False, f"{scheme}://{account}.table.{suffix}", setting)
    return StorageTarget(False, "a connection string without AccountName or TableEndpoint", setting)


def _remote_refusal(target: StorageTarget, tenant: str, from_file: Collection[str]) -> str:
    source = "local.settings.json" if target.setting in from_file else "the environment"
    return (
        f"error: make run resets the token and failure-digest recipients of tenant {tenant!r}, and "
        f"{target.setting} (from {source}) points at {target.where}, which is not the local storage "
        "emulator (an endpoint on 127.0.0.1, localhost or ::1, Azurite's path-style devstoreaccount1 account, or "
        "UseDevelopmentStorage=true). Nothing was changed. To use the local Azurite, unset "
        f"SCIM_TABLE_ENDPOINT and SCIM_TABLE_CONNECTION_STRING (in {source}); to reset that "
        f"tenant there anyway, run with {ALLOW_REMOTE}=1."
    )


# --------------------------------------------------------------------------------------
# local.settings.json, for the admin CLI in another terminal
# --------------------------------------------------------------------------------------


def write_local_settings(root: Path) -> Path | None:
    """Write ``root/local.settings.json`` from ``root/local.settings.sample.json`` when it does
    not exist; never overwrite one. Its values are the sample's, with make run's local set-up
    (:func:`devtools.local_defaults.apply_local_defaults`) where the sample leaves storage or
    mail unset: what ``python -m scim.admin`` needs to reach the Azurite and SMTP sink make run
    uses. ``SCIM_PUBLIC_BASE_URL`` stays as the sample has it (empty: ``http://127.0.0.1:$PORT``,
    so a fixed value never contradicts the ``PORT`` of a later run, or of the tests).
    Returns the path written, or None (a file exists, or there is no sample)."""
    target = root / "local.settings.json"
    sample = root / "local.settings.sample.json"
    if target.exists() or not sample.is_file():
        return None
    settings = json.loads(sample.read_text(encoding="utf-8-sig"))
    values = settings.setdefault("Values", {})
    apply_local_defaults(values, DEFAULT_TABLE_PORT)
    try:  # O_EXCL: never over a file made meanwhile; 0600, as it may come to hold secrets
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(settings, indent=2) + "\n")
    return target


# --------------------------------------------------------------------------------------
# The size of .azurite/
# --------------------------------------------------------------------------------------


def azurite_data_report(location: Path, warn_bytes: int = AZURITE_DATA_WARN_BYTES) -> list[str]:
    """One line with the size of Azurite's data folder, and a warning line when it is over
    ``warn_bytes``: Azurite (LokiJS) keeps every table in one in-memory database that it saves
    to disk whole, on its only thread, so each save stalls every request, longer as it grows."""
    size = folder_size(location)
    name = f"{location.name}/"
    if size == 0:
        return [f"Azurite data: {name} is empty (a fresh emulator) [{location}]"]
    lines = [f"Azurite data: {name} holds {size / MIB:.1f} MiB [{location}]"]
    if size > warn_bytes:
        lines.append(
            f"warning: {name} holds {size / MIB:.1f} MiB, over {warn_bytes / MIB:.0f} MiB: Azurite keeps its "
            "tables in one LokiJS database that it saves whole on its only thread, which slows every "
            "request as it grows (at 173 MiB, every tenant's slowest request took 1.14 s). Reset it "
            "with `make clean-data` (stop make run first; it deletes every local tenant, user and "
            "group, and the next make run starts afresh)."
        )
    return lines


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


SETUP_LINK_LIFETIME = timedelta(days=1)


async def _setup_link(settings: Settings, name: str) -> str:
    """A setup link of the dev tenant's portal page (one use, a day), made as ``portal link`` does."""
    from scim.admin.portal import create_link
    from scim.functions.runtime import build_runtime

    runtime = build_runtime(settings)
    try:
        url, _ = await create_link(runtime, settings, name, SETUP_LINK_LIFETIME, "make run")
    finally:
        await runtime.close()
    return url


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


def _start_smtp_sink(settings: Settings) -> SmtpSink | None:
    """The local SMTP sink, when digests go to it (the local default) and nothing listens there yet."""
    from devtools.smtp_sink import SmtpSink

    if settings.acs_email_endpoint or settings.smtp_host != SMTP_SINK_HOST or _port_open(settings.smtp_port):
        return None
    try:
        sink = SmtpSink(settings.smtp_port).start()
    except OSError as exc:
        log.warning("could not start the SMTP sink on port %s: %s", settings.smtp_port, exc)
        return None
    log.info(
        "SMTP sink on 127.0.0.1:%s: failure digests are printed here and saved in .local/mail/", settings.smtp_port
    )
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
    from devtools import localhost

    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    app = localhost.load_app("function_app:app")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(localhost.serve(app, "127.0.0.1", port, root=PROJECT_ROOT))
    return 0


WEBHOOK_EXAMPLE_URL = "http://127.0.0.1:8080/hook"
"""The receiver the "next steps" suggest registering (one of the developer's; any local port)."""


def _next_steps(url: str, name: str, settle_seconds: float = 15) -> str:
    """What to do with the two lines, printed (to stderr) right under them."""
    query = "filter=userName+eq+%22nobody%40contoso.com%22"
    return (
        "Next: paste the Tenant URL and Secret Token into Entra's provisioning tab (README, "
        '"Connecting Microsoft Entra ID"), or try it:\n'
        f"  curl -H \"Authorization: Bearer $TOKEN\" '{url}/Users?{query}'\n"
        f"Watch the change events ({settle_seconds:g} s behind): python -m scim.admin events {name} --follow\n"
        "Push them to a receiver of yours (signed per Standard Webhooks; the secret is printed once): "
        f"python -m scim.admin webhook add {WEBHOOK_EXAMPLE_URL} --tenant {name}\n"
        f"Failures are emailed to the SMTP sink here: python -m scim.admin notify run-now {name}. Ctrl-C stops."
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-connection chatter
    # SIGTERM (e.g. `kill` of make) unwinds like Ctrl-C, so the Azurite we started is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    port = int(os.environ.get("PORT") or 7071)
    # local.settings.json first, as func does (never overriding the environment): the tenant
    # must be made with the same settings (table prefix, base URL) the served app will read.
    # Written from the sample when missing, for the admin CLI (unless the environment sets storage).
    from devtools.localhost import load_local_settings

    if not (os.environ.get("SCIM_TABLE_ENDPOINT") or os.environ.get("SCIM_TABLE_CONNECTION_STRING")):
        written = write_local_settings(PROJECT_ROOT)
        if written is not None:
            print(
                f"wrote {written.name} from local.settings.sample.json (Azurite, the SMTP sink): "
                "python -m scim.admin reads it",
                file=sys.stderr,
            )
    from_file = load_local_settings(PROJECT_ROOT)
    os.environ["PORT"] = str(port)
    use_func = shutil.which("func") is not None
    name = os.environ.get("SCIM_DEV_TENANT") or "dev"
    supplied_token = os.environ.get("SCIM_DEV_TOKEN") or None
    token = supplied_token or new_token()

    # Before anything is started or sent: make run overwrites the tenant's token.
    target = storage_target(os.environ)
    if not target.local:
        if (os.environ.get("SCIM_DEV_ALLOW_REMOTE") or "").strip().lower() not in ("1", "true", "yes"):
            print(_remote_refusal(target, name, from_file), file=sys.stderr)
            return 1
        print(
            f"warning: {ALLOW_REMOTE}=1: make run resets the token and failure-digest recipients of "
            f"tenant {name!r} in {target.where} ({target.setting}), which is not the local emulator",
            file=sys.stderr,
        )

    own_azurite = uses_own_azurite(os.environ)
    apply_local_defaults(os.environ, DEFAULT_TABLE_PORT)  # make run's Azurite and SMTP sink, where unset
    try:
        Settings.from_env()  # a setting the app cannot use stops make run here, before anything starts
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    sink = None
    oidc: OidcProviderProcess | None = None
    try:
        if not own_azurite and not use_func:
            az = None
        else:
            for line in azurite_data_report(PROJECT_ROOT / ".azurite"):
                print(line, file=sys.stderr)
            az = _ensure_azurite(with_blob_queue=use_func)
    except AzuriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        env = os.environ
        env.setdefault("NOTIFY_SCHEDULE", "0 */10 * * * *")
        if use_func:
            env.setdefault("FUNCTIONS_WORKER_RUNTIME", "python")
            env.setdefault("AzureWebJobsStorage", az.storage_connection_string if az else "UseDevelopmentStorage=true")
        if uses_local_provider(env):  # PORTAL_OIDC_CLIENT_ID unset: portal sign-in against a local provider
            try:
                oidc = OidcProviderProcess().start()
            except OidcProviderError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            apply_portal_defaults(env, oidc.issuer)
            log.info(
                "portal sign-in: local OpenID Connect provider on %s (pid %s): dev-operator, dev-user, customer-admin",
                oidc.issuer,
                oidc.pid,
            )
        settings = Settings.from_env()
        sink = _start_smtp_sink(settings)
        notify = os.environ.get("SCIM_DEV_NOTIFY") or "operator@localhost"
        try:
            asyncio.run(_ensure_tenant(settings, name, token))
            asyncio.run(_ensure_notifications(settings, name, notify))
        except ValueError as exc:  # a value ensure_tenant refuses: a short token, a bad name or address
            hint = ", token from SCIM_DEV_TOKEN: unset it to use a fresh random token" if supplied_token else ""
            print(f"error: {exc} (dev tenant {name!r}{hint})", file=sys.stderr)
            return 1

        link = asyncio.run(_setup_link(settings, name))
        print(f"Tenant URL: {settings.tenant_url(name)}")
        print(f"Secret Token: {token}")
        sys.stdout.flush()
        print(
            f"The tenant admin's portal page (open this setup link and click Continue; it works once, for a day): {link}",
            file=sys.stderr,
        )
        if settings.portal_sign_in:
            who = (
                "pick dev-operator on the local sign-in page" if oidc is not None else "an account with Portal.Operator"
            )
            print(f"The operator view: {settings.public_base_url}/portal/ops (sign in: {who})", file=sys.stderr)
        print(_next_steps(settings.tenant_url(name), name, settings.events_settle_seconds), file=sys.stderr, flush=True)

        if use_func:
            log.info("serving with Azure Functions Core Tools (func start --port %s)", port)
            return _run_func(port, dict(env))
        log.info("`func` not found: serving with devtools.localhost on port %s", port)
        return _run_localhost(port)
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C or SIGTERM (make passes its own on) must not cut the clean-up short and
        # leave a child running: from here on both are ignored, and each child is stopped by PID.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if oidc is not None:
            oidc.stop()
        if sink is not None:
            sink.stop()
        if az is not None:
            log.info("stopping Azurite (pid %s)", az.pid)
            az.stop()


if __name__ == "__main__":
    sys.exit(main())
