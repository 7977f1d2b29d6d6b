"""HTTP client of the bench: one aiohttp session, per-operation latency, status and storage records."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import aiohttp
from yarl import URL

SCIM_JSON = "application/scim+json; charset=utf-8"
MAX_EXAMPLES = 5


@dataclass
class OpStats:
    """Everything recorded for one operation label."""

    phase: str
    latencies: list[float] = field(default_factory=list)  # seconds
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # status (or "wrong result") -> count
    storage_directory: int = 0
    storage_tenants: int = 0
    storage_samples: int = 0


@dataclass
class Recorder:
    ops: dict[str, OpStats] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    phase: str = ""
    phases: dict[str, dict[str, float]] = field(default_factory=dict)

    def op(self, label: str) -> OpStats:
        stats = self.ops.get(label)
        if stats is None:
            stats = self.ops[label] = OpStats(self.phase)
        return stats

    def error(self, label: str, kind: str, example: dict[str, Any]) -> None:
        self.op(label).errors[kind] += 1
        if len(self.examples) < 40 and sum(1 for e in self.examples if e["op"] == label) < MAX_EXAMPLES:
            self.examples.append({"op": label, "error": kind, **example})

    @property
    def total_requests(self) -> int:
        return sum(len(s.latencies) for s in self.ops.values())

    @property
    def total_errors(self) -> int:
        return sum(sum(s.errors.values()) for s in self.ops.values())


def filter_query(expression: str, **extra: str) -> str:
    """Form-encoded, as Entra sends it: ``filter=userName+eq+%22bob%40contoso.com%22``."""
    parts = [f"filter={quote_plus(expression)}"] + [f"{k}={quote_plus(v)}" for k, v in extra.items()]
    return "&".join(parts)


def eq(attribute: str, value: str) -> str:
    return f'{attribute} eq "{value}"'


class Client:
    """Requests to one SCIM base (a Tenant URL), recorded per operation label."""

    def __init__(
        self, base_url: str, token: str, recorder: Recorder, concurrency: int, *, timeout: float = 60.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.recorder = recorder
        self.concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def __aenter__(self) -> Client:
        connector = aiohttp.TCPConnector(limit=max(self.concurrency, 1) + 2, ttl_dns_cache=None)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        label: str,
        method: str,
        path: str,
        *,
        query: str | None = None,
        body: Any = None,
        expect: Iterable[int] = (200,),
        record: bool = True,
    ) -> tuple[int, Any]:
        """Send one request; an unexpected status is recorded as an error (with an example)."""
        assert self._session is not None
        url = URL(self.base_url + path + (f"?{query}" if query else ""), encoded=True)
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = SCIM_JSON
        started = time.perf_counter()
        try:
            async with self._session.request(method, url, data=data, headers=headers) as response:
                raw = await response.read()
                status = response.status
                storage = response.headers.get("X-Bench-Storage")
        except (TimeoutError, aiohttp.ClientError) as exc:
            elapsed = time.perf_counter() - started
            if record:
                stats = self.recorder.op(label)
                stats.latencies.append(elapsed)
                stats.statuses[0] += 1
                self.recorder.error(
                    label, type(exc).__name__, {"request": f"{method} {path}", "response": str(exc)[:300]}
                )
            return 0, None
        elapsed = time.perf_counter() - started
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw[:500].decode(errors="replace")
        if record:
            stats = self.recorder.op(label)
            stats.latencies.append(elapsed)
            stats.statuses[status] += 1
            if storage:
                directory, _, tenants = storage.partition(",")
                stats.storage_directory += int(directory)
                stats.storage_tenants += int(tenants or 0)
                stats.storage_samples += 1
            if status not in tuple(expect):
                self.recorder.error(
                    label,
                    str(status),
                    {
                        "request": f"{method} {path}" + (f"?{query}" if query else ""),
                        "request_body": _short(body),
                        "status": status,
                        "response": _short(parsed),
                    },
                )
        return status, parsed

    def wrong(self, label: str, what: str, example: dict[str, Any]) -> None:
        """A 2xx answer whose content is wrong (a lookup that found the wrong user, ...)."""
        self.recorder.error(label, "wrong result", {"detail": what, **example})


def _short(value: Any, limit: int = 600) -> Any:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


async def run_pool(tasks: Iterable[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    """Run task factories with at most ``concurrency`` in flight, in order (each task is one
    Entra 'object': its requests are sequential, as Entra's are)."""
    iterator = iter(tasks)
    lock = asyncio.Lock()

    async def worker() -> None:
        while True:
            async with lock:
                task = next(iterator, None)
            if task is None:
                return
            await task()

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def summarize(recorder: Recorder) -> list[dict[str, Any]]:
    """One row per operation: count, errors by status, p50/p95/p99/max (ms), storage round trips."""
    rows = []
    for label, stats in recorder.ops.items():
        values = sorted(stats.latencies)
        row: dict[str, Any] = {
            "phase": stats.phase,
            "op": label,
            "count": len(values),
            "errors": dict(stats.errors),
            "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
            "p50_ms": round(percentile(values, 50) * 1000, 2),
            "p95_ms": round(percentile(values, 95) * 1000, 2),
            "p99_ms": round(percentile(values, 99) * 1000, 2),
            "max_ms": round((values[-1] if values else 0) * 1000, 2),
            "mean_ms": round(sum(values) / len(values) * 1000, 2) if values else 0.0,
        }
        if stats.storage_samples:
            row["storage_directory"] = round(stats.storage_directory / stats.storage_samples, 2)
            row["storage_auth"] = round(stats.storage_tenants / stats.storage_samples, 2)
        rows.append(row)
    return rows


def by_phase(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["phase"]].append(row)
    return grouped
