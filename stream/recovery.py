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
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, TopicPartition

from authtrail.errors import ConfigurationError
from schemas.codec import Codec
from stream.chain import ChainLink
from stream.checkpoint import open_checkpoint
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


def recover(
    sequencer: Sequencer,
    *,
    bootstrap_servers: str,
    partition: int,
    chained_topic: str,
    checkpoints_topic: str,
    chained_codec: Codec,
    checkpoint_codec: Codec,
    keyring: Keyring,
    log_origin: str,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    config: Mapping[str, Any] | None = None,
) -> int:
    """Replay partition ``partition``'s checkpoints, then its chained records, into
    ``sequencer`` (and each chained event into ``on_event``, e.g. the lockout guard).
    Returns the number of records replayed.

    Checkpoints come first: each was published after the records it covers were
    acknowledged, so every checkpoint read here is covered by the records read next.
    """
    for _, value in read_partition(bootstrap_servers, checkpoints_topic, partition, config):
        record = checkpoint_codec.decode(value)
        tenant_id = record["tenant_id"]
        origin = f"{log_origin}/{tenant_id}"
        sequencer.restore_checkpoint(tenant_id, open_checkpoint(record["note"], keyring, origin))
    replayed = 0
    for _, value in read_partition(bootstrap_servers, chained_topic, partition, config):
        record = chained_codec.decode(value)
        event = record["event"]
        link = ChainLink(record["seq"], record["prev_hash"], record["leaf_hash"], record["hash"])
        sequencer.restore_record(
            event["tenant_id"], event["event_id"], link, record["source_offset"]
        )
        if on_event is not None:
            on_event(event)
        replayed += 1
    return replayed
