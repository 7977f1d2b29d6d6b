"""``make bench BENCH_ARGS="--webhook-delivery N"``: SCIM writes to webhook deliveries, end to end.

The pure parts (matching events to writes, the summaries, the read-back, the targets) are checked
without storage; the real command runs once with a few writes (its own in-memory Azurite and
service, stopped by PID). No timing is asserted (the machine is shared): only the structure, the
counts and that every event arrived, verified.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import webhook_delivery as WD
from bench.__main__ import _probe_sizes, parse_args
from devtools.azurite import PROJECT_ROOT


def test_the_mode_is_off_by_default_and_skips_the_probe_when_on():
    args = parse_args([])
    assert (args.webhook_delivery, args.webhook_burst) == (0, 3000)
    args = parse_args(["--webhook-delivery", "200", "--webhook-burst", "500"])
    assert (args.webhook_delivery, args.webhook_burst) == (200, 500)
    assert _probe_sizes(args) == []
    with pytest.raises(SystemExit):
        parse_args(["--webhook-delivery", "-1"])
    with pytest.raises(SystemExit):
        parse_args(["--webhook-delivery", "10", "--feed-backlog", "10"])


def _arrival(at: float, kind: str, index: int, phase: str = "lat", webhook_id: str | None = None) -> WD.Arrival:
    return WD.Arrival(at, "/hook", webhook_id or f"evt_{kind}_{index}", kind, WD.user_name(phase, index))


def test_each_write_is_matched_to_its_events_first_arrival():
    writes = WD.Writes(started=10.0, ended=12.0)
    for i in range(4):
        writes.responded[("user.created", WD.user_name("lat", i))] = 10.0 + i * 0.5
    writes.responded[("user.updated", WD.user_name("lat", 0))] = 10.2
    arrivals = [
        _arrival(10.1, "user.created", 0),
        _arrival(10.9, "user.created", 0),  # a redelivery: the first arrival counts
        _arrival(10.3, "user.updated", 0),
        _arrival(10.7, "user.created", 1),
        _arrival(11.2, "user.created", 2),
        _arrival(11.0, "user.created", 9),  # no such write
    ]
    summary = WD.latency_summary(writes, arrivals)
    assert summary["events_matched"] == 4 and summary["events_missing"] == 1 and summary["writes"] == 5
    assert summary["min_ms"] == pytest.approx(100.0) and summary["max_ms"] == pytest.approx(200.0)
    assert summary["p50_ms"] == pytest.approx(100.0)
    assert summary["writes_per_s"] == 2.5


def test_throughput_is_events_between_the_first_and_the_last_and_the_drain_reports_its_pickup():
    writes = WD.Writes(started=0.0, ended=2.0)
    for i in range(11):
        writes.responded[("user.created", WD.user_name("burst", i))] = 0.1 * i
    arrivals = [_arrival(5.0 + 0.1 * i, "user.created", i, "burst") for i in range(11)]
    live = WD.throughput_summary(writes, arrivals)
    assert live["events_per_s"] == pytest.approx(10.0) and live["delivery_seconds"] == pytest.approx(1.0)
    assert live["last_event_after_last_write_s"] == pytest.approx(4.0)
    assert live["delay_p50_ms"] == pytest.approx(5000.0)
    assert sum(b[1] for b in live["timeline"]) == sum(b[2] for b in live["timeline"]) == 11
    drain = WD.throughput_summary(writes, arrivals, since=4.0)
    assert drain["first_event_after_enable_s"] == pytest.approx(1.0) and "delay_p50_ms" not in drain


def test_completeness_counts_missing_redelivered_and_refused():
    arrivals = [
        _arrival(1.0, "user.created", 0, webhook_id="a"),
        _arrival(1.1, "user.created", 0, webhook_id="a"),
        _arrival(1.2, "user.created", 1, webhook_id="b"),
    ]
    result = WD.completeness(["a", "b", "c"], arrivals)
    assert (result["ok"], result["missing"], result["duplicates"], result["unique"]) == (False, 1, 1, 2)
    assert WD.completeness(["a", "b"], arrivals)["ok"] is True
    assert WD.completeness(["a", "b"], arrivals, refused=1)["ok"] is False
    assert WD.completeness([], [])["ok"] is False  # nothing measured is not a pass


def _phase(**extra):
    base = {"writes": 10, "writes_failed": 0, "events_matched": 10, "events_missing": 0, "writes_per_s": 20.0}
    return {**base, **extra}


def test_targets_pass_and_fail_on_latency_throughput_and_completeness():
    complete = {
        "ok": True,
        "feed_events": 10,
        "received": 10,
        "unique": 10,
        "missing": 0,
        "duplicates": 0,
        "not_in_feed": 0,
        "refused": 0,
    }
    hooks = {
        "latency": _phase(p50_ms=4.0, p95_ms=9.0, p99_ms=12.0, max_ms=20.0),
        "latency_complete": complete,
        "burst": _phase(
            events_per_s=250.0,
            delay_p50_ms=20.0,
            delay_p99_ms=300.0,
            delivery_seconds=0.04,
            last_event_after_last_write_s=0.1,
        ),
        "burst_complete": complete,
        "drain": _phase(events_per_s=1500.0, delivery_seconds=0.01, first_event_after_enable_s=3.0),
        "drain_complete": complete,
    }
    verdicts = {t["target"].split(" (")[0]: t["ok"] for t in WD.targets(hooks)}
    assert verdicts == {
        "webhook latency p50 <= 1 s": True,
        "webhook latency p99 <= 5 s": True,
        "webhook latency p99 <= 5 s during a write burst": True,
        "webhook throughput to one endpoint >= 300 events/s": True,
        "every webhook event delivered, verified": True,
    }
    slow = {
        **hooks,
        "latency": _phase(p50_ms=1500.0, p99_ms=6000.0, max_ms=7000.0),
        "burst": _phase(events_per_s=250.0, delay_p50_ms=4000.0, delay_p99_ms=8000.0),
        "drain": _phase(events_per_s=200.0, events_missing=1),
    }
    verdicts = {t["target"].split(" (")[0]: t["ok"] for t in WD.targets(slow)}
    assert not any(verdicts.values()), verdicts
    assert WD.targets({"error": "boom"})[0]["ok"] is False
    text = WD.format_report({**hooks, "tenant": "t", "latency_rate": 20, "latency_clients": 4, "burst_clients": 16})
    assert "p50 4.0 ms" in text and "1500.0 events/s" in text and "3.0 s after enabling" in text
    assert "latency read-back: OK" in text


@pytest.mark.azurite(reason="python -m bench starts an Azurite of its own")
def test_a_few_writes_are_delivered_verified_and_reported(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--webhook-delivery", "6", "--webhook-burst", "40", "--out", str(out)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 2: the run itself failed
    results = json.loads(out.read_text())
    assert "error" not in results, results.get("error")
    assert "replay" not in results and "probe" not in results
    hooks = results["webhooks"]
    assert hooks["latency"]["writes"] == 6 and hooks["latency"]["events_matched"] == 6
    for phase in ("burst", "drain"):
        assert hooks[phase]["writes"] == 40 and hooks[phase]["events_matched"] == 40, hooks[phase]
        assert hooks[phase]["events_missing"] == 0 and hooks[phase]["writes_failed"] == 0
        assert {"events_per_s", "writes_per_s", "timeline"} <= set(hooks[phase])
    assert hooks["drain"]["delivered_while_disabled"] == 0
    for phase in ("latency", "burst", "drain"):
        complete = hooks[f"{phase}_complete"]
        assert complete["ok"] is True and complete["missing"] == 0 and complete["refused"] == 0, complete
    assert hooks["drain_complete"]["feed_events"] == 40
    targets = {t["target"].split(" (")[0]: t["ok"] for t in results["targets"]}
    assert targets["every webhook event delivered, verified"] is True
    assert "webhook latency p50 <= 1 s" in targets and "webhook throughput to one endpoint >= 300 events/s" in targets
    assert "[PASS] every webhook event delivered, verified" in proc.stdout
    assert "SCIM response -> event p50" in proc.stdout
