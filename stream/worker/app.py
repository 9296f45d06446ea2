"""The Faust app: wiring only. Built by :func:`create_app` from settings; no globals.

One agent reads the events topic in batches and hands them to
:class:`~authtrail.stream.worker.sequencing.SequencerWorker`; one timer closes batches that are due
by time. Outputs go through a librdkafka producer of their own
(:mod:`authtrail.stream.worker.publisher`), which publishes a whole batch per round trip; Faust's
producer serves Faust only. Partition revocation drops the state of partitions another worker now
owns; the next owner rebuilds it from Kafka (:mod:`authtrail.stream.worker.recovery`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

import faust
import mode.loop

from authtrail.metrics import (
    CountersCollector,
    LagCollector,
    MetricsServer,
    WorkerMetrics,
    new_registry,
)
from authtrail.privacy import new_sealer
from authtrail.schemas import (
    AUTH_EVENT,
    CHAINED_RECORD,
    CHAINED_REJECTION,
    CHECKPOINT,
    CLAIM,
    DEAD_LETTER,
    EVENT_ENVELOPE,
    SNAPSHOT,
    load_schema,
    previous_versions,
)
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.settings import Settings
from authtrail.stream.core import native_hashes
from authtrail.stream.core.canonical import speedups_built
from authtrail.stream.core.note import Signer, VerifierKey, make_keyring
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.signing_budget import SigningBudget
from authtrail.stream.detection.decisions import DECISION_ID_PREFIX
from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout_policy import PolicySet
from authtrail.stream.worker import recovery
from authtrail.stream.worker.forked import can_fork
from authtrail.stream.worker.publisher import KafkaPublisher
from authtrail.stream.worker.record_runs import run_records, use_record_runs
from authtrail.stream.worker.sequencing import DEAD_LETTER as DEAD_LETTER_ROLE
from authtrail.stream.worker.sequencing import (
    EVENTS,
    LOCKOUTS,
    SNAPSHOTS,
    InputRecord,
    SequencerWorker,
)
from authtrail.stream.worker.snapshotter import CHAINED, CHECKPOINTS, Snapshotter
from authtrail.topics import TopicSpec, transient_topic_config

TAKE_MAX = 2000
TAKE_WITHIN = 0.05  # seconds: batch latency bound when traffic is light

# Measured on the local tansu broker (docs: ../shared/ENVIRONMENT.md): group joins take
# ~30 s with Faust's defaults and ~3 s with these. Real clusters keep the defaults.
SHORT_GROUP_TIMEOUTS: dict[str, Any] = {
    "broker_session_timeout": 5,
    "broker_rebalance_timeout": 5,
    "broker_heartbeat_interval": 1,
}
_LOG = logging.getLogger(__name__)
# The local tansu broker holds a fetch for its whole maximum wait even when records arrive
# meanwhile (measured: a record waited 365 ms at the median with 1 500 ms, 3 ms with 100),
# so every consumer hop cost up to that wait: Faust's is 1 500 ms, librdkafka's 500.
# Kafka answers a fetch as soon as data arrives; real clusters keep the defaults.
LOCAL_FETCH_WAIT_MS = 100
SHORT_CONSUMER_CONFIG = {
    "session.timeout.ms": 6000,
    "max.poll.interval.ms": 7000,
    "fetch.wait.max.ms": LOCAL_FETCH_WAIT_MS,
}


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline uses, all with the same partition count (co-partitioned).

    The chained-records and checkpoints topics are the sequencer's durable state
    (docs/PIPELINE.md): recovery reads them from the start, so they are kept forever, and
    so is the newest claim and snapshot of the compacted snapshots topic. The others —
    input, dead letters, lockout decisions — are read once (by the worker, replay tools,
    enforcement services) and hold clear text, so they keep ``topic_retention_ms``
    (:func:`~authtrail.topics.transient_topic_config`).
    """
    forever = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
    transient = transient_topic_config(settings.topic_retention_ms)
    specs = [
        (settings.events_topic, transient),
        (settings.chained_topic, forever),
        (settings.checkpoints_topic, forever),
        # Compacted: the newest claim (which fences stale snapshots) and the newest
        # snapshot survive, so recovery reads a small partition whatever the history.
        (settings.snapshots_topic_name, {"cleanup.policy": "compact", "retention.ms": "-1"}),
        (settings.dead_letter_topic, transient),
        (settings.lockouts_topic, transient),
    ]
    return [
        TopicSpec(name, settings.partitions, settings.replication_factor, config=config)
        for name, config in specs
    ]


def codec(schema_name: str) -> SingleObjectCodec:
    """The codec of ``schema_name``, also accepting data its earlier versions wrote."""
    return SingleObjectCodec(load_schema(schema_name), previous_versions(schema_name))


def create_app(
    settings: Settings,
    signer: Signer,
    *,
    short_timeouts: bool = False,
    policies: PolicySet | None = None,
    handover: Signer | None = None,
    trusted: Sequence[VerifierKey] = (),
) -> faust.App:
    """Build the sequencer app. Requires ``settings.bootstrap_servers``.

    ``policies``: brute-force detection policies (None: Keycloak's defaults).
    ``handover``: the key being rotated out, co-signing each tenant's hand-over
    checkpoint (:class:`~authtrail.stream.core.sequencer.Sequencer`). Recovery trusts both keys and
    ``trusted`` (the keyring of keys that signed before).
    """
    if not settings.bootstrap_servers:
        raise ValueError("the sequencer needs bootstrap servers")
    if not speedups_built():
        _LOG.warning(
            "authtrail._speedups is not built (no C compiler at install): the worker "
            "decodes, builds leaves and writes Avro in pure Python, ~1.5x the CPU per event "
            "(docs/PERFORMANCE.md)"
        )
    if not native_hashes.BUILT:
        _LOG.warning(
            "authtrail._hashing is not built (no OpenSSL headers, libssl-dev, at install): "
            "the worker's per-event SHA-256 go through hashlib, ~10 % more CPU per event"
        )
    brokers = [f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")]
    app = faust.App(
        f"{settings.consumer_group}-sequencer",
        broker=brokers,
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.partitions,
        # exactly_once needs Kafka transactions; correctness here does not (worker.py).
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        web_enabled=False,
        store="memory://",
        autodiscover=False,
        topic_disable_leader=True,
        **(SHORT_GROUP_TIMEOUTS if short_timeouts else {}),
    )
    raw: dict[str, Any] = {
        "key_serializer": "raw",
        "value_serializer": "raw",
        "partitions": settings.partitions,
    }
    events = app.topic(settings.events_topic, **raw)
    use_record_runs(app, [settings.events_topic])  # Faust's cost per run, not per record
    publisher = KafkaPublisher(
        settings.bootstrap_servers,
        {
            CHAINED: settings.chained_topic,
            CHECKPOINTS: settings.checkpoints_topic,
            DEAD_LETTER_ROLE: settings.dead_letter_topic,
            EVENTS: settings.events_topic,
            LOCKOUTS: settings.lockouts_topic,
            SNAPSHOTS: settings.snapshots_topic_name,
        },
        linger_ms=settings.producer_linger_ms,
        tracked=(CHAINED, CHECKPOINTS, EVENTS),  # where snapshots stand; decisions read back
    )

    own = [signer] + ([handover] if handover is not None else [])
    keyring = make_keyring([*trusted, *(key.verifier_key() for key in own)])
    chained_codec, checkpoint_codec = codec(CHAINED_RECORD), codec(CHECKPOINT)

    writer = f"{socket.gethostname()}:{os.getpid()}"
    claim_codec, rejection_codec = codec(CLAIM), codec(CHAINED_REJECTION)

    topics = recovery.Topics(
        chained=settings.chained_topic,
        checkpoints=settings.checkpoints_topic,
        snapshots=settings.snapshots_topic_name,
        chained_codec=chained_codec,
        checkpoint_codec=checkpoint_codec,
        claim_codec=claim_codec,
        snapshot_codec=codec(SNAPSHOT),
        rejection_codec=rejection_codec,
    )

    def recover(sequencer: Sequencer, partition: int, guard: Guard | None) -> recovery.Recovery:
        return recovery.recover(
            sequencer,
            bootstrap_servers=settings.bootstrap_servers or "",
            partition=partition,
            topics=topics,
            keyring=keyring,
            log_origin=settings.log_origin,
            writer=writer,
            guard=guard,
        )

    def fetch(partition: int, start: int | None, end: int) -> list[InputRecord]:
        return [
            InputRecord(partition, offset, key, value, timestamp)
            for offset, key, value, timestamp in recovery.read_messages(
                settings.bootstrap_servers or "",
                settings.events_topic,
                partition,
                start=start,
                end=end,
            )
        ]

    worker = SequencerWorker(
        new_sequencer=lambda: Sequencer(
            signer,
            settings.log_origin,
            batch_size=settings.batch_size,
            batch_interval=settings.batch_interval_ms / 1000,
            remember_forever=DECISION_ID_PREFIX,
            handover=handover,
        ),
        recover=recover,
        fetch=fetch,
        publisher=publisher,
        signing=SigningBudget(settings.max_checkpoints_per_second),
        event_codec=codec(AUTH_EVENT),
        chained_codec=chained_codec,
        checkpoint_codec=checkpoint_codec,
        dead_letter_codec=codec(DEAD_LETTER),
        rejection_codec=rejection_codec,
        events_topic=settings.events_topic,
        new_guard=lambda: Guard(policies or PolicySet()),
        partitions=settings.partitions,
        snapshotter=Snapshotter(settings.snapshot_every, topics.snapshot_codec),
        snapshots_forked=can_fork(),
        envelope_codec=codec(EVENT_ENVELOPE),
        batch_codec=topics.batch_codec,
        batch_bytes=settings.chained_batch_bytes,
        sealer=new_sealer(settings),
        retention=(keyring, settings.log_origin),
    )

    @app.agent(events, name="sequencer")
    async def sequence(stream: Any) -> None:
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN):
            await worker.process(
                [_input_record(record) for event in batch for record in run_records(event.message)]
            )

    @app.timer(interval=max(settings.batch_interval_ms / 4000, 0.05))  # type: ignore[untyped-decorator]
    async def close_due_batches() -> None:
        await worker.close_due_batches()

    @app.task  # type: ignore[untyped-decorator]
    async def report_event_loop() -> None:
        loop = type(asyncio.get_running_loop())
        _LOG.info("event loop: %s.%s", loop.__module__, loop.__qualname__)

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def report_counters() -> None:
        _LOG.info("counters: %s", worker.counters)

    if short_timeouts:
        _shorten_fetch_wait(app, LOCAL_FETCH_WAIT_MS)

    held: set[int] = set()  # input partitions assigned and not revoked since
    # Recover each assigned partition at once, all of them side by side: recovery is
    # broker round trips (~1 s a partition on the local broker, mostly new clients'
    # connections), which one after another at each partition's first input stalled the
    # worker that long per partition. During a rotation this also hands logs without
    # traffic over to the new key now (stream/core/handover.py), not at their next event.
    adoptions: set[asyncio.Task[None]] = set()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        owned = {tp.partition for tp in assigned if tp.topic == settings.events_topic}
        held.update(owned)
        # Not inside the rebalance; a partition revoked meanwhile is skipped.
        task = asyncio.ensure_future(worker.adopt(sorted(owned), held.__contains__))
        adoptions.add(task)
        task.add_done_callback(_log_failure)
        task.add_done_callback(adoptions.discard)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        lost = {tp.partition for tp in revoked if tp.topic == settings.events_topic}
        held.difference_update(lost)
        await worker.forget(lost)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(sender: Any, **kwargs: Any) -> None:
        await worker.close_open_batches()
        publisher.close()

    app.authtrail_worker = worker  # type: ignore[attr-defined]  # for status and tests
    return app


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _LOG.error("recovering assigned partitions failed: %r", task.exception())


def _shorten_fetch_wait(app: faust.App, wait_ms: int) -> None:
    """Make the aiokafka consumer's fetches wait at most ``wait_ms`` for data.

    Faust creates it with ``fetch_max_wait_ms=1500`` and no setting to change that, so
    the value is set on its fetcher once the consumer runs (a private aiokafka attribute:
    if a release renames it, a warning says so and only latency on the local broker
    suffers; tests/integration/test_pipeline.py checks the log line).
    """

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def shorten(sender: Any, assigned: Any, **kwargs: Any) -> None:
        consumer = getattr(getattr(app.consumer, "_thread", None), "_consumer", None)
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms"):
            if fetcher._fetch_max_wait_ms != wait_ms:
                fetcher._fetch_max_wait_ms = wait_ms
                _LOG.info("consumer fetch wait shortened to %d ms (local broker)", wait_ms)
        else:
            _LOG.warning("could not shorten the consumer's fetch wait (aiokafka changed?)")


#: CPython collects its youngest generation every 700 net allocations by default. The
#: worker holds a large, long-lived, changing state (the guards' accounts and the events
#: they hold for the allowed lateness: ~10^5 objects at 15 000 events/s), so collections
#: kept walking it: with the defaults they took 4.1 of a live run's ~45 CPU seconds (full
#: ones ~0.2 s each, stalling the stream), with these 0.9 (docs/PERFORMANCE.md). Cycles
#: that die young are still collected within 50 000 allocations.
GC_THRESHOLDS = (50_000, 20, 20)


def _use_uvloop() -> None:
    """Run Faust on uvloop when it is installed (pyproject installs it except on Windows).

    Much of Faust's cost per message is asyncio task and future churn, which uvloop does
    in C: ~10 % less worker CPU per good event, measured A/B (docs/PERFORMANCE.md). Must
    run before anything creates an event loop.
    """
    try:
        import uvloop  # noqa: F401  # only whether it is there; mode installs its policy
    except ImportError:
        _LOG.warning("uvloop is not installed; the worker runs on asyncio's default loop")
        return
    mode.loop.use("uvloop")


def _input_record(record: Any) -> InputRecord:
    """``record``: an aiokafka ``ConsumerRecord`` (its timestamp in milliseconds)."""
    timestamp = record.timestamp
    return InputRecord(
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value or b"",  # a tombstone is bad input, rejected like any other
        timestamp_micros=timestamp * 1000 if timestamp else None,
    )


def run_worker(
    settings: Settings,
    signer: Signer,
    *,
    short_timeouts: bool = False,
    policies: PolicySet | None = None,
    handover: Signer | None = None,
    trusted: Sequence[VerifierKey] = (),
) -> None:
    """Run the sequencer in this process until signalled (SIGTERM/SIGINT stop it)."""
    _use_uvloop()
    gc.set_threshold(*GC_THRESHOLDS)
    app = create_app(
        settings, signer, short_timeouts=short_timeouts, policies=policies,
        handover=handover, trusted=trusted,
    )  # fmt: skip
    metrics = None
    if settings.worker_metrics_port:
        worker = app.authtrail_worker  # type: ignore[attr-defined]
        group = f"{settings.consumer_group}-sequencer"
        registry = new_registry(
            CountersCollector(
                "authtrail_worker", worker.counters, {"rejected": worker.rejected_by_kind}
            ),
            LagCollector(settings.bootstrap_servers or "", {group: [settings.events_topic]}),
        )
        worker.observer = WorkerMetrics(registry)
        metrics = MetricsServer(settings.worker_metrics_port, registry)
    try:
        faust.Worker(app, loglevel="info").execute_from_commandline()
    finally:
        if metrics is not None:
            metrics.close()
