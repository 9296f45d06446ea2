"""Sink rows and their Arrow tables: the fast paths give exactly what the plain ones give.

``to_arrow`` converts one struct array in C++ and ``chained_row`` copies the decoder's
dict; both are checked value for value against the straightforward forms
(``pa.Table.from_pylist``, a per-column ``event.get``) on real decoded records, on rows
that are missing columns or carry extra keys, and on values of the wrong type.
"""

from __future__ import annotations

import hashlib
import random
import types
from typing import Any

import pyarrow as pa
import pytest

from authtrail.producers.traffic import TrafficConfig, generate_events
from authtrail.schemas import AUTH_EVENT, CHAINED_RECORD, CHAINED_REJECTION, CHECKPOINT, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.sinks.rows import (
    CHECKPOINTS_SCHEMA,
    EVENTS_SCHEMA,
    REJECTED_SCHEMA,
    chained_row,
    checkpoint_row,
    rejected_row,
    to_arrow,
)
from authtrail.sinks.tables import event_columns


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _decoded_chained_records(count: int) -> list[dict[str, Any]]:
    """ChainedRecords as the sink's decoder hands them out (every schema field present)."""
    event_codec = SingleObjectCodec(load_schema(AUTH_EVENT))
    chained_codec = SingleObjectCodec(load_schema(CHAINED_RECORD))
    events = generate_events(TrafficConfig(tenants=3, burst_every=20), seed=11)
    records = []
    for index in range(count):
        event = event_codec.decode(event_codec.encode(next(events)))
        value = chained_codec.encode(
            {
                "event": event,
                "seq": index + 1,
                "prev_hash": _digest(f"p{index}"),
                "hash": _digest(f"h{index}"),
                "leaf_hash": _digest(f"l{index}"),
                "source_partition": 0,
                "source_offset": index,
                "epoch": index % 3,
            }
        )
        records.append(chained_codec.decode(value))
    return records


def _plain_chained_row(record: dict[str, Any], cluster: str, partition: int, offset: int) -> dict:
    """The row spelled out column by column: the reference for chained_row."""
    event = record["event"]
    row = {column.name: event.get(column.name) for column in event_columns()}
    row["attributes"] = list((event.get("attributes") or {}).items())
    row.update(seq=record["seq"], prev_hash=record["prev_hash"], leaf_hash=record["leaf_hash"],
               hash=record["hash"], epoch=record.get("epoch", 0), kafka_cluster=cluster,
               kafka_partition=partition, kafka_offset=offset)  # fmt: skip
    return row


def _assert_same_table(rows: list[Any], schema: pa.Schema) -> None:
    table = to_arrow(rows, schema)
    expected = pa.Table.from_pylist([dict(row) for row in rows], schema=schema)
    assert table.schema.equals(schema, check_metadata=True)
    assert table.equals(expected)
    assert table.to_pylist() == expected.to_pylist()


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return _decoded_chained_records(200)


def test_chained_row_equals_the_plain_row(records: list[dict[str, Any]]) -> None:
    assert any(record["event"]["attributes"] for record in records)
    for offset, record in enumerate(records):
        row = chained_row(record, "c1", 2, offset)
        plain = _plain_chained_row(record, "c1", 2, offset)
        assert row == plain
        assert list(row) == list(plain)  # column order too


def test_chained_row_of_sparse_shuffled_or_read_only_events(
    records: list[dict[str, Any]],
) -> None:
    # Events not shaped like the decoder's output take the general path, same result.
    rng = random.Random(5)
    for record in records[:50]:
        items = [(name, value) for name, value in record["event"].items() if value is not None]
        rng.shuffle(items)
        for event in (dict(items), types.MappingProxyType(dict(items)), {**dict(items), "x": 1}):
            variant = {**record, "event": event}
            assert chained_row(variant, "c", 0, 7) == _plain_chained_row(variant, "c", 0, 7)


def test_event_rows_give_the_from_pylist_table(records: list[dict[str, Any]]) -> None:
    rows = [chained_row(record, "c1", index % 4, index) for index, record in enumerate(records)]
    _assert_same_table(rows, EVENTS_SCHEMA)


def test_checkpoint_and_rejected_rows_give_the_from_pylist_table() -> None:
    checkpoint_codec = SingleObjectCodec(load_schema(CHECKPOINT))
    rejection_codec = SingleObjectCodec(load_schema(CHAINED_REJECTION))
    checkpoints, rejected = [], []
    for index in range(20):
        checkpoint = {"tenant_id": f"t{index % 3}", "size": index + 1, "note": f"note {index}\n",
                      "root": _digest(f"r{index}"), "batch_first_seq": 1,
                      "batch_last_seq": index + 1, "batch_root": _digest(f"b{index}"),
                      "chain_head": _digest(f"c{index}"), "prev_digest": _digest(f"d{index}"),
                      "time_micros": 1_767_225_600_000_000 + index, "epoch": index}  # fmt: skip
        decoded = checkpoint_codec.decode(checkpoint_codec.encode(checkpoint))
        checkpoints.append(checkpoint_row(decoded, "c1", 0, index))
        dead_letter = {"original": b"\x00junk%d" % index,
                       "original_key": None if index % 2 else b"key",
                       "reason": "bad magic", "error_kind": "decode", "source_topic": "events",
                       "source_partition": index % 4, "source_offset": index,
                       "source_timestamp": None if index % 3 else 1_767_225_600_000_000,
                       "tenant_id": None if index % 2 else "acme",
                       "rejected_at": 1_767_225_600_000_123}  # fmt: skip
        chained = {"rejection": dead_letter, "chain_tenant_id": f"authtrail-rejected-{index % 4}",
                   "seq": index + 1, "prev_hash": _digest(f"p{index}"),
                   "hash": _digest(f"h{index}"), "leaf_hash": _digest(f"l{index}"),
                   "source_partition": index % 4,
                   "source_offset": index, "epoch": 3}  # fmt: skip
        decoded = rejection_codec.decode(rejection_codec.encode(chained))
        rejected.append(rejected_row(decoded, "c1", 1, index))
    _assert_same_table(checkpoints, CHECKPOINTS_SCHEMA)
    _assert_same_table(rejected, REJECTED_SCHEMA)


def test_missing_columns_extra_keys_mappings_and_no_rows(records: list[dict[str, Any]]) -> None:
    rows: list[Any] = [chained_row(record, "c", 0, index) for index, record in enumerate(records)]
    rows[0] = {name: value for name, value in rows[0].items() if name != "user_agent"}
    rows[1] = {**rows[1], "not_a_column": object()}
    rows[2] = types.MappingProxyType(rows[2])
    rows[3] = dict(reversed(list(rows[3].items())))
    rows[4] = {**rows[4], "attributes": {"k": "v", "a": "b"}}  # a dict for the map column
    _assert_same_table(rows, EVENTS_SCHEMA)
    assert to_arrow(rows, EVENTS_SCHEMA).column("user_agent")[0].as_py() is None
    _assert_same_table([], EVENTS_SCHEMA)


def test_schema_metadata_is_kept() -> None:
    schema = pa.schema([pa.field("a", pa.uint64())], metadata={"origin": "test"})
    assert to_arrow([{"a": 1}], schema).schema.equals(schema, check_metadata=True)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("seq", "12"),
        ("seq", -1),
        ("hash", b"short"),
        ("occurred_at", "yesterday"),
        ("attributes", [("k", 1)]),
        ("tenant_id", 5),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(
    records: list[dict[str, Any]], column: str, value: object
) -> None:
    rows = [chained_row(record, "c", 0, index) for index, record in enumerate(records[:3])]
    rows[1][column] = value
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)) as plain:
        pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)
    with pytest.raises(plain.type):  # the same error as the plain conversion
        to_arrow(rows, EVENTS_SCHEMA)
