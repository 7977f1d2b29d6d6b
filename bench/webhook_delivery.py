"""``--webhook-delivery N``: SCIM writes to webhook deliveries, end to end (issue 12, "Webhooks").

Issue 12's targets: "p50 and p99 from a SCIM response to the receiver getting its event
(targets locally: p50 <= 1 s, p99 <= 5 s), and sustained throughput to one endpoint (target >=
300 events/s on our 2-core machine)". Measured against the bench's own in-memory Azurite and
service (``bench/server.py``: ``devtools.localhost``'s host, which also runs the app's timers, so
the delivery sweep runs every 10 s as in Azure), with a **receiver** in this process (an aiohttp
server on 127.0.0.1 that verifies every message with the Standard Webhooks reference library,
``standardwebhooks``, and answers 204). Its endpoints are registered through the app's registry
(:class:`scim.store.webhooks_tables.TableWebhookRegistry`, what ``python -m scim.admin webhook
add`` uses) on the same storage. Every write creates or updates a user whose ``userName`` names
the write, so an event is matched to its write by its type and ``data.object.userName``.

1. **Latency** (``--webhook-delivery N``): N writes paced like Entra, :data:`LATENCY_RATE` a
   second, at most :data:`LATENCY_CLIENTS` in flight: a user created, then (the next write) that
   user's ``displayName`` replaced by PATCH. For each write, the time from its SCIM response
   arriving here to its event arriving at the receiver (same clock): p50, p95, p99, max.
2. **Live burst** (``--webhook-burst M``): M user creations (distinct users, so per-resource
   order does not serialise them) by :data:`BURST_CLIENTS` clients, as fast as they go, with
   delivery running as they are written: writes/s, events/s at the receiver from its first
   event to its last, and each write's response-to-event delay (p50, p99: checked against the
   5 s of the latency target, so a deliverer that falls behind the writes shows). On a 2-core
   machine the writes (service and Azurite) and the deliveries share the CPUs, so the events/s
   here are bounded by the write rate as much as by delivery; ``timeline`` has the writes
   answered and the events received per half second.
3. **Backlog drain** (M again, another tenant and endpoint): the endpoint is registered disabled,
   the M users are written, then it is enabled: the engine's sweep (within 10 s) finds the
   backlog and delivers it with nothing else running: events/s from the first to the last event,
   the engine's sustained throughput to one endpoint.

Each phase checks that every event arrived: every write's event, and every event id of the
tenant's feed since the endpoint was registered (read from storage) received at least once;
redeliveries (same ``webhook-id``) are counted, as are messages that fail verification.
The orchestration is :func:`run` (called by ``bench/__main__.py``); summaries, targets and text
are here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .client import Client, Recorder, percentile, summarize
from .report import check

TENANT = "bench-hooks"
DRAIN_TENANT = "bench-hooks-drain"
LATENCY_RATE = 20.0
"""Writes a second in the latency phase (Entra's pace is of this order)."""
LATENCY_CLIENTS = 4
"""Writes in flight at most in the latency phase."""
BURST_CLIENTS = 16
"""Concurrent clients of the burst phases."""
WARMUP_WRITES = 4
P50_TARGET_S = 1.0
P99_TARGET_S = 5.0
EVENTS_PER_S_TARGET = 300.0
ARRIVAL_WAIT_S = 60.0
"""How long after its last write a phase waits for the events still missing."""
ENDPOINTS_TTL_MARGIN_S = 6.0
"""Waited after disabling the drain endpoint: the engine trusts its list of endpoints 5 s."""
SWEEP_WAIT_S = 30.0
"""How long the drain waits for the sweep to start delivering (it runs every 10 s)."""

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


# -- the receiver ---------------------------------------------------------------------------------


@dataclass
class Arrival:
    """One verified message as the receiver got it."""

    at: float  # time.perf_counter() when its request arrived
    path: str
    webhook_id: str
    type: str
    user_name: str


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1: each path has its endpoint's secret; every message is
    verified (``standardwebhooks``), recorded and answered 204 (400 when it does not verify)."""

    secrets: dict[str, str] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    refused: int = 0
    port: int = 0
    _runner: Any = None
    _verifiers: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        from aiohttp import web

        async def receive(request: web.Request) -> web.Response:
            at = time.perf_counter()
            body = await request.read()
            path = request.path
            verifier = self._verifier(path)
            try:
                if verifier is None:
                    raise ValueError(f"no endpoint at {path}")
                message = verifier.verify(body, dict(request.headers))
            except Exception:  # noqa: BLE001 - any refusal is counted (WebhookVerificationError, ...)
                self.refused += 1
                return web.Response(status=400)
            event = message.get("data") or {}
            obj = (event.get("data") or {}).get("object") or {}
            self.arrivals.append(
                Arrival(
                    at, path, request.headers.get("webhook-id", ""), str(message.get("type")), str(obj.get("userName"))
                )
            )
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/{name}", receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    def _verifier(self, path: str) -> Any:
        if path not in self._verifiers and path in self.secrets:
            from standardwebhooks import Webhook

            self._verifiers[path] = Webhook(self.secrets[path])
        return self._verifiers.get(path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def on(self, path: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.path == path]


# -- the writes -----------------------------------------------------------------------------------


def user_name(phase: str, index: int) -> str:
    return f"hook-{phase}-{index}@bench.example.com"


@dataclass
class Writes:
    """When each write's response arrived, by the key of its event: ``(type, userName)``."""

    responded: dict[tuple[str, str], float] = field(default_factory=dict)
    failed: int = 0
    started: float = 0.0
    ended: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ended - self.started


async def create_user(client: Client, phase: str, index: int, writes: Writes) -> str | None:
    """POST /Users; the new id (None if the write failed)."""
    name = user_name(phase, index)
    body = {"schemas": [USER_SCHEMA], "userName": name, "active": True, "displayName": f"Hook {phase} {index}"}
    status, created = await client.request(f"POST /Users ({phase})", "POST", "/Users", body=body, expect=(201,))
    if status != 201 or not isinstance(created, dict):
        writes.failed += 1
        return None
    writes.responded[("user.created", name)] = time.perf_counter()
    return str(created["id"])


async def update_user(client: Client, phase: str, index: int, user_id: str, writes: Writes) -> None:
    """PATCH /Users/{id}: replace the displayName (a ``user.updated`` event)."""
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "displayName", "value": f"Hook {phase} {index} (renamed)"}],
    }
    status, _ = await client.request(f"PATCH /Users ({phase})", "PATCH", f"/Users/{user_id}", body=body)
    if status != 200:
        writes.failed += 1
        return
    writes.responded[("user.updated", user_name(phase, index))] = time.perf_counter()


async def paced_writes(client: Client, phase: str, count: int, rate: float, clients: int) -> Writes:
    """``count`` writes, one every ``1/rate`` s, at most ``clients`` in flight: user j created at
    write 2j, then renamed at write 2j+1 (after its creation returned)."""
    writes = Writes()
    limit = asyncio.Semaphore(clients)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def at(k: int) -> None:
        await asyncio.sleep(max(0.0, start + k / rate - loop.time()))

    async def pair(j: int) -> None:
        await at(2 * j)
        async with limit:
            user_id = await create_user(client, phase, j, writes)
        if user_id is None or 2 * j + 1 >= count:
            return
        await at(2 * j + 1)
        async with limit:
            await update_user(client, phase, j, user_id, writes)

    writes.started = time.perf_counter()
    await asyncio.gather(*(pair(j) for j in range((count + 1) // 2)))
    writes.ended = time.perf_counter()
    return writes


async def burst_writes(client: Client, phase: str, count: int, clients: int) -> Writes:
    """``count`` user creations by ``clients`` clients, as fast as they go."""
    writes = Writes()
    numbers = iter(range(count))

    async def worker() -> None:
        for i in numbers:
            await create_user(client, phase, i, writes)

    writes.started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    writes.ended = time.perf_counter()
    return writes


async def wait_for_events(
    receiver: Receiver, path: str, expected: Sequence[tuple[str, str]], *, within: float
) -> tuple[bool, float]:
    """Wait until every expected ``(type, userName)`` arrived on ``path``, at most ``within``
    seconds (longer while events keep arriving). Returns (all arrived, seconds waited)."""
    started = time.perf_counter()
    deadline = started + within
    want = set(expected)
    seen = 0
    while True:
        arrived = receiver.on(path)
        got = {(a.type, a.user_name) for a in arrived}
        if want <= got:
            return True, time.perf_counter() - started
        if len(arrived) > seen:  # progress: give it more time
            seen = len(arrived)
            deadline = max(deadline, time.perf_counter() + 10.0)
        if time.perf_counter() > deadline:
            return False, time.perf_counter() - started
        await asyncio.sleep(0.05)


# -- summaries --------------------------------------------------------------------------------------


def first_arrivals(arrivals: Sequence[Arrival]) -> dict[tuple[str, str], float]:
    """The first arrival time of each ``(type, userName)``."""
    out: dict[tuple[str, str], float] = {}
    for a in arrivals:
        key = (a.type, a.user_name)
        if key not in out or a.at < out[key]:
            out[key] = a.at
    return out


def latency_summary(writes: Writes, arrivals: Sequence[Arrival]) -> dict[str, Any]:
    """From each write's response to its event's first arrival (seconds; negative when the event
    arrived before the client had read the response)."""
    first = first_arrivals(arrivals)
    delays = sorted(first[key] - at for key, at in writes.responded.items() if key in first)
    missing = sum(1 for key in writes.responded if key not in first)
    return {
        "writes": len(writes.responded) + writes.failed,
        "writes_failed": writes.failed,
        "events_matched": len(delays),
        "events_missing": missing,
        "write_seconds": round(writes.seconds, 2),
        "writes_per_s": round(len(writes.responded) / writes.seconds, 1) if writes.seconds > 0 else 0.0,
        "p50_ms": round(percentile(delays, 50) * 1000, 1),
        "p95_ms": round(percentile(delays, 95) * 1000, 1),
        "p99_ms": round(percentile(delays, 99) * 1000, 1),
        "max_ms": round((delays[-1] if delays else 0.0) * 1000, 1),
        "min_ms": round((delays[0] if delays else 0.0) * 1000, 1),
    }


def throughput_summary(writes: Writes, arrivals: Sequence[Arrival], *, since: float | None = None) -> dict[str, Any]:
    """Events/s at the receiver from its first to its last event of ``arrivals`` (distinct
    events; the intervals between them, count - 1), and how that compares with the writes.
    ``since``: the moment delivery could start (the drain's enable), for its pick-up delay."""
    first = first_arrivals(arrivals)
    matched = [first[key] for key in writes.responded if key in first]
    delays = sorted(first[key] - at for key, at in writes.responded.items() if key in first)
    out: dict[str, Any] = {
        "writes": len(writes.responded) + writes.failed,
        "writes_failed": writes.failed,
        "write_seconds": round(writes.seconds, 2),
        "writes_per_s": round(len(writes.responded) / writes.seconds, 1) if writes.seconds > 0 else 0.0,
        "events_matched": len(matched),
        "events_missing": sum(1 for key in writes.responded if key not in first),
        "events_per_s": 0.0,
        "delivery_seconds": 0.0,
    }
    if len(matched) >= 2:
        span = max(matched) - min(matched)
        out["delivery_seconds"] = round(span, 2)
        out["events_per_s"] = round((len(matched) - 1) / span, 1) if span > 0 else 0.0
    if matched:
        # how long after the last write's response its events were all in
        out["last_event_after_last_write_s"] = round(max(matched) - writes.ended, 2)
        if since is not None:
            out["first_event_after_enable_s"] = round(min(matched) - since, 2)
        else:  # live: each write's response to its event, as in the latency phase
            out["delay_p50_ms"] = round(percentile(delays, 50) * 1000, 1)
            out["delay_p99_ms"] = round(percentile(delays, 99) * 1000, 1)
            out["delay_max_ms"] = round(delays[-1] * 1000, 1)
        out["timeline"] = timeline(writes, matched)
    return out


def timeline(writes: Writes, arrivals: Sequence[float], step: float = 0.5) -> list[list[float]]:
    """``[seconds since the first write, writes answered, events arrived]`` per ``step`` seconds."""
    if not writes.responded:
        return []
    zero = writes.started
    end = max([*writes.responded.values(), *arrivals])
    buckets = [[round(i * step, 1), 0, 0] for i in range(int((end - zero) / step) + 1)]
    for at in writes.responded.values():
        buckets[min(int((at - zero) / step), len(buckets) - 1)][1] += 1
    for at in arrivals:
        if at >= zero:
            buckets[min(int((at - zero) / step), len(buckets) - 1)][2] += 1
    return buckets


def completeness(feed_ids: Sequence[str], arrivals: Sequence[Arrival], refused: int = 0) -> dict[str, Any]:
    """Every event id of the feed received (at least once)? Redeliveries and strays counted."""
    received = [a.webhook_id for a in arrivals]
    unique = set(received)
    expected = set(feed_ids)
    missing = len(expected - unique)
    return {
        "ok": missing == 0 and len(expected) > 0 and refused == 0,
        "feed_events": len(expected),
        "received": len(received),
        "unique": len(unique),
        "missing": missing,
        "duplicates": len(received) - len(unique),
        "not_in_feed": len(unique - expected),
        "refused": refused,
    }


def targets(hooks: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS/FAIL lines of the webhook phase (see the module docstring)."""
    if hooks.get("error") and "latency" not in hooks:
        return [check("webhook delivery measured", False, hooks["error"])]
    out = []
    lat = hooks.get("latency")
    if lat:
        out.append(
            check(
                f"webhook latency p50 <= {P50_TARGET_S:g} s (SCIM response to event received)",
                lat["events_matched"] > 0 and lat["p50_ms"] <= P50_TARGET_S * 1000,
                f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms over {lat['events_matched']} "
                f"writes at {lat['writes_per_s']} writes/s",
            )
        )
        out.append(
            check(
                f"webhook latency p99 <= {P99_TARGET_S:g} s",
                lat["events_matched"] > 0 and lat["p99_ms"] <= P99_TARGET_S * 1000,
                f"p99 {lat['p99_ms']} ms",
            )
        )
    drain, burst = hooks.get("drain"), hooks.get("burst")
    if burst and "delay_p99_ms" in burst:
        out.append(
            check(
                f"webhook latency p99 <= {P99_TARGET_S:g} s during a write burst (live burst)",
                burst["delay_p99_ms"] <= P99_TARGET_S * 1000,
                f"response -> event p50 {burst['delay_p50_ms']} ms, p99 {burst['delay_p99_ms']} ms at "
                f"{burst['writes_per_s']} writes/s; {burst['events_per_s']} events/s first to last",
            )
        )
    if drain:
        out.append(
            check(
                f"webhook throughput to one endpoint >= {EVENTS_PER_S_TARGET:g} events/s (backlog drain)",
                drain["events_per_s"] >= EVENTS_PER_S_TARGET,
                f"{drain['events_per_s']} events/s over {drain['events_matched']} events"
                + (
                    f"; live burst {burst['events_per_s']} events/s at {burst['writes_per_s']} writes/s"
                    if burst
                    else ""
                ),
            )
        )
    elif burst:
        out.append(
            check(
                f"webhook throughput to one endpoint >= {EVENTS_PER_S_TARGET:g} events/s (live burst)",
                burst["events_per_s"] >= EVENTS_PER_S_TARGET,
                f"{burst['events_per_s']} events/s at {burst['writes_per_s']} writes/s",
            )
        )
    checks = [(name, hooks[name]) for name in ("latency", "burst", "drain") if hooks.get(name)]
    complete = [hooks.get(f"{name}_complete") for name, _ in checks]
    ok = bool(checks) and all(s["events_missing"] == 0 and s["writes_failed"] == 0 for _, s in checks)
    ok = ok and all(c is not None and c["ok"] for c in complete) and not hooks.get("error")
    detail = "; ".join(
        f"{name}: {s['events_matched']} of {s['writes']} writes' events, {s['writes_failed']} failed writes"
        + (
            f", feed {c['feed_events']} events: {c['missing']} missing, {c['duplicates']} redelivered, "
            f"{c['refused']} refused"
            if c
            else ""
        )
        for (name, s), c in zip(checks, complete, strict=True)
    )
    out.append(check("every webhook event delivered, verified", ok, detail or hooks.get("error", "nothing measured")))
    return out


def format_report(hooks: dict[str, Any]) -> str:
    """The text report of the phase."""
    lines = [f"\nwebhook delivery: tenant {hooks.get('tenant')}, receiver on 127.0.0.1 (standardwebhooks)"]
    lat = hooks.get("latency")
    if lat:
        lines.append(
            f"  latency: {lat['writes']} writes paced at {hooks['latency_rate']:g}/s ({lat['writes_per_s']} writes/s "
            f"achieved, {hooks['latency_clients']} in flight at most): SCIM response -> event p50 {lat['p50_ms']} ms, "
            f"p95 {lat['p95_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms; missing {lat['events_missing']}"
        )
    for name, title in (("burst", "live burst"), ("drain", "backlog drain")):
        s = hooks.get(name)
        if not s:
            continue
        extra = ""
        if "first_event_after_enable_s" in s:
            extra = f"; first event {s['first_event_after_enable_s']} s after enabling (the sweep)"
        elif "last_event_after_last_write_s" in s:
            extra = (
                f"; last event {s['last_event_after_last_write_s']} s after the last write; response -> event "
                f"p50 {s['delay_p50_ms']} ms, p99 {s['delay_p99_ms']} ms"
            )
        lines.append(
            f"  {title}: {s['writes']} creates by {hooks['burst_clients']} clients at {s['writes_per_s']} writes/s; "
            f"{s['events_matched']} events in {s['delivery_seconds']} s = {s['events_per_s']} events/s "
            f"(first to last){extra}; missing {s['events_missing']}"
        )
        cpu = hooks.get(f"{name}_cpu_seconds")
        if cpu:
            lines.append(f"    CPU seconds: {cpu}")
    for name in ("latency", "burst", "drain"):
        c = hooks.get(f"{name}_complete")
        if c:
            lines.append(
                f"  {name} read-back: {'OK' if c['ok'] else 'FAILED'}: {c['feed_events']} events in the feed, "
                f"{c['unique']} received ({c['received']} deliveries: {c['duplicates']} redelivered), "
                f"{c['missing']} missing, {c['not_in_feed']} not in the feed, {c['refused']} failed verification"
            )
    if hooks.get("error"):
        lines.append(f"  error: {hooks['error']}")
    return "\n".join(lines)


# -- the run ----------------------------------------------------------------------------------------


async def _feed_ids(runtime: Any, tenant: str, after: str) -> list[str]:
    """Every event id of ``tenant``'s feed after ``after`` (a position)."""
    from scim.store.event_timing import wall_us

    ids: list[str] = []
    before = wall_us() + 3600 * 1_000_000
    while True:
        page = await runtime.store.read_events(tenant, after=after, before=before, limit=1000)
        if not page:
            return ids
        ids += [str(e.event["id"]) for e in page]
        after = page[-1].position


async def _register(runtime: Any, receiver: Receiver, path: str, tenant: str) -> tuple[str, str]:
    """An endpoint for ``tenant`` at ``path`` of the receiver; (its id, its start position)."""
    from scim.webhooks.delivery import initial_position

    endpoint_id, secret = await runtime.webhooks.add(receiver.url(path), [tenant])
    receiver.secrets[path] = secret
    endpoint = await runtime.webhooks.get(endpoint_id)
    return endpoint_id, initial_position(endpoint)


async def _timed(service: Any, azurite: Any, work: Callable[[], Awaitable[Any]]) -> tuple[Any, dict[str, float]]:
    from .processes import cpu_seconds

    def now() -> dict[str, float]:
        return {"service": cpu_seconds(service.pid), "azurite": cpu_seconds(azurite.pid or 0)}

    before = now()
    result = await work()
    after = now()
    return result, {k: round(after[k] - before[k], 2) for k in before}


async def run(service: Any, azurite: Any, args: Any, profile: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """The three phases (module docstring). ``profile(name)``, when given, returns an object with
    ``stop()`` (a py-spy recording of the service) started around the burst and the drain."""
    from scim.admin.core import create_tenant
    from scim.functions.runtime import build_runtime
    from scim.settings import Settings

    count, burst = args.webhook_delivery, args.webhook_burst
    hooks: dict[str, Any] = {
        "tenant": TENANT,
        "latency_rate": LATENCY_RATE,
        "latency_clients": LATENCY_CLIENTS,
        "burst_clients": BURST_CLIENTS,
        "settle_seconds": None,
    }
    settings = Settings.from_env(service.env(service.port))
    hooks["settle_seconds"] = settings.events_settle_seconds
    runtime = build_runtime(settings)
    receiver = Receiver()
    await receiver.start()
    try:
        creds = await create_tenant(settings, TENANT)
        _hook_id, hook_start = await _register(runtime, receiver, "/hook", TENANT)
        recorder = Recorder()
        async with Client(creds.url, creds.token, recorder, BURST_CLIENTS) as client:
            # warm-up (not measured): pools open, the deliverer started
            recorder.phase = "webhook warm-up"
            warm = await paced_writes(client, "warm", WARMUP_WRITES, LATENCY_RATE, 1)
            await wait_for_events(receiver, "/hook", list(warm.responded), within=ARRIVAL_WAIT_S)

            print(f"webhook delivery: latency, {count} writes at {LATENCY_RATE:g}/s ...", flush=True)
            recorder.phase = "webhook latency"
            writes = await paced_writes(client, "lat", count, LATENCY_RATE, LATENCY_CLIENTS)
            await wait_for_events(receiver, "/hook", list(writes.responded), within=ARRIVAL_WAIT_S)
            hooks["latency"] = latency_summary(writes, receiver.on("/hook"))
            hooks["latency_complete"] = completeness(
                await _feed_ids(runtime, TENANT, hook_start), receiver.on("/hook"), receiver.refused
            )
            print(
                f"  p50 {hooks['latency']['p50_ms']} ms, p99 {hooks['latency']['p99_ms']} ms "
                f"({hooks['latency']['events_matched']} events)",
                flush=True,
            )

            if burst:
                profiler = profile("burst") if profile else None
                print(f"webhook delivery: live burst, {burst} creates by {BURST_CLIENTS} clients ...", flush=True)
                recorder.phase = "webhook burst"

                async def live() -> Writes:
                    w = await burst_writes(client, "burst", burst, BURST_CLIENTS)
                    await wait_for_events(receiver, "/hook", list(w.responded), within=ARRIVAL_WAIT_S)
                    return w

                try:
                    writes, hooks["burst_cpu_seconds"] = await _timed(service, azurite, live)
                finally:
                    if profiler is not None:
                        hooks["burst_profile"] = profiler.stop()
                arrivals = [a for a in receiver.on("/hook") if a.user_name.startswith("hook-burst-")]
                hooks["burst"] = throughput_summary(writes, arrivals)
                hooks["burst_complete"] = completeness(
                    await _feed_ids(runtime, TENANT, hook_start), receiver.on("/hook"), receiver.refused
                )
                print(
                    f"  {hooks['burst']['events_per_s']} events/s at {hooks['burst']['writes_per_s']} writes/s",
                    flush=True,
                )

        if burst:
            hooks["drain"], hooks["drain_complete"], hooks["drain_cpu_seconds"], drain_profile = await _drain(
                service, azurite, settings, runtime, receiver, burst, profile
            )
            if drain_profile is not None:
                hooks["drain_profile"] = drain_profile
        hooks["operations"] = summarize(recorder)
        hooks["error_examples"] = recorder.examples[:10]
    finally:
        await receiver.stop()
        await runtime.close()
    return hooks


async def _drain(
    service: Any,
    azurite: Any,
    settings: Any,
    runtime: Any,
    receiver: Receiver,
    count: int,
    profile: Callable[[str], Any] | None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float], Any]:
    """Register a disabled endpoint, write ``count`` users, enable it, time the sweep's delivery."""
    from scim.admin.core import create_tenant

    creds = await create_tenant(settings, DRAIN_TENANT)
    endpoint_id, start = await _register(runtime, receiver, "/drain", DRAIN_TENANT)
    await runtime.webhooks.disable(endpoint_id, "bench: the backlog is written first")
    await asyncio.sleep(ENDPOINTS_TTL_MARGIN_S)  # every view of the endpoints has it disabled
    print(f"webhook delivery: backlog drain, writing {count} creates (endpoint disabled) ...", flush=True)
    recorder = Recorder(phase="webhook drain")
    async with Client(creds.url, creds.token, recorder, BURST_CLIENTS) as client:
        writes = await burst_writes(client, "drain", count, BURST_CLIENTS)
    early = len(receiver.on("/drain"))
    print(f"  written at {round(count / writes.seconds, 1)} writes/s; enabling the endpoint ...", flush=True)
    profiler = profile("drain") if profile else None
    enabled = time.perf_counter()

    async def drain() -> None:
        await runtime.webhooks.enable(endpoint_id)
        await wait_for_events(receiver, "/drain", list(writes.responded), within=SWEEP_WAIT_S + ARRIVAL_WAIT_S)

    try:
        _, cpu = await _timed(service, azurite, drain)
    finally:
        result = profiler.stop() if profiler is not None else None
    summary = throughput_summary(writes, receiver.on("/drain"), since=enabled)
    summary["delivered_while_disabled"] = early
    complete = completeness(await _feed_ids(runtime, DRAIN_TENANT, start), receiver.on("/drain"), receiver.refused)
    print(
        f"  {summary['events_per_s']} events/s (first event {summary.get('first_event_after_enable_s')} s after enabling)",
        flush=True,
    )
    return summary, complete, cpu, result
