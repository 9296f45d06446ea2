"""An insert the size of the sink's writes lands in ``events`` as one Compact part (all
columns in one data file), where ClickHouse's default would write a Wide part (two files
a column): on the real engine, with authtrail's own DDL, and on a store created before.
Merges of small parts wait for more of them (``merge_selector_base``), on every table."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from authtrail.errors import StoreError
from authtrail.sinks.clickhouse_sql import ACCESS_DENIED
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.schema_setup import ensure_schema
from authtrail.sinks.tables import (
    EVENTS_TABLE,
    MERGE_TREE_TABLES,
    STORE_PART_SETTINGS,
    create_statements,
    part_settings_statement,
)

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


def test_an_older_stores_tables_get_the_setting_when_the_schema_is_ensured(
    tmp_path: Path,
) -> None:
    with EmbeddedBackend(tmp_path / "clickhouse") as backend:
        for statement in create_statements():  # as created before 2026-12-06
            backend.command(statement.replace(f", {STORE_PART_SETTINGS}", ""))
        assert ensure_schema(backend) == [
            part_settings_statement(table) for table in MERGE_TREE_TABLES
        ]
        assert ensure_schema(backend) == []  # set once
        backend.command(
            f"INSERT INTO {EVENTS_TABLE} (tenant_id, seq, user_agent, occurred_at) {_ROWS}"
        )
        assert _part_types(backend, EVENTS_TABLE) == ["Compact"]


def _merge_base(backend: EmbeddedBackend, table: str) -> str | None:
    """The table's merge_selector_base as the engine reports it (None: ClickHouse's default)."""
    engine = backend.query_arrow(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
        "AND name = {table:String}",
        {"table": table},
    ).column(0)[0].as_py()  # fmt: skip
    found = re.search(r"merge_selector_base = (\d+)", engine)
    return found.group(1) if found else None


def test_every_table_merges_small_parts_at_the_raised_base(tmp_path: Path) -> None:
    with EmbeddedBackend(tmp_path / "clickhouse") as backend:
        for statement in create_statements():
            backend.command(statement)
        assert [_merge_base(backend, table) for table in MERGE_TREE_TABLES] == ["20"] * 4


def test_a_store_with_compact_parts_only_gets_the_merge_base(tmp_path: Path) -> None:
    """A store created between the two settings (Compact parts, ClickHouse's merge base)."""
    with EmbeddedBackend(tmp_path / "clickhouse") as backend:
        for statement in create_statements():
            backend.command(statement.replace(", merge_selector_base = 20", ""))
        assert _merge_base(backend, EVENTS_TABLE) is None
        assert ensure_schema(backend) == [
            part_settings_statement(table) for table in MERGE_TREE_TABLES
        ]
        assert [_merge_base(backend, table) for table in MERGE_TREE_TABLES] == ["20"] * 4
        assert ensure_schema(backend) == []


def test_a_credential_that_may_not_change_the_setting_leaves_the_store_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with EmbeddedBackend(tmp_path / "clickhouse") as backend:
        for statement in create_statements():
            backend.command(statement.replace(f", {STORE_PART_SETTINGS}", ""))
        command = backend.command

        def writer_command(sql: str, settings: Any = None) -> None:
            if " MODIFY SETTING " in sql:
                raise StoreError("Not enough privileges (injected)", ACCESS_DENIED)
            command(sql, settings)

        backend.command = writer_command  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="sinks"):
            ensure_schema(backend)  # no ConfigurationError: the store works without it
        assert "not allowed for this credential" in caplog.text
        backend.command = command  # type: ignore[method-assign]
        assert len(ensure_schema(backend)) == len(MERGE_TREE_TABLES)  # still unset until now
