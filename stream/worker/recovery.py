"""Rebuild a partition's sequencer from what it already published (Kafka alone).

The chained-records and checkpoints topics are the sequencer's durable state: each input
partition ``p`` publishes only to partition ``p`` of both, so reading those two partitions
from the start rebuilds every chain head, Merkle log, open batch and event-id window of
the tenants of ``p`` — on this machine or any other. Runs in a thread (blocking reads).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)

from authtrail.errors import ConfigurationError, FormatError
from authtrail.schemas import CHAINED_BATCH, load_schema
from authtrail.schemas.codec import Codec, SingleObjectCodec
from authtrail.stream.core.chain import ChainLink
from authtrail.stream.core.checkpoint import open_signed_checkpoint
from authtrail.stream.core.note import Keyring
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.detection.guard import Guard
from authtrail.stream.worker import snapshot
from authtrail.stream.worker.chained_batch import batch_records, decode_batch, is_batch
from authtrail.stream.worker.fencing import Fence

_LOG = logging.getLogger(__name__)
_POLL_SECONDS = 1.0
# Kafka's default message.max.bytes is ~1 MB; snapshots are split below it.
SNAPSHOT_PART_BYTES = 512 * 1024
# Keys in the snapshots topic, which is compacted (stream/worker/app.py): what survives is the
# newest claim (the highest epoch, which fences) and the newest value of each part index.
CLAIM_KEY = b"claim"


def snapshot_part_key(index: int) -> bytes:
    """The key of part ``index`` of a snapshot (see :data:`CLAIM_KEY`)."""
    return b"part-%d" % index


_BATCH = 10_000
_STALL_SECONDS = 30.0


def read_partition(
    bootstrap_servers: str,
    topic: str,
    partition: int,
    config: Mapping[str, Any] | None = None,
    *,
    start: int | None = None,
    end: int | None = None,
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, value)`` of ``topic``/``partition``; see :func:`read_messages`."""
    for offset, _, value, _ in read_messages(
        bootstrap_servers, topic, partition, config, start=start, end=end
    ):
        yield offset, value


def read_messages(
    bootstrap_servers: str,
    topic: str,
    partition: int,
    config: Mapping[str, Any] | None = None,
    *,
    start: int | None = None,
    end: int | None = None,
) -> Iterator[tuple[int, bytes | None, bytes, int | None]]:
    """Yield ``(offset, key, value, timestamp_micros)`` of ``topic``/``partition`` from
    ``start`` (default: the first stored offset) up to ``end`` exclusive (default: the end
    of the partition). A missing value (tombstone) is yielded as ``b""``.

    Without ``end`` it reads until librdkafka signals end-of-partition, never to the
    reported high watermark: the local tansu broker reports the watermark of a
    multi-record batch as its first offset + 1, which would stop a read early.
    Raises :class:`ConfigurationError` when the broker cannot be read.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"authtrail-recovery-{uuid.uuid4()}",  # assign() only; never commits
            "enable.auto.commit": False,
            "enable.partition.eof": end is None,
            **(config or {}),
        }
    )
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=30, cached=False
        )
        first = low if start is None else max(start, low)
        if end is not None and first >= end:
            return
        if end is None and high <= low:
            return
        consumer.assign([TopicPartition(topic, partition, first)])
        deadline = time.monotonic() + _STALL_SECONDS
        while True:
            messages = consumer.consume(_BATCH, timeout=_POLL_SECONDS)
            if messages:
                deadline = time.monotonic() + _STALL_SECONDS
            elif time.monotonic() > deadline:
                raise ConfigurationError(
                    f"reading {topic}[{partition}] from {first}: no data for {_STALL_SECONDS} s"
                )
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return
                    raise ConfigurationError(f"reading {topic}[{partition}]: {error}")
                offset = message.offset()
                if offset is None or offset < first:
                    continue
                if end is not None and offset >= end:
                    return
                kind, stamp = message.timestamp()
                micros = stamp * 1000 if kind != TIMESTAMP_NOT_AVAILABLE else None
                yield offset, message.key(), message.value() or b"", micros
                if end is not None and offset >= end - 1:
                    return
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"reading {topic}[{partition}] failed: {exc}") from exc
    finally:
        consumer.close()


@dataclass(frozen=True)
class Recovery:
    """What recovering one partition found: records replayed, the epoch claimed, and the
    snapshot started from (None: the partition's start)."""

    replayed: int
    epoch: int
    snapshot: SnapshotPosition | None = None
    # Offsets of this recovery's claims: the state covers everything before them.
    chained_claim: int = -1
    checkpoints_claim: int = -1


@dataclass(frozen=True)
class SnapshotPosition:
    """Where a snapshot's state stands in the partition's topics (schemas/snapshot.avsc)."""

    chained_next: int
    checkpoints_next: int
    records: int
    # The size of the snapshot's state (0: unknown), which spaces the next one
    # (stream/worker/snapshotter.py).
    state_bytes: int = 0


@dataclass(frozen=True)
class Topics:
    """The pipeline topics recovery reads, and their codecs."""

    chained: str
    checkpoints: str
    snapshots: str | None
    chained_codec: Codec
    checkpoint_codec: Codec
    claim_codec: Codec
    snapshot_codec: Codec | None = None
    rejection_codec: Codec | None = None  # chained rejections share the chained topic
    # Chained records come in batches (stream/worker/chained_batch.py), bare ones stay readable.
    batch_codec: SingleObjectCodec = field(
        default_factory=lambda: SingleObjectCodec(load_schema(CHAINED_BATCH))
    )


def recover(
    sequencer: Sequencer,
    *,
    bootstrap_servers: str,
    partition: int,
    topics: Topics,
    keyring: Keyring,
    log_origin: str,
    writer: str,
    guard: Guard | None = None,
    config: Mapping[str, Any] | None = None,
) -> Recovery:
    """Rebuild ``partition``'s state from what was published, then claim the partition.

    1. Load the newest snapshot the fence admits, if any (docs/PIPELINE.md § 6).
    2. Replay the checkpoints, then the chained records, after the snapshot (all of them
       without one) into ``sequencer`` (and each chained event into ``guard``), ignoring
       records fenced off by an earlier claim. Checkpoints come first: each was published
       after the records it covers were acknowledged.
    3. Append a claim with the next epoch to the snapshots partition, then to both others
       (docs/PIPELINE.md, fencing).
    4. Replay what a previous owner still wrote between step 2's end and the claim.

    Raises :class:`ConfigurationError` if another worker claimed the same epoch first (the
    caller exits; a restart claims a higher one).
    """
    replay = _Replay(sequencer, topics, keyring, log_origin, guard)

    def read(topic: str, start: int | None = None, end: int | None = None) -> Any:
        return read_messages(bootstrap_servers, topic, partition, config, start=start, end=end)

    position = None
    if topics.snapshots is not None and topics.snapshot_codec is not None:
        snapshots = _Snapshots(topics.snapshot_codec, topics.claim_codec)
        position = snapshots.load_newest(read(topics.snapshots), sequencer, guard)
        replay.start_from(snapshots)
    checkpoints_start = position.checkpoints_next if position else None
    records_start = position.chained_next if position else None
    checkpoints_end = replay.checkpoints(read(topics.checkpoints, checkpoints_start))
    records_end = replay.records(read(topics.chained, records_start))
    epoch = max(fence.epoch for fence in replay.fences.values()) + 1
    claim_topics = [topics.checkpoints, topics.chained]
    if topics.snapshots is not None:
        # First, so no snapshot taken after another worker's claim is ever admitted.
        _publish_claims(bootstrap_servers, (topics.snapshots,), partition, epoch, writer,
                        topics.claim_codec)  # fmt: skip
    claimed = _publish_claims(bootstrap_servers, tuple(claim_topics), partition, epoch, writer,
                              topics.claim_codec)  # fmt: skip
    checkpoints_end = max(checkpoints_end, checkpoints_start or 0)
    records_end = max(records_end, records_start or 0)
    replay.checkpoints(read(topics.checkpoints, checkpoints_end, claimed[topics.checkpoints]))
    replay.records(read(topics.chained, records_end, claimed[topics.chained]))
    if replay.rival_claim >= epoch:
        raise ConfigurationError(
            f"partition {partition}: another worker claimed epoch {replay.rival_claim} first"
        )
    return Recovery(replay.replayed, epoch, position, claimed[topics.chained],
                    claimed[topics.checkpoints])  # fmt: skip


_CHECKPOINTS, _RECORDS, _SNAPSHOTS = "checkpoints", "records", "snapshots"


def _is_claim(value: bytes, claim_codec: Codec) -> bool:
    return bool(value[2:10] == claim_codec.reader_fingerprint)  # type: ignore[attr-defined]


class _Snapshots:
    """Reads a snapshots partition: claims raise its fence; parts of admitted snapshots
    are gathered; the newest complete one wins."""

    def __init__(self, snapshot_codec: Codec, claim_codec: Codec) -> None:
        self.snapshot_codec, self.claim_codec = snapshot_codec, claim_codec
        self.fence = Fence()
        self.epoch = 0  # of the snapshot loaded

    def load_newest(
        self, messages: Iterator[tuple[int, Any, bytes, Any]], sequencer: Sequencer,
        guard: Guard | None,
    ) -> SnapshotPosition | None:  # fmt: skip
        parts: dict[str, dict[int, bytes]] = {}
        newest: tuple[dict[str, Any], list[bytes]] | None = None
        for _, _, value, _ in messages:
            if _is_claim(value, self.claim_codec):
                self.fence.claim(int(self.claim_codec.decode(value)["epoch"]))
                continue
            record = self.snapshot_codec.decode(value)
            if not self.fence.admits(record["epoch"]):
                continue
            gathered = parts.setdefault(record["snapshot_id"], {})
            gathered[record["part"]] = record["state"]
            if len(gathered) == record["parts"]:
                newest = record, [gathered[index] for index in range(record["parts"])]
                parts.clear()  # older incomplete snapshots can no longer win
        if newest is None:
            return None
        record, state_parts = newest
        state = snapshot.join(state_parts)
        try:
            snapshot.restore_state(state, sequencer, guard)
        except FormatError as exc:
            # Not evidence, only a shortcut: without it the whole partition is replayed.
            _LOG.warning("snapshot %s ignored, replaying everything: %s",
                         record["snapshot_id"], exc)  # fmt: skip
            return None
        self.epoch = int(record["epoch"])
        return SnapshotPosition(
            record["chained_next"], record["checkpoints_next"], record["records"], len(state)
        )


class _Replay:
    def __init__(
        self, sequencer: Sequencer, topics: Topics, keyring: Keyring, log_origin: str,
        guard: Guard | None,
    ) -> None:  # fmt: skip
        self.sequencer, self.keyring, self.log_origin = sequencer, keyring, log_origin
        self.chained_codec, self.checkpoint_codec = topics.chained_codec, topics.checkpoint_codec
        self.claim_codec, self.guard = topics.claim_codec, guard
        self.rejection_codec, self.batch_codec = topics.rejection_codec, topics.batch_codec
        # Every version's: rejections written before a schema change are still rejections.
        self.rejection_fingerprints: frozenset[bytes] = getattr(
            topics.rejection_codec, "known_fingerprints", frozenset()
        )
        self.fences = {_CHECKPOINTS: Fence(), _RECORDS: Fence(), _SNAPSHOTS: Fence()}
        self.replayed = 0
        self.rival_claim = -1  # highest claim read after the first pass (tail only)
        self._first_pass_done: set[str] = set()

    def start_from(self, snapshots: _Snapshots) -> None:
        """Records after a snapshot are admitted from its writer's epoch on; every claim
        ever made is in the snapshots partition, so the next epoch is above all of them."""
        self.fences[_SNAPSHOTS].claim(snapshots.fence.epoch)
        self.fences[_CHECKPOINTS].claim(snapshots.epoch)
        self.fences[_RECORDS].claim(snapshots.epoch)

    def _claim(self, kind: str, value: bytes) -> bool:
        if not _is_claim(value, self.claim_codec):
            return False
        epoch = int(self.claim_codec.decode(value)["epoch"])
        if kind in self._first_pass_done:
            self.rival_claim = max(self.rival_claim, epoch)
        self.fences[kind].claim(epoch)
        return True

    def checkpoints(self, messages: Iterator[tuple[int, Any, bytes, Any]]) -> int:
        end = 0
        for offset, _, value, _ in messages:
            end = offset + 1
            if self._claim(_CHECKPOINTS, value):
                continue
            record = self.checkpoint_codec.decode(value)
            if not self.fences[_CHECKPOINTS].admits(record["epoch"]):
                continue
            tenant_id = record["tenant_id"]
            origin = f"{self.log_origin}/{tenant_id}"
            opened = open_signed_checkpoint(record["note"], self.keyring, origin)
            self.sequencer.restore_checkpoint(tenant_id, opened.checkpoint, opened.signed_by)
        self._first_pass_done.add(_CHECKPOINTS)
        return end

    def records(self, messages: Iterator[tuple[int, Any, bytes, Any]]) -> int:
        end = 0
        for offset, _, value, _ in messages:
            end = offset + 1
            if self._claim(_RECORDS, value):
                continue
            if is_batch(value, self.batch_codec):
                batch = decode_batch(value, self.batch_codec)
                if self.fences[_RECORDS].admits(batch["epoch"]):
                    for record in batch_records(batch, self.chained_codec):
                        self._restore(record, rejection=False)
                continue
            rejection = value[2:10] in self.rejection_fingerprints
            codec = self.rejection_codec if rejection else self.chained_codec
            assert codec is not None
            record = codec.decode(value)
            if self.fences[_RECORDS].admits(record["epoch"]):
                self._restore(record, rejection=rejection)
        self._first_pass_done.add(_RECORDS)
        return end

    def _restore(self, record: dict[str, Any], *, rejection: bool) -> None:
        link = ChainLink(record["seq"], record["prev_hash"], record["leaf_hash"], record["hash"])
        if rejection:
            self.sequencer.restore_record(
                record["chain_tenant_id"], None, link, record["source_offset"],
                record["rejection"].get("source_index"),
            )  # fmt: skip
        else:
            event = record["event"]
            self.sequencer.restore_record(
                event["tenant_id"], event["event_id"], link, record["source_offset"],
                record.get("source_index"),
            )  # fmt: skip
            if self.guard is not None:
                self.guard.replay(event)
        self.replayed += 1


def snapshot_messages(
    sequencer: Sequencer, guard: Guard | None, *, partition: int, epoch: int,
    position: SnapshotPosition, snapshot_codec: Codec,
) -> list[bytes]:  # fmt: skip
    """The snapshot of ``partition``'s state at ``position``, as snapshot-topic values.

    Requires every chained record before ``position.chained_next`` and checkpoint before
    ``position.checkpoints_next`` of this writer to be acknowledged, and nothing after.
    """
    parts = snapshot.split(snapshot.encode_state(sequencer, guard), SNAPSHOT_PART_BYTES)
    header = {
        "partition": partition,
        "epoch": epoch,
        "snapshot_id": str(uuid.uuid4()),
        "parts": len(parts),
        "chained_next": position.chained_next,
        "checkpoints_next": position.checkpoints_next,
        "records": position.records,
        "taken_at": time.time_ns() // 1000,
    }
    return [
        snapshot_codec.encode({**header, "part": index, "state": part})
        for index, part in enumerate(parts)
    ]


def _publish_claims(
    bootstrap_servers: str, topics: tuple[str, ...], partition: int, epoch: int, writer: str,
    claim_codec: Codec,
) -> dict[str, int]:  # fmt: skip
    """Append a claim to ``partition`` of each topic; return each claim's offset."""
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "acks": "all"}
    )
    offsets: dict[str, int] = {}
    errors: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            errors.append(str(error))
        else:
            offsets[message.topic()] = message.offset()

    value = claim_codec.encode(
        {"partition": partition, "epoch": epoch, "writer": writer,
         "claimed_at": time.time_ns() // 1000}
    )  # fmt: skip
    for topic in topics:
        # Keyed for the compacted snapshots topic, which keeps the newest claim.
        producer.produce(topic, value, CLAIM_KEY, partition=partition, on_delivery=delivered)
    if producer.flush(30) or errors or len(offsets) != len(topics):
        raise ConfigurationError(f"partition {partition}: claim not acknowledged: {errors}")
    return offsets
