"""The producer SDK's CPU per event, bare and in envelopes: ``python -m benchmarks.sdk_cpu``.

Generated traffic (``--tenants`` tenants) is sent with
:class:`authtrail.producers.sdk.producer.AuditProducer` to a fresh local broker, once per mode:
``bare`` (``envelope_bytes=0``) and ``envelopes`` (256 KiB, the SDK's default). CPU is this
process's (validation, Avro encoding, packing and librdkafka's threads) from the first
:meth:`~authtrail.producers.sdk.producer.AuditProducer.send` until
:meth:`~authtrail.producers.sdk.producer.AuditProducer.close` returned with every event
acknowledged; the broker is another process. Best of ``--repeat`` runs per mode; the machine may be
shared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from authtrail.broker import LocalBroker
from authtrail.producers.sdk import AuditProducer
from authtrail.producers.sdk.envelope import DEFAULT_ENVELOPE_BYTES
from authtrail.producers.traffic import TrafficConfig, generate_events
from authtrail.topics import TopicSpec, ensure_topics

_MODES = {"bare": 0, "envelopes": DEFAULT_ENVELOPE_BYTES}  # envelope_bytes (the default)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _send(servers: str, topic: str, events: list[dict[str, Any]], envelope_bytes: int) -> float:
    """CPU µs per event of sending ``events`` until all are acknowledged."""
    started = _cpu_seconds()
    producer = AuditProducer(servers, topic, envelope_bytes=envelope_bytes)
    for event in events:
        producer.send(event)
    producer.close(120)
    cpu = _cpu_seconds() - started
    if producer.acknowledged != len(events):
        raise RuntimeError(f"{producer.acknowledged} of {len(events)} events acknowledged")
    return 1e6 * cpu / len(events)


def run(count: int, tenants: int, repeat: int) -> dict[str, Any]:
    config = TrafficConfig(tenants=tenants, users=20 * tenants,
                           start_us=time.time_ns() // 1000 - 3_600_000_000)  # fmt: skip
    events = list(itertools.islice(generate_events(config, 1), count))
    results: dict[str, list[float]] = {mode: [] for mode in _MODES}
    with tempfile.TemporaryDirectory(prefix="sdk-cpu-") as scratch:
        broker = LocalBroker(log_dir=Path(scratch)).start()
        try:
            for attempt in range(repeat):
                for mode, envelope_bytes in _MODES.items():
                    topic = f"events-{mode}-{attempt}"
                    ensure_topics(broker.bootstrap_servers, [TopicSpec(topic, 4)])
                    results[mode].append(
                        _send(broker.bootstrap_servers, topic, events, envelope_bytes)
                    )
        finally:
            broker.stop()
    return {
        "events": count,
        "tenants": tenants,
        "cpu_us_per_event": {mode: round(min(runs), 2) for mode, runs in results.items()},
        "runs": {mode: [round(value, 2) for value in runs] for mode, runs in results.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    json.dump(run(args.count, args.tenants, args.repeat), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
