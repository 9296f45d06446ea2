"""The sequencer agent's adapter: Kafka records in, chained records and checkpoints out.

Decisions are the pure :class:`~authtrail.stream.core.sequencer.Sequencer`'s; this module decodes,
routes and publishes. Three rules make it correct under at-least-once delivery
(docs/PIPELINE.md):

1. Outputs of input partition ``p`` go to partition ``p`` of each output topic, so one
   partition's state is rebuilt from the same partition numbers
   (:mod:`authtrail.stream.worker.recovery`).
2. A batch of input events is published and *acknowledged* before :meth:`process`
   returns, so before the next is read and before its input offsets can be committed.
   Any publish failure stops the process: the in-memory state may then be ahead of
   Kafka, and only a restart (which recovers from Kafka) is safe.
3. One lock serialises the agent and the batch-closing timer, so a checkpoint is only
   ever published after the records it covers were acknowledged.

An input message is one bare event or an envelope of many (schemas/event_envelope.avsc):
each event of an envelope is handled on its own, in index order, at position
``(offset, index)`` (stream/core/sequencer.py), so a bad one is rejected alone and a restart
in the middle of an envelope resumes right after the last event whose output was stored.

Chained records go out in batches (schemas/chained_batch.avsc,
:mod:`authtrail.stream.worker.chained_batch`): one message per partition and step, cut at a size
bound and a month boundary, and always before any other message of that partition of the chained
topic (a rejection), so the topic's order is the order of sequencing. Messages are enqueued without
waiting (:class:`Publisher`) and acknowledged once per step: awaiting each record cost ~750 µs of
CPU per event (docs/PERFORMANCE.md). The publisher keeps each partition's messages in the
order they were enqueued.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol

from authtrail.errors import (
    ConfigurationError,
    FormatError,
    InvalidArgumentError,
    UnknownSchemaError,
)
from authtrail.schemas.codec import SINGLE_OBJECT_MARKER, Codec, SingleObjectCodec
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.chain import ChainLink
from authtrail.stream.core.handover import handover_event, handover_rejection
from authtrail.stream.core.note import Keyring
from authtrail.stream.core.rejection import is_rejection_tenant, rejection_leaf, rejection_tenant
from authtrail.stream.core.retention import (
    RetentionDamage,
    check_retention_event,
    is_retention_event,
    retention_rejection,
)
from authtrail.stream.core.sequencer import CONFLICT, DUPLICATE, Sequencer, SignedCheckpoint
from authtrail.stream.core.signing_budget import SigningBudget
from authtrail.stream.detection.guard import Guard
from authtrail.stream.worker.admission import (
    INVALID_EVENT,
    OVERSIZED,
    Limits,
    RejectedEvent,
    check_event,
    usual_admission,
)
from authtrail.stream.worker.chained_batch import DEFAULT_BATCH_BYTES, BatchBuilder
from authtrail.stream.worker.decision_copies import DecisionCopies
from authtrail.stream.worker.forked import ChildFailed, ForkedJob
from authtrail.stream.worker.log_limit import RateLimitedLog
from authtrail.stream.worker.recovery import Recovery, snapshot_part_key
from authtrail.stream.worker.shredding import Sealer
from authtrail.stream.worker.snapshotter import CHAINED, CHECKPOINTS, Snapshotter
from authtrail.stream.worker.usual_pass import (
    DECIDED,
    STOPPED,
    UNSPLICED,
    usual_pass,
)

if TYPE_CHECKING:
    from authtrail._speedups import UsualPass

try:  # the chained record body in C (authtrail/_speedups.c): None leaves it to the codec
    from authtrail._speedups import chained_body as _native_chained_body
except ImportError:  # pragma: no cover - a build without a C compiler

    def _native_chained_body(
        value: bytes, header: bytes, link: tuple[int, bytes, bytes, bytes], partition: int,
        offset: int, epoch: int, index: int | None, /,
    ) -> bytes | None:  # fmt: skip
        return None


_LOG = logging.getLogger(__name__)

DEAD_LETTER, SNAPSHOTS = "dead_letter", "snapshots"
# Seconds between direct reads of skipped input that came back short (_in_order): a batch
# the broker is still writing is readable within milliseconds.
_REREAD_PAUSES = (0.05, 0.2, 0.5, 1.0)
EVENTS, LOCKOUTS = "events", "lockouts"  # decision events: back into the stream, and out


class Publisher(Protocol):
    """Where the worker's outputs go (:class:`authtrail.stream.worker.publisher.KafkaPublisher` in
    the app).

    :meth:`publish` enqueues and never waits; :meth:`flush` waits until everything
    enqueued so far is acknowledged. Records of one partition must be stored in the order
    they were published, each exactly once (an idempotent producer).
    """

    def publish(self, role: str, key: bytes | None, value: bytes, partition: int) -> None:
        """Enqueue ``value`` for partition ``partition`` of the topic of ``role``."""

    async def flush(self) -> None:
        """Wait for every enqueued record; raise if any was not acknowledged."""

    def take_acknowledged(self) -> dict[tuple[str, int], tuple[int, int]]:
        """``(role, partition) -> (first, last)`` offsets of chained records and
        checkpoints acknowledged since the previous call."""


class Observer(Protocol):
    """Metrics hooks (authtrail/metrics.py :class:`WorkerMetrics`); None: not observed."""

    def sequenced(self, partition: int, tenant_id: str, occurred_at_micros: list[int]) -> None:
        """Events of ``tenant_id`` got their seq in one step (called once per step)."""

    def signed(self, partition: int, tenant_id: str, batch_records: int) -> None: ...

    def forget(self, partitions: Iterable[int]) -> None: ...


#: Rejection kind of an event carrying a retention statement no trusted key signed.
FORGED_RETENTION_KIND = "forged_retention"


@dataclass
class Counters:
    sequenced: int = 0
    duplicates: int = 0
    rejected: int = 0
    checkpoints: int = 0
    decisions: int = 0
    snapshots: int = 0
    # Input offsets below one the consumer delivered that no direct read returned
    # (SequencerWorker._in_order): never sequenced, so 0 unless the topic has holes.
    unread_input: int = 0


@dataclass(frozen=True)
class InputRecord:
    """One consumed input message, reduced to what the sequencer needs."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_micros: int | None = None


class _BareRun(NamedTuple):
    """Bare records at consecutive offsets of one partition, with the C loop's lists."""

    records: Sequence[InputRecord]
    offsets: list[int]
    times: list[int | None]


class SequencerWorker:
    """Holds one :class:`Sequencer` per owned input partition and publishes its output."""

    def __init__(
        self,
        *,
        new_sequencer: Callable[[], Sequencer],
        recover: Callable[[Sequencer, int, Guard | None], Recovery],
        fetch: Callable[[int, int | None, int], list[InputRecord]],
        publisher: Publisher,
        event_codec: Codec,
        chained_codec: SingleObjectCodec,
        checkpoint_codec: Codec,
        dead_letter_codec: SingleObjectCodec,
        rejection_codec: SingleObjectCodec,
        events_topic: str,
        new_guard: Callable[[], Guard] | None = None,
        limits: Limits | None = None,
        partitions: int | None = None,
        snapshotter: Snapshotter | None = None,
        envelope_codec: SingleObjectCodec | None = None,
        batch_codec: SingleObjectCodec,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        sealer: Sealer | None = None,
        retention: tuple[Keyring, str] | None = None,
        signing: SigningBudget | None = None,
        snapshots_forked: bool = False,
    ) -> None:
        # Snapshots encoded in a forked copy of the process, beside the loop
        # (stream/worker/forked.py); else on the loop, which waits for them.
        self._snapshots_forked = snapshots_forked
        self._snapshot_job: asyncio.Task[None] | None = None
        # Caps checkpoints of batches closed by their interval (None: no cap).
        self._signing = signing or SigningBudget(0)
        self._next_first = 0  # the partition whose due batches close first next time
        # (keyring, log origin): retention statements must verify before they are chained
        # (stream/core/retention.py); None: not checked.
        self._retention = retention
        self._sealer = sealer  # None: events are chained as they arrive (docs/PRIVACY.md)
        self._snapshotter = snapshotter or Snapshotter(0, None)
        self._limits = limits or Limits()
        self._admits_usual = usual_admission(self._limits)
        self._partitions = partitions  # None: do not check tenant -> partition
        self._new_sequencer = new_sequencer
        self._new_guard = new_guard
        self._guards: dict[int, Guard] = {}
        self._epochs: dict[int, int] = {}  # writer epoch claimed per partition (fencing)
        # Partitions whose sequencer still keeps decision ids beyond its window
        # (decision_copies.py): needs the publisher to track the events role.
        self._decision_copies = DecisionCopies(EVENTS)
        self._recover = recover
        self._fetch = fetch
        self._publisher = publisher
        self._publish = publisher.publish
        self._event_codec = event_codec
        self._chained_codec = chained_codec
        # Splice the input's Avro body into the chained record instead of re-encoding the
        # decoded event (~45 µs of ~150 per event): possible when the chained record's
        # first field is exactly the event codec's schema.
        self._splice: tuple[SingleObjectCodec, SingleObjectCodec] | None = None
        self._event_header = b""  # the events' single-object header, when spliced
        if (
            isinstance(event_codec, SingleObjectCodec)
            and isinstance(chained_codec, SingleObjectCodec)
            and chained_codec.first_field_fingerprint == event_codec.reader_fingerprint
        ):
            self._splice = (event_codec, chained_codec)
            self._event_header = SINGLE_OBJECT_MARKER + event_codec.reader_fingerprint
        # None: envelopes are not unpacked (their fingerprint is then an unknown schema).
        self._envelope_codec = envelope_codec
        self._envelope_header = (
            SINGLE_OBJECT_MARKER + envelope_codec.reader_fingerprint if envelope_codec else None
        )
        self._batch_format = (batch_codec, chained_codec.reader_fingerprint, batch_bytes)
        self._batches: dict[int, BatchBuilder] = {}  # per partition: the open batch
        self._checkpoint_codec = checkpoint_codec
        self._dead_letter_codec = dead_letter_codec
        self._rejection_codec = rejection_codec
        self._events_topic = events_topic
        self._sequencers: dict[int, Sequencer] = {}
        self._next_offset: dict[int, int | None] = {}  # None: from the partition's start
        self._lock = asyncio.Lock()
        self.counters = Counters()
        self.rejected_by_kind: collections.Counter[str] = collections.Counter()
        self.observer: Observer | None = None
        # occurred_at of the events sequenced this step, per partition and tenant, for
        # the observer: told once per step, not per event.
        self._observed: dict[int, dict[str, list[int]]] = {}
        # The usual events of an envelope in one C loop (usual_pass.py); None: one at a
        # time.
        self._usual = usual_pass(event_codec, self._splice is not None, self._limits, sealer)
        # Every rejection is stored whole (dead letters, `rejected`); a flood must not
        # turn into a flood of log lines.
        self._rejections_log = RateLimitedLog(_LOG)

    async def forget(self, partitions: Iterable[int]) -> None:
        """Drop state of partitions this worker no longer owns (rebalance)."""
        async with self._lock:
            partitions = list(partitions)
            if self.observer is not None:
                self.observer.forget(partitions)
            for partition in partitions:
                self._sequencers.pop(partition, None)
                self._guards.pop(partition, None)
                self._epochs.pop(partition, None)
                self._decision_copies.forget(partition)
                self._next_offset.pop(partition, None)
                self._batches.pop(partition, None)  # empty: every step ends with a flush
                self._snapshotter.forget(partition)

    async def process(self, records: Sequence[InputRecord]) -> None:
        """Sequence ``records`` (in partition order) and wait until every output is stored."""
        async with self._lock:
            closed: list[tuple[int, SignedCheckpoint]] = []
            at, count = 0, len(records)
            while at < count:
                record = records[at]
                sequencer = self._sequencers.get(record.partition)
                if sequencer is None:
                    sequencer = await self._recovered_sequencer(record.partition)
                expected = self._next_offset.get(record.partition)
                if expected is None or record.offset != expected:
                    pending = await self._in_order(record, expected)
                elif self._usual is not None and self._bare(record):
                    end = self._bare_run_end(records, at)
                    self._handle_bare(self._usual, sequencer, records[at:end], closed)
                    self._next_offset[record.partition] = records[end - 1].offset + 1
                    at = end
                    continue
                else:
                    pending = [record]
                for item in pending:
                    self._handle_all(sequencer, item, *self._events_of(sequencer, item), closed)
                self._next_offset[record.partition] = record.offset + 1
                at += 1
            await self._flush()  # the records, before any checkpoint that covers them
            self._report_observed()
            for partition, signed in closed:
                self._publish_checkpoint(partition, signed)
            self._close_due()
            await self._flush()
            self._stop_keeping_decisions()
            await self._snapshot_due()

    def _stop_keeping_decisions(self) -> None:
        """Let each sequencer that has read past every copy of its decisions forget their
        ids (decision_copies.py): they would otherwise be kept for good."""
        for partition, sequencer in self._sequencers.items():
            if self._decision_copies.passed(partition, sequencer.source_offset):
                forgotten = sequencer.stop_keeping_ids()
                _LOG.info(
                    "partition %d: read past every copy of its decisions; forgot %d kept "
                    "decision ids", partition, forgotten,
                )  # fmt: skip

    async def close_due_batches(self) -> None:
        """Timer hook: close batches that are due even when no events arrive.

        Returns at once while the agent or a rebalance holds the lock: :meth:`process`
        closes due batches itself before it returns, and a timer queued behind a long
        batch only delayed the next one (Faust logged each as "overlapping").
        """
        if self._lock.locked():
            return
        async with self._lock:
            if self._close_due():
                await self._flush()

    async def close_open_batches(self) -> None:
        """Shutdown hook: sign every open batch, so a clean stop leaves nothing unsigned;
        a snapshot still being encoded is dropped (its child killed)."""
        if self._snapshot_job is not None:
            self._snapshot_job.cancel()
        async with self._lock:
            for partition, sequencer in self._sequencers.items():
                for tenant_id in sequencer.open_batches():
                    self._publish_checkpoint(partition, sequencer.close_batch(tenant_id))
            await self._flush()

    async def _recovered_sequencer(self, partition: int) -> Sequencer:
        """The sequencer of a partition this worker just got (none yet): rebuilt from Kafka."""
        sequencer = self._new_sequencer()
        guard = self._new_guard() if self._new_guard is not None else None
        started = time.monotonic()
        recovered = await asyncio.get_running_loop().run_in_executor(
            None, self._recover, sequencer, partition, guard
        )
        try:
            sequencer.check_signing_keys()
        except ConfigurationError as exc:
            # Signing on would break a tenant's key succession (docs/INTEGRITY.md, key
            # rotation); nothing of this partition was sequenced yet: stop, loudly.
            _LOG.critical("partition %d: cannot sign: %s", partition, exc)
            logging.shutdown()
            os._exit(78)  # EX_CONFIG
        self._epochs[partition], replayed = recovered.epoch, recovered.replayed
        self._snapshotter.recovered(partition, recovered)
        if guard is not None:
            self._guards[partition] = guard
            for decision in guard.unpublished():  # decided before a crash, never logged
                self._publish_decision(partition, decision)
        self._decision_copies.recovered(partition)
        start = recovered.snapshot
        _LOG.info(
            "partition %d: recovered %d records of %d tenants in %.1f s, %s",
            partition, replayed, len(sequencer.tenants), time.monotonic() - started,
            f"after a snapshot of {start.records} records ({start.state_bytes} bytes)"
            if start else "from the start",
        )  # fmt: skip
        self._sequencers[partition] = sequencer
        restored = sequencer.source_offset
        # Mid-envelope (an index stored): that envelope is read again, its handled events
        # are skipped as replayed. A finished envelope is read again too, at no harm.
        resume = restored if sequencer.source_index is not None else restored + 1
        self._next_offset[partition] = resume if restored >= 0 else None
        await self._hand_over_idle(partition, sequencer)
        return sequencer

    async def adopt(self, partitions: Iterable[int], owned: Callable[[int], bool]) -> None:
        """Recover the given partitions now, side by side, rather than one at a time at
        their first input (the app calls this on assignment): no stall per partition once
        input flows, and idle logs are handed over to a new key without waiting for
        traffic. A partition for which ``owned`` is no longer true (revoked since) is left
        alone."""
        async with self._lock:
            wanted = [p for p in partitions if p not in self._sequencers and owned(p)]
            await asyncio.gather(*(self._recovered_sequencer(p) for p in wanted))

    async def _hand_over_idle(self, partition: int, sequencer: Sequencer) -> None:
        """Hand every log of ``partition`` that waits for it over to the signing key:
        one record of the worker's own each (:mod:`authtrail.stream.core.handover`), its batch
        closed at once, so the checkpoint both keys sign is the hand-over (docs/INTEGRITY.md
        §11)."""
        due = sequencer.handovers_due()
        if not due:
            return
        try:
            await self._hand_over(partition, sequencer, due)
        except Exception as exc:
            # Records may be chained in memory and not published: sequencing on would
            # leave a gap. Stop; a restart recovers from Kafka (as _flush does).
            _LOG.critical("partition %d: hand-over failed, stopping: %r", partition, exc)
            logging.shutdown()
            os._exit(70)

    async def _hand_over(self, partition: int, sequencer: Sequencer, due: list[str]) -> None:
        position = (sequencer.source_offset, sequencer.source_index)
        now = time.time_ns() // 1000
        to_key = sequencer.signing_label
        for tenant_id in due:
            log = sequencer.tenants[tenant_id]
            assert log.last_checkpoint is not None  # handovers_due() names signed logs only
            from_keys, size = sequencer.newest_signers(tenant_id), log.last_checkpoint.size
            if is_rejection_tenant(tenant_id):
                rejection = handover_rejection(
                    partition, self._events_topic, position, from_keys, to_key, size, now
                )
                link = sequencer.append_own(tenant_id, None, rejection_leaf(rejection))
                fields = self._position_fields(partition, position[0], link)
                chained = {"rejection": rejection, "chain_tenant_id": tenant_id, **fields}
                value = self._rejection_codec.encode(chained)
            else:
                event = handover_event(tenant_id, from_keys, to_key, size, now)
                link = sequencer.append_own(tenant_id, event["event_id"], canonical_leaf(event))
                fields = self._position_fields(partition, position[0], link)
                fields["source_index"] = position[1]
                value = self._chained_codec.encode({"event": event, **fields})
            self._publish(CHAINED, tenant_id.encode(), value, partition)
        await self._flush()  # the records, before the checkpoints that cover them
        for tenant_id in due:
            signed = sequencer.close_batch(tenant_id)
            self._publish_checkpoint(partition, signed)
            _LOG.info(
                "partition %d: %s handed over to %s without new input (record seq %d, "
                "checkpoint signed by %s)", partition, tenant_id, to_key, signed.checkpoint.size,
                " & ".join(sequencer.newest_signers(tenant_id)),
            )  # fmt: skip
        await self._flush()

    async def _in_order(self, record: InputRecord, expected: int | None) -> list[InputRecord]:
        """``record``, preceded by any input the consumer skipped; [] if already handled.

        ``expected``: the partition's next offset (None: from its start); :meth:`process`
        handles ``record.offset == expected`` itself, without this await. Offsets of a
        topic without transactions are contiguous, so a jump means the consumer did not
        deliver some records (faust-streaming was seen to skip a few after a restart on
        the local broker). They are read directly, so none is lost.

        The read must return every offset of the gap: a broker can serve a later batch
        before an earlier one is readable (the local broker under load), and a read that
        trusted it would move the partition past records it never handled. A short read
        is read again after a pause; offsets still absent then are logged as an error and
        counted (``unread_input``): a topic written with transactions has such holes (its
        commit markers), which no retry fills.
        """
        if expected is not None and record.offset < expected:
            return []
        loop = asyncio.get_running_loop()
        for pause in (*_REREAD_PAUSES, None):
            missing = await loop.run_in_executor(
                None, self._fetch, record.partition, expected, record.offset
            )
            holes = _holes(missing, expected, record.offset)
            if not holes or pause is None:
                break
            _LOG.warning("partition %d: the direct read lacks offsets %s; reading again in "
                         "%.2f s", record.partition, _spans(holes), pause)  # fmt: skip
            await asyncio.sleep(pause)
        if missing:
            _LOG.warning(
                "partition %d: %d records at offsets %d..%d were not delivered by the "
                "consumer; read directly", record.partition, len(missing), missing[0].offset,
                missing[-1].offset,
            )  # fmt: skip
        if holes:
            self.counters.unread_input += sum(last - first + 1 for first, last in holes)
            _LOG.error("partition %d: offsets %s are in no read of the input topic; their "
                       "records, if any, were not sequenced", record.partition,
                       _spans(holes))  # fmt: skip
        return [*missing, record]

    def _bare(self, record: InputRecord) -> bool:
        """Whether ``record`` is a bare event (anything but an envelope)."""
        header = self._envelope_header
        return header is None or record.value[: len(header)] != header

    def _bare_run_end(self, records: Sequence[InputRecord], start: int) -> int:
        """Where the bare records that follow ``records[start]`` at the next offsets of its
        partition end (a run of the consumer's, stream/worker/record_runs.py)."""
        partition, offset = records[start].partition, records[start].offset
        end = start + 1
        while (
            end < len(records)
            and records[end].partition == partition
            and records[end].offset == offset + end - start
            and self._bare(records[end])
        ):
            end += 1
        return end

    def _events_of(self, sequencer: Sequencer, record: InputRecord) -> tuple[list[bytes], bool]:
        """The events of input ``record`` and whether it is an envelope: itself when it is
        a bare event; an envelope's events (their indexes their places). An envelope that
        cannot be unpacked is rejected whole here (index None) and yields nothing."""
        if self._bare(record):
            return [record.value], False
        if sequencer.handled(record.offset, None):
            return [], True  # every event of it was handled before a restart: skip the decode
        assert self._envelope_codec is not None
        size = len(record.value)
        if size > self._limits.max_envelope_bytes:  # before paying to decode
            reason = f"envelope of {size} bytes exceeds {self._limits.max_envelope_bytes}"
            self._reject(sequencer, record, OVERSIZED, reason, None, record.value, None)
            return [], True
        try:
            events: list[bytes] = self._envelope_codec.decode(record.value)["events"]
        except FormatError as exc:
            self._reject(sequencer, record, "undecodable", str(exc), None, record.value, None)
            return [], True
        if not events:
            reason = "envelope holds no events"
            self._reject(sequencer, record, "undecodable", reason, None, record.value, None)
        return events, True

    def _handle_all(
        self, sequencer: Sequencer, record: InputRecord, values: list[bytes], enveloped: bool,
        closed: list[tuple[int, SignedCheckpoint]],
    ) -> None:  # fmt: skip
        """Handle the events ``values`` of ``record`` in order (the usual ones of an
        envelope in :meth:`_run_usual`, any other in :meth:`_handle`), closing each batch
        that fills up at once, so every batch has exactly batch_size events (its checkpoint,
        appended to ``closed``, is published only after its records landed)."""
        # The callbacks admission needs, made once per record rather than per event; the
        # leaf own_decision works out is kept for the event it was asked about.
        claimed: list[bytes | None] = [None]

        def own_decision(event: Mapping[str, Any]) -> bool:
            claimed[0] = leaf = canonical_leaf(event)
            return self._own_decision(sequencer, record, event, leaf)

        def erasure_claim(event: Mapping[str, Any]) -> str | None:
            return self._false_erasure(sequencer, event)

        handle, full_batches = self._handle, sequencer.full_batches
        usual = self._usual if enveloped else None
        at, count = 0, len(values)
        while at < count:
            stopped = STOPPED
            if usual is not None:
                at, stopped = self._run_usual(usual, sequencer, record, values, at)
            if stopped == STOPPED and at < count:  # values[at] is Python's
                claimed[0] = None
                handle(sequencer, record, values[at], at if enveloped else None, own_decision,
                       erasure_claim, claimed)  # fmt: skip
                at += 1
            full = full_batches()
            if full:  # rarely: no list built per event
                closed += [(record.partition, sequencer.close_batch(tenant)) for tenant in full]

    def _handle_bare(
        self, usual: UsualPass, sequencer: Sequencer, run: Sequence[InputRecord],
        closed: list[tuple[int, SignedCheckpoint]],
    ) -> None:  # fmt: skip
        """Handle ``run``, bare records at consecutive offsets of one partition, as
        :meth:`_handle_all` would one at a time: the usual ones in C, together."""
        values = [record.value for record in run]
        bare = _BareRun(
            run, [record.offset for record in run], [record.timestamp_micros for record in run]
        )
        at, count = 0, len(run)
        while at < count:
            at, stopped = self._run_usual(usual, sequencer, run[0], values, at, bare)
            if stopped == STOPPED and at < count:  # run[at] is Python's
                self._handle_all(sequencer, run[at], [values[at]], False, closed)
                at += 1
            full = sequencer.full_batches()
            if full:
                closed += [(run[0].partition, sequencer.close_batch(tenant)) for tenant in full]

    def _run_usual(
        self, usual: UsualPass, sequencer: Sequencer, record: InputRecord, values: list[bytes],
        start: int, bare: _BareRun | None = None,
    ) -> tuple[int, int]:  # fmt: skip
        """Handle the usual events of envelope ``record`` from ``values[start]`` on in C
        (usual_pass.py) and finish what the loop leaves; returns where it stopped and why.
        ``bare``: ``values`` are those bare records of ``record``'s partition instead."""
        partition = record.partition
        guard = self._guards.get(partition)
        observed = self._observed.setdefault(partition, {}) if self.observer is not None else None
        out: list[Any] = []
        offset: int | list[int] = record.offset if bare is None else bare.offsets
        timestamp = record.timestamp_micros if bare is None else bare.times
        at, stopped, rest = usual.run(
            sequencer, values, start, offset, timestamp, partition, self._partitions,
            self._epochs[partition], guard.observe if guard is not None else None,
            sequencer.filled, observed, out,
        )  # fmt: skip
        if out:
            self._add_sequenced(partition, out)
        if stopped == DECIDED:
            for decision in rest:
                self._publish_decision(partition, decision)
        elif stopped == UNSPLICED:  # sequenced; the chained body is the codec's to write
            event, link = rest
            last = at - 1
            if bare is None:
                self._publish_sequenced(sequencer, record, values[last], last, event, link)
            else:
                self._publish_sequenced(sequencer, bare.records[last], values[last], None, event,
                                        link)  # fmt: skip
        return at, stopped

    def _handle(
        self, sequencer: Sequencer, record: InputRecord, value: bytes, index: int | None,
        own_decision: Callable[[Mapping[str, Any]], bool],
        erasure_claim: Callable[[Mapping[str, Any]], str | None], claimed: list[bytes | None],
    ) -> None:  # fmt: skip
        """Handle one event ``value`` of ``record`` (``index``: its place in the envelope,
        None for a bare message): chain it, count a duplicate, or reject it alone.
        ``own_decision`` and ``erasure_claim`` answer admission's questions about it;
        ``claimed[0]`` is the leaf ``own_decision`` worked out, if it was asked."""
        event: dict[str, Any] | None = None
        try:
            if len(value) > self._limits.max_record_bytes:  # before paying to decode
                check_event({}, record_bytes=len(value), record_timestamp_micros=None,
                            limits=self._limits)  # fmt: skip
            event = self._event_codec.decode(value)
            if is_retention_event(event) and event["tenant_id"] == rejection_tenant(
                record.partition
            ):
                self._retain_rejections(sequencer, record, event, value, index)
                return
            if not self._admits_usual(event, len(value), record.timestamp_micros,
                                      record.partition, self._partitions):  # fmt: skip
                check_event(
                    event, record_bytes=len(value),
                    record_timestamp_micros=record.timestamp_micros, limits=self._limits,
                    partition=record.partition, partitions=self._partitions,
                    own_decision=own_decision, erasure_claim=erasure_claim,
                )  # fmt: skip
            if self._retention is not None and is_retention_event(event):
                self._check_retention(sequencer, event)
            event, value = self._sealed(event, value)  # decisions pass unchanged
            leaf = claimed[0]
            if leaf is None:  # not yet worked out by own_decision
                leaf = canonical_leaf(event)
            offer = sequencer.offer(
                event["tenant_id"], event["event_id"], leaf, record.offset, index
            )
        except UnknownSchemaError as exc:
            self._reject(sequencer, record, "unknown_schema", str(exc), None, value, index)
        except RejectedEvent as exc:
            self._reject(sequencer, record, exc.kind, str(exc), _tenant(event), value, index)
        except FormatError as exc:
            self._reject(sequencer, record, "undecodable", str(exc), None, value, index)
        except InvalidArgumentError as exc:
            self._reject(sequencer, record, INVALID_EVENT, str(exc), _tenant(event), value,
                         index)  # fmt: skip
        else:
            if offer.link is not None:
                self._publish_sequenced(sequencer, record, value, index, event, offer.link)
            elif offer.outcome == DUPLICATE:
                self.counters.duplicates += 1
            elif offer.outcome == CONFLICT:
                reason = f"event_id {event['event_id']!r} was already used for different content"
                self._reject(sequencer, record, "event_id_conflict", reason, event["tenant_id"],
                             value, index)  # fmt: skip

    def _retain_rejections(
        self, sequencer: Sequencer, record: InputRecord, event: Mapping[str, Any],
        value: bytes, index: int | None,
    ) -> None:  # fmt: skip
        """Chain ``event``, a retention statement for this partition's rejection log, into
        that log as the worker's own record (stream/core/retention.py): no input event may
        join a rejection log, so the statement is checked here as strictly as a tenant's,
        and refused into the log like other input when it does not hold."""
        tenant_id = event["tenant_id"]
        try:
            if self._retention is None:
                raise RejectedEvent(
                    FORGED_RETENTION_KIND,
                    "this worker trusts no key to check a retention statement against",
                )
            self._check_retention(sequencer, event)
        except RejectedEvent as exc:
            self._reject(sequencer, record, exc.kind, str(exc), tenant_id, value, index)
            return
        position = (record.partition, record.offset, index)
        rejection = retention_rejection(event, self._events_topic, position,
                                        time.time_ns() // 1000)  # fmt: skip
        link = sequencer.chain_rejection(tenant_id, rejection_leaf(rejection), record.offset, index)
        if link is not None:
            self._snapshotter.wrote(record.partition)
            _LOG.info("partition %d: %s pruning statement chained as record %d",
                      record.partition, tenant_id, link.seq)  # fmt: skip
            self._publish_rejection(record, tenant_id, rejection, link)

    def _check_retention(self, sequencer: Sequencer, event: Mapping[str, Any]) -> None:
        """Refuse ``event``, a retention statement (:func:`is_retention_event`), unless a
        trusted key signed it for this tenant's log."""
        assert self._retention is not None
        log = sequencer.tenants.get(event["tenant_id"])
        next_seq = (log.head.seq if log is not None else 0) + 1
        try:
            check_retention_event(event, next_seq, *self._retention)
        except RetentionDamage as exc:
            raise RejectedEvent(FORGED_RETENTION_KIND, exc.detail) from exc

    def _sealed(self, event: dict[str, Any], value: bytes) -> tuple[dict[str, Any], bytes]:
        """``event`` and ``value`` with the tenant's personal fields sealed, before its leaf
        is computed (docs/PRIVACY.md); the value re-encoded only when sealing changed it."""
        if self._sealer is None or self._sealer.leaves_unchanged(value):
            return event, value
        try:
            sealed = self._sealer.seal(event, value)
        except (ConfigurationError, OSError) as exc:
            # The key store failed: chaining clear text or skipping the event are both
            # wrong, so stop like a failed publish (rule 2); a restart retries the event.
            _stop_for_key_store(exc)
        return (event, value) if sealed is event else (sealed, self._event_codec.encode(sealed))

    def _false_erasure(self, sequencer: Sequencer, event: Mapping[str, Any]) -> str | None:
        """Why ``event``, which claims to be an erasure record, may not be chained; None
        when its claim is true (docs/PRIVACY.md, "Erasing a subject").

        The record reaches the worker through the events topic, which anyone allowed to
        produce can write, so the topic cannot vouch for it: the key store the worker seals
        with can. Every key the record names must be destroyed there. An exact copy of a
        record already chained passes too (``erase`` re-sends the same record; the
        sequencer records it as a duplicate), whatever the store says by now.
        """
        if self._sealer is None:
            return "this worker has no privacy key store to check it against"
        try:
            problem = self._sealer.erasure_claim_problem(event)
        except (ConfigurationError, OSError) as exc:
            _stop_for_key_store(exc)
        if problem is not None and sequencer.has_recorded(
            event["tenant_id"], event["event_id"], canonical_leaf(event)
        ):
            return None
        return problem

    def _own_decision(
        self, sequencer: Sequencer, record: InputRecord, event: Mapping[str, Any], leaf: bytes
    ) -> bool:
        """Whether ``event`` (canonical leaf ``leaf``), which claims a lockout decision's
        identity, is this worker's.

        Decisions come back through the events topic like any producer's input, so the
        topic cannot vouch for them. Ours is one the partition's guard owes with exactly
        this content, or an exact copy of one already chained (after a restart a decision
        in flight may be published twice: the sequencer records it as a duplicate).
        """
        guard = self._guards.get(record.partition)
        if guard is not None and guard.owes(event["event_id"], leaf):
            return True
        return sequencer.has_recorded(event["tenant_id"], event["event_id"], leaf)

    def _publish_sequenced(
        self, sequencer: Sequencer, record: InputRecord, value: bytes, index: int | None,
        event: dict[str, Any], link: ChainLink,
    ) -> None:  # fmt: skip
        """Add a sequenced ``event`` to its partition's open chained batch and let the
        guard see it."""
        partition = record.partition
        tenant_id, occurred_at = event["tenant_id"], event["occurred_at"]
        if self.observer is not None:
            self._observed.setdefault(partition, {}).setdefault(tenant_id, []).append(occurred_at)
        body = self._chained_body(record, value, index, event, link)
        self._add_sequenced(partition, [tenant_id, link.seq, occurred_at, body])
        guard = self._guards.get(partition)
        for decision in guard.observe(event) if guard is not None else ():
            self._publish_decision(partition, decision)

    def _add_sequenced(self, partition: int, records: list[Any]) -> None:
        """Count sequenced ``records`` (tenant_id, seq, occurred_at and chained body each,
        flat) and add them to the partition's open chained batch."""
        count = len(records) // 4
        self.counters.sequenced += count
        self._snapshotter.wrote(partition, count)
        batch = self._batches.get(partition)
        if batch is None:
            batch = self._batches[partition] = BatchBuilder(*self._batch_format)
        for finished in batch.add_run(self._epochs[partition], records):
            self._publish(CHAINED, None, finished, partition)

    def _report_observed(self) -> None:
        """Tell the observer what was sequenced this step (before the checkpoints)."""
        observed, self._observed = self._observed, {}
        if self.observer is not None:
            for partition, tenants in observed.items():
                for tenant_id, occurred_at in tenants.items():
                    self.observer.sequenced(partition, tenant_id, occurred_at)

    def _emit_batch(self, partition: int) -> None:
        """Publish the open chained batch of ``partition``, if any."""
        batch = self._batches.get(partition)
        finished = batch.take() if batch is not None else None
        if finished is not None:
            self._publish(CHAINED, None, finished, partition)

    def _chained_body(
        self, record: InputRecord, value: bytes, index: int | None, event: dict[str, Any],
        link: ChainLink,
    ) -> bytes:  # fmt: skip
        """The chained record body (no framing) of a sequenced ``event``, decoded from
        ``value`` (event ``index`` of ``record``)."""
        if self._splice is not None:  # the usual case, the same bytes written in C
            partition = record.partition
            native = _native_chained_body(
                value, self._event_header, link, partition, record.offset,
                self._epochs[partition], index,
            )  # fmt: skip
            if native is not None:
                return native
        rest = {
            "seq": link.seq, "prev_hash": link.prev_hash, "hash": link.hash,
            "leaf_hash": link.leaf_hash, "source_partition": record.partition,
            "source_offset": record.offset, "epoch": self._epochs[record.partition],
            "source_index": index,
        }  # fmt: skip
        if self._splice is not None:
            event_codec, chained_codec = self._splice
            body = event_codec.current_body(value)
            # The body decoded to ``event`` with this very schema (no resolution), so the
            # chained record decodes to the same event, whose canonical leaf is leaf_hash.
            if body is not None:
                return chained_codec.spliced_body(body, rest)
        # Written with an older schema: the chained record holds the event in today's.
        return self._chained_codec.encode_body({"event": event, **rest})

    def _link_fields(self, record: InputRecord, link: ChainLink) -> dict[str, Any]:
        """What a chained record or rejection says besides its content: its link, where
        its input came from, and the epoch it was written in."""
        return self._position_fields(record.partition, record.offset, link)

    def _position_fields(
        self, partition: int, source_offset: int, link: ChainLink
    ) -> dict[str, Any]:
        """:meth:`_link_fields` of a record at ``source_offset`` of ``partition`` (also
        of a record the worker wrote itself, which was read from no input record)."""
        return {
            "seq": link.seq,
            "prev_hash": link.prev_hash,
            "hash": link.hash,
            "leaf_hash": link.leaf_hash,
            "source_partition": partition,
            "source_offset": source_offset,
            "epoch": self._epochs[partition],
        }

    def _publish_decision(self, partition: int, decision: dict[str, Any]) -> None:
        """A lockout decision goes back into the audited stream (same partition: it is
        the tenant's) and out to the lockouts topic for enforcement services."""
        self.counters.decisions += 1
        value = self._event_codec.encode(decision)
        key = decision["tenant_id"].encode()
        self._publish(EVENTS, key, value, partition)
        self._publish(LOCKOUTS, key, value, partition)

    def _close_due(self) -> int:
        """Close and publish the batches that are due, those closed by their interval
        within the signing budget; returns how many."""
        closed = 0
        left = self._signing.available()
        partitions = list(self._sequencers.items())
        # When the budget runs out, the next partition goes first next time: partitions
        # share a capped budget in turns.
        first = self._next_first % len(partitions) if partitions else 0
        for position, (partition, sequencer) in enumerate(partitions[first:] + partitions[:first]):
            due = sequencer.due_batches(left)
            for tenant_id in due:
                self._publish_checkpoint(partition, sequencer.close_batch(tenant_id))
            closed += len(due)
            if left is not None and due and left <= len(due):
                self._next_first = first + position + 1
            if left is not None:
                left = max(0, left - len(due))
        self._signing.spend(closed)
        return closed

    def _publish_checkpoint(self, partition: int, signed: SignedCheckpoint) -> None:
        self.counters.checkpoints += 1
        if self.observer is not None:
            batch = signed.checkpoint.batch_last_seq - signed.checkpoint.batch_first_seq + 1
            self.observer.signed(partition, signed.tenant_id, batch)
        value = self._checkpoint_codec.encode(
            {**_checkpoint_record(signed), "epoch": self._epochs[partition]}
        )
        self._publish(CHECKPOINTS, signed.tenant_id.encode(), value, partition)

    def _reject(
        self, sequencer: Sequencer, record: InputRecord, kind: str, reason: str,
        tenant_id: str | None, value: bytes, index: int | None,
    ) -> None:  # fmt: skip
        """Dead-letter ``value`` (event ``index`` of ``record``'s envelope; None: the
        whole message) and chain its rejection into the partition's rejection log
        (stream/core/rejection.py), unless a run before a restart already did."""
        rejection = {
            "original": value,
            "original_key": record.key,
            "reason": _text(reason),
            "error_kind": kind,
            "source_topic": self._events_topic,
            "source_partition": record.partition,
            "source_offset": record.offset,
            "source_timestamp": record.timestamp_micros,
            "tenant_id": _text(tenant_id) if tenant_id is not None else None,
            "rejected_at": time.time_ns() // 1000,
            "source_index": index,
        }
        chain_tenant = rejection_tenant(record.partition)
        link = sequencer.chain_rejection(
            chain_tenant, rejection_leaf(rejection), record.offset, index
        )
        if link is None:
            return
        self.counters.rejected += 1
        self._snapshotter.wrote(record.partition)
        self.rejected_by_kind[kind] += 1
        where = f"{record.offset}" if index is None else f"{record.offset}#{index}"
        self._rejections_log.warning(kind, "rejected %s[%d]@%s: %s: %s", self._events_topic,
                                     record.partition, where, kind, reason)  # fmt: skip
        dead_letter = self._dead_letter_codec.encode(rejection)
        self._publish(DEAD_LETTER, record.key, dead_letter, record.partition)
        self._publish_rejection(record, chain_tenant, rejection, link, dead_letter)

    def _publish_rejection(
        self, record: InputRecord, chain_tenant: str, rejection: dict[str, Any],
        link: ChainLink, dead_letter: bytes | None = None,
    ) -> None:  # fmt: skip
        """Publish ``rejection`` chained at ``link``. ``dead_letter``: the same rejection as
        published on the dead-letter topic, whose body is the chained record's first field
        as it stands (encoding it again, through fastavro, was the rejection's largest cost)."""
        body: bytes | memoryview | None = None
        if dead_letter is not None:
            body = self._dead_letter_codec.current_body(dead_letter)
        if body is None:
            body = self._dead_letter_codec.encode_body(rejection)
        rest = {"chain_tenant_id": chain_tenant, **self._link_fields(record, link)}
        self._emit_batch(record.partition)  # the records sequenced before it go first
        value = self._rejection_codec.encode_spliced(body, rest)
        self._publish(CHAINED, chain_tenant.encode(), value, record.partition)

    async def _snapshot_due(self) -> None:
        """Snapshot the partition most overdue; call right after a flush (all outputs
        acknowledged), so each snapshot describes exactly what Kafka holds.

        One at a time: partitions fill at the same pace and fall due together, and an
        encoding on the loop stops it for ~0.1 µs a byte of state, so taking them all at
        once made one stall of their sum; a forked encoding holds a copy of the state."""
        if self._snapshot_job is not None and not self._snapshot_job.done():
            return
        for partition in self._snapshotter.due()[:1]:
            guard, epoch = self._guards.get(partition), self._epochs[partition]
            sequencer = self._sequencers[partition]
            if not self._snapshots_forked:
                parts = self._snapshotter.take(partition, sequencer, guard, epoch)
                self._publish_snapshot(partition, parts)
                await self._flush()
                return
            encode = self._snapshotter.begin(partition, sequencer, guard, epoch)
            try:
                job = ForkedJob(encode)
            except ChildFailed as exc:
                _LOG.error("partition %d: snapshot not taken: %s", partition, exc)
                self._snapshotter.finished(partition, None)
                return
            self._snapshot_job = asyncio.create_task(
                self._publish_forked(partition, sequencer, job)
            )

    def _publish_snapshot(self, partition: int, parts: list[bytes]) -> None:
        for index, value in enumerate(parts):
            self._publish(SNAPSHOTS, snapshot_part_key(index), value, partition)
        self.counters.snapshots += 1

    async def _publish_forked(self, partition: int, sequencer: Sequencer, job: ForkedJob) -> None:
        """Publish the snapshot ``job`` encodes once it is done, unless the partition was
        revoked meanwhile; then begin the next one due, so partitions that fell due
        together are all taken even if no more input comes."""
        try:
            parts: list[bytes] | None = await job.result()
        except ChildFailed as exc:
            _LOG.error("partition %d: snapshot not taken: %s", partition, exc)
            parts = None
        async with self._lock:
            if self._sequencers.get(partition) is not sequencer:
                return  # revoked (perhaps assigned again): this state is not the partition's
            self._snapshotter.finished(partition, parts)
            if parts is not None:
                self._publish_snapshot(partition, parts)
            await self._flush()  # its parts, and what the next snapshot's position needs
            self._snapshot_job = None
            await self._snapshot_due()

    async def _flush(self) -> None:
        """Publish the open chained batches and wait for every output enqueued so far; on
        any failure stop the process (rule 2)."""
        for partition in self._batches:
            self._emit_batch(partition)
        try:
            await self._publisher.flush()
        except Exception as exc:
            _LOG.critical("publish failed, stopping so a restart recovers from Kafka: %r", exc)
            logging.shutdown()
            os._exit(70)
        acknowledged = self._publisher.take_acknowledged()
        self._snapshotter.acknowledged(acknowledged)
        self._decision_copies.acknowledged(acknowledged)


def _stop_for_key_store(exc: Exception) -> NoReturn:
    _LOG.critical("privacy key store failed, stopping: %s", exc)
    logging.shutdown()
    os._exit(70)


def _holes(read: Sequence[InputRecord], expected: int | None, end: int) -> list[tuple[int, int]]:
    """The offset ranges (first, last) from ``expected`` (None: the first one read) up to
    ``end`` exclusive that ``read``, in offset order, lacks."""
    holes: list[tuple[int, int]] = []
    at = expected if expected is not None else (read[0].offset if read else end)
    for item in read:
        if item.offset > at:
            holes.append((at, item.offset - 1))
        at = max(at, item.offset + 1)
    if at < end:
        holes.append((at, end - 1))
    return holes


def _spans(spans: Iterable[tuple[int, int]]) -> str:
    return ", ".join(f"{first}..{last}" if first != last else str(first) for first, last in spans)


def _text(text: str) -> str:
    """``text`` made storable and hashable: lone surrogates (from a decoder's errors) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _tenant(event: Any) -> str | None:
    tenant = event.get("tenant_id") if isinstance(event, dict) else None
    return tenant if isinstance(tenant, str) else None


def _checkpoint_record(signed: SignedCheckpoint) -> dict[str, Any]:
    checkpoint = signed.checkpoint
    return {
        "tenant_id": signed.tenant_id,
        "size": checkpoint.size,
        "note": signed.note.decode("utf-8"),
        "root": checkpoint.root,
        "batch_first_seq": checkpoint.batch_first_seq,
        "batch_last_seq": checkpoint.batch_last_seq,
        "batch_root": checkpoint.batch_root,
        "chain_head": checkpoint.chain_hash,
        "prev_digest": checkpoint.prev_digest,
        "time_micros": checkpoint.time_micros,
    }
