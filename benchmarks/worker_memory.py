"""The worker's memory over event time, without a broker: ``python -m benchmarks.worker_memory``.

The pipeline's soak cannot show whether the worker's memory stays bounded: its 10 minutes
are the spray detector's window (it keeps each failed login for 10 minutes of event time),
so the soak ends while that state still fills, and the local broker keeps every message in
memory, which a longer soak at 50 % of the drain rate would exhaust (docs/PERFORMANCE.md).

This runs the worker as the app wires it (:func:`benchmarks.worker_core.new_worker`) on a
paced load of the pipeline benchmark's events spanning ``minutes`` of event time, with the
sequencer's clock at each linger's end as in :mod:`benchmarks.worker_core`. Its decisions
land at the end of their input partition when it flushes, acknowledged at those offsets,
and come back as input in the next step, as Kafka returns them. It reports the process's
RSS at each minute of event time and its growth per minute once the detectors' longest
window (plus their allowed lateness) has passed: bounded state is flat from there.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from authtrail.stream.detection.lockout_policy import PolicySet
from authtrail.stream.worker.sequencing import EVENTS, InputRecord
from benchmarks.procs import rss_bytes
from benchmarks.worker_core import LINGER_US, START_MICROS, Take, new_worker, paced_workload


class _Echo:
    """The worker's publisher, as Kafka is to it: what it publishes to the events topic is
    appended to that input partition when it flushes (acknowledged at those offsets) and
    read back ahead of the next step's input. The rest is dropped."""

    def __init__(self) -> None:
        self._next_offset: collections.Counter[int] = collections.Counter()
        self._queued: list[tuple[int, bytes]] = []
        self._landed: list[InputRecord] = []
        self._acknowledged: dict[tuple[str, int], tuple[int, int]] = {}
        self.read_back = 0
        self.now = 0  # the records' timestamps (µs): the load's event time

    def publish(self, role: str, key: bytes | None, value: bytes, partition: int) -> None:
        if role == EVENTS:
            self._queued.append((partition, value))

    async def flush(self) -> None:
        for partition, value in self._queued:
            offset = self._append(partition)
            self._landed.append(InputRecord(partition, offset, None, value, self.now))
            first, _ = self._acknowledged.get((EVENTS, partition), (offset, offset))
            self._acknowledged[(EVENTS, partition)] = (first, offset)
        self._queued.clear()

    def take_acknowledged(self) -> dict[tuple[str, int], tuple[int, int]]:
        acknowledged, self._acknowledged = self._acknowledged, {}
        return acknowledged

    def records(self, take: Take) -> list[InputRecord]:
        """What the next step reads: the decisions landed since, then ``take``'s messages,
        each at its partition's next offset."""
        records, self._landed = self._landed, []
        self.read_back += len(records)
        return records + [
            InputRecord(partition, self._append(partition), None, value, self.now)
            for partition, _, value in take
        ]

    def _append(self, partition: int) -> int:
        offset = self._next_offset[partition]
        self._next_offset[partition] += 1
        return offset


def windows_minutes(policies: PolicySet) -> float:
    """Event time after which the detectors' state is as large as the load makes it: the
    spray detector's window (the longest a failure is kept for) plus the allowed lateness."""
    spray = policies.spray_for("")
    return (spray.window_seconds + policies.allowed_lateness_seconds) / 60


def over_event_time(minutes: float, rate: float, tenants: int = 100) -> dict[str, Any]:
    """Worker RSS at each minute of a ``rate`` events/s load spanning ``minutes`` of event
    time; the growth after the detectors' windows (MB per minute, least squares)."""
    load = paced_workload(minutes * 60, tenants, rate, warm_seconds=0)
    clocks = load.clocks
    assert clocks is not None
    clock = [0.0]
    echo = _Echo()
    rss: list[float] = []
    with tempfile.TemporaryDirectory(prefix="worker-memory-") as scratch:
        worker = new_worker(echo, Path(scratch), lambda: clock[0])

        async def drive() -> None:
            next_minute = 1
            for take, at in zip(load.takes, clocks, strict=True):
                clock[0], echo.now = at, round(at * 1e6)
                await worker.process(echo.records(take))
                if at * 1e6 - START_MICROS >= next_minute * 60e6:
                    gc.collect()  # what is alive, not what a collection has yet to find
                    rss.append(round((rss_bytes(os.getpid()) or 0) / 2**20, 1))
                    next_minute += 1
            await worker.process(echo.records([]))  # the last decisions back in
            await worker.close_open_batches()

        asyncio.run(drive())
    settled = windows_minutes(PolicySet())
    after = [(minute, mb) for minute, mb in enumerate(rss, start=1) if minute > settled + 1]
    return {
        "minutes": minutes,
        "rate": rate,
        "tenants": tenants,
        "events": load.events,
        "decisions": worker.counters.decisions,
        "decisions_read_back": echo.read_back,
        "rss_mb_by_minute": rss,
        "windows_minutes": round(settled, 2),
        "growth_after_windows_mb_per_min": _slope(after),
        "linger_us": LINGER_US,
    }


def _slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of ``(minute, MB)``; None for fewer than 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in points)
    variance = sum((x - mean_x) ** 2 for x, _ in points)
    return round(covariance / variance, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--rate", type=float, default=3000)
    parser.add_argument("--tenants", type=int, default=100)
    args = parser.parse_args(argv)
    print(json.dumps(over_event_time(args.minutes, args.rate, args.tenants), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
