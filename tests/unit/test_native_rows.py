"""authtrail._native_rows, Avro bodies to a ClickHouse Native block in C, against fastavro.

Every block is read back by a Native reader written here, independently of the C code, and
compared field by field with what fastavro decodes from the same bodies: generated
records, hand-made edge cases and the older writer schemas the sink still accepts.
Damaged bodies (cut short, a byte too many, an index or a length out of range, random
corruption) must raise FormatError, never give a block. tests/integration/test_native_rows.py
stores the blocks in ClickHouse beside its own Avro reader's rows.
"""

from __future__ import annotations

import io
import itertools
import random
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail.errors import FormatError
from authtrail.producers.traffic import TrafficConfig, generate_events
from authtrail.schemas import CHAINED_RECORD, load_schema, previous_versions
from authtrail.schemas.codec import _without_logical_types
from authtrail.sinks.avro_rows import (
    CONTAINER_COLUMNS,
    KAFKA_FIELDS,
    RowsContainer,
    kafka_suffix,
    stored_event_fields,
)
from authtrail.sinks.native_rows import MalformedRows, NativeRows, event_rows, rows_format

try:
    from authtrail import _native_rows  # noqa: F401
except ImportError as exc:  # pragma: no cover - what this test exists to catch
    pytest.fail(
        f"authtrail._native_rows is not built ({exc}): install a C compiler (gcc) and "
        "reinstall (make venv); without it the sink hands ClickHouse Avro, ~3.5 µs a row more",
        pytrace=False,
    )

SCHEMA = load_schema(CHAINED_RECORD)
SUFFIX = kafka_suffix("cluster-\u03b1", 3, 2**40 + 5)
HASHES = st.binary(min_size=32, max_size=32)


def chained(event: Mapping[str, Any], seq: int, **overrides: Any) -> dict[str, Any]:
    record = {
        "event": dict(event),
        "seq": seq,
        "prev_hash": bytes([seq % 256]) * 32,
        "hash": bytes(range(32)),
        "leaf_hash": bytes(reversed(range(32))),
        "source_partition": 2,
        "source_offset": 10 * (seq % 2**40),
        "epoch": 7,
        "source_index": None if seq % 2 else seq % 5,
    }
    return {**record, **overrides}


def events(count: int) -> list[dict[str, Any]]:
    config = TrafficConfig(tenants=3, users=40, start_us=1_700_000_000_000_000)
    return list(itertools.islice(generate_events(config, 5), count))


def body(schema: Mapping[str, Any], record: Mapping[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(dict(schema)), dict(record))
    return out.getvalue()


# --- an independent reader of the Native format, for the types the plan writes -----------


class _Native:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, count: int) -> bytes:
        chunk = self.data[self.at : self.at + count]
        assert len(chunk) == count, "the block ends early"
        self.at += count
        return chunk

    def length(self) -> int:
        shift = value = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    def string(self) -> bytes:
        return self.take(self.length())

    def column(self, kind: str, rows: int) -> list[Any]:
        if kind.startswith("Nullable("):
            nulls = self.take(rows)
            values = self.column(kind[len("Nullable(") : -1], rows)
            return [None if null else value for null, value in zip(nulls, values, strict=True)]
        if kind == "String":
            return [self.string() for _ in range(rows)]
        if kind in ("Int64", "DateTime64(6, 'UTC')"):
            return list(struct.unpack(f"<{rows}q", self.take(8 * rows)))
        if kind == "Int32":
            return list(struct.unpack(f"<{rows}i", self.take(4 * rows)))
        if kind.startswith("FixedString("):
            size = int(kind[len("FixedString(") : -1])
            return [self.take(size) for _ in range(rows)]
        if kind == "Map(String, String)":
            ends = struct.unpack(f"<{rows}Q", self.take(8 * rows))
            keys = [self.string() for _ in range(ends[-1] if rows else 0)]
            values = [self.string() for _ in range(len(keys))]
            starts = (0, *ends[:-1])[:rows]
            spans = zip(starts, ends, strict=True)
            return [list(zip(keys[a:b], values[a:b], strict=True)) for a, b in spans]
        raise AssertionError(f"the plan wrote a type this reader does not know: {kind}")


def read_native(data: bytes) -> list[dict[str, Any]]:
    """Every row of a stream of Native blocks, as {column: value}."""
    reader, rows = _Native(data), []
    while reader.at < len(data):
        columns, count = reader.length(), reader.length()
        block: dict[str, list[Any]] = {}
        for _ in range(columns):
            name, kind = reader.string().decode(), reader.string().decode()
            block[name] = reader.column(kind, count)
        rows += [{name: values[row] for name, values in block.items()} for row in range(count)]
    return rows


def expected(schema: Mapping[str, Any], bodies: Sequence[bytes], suffix: bytes) -> list[dict]:
    """What fastavro reads from body + suffix, in the form the Native reader above gives:
    read with strings as bytes (the same encoding, not decoded, as ClickHouse stores them)
    and timestamps as their microseconds."""
    fields = _as_bytes(_without_logical_types(stored_event_fields(schema)))
    flat = parse_schema({"type": "record", "name": "Row", "namespace": "io.authtrail",
                         "fields": fields}, _write_hint=False)  # fmt: skip
    rows = []
    for item in bodies:
        row = schemaless_reader(io.BytesIO(item + suffix), flat, return_record_name=False)
        rows.append({name: _as_native(row[name]) for name in CONTAINER_COLUMNS if name in row})
    return rows


def _as_bytes(node: Any) -> Any:
    if node == "string":
        return "bytes"
    if isinstance(node, list):
        return [_as_bytes(item) for item in node]
    if isinstance(node, dict):
        return {key: _as_bytes(value) for key, value in node.items()}
    return node


def _as_native(value: Any) -> Any:
    if isinstance(value, str):  # an enum's symbol
        return value.encode()
    if isinstance(value, dict):  # a map (fastavro decodes its keys): entries in order
        return [(key.encode(), item) for key, item in value.items()]
    return value


def block(schema: Mapping[str, Any], bodies: Sequence[bytes], suffix: bytes = SUFFIX) -> bytes:
    rows = event_rows(schema)
    assert isinstance(rows, NativeRows)
    return rows.container([rows.block(bodies, suffix)])


# --- same rows as fastavro ------------------------------------------------------------------


def test_the_sink_uses_native_blocks_for_every_chained_schema_it_accepts() -> None:
    for schema in (SCHEMA, *previous_versions(CHAINED_RECORD)):
        rows = event_rows(schema)
        assert isinstance(rows, NativeRows)
        assert set(rows.columns) <= set(CONTAINER_COLUMNS)
        assert rows.input_format == "Native"


def test_generated_records_read_back_as_fastavro_reads_them() -> None:
    bodies = [body(SCHEMA, chained(event, seq)) for seq, event in enumerate(events(300), 1)]
    assert read_native(block(SCHEMA, bodies)) == expected(SCHEMA, bodies, SUFFIX)


def test_edge_cases_read_back_as_fastavro_reads_them() -> None:
    base = events(1)[0]
    required = ("event_id", "tenant_id", "event_type", "outcome", "occurred_at", "attributes")
    nulls = {key: None for key in base if key not in required}
    long_text = "é" * 9000  # a length needing a three-byte varint
    cases = [
        chained({**base, **nulls, "attributes": {}}, 1),
        chained({**base, "message": long_text, "user_name": "", "attributes": {"": ""}}, 2),
        chained({**base, "attributes": {f"k{i}": "v" * i for i in range(300)}}, 3),
        chained(base, 2**62 - 1, epoch=0, source_index=2**31 - 1, source_partition=-1),
        chained(
            {**base, "event_type": "OTHER", "event_type_other": "WEIRD", "outcome": "UNKNOWN"},
            4,
            prev_hash=b"\x00" * 32,
            hash=b"\xff" * 32,
        ),
    ]
    bodies = [body(SCHEMA, record) for record in cases]
    rows = read_native(block(SCHEMA, bodies))
    assert rows == expected(SCHEMA, bodies, SUFFIX)
    assert rows[1]["message"] == long_text.encode() and rows[0]["received_at"] is None
    assert len(rows[2]["attributes"]) == 300 and rows[3]["seq"] == 2**62 - 1


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(st.text(max_size=40) | st.none(), min_size=3, max_size=3),
    attributes=st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=8),
    seq=st.integers(1, 2**62 - 1),
    hashes=st.lists(HASHES, min_size=3, max_size=3),
    received=st.none() | st.integers(0, 2**53),
)
def test_any_record_reads_back_as_fastavro_reads_it(
    texts: list[str | None], attributes: dict[str, str], seq: int, hashes: list[bytes],
    received: int | None,
) -> None:  # fmt: skip
    event = {**events(1)[0], "attributes": attributes, "received_at": received}
    event.update(zip(("user_name", "client_ip", "message"), texts, strict=True))
    record = chained(event, seq, prev_hash=hashes[0], hash=hashes[1], leaf_hash=hashes[2])
    bodies = [body(SCHEMA, record)]
    assert read_native(block(SCHEMA, bodies)) == expected(SCHEMA, bodies, SUFFIX)


def test_older_writer_schemas_read_back_as_fastavro_reads_them() -> None:
    for schema in previous_versions(CHAINED_RECORD):
        names = {field["name"] for field in schema["fields"]}
        records = [chained(event, seq) for seq, event in enumerate(events(20), 1)]
        bodies = [body(schema, {k: v for k, v in r.items() if k in names}) for r in records]
        rows = read_native(block(schema, bodies))
        assert rows == expected(schema, bodies, SUFFIX)
        assert ("epoch" in rows[0]) == ("epoch" in names)


def test_fields_without_a_column_are_read_and_left_out() -> None:
    rows = read_native(block(SCHEMA, [body(SCHEMA, chained(events(1)[0], 1))]))
    assert set(rows[0]) == set(CONTAINER_COLUMNS)  # source_offset, source_index… skipped


def test_a_union_with_null_second_and_a_type_without_an_op() -> None:
    fields = [{"name": "a", "type": ["string", "null"]}, {"name": "b", "type": "long"}]
    rows = NativeRows(fields, 0, ["a", "b"])
    bodies = [body_of(fields, {"a": None, "b": -3}), body_of(fields, {"a": "x", "b": 5})]
    out = read_native(rows.container([rows.block(bodies, b"")]))
    assert out == [{"a": None, "b": -3}, {"a": b"x", "b": 5}]
    nullable_map = ["null", {"type": "map", "values": "string"}]
    array = {"type": "array", "items": "string"}
    for kind in ("double", "boolean", array, ["null", "string", "long"], nullable_map):
        with pytest.raises(ValueError, match=r"no op|nullable map"):
            NativeRows([{"name": "x", "type": kind}], 0, ["x"])
        assert isinstance(rows_format([{"name": "x", "type": kind}], 0, ["x"]), RowsContainer)


def body_of(fields: list[dict[str, Any]], record: dict[str, Any]) -> bytes:
    return body({"type": "record", "name": "T", "fields": fields}, record)


def test_an_empty_list_of_bodies_is_a_block_of_no_rows() -> None:
    assert read_native(block(SCHEMA, [])) == []


# --- damaged bodies are refused -------------------------------------------------------------

GOOD = body(SCHEMA, chained(events(1)[0], 9))  # the event of test_indexes_… below


@pytest.mark.parametrize("cut", range(len(GOOD)))
def test_a_body_cut_short_anywhere_is_refused(cut: int) -> None:
    with pytest.raises(FormatError, match="not one row"):
        block(SCHEMA, [GOOD, GOOD[:cut]])


def test_a_body_with_a_byte_too_many_is_refused() -> None:
    with pytest.raises(FormatError, match="row 1: 1 bytes left"):
        block(SCHEMA, [GOOD, GOOD + b"\x00"])
    with pytest.raises(FormatError, match="bytes left"):
        block(SCHEMA, [GOOD], SUFFIX + b"\x00")


def test_indexes_lengths_and_varints_out_of_range_are_refused() -> None:
    first = events(1)[0]
    ids = body_of([{"name": "event_id", "type": "string"}, {"name": "tenant_id", "type": "string"}],
                  {"event_id": first["event_id"], "tenant_id": first["tenant_id"]})  # fmt: skip
    event_type_at = len(ids)  # the enum after the two strings, then a union
    for damaged, reason in [
        (GOOD[:event_type_at] + b"\x7e" + GOOD[event_type_at + 1 :], "enum index 63"),
        (GOOD[:event_type_at] + b"\x01" + GOOD[event_type_at + 1 :], "enum index -1"),
        (GOOD[:event_type_at + 1] + b"\x04" + GOOD[event_type_at + 2 :], "union index 2"),
        (b"\x80" * 11 + GOOD, "longer than 64 bits"),
        (b"\x01" + GOOD[1:], "negative length"),
        (b"\xfe\xff\xff\x0f" + GOOD[1:], "a length of"),
    ]:  # fmt: skip
        with pytest.raises(FormatError, match=reason):
            block(SCHEMA, [damaged])


def test_random_corruption_never_gives_a_block_that_reads_differently_unnoticed() -> None:
    """Each corrupted body is refused, or is itself a valid body (fastavro reads it too) whose
    block reads back as fastavro reads it. Never a crash, never a block of other values."""
    chooser = random.Random(12)
    refused = accepted = 0
    for _ in range(3000):
        damaged = bytearray(GOOD)
        for _ in range(chooser.randint(1, 3)):
            damaged[chooser.randrange(len(damaged))] = chooser.randrange(256)
        try:
            out = block(SCHEMA, [bytes(damaged)])
        except FormatError:
            refused += 1
            continue
        try:
            oracle = expected(SCHEMA, [bytes(damaged)], SUFFIX)
        except UnicodeDecodeError:  # a map key fastavro cannot decode; ClickHouse keeps bytes
            continue
        accepted += 1
        assert read_native(out) == oracle
    assert refused > 500 and accepted > 100  # both branches really ran


def test_the_c_function_refuses_bad_arguments() -> None:
    from authtrail import _native_rows as native

    def call(ops: Any, headers: Any = (b"",), body_ops: Any = 1, parts: Any = None) -> Any:
        return native.native_block(ops, headers, body_ops,
                                   [([b"\x00"], b"")] if parts is None else parts)  # fmt: skip

    string = ((0, 1, None),)
    with pytest.raises(TypeError):
        native.native_block(string, (b"",), 1)  # three arguments
    for arguments, error in [
        ({"ops": string, "parts": ([b"\x00"], b"")}, TypeError),  # parts not a list
        ({"ops": string, "parts": [([b"\x00"],)]}, TypeError),  # a part not a pair
        ({"ops": string, "parts": [((b"\x00",), b"")]}, TypeError),  # its bodies not a list
        ({"ops": string, "parts": [([b"\x00"], "")]}, TypeError),  # its suffix not bytes
        ({"ops": string, "parts": [(["\x00"], b"")]}, TypeError),  # a body not bytes
        ({"ops": string, "headers": ()}, ValueError),  # a header short
        ({"ops": string, "body_ops": 2}, ValueError),  # body_ops past the ops
        ({"ops": ((9, 1, None),)}, ValueError),  # an unknown op
        ({"ops": ((0, True, None),)}, TypeError),  # flags not an exact int
        ({"ops": ((5, 3, None),)}, ValueError),  # a nullable map
        ({"ops": ((3, 1, ("A",)),)}, TypeError),  # a symbol not bytes
        ({"ops": ((4, 1, -1),), "parts": [([b""], b"")]}, ValueError),  # a negative size
        ({"ops": string * 257, "headers": (b"",) * 257}, TypeError),  # too many ops
    ]:
        with pytest.raises(error):
            call(**arguments)


def test_the_messages_of_an_insert_make_one_block_and_a_bad_one_is_named() -> None:
    fields = [{"name": "x", "type": "string"}, {"name": "k", "type": "int"}]
    rows = NativeRows(fields, 1, ["x", "k"])
    blocks = [rows.block([b"\x02a"], b"\x02"), rows.block([b"\x00", b"\x02b"], b"\x04")]
    data = rows.container(blocks)
    assert data[:2] == b"\x02\x03"  # one block: 2 columns, 3 rows
    assert read_native(data) == [{"x": b"a", "k": 1}, {"x": b"", "k": 2}, {"x": b"b", "k": 2}]
    with pytest.raises(MalformedRows, match="row 1: a string: a length of 2") as refused:
        rows.container([*blocks, rows.block([b"\x00", b"\x04c"], b"\x06"), blocks[0]])
    assert refused.value.part == 2


def test_without_the_c_module_the_avro_container_carries_the_columns_the_fields_have(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from authtrail.sinks import native_rows

    monkeypatch.setattr(native_rows, "_native_block", None)
    oldest = previous_versions(CHAINED_RECORD)[0]
    rows = rows_format(stored_event_fields(oldest), len(KAFKA_FIELDS), CONTAINER_COLUMNS)
    assert isinstance(rows, RowsContainer) and rows.input_format == "Avro"
    # ClickHouse refuses a column the container lacks: the oldest record has no epoch.
    assert "epoch" not in rows.columns
    assert set(rows.columns) == set(CONTAINER_COLUMNS) - {"epoch"}
