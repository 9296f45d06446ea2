"""The benchmark harness still works: ``python -m benchmarks --smoke`` writes its results.

Asserts only that the files exist and are well-formed, never anything about speed: the
smoke configuration is too small for its numbers to mean anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import RESULTS_FILE, SUMMARY_FILE
from tests.integration.broker_fixtures import REPOSITORY_ROOT

pytestmark = pytest.mark.integration


def test_smoke_run_writes_well_formed_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=240,  # ~85 s on a loaded 2-core machine; the flood section takes ~30 s of it
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads((out / RESULTS_FILE).read_text())
    assert results["errors"] == []
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["date"]
    assert machine["versions"]["python"]
    assert results["parameters"]["name"] == "smoke"
    assert {"sha256", "avro", "clickhouse_insert", "kafka"} <= set(results["limits"])
    assert {"signatures", "batch_sizes", "integrity_core"} <= set(results["costs"])
    memory = results["costs"]["worker_memory"]  # one minute of event time: one sample
    assert len(memory["rss_mb_by_minute"]) == 1 and memory["rss_mb_by_minute"][0] > 0
    assert memory["decisions_read_back"] == memory["decisions"]
    assert set(results["stacks"]) == {"authtrail-3t-1w", "plain-3t"}
    for name, stack in results["stacks"].items():
        drain = stack["drain"]
        assert drain["complete"], name
        assert drain["stored"] == drain["events"], name
        assert drain["sustained_events_per_s"] > 0, name
    authtrail, plain = results["stacks"]["authtrail-3t-1w"], results["stacks"]["plain-3t"]
    live_phases = [authtrail["soak"], *plain["live"]]
    assert len(plain["live"]) == 2  # at its own rate and at authtrail's
    for phase in live_phases:
        assert phase["complete"] and phase["latency_ms"]["events"] == phase["sent"]
    soak = authtrail["soak"]
    assert soak["signed_latency_ms"]["p99"] > 0
    assert soak["sequenced_latency_ms"]["events"] == soak["sent"]
    assert soak["rss_trend"]["worker"]["points"] > 0
    restart = authtrail["restart"]  # every partition recovered, from what the soak left
    assert sorted(p["partition"] for p in restart["partitions"]) == [0, 1, 2, 3]
    assert restart["records"] > 0 and restart["restart_seconds"] >= restart["recovery_seconds"]
    flood = results["flood"]
    for variant in ("clean", "flood"):
        drained = flood[variant]
        assert drained["complete"] and drained["good_events_per_s"] > 0, variant
        assert drained["rejected_stored"] == drained["rejected_expected"], variant
        (sent_live,) = drained["live"]  # the smoke plan has one load
        assert sent_live["complete"] and sent_live["good_events_per_s"] > 0, variant
        assert sent_live["latency_ms"]["events"] == sent_live["producer"]["good_acknowledged"]
        assert sent_live["rejected_stored"] == sent_live["rejected_expected"], variant
    assert flood["clean"]["rejected_expected"] == 0 < flood["flood"]["rejected_expected"]
    assert flood["clean"]["live"][0]["rejected_expected"] == 0
    assert flood["flood"]["live"][0]["rejected_expected"] > 0
    assert flood["flood_vs_clean"]["good_events_per_s"] > 0
    (verified,) = results["verify"]
    assert verified["verify"]["exit_code"] == 0 and verified["rows_per_s"] > 0
    # The wall beside the ratio: ClickHouse read every row's columns, and reading plus
    # hashing leaves hashing a share of the CPU below 1.
    assert verified["read_floor"]["rows"] == verified["rows"]
    assert verified["read_floor"]["cpu_seconds"] > 0 and 0 < verified["vs_limit"]["ceiling"] < 1
    (proved,) = results["proofs"]  # every bundle it timed verified, or it would have failed
    assert proved["rows"] == 3_000 and proved["command"]["exit_code"] == 0
    assert proved["tiles_ms"] > 0 and proved["leaves_ms"] > 0
    assert proved["tiles_dir_ms"] > 0 and proved["command_tiles_dir"]["exit_code"] == 0
    walls = ("tiles_checked_cpu_ms", "select_1_ms", "select_1_unguarded_ms", "row_unguarded_ms")
    assert all(proved[wall] > 0 for wall in walls)  # what any proof pays, same run
    assert {"targets", "throughput", "latency", "memory"} <= set(results["derived"])

    summary = (out / SUMMARY_FILE).read_text()
    for heading in (
        "## Targets",
        "## End-to-end throughput",
        "## Event-to-queryable latency",
        "## Good events under a bad-input flood",
        "## Restart under load",
        "## authtrail verify",
        "## authtrail prove: one event",
        "## Physical limits",
    ):
        assert heading in summary
    pngs = sorted(path.name for path in out.glob("*.png"))
    if pngs:  # matplotlib is optional; when present, every plot is drawn
        assert pngs == [
            "cost_vs_log_size.png",
            "latency_distribution.png",
            "rss_over_time.png",
            "throughput_over_time.png",
        ]
    else:
        assert "matplotlib is not installed" in summary
