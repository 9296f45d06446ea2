"""Sample auth-event rows and checks for ClickHouse integration tests (no fixtures here).

``make_events`` builds rows shaped like the real events table (String, FixedString(32)
hashes, UInt64, DateTime64(6), LowCardinality, Map, Nullable) in (tenant_id, seq) order.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa

from authtrail.sinks.clickhouse import ClickHouseBackend

ROWS = 100_000
TENANTS = 7
EVENTS_DDL = """CREATE TABLE events (
    tenant_id String,
    seq UInt64,
    ts DateTime64(6, 'UTC'),
    leaf_hash FixedString(32),
    outcome LowCardinality(String),
    attributes Map(String, String),
    reason Nullable(String)
) ENGINE = MergeTree
ORDER BY (tenant_id, seq)
PARTITION BY toYYYYMM(ts)
SETTINGS non_replicated_deduplication_window = 1000"""
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def make_events(rows: int, start: int = 0) -> pa.Table:
    """``rows`` events in (tenant_id, seq) order, over four months (several partitions)."""
    indexes = range(start, start + rows)
    return pa.table(
        {
            "tenant_id": pa.array([f"tenant-{i % TENANTS}" for i in indexes]),
            "seq": pa.array([i // TENANTS + 1 for i in indexes], pa.uint64()),
            "ts": pa.array(
                [
                    EPOCH + dt.timedelta(seconds=i * 105, microseconds=i % 1_000_000)
                    for i in indexes
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "leaf_hash": pa.array(
                [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in indexes], pa.binary(32)
            ),
            "outcome": pa.array(["success" if i % 3 else "failure" for i in indexes]),
            "attributes": pa.array(
                [[("ip", f"10.0.{i % 256}.{i % 200}"), ("note", "it's")][: i % 3] for i in indexes],
                pa.map_(pa.string(), pa.string()),
            ),
            "reason": pa.array([None if i % 4 else f"bad password #{i}" for i in indexes]),
        }
    ).sort_by([("tenant_id", "ascending"), ("seq", "ascending")])


def count(backend: ClickHouseBackend, table: str = "events") -> int:
    return int(backend.query_arrow(f"SELECT count() FROM {table}").column(0)[0].as_py())


def assert_same_values(actual: pa.Table, expected: pa.Table) -> None:
    assert actual.column_names == expected.column_names
    for name in expected.column_names:
        want = expected.column(name).combine_chunks()
        got = actual.column(name).combine_chunks()
        if pa.types.is_map(want.type):  # nullability flags of map fields differ; values must not
            assert got.to_pylist() == want.to_pylist(), name
        else:
            assert got.cast(want.type).equals(want), name
