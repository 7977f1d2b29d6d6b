"""The operator's tools as a user runs them: ``python -m scim.admin`` and ``python -m devtools.dev`` (make run)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.helpers import ROOT, admin
from tests.helpers import admin_env as _env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_admin_cli_manages_tenants_and_tokens(azurite, table_prefix):
    env = _env(azurite, table_prefix, PORT="7099")
    name = "cli-" + uuid.uuid4().hex[:8]
    created = admin(env, "tenant", "create", name)
    assert created.returncode == 0, created.stderr
    url_line, token_line = created.stdout.strip().splitlines()
    assert url_line == f"Tenant URL: http://127.0.0.1:7099/scim/{name}"
    assert token_line.startswith("Secret Token: ") and len(token_line.split(": ")[1]) >= 43

    duplicate = admin(env, "tenant", "create", name)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr

    regenerated = admin(env, "token", "regenerate", name, "--json")
    assert regenerated.returncode == 0, regenerated.stderr
    data = json.loads(regenerated.stdout)
    assert set(data) == {"tenant", "url", "token", "token_id", "expires"} and data["tenant"] == name
    assert data["token"] != token_line.split(": ")[1]

    listed = json.loads(admin(env, "tenant", "list", "--json").stdout)
    assert name in [t["tenant"] for t in listed]

    unconfirmed = admin(env, "tenant", "delete", name)
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr
    assert name in admin(env, "tenant", "list").stdout
    deleted = admin(env, "tenant", "delete", name, "--yes")
    assert deleted.returncode == 0 and f"Deleted tenant {name}." in deleted.stdout, deleted.stderr
    assert name not in admin(env, "tenant", "list").stdout
    missing = admin(env, "token", "regenerate", name)
    assert missing.returncode == 1 and "no tenant" in missing.stderr
    bad = admin(env, "tenant", "create", "Not Valid")
    assert bad.returncode == 1 and "invalid tenant name" in bad.stderr


def test_make_run_prints_entra_fields_and_serves_them(azurite, table_prefix):
    """``python -m devtools.dev`` (what ``make run`` calls): the two lines work in Entra's Test connection."""
    port = _free_port()
    tenant = "dev" + uuid.uuid4().hex[:6]
    dev_token = "chosen-Dev-Token_4f9Qx7LmZ2pRt8Kc3V"  # SCIM_DEV_TOKEN needs 128 bits (22+ URL-safe characters)
    env = _env(azurite, table_prefix, PORT=str(port), SCIM_DEV_TENANT=tenant, SCIM_DEV_TOKEN=dev_token)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        token = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url == f"Tenant URL: http://127.0.0.1:{port}/scim/{tenant}"
        assert token == f"Secret Token: {dev_token}"
        base, secret = url.split(": ", 1)[1], token.split(": ", 1)[1]
        test_connection = f"{base}/Users?filter=userName+eq+%22{uuid.uuid4()}%22"
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline:
            try:
                status = http_status(test_connection, secret)
                break
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.2)
        assert status == 200

        regenerated = json.loads(admin(env, "token", "regenerate", tenant, "--json").stdout)
        assert http_status(test_connection, secret) == 401, "the old token fails at once"
        assert http_status(test_connection, regenerated["token"]) == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("devtools.dev did not stop on Ctrl-C")
    # The first screen is the two lines and where to go next, not storage request dumps.
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    assert "http_logging_policy" not in stderr and "Request URL" not in stderr, stderr[:2000]
    assert "Next: paste the Tenant URL and Secret Token into Entra" in stderr
    assert f"python -m scim.admin events {tenant} --follow" in stderr
    # how to push the events to a receiver: a command that works as printed (then removed again)
    hint = f"python -m scim.admin webhook add http://127.0.0.1:8080/hook --tenant {tenant}"
    assert hint in stderr
    added = admin(env, *hint.split()[3:], "--json")
    assert added.returncode == 0, added.stderr
    endpoint = json.loads(added.stdout)
    assert endpoint["url"] == "http://127.0.0.1:8080/hook" and endpoint["secret"].startswith("whsec_")
    assert admin(env, "webhook", "remove", endpoint["id"], "--yes").returncode == 0
    # devtools.localhost runs the app's timers: the webhook delivery sweep every 10 s
    assert "webhook_timer: timer every 10 s" in stderr


def test_log_and_notify_run_now_as_an_operator_runs_them(azurite, table_prefix):
    """A failure shows in ``log --failures`` and ``notify run-now`` mails its digest to a real SMTP server."""
    from aiosmtpd.controller import Controller

    from tests.helpers import Mailbox

    mailbox, port = Mailbox(), _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        env = _env(azurite, table_prefix, SMTP_HOST="127.0.0.1", SMTP_PORT=str(port))
        name = "ops-" + uuid.uuid4().hex[:8]
        created = admin(env, "tenant", "create", name, "--notify", "ops@contoso.example", "--json")
        assert created.returncode == 0, created.stderr
        token = json.loads(created.stdout)["token"]
        assert "digests to ops@contoso.example" in admin(env, "tenant", "list").stdout

        from scim.functions.runtime import build_runtime
        from tests.scim_fixtures import azurite_settings

        async def provision() -> None:
            from scim.functions.runtime import use_runtime
            from tests.functions_client import FunctionsClient

            runtime = build_runtime(azurite_settings(azurite, table_prefix))
            use_runtime(runtime)
            try:
                client = FunctionsClient(name, token)
                await client.get(f"/Users/{uuid.uuid4()}")
                await client.get("/Users", params={"filter": 'userName eq "x"'})
            finally:
                use_runtime(None)
                await runtime.close()

        import asyncio

        asyncio.run(provision())
        log = admin(env, "log", name, "--failures", "--since", "10m")
        assert log.returncode == 0 and " 404  GET /Users/{id}" in log.stdout and "GET /Users " not in log.stdout
        everything = json.loads(admin(env, "log", name, "--json").stdout)
        assert [e["status"] for e in everything["entries"]] == [200, 404]

        time.sleep(5.5)  # run-now leaves in-flight requests 5 s to be logged
        sent = admin(env, "notify", "run-now", name)
        assert sent.returncode == 0 and "sent, 1 failures" in sent.stdout, sent.stdout + sent.stderr
        assert len(mailbox.to("ops@contoso.example")) == 1
        again = admin(env, "notify", "run-now", name)
        assert "nothing" in again.stdout and len(mailbox.to("ops@contoso.example")) == 1

        updated = admin(env, "tenant", "update", name, "--notify-off")
        assert "off" in updated.stdout
        assert "skipped" in admin(env, "notify", "run-now", name).stdout
    finally:
        controller.stop()


def test_make_run_stops_every_child_when_its_process_group_is_killed():
    """``kill -- -PGID`` of ``make run`` (what a terminal's job control or a supervisor does):
    ``devtools.dev`` gets SIGTERM from the kill and again from make, the second while it stops
    its children; that must not cut the clean-up short (it left Azurite running when the local
    OpenID Connect provider, stopped first, took a moment to exit)."""
    if socket.socket().connect_ex(("127.0.0.1", 10002)) == 0:
        pytest.skip("something (a make run?) already listens on Azurite's 10002: make run would reuse it")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCIM_", "PORTAL_"))}
    env.update(
        PORT=str(port),
        SCIM_TABLE_CONNECTION_STRING="UseDevelopmentStorage=true",  # make run's own Azurite on 10002
        SCIM_DEV_TENANT="sig" + uuid.uuid4().hex[:6],
    )
    proc = subprocess.Popen(
        ["make", "-s", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    children: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            if not line:
                break
            for what, pattern in (
                ("azurite", r"started Azurite \(pid (\d+)"),
                ("oidc", r"provider on \S+ \(pid (\d+)"),
            ):
                found = re.search(pattern, line)
                if found:
                    children[what] = int(found.group(1))
            if "serving on" in line:
                break
        assert set(children) == {"azurite", "oidc"}, children
        # Serving: the local host answers (its SIGTERM handler is installed once it does).
        health = f"http://127.0.0.1:{port}/api/health"
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=2) as answer:
                if answer.status == 200:
                    break
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)  # kill -- -PGID
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)
    alive = {what: pid for what, pid in children.items() if _alive(pid)}
    for pid in alive.values():
        os.kill(pid, signal.SIGKILL)
    assert alive == {}, f"left running after make run stopped: {alive}"
    assert "Traceback" not in rest, f"a stop is not a crash: {rest[-2000:]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    return True
