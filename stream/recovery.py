"""Rebuild a partition's sequencer from what it already published (Kafka alone).

The chained-records and checkpoints topics are the sequencer's durable state: each input
partition ``p`` publishes only to partition ``p`` of both, so reading those two partitions
from the start rebuilds every chain head, Merkle log, open batch and event-id window of
the tenants of ``p`` — on this machine or any other. Runs in a thread (blocking reads).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)

from authtrail.errors import ConfigurationError
from schemas.codec import Codec
from stream.chain import ChainLink
from stream.checkpoint import open_checkpoint
from stream.fencing import Fence
from stream.note import Keyring
from stream.sequencer import Sequencer

_POLL_SECONDS = 1.0
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
    """What recovering one partition found: records replayed and the epoch claimed."""

    replayed: int
    epoch: int


def recover(
    sequencer: Sequencer,
    *,
    bootstrap_servers: str,
    partition: int,
    chained_topic: str,
    checkpoints_topic: str,
    chained_codec: Codec,
    checkpoint_codec: Codec,
    claim_codec: Codec,
    keyring: Keyring,
    log_origin: str,
    writer: str,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Recovery:
    """Rebuild ``partition``'s state from what was published, then claim the partition.

    1. Replay its checkpoints, then its chained records, into ``sequencer`` (and each
       chained event into ``on_event``, e.g. the lockout guard), ignoring records fenced
       off by an earlier claim. Checkpoints come first: each was published after the
       records it covers were acknowledged.
    2. Append a claim with the next epoch to both partitions (docs/PIPELINE.md, fencing).
    3. Replay what a previous owner still wrote between step 1's end and the claim.

    Raises :class:`ConfigurationError` if another worker claimed the same epoch first (the
    caller exits; a restart claims a higher one).
    """
    replay = _Replay(sequencer, chained_codec, checkpoint_codec, claim_codec, keyring,
                     log_origin, on_event)  # fmt: skip

    def read(topic: str, start: int | None = None, end: int | None = None) -> Any:
        return read_messages(bootstrap_servers, topic, partition, config, start=start, end=end)

    checkpoints_end = replay.checkpoints(read(checkpoints_topic))
    records_end = replay.records(read(chained_topic))
    epoch = max(fence.epoch for fence in replay.fences.values()) + 1
    claimed = _publish_claims(
        bootstrap_servers, (checkpoints_topic, chained_topic), partition, epoch, writer,
        claim_codec,
    )  # fmt: skip
    replay.checkpoints(read(checkpoints_topic, checkpoints_end, claimed[checkpoints_topic]))
    replay.records(read(chained_topic, records_end, claimed[chained_topic]))
    if replay.rival_claim >= epoch:
        raise ConfigurationError(
            f"partition {partition}: another worker claimed epoch {replay.rival_claim} first"
        )
    return Recovery(replay.replayed, epoch)


_CHECKPOINTS, _RECORDS = "checkpoints", "records"


class _Replay:
    def __init__(
        self, sequencer: Sequencer, chained_codec: Codec, checkpoint_codec: Codec,
        claim_codec: Codec, keyring: Keyring, log_origin: str,
        on_event: Callable[[dict[str, Any]], None] | None,
    ) -> None:  # fmt: skip
        self.sequencer, self.keyring, self.log_origin = sequencer, keyring, log_origin
        self.chained_codec, self.checkpoint_codec = chained_codec, checkpoint_codec
        self.claim_fingerprint = claim_codec.reader_fingerprint  # type: ignore[attr-defined]
        self.claim_codec, self.on_event = claim_codec, on_event
        self.fences = {_CHECKPOINTS: Fence(), _RECORDS: Fence()}
        self.replayed = 0
        self.rival_claim = -1  # highest claim read after the first pass (tail only)
        self._first_pass_done: set[str] = set()

    def _claim(self, kind: str, value: bytes) -> bool:
        if value[2:10] != self.claim_fingerprint:
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
            checkpoint = open_checkpoint(record["note"], self.keyring, origin)
            self.sequencer.restore_checkpoint(tenant_id, checkpoint)
        self._first_pass_done.add(_CHECKPOINTS)
        return end

    def records(self, messages: Iterator[tuple[int, Any, bytes, Any]]) -> int:
        end = 0
        for offset, _, value, _ in messages:
            end = offset + 1
            if self._claim(_RECORDS, value):
                continue
            record = self.chained_codec.decode(value)
            if not self.fences[_RECORDS].admits(record["epoch"]):
                continue
            event = record["event"]
            link = ChainLink(
                record["seq"], record["prev_hash"], record["leaf_hash"], record["hash"]
            )
            self.sequencer.restore_record(
                event["tenant_id"], event["event_id"], link, record["source_offset"]
            )
            if self.on_event is not None:
                self.on_event(event)
            self.replayed += 1
        self._first_pass_done.add(_RECORDS)
        return end


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
        producer.produce(topic, value, partition=partition, on_delivery=delivered)
    if producer.flush(30) or errors or len(offsets) != len(topics):
        raise ConfigurationError(f"partition {partition}: claim not acknowledged: {errors}")
    return offsets
