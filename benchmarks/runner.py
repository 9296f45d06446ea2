"""Run a :class:`~benchmarks.config.RunConfig` and collect every result in one dict.

A failing benchmark is recorded under ``errors`` and the run goes on: one broken part
must not cost the numbers of all the others. Sections run one after another, never in
parallel, because they share the machine's two cores.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import flood, pipeline, profiling
from benchmarks.config import RunConfig, StackPlan
from benchmarks.isolated import run_isolated
from benchmarks.machine import describe_machine
from benchmarks.procs import REPOSITORY_ROOT, load_average
from benchmarks.stack import AUTHTRAIL, Stack

Progress = Callable[[str], None]


def _section(results: dict[str, Any], name: str, say: Progress, work: Callable[[], Any]) -> Any:
    say(f"{name} ...")
    started = time.monotonic()
    try:
        value = work()
    except Exception as exc:  # recorded, and the run continues with the next section
        results["errors"].append(
            {"section": name, "error": repr(exc), "traceback": traceback.format_exc()[-4000:]}
        )
        say(f"{name}: FAILED: {exc!r}")
        return None
    say(f"{name}: done in {time.monotonic() - started:.1f} s")
    return value


def _limits(config: RunConfig, work: Path) -> dict[str, Any]:
    def isolated(function: str, timeout: float = 600, **kwargs: Any) -> dict[str, Any]:
        return run_isolated(function, kwargs, work, timeout)

    return {
        "sha256": isolated("benchmarks.limits:sha256", count=config.sha256_count),
        "avro": isolated("benchmarks.limits:avro", count=config.avro_count),
        "clickhouse_insert": isolated(
            "benchmarks.limits:clickhouse_insert",
            rows=config.clickhouse_rows,
            batch_rows=config.clickhouse_batch_rows,
            directory=str(work / "clickhouse-insert"),
        ),
        "kafka": isolated(
            "benchmarks.limits:kafka", count=config.kafka_messages, directory=str(work / "kafka")
        ),
    }


def _costs(config: RunConfig, work: Path) -> dict[str, Any]:
    def isolated(function: str, timeout: float = 600, **kwargs: Any) -> dict[str, Any]:
        return run_isolated(function, kwargs, work, timeout)

    memory = (
        {"worker_memory": isolated("benchmarks.worker_memory:over_event_time", timeout=1800,
                                   minutes=config.memory_minutes, rate=config.memory_rate)}
        if config.memory_minutes
        else {}
    )  # fmt: skip
    return {
        **memory,
        "signatures": isolated("benchmarks.costs:signatures", count=config.signatures),
        "batch_sizes": isolated(
            "benchmarks.costs:batch_sizes",
            events=config.batch_size_events,
            sizes=list(config.batch_sizes),
        ),
        "memory": isolated(
            "benchmarks.costs:memory",
            events=config.core_events,
            tenant_counts=[1, 100, 10_000],
        ),
        "integrity_core": [
            isolated("benchmarks.costs:integrity_core", events=config.core_events, tenants=count)
            for count in config.core_tenants
        ],
    }


def _profile_hook(stack: Stack, seconds: float, into: dict[str, Any]) -> Callable[[Stack], None]:
    def start(started: Stack) -> None:
        for role, groups in started.roles().items():
            if role in ("worker", "store"):
                out = stack.directory / f"profile-{role}.txt"
                into[role] = (profiling.start_recording(groups[0], seconds, out), out)

    return start


def _basis_rate(drain: dict[str, Any]) -> float:
    """The drain rate a stack's live phases take their fractions of: over the whole drain
    (the 10-90 % window overstates it when the store caught up inside the window), else the
    window's (results from before the whole drain was measured)."""
    return float(
        drain.get("whole_drain_events_per_s") or drain.get("sustained_events_per_s") or 0.0
    )


def stack_name(plan: StackPlan) -> str:
    """The name a plan's stack has in the results."""
    return plan.stack.name + ("-profiled" if plan.profile else "")


def run_stack(
    plan: StackPlan, work: Path, config: RunConfig, earlier: dict[str, Any], say: Progress
) -> dict[str, Any]:
    """Deploy one stack, drain, then its live, soak and restart phases."""
    name = stack_name(plan)
    result: dict[str, Any] = {
        "config": pipeline.config_dict_of(plan.stack),
        "profiled": plan.profile,
        "live": [],
    }
    with Stack(plan.stack, work / name) as stack:
        recorders: dict[str, Any] = {}
        hook = _profile_hook(stack, 30, recorders) if plan.profile else None
        result["drain"] = pipeline.drain(stack, plan.drain_events, config.drain_timeout, hook)
        window_rate = result["drain"]["sustained_events_per_s"] or 0.0
        rate = _basis_rate(result["drain"])
        say(f"  {name}: drained {plan.drain_events} at {window_rate:,.0f} events/s "
            f"({rate:,.0f} over the whole drain, the live phases' basis)")  # fmt: skip
        if recorders:
            result["profile"] = {}
            for role, (process, out) in recorders.items():
                if process is not None:
                    process.wait(120)
                result["profile"][role] = profiling.summarise(out)
        bases: list[tuple[str, float]] = [(name, rate)]
        if plan.live_rates_from is not None:
            other = (earlier.get(plan.live_rates_from) or {}).get("drain") or {}
            if _basis_rate(other):
                bases.append((plan.live_rates_from, _basis_rate(other)))
        for basis, basis_rate in bases:
            for fraction in plan.live_fractions:
                offered = max(1.0, fraction * basis_rate)
                phase = pipeline.live(stack, offered, plan.live_seconds, plan.live_seconds + 180)
                phase.update(fraction=fraction, basis=basis)
                result["live"].append(phase)
                p99 = (phase.get("latency_ms") or {}).get("p99")
                say(f"  {name}: live {offered:,.0f}/s ({fraction:.0%} of {basis}): p99 {p99} ms")
        if plan.soak_seconds and rate:
            result["soak"] = pipeline.soak(
                stack, 0.5 * rate, plan.soak_seconds, plan.soak_seconds + 300
            )
            result["soak"]["fraction"] = 0.5
        if plan.restart and stack.config.mode == AUTHTRAIL:
            result["restart"] = pipeline.restart(stack, rate or None, timeout=600)
            restart = result["restart"]
            say(
                f"  {name}: restart replayed {restart['records']:,} records in "
                f"{restart['recovery_seconds']} s ({restart['restart_seconds']} s from the kill)"
            )
    return result


def _verify(config: RunConfig, work: Path) -> list[dict[str, Any]]:
    runs = []
    for rows in config.verify_rows:
        runs.append(
            run_isolated(
                "benchmarks.verify_bench:verify_rows",
                {
                    "rows": rows,
                    "tenants": config.verify_tenants,
                    "batch_size": config.verify_batch_size,
                    "directory": str(work / "verify"),
                    "profile": config.verify_profile and rows == max(config.verify_rows),
                },
                work,
                timeout=7200,
            )
        )
    return runs


def _proofs(config: RunConfig, work: Path) -> list[dict[str, Any]]:
    return [
        run_isolated(
            "benchmarks.proofs_bench:proof_times",
            {"rows": rows, "directory": str(work / "proofs")},
            work,
            timeout=7200,
        )
        for rows in config.proof_rows
    ]


def run(
    config: RunConfig,
    work: Path,
    say: Progress,
    only: set[str] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every section of ``config`` (or those named in ``only``); return the results.

    ``save`` is called with the results so far after each section, so an interrupted
    run keeps what it measured.
    """
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": describe_machine(REPOSITORY_ROOT),
        "parameters": config.as_dict(),
        "load_average_before": load_average(),
        "stacks": {},
        "errors": [],
    }
    started = time.monotonic()

    def wanted(section: str) -> bool:
        return only is None or section in only

    def saved() -> None:
        if save is not None:
            save(results)

    if wanted("limits"):
        results["limits"] = _section(results, "limits", say, lambda: _limits(config, work))
        saved()
    if wanted("costs"):
        results["costs"] = _section(results, "costs", say, lambda: _costs(config, work))
        saved()
    if wanted("pipeline"):
        stacks = results["stacks"]
        for plan in config.stacks:
            name = stack_name(plan)
            work_on = functools.partial(run_stack, plan, work, config, stacks, say)
            value = _section(results, f"stack {name}", say, work_on)
            if value is not None:
                stacks[name] = value
            saved()
    if wanted("flood") and config.flood is not None:
        flood_plan = config.flood
        results["flood"] = _section(results, "flood", say, lambda: flood.run(flood_plan, work, say))
        saved()
    if wanted("verify"):
        results["verify"] = _section(results, "verify", say, lambda: _verify(config, work)) or []
        saved()
    if wanted("proofs"):
        results["proofs"] = _section(results, "proofs", say, lambda: _proofs(config, work)) or []
    if wanted("store_path") and config.store_path_events:
        kwargs = {"count": config.store_path_events, "tenants": 100, "per_envelope": 500,
                  "timeout": 600.0}  # fmt: skip
        results["store_path"] = _section(
            results, "store_path", say,
            lambda: run_isolated("benchmarks.store_path:run", kwargs, work, timeout=1800),
        )  # fmt: skip
    results["load_average_after"] = load_average()
    results["seconds"] = round(time.monotonic() - started, 1)
    return results
