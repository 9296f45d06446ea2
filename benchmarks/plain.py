"""The plain baseline: Kafka → ClickHouse with nothing authtrail adds.

Same broker, same Avro events (bare or in envelopes), same client library
(confluent-kafka), same ClickHouse backend and the same store path as the authtrail sink:
the event bodies, never decoded in Python, rewritten in C as one Native block per insert
(sinks/native_rows.py; an Avro container where that is not built); the same batch
policy (``batch_rows`` rows or ``batch_seconds``, whichever first). No sequencing,
hashing, Merkle trees, signing, second Kafka hop or deduplication: what any pipeline
storing these events would pay at least. ``authtrail ÷ plain`` is therefore the cost of
integrity, not of two sinks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from authtrail.schemas import AUTH_EVENT, EVENT_ENVELOPE, load_schema
from authtrail.schemas.codec import (
    SINGLE_OBJECT_HEADER_SIZE,
    SINGLE_OBJECT_MARKER,
    SingleObjectCodec,
    avro_long,
)
from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.native_rows import rows_format
from authtrail.sinks.tables import STORE_PART_SETTINGS, event_columns

PLAIN_TABLE = "plain_events"
_KAFKA_FIELDS = ({"name": "kafka_partition", "type": "int"},
                 {"name": "kafka_offset", "type": "long"})  # fmt: skip


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
ORDER BY (tenant_id, occurred_at)
SETTINGS {STORE_PART_SETTINGS}"""


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
        event_schema = load_schema(AUTH_EVENT)
        self._event_header = (
            SINGLE_OBJECT_MARKER + SingleObjectCodec(event_schema).reader_fingerprint
        )
        self._envelopes = SingleObjectCodec(load_schema(EVENT_ENVELOPE))
        self._envelope_header = SINGLE_OBJECT_MARKER + self._envelopes.reader_fingerprint
        columns = [column.name for column in event_columns()]
        columns += [str(field["name"]) for field in _KAFKA_FIELDS]
        self._rows = rows_format([*event_schema["fields"], *_KAFKA_FIELDS], len(_KAFKA_FIELDS),
                                 columns)  # fmt: skip
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
        blocks: list[Any] = []  # what self._rows.block() made
        rows = 0
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
                    bodies = self._bodies(message.value() or b"")
                    position = avro_long(partition) + avro_long(offset)
                    blocks.append(self._rows.block(bodies, position))
                    rows += len(bodies)
                    offsets[partition] = offset
                    first_buffered = first_buffered or time.monotonic()
                waited = first_buffered is not None and (
                    time.monotonic() - first_buffered >= self._batch_seconds
                )
                if rows >= self._batch_rows or waited:
                    self._insert(blocks, rows, offsets)
                    blocks, rows, offsets, first_buffered = [], 0, {}, None
            self._insert(blocks, rows, offsets)
        finally:
            self._consumer.close()

    def _bodies(self, value: bytes) -> list[bytes]:
        """The Avro bodies of the events in one message (one bare event or an envelope)."""
        if value.startswith(self._envelope_header):
            events = self._envelopes.decode(value)["events"]
        else:
            events = [value]
        if any(not event.startswith(self._event_header) for event in events):
            raise RuntimeError("the plain baseline reads today's auth event schema only")
        return [event[SINGLE_OBJECT_HEADER_SIZE:] for event in events]

    def _insert(self, blocks: list[Any], rows: int, offsets: dict[int, int]) -> None:
        if rows:
            data = self._rows.container(blocks)
            self._backend.insert_data(
                PLAIN_TABLE, self._rows.columns, data, self._rows.input_format
            )
            self.stored += rows
        if offsets:
            commits = [TopicPartition(self._topic, p, o + 1) for p, o in offsets.items()]
            self._consumer.commit(offsets=commits, asynchronous=True)
