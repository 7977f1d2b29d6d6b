"""devtools.children: the app child's environment, and stopping a child by its own PID."""

from __future__ import annotations

import signal
import subprocess
import time

from devtools.children import app_env, stop_child


def test_app_env_points_the_child_at_the_given_tables_and_never_at_azure():
    env = app_env(
        "UseDevelopmentStorage=true",
        "t1234",
        "127.0.0.1",
        8123,
        base={"PATH": "/bin", "SCIM_TABLE_ENDPOINT": "https://real.table.core.windows.net"},
    )
    assert env["SCIM_TABLE_CONNECTION_STRING"] == "UseDevelopmentStorage=true"
    assert env["SCIM_TABLE_PREFIX"] == "t1234"
    assert env["SCIM_PUBLIC_BASE_URL"] == "http://127.0.0.1:8123" and env["PORT"] == "8123"
    assert env["SCIM_TABLE_ENDPOINT"] == "" and env["ACS_EMAIL_ENDPOINT"] == ""
    assert env["PATH"] == "/bin"


def test_a_child_is_stopped_by_the_signal():
    proc = subprocess.Popen(["sleep", "60"])
    started = time.monotonic()
    stop_child(proc)
    assert proc.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 5


def test_a_child_that_ignores_the_signal_is_killed_after_the_timeout():
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; echo ready; exec sleep 60"], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"  # the trap is in place
    started = time.monotonic()
    stop_child(proc, timeout=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 6
    proc.stdout.close()


def test_stopping_nothing_or_a_finished_child_is_harmless():
    stop_child(None)
    proc = subprocess.Popen(["true"])
    proc.wait(5)
    stop_child(proc)
    assert proc.returncode == 0
