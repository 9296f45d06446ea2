"""The compiled writer of flat records (dead letters, checkpoints, the chained record's tail).

The reference is fastavro's ``schemaless_writer``: on generated records the bytes must be
equal, and a few records are checked against bytes worked out by hand from the Avro
specification. Every rejection must carry exactly the conformance check's message, so
callers cannot tell which path wrote.
"""

from __future__ import annotations

import io
import types
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail.errors import InvalidArgumentError
from authtrail.schemas import (
    AUTH_EVENT,
    CHAINED_RECORD,
    CHECKPOINT,
    CLAIM,
    DEAD_LETTER,
    SNAPSHOT,
    load_schema,
)
from authtrail.schemas._conformance import compile_check
from authtrail.schemas._flat_writer import compile_flat_writer
from authtrail.schemas.codec import SINGLE_OBJECT_HEADER_SIZE, SingleObjectCodec, avro_long

INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)
TIMESTAMP = {"type": "long", "logicalType": "timestamp-micros"}

# Every kind the writer compiles, each also as ["null", T], with and without defaults.
FLAT: dict[str, Any] = {
    "type": "record",
    "name": "Flat",
    "namespace": "test",
    "fields": [
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "flag", "type": "boolean"},
        {"name": "raw", "type": "bytes"},
        {"name": "text", "type": "string"},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "digest_again", "type": "test.Digest"},
        {"name": "at", "type": TIMESTAMP},
        {"name": "maybe_small", "type": ["null", "int"], "default": None},
        {"name": "maybe_at", "type": ["null", TIMESTAMP], "default": None},
        {"name": "maybe_flag", "type": ["null", "boolean"], "default": None},
        {"name": "maybe_raw", "type": ["null", "bytes"], "default": None},
        {"name": "maybe_text", "type": ["null", "string"], "default": None},
        {"name": "maybe_digest", "type": ["null", "test.Digest"], "default": None},
        {"name": "nullable_required", "type": ["null", "string"]},
        {"name": "count", "type": "int", "default": -1},
        {"name": "label", "type": "string", "default": "none é"},
        {"name": "enabled", "type": "boolean", "default": True},
    ],
}

ints = st.integers(*INT_RANGE)
longs = st.integers(*LONG_RANGE)
digests = st.binary(min_size=4, max_size=4)
FLAT_RECORDS = st.fixed_dictionaries(
    {
        "small": ints,
        "big": longs,
        "flag": st.booleans(),
        "raw": st.binary(max_size=300),
        "text": st.text(max_size=100),  # hypothesis leaves out surrogates: all encodable
        "digest": digests,
        "digest_again": digests,
        "at": longs,
        "nullable_required": st.none() | st.text(max_size=5),
    },
    optional={
        "maybe_small": st.none() | ints,
        "maybe_at": st.none() | longs,
        "maybe_flag": st.none() | st.booleans(),
        "maybe_raw": st.none() | st.binary(max_size=20),
        "maybe_text": st.none() | st.text(max_size=20),
        "maybe_digest": st.none() | digests,
        "count": ints,
        "label": st.text(max_size=5),
        "enabled": st.booleans(),
    },
)
DEAD_LETTERS = st.fixed_dictionaries(
    {
        "original": st.binary(max_size=300),
        "reason": st.text(max_size=80),
        "error_kind": st.text(max_size=20),
        "source_topic": st.text(max_size=20),
        "source_partition": ints,
        "source_offset": longs,
        "rejected_at": longs,
    },
    optional={
        "original_key": st.none() | st.binary(max_size=20),
        "source_timestamp": st.none() | longs,
        "tenant_id": st.none() | st.text(max_size=20),
        "source_index": st.none() | ints,
    },
)


def fastavro_body(schema: Any, record: Mapping[str, Any]) -> bytes:
    """The reference: fastavro (it leaves int timestamps alone, so logical types may stay)."""
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(schema), record)
    return body.getvalue()


# Every test runs with both fronts: the C writer of authtrail._speedups (what the codec
# uses where it is built: tests/unit/test_speedups.py requires it) and generated Python.
NATIVE = {"native": True}


@pytest.fixture(autouse=True, params=["c", "python"])
def front(request: pytest.FixtureRequest) -> Iterator[str]:
    NATIVE["native"] = request.param == "c"
    yield request.param
    NATIVE["native"] = True


def flat_writer(schema: Any) -> Any:
    parsed: Any = parse_schema(schema)
    return compile_flat_writer(parsed, parsed["name"], compile_check(parsed), NATIVE["native"])


def flat_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"small": 1, "big": -1, "flag": False, "raw": b"", "text": "",
                              "digest": b"abcd", "digest_again": bytes(4), "at": 64,
                              "nullable_required": None}  # fmt: skip
    record.update(changes)
    return record


def dead_letter(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "original": bytes(range(200)),
        "original_key": b"acme",
        "reason": "unknown schema fingerprint 8a8f25cce724dd63; this reader knows 0c1a",
        "error_kind": "unknown_schema",
        "source_topic": "auth-events",
        "source_partition": 3,
        "source_offset": 123_456_789,
        "source_timestamp": 1_700_000_000_000_000,
        "tenant_id": None,
        "rejected_at": 1_700_000_123_456_789,
    }
    record.update(changes)
    return record


# --- what compiles ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [DEAD_LETTER, CHECKPOINT, CLAIM, SNAPSHOT])
def test_the_flat_shipped_schemas_compile(name: str) -> None:
    assert flat_writer(load_schema(name)) is not None


def test_the_chained_records_tail_compiles_but_not_the_nested_records() -> None:
    chained = load_schema(CHAINED_RECORD)
    assert flat_writer(chained) is None  # its first field is a record
    assert flat_writer({**chained, "fields": chained["fields"][1:]}) is not None


@pytest.mark.parametrize(
    "field_type",
    [
        {"type": "map", "values": "long"},
        {"type": "map", "values": ["null", "string"]},
        {"type": "array", "items": "long"},
        {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]},
        ["string", "null"],  # null not first
        ["null", "string", "long"],
        ["null", {"type": "array", "items": "long"}],
        ["null", "null"],
        "float",
        "double",
        "null",
    ],
)
def test_other_field_types_are_left_to_fastavro(field_type: Any) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
    assert flat_writer(schema) is None


def test_a_bytes_default_is_left_to_fastavro() -> None:
    # Avro writes bytes defaults as JSON text ("\u00ff"); not worth a second reading of it.
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "f", "type": "bytes", "default": "\u00ff"}]}  # fmt: skip
    assert flat_writer(schema) is None


def test_only_records_compile() -> None:
    assert compile_flat_writer(parse_schema("long"), "long", compile_check("long")) is None


# --- the same bytes as fastavro --------------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(record=FLAT_RECORDS)
def test_flat_records_are_written_as_fastavro_writes_them(record: dict[str, Any]) -> None:
    write = flat_writer(FLAT)
    assert write(record) == fastavro_body(FLAT, record)
    # The codec takes this path and frames the same body.
    assert SingleObjectCodec(FLAT).encode(record)[SINGLE_OBJECT_HEADER_SIZE:] == write(record)


@settings(max_examples=400, deadline=None)
@given(record=DEAD_LETTERS)
def test_dead_letters_are_written_as_fastavro_writes_them_and_read_back(
    record: dict[str, Any],
) -> None:
    schema = load_schema(DEAD_LETTER)
    codec = SingleObjectCodec(schema)
    data = codec.encode(record)
    assert data[SINGLE_OBJECT_HEADER_SIZE:] == fastavro_body(schema, record)
    defaults = {"original_key": None, "source_timestamp": None, "tenant_id": None,
                "source_index": None}  # fmt: skip
    assert codec.decode(data) == {**defaults, **record}


@pytest.mark.parametrize(
    "value",
    [0, -1, 1, 63, -64, 64, -65, 8191, -8192, 8192, INT_RANGE[0], INT_RANGE[1], INT_RANGE[1] - 1,
     LONG_RANGE[0], LONG_RANGE[1], LONG_RANGE[0] + 1, 2**32, -(2**35)],
)  # fmt: skip
def test_integers_at_varint_and_range_edges(value: int) -> None:
    small = value if INT_RANGE[0] <= value <= INT_RANGE[1] else 0
    record = flat_record(small=small, big=value, at=value, maybe_at=value, maybe_small=small,
                         count=small)  # fmt: skip
    assert flat_writer(FLAT)(record) == fastavro_body(FLAT, record)


@pytest.mark.parametrize("text", ["", "a", "é", "日本語", "😀", "\x00", "x" * 64, "é" * 100])
def test_strings_empty_non_ascii_and_long(text: str) -> None:
    record = flat_record(text=text, maybe_text=text, label=text, nullable_required=text,
                         raw=text.encode(), maybe_raw=text.encode())  # fmt: skip
    assert flat_writer(FLAT)(record) == fastavro_body(FLAT, record)


def test_known_bytes_of_a_dead_letter() -> None:
    """Worked out from the Avro specification, not from any writer."""
    record = dead_letter(original=b"\x01\x02", original_key=None, reason="é", error_kind="",
                         source_topic="t", source_partition=-1, source_offset=64,
                         source_timestamp=1, tenant_id="a", rejected_at=-65)  # fmt: skip
    expected = (
        b"\x04\x01\x02"  # bytes: length 2 (zig-zag 4), then the bytes
        + b"\x00"  # union branch 0: null
        + b"\x04\xc3\xa9"  # string: length 2, UTF-8 of é
        + b"\x00"  # empty string
        + b"\x02t"
        + b"\x01"  # int -1
        + b"\x80\x01"  # long 64: zig-zag 128, two varint bytes
        + b"\x02\x02"  # union branch 1, long 1
        + b"\x02\x02a"  # union branch 1, string "a"
        + b"\x81\x01"  # long -65: zig-zag 129
    )
    write = flat_writer(load_schema(DEAD_LETTER))
    assert write(record) == expected + b"\x00"  # source_index: union branch 0, null
    # one event of an envelope: union branch 1, int 3 (zig-zag 6)
    assert write({**record, "source_index": 3}) == expected + b"\x02\x06"


def test_defaults_are_written_when_fields_are_left_out() -> None:
    write = flat_writer(FLAT)
    written = {"maybe_small": None, "maybe_at": None, "maybe_flag": None, "maybe_raw": None,
               "maybe_text": None, "maybe_digest": None, "count": -1, "label": "none é",
               "enabled": True}  # fmt: skip
    assert write(flat_record()) == write(flat_record(**written))
    assert write(flat_record()).endswith(b"\x00" * 6 + b"\x01" + b"\x0enone \xc3\xa9" + b"\x01")


def test_any_mapping_is_a_record() -> None:
    record = flat_record(maybe_text="x")
    write = flat_writer(FLAT)
    assert write(types.MappingProxyType(record)) == write(record)


# --- the same rejections as the conformance check --------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"small": "1"}, "field 'small': expected int, got str '1'"),
        ({"small": True}, "field 'small': expected int, got bool True"),
        ({"big": False}, "field 'big': expected long, got bool False"),
        ({"small": 1.0}, "field 'small': expected int, got float 1.0"),
        ({"small": INT_RANGE[1] + 1}, "field 'small': expected int"),
        ({"small": INT_RANGE[0] - 1}, "field 'small': expected int"),
        ({"big": LONG_RANGE[1] + 1}, "field 'big': expected long"),
        ({"at": LONG_RANGE[0] - 1}, "field 'at': expected long"),
        ({"maybe_at": 2**63}, "field 'maybe_at': expected long, .* \\(or null\\)"),
        ({"flag": 1}, "field 'flag': expected boolean, got int 1"),
        ({"maybe_flag": 0}, "field 'maybe_flag': expected boolean"),
        ({"raw": "x"}, "field 'raw': expected bytes, got str 'x'"),
        ({"raw": bytearray(b"x")}, "field 'raw': expected bytes, got bytearray"),
        ({"raw": memoryview(b"x")}, "field 'raw': expected bytes, got memoryview"),
        ({"maybe_raw": bytearray()}, "field 'maybe_raw': expected bytes"),
        ({"text": b"x"}, "field 'text': expected string, got bytes b'x'"),
        ({"text": None}, "field 'text': expected string, got NoneType None"),
        ({"maybe_text": 1}, "field 'maybe_text': expected string, got int 1 \\(or null\\)"),
        ({"digest": b"abc"}, "field 'digest': expected 4 bytes, got bytes b'abc'"),
        ({"digest_again": "abcd"}, "field 'digest_again': expected 4 bytes, got str"),
        ({"maybe_digest": bytes(5)}, "field 'maybe_digest': expected 4 bytes"),
        ({"label": None}, "field 'label': expected string, got NoneType None"),
        ({"surprise": 1}, "fields not in the schema: surprise"),
        ({"small": "1", "zz": 1, "aa": 2}, "fields not in the schema: aa, zz"),
    ],
)
def test_rejections_carry_the_conformance_checks_message(
    changes: dict[str, Any], message: str
) -> None:
    record = flat_record(**changes)
    with pytest.raises(InvalidArgumentError, match=f"^record does not match test.Flat: {message}"):
        flat_writer(FLAT)(record)
    with pytest.raises(InvalidArgumentError) as from_check:
        compile_check(parse_schema(FLAT))(record)
    with pytest.raises(InvalidArgumentError) as from_writer:
        flat_writer(FLAT)(record)
    assert str(from_writer.value) == str(from_check.value)


@pytest.mark.parametrize("field", ["small", "raw", "text", "digest", "nullable_required"])
def test_a_missing_required_field_is_named(field: str) -> None:
    record = flat_record()
    del record[field]
    with pytest.raises(InvalidArgumentError, match=f"missing required field '{field}'"):
        flat_writer(FLAT)(record)


@pytest.mark.parametrize("record", [None, [], "record", 1])
def test_a_record_must_be_a_mapping(record: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=r"expected a record test\.Flat"):
        flat_writer(FLAT)(record)


@pytest.mark.parametrize("field", ["reason", "error_kind", "source_topic", "tenant_id"])
def test_text_utf8_cannot_encode_is_an_invalid_argument(field: str) -> None:
    codec = SingleObjectCodec(load_schema(DEAD_LETTER))
    with pytest.raises(InvalidArgumentError, match=f"cannot encode .*DeadLetter: field '{field}'"):
        codec.encode(dead_letter(**{field: "bad \ud800 text"}))


def test_dead_letter_rejections_through_the_codec() -> None:
    codec = SingleObjectCodec(load_schema(DEAD_LETTER))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"original": None}, "field 'original': expected bytes, got NoneType None"),
        ({"original": bytearray(b"x")}, "field 'original': expected bytes, got bytearray"),
        ({"source_partition": 2**31}, "field 'source_partition': expected int"),
        ({"source_offset": True}, "field 'source_offset': expected long, got bool True"),
        ({"original_key": "acme"}, "field 'original_key': expected bytes, got str"),
        ({"rejected_at": None}, "field 'rejected_at': expected long"),
        ({"source": "x"}, "fields not in the schema: source"),
    ]
    for changes, message in cases:
        with pytest.raises(InvalidArgumentError, match=message):
            codec.encode(dead_letter(**changes))
    record = dead_letter()
    del record["reason"]
    with pytest.raises(InvalidArgumentError, match="missing required field 'reason'"):
        codec.encode(record)


# --- the generated front and the checked writer behind it -----------------------------


def checked_writer(write: Any) -> Any:
    """The checked writer the front falls back to (the reference for it)."""
    return write.slow if NATIVE["native"] else write.__globals__["slow"]


def test_each_front_is_the_one_asked_for(front: str) -> None:
    from authtrail import _speedups

    assert isinstance(flat_writer(FLAT), _speedups.FlatWriter) is (front == "c")


@settings(max_examples=400, deadline=None)
@given(record=FLAT_RECORDS)
def test_the_generated_front_writes_what_the_checked_writer_writes(
    record: dict[str, Any],
) -> None:
    write = flat_writer(FLAT)
    assert write(record) == checked_writer(write)(record)


class Small(int):
    """An int subclass: the front leaves it (and anything not exactly int) to the checked
    writer, which writes it as the int it is."""


@pytest.mark.parametrize(
    "changes",
    [
        {"small": Small(5), "big": Small(-7), "maybe_small": Small(1)},
        {"raw": b"x" * 200, "text": "é" * 100, "maybe_raw": b"y" * 64},  # two-byte lengths
        {"big": LONG_RANGE[0], "at": LONG_RANGE[1], "maybe_at": -1},
        {"count": -1, "label": "none é", "enabled": False},  # defaults given explicitly
    ],
)
def test_the_front_and_the_checked_writer_agree_on_edges(changes: dict[str, Any]) -> None:
    write = flat_writer(FLAT)
    record = flat_record(**changes)
    assert write(record) == checked_writer(write)(record) == fastavro_body(FLAT, record)


def test_a_left_out_default_and_an_unknown_field_of_the_same_count_is_refused() -> None:
    # As many keys as the schema has fields, one of them unknown: only the key check
    # after the fields tells, so the front must not take the count for proof.
    record = flat_record(maybe_small=None, maybe_at=None, maybe_flag=None, maybe_raw=None,
                         maybe_text=None, maybe_digest=None, count=1, label="x",
                         surprise=1)  # fmt: skip
    assert len(record) == len(FLAT["fields"])
    with pytest.raises(InvalidArgumentError, match="fields not in the schema: surprise"):
        flat_writer(FLAT)(record)


def test_the_chained_records_tail_known_bytes() -> None:
    """The tail every chained record carries, worked out from the Avro specification."""
    chained = load_schema(CHAINED_RECORD)
    write = flat_writer({**chained, "fields": chained["fields"][1:]})
    tail = {"seq": 64, "prev_hash": bytes(32), "hash": b"\x01" * 32,
            "leaf_hash": b"\x02" * 32, "source_partition": 3, "source_offset": -1, "epoch": 1,
            "source_index": 300}  # fmt: skip
    expected = (b"\x80\x01" + bytes(32) + b"\x01" * 32 + b"\x02" * 32
                + b"\x06" + b"\x01" + b"\x02" + b"\x02\xd8\x04")  # fmt: skip
    assert write(tail) == expected
    assert write({**tail, "source_index": None}) == expected[:-3] + b"\x00"
    assert checked_writer(write)(tail) == expected


sha256s = st.binary(min_size=32, max_size=32)
CHECKPOINTS = st.fixed_dictionaries(
    {
        "tenant_id": st.text(max_size=40),
        "size": longs,
        "note": st.text(max_size=300),
        "root": sha256s,
        "batch_first_seq": longs,
        "batch_last_seq": longs,
        "batch_root": sha256s,
        "chain_head": sha256s,
        "prev_digest": sha256s,
        "time_micros": longs,
    },
    optional={"epoch": longs},
)


@settings(max_examples=300, deadline=None)
@given(record=CHECKPOINTS)
def test_checkpoints_are_written_as_fastavro_writes_them(record: dict[str, Any]) -> None:
    schema = load_schema(CHECKPOINT)
    data = SingleObjectCodec(schema).encode(record)
    assert data[SINGLE_OBJECT_HEADER_SIZE:] == fastavro_body(schema, record)


def test_avro_long_is_fastavros_long_encoding() -> None:
    """The one zig-zag varint the chained batches and the sink's containers use."""
    assert [avro_long(n) for n in (0, -1, 1, 63, -64, 64)] == [
        b"\x00", b"\x01", b"\x02", b"\x7e", b"\x7f", b"\x80\x01"
    ]  # fmt: skip
    for number in (0, 1, -1, 127, 128, -129, 8191, 2**31, -(2**31), 2**63 - 1, -(2**63)):
        expected = io.BytesIO()
        schemaless_writer(expected, "long", number)
        assert avro_long(number) == expected.getvalue(), number


# --- the auth event: enums and a map of strings ------------------------------------------

AUTH_EVENT_SCHEMA = load_schema(AUTH_EVENT)
OPTIONAL_TEXT = [field["name"] for field in AUTH_EVENT_SCHEMA["fields"]
                 if field["type"] == ["null", "string"]]  # fmt: skip
AUTH_EVENTS = st.fixed_dictionaries(
    {
        "event_id": st.text(max_size=40),
        "tenant_id": st.text(max_size=20),
        "event_type": st.sampled_from(AUTH_EVENT_SCHEMA["fields"][2]["type"]["symbols"]),
        "occurred_at": longs,
    },
    optional={
        "outcome": st.sampled_from(["SUCCESS", "FAILURE", "UNKNOWN"]),
        "received_at": st.none() | longs,
        "attributes": st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=40),
        **{name: st.none() | st.text(max_size=30) for name in OPTIONAL_TEXT},
    },
)


def test_the_auth_event_compiles() -> None:
    assert flat_writer(AUTH_EVENT_SCHEMA) is not None


@settings(max_examples=300, deadline=None)
@given(AUTH_EVENTS)
def test_auth_events_are_written_as_fastavro_writes_them(event: dict[str, Any]) -> None:
    assert flat_writer(AUTH_EVENT_SCHEMA)(event) == fastavro_body(AUTH_EVENT_SCHEMA, event)


class _Text(str):
    pass


@pytest.mark.parametrize(
    "changes",
    [
        {"outcome": _Text("FAILURE")},  # a str subclass: the checked path, same bytes
        {"attributes": types.MappingProxyType({"é": "ü" * 100, "": ""})},  # another Mapping
        {"attributes": {f"k{i}": "v" * i for i in range(300)}},  # sizes past one byte
        {"event_type": "OTHER", "event_type_other": "SAML_ASSERTION"},
    ],
)
def test_auth_events_off_the_fast_path_are_the_same_bytes(changes: dict[str, Any]) -> None:
    event = {"event_id": "e", "tenant_id": "acme", "event_type": "LOGIN",
             "occurred_at": 1_700_000_000_000_000, **changes}  # fmt: skip
    assert flat_writer(AUTH_EVENT_SCHEMA)(event) == fastavro_body(AUTH_EVENT_SCHEMA, event)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"outcome": "MAYBE"}, "expected a symbol of io.authtrail.Outcome"),
        ({"event_type": 1}, "expected a symbol of io.authtrail.EventType"),
        ({"attributes": {"a": 1}}, "value of key 'a'"),
        ({"attributes": {1: "a"}}, "map key must be a string"),
        ({"attributes": ["a"]}, "expected a map"),
        ({"attributes": {"a": "\ud800"}}, "cannot encode"),
    ],
)
def test_auth_events_the_check_refuses_are_refused(changes: dict[str, Any], message: str) -> None:
    event = {"event_id": "e", "tenant_id": "acme", "event_type": "LOGIN",
             "occurred_at": 1, **changes}  # fmt: skip
    with pytest.raises(InvalidArgumentError, match=message):
        flat_writer(AUTH_EVENT_SCHEMA)(event)


class _Text(str):
    pass


ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(*INT_RANGE).map(Small),
    st.binary(max_size=6), st.binary(max_size=6).map(bytearray), st.text(max_size=6),
    st.text(max_size=4).map(_Text), st.floats(allow_nan=False),
    st.sampled_from(["\ud800", "a\udfff"]),  # lone surrogates: no UTF-8
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)  # fmt: skip


def _outcome(write: Any, record: Any) -> bytes | tuple[type, str]:
    try:
        result: bytes = write(record)
    except Exception as exc:
        return type(exc), str(exc)
    return result


@settings(max_examples=600, deadline=None)
@given(
    base=FLAT_RECORDS,
    changes=st.dictionaries(
        st.sampled_from([f["name"] for f in FLAT["fields"]] + ["surprise"]), ANY_VALUE,
        max_size=3,
    ),
    dropped=st.sets(st.sampled_from([f["name"] for f in FLAT["fields"]]), max_size=2),
)  # fmt: skip
def test_any_record_gets_what_the_checked_writer_gives(
    base: dict[str, Any], changes: dict[str, Any], dropped: set[str]
) -> None:
    # Wrong types, subclasses, out-of-range numbers, unknown and missing fields, text
    # UTF-8 cannot encode: the front writes the same bytes or raises the same error.
    record = {k: v for k, v in {**base, **changes}.items() if k not in dropped}
    write = flat_writer(FLAT)
    assert _outcome(write, record) == _outcome(checked_writer(write), record)
