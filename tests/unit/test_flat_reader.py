"""The compiled reader of Avro records (the auth event, the chained record, ...).

The reference is fastavro's ``schemaless_reader``: on generated records the dicts must be
equal, and on bodies damaged in every way (truncated, extended, bytes flipped) the
reader must either return exactly what fastavro returns or leave the body to fastavro
(None), so errors keep fastavro's messages.
"""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail import schemas
from authtrail.errors import FormatError
from authtrail.producers.traffic import TrafficConfig, generate_events
from authtrail.schemas import AUTH_EVENT, CHAINED_RECORD, load_schema
from authtrail.schemas._flat_reader import compile_flat_reader
from authtrail.schemas._flat_writer import field_type
from authtrail.schemas.codec import (
    SINGLE_OBJECT_HEADER_SIZE,
    SingleObjectCodec,
    _without_logical_types,
)

SCHEMA = load_schema(AUTH_EVENT)
PARSED: Any = parse_schema(_without_logical_types(SCHEMA))
# Both readers: the C one of authtrail._speedups (what the worker uses where it is built:
# tests/unit/test_speedups.py requires it) and the one generated in Python.
READERS = {"c": compile_flat_reader(PARSED), "python": compile_flat_reader(PARSED, native=False)}
BOTH = pytest.mark.parametrize("reader", READERS)
LONGS = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=80)  # hypothesis leaves out surrogates: all encodable


def _optional_fields() -> dict[str, Any]:
    optional: dict[str, Any] = {}
    for field in SCHEMA["fields"]:
        kind = field["type"]
        if isinstance(kind, list):
            optional[field["name"]] = st.none() | (LONGS if "long" in str(kind[1]) else TEXT)
    return optional


EVENT_TYPES = next(f["type"]["symbols"] for f in SCHEMA["fields"] if f["name"] == "event_type")
EVENTS = st.fixed_dictionaries(
    {
        "event_id": TEXT,
        "tenant_id": TEXT,
        "event_type": st.sampled_from(EVENT_TYPES),
        "outcome": st.sampled_from(["SUCCESS", "FAILURE", "UNKNOWN"]),
        "occurred_at": LONGS,
        "attributes": st.dictionaries(TEXT, TEXT, max_size=4),
        **_optional_fields(),
    }
)


def body(event: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, PARSED, event)
    return out.getvalue()


def fastavro_read(data: bytes) -> dict[str, Any] | None:
    """fastavro's record, or None when it fails or leaves trailing bytes."""
    stream = io.BytesIO(data)
    try:
        record = schemaless_reader(stream, PARSED, None)
    except Exception:
        return None
    return record if stream.tell() == len(data) else None


def traffic(count: int) -> list[dict[str, Any]]:
    config = TrafficConfig(tenants=3, users=30, start_us=1_700_000_000_000_000,
                           events_per_second=100.0)  # fmt: skip
    return list(itertools.islice(generate_events(config, 7), count))


def _parsed(name: str) -> Any:
    return parse_schema(_without_logical_types(load_schema(getattr(schemas, name))))


# Every shipped schema but the chained batch (an array of records, a logical type).
COMPILED = ["AUTH_EVENT", "CHAINED_RECORD", "CHAINED_REJECTION", "CHECKPOINT", "CLAIM",
            "DEAD_LETTER", "EVENT_ENVELOPE", "SNAPSHOT"]  # fmt: skip


@BOTH
def test_the_shipped_records_compile_but_the_chained_batch(reader: str) -> None:
    native = reader == "c"
    for name in COMPILED:
        assert compile_flat_reader(_parsed(name), native) is not None, name
    assert compile_flat_reader(_parsed("CHAINED_BATCH"), native) is None
    # With its logical types left in, fastavro would return datetimes: left to fastavro.
    assert compile_flat_reader(parse_schema(load_schema(CHAINED_RECORD)), native) is None


NESTED = {"type": "record", "name": "N", "fields": [{"name": "n", "type": "long"}]}


@pytest.mark.parametrize(
    "field_type",
    [
        "double", "float", ["string", "null"], ["null", "string", "long"],
        ["null", {"type": "map", "values": "string"}], {"type": "map", "values": "long"},
        {"type": "array", "items": "string"}, ["null", {"type": "array", "items": "bytes"}],
        ["null", NESTED],
        {"type": "int", "logicalType": "date"},
        {"type": "record", "name": "M", "fields": [{"name": "d", "type": "double"}]},
    ],
)  # fmt: skip
@BOTH
def test_other_field_types_are_left_to_fastavro(field_type: Any, reader: str) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
    assert compile_flat_reader(parse_schema(schema), reader == "c") is None


def _values(kind: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Any value of a field of type ``kind`` in the shipped schemas."""
    resolved = field_type(kind, named)
    assert resolved is not None
    kind, optional = resolved
    name = kind.get("type") if isinstance(kind, dict) else kind
    strategy: st.SearchStrategy[Any]
    if name == "record":
        strategy = st.fixed_dictionaries(
            {field["name"]: _values(field["type"], named) for field in kind["fields"]}
        )
    elif name == "enum":
        strategy = st.sampled_from(kind["symbols"])
    elif name == "fixed":
        strategy = st.binary(min_size=kind["size"], max_size=kind["size"])
    elif name == "map":
        strategy = st.dictionaries(TEXT, TEXT, max_size=3)
    elif name == "array":  # of bytes: the envelope's events
        strategy = st.lists(st.binary(max_size=40), max_size=4)
    else:
        strategy = {"long": LONGS, "int": st.integers(-(2**31), 2**31 - 1), "string": TEXT,
                    "boolean": st.booleans(), "bytes": st.binary(max_size=40)}[name]  # fmt: skip
    return st.none() | strategy if optional else strategy


def _records(name: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    parsed = _parsed(name)
    return st.tuples(st.just(name), _values(parsed, parsed["__named_schemas"]))


ANY_SHIPPED = st.one_of(*map(_records, COMPILED))
SHIPPED_READERS = {
    (name, reader): compile_flat_reader(_parsed(name), reader == "c")
    for name in COMPILED for reader in READERS
}  # fmt: skip


def _fastavro_read(name: str, data: bytes) -> dict[str, Any] | None:
    stream = io.BytesIO(data)
    try:
        record = schemaless_reader(stream, _parsed(name), None)
    except Exception:
        return None
    return record if stream.tell() == len(data) else None


@settings(max_examples=600, deadline=None)
@given(shipped=ANY_SHIPPED, cut=st.integers(0, 60), flips=st.lists(
    st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=3))  # fmt: skip
def test_any_shipped_record_whole_or_damaged_reads_as_fastavro_reads_it(
    shipped: tuple[str, dict[str, Any]], cut: int, flips: list[tuple[int, int]]
) -> None:
    name, record = shipped
    out = io.BytesIO()
    schemaless_writer(out, _parsed(name), record)
    data = out.getvalue()
    c_read, py_read = SHIPPED_READERS[name, "c"], SHIPPED_READERS[name, "python"]
    assert c_read is not None and py_read is not None
    whole = c_read(data, 0)
    assert whole is not None and whole == _fastavro_read(name, data) == py_read(data, 0)
    assert list(whole) == [field["name"] for field in _parsed(name)["fields"]]
    damaged = bytearray(data)
    for at, value in flips:
        if at < len(damaged):
            damaged[at] = value
    damaged = damaged[: max(0, len(damaged) - cut)] if cut % 2 else damaged + bytes(cut % 5)
    read = c_read(bytes(damaged), 0)
    assert read is None or read == _fastavro_read(name, bytes(damaged))
    assert read == py_read(bytes(damaged), 0)


@BOTH
def test_a_chained_record_known_answer(reader: str) -> None:
    flat_read = compile_flat_reader(_parsed("CHAINED_RECORD"), reader == "c")
    assert flat_read is not None
    # the event of test_a_known_answer, seq 1, three hashes, source partition -1 (int),
    # offset 5, epoch 2, source index 3 (union branch 1)
    event = b"\x02e\x02t\x00\x00\x02\x03\x02\x06" + bytes(23) + b"\x02\x02k\x02v\x00"
    data = event + b"\x02" + b"\xaa" * 32 + b"\xbb" * 32 + b"\xcc" * 32 + b"\x01\x0a\x04\x02\x06"
    record = flat_read(data, 0)
    assert record is not None and record == _fastavro_read("CHAINED_RECORD", data)
    assert record["event"]["attributes"] == {"k": "v"} and record["seq"] == 1
    assert (record["prev_hash"], record["leaf_hash"]) == (b"\xaa" * 32, b"\xcc" * 32)
    assert (record["source_partition"], record["source_offset"], record["epoch"],
            record["source_index"]) == (-1, 5, 2, 3)  # fmt: skip
    for bad in (
        data[:-1],  # cut in the union
        data[:-5] + b"\x80\x80\x80\x80\x10" + data[-4:],  # a partition beyond 32 bits
        event + b"\x02" + b"\xaa" * 31,  # a fixed cut short
    ):
        assert flat_read(bad, 0) is None


@BOTH
def test_generated_traffic_reads_as_fastavro_reads_it(reader: str) -> None:
    flat_read = READERS[reader]
    assert flat_read is not None
    for event in traffic(300):
        data = body(event)
        read = flat_read(data, 0)
        assert read is not None and read == fastavro_read(data)
        assert {name: read[name] for name in event} == event


@settings(max_examples=400, deadline=None)
@given(event=EVENTS)
@BOTH
def test_any_event_reads_as_fastavro_reads_it(event: dict[str, Any], reader: str) -> None:
    flat_read = READERS[reader]
    assert flat_read is not None
    data = body(event)
    read = flat_read(b"prefix" + data, 6)
    assert read == fastavro_read(data)
    assert read is not None and list(read) == list(fastavro_read(data) or {})


@BOTH
def test_a_known_answer(reader: str) -> None:
    flat_read = READERS[reader]
    # event_id "e", tenant_id "t", event_type index 0, event_type_other null, outcome
    # index 1, occurred_at -2, received_at 3, 23 nulls, attributes {"k": "v"}.
    data = (b"\x02e\x02t\x00\x00\x02\x03\x02\x06" + bytes(23)
            + b"\x02\x02k\x02v\x00")  # fmt: skip
    assert flat_read is not None
    record = flat_read(data, 0)
    assert record is not None
    assert record == fastavro_read(data)
    assert (record["event_id"], record["outcome"], record["occurred_at"]) == ("e", "FAILURE", -2)
    assert (record["received_at"], record["attributes"]) == (3, {"k": "v"})


@settings(max_examples=600, deadline=None)
@given(event=EVENTS, cut=st.integers(0, 400), flips=st.lists(
    st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3))  # fmt: skip
@BOTH
def test_a_damaged_body_reads_as_fastavro_reads_it_or_is_left_to_it(
    event: dict[str, Any], cut: int, flips: list[tuple[int, int]], reader: str
) -> None:
    flat_read = READERS[reader]
    assert flat_read is not None
    data = bytearray(body(event))
    for at, value in flips:
        if at < len(data):
            data[at] = value
    damaged = bytes(data[: max(0, len(data) - cut)] if cut % 2 else data + bytes(cut % 5))
    read = flat_read(damaged, 0)
    assert read is None or read == fastavro_read(damaged)


@pytest.mark.parametrize(
    "damaged",
    [
        b"",
        b"\x03e",  # a negative string length
        b"\x02e\x02t\x80",  # a varint cut short
        b"\x02e\x02t\x7f",  # an enum index out of range (negative)
        b"\x02e\x02t\x00\x02\x03\x04",  # a union branch that does not exist
        b"\x02\xff\x02t",  # not UTF-8
        b"\x02e\x02t" + b"\xff" * 12,  # a varint beyond 64 bits
    ],
)
@BOTH
def test_malformed_bodies_are_left_to_fastavro(damaged: bytes, reader: str) -> None:
    flat_read = READERS[reader]
    assert flat_read is not None and flat_read(damaged, 0) is None


def test_the_codec_keeps_fastavros_error_messages() -> None:
    codec = SingleObjectCodec(SCHEMA)
    good = codec.encode(traffic(1)[0])
    with pytest.raises(FormatError, match="trailing bytes"):
        codec.decode(good + b"\x00")
    with pytest.raises(FormatError, match="truncated"):
        codec.decode(good[: SINGLE_OBJECT_HEADER_SIZE + 5])


@BOTH
def test_an_envelope_in_blocks_reads_as_fastavro_reads_it(reader: str) -> None:
    read = compile_flat_reader(_parsed("EVENT_ENVELOPE"), reader == "c")
    assert read is not None
    # two blocks (2 items, then 1), as a streaming writer may split an array
    blocks = bytes([4, 2]) + b"a" + bytes([4]) + b"bc" + bytes([2, 0, 0])
    assert (
        read(blocks, 0)
        == _fastavro_read("EVENT_ENVELOPE", blocks)
        == {"events": [b"a", b"bc", b""]}
    )
    # a negative count (a block preceded by its byte size): fastavro reads it, with its errors
    sized = bytes([1, 4, 2]) + b"a" + bytes([0])
    assert _fastavro_read("EVENT_ENVELOPE", sized) == {"events": [b"a"]}
    assert read(sized, 0) is None
    assert read(bytes([2, 9]) + b"x" + bytes([0]), 0) is None  # an odd (negative) item size
