"""An insert the size of the sink's writes lands in ``events`` as one Compact part (all
columns in one data file), where ClickHouse's default would write a Wide part (two files
a column): on the real engine, with authtrail's own DDL."""

from __future__ import annotations

from pathlib import Path

import pytest

from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.tables import EVENTS_TABLE, create_statements

pytestmark = pytest.mark.integration

# 20 000 rows (the sink's default insert) of ~700 bytes: above ClickHouse's default
# min_bytes_for_wide_part (10 MiB) uncompressed.
_ROWS = (
    "SELECT 'acme' AS tenant_id, number + 1 AS seq, randomPrintableASCII(600) AS user_agent, "
    "toDateTime64('2026-12-01 00:00:00', 6, 'UTC') AS occurred_at FROM numbers(20000)"
)


def _part_types(backend: EmbeddedBackend, table: str) -> list[str]:
    return backend.query_arrow(
        "SELECT part_type FROM system.parts WHERE database = currentDatabase() "
        "AND table = {table:String} AND active ORDER BY name",
        {"table": table},
    ).column(0).to_pylist()  # fmt: skip


def test_an_insert_of_the_sinks_size_is_one_compact_part(tmp_path: Path) -> None:
    with EmbeddedBackend(tmp_path / "clickhouse") as backend:
        for statement in create_statements():
            backend.command(statement)
        # The same columns under ClickHouse's default part settings, for contrast.
        backend.command(
            f"CREATE TABLE default_parts AS {EVENTS_TABLE} "
            "ENGINE = MergeTree PARTITION BY toYYYYMM(occurred_at) ORDER BY (tenant_id, seq)"
        )
        for table in (EVENTS_TABLE, "default_parts"):
            backend.command(
                f"INSERT INTO {table} (tenant_id, seq, user_agent, occurred_at) {_ROWS}"
            )
        assert _part_types(backend, "default_parts") == ["Wide"]
        assert _part_types(backend, EVENTS_TABLE) == ["Compact"]
