"""Good-event throughput under a flood of bad input: ``python -m benchmarks --only flood``.

Issue 5 asks that bad input be rejected into the dead-letter topic and the ``rejected``
table while "the worker keeps running and its throughput for good events holds". Measured
as two drains in the same run, each on a fresh authtrail stack, of the same backlog of
good events: once alone (``clean``), once with ``bad_per_good`` bad messages mixed in after
each good one (``flood``; the kinds are in :mod:`benchmarks.flood_loader`). For both:
good events stored per second (the slope between 10 % and 90 % of the good events, as in
every drain), CPU µs per *good* event of each process over that window, and the rejected
rows stored against those expected; then flood ÷ clean. A ratio of events/s near 1 and of
CPU per good event near 1 + bad_per_good * (cost of a bad message ÷ cost of a good one)
means the flood costs only its own processing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.config import FloodPlan
from benchmarks.markdown import number, table
from benchmarks.pipeline import _costs, _sample, _wait_complete, _window
from benchmarks.procs import start_python, stop_group, system_busy_seconds, tail
from benchmarks.stack import AUTHTRAIL, Stack, StackConfig

VARIANTS = ("clean", "flood")


def run(plan: FloodPlan, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Drain the clean and the flooded backlog, each on a fresh stack; compare them."""
    result: dict[str, Any] = {"plan": asdict(plan)}
    for variant in VARIANTS:
        config = StackConfig(
            AUTHTRAIL,
            plan.tenants,
            batch_interval_ms=plan.batch_interval_ms,
            sink_batch_ms=plan.sink_batch_ms,
            label=f"flood-{variant}",
        )
        bad_per_good = plan.bad_per_good if variant == "flood" else 0.0
        with Stack(config, work / config.name) as stack:
            result[variant] = drain(stack, plan, bad_per_good)
        rate = result[variant]["good_events_per_s"]
        say(f"  flood: {variant} drained {plan.good_events} good events at {number(rate)}/s")
    result["flood_vs_clean"] = ratios(result["clean"], result["flood"])
    return result


def _load(stack: Stack, plan: FloodPlan, bad_per_good: float) -> dict[str, Any]:
    out = stack.directory / "flood-loader.json"
    log = stack.logs / "flood-loader.log"
    arguments = ["-m", "benchmarks.flood_loader", "--bootstrap-servers",
                 stack.settings.bootstrap_servers or "", "--topic", stack.settings.events_topic,
                 "--tenants", str(plan.tenants), "--good", str(plan.good_events),
                 "--bad-per-good", str(bad_per_good), "--out", str(out)]  # fmt: skip
    loader = start_python(arguments, log)
    try:
        code = loader.wait(max(120.0, plan.good_events * (1 + bad_per_good) / 1000))
    except subprocess.TimeoutExpired:
        stop_group(loader, signal.SIGKILL)
        raise RuntimeError(f"flood loader did not finish:\n{tail(log)}") from None
    if code != 0:
        raise RuntimeError(f"flood loader exited with {code}:\n{tail(log)}")
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def drain(stack: Stack, plan: FloodPlan, bad_per_good: float) -> dict[str, Any]:
    """Produce the backlog, start the consumers, measure until every good event is stored
    and signed and every bad message is in ``rejected`` (or ``plan.timeout`` passes)."""
    producer = _load(stack, plan, bad_per_good)
    started = time.monotonic()
    baseline = {"t": 0.0, "stored": 0, "machine_busy": round(system_busy_seconds(), 3),
                "cpu": {"harness": round(time.process_time(), 3)}, "rss": {}}  # fmt: skip
    stack.start_consumers()
    samples: list[dict[str, Any]] = [baseline]
    complete = _wait_complete(stack, plan.good_events, started, plan.timeout, samples)
    expected = int(producer["expected_rejected"])
    deadline = time.monotonic() + 60
    while _rejected(stack) < expected and time.monotonic() < deadline:
        samples.append(_sample(stack, started))
        time.sleep(0.25)
    low, high, fallback = _window(samples, 0, plan.good_events)
    window = _costs(samples, low, high)
    window["lower_bound_from_tiny_run"] = fallback
    worker_log = stack.logs / "worker-0.log"
    return {
        "bad_per_good": bad_per_good,
        "complete": complete,
        "stored": samples[-1]["stored"],
        "rejected_stored": _rejected(stack),
        "rejected_expected": expected,
        "rejected_by_kind": _rejected_by_kind(stack),
        "good_events_per_s": window["events_per_s"],
        "window": window,
        "producer": producer,
        "worker_log_bytes": worker_log.stat().st_size if worker_log.exists() else None,
        "samples": samples,
    }


def _rejected(stack: Stack) -> int:
    assert stack.store is not None
    return int(stack.store.query_arrow("SELECT count() FROM rejected").column(0)[0].as_py())


def _rejected_by_kind(stack: Stack) -> dict[str, int]:
    assert stack.store is not None
    rows = stack.store.query_arrow(
        "SELECT error_kind AS kind, count() AS n FROM rejected GROUP BY kind ORDER BY kind"
    ).to_pylist()
    return {row["kind"]: int(row["n"]) for row in rows}


def _cpu(variant: dict[str, Any], role: str) -> float | None:
    value = variant["window"]["roles"].get(role, {}).get("cpu_us_per_event")
    return float(value) if value is not None else None


def ratios(clean: dict[str, Any], flood: dict[str, Any]) -> dict[str, float | None]:
    """flood ÷ clean for good events/s and for each process's CPU per good event."""

    def divide(top: float | None, bottom: float | None) -> float | None:
        return round(top / bottom, 3) if top is not None and bottom else None

    found = {"good_events_per_s": divide(flood["good_events_per_s"], clean["good_events_per_s"])}
    for role in ("worker", "broker", "store"):
        found[f"{role}_cpu_us_per_good_event"] = divide(_cpu(flood, role), _cpu(clean, role))
    return found


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The summary's section for a flood run (nothing when the section did not run)."""
    flood = results.get("flood")
    if not flood:
        return []
    plan = flood["plan"]
    rows = []
    for variant in VARIANTS:
        measured = flood[variant]
        stored = f"{measured['rejected_stored']:,} / {measured['rejected_expected']:,}"
        producer = measured["producer"]
        rows.append([variant, producer["good_acknowledged"], producer["bad_acknowledged"],
                     measured["good_events_per_s"], _cpu(measured, "worker"),
                     _cpu(measured, "broker"), _cpu(measured, "store"), stored])  # fmt: skip
    header = ["backlog", "good", "bad", "good events/s", "worker µs", "broker µs", "store µs",
              "rejected stored / expected"]  # fmt: skip
    ratio = flood["flood_vs_clean"]
    return [
        "## Good events under a bad-input flood",
        "",
        f"{plan['tenants']} tenants; the flood mixes {plan['bad_per_good']} bad messages in "
        "after each good event (random bytes, empty, unknown schema, truncated, Confluent "
        "framing; 8 % repeated event ids, 2 % oversized). CPU µs per *good* event:",
        "",
        *table(header, rows),
        f"Flood ÷ clean: good events/s x {number(ratio['good_events_per_s'], 2)}, worker CPU "
        f"per good event x {number(ratio['worker_cpu_us_per_good_event'], 2)}.",
        "",
    ]
