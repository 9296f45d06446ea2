"""Good-event throughput under a flood of bad input: ``python -m benchmarks --only flood``.

Issue 5 asks that bad input be rejected into the dead-letter topic and the ``rejected``
table while "the worker keeps running and its throughput for good events holds". Two
questions, each measured with and without the flood, each variant on a fresh stack:

* **Capacity** (drain): the same backlog of good events drained alone (``clean``) and
  with ``bad_per_good`` bad messages mixed in after each good one (``flood``; the kinds
  are in :mod:`benchmarks.flood_loader`). Good events stored per second (the slope
  between 10 % and 90 % of them, as in every drain), CPU µs per *good* event of each
  process, rejected rows stored against those expected; then flood ÷ clean. At
  saturation every bad message takes the worker time a good one cannot have, so the
  ratio is 1 / (1 + bad_per_good x cost of a bad message ÷ cost of a good one): it says
  what a bad message costs, not whether anything stalls.
* **Held rate** (live): after the drain, on the same stack, good events are sent at
  each of ``live_shares`` of the clean drain's rate for ``live_seconds`` (the flood
  variant sends its bad messages alongside). Good events stored per second against those
  offered, and event-to-queryable latency: whether good traffic keeps flowing while a
  flood arrives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.config import FloodPlan
from benchmarks.markdown import number, table
from benchmarks.pipeline import (
    SAMPLE_SECONDS,
    _costs,
    _sample,
    _wait_complete,
    _window,
    latency,
    signed_latency,
)
from benchmarks.procs import json_result, start_python, system_busy_seconds
from benchmarks.stack import AUTHTRAIL, Stack, StackConfig

VARIANTS = ("clean", "flood")


def run(plan: FloodPlan, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Drain the clean and the flooded backlog, each on a fresh stack, then send live on
    each at the same good-event rates; compare them."""
    result: dict[str, Any] = {"plan": asdict(plan)}
    live_rates: list[float] = []
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
            if variant == "clean":
                live_rates = [
                    round(max(1.0, share * (rate or 0.0)), 1) for share in plan.live_shares
                ]
            result[variant]["live"] = []
            for index, live_rate in enumerate(live_rates):
                # Seeds 2, 3, ...: other events than the backlog's (seed 1) and each other's,
                # or their ids would repeat (dropped as duplicates or rejected as conflicts).
                phase = live(stack, plan, live_rate, bad_per_good, seed=2 + index)
                result[variant]["live"].append(phase)
                held = phase["good_events_per_s"]
                say(f"  flood: {variant} live at {number(live_rate)}/s kept {number(held)}/s")
    result["flood_vs_clean"] = ratios(result["clean"], result["flood"])
    return result


def _start_loader(stack: Stack, name: str, arguments: list[str]) -> tuple[Any, Path, Path]:
    """Start the flood loader with ``arguments``; (process, its JSON output, its log), for
    :func:`~benchmarks.procs.json_result`."""
    out, log = stack.directory / f"{name}.json", stack.logs / f"{name}.log"
    settings = stack.settings
    common = ["-m", "benchmarks.flood_loader", "--bootstrap-servers",
              settings.bootstrap_servers or "", "--topic", settings.events_topic,
              "--out", str(out)]  # fmt: skip
    return start_python(common + arguments, log), out, log


def _load(stack: Stack, plan: FloodPlan, bad_per_good: float) -> dict[str, Any]:
    arguments = ["--tenants", str(plan.tenants), "--good", str(plan.good_events),
                 "--bad-per-good", str(bad_per_good)]  # fmt: skip
    loader, out, log = _start_loader(stack, "flood-loader", arguments)
    timeout = max(120.0, plan.good_events * (1 + bad_per_good) / 1000)
    return json_result(loader, out, log, timeout, "flood loader")


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


def live(
    stack: Stack, plan: FloodPlan, rate: float, bad_per_good: float, seed: int
) -> dict[str, Any]:
    """Send good events at ``rate``/s (with ``bad_per_good`` bad messages after each) for
    ``plan.live_seconds`` to the running consumers; how many good events per second were
    stored, how late, and whether every bad message reached ``rejected``."""
    base, rejected_base = stack.stored(), _rejected(stack)
    started = time.monotonic()
    arguments = ["--tenants", str(plan.tenants), "--rate", str(rate),
                 "--seconds", str(plan.live_seconds), "--bad-per-good", str(bad_per_good),
                 "--seed", str(seed)]  # fmt: skip
    loader, out, log = _start_loader(stack, f"flood-live-loader-{rate:.0f}", arguments)
    stack.loader = loader  # its CPU is reported as the loader's, not as other processes'
    samples: list[dict[str, Any]] = []
    while loader.poll() is None:
        samples.append(_sample(stack, started))
        time.sleep(SAMPLE_SECONDS)
    producer = json_result(loader, out, log, 60.0, "flood loader")
    good = int(producer["good_acknowledged"])
    complete = _wait_complete(stack, base + good, started, plan.timeout, samples)
    # The rows stored meanwhile include the guard's decisions about earlier phases' events
    # (released as this phase moves event time on), so the count above can reach its
    # target with good events still on their way: wait for this phase's own rows too.
    since = int(producer["start_us"])
    deadline = time.monotonic() + plan.timeout
    while not (arrived := _stored_since(stack, since) >= good) and time.monotonic() < deadline:
        time.sleep(SAMPLE_SECONDS)
    complete = complete and arrived
    expected = int(producer["expected_rejected"])
    deadline = time.monotonic() + 60
    while _rejected(stack) - rejected_base < expected and time.monotonic() < deadline:
        time.sleep(SAMPLE_SECONDS)
    low, high, _ = _window(samples, base, good)
    window = _costs(samples, low, high)
    return {
        "offered_good_per_s": rate,
        "achieved_good_per_s": round(producer["achieved_rate"], 1),
        "good_events_per_s": window["events_per_s"],
        "complete": complete,
        "drain_seconds_after_send": round(samples[-1]["t"] - producer["seconds"], 2),
        "rejected_stored": _rejected(stack) - rejected_base,
        "rejected_expected": expected,
        "latency_ms": _without_percentiles(latency(stack, since)),
        "signed_latency_ms": _without_percentiles(signed_latency(stack, since)),
        "window": window,
        "producer": producer,
    }


def _without_percentiles(quantiles: dict[str, Any]) -> dict[str, Any]:
    """Latency quantiles without the full percentile list (kept short in the results)."""
    return {key: value for key, value in quantiles.items() if key != "percentiles"}


def _stored_since(stack: Stack, since_us: int) -> int:
    """Rows whose ``occurred_at`` is ``since_us`` or later (what the latency is read from)."""
    assert stack.store is not None
    sql = (f"SELECT count() FROM {stack.table} "
           "WHERE occurred_at >= fromUnixTimestamp64Micro({since:Int64}, 'UTC')")  # fmt: skip
    return int(stack.store.query_arrow(sql, {"since": since_us}).column(0)[0].as_py())


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
    for index, (clean_live, flood_live) in enumerate(
        zip(clean["live"], flood["live"], strict=True)
    ):
        found[f"live_{index}_good_events_per_s"] = divide(
            flood_live["good_events_per_s"], clean_live["good_events_per_s"]
        )
        for level in ("p50", "p99"):
            found[f"live_{index}_latency_{level}"] = divide(
                flood_live["latency_ms"].get(level), clean_live["latency_ms"].get(level)
            )
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
        *_live_lines(flood),
    ]


def _live_lines(flood: dict[str, Any]) -> list[str]:
    """The live phases: good events offered at fixed rates, with and without the flood."""
    rows = []
    for index, share in enumerate(flood["plan"]["live_shares"]):
        for variant in VARIANTS:
            phase = flood[variant]["live"][index]
            roles = phase["window"]["roles"]
            rows.append([f"{number(share * 100)} %", variant, phase["offered_good_per_s"],
                         phase["good_events_per_s"], phase["rejected_stored"],
                         phase["latency_ms"].get("p50"), phase["latency_ms"].get("p99"),
                         roles.get("worker", {}).get("cores_used"),
                         phase["window"].get("other_processes_cores_used"),
                         phase["drain_seconds_after_send"]])  # fmt: skip
    header = ["load", "live", "good offered/s", "good stored/s", "rejected stored", "p50 ms",
              "p99 ms", "worker cores", "others' cores", "s to store all after send"]  # fmt: skip
    ratio = flood["flood_vs_clean"]
    held = ", ".join(
        f"{number(share * 100)} %: x {number(ratio.get(f'live_{index}_good_events_per_s'), 2)}"
        f" (p99 latency x {number(ratio.get(f'live_{index}_latency_p99'), 2)})"
        for index, share in enumerate(flood["plan"]["live_shares"])
    )
    return [
        f"Live, {number(flood['plan']['live_seconds'])} s at each load (a share of the clean "
        "drain's rate), the flood sending its bad messages alongside:",
        "",
        *table(header, rows),
        f"Flood ÷ clean, live good events stored/s: {held}.",
        "",
    ]
