"""The plain baseline: Kafka → ClickHouse with nothing authtrail adds.

Same broker, same Avro events, same client library (confluent-kafka), same ClickHouse
backend (:class:`sinks.embedded.EmbeddedBackend`, Arrow inserts) and the same batch
policy as the authtrail sink (``batch_rows`` rows or ``batch_seconds``, whichever first).
No sequencing, hashing, Merkle trees, signing, second Kafka hop or deduplication: what
any pipeline storing these events would pay at least. ``authtrail ÷ plain`` is measured
against this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, TopicPartition

from schemas import AUTH_EVENT, load_schema
from schemas.codec import SingleObjectCodec
from sinks.backend import ClickHouseBackend
from sinks.rows import EVENTS_SCHEMA
from sinks.tables import event_columns

PLAIN_TABLE = "plain_events"

PLAIN_SCHEMA = pa.schema(
    [EVENTS_SCHEMA.field(column.name) for column in event_columns()]
    + [pa.field("kafka_partition", pa.uint32()), pa.field("kafka_offset", pa.uint64())]
)


def create_statement() -> str:
    """DDL of the baseline table: the event columns of ``events``, no integrity columns."""
    columns = ",\n    ".join(f"`{c.name}` {c.clickhouse_type}" for c in event_columns())
    return f"""CREATE TABLE IF NOT EXISTS {PLAIN_TABLE} (
    {columns},
    `kafka_partition` UInt32,
    `kafka_offset` UInt64,
    `stored_at` DateTime64(6, 'UTC') DEFAULT now64(6)
) ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, occurred_at)"""


class PlainConsumer:
    """Consumes ``topic`` and inserts every event into :data:`PLAIN_TABLE` in batches."""

    def __init__(
        self,
        backend: ClickHouseBackend,
        *,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        batch_rows: int,
        batch_seconds: float,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._backend = backend
        self._topic = topic
        self._batch_rows = batch_rows
        self._batch_seconds = batch_seconds
        self._codec = SingleObjectCodec(load_schema(AUTH_EVENT))
        self._names = [column.name for column in event_columns()]
        self.stored = 0
        backend.command(create_statement())
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **(consumer_config or {}),
            }
        )

    def run(self, stop: threading.Event) -> None:
        """Consume and store until ``stop`` is set; then store what is buffered and close."""
        rows: list[dict[str, Any]] = []
        offsets: dict[int, int] = {}
        first_buffered: float | None = None
        self._consumer.subscribe([self._topic])
        try:
            while not stop.is_set():
                for message in self._consumer.consume(self._batch_rows, timeout=0.2):
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise RuntimeError(f"consume error: {error}")
                        continue
                    partition, offset = message.partition(), message.offset()
                    assert partition is not None and offset is not None  # set on records
                    rows.append(self._row(message.value() or b"", partition, offset))
                    offsets[partition] = offset
                    first_buffered = first_buffered or time.monotonic()
                waited = first_buffered is not None and (
                    time.monotonic() - first_buffered >= self._batch_seconds
                )
                if len(rows) >= self._batch_rows or waited:
                    self._insert(rows, offsets)
                    rows, offsets, first_buffered = [], {}, None
            self._insert(rows, offsets)
        finally:
            self._consumer.close()

    def _row(self, value: bytes, partition: int, offset: int) -> dict[str, Any]:
        event = self._codec.decode(value)
        row = {name: event.get(name) for name in self._names}
        row["attributes"] = list((event.get("attributes") or {}).items())
        row["kafka_partition"] = partition
        row["kafka_offset"] = offset
        return row

    def _insert(self, rows: list[dict[str, Any]], offsets: dict[int, int]) -> None:
        if rows:
            self._backend.insert_arrow(PLAIN_TABLE, pa.Table.from_pylist(rows, schema=PLAIN_SCHEMA))
            self.stored += len(rows)
        if offsets:
            commits = [TopicPartition(self._topic, p, o + 1) for p, o in offsets.items()]
            self._consumer.commit(offsets=commits, asynchronous=True)
