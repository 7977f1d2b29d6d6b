"""Summaries of a ``py-spy record --format raw`` profile (collapsed stacks: ``f1;f2;f3 N``).

Samples are split between the event-loop (main) thread, which serves every request, and
other threads (the default thread pool, where aiohttp runs ``trust_env`` proxy lookups and
``.netrc`` reads for the storage client); idle pool threads are not counted.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_IDLE_FILES = ("threading.py", "concurrent/futures/thread.py", "queue.py")

CATEGORIES = (
    (
        "azure SDK (azure-core pipeline, azure-data-tables)",
        ("azure/core", "core/pipeline", "core/rest", "core/utils", "core/tracing", "azure/data/tables", "tables/"),
    ),
    ("aiohttp (server + storage client transport)", ("aiohttp/", "multidict", "yarl/")),
    ("email package (multipart batch bodies)", ("email/",)),
    ("scim2-models / pydantic", ("scim2_models", "pydantic", "lark")),
    ("json", ("json/",)),
    ("logging", ("logging/",)),
    ("asyncio event loop + sockets", ("asyncio/", "selectors.py")),
    ("thread pool hand-off", ("concurrent/futures", "threading.py")),
    ("azure.functions (HttpRequest/HttpResponse)", ("azure/functions",)),
    ("service code (scim/)", ("scim/",)),
    ("bench wrapper (bench/)", ("bench/",)),
)


FOCUS = (
    ("authentication: tenants.read_credentials (1 read per request)", "read_credentials"),
    ("  of which decoding the credentials: TenantCredentials.from_properties", "from_properties"),
    ("authentication (before issue 13): tenants.token_hash", "token_hash"),
    ("provisioning log: LogWriter._flush (a tenant's entries of 0.25 s per write)", "LogWriter._flush"),
    ("entity-group transactions: TableStore._submit", "TableStore._submit"),
    ("  of which building the $batch body (transactions.encode_batch)", "encode_batch"),
    ("  of which parsing the $batch response (transactions.parse_batch_response)", "parse_batch_response"),
    ("point reads: TableStore._read", "TableStore._read"),
    ("range queries: TableStore._range", "TableStore._range"),
    ("aiohttp trust_env proxy lookup hand-off (get_env_proxy_for_url)", "ThreadPoolExecutor.submit"),
    ("SCIM filter parsing: parse_filter", "parse_filter"),
    ("PATCH application: apply_patch", "apply_patch"),
    ("rendering resources: render", "render"),
    ("response JSON: http_adapter._to_http", "_to_http"),
    ("request body JSON: parse_json", "parse_json"),
    ("logging", "Logger._log"),
)


def _frame(text: str) -> tuple[str, str]:
    m = _FRAME.match(text.strip())
    if not m:
        return text.strip(), ""
    return m["func"], m["file"]


def category(file: str) -> str:
    for name, needles in CATEGORIES:
        if any(n in file for n in needles):
            return name
    return "other (stdlib, C)"


def analyze(path: Path, top: int = 20) -> dict[str, Any]:
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    focus: Counter[str] = Counter()
    main = other = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        is_main = any("bench/server.py" in file for _, file in frames[:4])
        if not is_main:
            work = [(f, p) for f, p in frames if not any(p.endswith(i) or i in p for i in _IDLE_FILES)]
            if not work:
                idle += count
                continue
            other += count
            threads[f"{work[0][0]} ({work[0][1]})"] += count
            continue
        main += count
        func, file = frames[-1]
        self_counts[f"{func} ({file})"] += count
        categories[category(file)] += count
        funcs = [f for f, _ in frames]
        for label, needle in FOCUS:
            if any(f == needle or f.endswith("." + needle) or (needle in f and "." in needle) for f in funcs):
                focus[label] += count
        seen: set[str] = set()
        for func, file in frames:
            key = f"{func} ({file})"
            if key not in seen:
                seen.add(key)
                incl_counts[key] += count

    def pct(items: list[tuple[str, int]], total: int) -> list[dict[str, Any]]:
        return [{"frame": k, "samples": v, "percent": round(100 * v / total, 1) if total else 0.0} for k, v in items]

    inclusive = [(k, v) for k, v in incl_counts.most_common() if v < 0.9 * main][:top]
    return {
        "main_thread_samples": main,
        "other_thread_samples": other,
        "idle_pool_samples": idle,
        "categories_self": pct(categories.most_common(), main),
        "self_top": pct(self_counts.most_common(top), main),
        "focus": pct([(label, focus[label]) for label, _ in FOCUS], main),
        "inclusive_top": pct(inclusive, main),
        "other_threads_top": pct(threads.most_common(8), main),
    }


def format_profile(summary: dict[str, Any]) -> str:
    lines = [
        f"py-spy at 100 Hz: event-loop thread {summary['main_thread_samples']} active samples; "
        f"other threads {summary['other_thread_samples']} busy samples (percentages below are of the event-loop thread's)"
    ]
    for title, key in (
        ("self time by package (leaf frame), event-loop thread", "categories_self"),
        ("where the event-loop thread's time goes (inclusive)", "focus"),
        ("top inclusive frames, event-loop thread", "inclusive_top"),
        ("top self frames, event-loop thread", "self_top"),
        ("other threads (busy), by entry frame", "other_threads_top"),
    ):
        lines.append(f"  {title}:")
        lines += [f"    {row['percent']:5.1f}%  {row['frame']}" for row in summary[key]]
    return "\n".join(lines)
