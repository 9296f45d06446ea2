"""Derive the headline numbers from raw results: throughput ratios, latency, targets, walls.

Pure: takes the results dict that ``python -m benchmarks`` builds and returns plain data
for :mod:`benchmarks.report`. Targets are those of issue 12 for a 2-core machine.
"""

from __future__ import annotations

from typing import Any

# Issue 12's targets (issue 6 and the compass aim at 50 000 events/s and 0.8 of plain).
TARGET_EVENTS_PER_S = 25_000
TARGET_RATIO_TO_PLAIN = 0.5
TARGET_P99_MS = 2_000
TARGET_VERIFY_ROWS_PER_S = 1_000_000
# Issue 12: verify's rows/s over this machine's SHA-256 limit for rows of its shape.
TARGET_VERIFY_VS_LIMIT = 0.8
FLAT_RSS_MB_PER_MIN = 1.0  # growth in the second half of the soak still counted as flat


def _stacks(results: dict[str, Any], mode: str, workers: int = 1) -> dict[int, dict[str, Any]]:
    """Stacks of ``mode`` by tenant count (authtrail: with ``workers`` workers, unprofiled)."""
    found = {}
    for stack in results.get("stacks", {}).values():
        config = stack.get("config", {})
        if config.get("mode") != mode or stack.get("profiled") or config.get("label"):
            continue
        if mode == "authtrail" and config.get("workers") != workers:
            continue
        found[int(config["tenants"])] = stack
    return found


def _rate(stack: dict[str, Any] | None, key: str = "sustained_events_per_s") -> float | None:
    drain = (stack or {}).get("drain") or {}
    value = drain.get(key)
    return float(value) if value else None


def _whole_rate(stack: dict[str, Any] | None) -> float | None:
    """The drain's rate from its first row stored to its last (results before it: None)."""
    return _rate(stack, "whole_drain_events_per_s")


def wall(stack: dict[str, Any]) -> dict[str, Any] | None:
    """The component that limits a drained stack, from CPU per event over the whole drain
    (over the window in results from before it was measured)."""
    drain = stack.get("drain") or {}
    window = drain.get("window") or {}
    if window.get("lower_bound_from_tiny_run"):
        return None  # the window did not see every component at work
    roles = (drain.get("whole_drain") or window).get("roles") or {}
    costs = {
        role: values["cpu_us_per_event"]
        for role, values in roles.items()
        if role != "harness" and values.get("cpu_us_per_event")
    }
    if not costs:
        return None
    role = max(costs, key=lambda name: costs[name])
    total = sum(costs.values())
    ceiling = 1e6 / costs[role]
    return {
        "component": role,
        "cpu_us_per_event": costs[role],
        "cores_used": roles[role].get("cores_used"),
        "one_core_ceiling_events_per_s": round(ceiling),
        "all_components_cpu_us_per_event": round(total, 1),
        "cores_needed_at_target": round(total * TARGET_EVENTS_PER_S / 1e6, 1),
    }


def throughput(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per tenant count: authtrail and plain drain rates, ratio, wall."""
    authtrail, plain = _stacks(results, "authtrail"), _stacks(results, "plain")
    rows = []
    for tenants in sorted(set(authtrail) | set(plain)):
        ours, theirs = _rate(authtrail.get(tenants)), _rate(plain.get(tenants))
        rows.append(
            {
                "tenants": tenants,
                "authtrail_events_per_s": ours,
                "authtrail_whole_drain_events_per_s": _whole_rate(authtrail.get(tenants)),
                "plain_events_per_s": theirs,
                "ratio": round(ours / theirs, 3) if ours and theirs else None,
                "wall": wall(authtrail[tenants]) if tenants in authtrail else None,
            }
        )
    return rows


def latency(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every live phase: mode, tenants, offered rate and its basis, latency quantiles."""
    rows = []
    for name, stack in results.get("stacks", {}).items():
        for phase in stack.get("live", []):
            queryable = phase.get("latency_ms") or {}
            signed = phase.get("signed_latency_ms") or {}
            sequenced = phase.get("sequenced_latency_ms") or {}
            rows.append(
                {
                    "stack": name,
                    "mode": stack["config"]["mode"],
                    "tenants": stack["config"]["tenants"],
                    "fraction": phase.get("fraction"),
                    "basis": phase.get("basis"),
                    "offered_events_per_s": round(phase["offered_events_per_s"]),
                    "achieved_events_per_s": (phase.get("window") or {}).get("events_per_s"),
                    "settle_seconds": phase.get("settle_seconds"),
                    "p50_ms": queryable.get("p50"),
                    "p95_ms": queryable.get("p95"),
                    "p99_ms": queryable.get("p99"),
                    "signed_p50_ms": signed.get("p50"),
                    "signed_p99_ms": signed.get("p99"),
                    "sequenced_p50_ms": sequenced.get("p50"),
                    "sequenced_p99_ms": sequenced.get("p99"),
                    "complete": phase.get("complete"),
                }
            )
    return rows


def _latency_ratio(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """authtrail ÷ plain p50/p99 where both ran at the same absolute offered rate."""
    ratios = []
    for ours in (row for row in rows if row["mode"] == "authtrail"):
        for theirs in rows:
            if (
                theirs["mode"] == "plain"
                and theirs["tenants"] == ours["tenants"]
                and theirs["basis"] == ours["stack"]
                and theirs["fraction"] == ours["fraction"]
                and ours["p99_ms"]
                and theirs["p99_ms"]
            ):
                ratios.append(
                    {
                        "tenants": ours["tenants"],
                        "offered_events_per_s": ours["offered_events_per_s"],
                        "p50_ratio": round(ours["p50_ms"] / theirs["p50_ms"], 2),
                        "p99_ratio": round(ours["p99_ms"] / theirs["p99_ms"], 2),
                    }
                )
    return ratios


def scaling(results: dict[str, Any]) -> dict[str, Any] | None:
    """1, 2 and 4 worker processes at the same tenant count (those that ran)."""
    one = _stacks(results, "authtrail", 1)
    more = {workers: _stacks(results, "authtrail", workers) for workers in (2, 4)}
    for tenants in sorted(set(one) & set(more[2])):
        rate_one = _rate(one[tenants])
        rates = {1: rate_one} | {
            workers: _rate(stacks[tenants]) for workers, stacks in more.items() if tenants in stacks
        }
        return {
            "tenants": tenants,
            "events_per_s": {str(workers): rate for workers, rate in rates.items()},
            "speedup": {
                str(workers): round(rate / rate_one, 2) if rate_one and rate else None
                for workers, rate in rates.items()
            },
        }
    return None


def memory(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Peak RSS (MB) of worker and store per stack, after its last phase."""
    rows = []
    for name, stack in results.get("stacks", {}).items():
        phases = [stack.get("drain") or {}, *stack.get("live", []), stack.get("soak") or {}]
        peaks: dict[str, float] = {}
        for phase in phases:
            for role, value in (phase.get("peak_rss") or {}).items():
                if value:
                    peaks[role] = max(peaks.get(role, 0.0), value / 2**20)
        rows.append(
            {
                "stack": name,
                "tenants": stack["config"]["tenants"],
                **{f"{role}_peak_mb": round(value, 1) for role, value in sorted(peaks.items())},
            }
        )
    return rows


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 12's targets: measured value, met or not, and the wall when not."""
    rows: list[dict[str, Any]] = []
    for row in throughput(results):
        if row["authtrail_events_per_s"] is None:
            continue
        # The whole drain where measured: the window overstates a store's catch-up.
        whole, tenants = row["authtrail_whole_drain_events_per_s"], row["tenants"]
        rate = whole or row["authtrail_events_per_s"]
        rows.append(
            _target(
                f"end to end, {tenants} tenants" + (" (whole drain)" if whole else ""),
                f"≥ {TARGET_EVENTS_PER_S:,} events/s",
                rate,
                rate >= TARGET_EVENTS_PER_S,
                _wall_text(row["wall"]),
            )
        )
        if row["ratio"] is not None:
            rows.append(
                _target(
                    f"authtrail ÷ plain, {tenants} tenants",
                    f"≥ {TARGET_RATIO_TO_PLAIN}",
                    row["ratio"],
                    row["ratio"] >= TARGET_RATIO_TO_PLAIN,
                    _ratio_wall_text(row),
                )
            )
    for row in latency(results):
        if row["mode"] == "authtrail" and row["fraction"] == 0.5 and row["basis"] == row["stack"]:
            p99 = row["p99_ms"]
            rows.append(
                _target(
                    f"p99 event-to-queryable at 50 % of max, {row['tenants']} tenants",
                    f"≤ {TARGET_P99_MS:,} ms",
                    p99,
                    p99 is not None and p99 <= TARGET_P99_MS,
                    "",
                )
            )
    verify_runs = [run for run in results.get("verify", []) if run.get("rows_per_s")]
    if verify_runs:
        largest = max(verify_runs, key=lambda run: run["rows"])
        rate = largest["rows_per_s"]
        rows.append(
            _target(
                f"verify over {largest['rows']:,} rows",
                f"≥ {TARGET_VERIFY_ROWS_PER_S:,} rows/s",
                rate,
                rate >= TARGET_VERIFY_ROWS_PER_S,
                "",
            )
        )
        ratio = largest.get("vs_limit")
        if ratio:
            limit = largest["sha256_limit"]["limit_rows_per_s"]
            rows.append(
                _target(
                    f"verify over {largest['rows']:,} rows vs this machine's SHA-256 limit",
                    f"≥ {TARGET_VERIFY_VS_LIMIT} x {limit:,.0f} rows/s",
                    ratio["wall"],
                    ratio["wall"] >= TARGET_VERIFY_VS_LIMIT,
                    f"by CPU: {ratio['cpu']}"
                    + (
                        f"; wall: reading the columns and hashing alone reach "
                        f"{ratio['ceiling']} by CPU"
                        if ratio.get("ceiling")
                        else ""
                    ),
                )
            )
    for name, stack in results.get("stacks", {}).items():
        trend = ((stack.get("soak") or {}).get("rss_trend") or {}).get("worker") or {}
        growth = trend.get("second_half_growth_mb_per_min")
        if growth is not None:
            minutes = stack["soak"]["seconds"] / 60
            rows.append(
                _target(
                    f"worker RSS flat over {minutes:.1f} min ({name})",
                    f"≤ {FLAT_RSS_MB_PER_MIN} MB/min growth",
                    growth,
                    growth <= FLAT_RSS_MB_PER_MIN,
                    f"{trend['start_mb']} → {trend['end_mb']} MB; the detectors' windows "
                    "(10 min of event time) still fill during a soak this long",
                )
            )
    memory = (results.get("costs") or {}).get("worker_memory") or {}
    growth = memory.get("growth_after_windows_mb_per_min")
    if growth is not None:
        rss = memory["rss_mb_by_minute"]
        rows.append(
            _target(
                f"worker RSS flat after the detectors' windows ({memory['minutes']:g} min of "
                f"event time at {memory['rate']:,.0f} events/s, no broker)",
                f"≤ {FLAT_RSS_MB_PER_MIN} MB/min growth",
                growth,
                growth <= FLAT_RSS_MB_PER_MIN,
                f"{rss[0]} MB after 1 min, {rss[-1]} MB at the end; windows "
                f"{memory['windows_minutes']} min",
            )
        )
    return rows


def _target(what: str, target: str, measured: Any, met: bool, note: str) -> dict[str, Any]:
    return {"what": what, "target": target, "measured": measured, "met": met, "note": note}


def _wall_text(found: dict[str, Any] | None) -> str:
    if not found:
        return ""
    ceiling = found["one_core_ceiling_events_per_s"]
    margin = (
        f"{TARGET_EVENTS_PER_S / ceiling:.1f}x short"
        if ceiling < TARGET_EVENTS_PER_S
        else f"{ceiling / TARGET_EVENTS_PER_S:.1f}x the target"
    )
    return (
        f"wall: {found['component']} {found['cpu_us_per_event']} CPU µs/event → "
        f"≤ {ceiling:,}/s per core ({margin}); all components need "
        f"{found['cores_needed_at_target']} cores at {TARGET_EVENTS_PER_S:,}/s"
    )


def _ratio_wall_text(row: dict[str, Any]) -> str:
    """What the target ratio asks of the limiting component, from this run's plain rate:
    the rate it must reach alone on one core, against its CPU per event now."""
    found, plain = row["wall"], row["plain_events_per_s"]
    if not found or not plain:
        return ""
    needed = TARGET_RATIO_TO_PLAIN * plain
    return (
        f"wall: {TARGET_RATIO_TO_PLAIN} x plain's {plain:,.0f}/s = {needed:,.0f}/s needs the "
        f"{found['component']} at ≤ {1e6 / needed:.2f} CPU µs/event on its one core "
        f"(now {found['cpu_us_per_event']})"
    )


def experiments(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Labelled variants (settings tried through the environment) against their base stack."""
    stacks = results.get("stacks", {})
    rows = []
    for name, stack in stacks.items():
        config = stack.get("config", {})
        if not config.get("label"):
            continue
        base_name = name.removesuffix(f"-{config['label']}")
        rows.append(
            {
                "stack": name,
                "base": base_name,
                "environment": dict(config.get("worker_environment") or ()),
                "events_per_s": _rate(stack),
                "base_events_per_s": _rate(stacks.get(base_name)),
                "roles": ((stack.get("drain") or {}).get("window") or {}).get("roles"),
                "base_roles": (
                    (stacks.get(base_name, {}).get("drain") or {}).get("window") or {}
                ).get("roles"),
            }
        )
    return rows


def derive(results: dict[str, Any]) -> dict[str, Any]:
    """Everything the summary shows, computed once."""
    latency_rows = latency(results)
    return {
        "targets": targets(results),
        "throughput": throughput(results),
        "latency": latency_rows,
        "latency_ratio": _latency_ratio(latency_rows),
        "scaling": scaling(results),
        "memory": memory(results),
        "experiments": experiments(results),
    }
