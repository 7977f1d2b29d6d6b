"""Summaries of a V8 CPU profile (``node --cpu-prof``), to see where Azurite spends its time.

A ``.cpuprofile`` is JSON: a call tree of ``nodes`` (each with a ``callFrame`` and its
``children``) and a list of ``samples`` (node ids) with ``timeDeltas`` (µs). The time of a
sample is charged to its node (*self*) and to every distinct function on its stack
(*inclusive*). The focus rows name the Azurite functions that tell its storage cost apart:
entity lookups by key (LokiJS ``Collection.findOne``), queries (``queryTableEntities``, a scan
of the table's collection) and batches.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

FOCUS = (
    ("entity lookups by key: LokiJS Collection.findOne", "Collection.findOne"),
    ("queries: LokiTableMetadataStore.queryTableEntities", "queryTableEntities"),
    (
        "point reads and upserts' existence checks: queryTableEntitiesWithPartitionAndRowKey",
        "queryTableEntitiesWithPartitionAndRowKey",
    ),
    ("inserts: insertTableEntity", "insertTableEntity"),
    ("upserts (merge): insertOrMergeTableEntity", "insertOrMergeTableEntity"),
    ("upserts (replace): insertOrUpdateTableEntity", "insertOrUpdateTableEntity"),
    ("merges: mergeTableEntity", "mergeTableEntity"),
    ("replaces: updateTableEntity", "updateTableEntity"),
    ("operations inside $batch requests: TableBatchOrchestrator.submitRequestsToHandlers", "submitRequestsToHandlers"),
    ("HTTP parsing (node:_http_*)", "parserOnIncoming"),
    ("garbage collector", "(garbage collector)"),
    ("idle", "(idle)"),
)


def _name(frame: dict[str, Any]) -> str:
    url = frame.get("url", "").rsplit("/", 1)[-1]
    function = frame.get("functionName") or "(anonymous)"
    return f"{function} {url}:{frame.get('lineNumber', -1) + 1}" if url else function


def analyze(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares (% of sampled time) of the busiest functions, and the focus rows."""
    profile = json.loads(Path(path).read_text())
    nodes = {node["id"]: node for node in profile["nodes"]}
    parent = {child: node["id"] for node in profile["nodes"] for child in node.get("children", ())}
    per_node: Counter[int] = Counter()
    for sample, delta in zip(profile["samples"], profile["timeDeltas"], strict=False):
        per_node[sample] += max(delta, 0)
    total = sum(per_node.values()) or 1
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for node_id, micros in per_node.items():
        self_time[_name(nodes[node_id]["callFrame"])] += micros
        seen: set[str] = set()
        current: int | None = node_id
        while current is not None:
            name = _name(nodes[current]["callFrame"])
            if name not in seen:
                inclusive[name] += micros
                seen.add(name)
            current = parent.get(current)

    def share(micros: int) -> float:
        return round(100 * micros / total, 1)

    focus = []
    for label, needle in FOCUS:
        micros = max((v for k, v in inclusive.items() if k.split(" ", 1)[0].endswith(needle) or k == needle), default=0)
        focus.append({"what": label, "percent": share(micros)})
    return {
        "file": str(path),
        "sampled_seconds": round(total / 1e6, 1),
        "focus": focus,
        "self": [{"function": k, "percent": share(v)} for k, v in self_time.most_common(top)],
        "inclusive": [{"function": k, "percent": share(v)} for k, v in inclusive.most_common(top)],
    }


def format_profile(summary: dict[str, Any]) -> str:
    lines = [f"Azurite CPU profile ({summary['sampled_seconds']} s sampled, {summary['file']})"]
    lines += [f"  {row['percent']:5.1f} %  {row['what']}" for row in summary["focus"]]
    lines.append("  busiest functions (self time):")
    lines += [f"    {row['percent']:5.1f} %  {row['function']}" for row in summary["self"][:10]]
    return "\n".join(lines)
