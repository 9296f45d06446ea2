"""Write a run's results: ``results.json`` (everything) and ``summary.md`` (the tables).

The summary is what docs/PERFORMANCE.md quotes; it names the machine, the versions, the
date and the parameters, and shows where each target stands and which component is the
wall when one is missed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import analysis, flood, markdown, store_path

RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.md"


def summary_markdown(results: dict[str, Any]) -> str:
    """The Markdown summary of one run."""
    derived = analysis.derive(results)
    lines = [f"# authtrail benchmarks ({results['parameters']['name']})", ""]
    if results["parameters"]["name"] == "smoke":
        lines += [
            "*Smoke run: tiny sizes that only keep the harness working; its numbers "
            "are not measurements.*",
            "",
        ]
    lines += markdown.machine(results) + markdown.interference(results)
    lines += ["## Targets (2-core machine)", ""]
    lines += markdown.table(
        ["what", "target", "measured", "met", "wall / note"],
        [[t["what"], t["target"], t["measured"], t["met"], t["note"]] for t in derived["targets"]],
    )
    lines += ["## End-to-end throughput (drain of a backlog; authtrail ÷ plain)", ""]
    lines += markdown.table(
        ["tenants", "authtrail events/s", "whole drain", "plain events/s", "ratio"],
        [
            [
                r["tenants"],
                r["authtrail_events_per_s"],
                r["authtrail_whole_drain_events_per_s"],
                r["plain_events_per_s"],
                r["ratio"],
            ]
            for r in derived["throughput"]
        ],
    )
    lines += [
        "*authtrail events/s*: from 10 % to 90 % of the backlog stored; *whole drain*: from "
        "just before the first row was stored to the first sample with every row.",
        "",
    ]
    lines += [
        "CPU per event by process during the drain window:",
        "",
        *markdown.components(results),
    ]
    lines += ["## Event-to-queryable latency (ms)", ""]
    lines += markdown.columns_table(derived["latency"], markdown.LATENCY_COLUMNS)
    lines += [
        "*sequenced*: until the worker published the chained record (its Kafka timestamp); "
        "*queryable*: until the row was stored (`stored_at`); *signed*: until the "
        "checkpoint covering the event was stored. *settled after*: each phase starts once "
        "the stack is quiet (under 0.3 cores for a second: the previous phase's snapshots "
        "and decisions done), waited for this long.",
        "",
    ]
    if derived["latency_ratio"]:
        lines += markdown.table(
            ["tenants", "same offered/s", "p50 authtrail ÷ plain", "p99 ÷"],
            [
                [r["tenants"], r["offered_events_per_s"], r["p50_ratio"], r["p99_ratio"]]
                for r in derived["latency_ratio"]
            ],
        )
    lines += ["## Memory (peak RSS, MB)", ""]
    roles = sorted({key for row in derived["memory"] for key in row if key.endswith("_mb")})
    lines += markdown.table(
        ["stack", "tenants", *roles],
        [[row["stack"], row["tenants"], *[row.get(r) for r in roles]] for row in derived["memory"]],
    )
    lines += markdown.state_memory(results)
    lines += markdown.worker_memory(results)
    lines += markdown.restarts(results)
    if derived["scaling"]:
        s = derived["scaling"]
        runs = ", ".join(
            f"{workers} worker(s) {markdown.number(rate)} events/s (x {s['speedup'][workers]})"
            for workers, rate in s["events_per_s"].items()
        )
        lines += ["## Scaling: worker processes", "", f"{s['tenants']} tenants: {runs}.", ""]
    lines += markdown.experiments(derived)
    lines += flood.summary_lines(results)
    lines += ["## authtrail verify", ""]
    lines += markdown.table(
        [
            "rows",
            "tenants",
            "checkpoints",
            "seconds",
            "CPU s",
            "rows/s",
            "SHA-256 limit rows/s",
            "x limit (wall)",
            "x limit (CPU)",
            "read floor CPU s",
            "ceiling: read + hash",
            "exit",
            "peak RSS MB",
            "other cores busy",
        ],
        [
            [
                v["rows"],
                v["tenants"],
                v["checkpoints"],
                v["verify"]["seconds"],
                v["verify"].get("cpu_seconds"),
                v["rows_per_s"],
                (v.get("sha256_limit") or {}).get("limit_rows_per_s"),
                (v.get("vs_limit") or {}).get("wall"),
                (v.get("vs_limit") or {}).get("cpu"),
                (v.get("read_floor") or {}).get("cpu_seconds"),
                (v.get("vs_limit") or {}).get("ceiling"),
                v["verify"]["exit_code"],
                v["verify"]["peak_rss_bytes"] / 2**20,
                v["verify"].get("other_cores_busy"),
            ]
            for v in results.get("verify", [])
        ],
    )
    lines += ["## authtrail prove: one event, one tenant (ms, median)", ""]
    lines += markdown.table(
        ["records", "prove, tiles", "prove, tiles + root check", "its CPU", "prove, from leaves",
         "ratio", "nodes, tiles", "nodes, from leaves", "ratio", "SELECT 1 (guarded)",
         "SELECT 1 (unguarded)", "event row (unguarded)", "command s", "tile build s",
         "prove, tiles directory (max)", "its CPU", "command --tiles s", "export s (CPU)",
         "again s (CPU)"],
        [
            [
                p["rows"], p["tiles_ms"], p["tiles_checked_ms"], p.get("tiles_checked_cpu_ms", "-"),
                p["leaves_ms"],
                p["leaves_over_tiles"], p["nodes_tiles_ms"], p["nodes_leaves_ms"],
                p["nodes_leaves_over_tiles"], p.get("select_1_ms", "-"),
                p.get("select_1_unguarded_ms", "-"), p.get("row_unguarded_ms", "-"),
                p["command"]["seconds"], p["tile_build_seconds"],
                f"{p.get('tiles_dir_ms', '-')} ({p.get('tiles_dir_max_ms', '-')})",
                p.get("tiles_dir_cpu_ms", "-"),
                p.get("command_tiles_dir", {}).get("seconds", "-"),
                f"{p.get('export_seconds', '-')} ({p.get('export_cpu_seconds', '-')})",
                f"{p.get('export_again_seconds', '-')} ({p.get('export_again_cpu_seconds', '-')})",
            ]
            for p in results.get("proofs", [])
        ],
    )  # fmt: skip
    if results.get("store_path"):
        lines += ["## Worker core and store path (benchmarks/store_path.py)", "",
                  store_path.markdown(results["store_path"]), ""]  # fmt: skip
    lines += ["## Producer SDK", "", *markdown.producer(results)]
    lines += ["## Physical limits of this machine", "", *markdown.limits(results)]
    lines += ["## Checkpoint and integrity-core costs", "", *markdown.costs(results)]
    profiles = markdown.profiles(results)
    if profiles:
        lines += ["## Profiles (py-spy, share of busy samples)", "", *profiles]
    if results.get("plots_note"):
        lines += [f"Plots: {results['plots_note']}", ""]
    if results.get("errors"):
        lines += ["## Errors", ""] + [f"- {e['section']}: {e['error']}" for e in results["errors"]]
    return "\n".join(lines).rstrip() + "\n"


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write results.json and summary.md into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results["derived"] = analysis.derive(results)
    json_path = out_dir / RESULTS_FILE
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    summary_path = out_dir / SUMMARY_FILE
    summary_path.write_text(summary_markdown(results))
    return [json_path, summary_path]
