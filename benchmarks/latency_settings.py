"""Latency against the batch intervals: ``python -m benchmarks.latency_settings``.

Event → queryable and event → signed latency depend mostly on two waits: the worker closes
a tenant's Merkle batch (and signs it) every ``batch_interval_ms``, and the sink inserts
every ``sink_batch_ms``. Shorter waits cost more signatures and more, smaller inserts. This
deploys one fresh stack per setting (authtrail, ``--tenants`` tenants, one worker, as
:mod:`benchmarks.pipeline` does), warms it up, sends at a fixed ``--rate`` for
``--seconds``, and prints
per setting the latency percentiles and the CPU µs per event of worker and store host.
Settings run in turn, ``--rounds`` times, so that a busy moment of a shared machine does
not fall on one setting only; the machine's other load is printed per run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.pipeline import live
from benchmarks.stack import AUTHTRAIL, Stack, StackConfig

WARM_UP_SECONDS = 15.0


def _setting(text: str) -> tuple[int, int]:
    worker, _, sink = text.partition("/")
    return int(worker), int(sink or worker)


def run(settings: list[tuple[int, int]], tenants: int, rate: float, seconds: float,
        rounds: int) -> list[dict[str, Any]]:  # fmt: skip
    results = []
    for round_number in range(rounds):
        for batch_ms, sink_ms in settings:
            config = StackConfig(AUTHTRAIL, tenants, batch_interval_ms=batch_ms,
                                 sink_batch_ms=sink_ms)  # fmt: skip
            with (
                tempfile.TemporaryDirectory(prefix="latency-") as scratch,
                Stack(config, Path(scratch)) as stack,
            ):
                stack.start_consumers()
                # A fresh worker and store pay start-up (group join, recovery, first
                # inserts) in their first seconds; the full benchmark measures latency
                # after a drain, so here a warm-up at the same rate comes first.
                live(stack, rate, WARM_UP_SECONDS, timeout=WARM_UP_SECONDS + 120)
                result = live(stack, rate, seconds, timeout=seconds + 120)
            roles = result["window"]["roles"]
            row = {
                "round": round_number,
                "batch_interval_ms": batch_ms,
                "sink_batch_ms": sink_ms,
                "complete": result["complete"],
                "queryable_p50_ms": result["latency_ms"].get("p50"),
                "queryable_p99_ms": result["latency_ms"].get("p99"),
                "signed_p50_ms": result["signed_latency_ms"].get("p50"),
                "signed_p99_ms": result["signed_latency_ms"].get("p99"),
                "events_per_s": result["window"]["events_per_s"],
                "worker_cpu_us": roles.get("worker", {}).get("cpu_us_per_event"),
                "store_cpu_us": roles.get("store", {}).get("cpu_us_per_event"),
                "other_cores": result["window"]["other_processes_cores_used"],
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="1000/1000,500/500",
                        help="comma-separated batch_interval_ms/sink_batch_ms pairs")  # fmt: skip
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--rate", type=float, default=4000.0, help="events/s offered")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    run([_setting(item) for item in args.settings.split(",")], args.tenants, args.rate,
        args.seconds, args.rounds)  # fmt: skip


if __name__ == "__main__":
    main()
