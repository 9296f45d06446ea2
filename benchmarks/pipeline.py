"""End-to-end measurements on a :class:`~benchmarks.stack.Stack`: drain, live, soak.

* **drain** — the sustained maximum. ``count`` events are produced before the consumers
  start (so the producer does not compete for the two cores), then the pipeline drains
  them. Throughput is the slope of stored rows between 10 % and 90 % of ``count``, which
  leaves out start-up and the last partial batches. Per-process CPU over the same window
  tells which component is the wall (CPU µs per event, cores used).
* **live** — latency at a fixed offered rate: the loader sends at ``rate`` for
  ``seconds`` with ``occurred_at`` = send time; the store's ``stored_at`` (set by
  ClickHouse at insert) minus ``occurred_at`` is event-to-queryable latency. In authtrail
  mode also event-to-signed: until the checkpoint covering the event is stored.
* **soak** — a long live run whose samples show whether worker RSS stays flat.
* **restart** — after the soak, the worker is killed (SIGKILL) and a new one started: how
  long it takes to recover its partitions (load the newest snapshot, replay what follows)
  and at what rate it replays, against the rate the stack drained at.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from benchmarks.procs import system_busy_seconds
from benchmarks.stack import AUTHTRAIL, Stack, StackConfig
from benchmarks.stages import sequenced_latency

SAMPLE_SECONDS = 0.25
# A paced phase starts from a quiet stack: the previous phase leaves work behind (after a
# drain every partition's snapshot is due, decisions come back as input), which is not
# what a steady load costs. Quiet: its processes together under this many cores for a
# second, waited for at most SETTLE_SECONDS (the wait is reported).
QUIET_CORES = 0.3
SETTLE_SECONDS = 60.0
PERCENTILES = [index / 100 for index in range(1, 100)] + [0.999]


def _sample(stack: Stack, started: float) -> dict[str, Any]:
    usage = stack.usage()
    cpu = {role: round(value.cpu_seconds, 3) for role, value in usage.items()}
    cpu["harness"] = round(time.process_time(), 3)
    return {
        "t": round(time.monotonic() - started, 3),
        "stored": stack.stored(),
        "machine_busy": round(system_busy_seconds(), 3),
        "cpu": cpu,
        "rss": {role: value.rss_bytes for role, value in usage.items()},
    }


def _wait_complete(
    stack: Stack, target: int, started: float, timeout: float, samples: list[dict[str, Any]]
) -> bool:
    """Sample until ``target`` rows are stored and every tenant is signed; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sample = _sample(stack, started)
        samples.append(sample)
        if sample["stored"] >= target and stack.unsigned_tenants() == 0:
            return True
        time.sleep(SAMPLE_SECONDS)
    return False


def _window(samples: list[dict[str, Any]], base: int, count: int) -> tuple[int, int, bool]:
    """Indexes of the first sample at ≥10 % and the last at ≤90 % of ``count`` new rows.

    When inserts are too few and large for that (tiny runs), the window runs from the last
    sample before any row arrived to the first with all rows, and the third value is True:
    that rate includes waiting for partition assignment and is a lower bound.
    """
    low = next((i for i, s in enumerate(samples) if s["stored"] - base >= 0.1 * count), None)
    high = max(
        (i for i, s in enumerate(samples) if s["stored"] - base <= 0.9 * count), default=None
    )
    if high is not None:
        # The window ends when its last rows landed, as it starts when its first did:
        # samples that saw no new rows since then would add a wait for the next insert
        # (a second of a six-second window when a sink inserts 200 000 rows at a time).
        high = next(i for i, s in enumerate(samples) if s["stored"] >= samples[high]["stored"])
    # Inserts arrive in chunks: both ends may fall on the same stored count, a window that
    # holds no rows at all, which the fallback below replaces.
    if low is not None and high is not None and samples[high]["stored"] > samples[low]["stored"]:
        return low, high, False
    return (*_ends(samples, base, count), True)


def _ends(samples: list[dict[str, Any]], base: int, count: int) -> tuple[int, int]:
    """Indexes of the last sample before any of ``count`` new rows was stored and of the
    first with all of them (the last sample if none has)."""
    first_row = next((i for i, s in enumerate(samples) if s["stored"] > base), len(samples) - 1)
    full = next((i for i, s in enumerate(samples) if s["stored"] - base >= count), None)
    return max(first_row - 1, 0), full if full is not None else len(samples) - 1


def _costs(samples: list[dict[str, Any]], low: int, high: int) -> dict[str, Any]:
    first, last = samples[low], samples[high]
    events = last["stored"] - first["stored"]
    seconds = last["t"] - first["t"]
    roles: dict[str, Any] = {}
    for role in last["cpu"]:
        if role not in first["cpu"]:
            continue
        cpu = last["cpu"][role] - first["cpu"][role]
        roles[role] = {
            "cpu_us_per_event": round(1e6 * cpu / events, 2) if events else None,
            "cores_used": round(cpu / seconds, 3) if seconds > 0 else None,
            "ceiling_events_per_s_one_core": round(events / cpu) if cpu > 0 else None,
        }
    # Whatever else ran on the machine meanwhile (other jobs share these cores).
    ours = sum(last["cpu"][r] - first["cpu"].get(r, last["cpu"][r]) for r in last["cpu"])
    others = last["machine_busy"] - first["machine_busy"] - ours
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1) if seconds > 0 else None,
        "roles": roles,
        "other_processes_cores_used": round(max(others, 0.0) / seconds, 3) if seconds else None,
    }


def drain(
    stack: Stack,
    count: int,
    timeout: float,
    on_started: Callable[[Stack], None] | None = None,
) -> dict[str, Any]:
    """Produce ``count`` events, then start the consumers and measure how fast they drain.

    ``on_started`` is called once the consumers run (e.g. to attach a profiler).
    """
    out = stack.start_loader(count=count)
    producer = stack.finish_loader(out, timeout=max(120.0, count / 2000))
    started = time.monotonic()
    # Nothing is stored yet. A tiny backlog may be stored before the first real sample
    # (while the workers get ready); this one keeps its window from being empty.
    baseline = {
        "t": 0.0,
        "stored": 0,
        "machine_busy": round(system_busy_seconds(), 3),
        "cpu": {"harness": round(time.process_time(), 3)},
        "rss": {},
    }
    stack.start_consumers()
    ready_seconds = time.monotonic() - started
    if on_started is not None:
        on_started(stack)
    samples: list[dict[str, Any]] = [baseline]
    complete = _wait_complete(stack, count, started, timeout, samples)
    low, high, fallback = _window(samples, 0, count)
    window = _costs(samples, low, high)
    window["lower_bound_from_tiny_run"] = fallback
    # The whole drain beside the window: a store that fell behind the worker and caught up
    # within the window would make the window's rate more than the stack sustains.
    whole = _costs(samples, *_ends(samples, 0, count))
    return {
        "events": count,
        "complete": complete,
        "stored": samples[-1]["stored"],
        "checkpoints": stack.checkpoints(),
        "ready_seconds": round(ready_seconds, 2),
        "total_seconds": samples[-1]["t"],
        "sustained_events_per_s": window["events_per_s"],
        "whole_drain_events_per_s": whole["events_per_s"],
        "window": window,
        "whole_drain": whole,
        "producer": producer,
        "peak_rss": stack.peak_rss(),
        "samples": samples,
    }


def settle(stack: Stack, limit: float = SETTLE_SECONDS) -> float:
    """Wait until the stack's processes use under :data:`QUIET_CORES` for a second (at
    most ``limit`` seconds); return the seconds waited."""
    started = time.monotonic()
    before = sum(usage.cpu_seconds for usage in stack.usage().values())
    while time.monotonic() - started < limit:
        time.sleep(1.0)
        now = sum(usage.cpu_seconds for usage in stack.usage().values())
        if now - before < QUIET_CORES:
            break
        before = now
    return round(time.monotonic() - started, 1)


def live(stack: Stack, rate: float, seconds: float, timeout: float) -> dict[str, Any]:
    """Once the stack is quiet, send at ``rate`` for ``seconds`` to running consumers;
    measure latency and RSS."""
    settled = settle(stack)
    base = stack.stored()
    started = time.monotonic()
    out = stack.start_loader(rate=rate, seconds=seconds)
    samples: list[dict[str, Any]] = []
    while stack.loader is not None and stack.loader.poll() is None:
        samples.append(_sample(stack, started))
        time.sleep(SAMPLE_SECONDS)
    producer = stack.finish_loader(out, timeout=60)
    target = base + int(producer["sent"])
    complete = _wait_complete(stack, target, started, timeout, samples)
    low, high, _ = _window(samples, base, int(producer["sent"]))
    result = {
        "offered_events_per_s": rate,
        "seconds": seconds,
        "settle_seconds": settled,
        "sent": producer["sent"],
        "complete": complete,
        "drain_seconds_after_send": round(samples[-1]["t"] - producer["seconds"], 2),
        "window": _costs(samples, low, high),
        "producer": producer,
        "latency_ms": latency(stack, int(producer["start_us"])),
        "peak_rss": stack.peak_rss(),
        "samples": samples,
    }
    if stack.config.mode == AUTHTRAIL:
        since = int(producer["start_us"])
        result["signed_latency_ms"] = signed_latency(stack, since)
        settings = stack.settings
        result["sequenced_latency_ms"] = sequenced_latency(
            settings.bootstrap_servers or "", settings.chained_topic, settings.partitions, since
        )
    return result


# The worker's log line for each partition it recovered (stream/worker/sequencing.py).
_RECOVERED = re.compile(
    r"partition (\d+): recovered (\d+) records of \d+ tenants in ([\d.]+) s, "
    r"(?:after a snapshot of (\d+) records(?: \((\d+) bytes\))?|from the start)"
)


def restart(stack: Stack, drained_per_s: float | None, timeout: float) -> dict[str, Any]:
    """Kill the (first) worker and start another; time its recovery of every partition.

    Partitions recover side by side, so the recovery takes as long as the slowest;
    ``restart_seconds`` counts from the kill to the last partition recovered, process
    start and consumer-group join included. Nothing is sent meanwhile.
    """
    killed = time.monotonic()
    log = stack.kill_and_restart_worker(0)
    worker = stack.workers[0]
    partitions = stack.config.partitions // stack.config.workers
    found: list[tuple[str, ...]] = []
    while len(found) < partitions:
        if time.monotonic() - killed > timeout or worker.poll() is not None:
            raise RuntimeError(f"{log.name}: {len(found)} of {partitions} partitions recovered")
        time.sleep(0.1)
        found = _RECOVERED.findall(log.read_text(errors="replace")) if log.exists() else []
    restart_seconds = time.monotonic() - killed
    recovered = [
        {"partition": int(partition), "records": int(records), "seconds": float(seconds),
         "snapshot_records": int(snapshot) if snapshot else None,
         "snapshot_bytes": int(size) if size else None}
        for partition, records, seconds, snapshot, size in found
    ]  # fmt: skip
    replayed = sum(int(records) for _, records, *_ in found)
    slowest = max(float(seconds) for _, _, seconds, *_ in found)
    replay_rate = replayed / slowest if slowest else None
    return {
        "partitions": recovered,
        "records": replayed,
        "recovery_seconds": slowest,
        "restart_seconds": round(restart_seconds, 2),
        "replay_records_per_s": round(replay_rate) if replay_rate else None,
        "replay_vs_drain": round(replay_rate / drained_per_s, 2)
        if replay_rate and drained_per_s
        else None,
    }


def _quantiles(table: Any) -> dict[str, Any]:
    row = table.to_pylist()[0]
    values = [round(v / 1000, 2) for v in row["q"]] if row["n"] else []
    if not values:
        return {"events": 0}
    return {
        "events": row["n"],
        "p50": values[49],
        "p95": values[94],
        "p99": values[98],
        "p999": values[99],
        "max": round(row["worst"] / 1000, 2),
        "percentiles": values,  # p1..p99 and p99.9, for the distribution plot
    }


def latency(stack: Stack, since_us: int) -> dict[str, Any]:
    """Event-to-queryable latency (ms) of rows whose ``occurred_at`` ≥ ``since_us``."""
    assert stack.store is not None
    levels = ", ".join(map(str, PERCENTILES))
    sql = f"""
        SELECT count() AS n, max(d) AS worst, quantilesExact({levels})(d) AS q FROM (
            SELECT dateDiff('microsecond', occurred_at, stored_at) AS d FROM {stack.table}
            WHERE occurred_at >= fromUnixTimestamp64Micro({{since:Int64}}, 'UTC'))"""
    return _quantiles(stack.store.query_arrow(sql, {"since": since_us}))


def signed_latency(stack: Stack, since_us: int) -> dict[str, Any]:
    """Event-to-signed latency (ms): until the checkpoint covering the event was stored."""
    assert stack.store is not None
    levels = ", ".join(map(str, PERCENTILES))
    sql = f"""
        SELECT count() AS n, max(d) AS worst, quantilesExact({levels})(d) AS q FROM (
            SELECT dateDiff('microsecond', e.occurred_at, c.stored_at) AS d FROM (
                SELECT tenant_id, seq, occurred_at FROM events
                WHERE occurred_at >= fromUnixTimestamp64Micro({{since:Int64}}, 'UTC')) AS e
            ASOF JOIN (SELECT tenant_id, size, stored_at FROM checkpoints) AS c
            ON e.tenant_id = c.tenant_id AND e.seq <= c.size)"""
    return _quantiles(stack.store.query_arrow(sql, {"since": since_us}))


def rss_trend(samples: list[dict[str, Any]], role: str) -> dict[str, Any]:
    """RSS of ``role`` over a run: start, end, peak, and the growth rate in its second half."""
    points = [(s["t"], s["rss"][role]) for s in samples if role in s["rss"]]
    if len(points) < 4:
        return {"points": len(points)}
    half = points[len(points) // 2 :]
    (t0, r0), (t1, r1) = half[0], half[-1]
    return {
        "points": len(points),
        "start_mb": round(points[0][1] / 2**20, 1),
        "end_mb": round(points[-1][1] / 2**20, 1),
        "peak_mb": round(max(r for _, r in points) / 2**20, 1),
        "second_half_growth_mb_per_min": round((r1 - r0) / 2**20 / max(t1 - t0, 1e-9) * 60, 2),
    }


def soak(stack: Stack, rate: float, seconds: float, timeout: float) -> dict[str, Any]:
    """A long live run; reports worker and store RSS trends (flat means no leak)."""
    result = live(stack, rate, seconds, timeout)
    result["rss_trend"] = {
        role: rss_trend(result["samples"], role) for role in ("worker", "store", "broker")
    }
    return result


def config_dict_of(config: StackConfig) -> dict[str, Any]:
    """A stack's configuration for the results, with its name."""
    return {"name": config.name, **asdict(config)}
