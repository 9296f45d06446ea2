"""ClickHouse tables of authtrail, derived from the Avro event schema.

The event schema (``schemas/auth_event.avsc``) is the one source of truth: it gives the
event columns of the ``events`` table, their Arrow types for inserts, and the SQL that
rebuilds each row's canonical leaf (docs/INTEGRITY.md §2) inside ClickHouse for
``authtrail verify``. A field added to the schema therefore reaches all three at once.

All tables are append-only MergeTree tables: authtrail issues no UPDATE, DELETE, or
ALTER … DELETE, and nothing in the product offers one. Rows are never merged away
(no Replacing/Collapsing engine), so whatever is stored stays visible to verification.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from authtrail.schemas import AUTH_EVENT, load_schema
from authtrail.stream.core.canonical import SEALED_PREFIX

EVENTS_TABLE = "events"
CHECKPOINTS_TABLE = "checkpoints"
REJECTED_TABLE = "rejected"
TILES_TABLE = "tiles"
# The column each table is partitioned by month on (its PARTITION BY toYYYYMM(...) below).
MONTH_COLUMNS = {
    EVENTS_TABLE: "occurred_at",
    CHECKPOINTS_TABLE: "time_micros",
    REJECTED_TABLE: "rejected_at",
}
LOCKOUTS_VIEW = "lockouts"

_UTC_MICROS = "DateTime64(6, 'UTC')"


@dataclass(frozen=True)
class EventColumn:
    """One event field as a column: its ClickHouse type and canonical-leaf kind."""

    name: str
    clickhouse_type: str
    kind: str  # "s" string/enum, "i" integer, "t" timestamp-micros, "m" map<string,string>
    nullable: bool


def _column(field: dict[str, Any]) -> EventColumn:
    field_type = field["type"]
    nullable = isinstance(field_type, list)
    if nullable:
        (field_type,) = [branch for branch in field_type if branch != "null"]
    if isinstance(field_type, dict) and field_type.get("logicalType") == "timestamp-micros":
        base, kind = _UTC_MICROS, "t"
    elif isinstance(field_type, dict) and field_type["type"] == "enum":
        base, kind = "LowCardinality(String)", "s"
    elif isinstance(field_type, dict) and field_type["type"] == "map":
        return EventColumn(field["name"], "Map(String, String)", "m", False)
    elif field_type == "string":
        base, kind = "String", "s"
    elif field_type in ("int", "long"):
        base, kind = "Int64", "i"
    else:  # the canonical leaf has no encoding for anything else (INTEGRITY.md §2)
        raise ValueError(f"event field {field['name']!r} has unsupported type {field_type!r}")
    return EventColumn(field["name"], f"Nullable({base})" if nullable else base, kind, nullable)


@functools.cache
def event_columns() -> tuple[EventColumn, ...]:
    """The event's columns, in schema order."""
    return tuple(_column(field) for field in load_schema(AUTH_EVENT)["fields"])


# Each rejection's place in its partition's rejection log (stream/core/rejection.py). Nullable:
# rows stored before rejections were chained have none, and stores made then get the
# columns added (create_statements).
_REJECTION_LINK_COLUMNS = (
    ("chain_tenant_id", "Nullable(String)"),
    ("seq", "Nullable(UInt64)"),
    ("prev_hash", "Nullable(FixedString(32))"),
    ("leaf_hash", "Nullable(FixedString(32))"),
    ("hash", "Nullable(FixedString(32))"),
    ("epoch", "Nullable(UInt64)"),
    # The rejected event's index in its envelope (schemas/dead_letter.avsc); part of the
    # leaf when set, so verify needs it.
    ("source_index", "Nullable(Int32)"),
)
_REJECTION_LINK_DDL = ",\n    ".join(f"`{name}` {kind}" for name, kind in _REJECTION_LINK_COLUMNS)


_PART_SETTINGS = {
    # An insert's part (~12 MB for 20 000 events) stays Compact: all columns in one data
    # file, ~12 files a part, where a Wide part writes two a column (four a String column):
    # ~200. Merges write the larger parts Wide, for reads of a few columns. Creating a file
    # cost 20-700 us on this project's machines (ext4 without a journal skips recently
    # deleted inodes one by one), which made Wide inserts cost more than decoding the rows.
    "min_bytes_for_wide_part": 134217728,
    # A paced load inserts every 250 ms (~4 000 rows), and merges of those small parts took
    # a third of the store's CPU. A merge of parts of similar size waits for about this many
    # of them instead of ClickHouse's 5: each row is rewritten fewer times (store CPU ~21 ->
    # ~17 us/row at 15 000 events/s, docs/PERFORMANCE.md). More parts stay active meanwhile
    # (12-18 instead of 6-8 after 1.2 M rows); older parts still merge at a lower base.
    "merge_selector_base": 20,
}
PART_SETTING_NAMES = tuple(_PART_SETTINGS)
# Also the plain baseline's (benchmarks/plain.py): the same store path.
STORE_PART_SETTINGS = ", ".join(f"{name} = {value}" for name, value in _PART_SETTINGS.items())
# The deduplication window keeps the tokens of the last 1 000 inserts (sinks/lost_inserts.py).
_MERGE_TREE_SETTINGS = f"non_replicated_deduplication_window = 1000, {STORE_PART_SETTINGS}"
#: The tables created with those settings.
MERGE_TREE_TABLES = (EVENTS_TABLE, CHECKPOINTS_TABLE, REJECTED_TABLE, TILES_TABLE)


def part_settings_statement(table: str) -> str:
    """The part settings above for ``table`` of a store created before them (2026-12-06)."""
    return f"ALTER TABLE {table} MODIFY SETTING {STORE_PART_SETTINGS}"


def create_statements() -> list[str]:
    """DDL for every authtrail table and view (idempotent: ``IF NOT EXISTS``)."""
    from authtrail.sinks.views import view_statements  # the views module reads this one's names

    event_ddl = ",\n    ".join(f"`{c.name}` {c.clickhouse_type}" for c in event_columns())
    return [
        f"""CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (
    {event_ddl},
    `seq` UInt64,
    `prev_hash` FixedString(32),
    `leaf_hash` FixedString(32),
    `hash` FixedString(32),
    `epoch` UInt64,
    `kafka_cluster` LowCardinality(String),
    `kafka_partition` UInt32,
    `kafka_offset` UInt64,
    `stored_at` {_UTC_MICROS} DEFAULT now64(6),
    INDEX occurred_at_minmax occurred_at TYPE minmax GRANULARITY 4
) ENGINE = MergeTree
PARTITION BY toYYYYMM({MONTH_COLUMNS[EVENTS_TABLE]})
ORDER BY (tenant_id, seq)
SETTINGS {_MERGE_TREE_SETTINGS}""",
        f"""CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} (
    `tenant_id` String,
    `size` UInt64,
    `batch_first_seq` UInt64,
    `batch_last_seq` UInt64,
    `root` FixedString(32),
    `batch_root` FixedString(32),
    `chain_head` FixedString(32),
    `prev_digest` FixedString(32),
    `time_micros` {_UTC_MICROS},
    `note` String,
    `epoch` UInt64,
    `kafka_cluster` LowCardinality(String),
    `kafka_partition` UInt32,
    `kafka_offset` UInt64,
    `stored_at` {_UTC_MICROS} DEFAULT now64(6)
) ENGINE = MergeTree
PARTITION BY toYYYYMM({MONTH_COLUMNS[CHECKPOINTS_TABLE]})
ORDER BY (tenant_id, size)
SETTINGS {_MERGE_TREE_SETTINGS}""",
        f"""CREATE TABLE IF NOT EXISTS {REJECTED_TABLE} (
    `original` String,
    `original_key` Nullable(String),
    `reason` String,
    `error_kind` LowCardinality(String),
    `source_topic` String,
    `source_partition` Int32,
    `source_offset` Int64,
    `source_timestamp` Nullable({_UTC_MICROS}),
    `tenant_id` Nullable(String),
    `rejected_at` {_UTC_MICROS},
    {_REJECTION_LINK_DDL},
    `kafka_cluster` LowCardinality(String),
    `kafka_partition` UInt32,
    `kafka_offset` UInt64,
    `stored_at` {_UTC_MICROS} DEFAULT now64(6)
) ENGINE = MergeTree
PARTITION BY toYYYYMM({MONTH_COLUMNS[REJECTED_TABLE]})
ORDER BY (error_kind, rejected_at)
SETTINGS {_MERGE_TREE_SETTINGS}""",
        f"""ALTER TABLE {REJECTED_TABLE} {
            ", ".join(
                f"ADD COLUMN IF NOT EXISTS `{name}` {kind}"
                for name, kind in _REJECTION_LINK_COLUMNS
            )
        }""",
        # Stored tlog-tiles entries of level >= 1 (level 0 is events.leaf_hash): derived
        # data, rebuilt from the leaves and never evidence (docs/INTEGRITY.md §10.6).
        f"""CREATE TABLE IF NOT EXISTS {TILES_TABLE} (
    `tenant_id` String,
    `level` UInt8,
    `entry_index` UInt64,
    `hash` FixedString(32),
    `stored_at` {_UTC_MICROS} DEFAULT now64(6)
) ENGINE = MergeTree
ORDER BY (tenant_id, level, entry_index)
SETTINGS {_MERGE_TREE_SETTINGS}""",
        # Lockout decisions are ordinary chained events (service authtrail-lockout); this
        # view only gives their attributes columns. Times in attributes are microseconds.
        f"""CREATE VIEW IF NOT EXISTS {LOCKOUTS_VIEW} AS
SELECT tenant_id, seq, occurred_at, event_type, user_id, user_name, client_ip,
    attributes['reason'] AS reason,
    toUInt32OrZero(attributes['failure_count']) AS failure_count,
    attributes['permanent'] = 'true' AS permanent,
    fromUnixTimestamp64Micro(toInt64OrNull(attributes['locked_until']), 'UTC') AS locked_until,
    fromUnixTimestamp64Micro(toInt64OrNull(attributes['window_start']), 'UTC') AS window_start,
    fromUnixTimestamp64Micro(toInt64OrNull(attributes['window_end']), 'UTC') AS window_end,
    toUInt32OrZero(attributes['distinct_users']) AS distinct_users,
    attributes['sample_user_names'] AS sample_user_names,
    attributes['triggering_event_id'] AS triggering_event_id,
    message
FROM {EVENTS_TABLE}
WHERE service = 'authtrail-lockout'""",
        *view_statements(),
    ]


# --- canonical leaf in SQL (docs/INTEGRITY.md §2), for verification inside ClickHouse -----


def _big_endian(expression: str, width: int) -> str:
    # The integer's little-endian memory as a FixedString (zero bytes kept), reversed:
    # several times cheaper than unhex(leftPad(hex(...))), which inside the attributes
    # lambda alone cost ~4 µs a row.
    return f"reverse(reinterpretAsFixedString(toUInt{8 * width}({expression})))"


def _u32(expression: str) -> str:
    return _big_endian(expression, 4)


def _label(name: str, kind: str) -> str:
    # The length-prefixed name and type byte are constants: one literal, built here.
    data = len(name).to_bytes(4, "big") + name.encode() + kind.encode()
    return "'" + "".join(f"\\x{byte:02x}" for byte in data) + "'"


def _length_prefixed(expression: str) -> str:
    # Two arguments for the enclosing concat(), not a nested one: one copy fewer a field.
    return f"{_u32(f'length({expression})')}, {expression}"


def _field_sql(column: EventColumn) -> str:
    name = f"`{column.name}`"
    value = f"assumeNotNull({name})" if column.nullable else name
    if column.kind == "m":
        entries = (
            "arrayStringConcat(arrayMap((k, v) -> concat("
            f"{_length_prefixed('k')}, {_length_prefixed('v')}), "
            f"mapKeys(mapSort({name})), mapValues(mapSort({name}))))"
        )
        label = _label(column.name, "m")
        return f"if(empty({name}), '', concat({label}, {_u32(f'length({name})')}, {entries}))"
    if column.kind == "t":
        text = f"toString(toUnixTimestamp64Micro({value}))"
        encoded = f"concat({_label(column.name, 'i')}, {_length_prefixed(text)})"
    elif column.kind == "i":
        encoded = f"concat({_label(column.name, 'i')}, {_length_prefixed(f'toString({value})')})"
    else:  # a sealed value is leaf type "c" (INTEGRITY.md §2.1), same bytes otherwise
        encoded = (
            f"concat(if({_sealed_sql(column)}, {_label(column.name, 'c')}, "
            f"{_label(column.name, 's')}), {_length_prefixed(value)})"
        )
    return f"if(isNull({name}), '', {encoded})" if column.nullable else encoded


def _sealed_sql(column: EventColumn) -> str:
    # assumeNotNull reads NULL as '': never sealed, and no Nullable result to carry along.
    return f"startsWith(assumeNotNull(`{column.name}`), '{SEALED_PREFIX}')"


@functools.cache
def canonical_leaf_sql() -> str:
    """A ClickHouse expression equal to the canonical leaf (v1 or v2) of an ``events`` row."""
    fields = sorted(event_columns(), key=lambda column: column.name.encode())
    sealed = " OR ".join(_sealed_sql(column) for column in fields if column.kind == "s")
    magic = f"if({sealed}, 'authtrail-event-v2\\n', 'authtrail-event-v1\\n')"
    return f"concat({magic}, " + ", ".join(map(_field_sql, fields)) + ")"


def chain_hash_sql() -> str:
    """A ClickHouse expression for the chain hash of an ``events`` row (INTEGRITY.md §4)."""
    seq = _big_endian("seq", 8)
    return (
        "SHA256(concat('authtrail-chain-v1\\n', "
        f"{_length_prefixed('tenant_id')}, {seq}, prev_hash, leaf_hash))"
    )


def leaf_hash_sql() -> str:
    """A ClickHouse expression for the RFC 6962 leaf hash of an ``events`` row."""
    return f"SHA256(concat(unhex('00'), {canonical_leaf_sql()}))"
