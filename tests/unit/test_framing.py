"""Wire framing: Avro single-object encoding and the Confluent wire format.

Known answers come from the Avro project, not from the code under test: the fingerprints
in apache/avro ``share/test/data/schema-tests.txt`` (cross-checked there by the Java
implementation) and a Rabin fingerprint written here from the specification's reference
algorithm. Every rejection path is exercised, and hypothesis checks that no input makes
``decode`` raise anything but :class:`FormatError`.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail.errors import (
    ConfigurationError,
    FormatError,
    InvalidArgumentError,
    UnknownSchemaError,
)
from authtrail.schemas import AUTH_EVENT, CHAINED_RECORD, CHECKPOINT, DEAD_LETTER, load_schema
from authtrail.schemas.codec import (
    SINGLE_OBJECT_HEADER_SIZE,
    ConfluentCodec,
    SingleObjectCodec,
    parsing_canonical_form,
    schema_fingerprint,
)

# (schema, canonical form, CRC-64-AVRO as the signed long Java prints), from apache/avro
# share/test/data/schema-tests.txt @0ea74a36cebb2e5fbc37e599814a05c33cb7d424.
SPEC_VECTORS: list[tuple[Any, str, int]] = [
    ("null", '"null"', 7195948357588979594),
    ("int", '"int"', 8247732601305521295),
    ("string", '"string"', -8142146995180207161),
    (["int", {"type": "boolean"}], '["int","boolean"]', 5392556393470105090),
    (
        {"fields": [], "type": "record", "name": "foo", "namespace": "x.y"},
        '{"name":"x.y.foo","type":"record","fields":[]}',
        5916914534497305771,
    ),
    (
        {"fields": [], "type": "record", "name": "a.b.foo", "namespace": "x.y"},
        '{"name":"a.b.foo","type":"record","fields":[]}',
        -4616218487480524110,
    ),
    (
        {
            "fields": [
                # The spec file writes "default": "true", a string fastavro rightly
                # refuses for a boolean; defaults are not part of the canonical form.
                {"type": "boolean", "aliases": [], "name": "f1", "default": True},
                {"order": "descending", "name": "f2", "doc": "Hello", "type": "int"},
            ],
            "type": "record",
            "name": "foo",
        },
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},'
        '{"name":"f2","type":"int"}]}',
        -4860222112080293046,
    ),
    (
        {
            "namespace": "x.y.z",
            "type": "enum",
            "name": "foo",
            "doc": "foo bar",
            "symbols": ["A1", "A2"],
        },
        '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}',
        -4448647247586288245,
    ),
    (
        {"namespace": "x.y.z", "type": "fixed", "name": "foo", "doc": "foo bar", "size": 32},
        '{"name":"x.y.z.foo","type":"fixed","size":32}',
        -3064184465700546786,
    ),
    ({"values": "string", "type": "map"}, '{"type":"map","values":"string"}', -8732877298790414990),
    (
        {
            "name": "PigValue",
            "type": "record",
            "fields": [{"name": "value", "type": ["null", "int", "long", "PigValue"]}],
        },
        '{"name":"PigValue","type":"record","fields":[{"name":"value","type":'
        '["null","int","long","PigValue"]}]}',
        -1759257747318642341,
    ),
]

# schema-tests.txt case 025: a one-boolean record, fingerprint 7843277075252814651.
FOO_SCHEMA = {
    "fields": [{"type": {"type": "boolean"}, "name": "f1"}],
    "type": "record",
    "name": "foo",
}
FOO_FINGERPRINT = 7843277075252814651

# apache/avro share/test/data/messageV1/test_schema.avsc, the single-object interop schema.
TEST_MESSAGE_SCHEMA = {
    "type": "record",
    "namespace": "org.apache.avro",
    "name": "TestMessage",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
}


def rabin_fingerprint(data: bytes) -> bytes:
    """CRC-64-AVRO exactly as the Avro specification's reference code computes it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for index in range(256):
        value = index
        for _ in range(8):
            value = (value >> 1) ^ (empty & -(value & 1))
        table.append(value)
    fingerprint = empty
    for byte in data:
        fingerprint = (fingerprint >> 8) ^ table[(fingerprint ^ byte) & 0xFF]
    return fingerprint.to_bytes(8, "little")


def full_event(**changes: Any) -> dict[str, Any]:
    schema_fields = load_schema(AUTH_EVENT)["fields"]
    event: dict[str, Any] = {field["name"]: f"{field['name']}-value" for field in schema_fields}
    event.update(
        event_type="LOGIN_FAILED",
        outcome="FAILURE",
        occurred_at=1_700_000_000_123_456,
        received_at=1_700_000_000_999_999,
        attributes={"client.geographicalContext.city": "Zürich", "port": "22"},
        user_agent="Mozilla/5.0 😀",
    )
    event.update(changes)
    return event


def minimal_event() -> dict[str, Any]:
    return {"event_id": "e-1", "tenant_id": "acme", "event_type": "LOGIN", "occurred_at": 0}


TEXT_CHARACTERS = st.characters(codec="utf-8")  # any text UTF-8 can carry (no surrogates)


@pytest.fixture(scope="module")
def codec() -> SingleObjectCodec:
    return SingleObjectCodec(load_schema(AUTH_EVENT))


# --- fingerprints --------------------------------------------------------------------


@pytest.mark.parametrize(("schema", "canonical", "java_long"), SPEC_VECTORS)
def test_fingerprint_matches_the_avro_spec_test_vectors(
    schema: Any, canonical: str, java_long: int
) -> None:
    assert parsing_canonical_form(schema) == canonical
    expected = struct.pack("<q", java_long)  # single-object framing is little-endian
    assert schema_fingerprint(schema) == expected
    assert rabin_fingerprint(canonical.encode()) == expected


@pytest.mark.parametrize("name", [AUTH_EVENT, CHAINED_RECORD, CHECKPOINT, DEAD_LETTER])
def test_fingerprint_of_our_schemas_matches_the_reference_algorithm(name: str) -> None:
    schema = load_schema(name)
    assert schema_fingerprint(schema) == rabin_fingerprint(parsing_canonical_form(schema).encode())


def test_invalid_schema_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="not a valid Avro schema"):
        schema_fingerprint(
            {"type": "record", "name": "x", "fields": [{"name": "a", "type": "nope"}]}
        )


# --- single-object encoding: known answers ------------------------------------------


def test_known_single_object_bytes_for_the_spec_boolean_record() -> None:
    codec = SingleObjectCodec(FOO_SCHEMA)
    expected = b"\xc3\x01" + struct.pack("<q", FOO_FINGERPRINT) + b"\x01"  # true = 0x01
    assert codec.encode({"f1": True}) == expected
    assert codec.decode(expected) == {"f1": True}
    assert codec.decode(expected[:-1] + b"\x00") == {"f1": False}


def test_known_single_object_bytes_for_the_avro_interop_message() -> None:
    # Body assembled by hand from the spec's binary encoding: zig-zag varints, length-
    # prefixed strings, one array block of 2 items then a 0 terminator.
    body = (
        b"\x54"  # id 42 -> zig-zag 84
        + b"\x08Bill"
        + b"\x04"
        + b"\x12dog_lover"
        + b"\x12cat_hater"
        + b"\x00"
    )
    fingerprint = rabin_fingerprint(parsing_canonical_form(TEST_MESSAGE_SCHEMA).encode())
    record = {"id": 42, "name": "Bill", "tags": ["dog_lover", "cat_hater"]}
    codec = SingleObjectCodec(TEST_MESSAGE_SCHEMA)
    assert codec.encode(record) == b"\xc3\x01" + fingerprint + body
    assert codec.decode(b"\xc3\x01" + fingerprint + body) == record


def test_header_is_marker_then_the_reader_fingerprint(codec: SingleObjectCodec) -> None:
    data = codec.encode(minimal_event())
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema_fingerprint(load_schema(AUTH_EVENT)) == codec.reader_fingerprint
    assert codec.known_fingerprints == {codec.reader_fingerprint}


# --- round trips ---------------------------------------------------------------------


def test_round_trip_of_a_full_event(codec: SingleObjectCodec) -> None:
    event = full_event()
    assert codec.decode(codec.encode(event)) == event


def test_round_trip_of_a_minimal_event_fills_defaults(codec: SingleObjectCodec) -> None:
    decoded = codec.decode(codec.encode(minimal_event()))
    assert decoded["outcome"] == "UNKNOWN"
    assert decoded["attributes"] == {}
    assert decoded["user_id"] is None
    # timestamp-micros stays an integer (what the canonical leaf hashes), never a datetime.
    assert decoded["occurred_at"] == 0 and type(decoded["occurred_at"]) is int


def test_round_trip_of_the_processor_records() -> None:
    chained = {
        "event": full_event(),
        "seq": 1,
        "prev_hash": bytes(32),
        "hash": bytes(range(32)),
        "leaf_hash": b"\xff" * 32,
        "source_partition": 2,
        "source_offset": 41,
        "epoch": 3,
        "source_index": 7,
    }
    checkpoint = {
        "tenant_id": "acme",
        "size": 1000,
        "note": "authtrail.local/acme\n1000\nAAAA\n\n\u2014 authtrail AAAA\n",
        "root": b"\x01" * 32,
        "batch_first_seq": 1,
        "batch_last_seq": 1000,
        "batch_root": b"\x02" * 32,
        "chain_head": b"\x03" * 32,
        "prev_digest": bytes(32),
        "time_micros": 1_700_000_000_000_000,
        "epoch": 3,
    }
    dead_letter = {
        "original": b"\x00\x01garbage",
        "original_key": None,
        "reason": "not Avro single-object encoding",
        "error_kind": "FormatError",
        "source_topic": "authtrail.events",
        "source_partition": 3,
        "source_offset": 12345,
        "source_timestamp": None,
        "tenant_id": None,
        "rejected_at": 1_700_000_000_000_001,
        "source_index": None,
    }
    records: list[tuple[str, dict[str, Any]]] = [
        (CHAINED_RECORD, chained),
        (CHECKPOINT, checkpoint),
        (DEAD_LETTER, dead_letter),
    ]
    for name, record in records:
        codec = SingleObjectCodec(load_schema(name))
        assert codec.decode(codec.encode(record)) == record, name


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(TEXT_CHARACTERS, max_size=40),
    micros=st.integers(-(2**63), 2**63 - 1),
    event_type=st.sampled_from(["LOGIN", "LOGOUT", "OTHER", "BRUTE_FORCE_SUSPECTED"]),
    attributes=st.dictionaries(
        st.text(TEXT_CHARACTERS, max_size=10),
        st.text(TEXT_CHARACTERS, max_size=10),
        max_size=5,
    ),
)
def test_any_conforming_event_round_trips(
    text: str, micros: int, event_type: str, attributes: dict[str, str]
) -> None:
    codec = SingleObjectCodec(load_schema(AUTH_EVENT))
    event = full_event(
        user_name=text, occurred_at=micros, event_type=event_type, attributes=attributes
    )
    assert codec.decode(codec.encode(event)) == event


# --- encode refuses records that do not match ---------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"user_nme": "typo"}, "fields not in the schema: user_nme"),
        ({"tenant_id": None}, "field 'tenant_id': expected string"),
        ({"occurred_at": True}, "field 'occurred_at': expected long, got bool"),
        ({"occurred_at": 1.5}, "field 'occurred_at': expected long"),
        ({"occurred_at": 2**63}, "field 'occurred_at': expected long"),
        ({"event_type": "LOGGED_IN"}, "expected a symbol of io.authtrail.EventType"),
        ({"user_id": 42}, "field 'user_id': expected string, got int 42 \\(or null\\)"),
        ({"attributes": {"port": 22}}, "value of key 'port': expected string"),
        ({"attributes": ["a"]}, "field 'attributes': expected a map"),
    ],
)
def test_encode_rejects_a_record_that_does_not_match(
    codec: SingleObjectCodec, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        codec.encode(full_event(**changes))


def test_encode_rejects_missing_required_fields_and_unencodable_text(
    codec: SingleObjectCodec,
) -> None:
    event = minimal_event()
    del event["occurred_at"]
    with pytest.raises(InvalidArgumentError, match="missing required field 'occurred_at'"):
        codec.encode(event)
    with pytest.raises(InvalidArgumentError, match="cannot encode"):
        codec.encode(full_event(user_name="lone \ud800 surrogate"))
    with pytest.raises(ValueError):  # InvalidArgumentError is also a ValueError
        codec.encode({"not": "an event"})


def test_encode_checks_nested_records_and_fixed_sizes() -> None:
    codec = SingleObjectCodec(load_schema(CHAINED_RECORD))
    chained = {"event": minimal_event(), "seq": 1, "prev_hash": bytes(32), "hash": bytes(32)}
    with pytest.raises(InvalidArgumentError, match="missing required field 'leaf_hash'"):
        codec.encode(chained)
    with pytest.raises(InvalidArgumentError, match="field 'hash': expected 32 bytes"):
        codec.encode({**chained, "leaf_hash": bytes(32), "hash": bytes(31)})
    with pytest.raises(InvalidArgumentError, match="field 'event': fields not in the schema: x"):
        codec.encode({**chained, "leaf_hash": bytes(32), "event": {**minimal_event(), "x": "1"}})


# --- decode rejects bad bytes --------------------------------------------------------


def test_wrong_marker_is_a_format_error(codec: SingleObjectCodec) -> None:
    data = codec.encode(minimal_event())
    with pytest.raises(FormatError, match="starts with c302, expected c301"):
        codec.decode(b"\xc3\x02" + data[2:])
    with pytest.raises(FormatError, match="looks like Confluent wire format"):
        codec.decode(b"\x00\x00\x00\x00\x01" + data[10:])
    with pytest.raises(FormatError, match="starts with nothing"):
        codec.decode(b"")
    with pytest.raises(FormatError, match="expected bytes, got NoneType"):
        codec.decode(None)  # type: ignore[arg-type]  # a Kafka tombstone


def test_unknown_fingerprint_names_it_in_hex(codec: SingleObjectCodec) -> None:
    data = codec.encode(minimal_event())
    forged = data[:2] + bytes.fromhex("0123456789abcdef") + data[10:]
    with pytest.raises(UnknownSchemaError, match="unknown schema fingerprint 0123456789abcdef"):
        codec.decode(forged)


def test_every_truncation_is_a_format_error(codec: SingleObjectCodec) -> None:
    data = codec.encode(full_event())
    for size in range(len(data)):
        with pytest.raises(FormatError) as raised:
            codec.decode(data[:size])
        assert not isinstance(raised.value, UnknownSchemaError) or size < 10, size
        if 2 <= size < 10:
            assert "truncated single-object header" in str(raised.value)
        if size >= 10:
            assert "truncated" in str(raised.value)


def test_trailing_bytes_are_a_format_error(codec: SingleObjectCodec) -> None:
    data = codec.encode(minimal_event())
    with pytest.raises(
        FormatError, match=r"1 trailing bytes after the io\.authtrail\.AuthEvent body"
    ):
        codec.decode(data + b"\x00")
    with pytest.raises(FormatError, match="5 trailing bytes"):
        codec.decode(data + b"extra")


def test_undecodable_bodies_are_format_errors(codec: SingleObjectCodec) -> None:
    header = b"\xc3\x01" + codec.reader_fingerprint
    event_id = b"\x02e"
    tenant = b"\x02t"
    with pytest.raises(FormatError, match="undecodable"):
        # event_type index -64 does not exist (more bytes follow, so it is not truncation)
        codec.decode(header + event_id + tenant + b"\x7f" + bytes(40))
    with pytest.raises(FormatError, match="undecodable"):
        codec.decode(header + b"\x04\xff\xfe" + tenant + bytes(40))  # event_id is not UTF-8
    with pytest.raises(FormatError):
        codec.decode(header + b"\xff" * 12)  # a varint longer than 64 bits


def byte_strings() -> st.SearchStrategy[bytes]:
    return st.binary(max_size=200)


@settings(max_examples=500, deadline=None)
@given(data=byte_strings())
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    codec = SingleObjectCodec(load_schema(AUTH_EVENT))
    with contextlib.suppress(FormatError):
        codec.decode(data)


@settings(max_examples=500, deadline=None)
@given(body=byte_strings())
def test_random_bodies_behind_a_valid_header_raise_only_format_errors(body: bytes) -> None:
    codec = SingleObjectCodec(load_schema(AUTH_EVENT))
    try:
        decoded = codec.decode(b"\xc3\x01" + codec.reader_fingerprint + body)
    except FormatError:
        return
    # Random bytes can happen to be a valid event; then it must re-encode to themselves.
    assert codec.encode(decoded) == b"\xc3\x01" + codec.reader_fingerprint + body


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_corrupted_valid_messages_raise_only_format_errors(position: int, flip: int) -> None:
    codec = SingleObjectCodec(load_schema(AUTH_EVENT))
    data = bytearray(codec.encode(full_event()))
    data[position % len(data)] ^= flip
    with contextlib.suppress(FormatError):
        codec.decode(bytes(data))


# --- Confluent wire format -----------------------------------------------------------


class CountingRegistry(Mapping[int, Any]):
    """A registry seam like an HTTP client's: fetches by id, counts the fetches."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas
        self.fetches: list[int] = []

    def __getitem__(self, schema_id: int) -> Any:
        self.fetches.append(schema_id)
        return self.schemas[schema_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self.schemas)

    def __len__(self) -> int:
        return len(self.schemas)


def test_confluent_round_trip_and_header() -> None:
    schema = load_schema(AUTH_EVENT)
    codec = ConfluentCodec(schema, schema_id=7, registry={7: schema})
    data = codec.encode(full_event())
    assert data[:5] == b"\x00\x00\x00\x00\x07"
    assert codec.decode(data) == full_event()


def test_confluent_reads_other_registered_versions_and_fetches_each_id_once() -> None:
    import json
    from pathlib import Path

    versions = Path(__file__).parent / "schema_versions"
    v1_text = (versions / "auth_event_v1.avsc").read_text()  # a registry returns JSON text
    v2 = json.loads((versions / "auth_event_v2.avsc").read_text())
    registry = CountingRegistry({1: v1_text, 2: v2})
    v2_reader = ConfluentCodec(v2, schema_id=2, registry=registry)
    v1_writer = ConfluentCodec(v1_text, schema_id=1, registry={1: v1_text})
    event = minimal_event()
    for _ in range(3):
        decoded = v2_reader.decode(v1_writer.encode(event))
        assert decoded["device_id"] is None and decoded["event_id"] == "e-1"
    assert registry.fetches == [2, 1]


def test_confluent_rejections() -> None:
    schema = load_schema(AUTH_EVENT)
    codec = ConfluentCodec(schema, schema_id=7, registry={7: schema, 9: "not a schema"})
    data = codec.encode(minimal_event())
    with pytest.raises(UnknownSchemaError, match="unknown schema id 8"):
        codec.decode(b"\x00\x00\x00\x00\x08" + data[5:])
    with pytest.raises(UnknownSchemaError, match="schema id 9 in the registry is not usable"):
        codec.decode(b"\x00\x00\x00\x00\x09" + data[5:])
    with pytest.raises(FormatError, match="looks like Avro single-object encoding"):
        codec.decode(SingleObjectCodec(schema).encode(minimal_event()))
    with pytest.raises(FormatError, match="truncated Confluent header: 3 of 5 bytes"):
        codec.decode(data[:3])
    with pytest.raises(FormatError, match="2 trailing bytes"):
        codec.decode(data + b"\x00\x00")
    for size in range(5, len(data)):
        with pytest.raises(FormatError, match="truncated"):
            codec.decode(data[:size])


def test_confluent_configuration_errors() -> None:
    schema = load_schema(AUTH_EVENT)
    with pytest.raises(ConfigurationError, match="unknown schema id 3"):
        ConfluentCodec(schema, schema_id=3, registry={})
    with pytest.raises(ConfigurationError, match="not the reader schema"):
        ConfluentCodec(schema, schema_id=3, registry={3: load_schema(DEAD_LETTER)})
    with pytest.raises(InvalidArgumentError, match="schema id must be in"):
        ConfluentCodec(schema, schema_id=-1, registry={-1: schema})


@settings(max_examples=300, deadline=None)
@given(data=byte_strings())
def test_confluent_random_bytes_raise_only_format_errors(data: bytes) -> None:
    schema = load_schema(AUTH_EVENT)
    codec = ConfluentCodec(schema, schema_id=1, registry={1: schema})
    with contextlib.suppress(FormatError):
        codec.decode(b"\x00" + data)


# --- splicing an encoded first field (the worker's chained records) -----------------


def _chained_rest(**changes: Any) -> dict[str, Any]:
    rest: dict[str, Any] = {"seq": 1, "prev_hash": bytes(32), "hash": bytes(range(32)),
                            "leaf_hash": b"\xff" * 32, "source_partition": 2,
                            "source_offset": 41, "epoch": 3, "source_index": None}  # fmt: skip
    rest.update(changes)
    return rest


def test_the_chained_record_embeds_exactly_the_auth_event_schema(codec: SingleObjectCodec) -> None:
    chained = SingleObjectCodec(load_schema(CHAINED_RECORD))
    assert chained.first_field_fingerprint == codec.reader_fingerprint
    assert codec.first_field_fingerprint is None  # its first field is a string
    with pytest.raises(InvalidArgumentError, match="not a record"):
        _ = SingleObjectCodec("string").first_field_fingerprint


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(TEXT_CHARACTERS, max_size=40),
    attributes=st.dictionaries(
        st.text(TEXT_CHARACTERS, max_size=10), st.text(TEXT_CHARACTERS, max_size=10), max_size=5
    ),
    seq=st.integers(-(2**63), 2**63 - 1),
    partition=st.integers(-(2**31), 2**31 - 1),
    offset=st.integers(-(2**63), 2**63 - 1),
    epoch=st.integers(-(2**63), 2**63 - 1),
    digest=st.binary(min_size=32, max_size=32),
    minimal=st.booleans(),
)
def test_spliced_encoding_equals_the_normal_encoding(
    text: str, attributes: dict[str, str], seq: int, partition: int, offset: int, epoch: int,
    digest: bytes, minimal: bool,
) -> None:  # fmt: skip
    events = SingleObjectCodec(load_schema(AUTH_EVENT))
    chained = SingleObjectCodec(load_schema(CHAINED_RECORD))
    event = minimal_event() if minimal else full_event(user_name=text, attributes=attributes)
    data = events.encode(event)
    rest = _chained_rest(seq=seq, hash=digest, source_partition=partition,
                         source_offset=offset, epoch=epoch)  # fmt: skip
    body = events.current_body(data)
    assert body is not None
    spliced = chained.encode_spliced(body, rest)
    assert spliced == chained.encode({"event": events.decode(data), **rest})
    assert chained.decode(spliced) == {"event": events.decode(data), **rest}


def test_spliced_encoding_known_bytes_of_the_fields_after_the_event() -> None:
    chained = SingleObjectCodec(load_schema(CHAINED_RECORD))
    rest = _chained_rest(seq=-1, source_partition=-65, source_offset=2**63 - 1, epoch=64)
    tail = chained.encode_spliced(b"", rest)[SINGLE_OBJECT_HEADER_SIZE:]
    # zig-zag varints: -1 -> 01, -65 -> 81 01, 2^63-1 -> fe ff.. 01, 64 -> 80 01
    expected = (b"\x01" + bytes(32) + bytes(range(32)) + b"\xff" * 32 + b"\x81\x01"
                + b"\xfe" + b"\xff" * 8 + b"\x01" + b"\x80\x01")  # fmt: skip
    assert tail == expected + b"\x00"  # source_index: union branch 0, null (a bare event)
    indexed = chained.encode_spliced(b"", {**rest, "source_index": 64})
    assert indexed[SINGLE_OBJECT_HEADER_SIZE:] == expected + b"\x02\x80\x01"  # branch 1, 64
    # fields with defaults may be left out, as for encode()
    minimal = {k: rest[k] for k in ("seq", "prev_hash", "hash", "leaf_hash")}
    assert chained.encode_spliced(b"x", minimal) == chained.encode_spliced(
        b"x", {**minimal, "source_partition": -1, "source_offset": -1, "epoch": 0}
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seq": None}, "field 'seq': expected long, got None"),
        ({"seq": True}, "field 'seq': expected long, got bool True"),
        ({"seq": 2**63}, "field 'seq': expected long"),
        ({"source_partition": 2**31}, "field 'source_partition': expected int"),
        ({"source_partition": -(2**31) - 1}, "field 'source_partition': expected int"),
        ({"hash": bytes(31)}, "field 'hash': expected 32 bytes, got bytes"),
        ({"leaf_hash": "x" * 32}, "field 'leaf_hash': expected 32 bytes, got str"),
        ({"event": {}}, "fields not in the schema: event"),
        ({"surprise": 1}, "fields not in the schema: surprise"),
    ],
)
def test_spliced_encoding_rejects_what_encode_rejects(
    changes: dict[str, Any], message: str
) -> None:
    chained = SingleObjectCodec(load_schema(CHAINED_RECORD))
    with pytest.raises(InvalidArgumentError, match=message):
        chained.encode_spliced(b"", _chained_rest(**changes))
    with pytest.raises(InvalidArgumentError):  # the normal encoding refuses it too
        chained.encode({"event": minimal_event(), **_chained_rest(**changes)})
    missing = _chained_rest()
    del missing["prev_hash"]
    with pytest.raises(InvalidArgumentError, match="missing required field 'prev_hash'"):
        chained.encode_spliced(b"", missing)


def test_current_body_only_for_data_written_with_the_reader_schema(
    codec: SingleObjectCodec,
) -> None:
    data = codec.encode(full_event())
    body = codec.current_body(data)
    assert body is not None and bytes(body) == data[SINGLE_OBJECT_HEADER_SIZE:]
    older_schema = load_schema(AUTH_EVENT)
    older_schema["fields"] = older_schema["fields"][:-1]  # before `attributes` was added
    older = SingleObjectCodec(older_schema)
    old_data = older.encode({k: v for k, v in full_event().items() if k != "attributes"})
    reader = SingleObjectCodec(load_schema(AUTH_EVENT), [older_schema])
    assert reader.current_body(old_data) is None
    assert reader.decode(old_data)["attributes"] == {}  # decodes, but must be re-encoded
    assert codec.current_body(data[: SINGLE_OBJECT_HEADER_SIZE - 1]) is None
    assert codec.current_body(b"\x00" + data[1:]) is None
