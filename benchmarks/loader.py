"""The benchmark producer: ``python -m benchmarks.loader`` sends events with the SDK.

Runs in its own process so its CPU is measured apart from the pipeline's. Two modes:

* ``--rate 0``: make ``--count`` events first, then send them as fast as
  :class:`authtrail.producers.sdk.producer.AuditProducer` takes them and wait for every
  acknowledgement. The send loop's wall and CPU time are the SDK's cost (events/s per core).
* ``--rate R --seconds D``: send at R events/s for D seconds, each event stamped with
  ``occurred_at`` = the moment it is sent, so the store can measure event-to-queryable
  latency.

Writes one JSON object to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authtrail.producers.sdk import AuditProducer
from benchmarks.workload import EventFactory

_TICK = 0.002  # seconds between pacing checks: fine enough for 1 % rate accuracy


def send_unpaced(producer: AuditProducer, factory: EventFactory, count: int) -> dict[str, Any]:
    events = factory.batch(count)
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    started_us = time.time_ns() // 1000
    for event in events:
        producer.send(event)
    sent_wall, sent_cpu = time.perf_counter(), time.process_time()
    producer.flush(120)
    return {
        "mode": "unpaced",
        "start_us": started_us,
        "send_seconds": sent_wall - started_wall,
        "send_cpu_seconds": sent_cpu - started_cpu,
        "seconds": time.perf_counter() - started_wall,
        "cpu_seconds": time.process_time() - started_cpu,
    }


def pace(rate: float, seconds: float, send_one: Callable[[], None]) -> dict[str, Any]:
    """Call ``send_one`` ``rate`` times a second for ``seconds``; the schedule it kept.

    Sends are spread evenly: each tick sends what is due by then, so a slow send shows
    up as backlog (``max_backlog_events``) and as an achieved rate below ``rate``. The
    schedule ends after ``seconds`` even when the sender is behind (``sent`` < ``scheduled``):
    an offered rate no sender here can reach must not turn a 30 s phase into an hour.
    """
    started_wall = time.perf_counter()
    started_us = time.time_ns() // 1000
    sent = 0
    total = int(rate * seconds)
    behind_max = 0
    while sent < total:
        elapsed = time.perf_counter() - started_wall
        if elapsed >= seconds:
            break
        due = min(total, int(rate * elapsed) + 1)
        behind_max = max(behind_max, due - sent)
        while sent < due:
            send_one()
            sent += 1
        time.sleep(_TICK)
    sent_wall = time.perf_counter()
    return {
        "mode": "paced",
        "start_us": started_us,
        "offered_rate": rate,
        "scheduled": total,  # the loader's result says how many were sent
        "achieved_rate": sent / max(sent_wall - started_wall, 1e-9),
        "max_backlog_events": behind_max,  # how far the sender fell behind its schedule
        "send_seconds": sent_wall - started_wall,
    }


def send_paced(
    producer: AuditProducer, factory: EventFactory, rate: float, seconds: float
) -> dict[str, Any]:
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    result = pace(rate, seconds, lambda: producer.send(factory.make()))
    producer.flush(120)
    result["seconds"] = time.perf_counter() - started_wall
    result["cpu_seconds"] = time.process_time() - started_cpu
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loader")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0: unpaced")
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--envelope-bytes", type=int, default=0, help="envelopes of at most this size; 0: bare"
    )
    args = parser.parse_args(argv)
    factory = EventFactory(args.tenants, args.seed)
    with AuditProducer(
        args.bootstrap_servers,
        args.topic,
        config={"queue.buffering.max.messages": 1_000_000},
        envelope_bytes=args.envelope_bytes,
    ) as producer:
        if args.rate > 0:
            result = send_paced(producer, factory, args.rate, args.seconds)
        else:
            result = send_unpaced(producer, factory, args.count)
        result.update(
            sent=producer.sent,
            compression=producer.compression,
            tenants=args.tenants,
        )
    result["acknowledged"] = producer.acknowledged
    result["failed"] = producer.failed
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
