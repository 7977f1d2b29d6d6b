"""``make bench BENCH_ARGS="--feed-backlog N"``: a consumer catches up a backlog of events through the feed.

The pure parts (the seeded stamps, the expected order, the storage counter's finer kinds, the
targets) are checked without storage; the real command runs once with a small backlog (its own
in-memory Azurite and service, stopped by PID). No timing is asserted (the machine is shared):
only the counts and verdicts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from bench import feed_backlog as FB
from bench.__main__ import _probe_sizes, parse_args
from bench.server import APP_KEY_PARTITION, _details
from devtools.azurite import PROJECT_ROOT
from scim.store import keys
from scim.store.app_keys_tables import APP_KEY_PARTITION as STORE_APP_KEY_PARTITION
from scim.store.event_timing import EVENTS_SETTLE_SECONDS

NOW = 1_800_000_000_000_000  # microseconds since the epoch
DAY = 86_400 * 1_000_000


def test_the_mode_is_off_by_default_and_skips_the_probe_when_on():
    assert parse_args([]).feed_backlog == 0
    args = parse_args(["--feed-backlog", "5000"])
    assert args.feed_backlog == 5000
    assert _probe_sizes(args) == []
    assert _probe_sizes(parse_args(["--feed-backlog", "5000", "--probe-sizes", "100"])) == [100]


def test_seeded_stamps_are_settled_within_retention_and_in_order():
    stamps = FB.backlog_stamps(100_000, NOW)
    assert stamps == sorted(stamps)
    assert max(stamps) < NOW - EVENTS_SETTLE_SECONDS * 1_000_000  # served at once
    assert min(stamps) > NOW - DAY  # far within 30 days of retention
    assert stamps[10] == stamps[9] and stamps[11] > stamps[10]  # every 10th shares a stamp


def test_the_expected_order_is_the_feed_order_of_the_rows():
    backlog, specs = FB.plan("bench-feed", 250, NOW, seed=7)
    assert len(backlog.order) == len(set(backlog.order)) == 250
    rows = sorted(keys.event_key(stamp, event_id) for _i, event_id, stamp in specs)
    assert [row.rsplit("|", 1)[1] for row in rows] == backlog.order
    # equal stamps are ordered by the event id, not by the order they were made in
    earlier, later = specs[9][1], specs[10][1]  # one stamp
    assert (backlog.order.index(earlier) < backlog.order.index(later)) == (earlier < later)
    assert len(backlog.samples) == 3  # every 100th is compared whole
    event = backlog.samples[specs[100][1]]
    assert event["tenant"] == "bench-feed" and event["id"].startswith("evt_") and len(event["id"]) == 36
    assert (event["type"], event["time"]) == backlog.expected[event["id"]]


def test_verify_counts_duplicates_missing_and_order():
    backlog, _specs = FB.plan("t", 30, NOW, seed=1)
    events = [
        {"id": i, "type": backlog.expected[i][0], "time": backlog.expected[i][1], "tenant": "t"} for i in backlog.order
    ]
    for event in events:
        if event["id"] in backlog.samples:
            event.update(backlog.samples[event["id"]])
    assert FB.verify(backlog, events, "t")["ok"] is True
    swapped = [events[1], events[0], *events[2:]]
    result = FB.verify(backlog, swapped, "t")
    assert result["ok"] is False and result["in_order"] is False and result["first_out_of_order"] == 0
    result = FB.verify(backlog, [*events[:-1], events[3]], "t")
    assert (result["duplicates"], result["missing"], result["ok"]) == (1, 1, False)


def _request(method: str, url: str) -> SimpleNamespace:
    return SimpleNamespace(http_request=SimpleNamespace(method=method, url=url))


def test_the_counter_tells_queries_continuations_and_app_key_reads_apart():
    assert APP_KEY_PARTITION == STORE_APP_KEY_PARTITION
    base = "http://127.0.0.1:10002/devstoreaccount1/"
    query = _request("GET", base + "benchdirectory()?$filter=PartitionKey%20eq%20%27t%27&$top=1000")
    assert _details(query, "directory") == ["directory_queries"]
    more = _request("GET", base + "benchdirectory()?$top=1000&NextPartitionKey=1!8!dA--&NextRowKey=1!8!ZQ--")
    assert _details(more, "directory") == ["directory_queries", "directory_continuations"]
    point = _request("GET", base + "benchdirectory(PartitionKey='t',RowKey='u%7Cx')")
    assert _details(point, "directory") == []
    key = _request("GET", base + "benchtenants(PartitionKey=%27appkey%27,RowKey=%27h%7Cabc%27)")
    assert _details(key, "tenants") == ["app_keys"]
    tenant = _request("GET", base + "benchtenants(PartitionKey='tenant',RowKey='t')")
    assert _details(tenant, "tenants") == []
    assert FB.parse_detail("app_keys=1,directory=1,directory_queries=1,tenants=2") == {
        "app_keys": 1,
        "directory": 1,
        "directory_queries": 1,
        "tenants": 2,
    }


def _consumed(pages: int, per_page: dict[str, int], latency: float = 0.05) -> dict:
    full = [{"seconds": latency, "events": 1000, "bytes": 500_000, "storage": per_page} for _ in range(pages)]
    empty = {"seconds": latency, "events": 0, "bytes": 40, "storage": per_page}
    return {"seconds": 1.0, "pages": [*full, empty], "events": [], "errors": [], "finished": True}


def test_targets_pass_with_one_query_and_one_key_read_a_page_and_fail_otherwise():
    ok = {"directory": 1, "directory_queries": 1, "tenants": 2, "app_keys": 1}
    verification = {
        "ok": True,
        "received": 20_000,
        "expected": 20_000,
        "duplicates": 0,
        "missing": 0,
        "unexpected": 0,
        "in_order": True,
        "content_mismatches": 0,
    }
    feed = {"consume": FB.summarize(_consumed(20, ok), 1000), "verification": verification}
    verdicts = {t["target"].split(" (")[0]: t["ok"] for t in FB.targets(feed)}
    assert verdicts == {
        "1 storage query per page": True,
        "1 app-key read per page": True,
        "every event once, in order": True,
        "O(pages): page latency flat across the backlog": True,
    }
    two = {**ok, "directory": 2, "directory_queries": 2, "directory_continuations": 1}
    feed = {"consume": FB.summarize(_consumed(20, two), 1000), "verification": {**verification, "ok": False}}
    verdicts = {t["target"].split(" (")[0]: t["ok"] for t in FB.targets(feed)}
    assert verdicts["1 storage query per page"] is False
    assert verdicts["every event once, in order"] is False
    assert FB.targets({"backlog": 5, "error": "boom"})[0]["ok"] is False


def test_tenths_are_the_medians_of_the_first_middle_and_last_tenth():
    assert FB.tenths([0.01] * 9) is None
    latencies = [0.010] * 10 + [0.020] * 80 + [0.030] * 10
    assert FB.tenths(latencies) == {"first": 10.0, "middle": 20.0, "last": 30.0}


@pytest.mark.azurite(reason="python -m bench starts an Azurite of its own")
def test_a_small_backlog_is_caught_up_once_in_order_with_one_query_a_page(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--feed-backlog", "2500", "--out", str(out)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 2: the run itself failed
    results = json.loads(out.read_text())
    assert "error" not in results, results.get("error")
    assert "replay" not in results and "probe" not in results
    feed = results["feed"]
    assert feed["seed"]["events"] == 2500 and feed["seed"]["transactions"] == 25
    consume = feed["consume"]
    assert (consume["pages_with_events"], consume["requests"], consume["events"]) == (3, 4, 2500)
    storage = consume["storage_per_page"]
    assert storage["directory_queries"]["min"] == storage["directory_queries"]["max"] == 1
    assert storage["app_keys"]["min"] == storage["app_keys"]["max"] == 1
    assert feed["verification"]["ok"] is True, feed["verification"]
    targets = {t["target"]: t["ok"] for t in results["targets"]}
    assert targets["1 storage query per page"] is True
    assert targets["1 app-key read per page"] is True
    assert targets["every event once, in order"] is True
    assert "[PASS] every event once, in order" in proc.stdout
