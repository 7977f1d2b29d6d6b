"""``python -m bench.webhook_sender``: runs once with a few messages (its own receiver process,
which exits when its stdin closes); only the counts and verdicts are checked, no timing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.webhook_sender import bench_event, parse_args
from devtools.azurite import PROJECT_ROOT
from scim.core.webhook_messages import message_body


def test_the_defaults_and_the_limits() -> None:
    args = parse_args([])
    assert (args.events, args.concurrency, args.warmup) == (5000, 16, 200)
    for bad in (["--events", "0"], ["--concurrency", "0"], ["--warmup", "-1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_an_event_is_about_a_kilobyte_and_has_its_own_id() -> None:
    first, second = bench_event(1), bench_event(1)
    assert first["id"] != second["id"]
    assert 900 <= len(message_body(first)) <= 1500


def test_a_small_run_delivers_and_verifies_every_message() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.webhook_sender",
            "--events",
            "300",
            "--concurrency",
            "4",
            "--warmup",
            "20",
            "--json",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout, done.stderr
    result = json.loads(done.stdout)
    assert result["all_verified"] and result["failures"] == 0, result
    assert result["receiver"]["verified"] == result["receiver"]["distinct_ids"] == 320
    assert result["events_per_s"] > 0
