"""The worker's Python core and the store path, each alone, side by side with the plain
baseline: ``python -m benchmarks.store_path``.

One workload (generated traffic, ``--tenants`` tenants, envelopes of ``--envelope``
events), measured in one run:

* **worker core**: :class:`authtrail.stream.worker.sequencing.SequencerWorker` driven directly (no
  Faust, no
  broker; outputs captured), CPU µs per event — what is left to Python per event.
* **authtrail store**: the captured chained batches and checkpoints, written to the local
  broker, stored by the real sink (``authtrail.sinks.service.build_sink``) into a fresh embedded
  store: CPU µs per row of this process (the sink, librdkafka and the engine's threads;
  the broker is another process), and rows/s.
* **plain store**: the same events, in the same envelopes, stored by the plain baseline
  (:mod:`benchmarks.plain`) through the same Avro container path: the floor of any
  pipeline that stores these events.

``authtrail ÷ plain`` of the store CPU is the store-side cost of integrity (tiles,
checkpoints, duplicate and fence checks). The machine may be shared: the load average is
reported with the results. JSON to ``--out`` (default
``benchmarks/results/store_path.json``), a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from authtrail.broker import LocalBroker
from authtrail.keys import write_key_pair
from authtrail.producers.traffic import TrafficConfig, generate_events
from authtrail.schemas import (
    AUTH_EVENT,
    CHAINED_BATCH,
    CHAINED_RECORD,
    CHAINED_REJECTION,
    CHECKPOINT,
    DEAD_LETTER,
    EVENT_ENVELOPE,
)
from authtrail.settings import Settings
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.service import build_sink
from authtrail.stream.core.note import Signer, generate_key_strings
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout_policy import PolicySet
from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG, codec, topic_specs
from authtrail.stream.worker.recovery import Recovery
from authtrail.stream.worker.sequencing import InputRecord, SequencerWorker
from authtrail.stream.worker.snapshotter import CHAINED, CHECKPOINTS
from authtrail.topics import ensure_topics
from benchmarks.machine import describe_machine
from benchmarks.plain import PLAIN_TABLE, PlainConsumer
from benchmarks.procs import REPOSITORY_ROOT, load_average


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Captured:
    """A publisher that keeps the chained and checkpoint messages (acknowledged at once)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, role: str, key: bytes | None, value: bytes, partition: int) -> None:
        if role in (CHAINED, CHECKPOINTS):
            self.messages.append((role, value))

    async def flush(self) -> None:
        return None

    def take_acknowledged(self) -> dict[tuple[str, int], tuple[int, int]]:
        return {}


def _envelopes(count: int, tenants: int, per_envelope: int) -> list[bytes]:
    start = time.time_ns() // 1000 - 3_600_000_000  # an hour ago: admitted as recent
    config = TrafficConfig(tenants=tenants, users=20 * tenants, start_us=start,
                           events_per_second=1000.0)  # fmt: skip
    events = codec(AUTH_EVENT)
    encoded = [
        events.encode(event) for event in itertools.islice(generate_events(config, 1), count)
    ]
    envelopes = codec(EVENT_ENVELOPE)
    return [
        envelopes.encode({"events": encoded[first : first + per_envelope]})
        for first in range(0, len(encoded), per_envelope)
    ]


def worker_core(
    envelopes: list[bytes], events: int
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """Sequence the envelopes with the real worker; its CPU per event and its outputs."""
    signer = Signer.parse(generate_key_strings("bench")[0])
    publisher = _Captured()
    worker = SequencerWorker(
        new_sequencer=lambda: Sequencer(signer, "bench", batch_size=1000, batch_interval=1),
        recover=lambda sequencer, partition, guard: Recovery(0, epoch=1),
        fetch=lambda partition, start, end: [], publisher=publisher,
        event_codec=codec(AUTH_EVENT), chained_codec=codec(CHAINED_RECORD),
        checkpoint_codec=codec(CHECKPOINT), dead_letter_codec=codec(DEAD_LETTER),
        rejection_codec=codec(CHAINED_REJECTION), events_topic="events",
        new_guard=lambda: Guard(PolicySet()), envelope_codec=codec(EVENT_ENVELOPE),
        batch_codec=codec(CHAINED_BATCH),
    )  # fmt: skip
    now = time.time_ns() // 1000

    async def run() -> None:
        for offset, value in enumerate(envelopes):
            await worker.process([InputRecord(0, offset, None, value, now)])
        await worker.close_open_batches()

    started = _cpu_seconds()
    asyncio.run(run())
    cpu = _cpu_seconds() - started
    if worker.counters.sequenced != events:
        raise RuntimeError(f"worker sequenced {worker.counters.sequenced} of {events}")
    return {"cpu_us_per_event": round(1e6 * cpu / events, 2),
            "chained_messages": sum(role == CHAINED for role, _ in publisher.messages),
            "checkpoints": worker.counters.checkpoints}, publisher.messages  # fmt: skip


def _store(run: Callable[[threading.Event], None], stored: Callable[[], int], rows: int,
           timeout: float) -> dict[str, Any]:  # fmt: skip
    """Run a store loop until it stored ``rows``; its CPU per row and rows/s."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,), daemon=True)
    started_cpu, started = _cpu_seconds(), time.monotonic()
    thread.start()
    while stored() < rows and time.monotonic() - started < timeout:
        time.sleep(0.02)
    wall = time.monotonic() - started
    stop.set()
    thread.join(60)
    # After the loop stopped: what it defers (the sink's tiles) is paid for here too.
    cpu = _cpu_seconds() - started_cpu
    if stored() < rows:
        raise RuntimeError(f"stored {stored()} of {rows} rows within {timeout} s")
    return {"cpu_us_per_row": round(1e6 * cpu / rows, 2), "rows_per_s": round(rows / wall)}


def run(count: int, tenants: int, per_envelope: int, timeout: float) -> dict[str, Any]:
    envelopes = _envelopes(count, tenants, per_envelope)
    worker, messages = worker_core(envelopes, count)
    with tempfile.TemporaryDirectory(prefix="store-path-") as scratch:
        root = Path(scratch)
        broker = LocalBroker(log_dir=root / "broker").start()
        try:
            settings = Settings(data_dir=root / "authtrail", partitions=1,
                                bootstrap_servers=broker.bootstrap_servers)  # fmt: skip
            ensure_topics(broker.bootstrap_servers, topic_specs(settings))
            write_key_pair(settings.keys_dir, "authtrail")
            producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20})
            topics = {CHAINED: settings.chained_topic, CHECKPOINTS: settings.checkpoints_topic}
            for role, value in messages:
                producer.produce(topics[role], value, None, 0)
            for value in envelopes:
                producer.produce(settings.events_topic, value, None, 0)
            if producer.flush(60):
                raise RuntimeError("the broker did not take the workload")
            with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
                sink = build_sink(settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
                authtrail = _store(sink.run, lambda: sink.counters.stored_records, count, timeout)
            with EmbeddedBackend(root / "plain") as backend:
                plain = PlainConsumer(
                    backend, bootstrap_servers=broker.bootstrap_servers,
                    topic=settings.events_topic, group_id="plain",
                    batch_rows=settings.sink_batch_rows,
                    batch_seconds=settings.sink_batch_ms / 1000,
                    consumer_config=SHORT_CONSUMER_CONFIG,
                )  # fmt: skip
                baseline = _store(plain.run, lambda: plain.stored, count, timeout)
                stored = backend.query_arrow(f"SELECT count() FROM {PLAIN_TABLE}").column(0)
                if stored[0].as_py() != count:
                    raise RuntimeError(f"plain stored {stored[0].as_py()} rows of {count}")
        finally:
            broker.stop()
    return {
        "machine": describe_machine(REPOSITORY_ROOT),
        "load_average": load_average(),
        "workload": {"events": count, "tenants": tenants, "events_per_envelope": per_envelope},
        "worker_core": worker,
        "authtrail_store": authtrail,
        "plain_store": baseline,
        "store_cpu_authtrail_over_plain": round(
            authtrail["cpu_us_per_row"] / baseline["cpu_us_per_row"], 2
        ),
    }


def markdown(result: dict[str, Any]) -> str:
    authtrail, plain = result["authtrail_store"], result["plain_store"]
    return "\n".join([
        "| | CPU µs per event/row | rows/s |",
        "|---|---|---|",
        f"| worker core (no Faust, no broker) | {result['worker_core']['cpu_us_per_event']} | |",
        f"| authtrail store (sink) | {authtrail['cpu_us_per_row']} | {authtrail['rows_per_s']} |",
        f"| plain store | {plain['cpu_us_per_row']} | {plain['rows_per_s']} |",
        f"| authtrail ÷ plain (store CPU) | {result['store_cpu_authtrail_over_plain']} | |",
        f"\nload average {result['load_average']}",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--envelope", type=int, default=500, help="events per envelope")
    parser.add_argument("--timeout", type=float, default=300.0)
    default_out = REPOSITORY_ROOT / "benchmarks" / "results" / "store_path.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    result = run(args.count, args.tenants, args.envelope, args.timeout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
