"""The worker's CPU per event without Faust or a broker, wired as the app wires it:
``python -m benchmarks.worker_core``.

:class:`~authtrail.stream.worker.sequencing.SequencerWorker` built as
:func:`authtrail.stream.worker.app.create_app` builds it, under the worker's GC thresholds —
4 partitions (so admission checks each tenant's partition), the privacy sealer of default
settings, retention statements checked, decision ids kept — and fed envelopes of
``--envelope`` events, each in its tenant's partition, a few messages per call like a Faust
take. Outputs are captured, not published. ``--paced RATE`` adds a live load: the events
the pipeline benchmark's live phases send, in 20 ms envelopes, with batches closed on the
product's interval of event time (~40 events a batch at 100 tenants, not 1 000), and the
detectors applying events once the allowed lateness has passed.

Prints CPU µs per event for each round (process CPU time, so other jobs on a shared
machine matter less than for wall time) and a SHA-256 of every chained message in order:
two commits that print the same digest wrote the same chained bytes. To compare commits,
run it alternately in two trees (``git archive <commit> | tar -x -C /tmp/base``, then
``cd /tmp/base && PYTHONPATH=. python -m benchmarks.worker_core``); the workload is
generated from a fixed seed and start time, so both see the same input.
(:mod:`benchmarks.store_path` times the same worker with one partition and no sealer.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import itertools
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from authtrail.privacy import new_sealer
from authtrail.producers.sdk.partitioning import tenant_partition
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
from authtrail.stream.core.note import Signer, generate_key_strings, make_keyring
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.signing_budget import SigningBudget
from authtrail.stream.detection.decisions import DECISION_ID_PREFIX
from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout_policy import PolicySet
from authtrail.stream.worker.app import GC_THRESHOLDS, codec
from authtrail.stream.worker.record_runs import MAX_RUN
from authtrail.stream.worker.recovery import Recovery
from authtrail.stream.worker.sequencing import InputRecord, SequencerWorker
from authtrail.stream.worker.snapshotter import CHAINED
from benchmarks.workload import EventFactory

PARTITIONS = 4
MESSAGES_PER_TAKE = 4  # envelopes per process() call: a Faust take of a busy partition set
START_MICROS = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z: the same events in every tree

Message = tuple[int, int, bytes]  # (partition, offset, value)
Take = list[Message]  # what one process() call gets
LINGER_US = 20_000  # the producer SDK's default linger (Settings.producer_linger_ms)


class Load(NamedTuple):
    """Takes to feed a worker, and which of them count."""

    takes: list[Take]
    events: int
    clocks: list[float] | None = None  # the sequencer's clock at each take (s); real if None
    warm_takes: int = 0  # the first takes, whose CPU is not counted
    warm_events: int = 0  # the events in them


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Captured:
    def __init__(self) -> None:
        self.chained = hashlib.sha256()

    def publish(self, role: str, key: bytes | None, value: bytes, partition: int) -> None:
        if role == CHAINED:
            self.chained.update(partition.to_bytes(4, "big") + len(value).to_bytes(4, "big"))
            self.chained.update(value)

    async def flush(self) -> None:
        return None

    def take_acknowledged(self) -> dict[tuple[str, int], tuple[int, int]]:
        return {}


def workload(count: int, tenants: int, per_envelope: int) -> Load:
    """A backlog: envelopes of ``per_envelope`` generated events (seed 1, from a fixed start),
    each in its tenant's partition, the partitions interleaved as a consumer of all four
    would see them, :data:`MESSAGES_PER_TAKE` a take."""
    # ``users`` is per tenant: 20 * tenants each made 10 000 tenants 2 000 000 000 users;
    # at most 200 000 in all, and as before up to the default 100 tenants (the golden test).
    users = min(20 * tenants, max(1, 200_000 // tenants))
    config = TrafficConfig(tenants=tenants, users=users,
                           start_us=START_MICROS, events_per_second=1000.0)  # fmt: skip
    events = codec(AUTH_EVENT)
    bodies: dict[int, list[bytes]] = {partition: [] for partition in range(PARTITIONS)}
    for event in itertools.islice(generate_events(config, 1), count):
        bodies[tenant_partition(event["tenant_id"], PARTITIONS)].append(events.encode(event))
    envelopes = codec(EVENT_ENVELOPE)
    per_partition = [
        [envelopes.encode({"events": values[first : first + per_envelope]})
         for first in range(0, len(values), per_envelope)]
        if per_envelope else values  # bare: a message per event
        for values in bodies.values()
    ]  # fmt: skip
    # The partitions' messages interleaved as a consumer of all four delivers them: one at a
    # time, or bare events in runs (stream/worker/record_runs.py), a take of
    # MESSAGES_PER_TAKE runs holding that many runs' records.
    run = 1 if per_envelope else MAX_RUN
    chunked = [
        [[(partition, first + at, value) for at, value in enumerate(values[first : first + run])]
         for first in range(0, len(values), run)]
        for partition, values in enumerate(per_partition)
    ]  # fmt: skip
    messages: list[Message] = [
        message
        for turn in itertools.zip_longest(*chunked)
        for chunk in turn
        if chunk is not None
        for message in chunk
    ]
    step = MESSAGES_PER_TAKE * run
    takes = [messages[first : first + step] for first in range(0, len(messages), step)]
    return Load(takes, count)


def paced_workload(seconds: float, tenants: int, rate: float, warm_seconds: float) -> Load:
    """A live load: ``rate`` events a second for ``seconds`` of event time, the events the
    pipeline benchmark's live phases send (:class:`benchmarks.workload.EventFactory`).

    Each partition's events of one producer linger (20 ms) are one envelope, each linger's
    envelopes one take, handed over at the linger's end: the sequencer's clock then, so
    batches close on their interval as they do live. The first ``warm_seconds`` are not
    counted: the detectors apply an event only once event time has passed it by their
    allowed lateness, so a worker's first seconds leave out that work.
    """
    factory = EventFactory(tenants, seed=1)
    events, envelopes = codec(AUTH_EVENT), codec(EVENT_ENVELOPE)
    windows: dict[int, dict[int, list[bytes]]] = {}
    count = round(seconds * rate)
    for index in range(count):
        offset_us = round(index * 1e6 / rate)
        event = factory.make(START_MICROS + offset_us)
        partition = tenant_partition(event["tenant_id"], PARTITIONS)
        windows.setdefault(offset_us // LINGER_US, {}).setdefault(partition, []).append(
            events.encode(event)
        )
    offsets = [0] * PARTITIONS
    takes: list[Take] = []
    clocks: list[float] = []
    warm_takes = warm_events = 0
    for window in sorted(windows):
        if window * LINGER_US < warm_seconds * 1e6:
            warm_takes += 1
            warm_events += sum(len(values) for values in windows[window].values())
        take: Take = []
        for partition, values in sorted(windows[window].items()):
            take.append((partition, offsets[partition], envelopes.encode({"events": values})))
            offsets[partition] += 1
        takes.append(take)
        clocks.append((START_MICROS + (window + 1) * LINGER_US) / 1e6)
    if warm_events >= count:
        raise ValueError(f"{seconds} s of load leave nothing after the {warm_seconds} s warm-up")
    return Load(takes, count, clocks, warm_takes, warm_events)


def new_worker(
    publisher: Any, scratch: Path, monotonic: Any = time.monotonic, batch_interval: float = 1.0
) -> SequencerWorker:
    """A worker wired as :func:`authtrail.stream.worker.app.create_app` wires it, publishing
    to ``publisher`` (its sealer's key store in ``scratch``)."""
    signer = Signer.parse(generate_key_strings("bench")[0])
    settings = Settings(data_dir=scratch, partitions=PARTITIONS)
    return SequencerWorker(
        new_sequencer=lambda: Sequencer(signer, "bench", batch_size=1000,
                                        batch_interval=batch_interval, monotonic=monotonic,
                                        remember_forever=DECISION_ID_PREFIX),
        recover=lambda sequencer, partition, guard: Recovery(0, epoch=1),
        fetch=lambda partition, start, end: [], publisher=publisher,
        event_codec=codec(AUTH_EVENT), chained_codec=codec(CHAINED_RECORD),
        checkpoint_codec=codec(CHECKPOINT), dead_letter_codec=codec(DEAD_LETTER),
        rejection_codec=codec(CHAINED_REJECTION), events_topic="events",
        new_guard=lambda: Guard(PolicySet()), partitions=PARTITIONS,
        envelope_codec=codec(EVENT_ENVELOPE), batch_codec=codec(CHAINED_BATCH),
        sealer=new_sealer(settings),
        retention=(make_keyring([signer.verifier_key()]), "bench"),
        signing=SigningBudget(settings.max_checkpoints_per_second),
    )  # fmt: skip


def run(load: Load, batch_interval: float = 1.0) -> dict[str, Any]:
    """Sequence ``load`` with a fresh worker; its CPU per counted event and output digest."""
    clock = [0.0]
    monotonic = time.monotonic if load.clocks is None else (lambda: clock[0])
    with tempfile.TemporaryDirectory(prefix="worker-core-") as scratch:
        publisher = _Captured()
        worker = new_worker(publisher, Path(scratch), monotonic, batch_interval)
        now = time.time_ns() // 1000
        started = [0.0]

        async def drive() -> None:
            for position, take in enumerate(load.takes):
                if position == load.warm_takes:
                    started[0] = _cpu_seconds()
                if load.clocks is not None:
                    clock[0] = load.clocks[position]
                await worker.process([InputRecord(partition, offset, None, value, now)
                                      for partition, offset, value in take])  # fmt: skip
            await worker.close_open_batches()

        asyncio.run(drive())
        cpu = _cpu_seconds() - started[0]
    if worker.counters.sequenced != load.events:
        raise RuntimeError(f"sequenced {worker.counters.sequenced} of {load.events} events")
    counted = load.events - load.warm_events
    return {"cpu_us_per_event": round(1e6 * cpu / counted, 2),
            "checkpoints": worker.counters.checkpoints,
            "chained_sha256": publisher.chained.hexdigest()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument(
        "--envelope", type=int, default=500, help="events per envelope; 0: bare messages"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--batch-interval", type=float, default=1.0,
        help="seconds; 0 closes every open batch after each take, as a drain of many "
        "tenants does (its chained SHA-256 then depends on the takes only)",
    )  # fmt: skip
    parser.add_argument(
        "--paced", type=float, default=0.0, metavar="RATE",
        help="also a live load of RATE events a second (the live phases' events, 20 ms "
        "envelopes, batches closed on the product's interval), alternating with the backlog",
    )  # fmt: skip
    parser.add_argument(
        "--paced-seconds", type=float, default=16.0,
        help="of the live load's event time; the first (the allowed lateness + 1 s) not counted",
    )  # fmt: skip
    args = parser.parse_args(argv)
    gc.set_threshold(*GC_THRESHOLDS)  # as the worker's main() sets them
    loads = {"backlog": (workload(args.count, args.tenants, args.envelope),
                         args.batch_interval or 1e-9)}  # the sequencer refuses 0  # fmt: skip
    if args.paced:
        warm = PolicySet().allowed_lateness_seconds + 1
        paced = paced_workload(args.paced_seconds, args.tenants, args.paced, warm)
        loads["paced"] = (paced, Settings().batch_interval_ms / 1000)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in loads}
    for _ in range(args.rounds):
        for name, (load, batch_interval) in loads.items():
            rounds[name].append(run(load, batch_interval))
    for name, results in rounds.items():
        digests = ",".join(sorted({r["chained_sha256"][:16] for r in results}))
        cpu = " ".join(str(r["cpu_us_per_event"]) for r in results)
        print(
            f"{name:8s} CPU µs/event: {cpu} | checkpoints: {results[0]['checkpoints']}"
            f" | chained sha256: {digests}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
