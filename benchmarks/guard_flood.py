"""The lockout guard under a password-guessing flood against one account:
``python -m benchmarks.guard_flood``.

The guard (stream/detection/guard.py) holds each account's events for the allowed lateness
before applying them in event-time order, so an account that receives thousands of
failures a second holds thousands of events and ids. Its cost per event must not grow
with that number, or an attacker who floods one account slows the worker for every
tenant. Prints the guard's CPU µs per event (process CPU time) for ordinary traffic (the
benchmark events of 1 and 100 tenants), for one account flooded and for one address
spraying 20 000 accounts (what the spraying detector holds per address), in the same run,
and the ratio flood ÷ ordinary. To compare commits, run it in both trees
(``git archive <commit> | tar -x -C /tmp/base``, then
``cd /tmp/base && PYTHONPATH=. python -m benchmarks.guard_flood``).
"""

from __future__ import annotations

import argparse
import gc
import time
import uuid
from typing import Any

from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout_policy import PolicySet
from authtrail.stream.worker.app import GC_THRESHOLDS  # the worker's
from benchmarks.workload import EventFactory

START_MICROS = 1_796_000_000_000_000


def _cpu_per_event(events: list[dict[str, Any]]) -> float:
    guard = Guard(PolicySet())  # default policies: allowed lateness 5 s
    started = time.process_time()
    for event in events:
        guard.observe(event)
    return 1e6 * (time.process_time() - started) / len(events)


def ordinary(count: int, tenants: int) -> list[dict[str, Any]]:
    """Benchmark events of ``tenants`` tenants, 59 µs apart (~17 000 a second)."""
    factory = EventFactory(tenants, 3)
    return [factory.make(START_MICROS + index * 59) for index in range(count)]


def flood(count: int, spacing_us: int, accounts: int = 1) -> list[dict[str, Any]]:
    """``count`` failed logins from one address, ``spacing_us`` apart, against one account
    or (spraying) ``accounts`` in turn."""
    return [
        {"tenant_id": "acme", "event_id": str(uuid.UUID(int=index)), "service": "idp",
         "event_type": "LOGIN_FAILED", "outcome": "FAILURE",
         "user_name": f"user{index % accounts}" if accounts > 1 else "victim",
         "client_ip": "203.0.113.9", "occurred_at": START_MICROS + index * spacing_us}
        for index in range(count)
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60_000, help="the flood's failures")
    parser.add_argument(
        "--ordinary", type=int, default=300_000,
        help="ordinary events: 300 000 span 18 s of event time, well past the lateness",
    )  # fmt: skip
    parser.add_argument(
        "--spacing-us", type=int, default=200,
        help="between the flood's failures: 200 µs is 5 000 a second, 25 000 in 5 s of lateness",
    )  # fmt: skip
    args = parser.parse_args(argv)
    gc.set_threshold(*GC_THRESHOLDS)
    rows = {
        "ordinary, 1 tenant": _cpu_per_event(ordinary(args.ordinary, 1)),
        "ordinary, 100 tenants": _cpu_per_event(ordinary(args.ordinary, 100)),
        "one account flooded": _cpu_per_event(flood(args.count, args.spacing_us)),
        "one address spraying": _cpu_per_event(flood(args.count, args.spacing_us, 20_000)),
    }
    for name, micros in rows.items():
        print(f"{name:24s} {micros:8.2f} µs/event")
    ratio = rows["one account flooded"] / rows["ordinary, 100 tenants"]
    print(f"flood ÷ ordinary (100 tenants): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
