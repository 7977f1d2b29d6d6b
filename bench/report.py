"""The readable table (stdout) and the targets of issue #5."""

from __future__ import annotations

from typing import Any

from .client import by_phase


def _errors(row: dict[str, Any]) -> str:
    return ",".join(f"{k}x{v}" for k, v in sorted(row["errors"].items())) or "0"


def table(rows: list[dict[str, Any]], phases: dict[str, dict[str, float]], title: str) -> str:
    out = [title]
    width = max([len(r["op"]) for r in rows] + [20])
    head = f"  {'operation':<{width}} {'count':>6} {'errors':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'storage':>8}"
    for phase, prow in by_phase(rows).items():
        info = phases.get(phase)
        extra = f" ({info['requests']} requests in {info['seconds']} s, {info['req_per_s']} req/s)" if info else ""
        out.append(f"\n[{phase}]{extra}")
        out.append(head)
        for r in prow:
            storage = f"{r['storage_directory']:.1f}+{r['storage_auth']:.0f}" if "storage_directory" in r else "-"
            out.append(
                f"  {r['op']:<{width}} {r['count']:>6} {_errors(r):>8} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
                f"{r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {storage:>8}"
            )
    out.append(
        "\n  storage = storage round trips per request: directory table + tenants table (auth);"
        " plus the background provisioning-log writes, batched per tenant (see totals)"
    )
    return "\n".join(out)


def check(name: str, ok: bool | None, detail: str) -> dict[str, Any]:
    return {"target": name, "ok": ok, "detail": detail}


def format_targets(targets: list[dict[str, Any]]) -> str:
    lines = ["targets (issue #5):"]
    for t in targets:
        mark = "PASS" if t["ok"] else ("n/a " if t["ok"] is None else "FAIL")
        lines.append(f"  [{mark}] {t['target']}: {t['detail']}")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The results of a run as Markdown tables (``python -m bench.report FILE``), for docs/performance.md."""
    out: list[str] = []
    for section, title in (("replay", "Entra replay"), ("probe", "Big-group probe")):
        data = results.get(section)
        if not data:
            continue
        out.append(f"**{title}**\n")
        out.append("| phase | operation | count | errors | p50 ms | p95 ms | p99 ms | max ms | storage (dir+auth) |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for phase, prow in by_phase(data["operations"]).items():
            for r in prow:
                storage = f"{r['storage_directory']:.1f}+{r['storage_auth']:.0f}" if "storage_directory" in r else "-"
                out.append(
                    f"| {phase} | {r['op'].replace('|', '/')} | {r['count']} | {_errors(r)} | {r['p50_ms']:.1f} | "
                    f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {storage} |"
                )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import json
    import sys

    with open(sys.argv[1]) as results:
        print(markdown(json.load(results)))
