"""Where latency goes in authtrail: event → sequenced (worker) vs sequenced → queryable.

The store says when an event became queryable (``stored_at``). The chained topic says
when the worker published its chained record: the Kafka timestamp (CreateTime) the
worker's producer set. Reading that topic after a live phase splits event-to-queryable
latency into the worker's share and the sink's share.
"""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from authtrail.schemas import CHAINED_BATCH, CHAINED_RECORD, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.stream.worker.chained_batch import chained_records


def _quantiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"events": 0}
    ordered = sorted(values)

    def at(level: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(level * len(ordered)))], 2)

    return {
        "events": len(ordered),
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(ordered[-1], 2),
    }


def sequenced_latency(
    bootstrap_servers: str, topic: str, partitions: int, since_us: int
) -> dict[str, Any]:
    """Event-to-sequenced latency (ms) of chained records of events since ``since_us``.

    Reads every partition of ``topic`` to its end; decodes only records published after
    ``since_us`` (by their Kafka timestamp), so earlier phases cost little.
    """
    codec = SingleObjectCodec(load_schema(CHAINED_RECORD))
    batches = SingleObjectCodec(load_schema(CHAINED_BATCH))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"bench-stages-{uuid.uuid4()}",  # assign() only; never commits
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    delays: list[float] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        open_partitions = set(range(partitions))
        since_ms = since_us // 1000
        while open_partitions:
            batch = consumer.consume(10_000, timeout=1.0)
            if not batch:  # nothing within the timeout: treat as the end
                break
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(message.partition())
                    continue
                _, published_ms = message.timestamp()
                if published_ms < since_ms:
                    continue
                value = message.value() or b""
                if value[2:10] not in codec.known_fingerprints | batches.known_fingerprints:
                    continue  # a claim or a chained rejection
                for record in chained_records(value, codec, batches):
                    occurred_at = record["event"]["occurred_at"]
                    if occurred_at >= since_us:
                        delays.append((published_ms * 1000 - occurred_at) / 1000)
    finally:
        consumer.close()
    return _quantiles(delays)
