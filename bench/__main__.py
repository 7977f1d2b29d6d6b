"""``python -m bench``: replay Entra ID provisioning against the service over HTTP; see docs/performance.md."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import dataset as D
from . import feed_backlog as FB
from . import multitenant as MT
from . import webhook_delivery as WD
from .client import Client, Recorder, percentile, summarize
from .processes import (
    ROOT,
    PeerProcess,
    Profiler,
    ServiceProcess,
    cpu_seconds,
    loadavg,
    proc_status,
    system_busy_seconds,
)
from .profile import analyze, format_profile
from .replay import Replay
from .report import check, format_targets, table

RESULTS = Path(__file__).resolve().parent / "results"
REPLAY_PHASES = ("initial", "lookups", "incremental")
LOOKUP_OPS = (
    "GET /Users?filter=userName eq (hit)",
    "GET /Users?filter=externalId eq (hit)",
    "GET /Users?filter=emails[type eq work].value eq (hit)",
    "GET /Users?filter=displayName eq (hit)",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--users", type=int, default=1000, help="tier: 1000 (default), 10000, 100000")
    p.add_argument("--groups", type=int, default=20)
    p.add_argument(
        "--concurrency", type=int, default=5, help="requests in flight, as Entra (default 5); per tenant with --tenants"
    )
    p.add_argument(
        "--tenants",
        type=int,
        default=1,
        help="replay N tenants at once, each with its own users and --concurrency connections; "
        "reports each tenant's p50/p99 and req/s against p99 <= 150 ms (default 1: the single-tenant tiers)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--lookups", type=int, default=500, help="users looked up by each of the 4 Entra matching filters")
    p.add_argument("--big-group", type=int, default=5000, help="size of the big group of the probe (0: no probe)")
    p.add_argument("--probe-sizes", help="comma-separated group sizes of the probe (default 100,5000[,--big-group])")
    p.add_argument("--probe-iterations", type=int, default=60)
    p.add_argument(
        "--seed-concurrency",
        type=int,
        default=8,
        help="concurrency of the probe's seeding (and transactions in flight when seeding --feed-backlog)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the read-back check")
    p.add_argument(
        "--seed-direct",
        action="store_true",
        help="create the initial users/groups/memberships through the store, not over HTTP (big tiers); "
        "the initial cycle is then only Test connection",
    )
    p.add_argument(
        "--max-group-size",
        type=int,
        help="cap the data set's group sizes (big tiers: Azurite writes "
        "memberships slowly; big groups are the probe's job)",
    )
    p.add_argument(
        "--probe-direct",
        action="store_true",
        help="seed the probe's users and big groups through the store, not over HTTP (not measured)",
    )
    p.add_argument(
        "--incremental-base",
        type=int,
        default=10000,
        help="the incremental cycle's shares (10 %% changes, 3 %% disables, ...) are of min(users, this)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the service during the replay")
    p.add_argument(
        "--profile-azurite",
        action="store_true",
        help="run Azurite under node --cpu-prof (its whole run: seeding, replay, probe) and summarise where its time goes",
    )
    p.add_argument("--peer", help="side-by-side: 'scim2-server' (started here, in memory) or a SCIM base URL")
    p.add_argument("--peer-token", default="", help="bearer token of a --peer URL")
    p.add_argument("--rounds", type=int, default=2, help="side-by-side rounds per server (alternating order)")
    p.add_argument("--no-replay", action="store_true", help="only the probe (and side-by-side) ")
    p.add_argument(
        "--feed-backlog",
        type=int,
        default=0,
        metavar="N",
        help="seed N change events of one tenant and catch them up through the events feed over HTTP, "
        "limit=1000 a page (bench/feed_backlog.py); skips the replay and the probe (default 0: off)",
    )
    p.add_argument(
        "--webhook-delivery",
        type=int,
        default=0,
        metavar="N",
        help="webhook delivery to a local receiver (bench/webhook_delivery.py): N SCIM writes paced like Entra, "
        "p50/p99 from each response to its event; then --webhook-burst; skips the replay and the probe (default 0: off)",
    )
    p.add_argument(
        "--webhook-burst",
        type=int,
        default=3000,
        metavar="M",
        help="with --webhook-delivery: M user creations as fast as the clients go, delivered live, then M more "
        "delivered as a backlog: events/s to one endpoint (default 3000; 0: latency only)",
    )
    p.add_argument("--compare", help="a previous results JSON: print lookup p99 ratios against it")
    p.add_argument("--out", help="results JSON path (default bench/results/<timestamp>.json)")
    args = p.parse_args(argv)
    if args.tenants < 1:
        p.error("--tenants must be 1 or more")
    if args.feed_backlog < 0:
        p.error("--feed-backlog must be 0 (off) or more")
    if args.webhook_delivery < 0 or args.webhook_burst < 0:
        p.error("--webhook-delivery and --webhook-burst must be 0 (off) or more")
    if args.feed_backlog and args.webhook_delivery:
        p.error("--feed-backlog and --webhook-delivery are separate runs")
    return args


def measure_import(runs: int = 5) -> dict[str, Any]:
    """``python -X importtime -c 'import function_app'``: cumulative µs of ``function_app`` (median of runs)."""
    from devtools.local_defaults import apply_local_defaults

    values, wall = [], []
    top: list[tuple[int, str]] = []
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    apply_local_defaults(env)  # the entry point checks its settings on import: it needs table storage
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import function_app"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
        )
        wall.append(time.perf_counter() - started)
        entries = []
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)", line)
            if m:
                entries.append((int(m[2]), len(m[3]) - 1, m[4]))
        total = next((c for c, depth, name in entries if name == "function_app" and depth == 0), None)
        if total is not None:
            values.append(total)
            top = sorted(((c, n) for c, d, n in entries if d == 2), reverse=True)[:6]
    return {
        "function_app_cumulative_ms": round(statistics.median(values) / 1000, 1) if values else None,
        "process_wall_ms": round(statistics.median(wall) * 1000, 1),
        "runs": runs,
        "top_level_imports_ms": [{"module": n, "ms": round(c / 1000, 1)} for c, n in top],
    }


def replay_summary(recorder: Recorder, phases: tuple[str, ...] = REPLAY_PHASES) -> dict[str, Any]:
    latencies = sorted(v for s in recorder.ops.values() if s.phase in phases for v in s.latencies)
    seconds = sum(recorder.phases[p]["seconds"] for p in phases if p in recorder.phases)
    statuses: dict[str, int] = {}
    errors = 0
    for s in recorder.ops.values():
        if s.phase in phases:
            for k, v in s.statuses.items():
                statuses[str(k)] = statuses.get(str(k), 0) + v
            errors += sum(s.errors.values())
    return {
        "requests": len(latencies),
        "seconds": round(seconds, 2),
        "req_per_s": round(len(latencies) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "errors": errors,
        "statuses": statuses,
        "throttled_429": statuses.get("429", 0),
    }


async def run_replay(
    base_url: str,
    token: str,
    ds: D.Dataset,
    args: argparse.Namespace,
    *,
    verify: bool,
    seeded: tuple[Any, ...] | None = None,
) -> tuple[Recorder, Replay]:
    recorder = Recorder()
    async with Client(base_url, token, recorder, args.concurrency) as client:
        replay = Replay(client, recorder, ds, args.concurrency, args.seed, incremental_base=args.incremental_base)
        if seeded is not None:
            replay.adopt(*seeded)
        await replay.run(lookups=min(args.lookups, args.users), verify=verify, seeded=seeded is not None)
    return recorder, replay


async def new_tenant(service: ServiceProcess, name: str) -> tuple[str, str]:
    from scim.admin.core import create_tenant
    from scim.settings import Settings

    creds = await create_tenant(Settings.from_env(service.env(service.port)), name)
    return creds.url, creds.token


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": model, "free_h": mem, "python": sys.version.split()[0]}


def azurite_versions(azurite: Any) -> dict[str, str]:
    """The emulator the figures were taken on: its ``Server`` header and the Node.js it runs on."""
    from devtools.azurite import node_executable, node_version, server_header

    return {
        "server": server_header(azurite.host, azurite.table_port) or "?",
        "node": node_version(str(node_executable(azurite.root))) or "?",
    }


async def main_async(args: argparse.Namespace) -> int:
    from devtools.azurite import AzuriteProcess

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out) if args.out else RESULTS / f"{stamp}.json"
    results: dict[str, Any] = {"timestamp": stamp, "args": vars(args), "machine": machine()}
    targets: list[dict[str, Any]] = []
    if args.feed_backlog:
        print(f"bench: a feed backlog of {args.feed_backlog} events (no replay), seed {args.seed}", flush=True)
    elif args.webhook_delivery:
        print(
            f"bench: webhook delivery, {args.webhook_delivery} paced writes, bursts of {args.webhook_burst} (no replay)",
            flush=True,
        )
    elif args.tenants > 1:
        print(
            f"bench: {args.tenants} tenants at once, each {args.users} users, {args.groups} groups, concurrency "
            f"{args.concurrency}; seed {args.seed}",
            flush=True,
        )
    else:
        print(
            f"bench: {args.users} users, {args.groups} groups, concurrency {args.concurrency}, seed {args.seed}",
            flush=True,
        )

    results["import"] = imp = measure_import()
    print(
        f"cold start: import function_app {imp['function_app_cumulative_ms']} ms (-X importtime, median of {imp['runs']})",
        flush=True,
    )

    workdir = Path(tempfile.mkdtemp(prefix="scim-bench-"))
    started_all = time.perf_counter()
    # absolute: node resolves --cpu-prof-dir against its own cwd, a temporary folder devtools.azurite removes
    azurite_profiles = out_path.resolve().with_name(out_path.stem + "-azurite-cpuprofile")
    azurite = AzuriteProcess(
        0,
        in_memory=True,
        node_options=(("--cpu-prof", f"--cpu-prof-dir={azurite_profiles}") if args.profile_azurite else ()),
    )
    service: ServiceProcess | None = None
    profiler: Profiler | None = None
    try:
        azurite.start()
        results["azurite"] = emulator = azurite_versions(azurite)
        print(f"storage: {emulator['server']} on Node.js {emulator['node']}", flush=True)
        prefix = "bench" + secrets.token_hex(3)
        service = ServiceProcess(azurite.connection_string, prefix, workdir).start()
        results["service"] = {"pid": service.pid, "start_status_kb": service.status()}
        ds = D.build(args.users, args.groups, args.seed, max_group_size=args.max_group_size)
        results["dataset"] = {
            "users": len(ds.users),
            "groups": len(ds.groups),
            "memberships": ds.memberships,
            "group_sizes": [len(g.members) for g in ds.groups],
            "managers_set": sum(1 for u in ds.users if u.manager is not None),
        }
        main_replay: Replay | None = None
        replay = not args.no_replay and not args.feed_backlog and not args.webhook_delivery

        if args.feed_backlog:
            results["feed"] = await FB.run(service, azurite, args)
            print(FB.format_report(results["feed"]), flush=True)
        if args.webhook_delivery:
            results["webhooks"] = await WD.run(service, azurite, args, _phase_profiler(args, service, out_path))
            print(WD.format_report(results["webhooks"]), flush=True)
            for name in ("burst_profile", "drain_profile"):
                if name in results["webhooks"]:
                    print(f"\nprofile of the service during the webhook {name.split('_')[0]}")
                    print(format_profile(results["webhooks"][name]))
        if replay and args.tenants > 1:
            await replay_tenants(service, azurite, args, results, out_path)
        elif replay:
            url, token = await new_tenant(service, "bench-main")
            # warm-up: tables exist, pools open (not measured)
            warm = Recorder()
            async with Client(url, token, warm, 1) as client:
                await client.request("warm-up", "GET", "/Users", query="filter=userName+eq+%22warm-up%22")
            seeded = None
            if args.seed_direct:
                from scim.settings import Settings

                from .seed import seed_direct

                print(
                    f"seeding {len(ds.users)} users and {ds.memberships} memberships through the store (not measured) ...",
                    flush=True,
                )
                user_ids, group_ids, timings = await seed_direct(
                    Settings.from_env(service.env(service.port)), "bench-main", ds
                )
                failed = timings.pop("failed", [])
                results["seed_direct"] = timings
                if failed:
                    print(
                        f"  {len(failed)} member adds could not be seeded (Azurite timeouts): excluded from the read-back",
                        flush=True,
                    )
                seeded = (user_ids, group_ids, failed)
            if args.profile:
                profiler = Profiler(service.pid, out_path.with_name(out_path.stem + "-profile.txt")).start()
            cpu0 = _cpu_now(service, azurite)
            load0 = loadavg()
            stats0 = service.stats()["totals"]
            print(f"replay: {len(ds.users)} users, {ds.memberships} memberships ...", flush=True)
            recorder, main_replay = await run_replay(url, token, ds, args, verify=False, seeded=seeded)
            cpu1 = _cpu_now(service, azurite)
            stats1 = service.stats()["totals"]
            if profiler is not None:
                profiler.stop()
                results["profile"] = analyze(profiler.output)
                results["profile"]["file"] = str(profiler.output)
                profiler = None
            summary = replay_summary(recorder)
            delta = {k: stats1[k] - stats0[k] for k in stats1}
            summary["storage_totals"] = delta
            summary["log_writes_per_request"] = (
                round(delta["log"] / delta["requests"], 3) if delta["requests"] else None
            )
            summary["cpu_seconds"] = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0}
            cs = summary["cpu_seconds"]
            cs["other_processes"] = round(cs["machine"] - cs["service"] - cs["azurite"] - cs["bench"], 2)
            summary["loadavg_before_after"] = [load0, loadavg()]
            summary["profiled"] = bool(args.profile)
            summary["service_cpu_ms_per_request"] = (
                round(1000 * summary["cpu_seconds"]["service"] / summary["requests"], 2)
                if summary["requests"]
                else None
            )
            if not args.no_verify:
                recorder.phase = "verify"
                async with Client(url, token, recorder, args.concurrency) as client:
                    main_replay.c = client
                    await main_replay.phase("verify", main_replay.verify())
                results["verification"] = main_replay.verification
            results["replay"] = {
                "summary": summary,
                "phases": recorder.phases,
                "operations": summarize(recorder),
                "error_examples": recorder.examples,
            }
            print(
                table(summarize(recorder), recorder.phases, f"\nEntra replay against the service ({args.users} users)")
            )
            print(
                f"\nreplay overall: {summary['requests']} requests in {summary['seconds']} s = {summary['req_per_s']} req/s; "
                f"p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, p99 {summary['p99_ms']} ms; errors {summary['errors']}; "
                f"429s {summary['throttled_429']}"
            )
            print(
                f"load average before/after: {summary['loadavg_before_after']}; "
                f"CPU seconds during the replay: {summary['cpu_seconds']} "
                f"(service {summary['service_cpu_ms_per_request']} ms/request); storage calls {delta}"
            )
            if "verification" in results:
                v = results["verification"]
                print(
                    f"read-back: {'OK' if v['ok'] else 'FAILED'}: users {v['users_expected']} expected, {v['users_missing']} missing, "
                    f"{v['users_unexpected']} unexpected, {v['user_attribute_mismatches']} with wrong attributes; groups "
                    f"{v['groups_checked']}, memberships {v['memberships_expected']} expected, {v['memberships_lost']} lost, "
                    f"{v['memberships_extra']} extra"
                )
                for example in v["examples"]:
                    print(f"    {example}")
            for example in recorder.examples[:15]:
                print(f"  error example: {json.dumps(example, ensure_ascii=False)[:900]}")
            if "profile" in results:
                print("\nprofile of the service during the replay\n" + format_profile(results["profile"]))

        sizes = _probe_sizes(args)
        if args.tenants > 1 and not sizes and args.big_group > 0:
            print(
                "\nbig-group probe: skipped with --tenants (a single-tenant measurement; --probe-sizes runs it anyway)",
                flush=True,
            )
        if sizes:
            print(f"\nbig-group probe: sizes {sizes} ...", flush=True)
            probe_rec = Recorder()
            pool = None
            url, token = (None, None)
            tenant = "bench-probe"
            if (
                main_replay is not None
                and len(main_replay.exp.user_ids) - len(main_replay.exp.deleted) >= max(sizes) + 40
            ):
                url, token = main_replay.c.base_url, main_replay.c.token
                pool = [uid for i, uid in sorted(main_replay.exp.user_ids.items()) if i not in main_replay.exp.deleted]
                tenant = "bench-main"
            else:
                url, token = await new_tenant(service, tenant)
            direct = None
            if args.probe_direct:
                from scim.settings import Settings

                from .seed import DirectSeeder

                seeder = DirectSeeder(Settings.from_env(service.env(service.port)), tenant, args.seed)
                direct = (seeder.users, seeder.members)
            from .probe import run_probe

            try:
                async with Client(url, token, probe_rec, max(args.seed_concurrency, 1)) as client:
                    probe = await run_probe(
                        client,
                        probe_rec,
                        sizes,
                        iterations=args.probe_iterations,
                        seed=args.seed,
                        seed_concurrency=args.seed_concurrency,
                        pool=pool,
                        server_status=service.status,
                        direct=direct,
                    )
            except Exception as exc:  # noqa: BLE001 - keep the replay's results
                probe = {"sizes": sizes, "error": f"{type(exc).__name__}: {exc}"}
                print(f"probe failed: {probe['error']}", flush=True)
            if direct is not None and seeder.failed_chunks:
                probe["seed_failed_chunks"] = seeder.failed_chunks
            results["probe"] = {
                "result": probe,
                "operations": summarize(probe_rec),
                "phases": probe_rec.phases,
                "error_examples": probe_rec.examples,
            }
            print(table(summarize(probe_rec), {}, "\nbig-group probe"))
            print("probe: " + json.dumps(probe))
            for example in probe_rec.examples[:10]:
                print(f"  error example: {json.dumps(example, ensure_ascii=False)[:900]}")

        if args.peer:
            results["side_by_side"] = await side_by_side(args, service, workdir)

        results["service"]["final_status_kb"] = service.status()
        results["service"]["totals"] = service.stats()["totals"]
        results["wall_seconds"] = round(time.perf_counter() - started_all, 1)
    except Exception as exc:  # noqa: BLE001 - keep what was measured
        import traceback

        traceback.print_exc()
        results["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if profiler is not None:
            profiler.stop()
        if service is not None:
            results.setdefault("service", {})["final_status_kb"] = (
                service.status() or results.get("service", {}).get("final_status_kb") or {}
            )
            service.stop()
        azurite.stop(timeout=300.0 if args.profile_azurite else 10.0)  # node writes its profile on the way out
    if args.profile_azurite:
        written = sorted(azurite_profiles.glob("*.cpuprofile"))
        if written:
            from .node_profile import analyze as analyze_node
            from .node_profile import format_profile as format_node

            results["azurite_profile"] = analyze_node(written[-1])
            print("\n" + format_node(results["azurite_profile"]))
        else:
            print(f"\nno Azurite CPU profile was written in {azurite_profiles}")

    targets = evaluate(results, args)
    results["targets"] = targets
    if args.compare:
        results["compare"] = compare(results, Path(args.compare))
    print(
        f"\nservice peak RSS (VmHWM): {results.get('service', {}).get('final_status_kb', {}).get('VmHWM', 0) / 1024:.1f} MiB"
    )
    print(format_targets(targets))
    out_path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"\nresults: {out_path} (total {results.get('wall_seconds')} s)")
    failed = [t for t in targets if t["ok"] is False]
    return 2 if "error" in results else 1 if failed else 0


async def replay_tenants(
    service: ServiceProcess, azurite: Any, args: argparse.Namespace, results: dict[str, Any], out_path: Path
) -> None:
    """``--tenants N``: N Entra replays at once against the one service, one per tenant, each with
    its own data set (seed ``--seed + i``), token and ``--concurrency`` connections (bench/multitenant.py)."""
    names = MT.tenant_names(args.tenants)
    creds = {name: await new_tenant(service, name) for name in names}
    datasets = {
        name: D.build(args.users, args.groups, args.seed + i, max_group_size=args.max_group_size)
        for i, name in enumerate(names)
    }
    warm = Recorder()  # tables exist, pools open (not measured)
    for url, token in creds.values():
        async with Client(url, token, warm, 1) as client:
            await client.request("warm-up", "GET", "/Users", query="filter=userName+eq+%22warm-up%22")
    seeded: dict[str, tuple[Any, ...] | None] = dict.fromkeys(names)
    if args.seed_direct:
        from scim.settings import Settings

        from .seed import seed_direct

        results["seed_direct"] = {}
        for name in names:
            ds = datasets[name]
            print(
                f"seeding {name}: {len(ds.users)} users and {ds.memberships} memberships through the store (not measured) ...",
                flush=True,
            )
            user_ids, group_ids, timings = await seed_direct(Settings.from_env(service.env(service.port)), name, ds)
            failed = timings.pop("failed", [])
            results["seed_direct"][name] = timings
            seeded[name] = (user_ids, group_ids, failed)
    profiler: Profiler | None = None
    if args.profile:
        profiler = Profiler(service.pid, out_path.with_name(out_path.stem + "-profile.txt")).start()
    cpu0 = _cpu_now(service, azurite)
    load0 = loadavg()
    stats0 = service.stats()["totals"]
    print(
        f"replay: {len(names)} tenants x {args.users} users at once, {args.concurrency} connections each ...",
        flush=True,
    )
    started = time.perf_counter()
    try:
        outcomes = await asyncio.gather(
            *(run_replay(*creds[name], datasets[name], args, verify=False, seeded=seeded[name]) for name in names)
        )
        wall = time.perf_counter() - started
        cpu1 = _cpu_now(service, azurite)
        stats1 = service.stats()["totals"]
    finally:
        if profiler is not None:
            profiler.stop()  # by its PID, whatever happened
    if profiler is not None:
        results["profile"] = analyze(profiler.output)
        results["profile"]["file"] = str(profiler.output)
    load1 = loadavg()

    per_tenant: dict[str, dict[str, Any]] = {}
    latencies: list[float] = []
    for name, (recorder, _replay) in zip(names, outcomes, strict=True):
        mine = MT.replay_latencies(recorder, REPLAY_PHASES)
        summary = replay_summary(recorder)
        summary["max_ms"] = round((mine[-1] if mine else 0) * 1000, 1)
        per_tenant[name] = {"users": args.users, **summary}
        latencies += mine
    latencies.sort()

    if not args.no_verify:

        async def verify(name: str, recorder: Recorder, replay: Replay) -> None:
            recorder.phase = "verify"
            url, token = creds[name]
            async with Client(url, token, recorder, args.concurrency) as client:
                replay.c = client
                await replay.phase("verify", replay.verify())

        await asyncio.gather(*(verify(name, rec, rep) for name, (rec, rep) in zip(names, outcomes, strict=True)))
        for name, (_rec, rep) in zip(names, outcomes, strict=True):
            v = rep.verification
            per_tenant[name]["verification_ok"] = v["ok"]
            per_tenant[name]["verification"] = {k: val for k, val in v.items() if k != "examples"}
            per_tenant[name]["verification_examples"] = v["examples"][:5]

    agg = MT.aggregate(per_tenant, latencies, wall)
    delta = {k: stats1[k] - stats0[k] for k in stats1}
    agg["storage_totals"] = delta
    cs = agg["cpu_seconds"] = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0}
    cs["other_processes"] = round(cs["machine"] - cs["service"] - cs["azurite"] - cs["bench"], 2)
    agg["service_cpu_ms_per_request"] = round(1000 * cs["service"] / agg["requests"], 2) if agg["requests"] else None
    agg["loadavg_before_after"] = [load0, load1]
    agg["profiled"] = bool(args.profile)
    results["tenants"] = {
        "count": len(names),
        "users_per_tenant": args.users,
        "groups_per_tenant": args.groups,
        "concurrency_per_tenant": args.concurrency,
        "p99_target_ms": MT.P99_TARGET_MS,
        "per_tenant": per_tenant,
        "aggregate": agg,
        "operations": {name: summarize(rec) for name, (rec, _rep) in zip(names, outcomes, strict=True)},
        "phases": {name: rec.phases for name, (rec, _rep) in zip(names, outcomes, strict=True)},
        "error_examples": {
            name: rec.examples[:10] for name, (rec, _rep) in zip(names, outcomes, strict=True) if rec.examples
        },
    }
    print(MT.table(results["tenants"]))
    print(
        f"\nall tenants: {agg['requests']} requests in {agg['seconds']} s = {agg['req_per_s']} req/s; p50 {agg['p50_ms']} ms, "
        f"p99 {agg['p99_ms']} ms, worst tenant p99 {agg['worst_tenant_p99_ms']} ms, slowest request {agg['slowest_request_ms']} ms; "
        f"errors {agg['errors']}; 429s {agg['throttled_429']}"
    )
    print(
        f"load average before/after: {agg['loadavg_before_after']}; CPU seconds during the replay: {cs} "
        f"(service {agg['service_cpu_ms_per_request']} ms/request); storage calls {delta}"
    )
    for name, (rec, rep) in zip(names, outcomes, strict=True):
        for example in rec.examples[:5]:
            print(f"  {name} error example: {json.dumps(example, ensure_ascii=False)[:900]}")
        if not args.no_verify:
            for example in rep.verification["examples"][:3]:
                print(f"  {name} read-back: {example}")
    if "profile" in results:
        print("\nprofile of the service during the replay\n" + format_profile(results["profile"]))


def _phase_profiler(args: argparse.Namespace, service: ServiceProcess, out_path: Path) -> Any:
    """With --profile: a function that starts py-spy on the service for a named phase; its
    ``stop()`` returns the summary (bench/profile.py), the raw file next to the results."""
    if not args.profile:
        return None

    class _Run:
        def __init__(self, name: str) -> None:
            self.output = out_path.with_name(f"{out_path.stem}-{name}-profile.txt")
            self.profiler = Profiler(service.pid, self.output).start()

        def stop(self) -> dict[str, Any]:
            self.profiler.stop()
            summary = analyze(self.output)
            summary["file"] = str(self.output)
            return summary

    return _Run


def _cpu_now(service: Any, azurite: Any) -> dict[str, float]:
    """CPU seconds used so far by the service, Azurite, this process and the whole machine."""
    return {
        "service": cpu_seconds(service.pid),
        "azurite": cpu_seconds(azurite.pid or 0),
        "bench": _self_cpu(),
        "machine": system_busy_seconds(),
    }


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _probe_sizes(args: argparse.Namespace) -> list[int]:
    if args.probe_sizes:
        return sorted({int(s) for s in args.probe_sizes.split(",") if s.strip()})
    if args.big_group <= 0 or args.tenants > 1 or args.feed_backlog or args.webhook_delivery:
        return []
    return sorted({100, 5000, args.big_group} if args.big_group > 5000 else {100, args.big_group})


async def side_by_side(args: argparse.Namespace, service: ServiceProcess, workdir: Path) -> dict[str, Any]:
    """The same replay against the service and a peer, in alternating rounds; ratios of the medians."""
    from .peers import QUIRKS, adapt_client

    peer: PeerProcess | None = None
    token = args.peer_token or secrets.token_urlsafe(16)
    if args.peer == "scim2-server":
        if not PeerProcess.available():
            return {"error": "scim2-server is not installed: `.venv/bin/pip install scim2-server`"}
        peer = PeerProcess(workdir, token).start()
    rounds: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            order = ("service", "peer") if r % 2 == 0 else ("peer", "service")
            for who in order:
                ds = D.build(args.users, args.groups, args.seed, max_group_size=args.max_group_size)
                name = f"sbs-{who}-{r}"
                if who == "service":
                    url, tok = await new_tenant(service, name)
                    quirks: tuple[str, ...] = ()
                    pid = service.pid
                else:
                    url = peer.tenant_url(name) if peer else args.peer.rstrip("/")
                    tok = token
                    quirks = QUIRKS.get(args.peer, ()) if peer else ()
                    pid = peer.pid if peer else 0
                recorder = Recorder()
                cpu0 = cpu_seconds(pid) if pid else 0.0
                busy0, load0 = system_busy_seconds(), loadavg()
                async with Client(url, tok, recorder, args.concurrency) as client:
                    adapt_client(client, quirks)
                    replay = Replay(
                        client, recorder, ds, args.concurrency, args.seed, incremental_base=args.incremental_base
                    )
                    await replay.run(lookups=min(args.lookups, args.users), verify=False)
                    recorder.phase = "verify"
                    await replay.phase("verify", replay.verify())
                summary = replay_summary(recorder)
                summary["cpu_seconds"] = round(cpu_seconds(pid) - cpu0, 2) if pid else None
                summary["machine_busy_seconds"] = round(system_busy_seconds() - busy0, 2)
                summary["loadavg_before_after"] = [load0, loadavg()]
                summary["verification_ok"] = replay.verification["ok"]
                summary["verification"] = {k: v for k, v in replay.verification.items() if k != "examples"}
                summary["verification_examples"] = replay.verification["examples"][:5]
                summary["error_examples"] = recorder.examples[:10]
                summary["peak_rss_kb"] = proc_status(pid).get("VmHWM") if pid else None
                summary["quirks"] = list(quirks)
                summary["operations"] = summarize(recorder)
                rounds.append({"round": r, "server": who, **summary})
                print(
                    f"side-by-side round {r} {who}: {summary['req_per_s']} req/s, p50 {summary['p50_ms']} ms, "
                    f"p99 {summary['p99_ms']} ms, errors {summary['errors']}, read-back {'OK' if summary['verification_ok'] else 'FAILED'}",
                    flush=True,
                )
                for example in recorder.examples[:5]:
                    print(f"    error example: {json.dumps(example, ensure_ascii=False)[:700]}")
    finally:
        if peer is not None:
            peer.stop()

    def med(who: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds if r["server"] == who)

    out: dict[str, Any] = {"peer": args.peer, "rounds": rounds}
    for key in ("req_per_s", "p50_ms", "p99_ms"):
        s, p = med("service", key), med("peer", key)
        out[f"service_{key}"], out[f"peer_{key}"] = s, p
        out[f"ratio_{key}_service_over_peer"] = round(s / p, 3) if p else None
    print(
        f"side-by-side (median of {args.rounds} rounds): service {out['service_req_per_s']} req/s vs {args.peer} "
        f"{out['peer_req_per_s']} req/s: ratio {out['ratio_req_per_s_service_over_peer']}; p99 {out['service_p99_ms']} vs "
        f"{out['peer_p99_ms']} ms"
    )
    # per-operation p50 ratio, service / peer
    per_op: dict[str, dict[str, float]] = {}
    for who in ("service", "peer"):
        for r in rounds:
            if r["server"] == who:
                for row in r["operations"]:
                    per_op.setdefault(row["op"], {}).setdefault(who, []).append(row["p50_ms"])  # type: ignore[attr-defined]
    out["per_op_p50_ratio"] = {
        op: round(statistics.median(v["service"]) / statistics.median(v["peer"]), 3)
        for op, v in per_op.items()
        if v.get("service") and v.get("peer") and statistics.median(v["peer"])
    }
    return out


def _op(results: dict[str, Any], section: str, label: str) -> dict[str, Any] | None:
    for row in (results.get(section) or {}).get("operations", []):
        if row["op"] == label:
            return row
    return None


def evaluate(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    t: list[dict[str, Any]] = []
    replay = (results.get("replay") or {}).get("summary")
    if replay:
        tier = f"{args.users} users / {args.groups} groups / concurrency {args.concurrency}"
        standard = args.users == 1000 and args.groups == 20 and args.concurrency == 5
        t.append(
            check(
                "replay >= 120 req/s",
                replay["req_per_s"] >= 120 if standard else None,
                f"{replay['req_per_s']} req/s ({tier})",
            )
        )
        t.append(
            check("replay p99 <= 100 ms", replay["p99_ms"] <= 100 if standard else None, f"p99 {replay['p99_ms']} ms")
        )
        t.append(check("0 errors", replay["errors"] == 0, f"{replay['errors']} errors; statuses {replay['statuses']}"))
        t.append(check("0 x 429", replay["throttled_429"] == 0, f"{replay['throttled_429']}"))
    v = results.get("verification")
    if v:
        t.append(
            check(
                "0 lost memberships, every user present",
                v["ok"],
                f"missing users {v['users_missing']}, wrong attributes {v['user_attribute_mismatches']}, "
                f"memberships lost {v['memberships_lost']} / extra {v['memberships_extra']} of {v['memberships_expected']}",
            )
        )
    probe = (results.get("probe") or {}).get("result")
    if probe and not probe.get("error"):
        for size in probe["sizes"]:
            if size == min(probe["sizes"]):
                continue
            for verb in ("add", "remove"):
                ratio = probe.get(f"patch_{verb}_ratio_{size}_vs_{min(probe['sizes'])}")
                target = size >= 50000
                t.append(
                    check(
                        f"single-member {verb} p50, {size} vs {min(probe['sizes'])} members within 1.2x",
                        (ratio is not None and ratio <= 1.2) if target else None,
                        f"ratio {ratio}",
                    )
                )
            ratio = probe.get(f"get_excluded_ratio_{size}_vs_{min(probe['sizes'])}")
            t.append(
                check(
                    f"GET excludedAttributes=members independent of size ({size})",
                    ratio is not None and ratio <= 1.2,
                    f"ratio {ratio}",
                )
            )
        for size in probe["sizes"]:
            runs = probe.get(f"get_members_{size}") or []
            if size >= 50000 and runs:
                worst = max(r["seconds"] for r in runs)
                t.append(check(f"GET group of {size} with members < 10 s", worst < 10, f"max {worst} s"))
    hwm = (results.get("service") or {}).get("final_status_kb", {}).get("VmHWM")
    if hwm and not args.feed_backlog and not args.webhook_delivery:  # a target of the users tiers
        t.append(
            check(
                "service peak RSS < 300 MB (target at 100k users)",
                hwm / 1024 < 300 if args.users >= 100000 else None,
                f"{hwm / 1024:.1f} MiB at {args.users} users",
            )
        )
    if results.get("tenants"):
        t.extend(MT.targets(results["tenants"]))
    if args.feed_backlog:
        t.extend(FB.targets(results.get("feed") or {"error": results.get("error", "not run")}))
    if args.webhook_delivery:
        t.extend(WD.targets(results.get("webhooks") or {"error": results.get("error", "not run")}))
    imp = results.get("import", {}).get("function_app_cumulative_ms")
    if imp is not None:
        t.append(check("import function_app < 0.5 s", imp < 500, f"{imp} ms"))
    return t


def compare(results: dict[str, Any], path: Path) -> dict[str, Any]:
    """p99 of Entra's lookups now vs a previous run (e.g. 100,000 users vs 1,000)."""
    before = json.loads(path.read_text())
    out: dict[str, Any] = {
        "against": str(path),
        "users_before": before["args"]["users"],
        "users_now": results["args"]["users"],
    }
    print(f"\nlookups p99: {results['args']['users']} users vs {before['args']['users']} users ({path.name})")
    for label in LOOKUP_OPS:
        now, then = _op(results, "replay", label), _op(before, "replay", label)
        if now and then and then["p99_ms"]:
            ratio = round(now["p99_ms"] / then["p99_ms"], 3)
            out[label] = {"p99_ms_now": now["p99_ms"], "p99_ms_before": then["p99_ms"], "ratio": ratio}
            print(
                f"  {label:<58} {now['p99_ms']:>7.1f} ms vs {then['p99_ms']:>7.1f} ms: {ratio}x {'OK' if ratio <= 1.5 else 'over 1.5x'}"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
