"""``make bench BENCH_ARGS="--tenants N"``: the Entra replay for several tenants at once, reported per tenant.

Runs the real command (its own in-memory Azurite and service, stopped by PID) with tiny numbers;
no timing is asserted (the machine is shared), only that each tenant has its figures and its
p99 target, marked PASS or FAIL.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.__main__ import parse_args
from devtools.azurite import PROJECT_ROOT


def test_the_default_is_one_tenant():
    args = parse_args([])
    assert args.tenants == 1
    assert args.users == 1000 and args.concurrency == 5  # the single-tenant tier is unchanged


@pytest.mark.azurite(reason="python -m bench starts an Azurite of its own")
def test_two_tenants_of_five_users_are_reported_per_tenant(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--tenants",
            "2",
            "--users",
            "5",
            "--groups",
            "3",
            "--lookups",
            "5",
            "--big-group",
            "0",
            "--out",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 2: the run itself failed
    results = json.loads(out.read_text())
    assert "error" not in results, results.get("error")
    tenants = results["tenants"]
    assert tenants["count"] == 2
    assert tenants["concurrency_per_tenant"] == 5
    per_tenant = tenants["per_tenant"]
    assert len(per_tenant) == 2
    for name, summary in per_tenant.items():
        for key in ("users", "requests", "seconds", "req_per_s", "p50_ms", "p95_ms", "p99_ms", "errors", "statuses"):
            assert key in summary, (name, key)
        assert summary["users"] == 5
        assert summary["requests"] > 0
        assert summary["errors"] == 0, summary
        assert summary["verification_ok"] is True, summary
    for key in ("requests", "seconds", "req_per_s", "p50_ms", "p99_ms", "worst_tenant_p99_ms"):
        assert key in tenants["aggregate"], key

    targets = {t["target"]: t for t in results["targets"]}
    for name in per_tenant:
        target = targets[f"{name}: replay p99 <= 150 ms"]
        assert target["ok"] in (True, False)  # a verdict, never n/a
    assert "replay >= 120 req/s" not in targets  # the single-tenant targets are for the single-tenant tier
    for name in per_tenant:
        assert f"{name}: replay p99 <= 150 ms" in proc.stdout
        assert any(line.lstrip().startswith(name) for line in proc.stdout.splitlines()), proc.stdout[-3000:]
    assert "[PASS]" in proc.stdout or "[FAIL]" in proc.stdout
