"""bench.node_profile: self and inclusive shares of a V8 ``.cpuprofile`` (how Azurite's bottleneck was found)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.node_profile import analyze, format_profile


def _frame(name: str, url: str = "", line: int = 0) -> dict:
    return {"functionName": name, "url": url, "lineNumber": line, "columnNumber": 0, "scriptId": "0"}


def _profile(tmp_path: Path) -> Path:
    """(root) -> handler -> Collection.findOne -> $eq, and (root) -> (idle); a recursive findOne counts once."""
    nodes = [
        {"id": 1, "callFrame": _frame("(root)"), "children": [2, 6]},
        {
            "id": 2,
            "callFrame": _frame("queryTableEntitiesWithPartitionAndRowKey", "file:///x/LokiTableMetadataStore.js", 330),
            "children": [3],
        },
        {"id": 3, "callFrame": _frame("Collection.findOne", "file:///x/lokijs.js", 7025), "children": [4, 5]},
        {"id": 4, "callFrame": _frame("$eq", "file:///x/lokijs.js", 464), "children": []},
        {"id": 5, "callFrame": _frame("Collection.findOne", "file:///x/lokijs.js", 7025), "children": []},
        {"id": 6, "callFrame": _frame("(idle)"), "children": []},
    ]
    # 6 ms in $eq, 2 ms in the nested findOne, 1 ms in the handler itself, 1 ms idle: 10 ms in all
    samples = [4] * 6 + [5, 5, 2, 6]
    path = tmp_path / "CPU.cpuprofile"
    path.write_text(
        json.dumps({"nodes": nodes, "startTime": 0, "endTime": 10_000, "samples": samples, "timeDeltas": [1000] * 10})
    )
    return path


def test_shares_are_self_and_inclusive_time_and_a_recursive_function_counts_once(tmp_path: Path):
    summary = analyze(_profile(tmp_path))
    assert summary["sampled_seconds"] == 0.0  # 10 ms
    self_time = {row["function"]: row["percent"] for row in summary["self"]}
    assert self_time["$eq lokijs.js:465"] == 60.0
    assert self_time["Collection.findOne lokijs.js:7026"] == 20.0
    assert self_time["(idle)"] == 10.0
    inclusive = {row["function"]: row["percent"] for row in summary["inclusive"]}
    assert inclusive["Collection.findOne lokijs.js:7026"] == 80.0  # not 100: the nested call is not counted twice
    assert inclusive["queryTableEntitiesWithPartitionAndRowKey LokiTableMetadataStore.js:331"] == 90.0
    assert inclusive["(root)"] == 100.0
    focus = {row["what"]: row["percent"] for row in summary["focus"]}
    assert focus["entity lookups by key: LokiJS Collection.findOne"] == 80.0
    assert focus["idle"] == 10.0
    assert focus["queries: LokiTableMetadataStore.queryTableEntities"] == 0.0  # a prefix of another name is no match
    assert "80.0 %  entity lookups by key" in format_profile(summary)
