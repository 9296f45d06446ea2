"""The compiled reader of flat records (the auth event).

The reference is fastavro's ``schemaless_reader``: on generated events the dicts must be
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

from authtrail.errors import FormatError
from authtrail.producers.traffic import TrafficConfig, generate_events
from authtrail.schemas import AUTH_EVENT, CHAINED_RECORD, DEAD_LETTER, load_schema
from authtrail.schemas._flat_reader import compile_flat_reader
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


@BOTH
def test_the_auth_event_compiles_and_other_shipped_schemas_do_not(reader: str) -> None:
    flat_read = READERS[reader]
    assert flat_read is not None
    assert compile_flat_reader(parse_schema(load_schema(CHAINED_RECORD))) is None  # nested
    assert compile_flat_reader(parse_schema(load_schema(DEAD_LETTER))) is None  # bytes


@pytest.mark.parametrize(
    "field_type",
    [
        "bytes", "int", "boolean", "double", ["string", "null"], ["null", "string", "long"],
        ["null", {"type": "map", "values": "string"}], {"type": "map", "values": "long"},
        {"type": "array", "items": "string"},
    ],
)  # fmt: skip
def test_other_field_types_are_left_to_fastavro(field_type: Any) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
    assert compile_flat_reader(parse_schema(schema)) is None


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
