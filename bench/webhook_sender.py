"""``python -m bench.webhook_sender``: how many signed webhook messages per second one endpoint gets.

Issue 12's target: "sustained throughput to one endpoint (target >= 300 events/s on our 2-core
machine)". This measures the sending half of delivery, the part built so far
(:mod:`scim.webhooks.sender`): a **receiver** runs in its own process (this module with
``--serve``: an aiohttp server on 127.0.0.1 that verifies every message with the Standard Webhooks
reference library, ``standardwebhooks``, and answers 204), and this process builds and signs
``--events`` messages (:func:`scim.core.webhook_messages.build_message`, a user event of about
1 KB each, every one with its own id) and sends them through one
:class:`scim.webhooks.sender.WebhookSender` (one session, kept-alive connections),
``--concurrency`` at a time. After a warm-up (``--warmup`` messages, not timed) it reports
events/s, the p50/p99 of one send, and the receiver's count of messages that verified (every
message must: the run fails otherwise). The durable engine's own costs (reading committed events,
recording outcomes) are not part of it; its delivery latency is the bench's webhook phase, to come.

    .venv/bin/python -m bench.webhook_sender --events 5000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from scim.core.webhook_messages import build_message, new_secret
from scim.webhooks.sender import WebhookSender

from .client import percentile
from .report import check

TARGET_EVENTS_PER_S = 300.0
"""Issue 12: sustained throughput to one endpoint."""
READY_TIMEOUT = 20.0
SECRET_VARIABLE = "BENCH_WEBHOOK_SECRET"
"""How the receiver process gets the signing secret."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.webhook_sender", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=5000, help="messages timed (default 5000)")
    p.add_argument("--concurrency", type=int, default=16, help="sends in flight to the endpoint (default 16)")
    p.add_argument("--warmup", type=int, default=200, help="messages sent first, not timed (default 200)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the receiver process
    args = p.parse_args(argv)
    if args.events < 1 or args.concurrency < 1 or args.warmup < 0:
        p.error("--events and --concurrency must be at least 1, --warmup at least 0")
    return args


# -- the receiver (its own process) -----------------------------------------------------------------


async def serve(secret: str) -> None:
    """Receive on a free port of 127.0.0.1 (printed as ``port N``) until stdin closes."""
    webhook = Webhook(secret)
    stats = {"received": 0, "verified": 0, "failed": 0}
    ids: set[str] = set()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        stats["received"] += 1
        try:
            message = webhook.verify(body, dict(request.headers))
        except WebhookVerificationError:
            stats["failed"] += 1
            return web.Response(status=400)
        stats["verified"] += 1
        ids.add(message["data"]["id"])
        return web.Response(status=204)

    async def report(_: web.Request) -> web.Response:
        return web.json_response({**stats, "distinct_ids": len(ids), "cpu_s": _cpu_seconds()})

    app = web.Application()
    app.router.add_post("/hook", receive)
    app.router.add_get("/stats", report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"port {runner.addresses[0][1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent goes
    await runner.cleanup()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 2)


# -- the sender (this process) -----------------------------------------------------------------------


def bench_event(number: int) -> dict[str, Any]:
    """A ``user.updated`` event of about 1 KB, its own id."""
    user_id = str(uuid.UUID(int=number))
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "user.updated",
        "tenant": "bench",
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": {
            "object": {
                "schemas": [
                    "urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                ],
                "id": user_id,
                "externalId": f"{number:08d}-0000-4000-8000-000000000000",
                "userName": f"user{number}@contoso.com",
                "active": True,
                "displayName": f"Bench User {number}",
                "name": {"givenName": "Bench", "familyName": f"User {number}", "formatted": f"Bench User {number}"},
                "emails": [{"value": f"user{number}@contoso.com", "type": "work", "primary": True}],
                "title": "Engineer",
                "preferredLanguage": "en-US",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                    "employeeNumber": str(number),
                    "department": "Research",
                    "manager": {"value": str(uuid.UUID(int=number + 1))},
                },
                "groups": [],
                "meta": {
                    "resourceType": "User",
                    "created": "2026-12-01T18:00:00.000Z",
                    "lastModified": "2026-12-01T18:00:00.000Z",
                    "location": f"https://scim.contoso.com/scim/bench/Users/{user_id}",
                },
            }
        },
    }


async def send_all(url: str, secret: str, count: int, concurrency: int, sender: WebhookSender) -> dict[str, Any]:
    """Build, sign and send ``count`` messages, ``concurrency`` at a time; the timings."""
    latencies: list[float] = []
    failures: list[str] = []
    next_number = iter(range(count))

    async def worker() -> None:
        for number in next_number:
            message = build_message(bench_event(number), [secret], datetime.now(UTC))
            started = time.perf_counter()
            result = await sender.send(url, message)
            latencies.append(time.perf_counter() - started)
            if result.status != 204:
                failures.append(result.error or str(result.status))

    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "events": count,
        "seconds": round(seconds, 3),
        "events_per_s": round(count / seconds, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "sender_cpu_s": round(_cpu_seconds() - cpu_before, 2),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    secret = new_secret()
    receiver = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.webhook_sender",
        "--serve",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, SECRET_VARIABLE: secret},  # not on the command line
    )
    try:
        assert receiver.stdout is not None
        line = (await asyncio.wait_for(receiver.stdout.readline(), READY_TIMEOUT)).decode()
        if not line.startswith("port "):
            raise RuntimeError(f"the receiver did not start (said {line!r})")
        base = f"http://127.0.0.1:{int(line.split()[1])}"
        sender = WebhookSender(in_azure=False, connections_per_endpoint=args.concurrency)
        try:
            if args.warmup:
                await send_all(f"{base}/hook", secret, args.warmup, args.concurrency, sender)
            timed = await send_all(f"{base}/hook", secret, args.events, args.concurrency, sender)
        finally:
            await sender.close()
        async with aiohttp.ClientSession() as client, client.get(f"{base}/stats") as response:
            got = await response.json()
    finally:
        if receiver.stdin:
            receiver.stdin.close()  # the receiver's signal to stop
        try:
            await asyncio.wait_for(receiver.wait(), 10)
        except TimeoutError:
            receiver.kill()
            await receiver.wait()
    sent = args.warmup + args.events
    verified = got["verified"] == got["distinct_ids"] == sent and got["failed"] == 0
    return {
        **timed,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "receiver": got,
        "all_verified": verified,
        "cpus": os.cpu_count(),
        "targets": [
            check(
                "throughput to one endpoint",
                timed["events_per_s"] >= TARGET_EVENTS_PER_S,
                f"{timed['events_per_s']} events/s (target >= {TARGET_EVENTS_PER_S:g})",
            ),
            check(
                "every message verified (standardwebhooks)",
                verified and timed["failures"] == 0,
                f"{got['verified']} of {sent} verified, {got['failed']} refused, {timed['failures']} failed sends",
            ),
        ],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        asyncio.run(serve(os.environ[SECRET_VARIABLE]))
        return 0
    result = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"webhook sender: {result['events']} signed events to one local endpoint, {result['concurrency']} "
            f"concurrent, {result['cpus']} CPUs: {result['events_per_s']} events/s "
            f"({result['seconds']} s; one send p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; "
            f"CPU: sender {result['sender_cpu_s']} s, receiver {result['receiver']['cpu_s']} s in all)"
        )
        for target in result["targets"]:
            print(f"  [{'ok' if target['ok'] else 'MISSED'}] {target['target']}: {target['detail']}")
    return 0 if all(t["ok"] for t in result["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
