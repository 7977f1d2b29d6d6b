"""``--tenants N``: the Entra replay for N tenants at once, against one service and one Azurite.

Each tenant has its own Tenant URL and token, its own data set (``--users`` users and
``--groups`` groups, seed ``--seed + i``) and its own client: ``--concurrency`` connections (5,
as Entra keeps per provisioning job), so N tenants keep N x 5 requests in flight. All replays
start together; each tenant's p50/p95/p99 and req/s are its own, and the figures of all
tenants together are reported as well. The target is Entra's view of one job: its p99 at most
:data:`P99_TARGET_MS` ms while the other tenants are busy too.

The orchestration is in ``bench/__main__.py`` (``replay_tenants``); this module holds the
summaries, targets and the table.
"""

from __future__ import annotations

from typing import Any

from .client import Recorder, percentile
from .report import check

P99_TARGET_MS = 150.0


def tenant_names(count: int) -> list[str]:
    return [f"bench-t{i}" for i in range(1, count + 1)]


def replay_latencies(recorder: Recorder, phases: tuple[str, ...]) -> list[float]:
    return sorted(v for s in recorder.ops.values() if s.phase in phases for v in s.latencies)


def aggregate(per_tenant: dict[str, dict[str, Any]], latencies: list[float], wall_seconds: float) -> dict[str, Any]:
    """All tenants together: requests of every tenant over the wall time of the concurrent replay."""
    requests = sum(s["requests"] for s in per_tenant.values())
    statuses: dict[str, int] = {}
    for s in per_tenant.values():
        for k, v in s["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return {
        "requests": requests,
        "seconds": round(wall_seconds, 2),
        "req_per_s": round(requests / wall_seconds, 1) if wall_seconds else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "max_ms": round((latencies[-1] if latencies else 0) * 1000, 1),
        "errors": sum(s["errors"] for s in per_tenant.values()),
        "statuses": statuses,
        "throttled_429": statuses.get("429", 0),
        "worst_tenant_p99_ms": max((s["p99_ms"] for s in per_tenant.values()), default=0.0),
        "slowest_request_ms": max((s["max_ms"] for s in per_tenant.values()), default=0.0),
    }


def targets(tenants: dict[str, Any]) -> list[dict[str, Any]]:
    """Per tenant: p99 <= 150 ms (PASS/FAIL on any tier); all tenants: no errors, no 429, read-back."""
    out = []
    per_tenant = tenants["per_tenant"]
    for name, s in per_tenant.items():
        out.append(
            check(
                f"{name}: replay p99 <= {P99_TARGET_MS:.0f} ms",
                s["p99_ms"] <= P99_TARGET_MS,
                f"p99 {s['p99_ms']} ms, p50 {s['p50_ms']} ms, {s['req_per_s']} req/s",
            )
        )
    agg = tenants["aggregate"]
    out.append(
        check(
            f"0 errors ({len(per_tenant)} tenants)",
            agg["errors"] == 0,
            f"{agg['errors']} errors; statuses {agg['statuses']}",
        )
    )
    out.append(check(f"0 x 429 ({len(per_tenant)} tenants)", agg["throttled_429"] == 0, f"{agg['throttled_429']}"))
    verified = {n: s for n, s in per_tenant.items() if "verification_ok" in s}
    if verified:
        bad = sorted(n for n, s in verified.items() if not s["verification_ok"])
        out.append(
            check(
                f"0 lost memberships, every user present ({len(verified)} tenants)",
                not bad,
                f"read-back failed for {', '.join(bad)}" if bad else "read-back OK for every tenant",
            )
        )
    return out


def table(tenants: dict[str, Any]) -> str:
    """One line per tenant, then all tenants together."""
    per_tenant = tenants["per_tenant"]
    width = max([len(n) for n in per_tenant] + [len("all tenants")])
    lines = [
        f"\nEntra replay, {tenants['count']} tenants at once ({tenants['users_per_tenant']} users each, "
        f"{tenants['concurrency_per_tenant']} connections each)",
        f"  {'tenant':<{width}} {'requests':>8} {'seconds':>8} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'errors':>6}  read-back  p99 <= {P99_TARGET_MS:.0f} ms",
    ]
    for name, s in per_tenant.items():
        readback = "-" if "verification_ok" not in s else ("OK" if s["verification_ok"] else "FAILED")
        verdict = "PASS" if s["p99_ms"] <= P99_TARGET_MS else "FAIL"
        lines.append(
            f"  {name:<{width}} {s['requests']:>8} {s['seconds']:>8.1f} {s['req_per_s']:>7.1f} {s['p50_ms']:>8.1f} "
            f"{s['p95_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['max_ms']:>8.1f} {s['errors']:>6}  {readback:<9}  {verdict}"
        )
    a = tenants["aggregate"]
    lines.append(
        f"  {'all tenants':<{width}} {a['requests']:>8} {a['seconds']:>8.1f} {a['req_per_s']:>7.1f} {a['p50_ms']:>8.1f} "
        f"{a['p95_ms']:>8.1f} {a['p99_ms']:>8.1f} {a['max_ms']:>8.1f} {a['errors']:>6}"
    )
    lines.append(
        "  (seconds and req/s: a tenant's own replay; all tenants: every request over the wall time of the run)"
    )
    return "\n".join(lines)
