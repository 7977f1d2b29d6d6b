"""``--feed-backlog N``: a consumer catches up a backlog of N change events through the feed (issue 12).

Issue 12's target: "A consumer catches up a backlog of 100,000 events through the feed in
O(pages), one query per page". This mode measures it end to end, against the bench's own
in-memory Azurite and service (``bench/server.py``):

1. **Seed** N events of one tenant (:data:`TENANT`) straight into the directory table, in the
   row format the store commits (:func:`scim.store.entities._event_entity`, the function the
   store's writes use, around :func:`scim.core.events.event_document`), stamped in the past:
   the newest :data:`NEWEST_AGE_S` seconds ago (older than the settle horizon, 15 s), one every
   :data:`SPACING_US` microseconds before it (100,000 span 17 minutes, far within the 30 days of
   retention), every 10th sharing the stamp of the one before (feed order is then decided by the
   event id, as for events committed in the same microsecond). They are written in
   entity-group transactions of 100 rows, ``--seed-concurrency`` in flight; not measured as the
   service's cost, but its rate is reported.
2. **Consume** it as an application would, over real HTTP through the service's host: an
   application key from the runtime's registry (:class:`scim.store.app_keys_tables.TableAppKeyRegistry`),
   then ``GET /api/v1/tenants/bench-feed/events?limit=1000`` from the start, following ``next``
   one page after the other until a page is empty. Each page's latency is the time to its
   whole body; its storage calls come from the service's counter (``X-Bench-Storage-Detail``).
3. **Check**: every seeded event received exactly once and in feed order (stamp, then id; the
   event's ``type``, ``tenant`` and ``time`` as seeded, and every 100th compared whole); exactly
   one directory query per page (Azure may end a query page early with a continuation token,
   and the feed then serves a short page rather than follow it: short pages are counted); one
   application-key read per page; and the O(pages) property: the median page latency in the
   first, middle and last tenth of the backlog, which should be flat.

The orchestration is :func:`run` (called by ``bench/__main__.py``); the summaries, targets and
the text are here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .client import percentile
from .report import check

TENANT = "bench-feed"
PAGE_LIMIT = 1000
"""``limit`` of every page (the feed's maximum)."""
ROWS_PER_TRANSACTION = 100
"""Rows per entity-group transaction when seeding (Azure's maximum)."""
SPACING_US = 10_000
"""Microseconds between two seeded stamps."""
NEWEST_AGE_S = 3600
"""Age of the newest seeded event (seconds): far older than the settle horizon."""
SAME_STAMP_EVERY = 10
"""Every 10th event shares the stamp of the one before it."""
SAMPLE_EVERY = 100
"""Every 100th event is compared whole with what was seeded."""
FLAT_RATIO = 1.5
"""The O(pages) target: the middle and last tenths' median page latency at most this times the first's."""
SEED_ATTEMPTS = 4

_TYPES = ("user.created", "user.updated", "user.updated", "user.deactivated", "group.updated")


@dataclass
class Backlog:
    """The events seeded: their feed order and what each must look like."""

    order: list[str] = field(default_factory=list)  # event ids, in feed order
    expected: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (type, time)
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> the whole event


def backlog_stamps(count: int, now_us: int) -> list[int]:
    """The stamps of ``count`` events (oldest first): the newest :data:`NEWEST_AGE_S` s before
    ``now_us``, :data:`SPACING_US` apart, every :data:`SAME_STAMP_EVERY`-th equal to the one before."""
    newest = now_us - NEWEST_AGE_S * 1_000_000
    oldest = newest - max(count - 1, 0) * SPACING_US
    stamps = [oldest + i * SPACING_US for i in range(count)]
    for i in range(SAME_STAMP_EVERY, count, SAME_STAMP_EVERY):
        stamps[i] = stamps[i - 1]
    return stamps


def event_ids(count: int, seed: int) -> list[str]:
    """``count`` event ids of the store's format (``evt_`` and 32 hex digits), reproducible."""
    rng = random.Random(seed)
    return [f"evt_{rng.getrandbits(128):032x}" for _ in range(count)]


def event_for(tenant: str, index: int, event_id: str, stamp: int) -> dict[str, Any]:
    """A user or group event as the store renders it (:func:`scim.core.events.event_document`),
    about 700 bytes of JSON, like a typical Entra user's."""
    from scim.core.events import event_document
    from scim.store.event_timing import stamp_time

    kind = _TYPES[index % len(_TYPES)]
    when = stamp_time(stamp)
    rid = f"{index:08d}-0000-4000-8000-{index:012d}"
    if kind.startswith("group."):
        obj: dict[str, Any] = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": rid,
            "displayName": f"Bench group {index}",
            "externalId": f"g-{index}",
            "meta": {"resourceType": "Group", "created": when, "lastModified": when},
        }
    else:
        obj = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": rid,
            "userName": f"user{index}@bench.example.com",
            "externalId": f"u-{index}",
            "active": kind != "user.deactivated",
            "displayName": f"Bench User {index}",
            "name": {"givenName": "Bench", "familyName": f"User {index}"},
            "emails": [{"type": "work", "value": f"user{index}@bench.example.com", "primary": True}],
            "groups": [],
            "meta": {"resourceType": "User", "created": when, "lastModified": when},
        }
    return event_document(id=event_id, type=kind, tenant=tenant, time=when, obj=obj)


def plan(tenant: str, count: int, now_us: int, seed: int) -> tuple[Backlog, list[tuple[int, str, int]]]:
    """The backlog to expect and the events to write: ``(index, id, stamp)`` each."""
    from scim.store import keys

    stamps = backlog_stamps(count, now_us)
    ids = event_ids(count, seed)
    specs = list(zip(range(count), ids, stamps, strict=True))
    backlog = Backlog(order=[s[1] for s in sorted(specs, key=lambda s: keys.event_key(s[2], s[1]))])
    for index, event_id, stamp in specs:
        event = event_for(tenant, index, event_id, stamp)
        backlog.expected[event_id] = (event["type"], event["time"])
        if index % SAMPLE_EVERY == 0:
            backlog.samples[event_id] = event
    return backlog, specs


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def seed(
    connection_string: str,
    prefix: str,
    tenant: str,
    specs: Sequence[tuple[int, str, int]],
    *,
    concurrency: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Insert the events of ``specs`` in transactions of :data:`ROWS_PER_TRANSACTION`, ``concurrency`` in flight."""
    from azure.core.exceptions import ResourceExistsError
    from azure.data.tables import TableTransactionError
    from azure.data.tables.aio import TableServiceClient

    from scim.store import keys
    from scim.store.entities import _event_entity

    pk = keys.partition_key(tenant)
    sem = asyncio.Semaphore(max(concurrency, 1))
    done = retries = 0
    total = len(specs)
    next_report = 20_000
    started = time.perf_counter()
    service = TableServiceClient.from_connection_string(connection_string)
    async with service:
        table = service.get_table_client(f"{prefix}directory")
        with contextlib.suppress(ResourceExistsError):  # the service's first write made it
            await table.create_table()

        async def send(chunk: Sequence[tuple[int, str, int]]) -> None:
            nonlocal done, retries, next_report
            ops = [("create", _event_entity(pk, stamp, event_for(tenant, i, eid, stamp))) for i, eid, stamp in chunk]
            async with sem:
                for attempt in range(SEED_ATTEMPTS):
                    try:
                        await table.submit_transaction(ops)  # type: ignore[arg-type]
                        break
                    except TableTransactionError as error:
                        # an earlier attempt whose answer was lost did commit (its rows exist)
                        if attempt and getattr(error, "error_code", "") == "EntityAlreadyExists":
                            break
                        raise
                    except Exception:  # a lost request or a busy emulator: send again
                        if attempt == SEED_ATTEMPTS - 1:
                            raise
                        retries += 1
                        await asyncio.sleep(0.5 * (attempt + 1))
            done += len(chunk)
            if progress and done >= next_report:
                next_report += 20_000
                print(f"  seeded {done} of {total} events ({time.perf_counter() - started:.0f} s)", flush=True)

        await asyncio.gather(*(send(chunk) for chunk in _chunks(specs, ROWS_PER_TRANSACTION)))
        await table.close()
    seconds = time.perf_counter() - started
    return {
        "events": total,
        "transactions": -(-total // ROWS_PER_TRANSACTION),
        "rows_per_transaction": ROWS_PER_TRANSACTION,
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "events_per_s": round(total / seconds, 1) if seconds else 0.0,
        "retries": retries,
    }


def parse_detail(header: str) -> dict[str, int]:
    """``X-Bench-Storage-Detail`` (``name=count,...``) as a dict."""
    out: dict[str, int] = {}
    for part in header.split(","):
        name, sep, value = part.partition("=")
        if sep and value.strip().isdigit():
            out[name.strip()] = int(value)
    return out


async def consume(base_url: str, tenant: str, key: str, *, limit: int, max_pages: int) -> dict[str, Any]:
    """Follow the feed from the start, one page at a time, until a page is empty (or ``max_pages``)."""
    import aiohttp

    url = f"{base_url}/api/v1/tenants/{tenant}/events"
    pages: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    after: str | None = None
    finished = False
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=60)
    started = time.perf_counter()
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"Authorization": f"Bearer {key}"}
    ) as session:
        for _ in range(max_pages):
            params = {"limit": str(limit)} | ({"after": after} if after else {})
            t0 = time.perf_counter()
            async with session.get(url, params=params) as response:
                body = await response.read()
                status = response.status
                detail = parse_detail(response.headers.get("X-Bench-Storage-Detail", ""))
            latency = time.perf_counter() - t0
            if status != 200:
                errors.append({"page": len(pages), "status": status, "body": body[:500].decode(errors="replace")})
                break
            page = json.loads(body)
            data = page["data"]
            pages.append({"seconds": latency, "events": len(data), "bytes": len(body), "storage": detail})
            if not data:
                finished = True
                break
            events += data
            after = page["next"]
    return {
        "seconds": time.perf_counter() - started,
        "pages": pages,
        "events": events,
        "errors": errors,
        "finished": finished,
    }


def verify(backlog: Backlog, events: Sequence[dict[str, Any]], tenant: str) -> dict[str, Any]:
    """Every seeded event exactly once, in feed order, as it was seeded."""
    ids = [e.get("id") for e in events]
    seen: dict[Any, int] = {}
    for event_id in ids:
        seen[event_id] = seen.get(event_id, 0) + 1
    duplicates = sum(n - 1 for n in seen.values())
    missing = sum(1 for event_id in backlog.order if event_id not in seen)
    unexpected = sum(1 for event_id in seen if event_id not in backlog.expected)
    first_mismatch = next((i for i, (a, b) in enumerate(zip(ids, backlog.order, strict=False)) if a != b), None)
    in_order = ids == backlog.order
    mismatches = 0
    for event in events:
        want = backlog.expected.get(event.get("id"))
        if want is None:
            continue
        got = (event.get("type"), event.get("time"), event.get("tenant"))
        sample = backlog.samples.get(event["id"], event)
        mismatches += got != (*want, tenant) or event != sample
    return {
        "ok": in_order and duplicates == 0 and missing == 0 and unexpected == 0 and mismatches == 0,
        "expected": len(backlog.order),
        "received": len(ids),
        "unique": len(seen),
        "duplicates": duplicates,
        "missing": missing,
        "unexpected": unexpected,
        "in_order": in_order,
        "first_out_of_order": first_mismatch,
        "content_mismatches": mismatches,
        "compared_whole": len(backlog.samples),
    }


def tenths(latencies: Sequence[float]) -> dict[str, float] | None:
    """Median latency (ms) of the first, middle and last tenth of the pages; None under 10 pages."""
    n = len(latencies)
    if n < 10:
        return None
    tenth = n // 10
    middle = (n - tenth) // 2
    parts = {
        "first": latencies[:tenth],
        "middle": latencies[middle : middle + tenth],
        "last": latencies[n - tenth :],
    }
    return {name: round(statistics.median(values) * 1000, 1) for name, values in parts.items()}


def _spread(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "max": 0, "mean": 0.0, "total": 0}
    return {
        "min": min(values),
        "max": max(values),
        "mean": round(sum(values) / len(values), 3),
        "total": sum(values),
    }


def summarize(consumed: dict[str, Any], limit: int) -> dict[str, Any]:
    """The consumer's figures: pages, time, events/s, page latency, storage calls per page."""
    pages = consumed["pages"]
    full = [p for p in pages if p["events"]]
    latencies = [p["seconds"] for p in full]
    ordered = sorted(latencies)
    events = sum(p["events"] for p in pages)
    seconds = consumed["seconds"]

    def per_page(name: str) -> list[int]:
        return [p["storage"].get(name, 0) for p in pages]

    short = sum(1 for p in full[:-1] if p["events"] < limit)
    storage = {
        name: _spread(per_page(name))
        for name in ("directory", "directory_queries", "directory_continuations", "tenants", "app_keys")
    }
    return {
        "limit": limit,
        "requests": len(pages),
        "pages_with_events": len(full),
        "finished_with_empty_page": consumed["finished"],
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1) if seconds else 0.0,
        "page_p50_ms": round(percentile(ordered, 50) * 1000, 1),
        "page_p99_ms": round(percentile(ordered, 99) * 1000, 1),
        "page_max_ms": round((ordered[-1] if ordered else 0) * 1000, 1),
        "page_kib_mean": round(sum(p["bytes"] for p in full) / len(full) / 1024, 1) if full else 0.0,
        "tenths_median_ms": tenths(latencies),
        "short_pages": short,
        "storage_per_page": storage,
        "storage_counted": all(p["storage"] for p in pages),
        "page_latencies_ms": [round(v * 1000, 1) for v in latencies],
        "errors": consumed["errors"],
    }


def targets(feed: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS/FAIL lines of the backlog run (see the module docstring)."""
    c = feed.get("consume")
    v = feed.get("verification")
    if not c or not v:
        return [check("feed backlog caught up", False, feed.get("error", "the run did not get that far"))]
    out = []
    s = c["storage_per_page"]
    one_query = c["storage_counted"] and all(
        s[k]["min"] == s[k]["max"] == 1 for k in ("directory", "directory_queries")
    )
    out.append(
        check(
            "1 storage query per page",
            one_query and c["requests"] > 0,
            f"directory requests per page {s['directory']['min']}-{s['directory']['max']} "
            f"(queries {s['directory_queries']['min']}-{s['directory_queries']['max']}, continuations "
            f"{s['directory_continuations']['total']}) over {c['requests']} pages; short pages {c['short_pages']}",
        )
    )
    out.append(
        check(
            "1 app-key read per page",
            c["storage_counted"] and s["app_keys"]["min"] == s["app_keys"]["max"] == 1,
            f"app-key reads per page {s['app_keys']['min']}-{s['app_keys']['max']}; tenants-table calls per page "
            f"{s['tenants']['min']}-{s['tenants']['max']} (the key, then the tenant's record)",
        )
    )
    out.append(
        check(
            "every event once, in order",
            v["ok"] and c["finished_with_empty_page"] and not c["errors"],
            f"{v['received']} received of {v['expected']}: {v['duplicates']} duplicates, {v['missing']} missing, "
            f"{v['unexpected']} unexpected, in order {v['in_order']}, {v['content_mismatches']} content mismatches; "
            f"{len(c['errors'])} failed pages",
        )
    )
    t = c["tenths_median_ms"]
    if t:
        worst = max(t["middle"], t["last"]) / t["first"] if t["first"] else None
        out.append(
            check(
                f"O(pages): page latency flat across the backlog (middle, last tenth <= {FLAT_RATIO}x first)",
                worst is not None and worst <= FLAT_RATIO,
                f"median page {t['first']} / {t['middle']} / {t['last']} ms (first / middle / last tenth), "
                f"ratio {round(worst, 2) if worst is not None else '?'}",
            )
        )
    else:
        out.append(check("O(pages): page latency flat across the backlog", None, "fewer than 10 pages"))
    return out


def format_report(feed: dict[str, Any]) -> str:
    """The text report of the run."""
    lines = [f"\nfeed backlog: {feed['backlog']} events of tenant {feed['tenant']}"]
    sd = feed.get("seed")
    if sd:
        lines.append(
            f"  seeding: {sd['events']} events in {sd['transactions']} transactions of {sd['rows_per_transaction']} "
            f"({sd['concurrency']} in flight) in {sd['seconds']} s = {sd['events_per_s']} events/s; retries {sd['retries']}"
        )
    c = feed.get("consume")
    if c:
        s = c["storage_per_page"]
        lines.append(
            f"  consuming: {c['events']} events in {c['pages_with_events']} pages of limit={c['limit']} "
            f"(+{c['requests'] - c['pages_with_events']} empty) in {c['seconds']} s = {c['events_per_s']} events/s; "
            f"page p50 {c['page_p50_ms']} ms, p99 {c['page_p99_ms']} ms, max {c['page_max_ms']} ms "
            f"({c['page_kib_mean']} KiB a page)"
        )
        t = c["tenths_median_ms"]
        if t:
            lines.append(
                f"  median page latency by position: first tenth {t['first']} ms, middle {t['middle']} ms, "
                f"last tenth {t['last']} ms"
            )
        lines.append(
            f"  storage per page: directory {s['directory']['mean']} (queries {s['directory_queries']['mean']}, "
            f"continuations {s['directory_continuations']['total']} in all), app-key reads {s['app_keys']['mean']}, "
            f"tenants table {s['tenants']['mean']}; short pages {c['short_pages']}"
        )
        cpu = c.get("cpu_seconds")
        if cpu:
            lines.append(f"  CPU seconds while consuming: {cpu}")
        for error in c["errors"][:3]:
            lines.append(f"  failed page: {error}")
    v = feed.get("verification")
    if v:
        lines.append(
            f"  read-back: {'OK' if v['ok'] else 'FAILED'}: {v['received']} received, {v['unique']} unique of "
            f"{v['expected']}; duplicates {v['duplicates']}, missing {v['missing']}, unexpected {v['unexpected']}, "
            f"in order {v['in_order']} (first out of order: {v['first_out_of_order']}), content mismatches "
            f"{v['content_mismatches']} ({v['compared_whole']} compared whole)"
        )
    if feed.get("error"):
        lines.append(f"  error: {feed['error']}")
    return "\n".join(lines)


async def run(service: Any, azurite: Any, args: Any) -> dict[str, Any]:
    """Seed ``args.feed_backlog`` events, create an application key, consume the feed, check."""
    from scim.admin.core import create_tenant
    from scim.settings import Settings
    from scim.store.app_keys_tables import TableAppKeyRegistry
    from scim.store.event_timing import wall_us

    from .processes import cpu_seconds

    count = args.feed_backlog
    feed: dict[str, Any] = {"tenant": TENANT, "backlog": count}
    settings = Settings.from_env(service.env(service.port))
    await create_tenant(settings, TENANT)
    backlog, specs = plan(TENANT, count, wall_us(), args.seed)
    print(
        f"feed backlog: seeding {count} events of {TENANT} into the directory table "
        f"({ROWS_PER_TRANSACTION} a transaction, {args.seed_concurrency} in flight) ...",
        flush=True,
    )
    feed["seed"] = await seed(
        azurite.connection_string, service.prefix, TENANT, specs, concurrency=args.seed_concurrency
    )
    del specs
    print(
        f"  seeded {count} events in {feed['seed']['seconds']} s ({feed['seed']['events_per_s']} events/s)", flush=True
    )

    registry = TableAppKeyRegistry.from_settings(settings)
    try:
        key = await registry.create("bench-feed-consumer")
    finally:
        await registry.close()
    # warm-up (not measured): the service's tables checked, its pools open
    await consume(service.base_url, TENANT, key, limit=1, max_pages=1)

    print(f"feed backlog: consuming {count} events over HTTP, limit={PAGE_LIMIT} ...", flush=True)
    cpu0 = {"service": cpu_seconds(service.pid), "azurite": cpu_seconds(azurite.pid or 0)}
    consumed = await consume(service.base_url, TENANT, key, limit=PAGE_LIMIT, max_pages=count // PAGE_LIMIT * 2 + 10)
    cpu1 = {"service": cpu_seconds(service.pid), "azurite": cpu_seconds(azurite.pid or 0)}
    feed["consume"] = summarize(consumed, PAGE_LIMIT)
    feed["consume"]["cpu_seconds"] = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0}
    feed["verification"] = verify(backlog, consumed["events"], TENANT)
    return feed
