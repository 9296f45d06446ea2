"""Decoded Kafka records → Arrow tables shaped like the ClickHouse tables (sinks/tables.py).

Arrow is the insert format on every backend: chdb reads it natively through ``Python()``
and clickhouse-connect sends it as Arrow over HTTP; text formats are ~100x slower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from sinks.tables import event_columns

_TIMESTAMP = pa.timestamp("us", tz="UTC")
_HASH = pa.binary(32)


def _arrow_type(clickhouse_type: str) -> pa.DataType:
    base = clickhouse_type.removeprefix("Nullable(").removesuffix(")")
    if base.startswith("DateTime64"):
        return _TIMESTAMP
    if base.startswith("Map("):
        return pa.map_(pa.string(), pa.string())
    if base == "Int64":
        return pa.int64()
    return pa.string()  # String and LowCardinality(String)


def _schema(fields: Sequence[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema([pa.field(name, kind) for name, kind in fields])


EVENTS_SCHEMA = _schema(
    [(column.name, _arrow_type(column.clickhouse_type)) for column in event_columns()]
    + [
        ("seq", pa.uint64()),
        ("prev_hash", _HASH),
        ("leaf_hash", _HASH),
        ("hash", _HASH),
        ("epoch", pa.uint64()),
        ("kafka_cluster", pa.string()),
        ("kafka_partition", pa.uint32()),
        ("kafka_offset", pa.uint64()),
    ]
)
CHECKPOINTS_SCHEMA = _schema(
    [
        ("tenant_id", pa.string()),
        ("size", pa.uint64()),
        ("batch_first_seq", pa.uint64()),
        ("batch_last_seq", pa.uint64()),
        ("root", _HASH),
        ("batch_root", _HASH),
        ("chain_head", _HASH),
        ("prev_digest", _HASH),
        ("time_micros", _TIMESTAMP),
        ("note", pa.string()),
        ("epoch", pa.uint64()),
        ("kafka_cluster", pa.string()),
        ("kafka_partition", pa.uint32()),
        ("kafka_offset", pa.uint64()),
    ]
)
REJECTED_SCHEMA = _schema(
    [
        ("original", pa.binary()),
        ("original_key", pa.binary()),
        ("reason", pa.string()),
        ("error_kind", pa.string()),
        ("source_topic", pa.string()),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("source_timestamp", _TIMESTAMP),
        ("tenant_id", pa.string()),
        ("rejected_at", _TIMESTAMP),
        ("kafka_cluster", pa.string()),
        ("kafka_partition", pa.uint32()),
        ("kafka_offset", pa.uint64()),
    ]
)


def chained_row(
    record: Mapping[str, Any], cluster: str, partition: int, offset: int
) -> dict[str, Any]:
    """One ``events`` row from a decoded ChainedRecord."""
    event = record["event"]
    row = {column.name: event.get(column.name) for column in event_columns()}
    row["attributes"] = list((event.get("attributes") or {}).items())
    row.update(
        seq=record["seq"],
        prev_hash=record["prev_hash"],
        leaf_hash=record["leaf_hash"],
        hash=record["hash"],
        epoch=record.get("epoch", 0),
        kafka_cluster=cluster,
        kafka_partition=partition,
        kafka_offset=offset,
    )
    return row


def checkpoint_row(
    record: Mapping[str, Any], cluster: str, partition: int, offset: int
) -> dict[str, Any]:
    """One ``checkpoints`` row from a decoded SignedCheckpoint."""
    return {
        "epoch": 0,  # written before epochs existed
        **record,
        "kafka_cluster": cluster,
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def rejected_row(
    record: Mapping[str, Any], cluster: str, partition: int, offset: int
) -> dict[str, Any]:
    """One ``rejected`` row from a decoded DeadLetter."""
    return {
        **record,
        "kafka_cluster": cluster,
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def to_arrow(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts keyed by column name) as an Arrow table of ``schema``."""
    return pa.Table.from_pylist(list(rows), schema=schema)
