"""authtrail._speedups, the worker's decode and canonical leaf in C, against the Python
code it stands in for.

Both C functions may leave an input to Python (they return None) but must never give a
different answer: the reader a different record, the leaf a different byte. Each is
compared with its Python twin on generated, damaged and hand-made inputs, and the C
path must actually be taken for ordinary input (else these tests would pass on a build
that always falls back).
"""

from __future__ import annotations

import gc
import io
import itertools
import tracemalloc
from collections import OrderedDict
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail.producers.traffic import TrafficConfig, generate_events
from authtrail.schemas import AUTH_EVENT, CHAINED_RECORD, load_schema
from authtrail.schemas._flat_reader import compile_flat_reader
from authtrail.schemas.codec import SINGLE_OBJECT_MARKER, SingleObjectCodec, _without_logical_types
from authtrail.stream.core import canonical
from authtrail.stream.core.canonical import MAGIC, canonical_leaf
from authtrail.stream.core.chain import ChainLink
from authtrail.stream.worker import sequencing
from authtrail.stream.worker.app import codec
from benchmarks.worker_core import run, workload
from tests.unit.test_worker_golden import CHAINED_DIGEST

try:
    from authtrail import _speedups
except ImportError as exc:  # pragma: no cover - what this test exists to catch
    pytest.fail(
        f"authtrail._speedups is not built ({exc}): install a C compiler (gcc) and reinstall "
        "(make venv); without it the worker runs pure Python, slower per event",
        pytrace=False,
    )

SCHEMA = load_schema(AUTH_EVENT)
PARSED: Any = parse_schema(_without_logical_types(SCHEMA))
C_READ = compile_flat_reader(PARSED)
PY_READ = compile_flat_reader(PARSED, native=False)


def test_the_codec_and_the_leaf_use_the_c_code() -> None:
    assert isinstance(C_READ, _speedups.FlatReader)
    assert PY_READ is not None and not isinstance(PY_READ, _speedups.FlatReader)
    assert canonical._leaf_v1 is _speedups.leaf_v1 and canonical.speedups_built()
    assert SingleObjectCodec(SCHEMA)._reader.read.__class__ is _speedups.FlatReader


def body(event: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, PARSED, event)
    return out.getvalue()


def traffic(count: int) -> list[dict[str, Any]]:
    config = TrafficConfig(tenants=5, users=50, start_us=1_700_000_000_000_000,
                           events_per_second=100.0)  # fmt: skip
    return list(itertools.islice(generate_events(config, 11), count))


def same_record(left: dict[str, Any] | None, right: dict[str, Any] | None) -> bool:
    """Equal with the same key order and the same value types (1 is not True, ...)."""
    if left is None or right is None:
        return left is right
    return list(left.items()) == list(right.items()) and [type(v) for v in left.values()] == [
        type(v) for v in right.values()
    ]


# --- the reader -----------------------------------------------------------------------


def test_the_reader_reads_generated_traffic_as_python_does() -> None:
    assert C_READ is not None and PY_READ is not None
    for event in traffic(500):
        data = body(event)
        read = C_READ(data, 0)
        assert read is not None
        assert same_record(read, PY_READ(data, 0))


@settings(max_examples=500, deadline=None)
@given(
    data=st.binary(max_size=120),
    prefix=st.binary(max_size=4),
)
def test_any_bytes_read_as_python_reads_them(data: bytes, prefix: bytes) -> None:
    assert C_READ is not None and PY_READ is not None
    assert same_record(C_READ(prefix + data, len(prefix)), PY_READ(prefix + data, len(prefix)))


@settings(max_examples=500, deadline=None)
@given(
    index=st.integers(0, 499),
    cut=st.integers(0, 60),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
)
def test_damaged_traffic_reads_as_python_reads_it(
    index: int, cut: int, flips: list[tuple[int, int]]
) -> None:
    assert C_READ is not None and PY_READ is not None
    data = bytearray(body(TRAFFIC[index]))
    for at, value in flips:
        if at < len(data):
            data[at] = value
    damaged = bytes(data[: len(data) - cut] if cut % 2 else data + bytes(cut % 7))
    assert same_record(C_READ(damaged, 0), PY_READ(damaged, 0))


TRAFFIC = traffic(500)
# event_id "e", tenant_id "t", event_type 0, its "other" null, outcome 1, occurred_at,
# received_at 3, 23 nulls, attributes: the parts the cases below change.
HEAD = b"\x02e\x02t\x00\x00\x02"
NULLS = bytes(23)


def _event(occurred_at: bytes = b"\x03", attributes: bytes = b"\x00") -> bytes:
    return HEAD + occurred_at + b"\x02\x06" + NULLS + attributes


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # the extreme longs: ten-byte varints whose last byte is 1
        (_event(b"\xff" * 9 + b"\x01"), {"occurred_at": -(2**63)}),
        (_event(b"\xfe" + b"\xff" * 8 + b"\x01"), {"occurred_at": 2**63 - 1}),
        (_event(b"\xfe" + b"\xff" * 8 + b"\x02"), None),  # beyond 64 bits
        (_event(b"\x80" * 10 + b"\x00"), None),  # eleven bytes
        (_event(b"\x80\x00"), {"occurred_at": 0}),  # a padded varint reads as Python reads it
        # maps: a repeated key keeps the last value in the first key's place
        (
            _event(attributes=b"\x06\x02k\x02a\x02j\x02b\x02k\x02c\x00"),
            {"attributes": {"k": "c", "j": "b"}},
        ),
        (
            _event(attributes=b"\x02\x02k\x02a\x02\x02j\x02b\x00"),  # two blocks
            {"attributes": {"k": "a", "j": "b"}},
        ),
        (_event(attributes=b"\x80\x00"), {"attributes": {}}),  # a padded zero count
        (_event(attributes=b"\x01\x02\x02k\x02a\x00"), None),  # a block with its byte size
        (_event(attributes=b"\x02\x02k"), None),  # cut inside an entry
        (_event(attributes=b"\x02\x02k\x02\xc3\x00"), None),  # a value that is not UTF-8
        (_event(attributes=b"\x02\x02k\x06\xed\xa0\x80\x00"), None),  # an encoded surrogate
        # lengths far beyond the body
        (b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", None),
        (b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", None),
        # enum indexes: one byte only, in range
        (HEAD[:4] + b"\x80\x00" + HEAD[5:] + b"\x03\x02\x06" + NULLS + b"\x00", None),
        (HEAD[:4] + b"\x7e" + HEAD[5:] + b"\x03\x02\x06" + NULLS + b"\x00", None),
        # a union branch 1 (zig-zag -1) or 4
        (HEAD + b"\x03\x01" + NULLS + b"\x00", None),
        (HEAD + b"\x03\x04\x06" + NULLS + b"\x00", None),
        (_event() + b"\x00", None),  # trailing bytes
    ],
)
def test_edge_bodies(data: bytes, expected: dict[str, Any] | None) -> None:
    _reads(C_READ, PY_READ, data, expected)


def _reads(c_read: Any, py_read: Any, data: bytes, expected: dict[str, Any] | None) -> None:
    """Both readers read ``data`` alike: None when ``expected`` is, else a record with the
    ``expected`` values."""
    assert c_read is not None and py_read is not None
    read = c_read(data, 0)
    assert same_record(read, py_read(data, 0))
    if expected is None:
        assert read is None
    else:
        assert read is not None and {name: read[name] for name in expected} == expected


# A record of the kinds the auth event lacks: int, boolean, bytes, fixed, an optional int
# and a nested record.
OTHER_KINDS = parse_schema({"type": "record", "name": "Other", "fields": [
    {"name": "i", "type": "int"}, {"name": "b", "type": "boolean"},
    {"name": "raw", "type": "bytes"},
    {"name": "h", "type": {"type": "fixed", "name": "H", "size": 2}},
    {"name": "o", "type": ["null", "int"]},
    {"name": "r", "type": {"type": "record", "name": "In",
                           "fields": [{"name": "s", "type": "string"}]}},
]})  # fmt: skip
OTHER_C, OTHER_PY = compile_flat_reader(OTHER_KINDS), compile_flat_reader(OTHER_KINDS, native=False)


def _other(i: bytes = b"\x02", b: bytes = b"\x01", raw: bytes = b"\x02a", h: bytes = b"\x01\x02",
           o: bytes = b"\x00", r: bytes = b"\x02z") -> bytes:  # fmt: skip
    return i + b + raw + h + o + r


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_other(), {"i": 1, "b": True, "raw": b"a", "h": b"\x01\x02", "o": None, "r": {"s": "z"}}),
        (_other(b=b"\x00", o=b"\x02\x03"), {"b": False, "o": -2}),
        (_other(i=b"\xfe\xff\xff\xff\x0f"), {"i": 2**31 - 1}),  # the extreme ints
        (_other(i=b"\xff\xff\xff\xff\x0f"), {"i": -(2**31)}),
        (_other(i=b"\x80\x80\x80\x80\x10"), None),  # 2**31: beyond 32 bits
        (_other(o=b"\x02\x81\x80\x80\x80\x10"), None),  # -2**31 - 1, in the union
        (_other(b=b"\x02"), None),  # a boolean byte other than 0 or 1
        (_other(raw=b"\x00"), {"raw": b""}),
        (_other(raw=b"\x03a"), None),  # a negative length
        (_other(raw=b"\x02\xff"), {"raw": b"\xff"}),  # bytes need no UTF-8
        (_other(h=b"\x01", o=b"", r=b""), None),  # the fixed cut short, at the end
        (_other(r=b"\x02\xff"), None),  # the nested record's text not UTF-8
        (_other(r=b"\x04z"), None),  # ... cut short
        (_other(r=b"\x02zz"), None),  # trailing bytes after it
    ],
)
def test_edge_bodies_of_the_other_kinds(data: bytes, expected: dict[str, Any] | None) -> None:
    assert isinstance(OTHER_C, _speedups.FlatReader)
    _reads(OTHER_C, OTHER_PY, data, expected)


def test_the_reader_takes_any_buffer_and_refuses_bad_positions() -> None:
    assert C_READ is not None
    data = body(TRAFFIC[0])
    expected = C_READ(data, 0)
    assert expected is not None
    assert C_READ(memoryview(b"xx" + data), 2) == expected
    assert C_READ(bytearray(data), 0) == expected
    assert C_READ(data, len(data) + 1) is None
    assert C_READ(data, -1) is None
    with pytest.raises(TypeError):
        C_READ("text", 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        [("a", 10, False, None)],  # no such kind
        [("a", 9, True, None)],  # an optional array
        [("a", 9, False, ("x",))],  # an array with symbols
        [("a", 2, False, None)],  # an enum without symbols
        [("a", 1, False, ("x",))],  # symbols for a string
        [("a", 3, True, None)],  # an optional map
        [(1, 0, False, None)],  # a name that is not text
        [("a", 7, False, None)],  # a fixed without its size
        [("a", 7, False, -1)],  # a negative size
        [("a", 7, False, "32")],  # a size that is no int
        [("a", 8, False, None)],  # a record without its reader
        [("a", 8, False, ("x",))],  # ... or with something else
        [("a", 8, True, _speedups.FlatReader([("n", 0, False, None)]))],  # an optional one
        [("a", 0, False, _speedups.FlatReader([]))],  # a reader for a long
    ],
)
def test_the_reader_refuses_a_bad_field_spec(spec: list[tuple[Any, ...]]) -> None:
    with pytest.raises((ValueError, TypeError)):
        _speedups.FlatReader(spec)


# --- the leaf -------------------------------------------------------------------------


class _Text(str):
    pass


class _Number(int):
    pass


names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
text = st.text(max_size=20)  # any code point, lone surrogates included
plain_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
values = st.one_of(
    st.none(),
    text,
    plain_text,
    text.map(_Text),
    st.integers(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1).map(_Number),
    st.booleans(),
    st.floats(allow_nan=False),
    st.binary(max_size=4),
    st.dictionaries(text, text, max_size=4),
    st.dictionaries(plain_text, plain_text, max_size=6),
    st.dictionaries(plain_text, plain_text, max_size=3).map(OrderedDict),
    st.dictionaries(plain_text, st.integers() | st.none(), min_size=1, max_size=2),
)


def python_leaf(event: dict[str, Any]) -> bytes | Exception:
    try:
        return canonical._python_leaf(event, canonical._layout(tuple(event)))
    except Exception as exc:
        return exc


def c_leaf(event: dict[str, Any]) -> bytes | None:
    """The C leaf with the sealed-value step canonical_leaf takes after it (version 2 when
    a top-level value is sealed), or None where C leaves the event to Python."""
    layout = canonical._layout(tuple(event))
    leaf = _speedups.leaf_v1(event, layout, MAGIC)
    if leaf is None or canonical.SEALED_MARK not in leaf:
        return leaf
    return canonical._sealed_leaf(event, layout, leaf)


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(names, values, max_size=12))
def test_the_c_leaf_is_the_python_leaf_or_none(event: dict[str, Any]) -> None:
    leaf = c_leaf(event)
    expected = python_leaf(event)
    if leaf is not None:
        assert leaf == expected
    result: bytes | Exception
    try:
        result = canonical_leaf(event)
    except Exception as exc:
        result = exc
    if isinstance(expected, Exception):
        assert type(result) is type(expected) and str(result) == str(expected)
    else:
        assert result == expected


ordinary = st.dictionaries(
    names,
    st.none()
    | plain_text
    | st.integers(-(2**63), 2**63 - 1)
    | st.dictionaries(plain_text, plain_text, max_size=6),
    max_size=12,
)


@settings(max_examples=500, deadline=None)
@given(ordinary)
def test_ordinary_events_take_the_c_path(event: dict[str, Any]) -> None:
    leaf = c_leaf(event)
    assert leaf is not None and leaf == python_leaf(event)


def test_map_entries_sort_by_key_bytes() -> None:
    # Code point order is UTF-8 byte order; a key that is a prefix of another sorts first.
    entries = {"ab": "1", "a": "2", "é": "3", "Z": "4", "": "5", "\U0001f600": "6", "z": ""}
    event = {"attributes": entries}
    layout = canonical._layout(tuple(event))
    assert _speedups.leaf_v1(event, layout, MAGIC) == python_leaf(event)
    order = [b"", b"Z", b"a", b"ab", b"z", "é".encode(), "\U0001f600".encode()]
    leaf = _speedups.leaf_v1(event, layout, MAGIC)
    assert leaf is not None
    positions = [leaf.index(len(key).to_bytes(4, "big") + key + b"\x00") for key in order[1:]]
    assert positions == sorted(positions)


def test_realistic_events_take_the_c_path_and_match() -> None:
    codec = SingleObjectCodec(SCHEMA)
    for event in TRAFFIC:
        decoded = codec.decode(codec.encode(event))
        leaf = c_leaf(decoded)
        assert leaf is not None and leaf == python_leaf(decoded)


def test_a_sealed_value_still_gives_a_v2_leaf() -> None:
    from authtrail.stream.core.canonical import MAGIC_V2, SEALED_PREFIX

    sealed = SEALED_PREFIX + "AAAA"
    event = {"tenant_id": "t", "user_name": sealed}
    leaf = canonical_leaf(event)
    assert leaf.startswith(MAGIC_V2) and b"c\x00\x00\x00" in leaf
    assert leaf == canonical._sealed_leaf(event, canonical._layout(tuple(event)), b"")


def test_bad_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError):
        _speedups.leaf_v1({}, [], MAGIC)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _speedups.leaf_v1({}, (), "magic")  # type: ignore[arg-type]
    assert _speedups.leaf_v1(OrderedDict(a="b"), (("a", b"", b""),), MAGIC) is None
    assert _speedups.leaf_v1({"a": "b"}, (("a",),), MAGIC) is None  # not a layout entry
    assert _speedups.leaf_v1({}, (("a", b"s", b"i"),), MAGIC) is None  # a missing key


def test_the_remembered_layout_gives_leaf_v1s_leaf() -> None:
    codec = SingleObjectCodec(SCHEMA)
    decoded = [codec.decode(codec.encode(event)) for event in TRAFFIC]
    mark = canonical.SEALED_MARK
    keys = tuple(decoded[0])
    layout = canonical._layout(keys)
    _speedups.remember_layout(keys, layout)
    for event in decoded:  # the decoder's dicts: the same key objects in the same order
        assert tuple(event) == keys
        leaf = _speedups.leaf_known(event, MAGIC, mark)
        assert leaf is not None and leaf == _speedups.leaf_v1(event, layout, MAGIC)
        assert leaf == canonical_leaf(event) == python_leaf(event)
    event = decoded[0]
    sealed = {**event, "user_name": canonical.SEALED_PREFIX + "AAAA"}
    assert _speedups.leaf_known(sealed, MAGIC, mark) is None  # v2's
    assert _speedups.leaf_known({**event, "tenant_id": True}, MAGIC, mark) is None  # Python's
    reordered = dict(reversed(list(event.items())))
    assert _speedups.leaf_known(reordered, MAGIC, mark) is None
    copied = {"".join(key): value for key, value in event.items()}  # equal keys, other objects
    assert tuple(copied) == keys and _speedups.leaf_known(copied, MAGIC, mark) is None
    _speedups.remember_layout(tuple(copied), layout)  # a layout cached for equal keys
    assert _speedups.leaf_known(copied, MAGIC, mark) == _speedups.leaf_v1(event, layout, MAGIC)
    assert _speedups.leaf_known(event, MAGIC, mark) is None  # now the other objects
    _speedups.remember_layout(keys, layout)
    assert _speedups.leaf_known(event, MAGIC, mark) is not None
    assert _speedups.leaf_known(event, MAGIC, b"authtrail-event-v1") is None  # holds the mark
    assert _speedups.leaf_known(dict(list(event.items())[:-1]), MAGIC, mark) is None
    assert _speedups.leaf_known(OrderedDict(event), MAGIC, mark) is None
    _speedups.remember_layout((*keys[:-1], "other"), layout)  # not event's layout
    assert _speedups.leaf_known(event, MAGIC, mark) is None
    _speedups.remember_layout(keys, canonical._layout(keys[:-1]))  # one entry short
    assert _speedups.leaf_known(event, MAGIC, mark) is None
    with pytest.raises(TypeError):
        _speedups.leaf_known(event, MAGIC, "x")  # type: ignore[arg-type]


@settings(max_examples=800, deadline=None)
@given(st.dictionaries(names, values, max_size=12))
def test_a_leaf_of_the_remembered_layout_is_the_python_leaf_or_none(
    event: dict[str, Any],
) -> None:
    expected = python_leaf(event)
    if not isinstance(expected, Exception):
        assert canonical_leaf(event) == expected  # which remembers its layout if C took it
    leaf = _speedups.leaf_known(event, MAGIC, canonical.SEALED_MARK)
    assert leaf is None or (leaf == expected and canonical.SEALED_MARK not in leaf)


# --- memory -----------------------------------------------------------------------------


def test_no_memory_is_kept_per_call() -> None:
    assert C_READ is not None and OTHER_C is not None
    bodies = [body(event) for event in TRAFFIC[:200]]
    damaged = [data[:-3] for data in bodies]
    events = [C_READ(data, 0) for data in bodies]
    layouts = [canonical._layout(tuple(event)) for event in events if event is not None]

    def work() -> None:
        for data, cut in zip(bodies, damaged, strict=True):
            C_READ(data, 0)
            C_READ(cut, 0)
            OTHER_C(_other(), 0)  # a nested record, whole and failing inside it
            OTHER_C(_other(r=b"\x04z"), 0)
        for event, layout in zip(events, layouts, strict=True):
            _speedups.leaf_v1(event, layout, MAGIC)
            _speedups.leaf_v1({**event, "tenant_id": True}, layout, MAGIC)  # Python path
            _speedups.remember_layout(tuple(event), layout)
            _speedups.leaf_known(event, MAGIC, canonical.SEALED_MARK)

    work()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            work()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept after 20 rounds of 800 reads and 400 leaves"


def test_an_enum_index_of_two_bytes_is_left_to_fastavro() -> None:
    # With more than 64 symbols an index can take two varint bytes; both readers leave
    # those to fastavro (a one-byte reader would misread 0x80 0x01 as index 64 then 0x01).
    symbols = [f"S{n}" for n in range(100)]
    schema = {"type": "record", "name": "r", "fields": [
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": symbols}},
        {"name": "n", "type": "long"}]}  # fmt: skip
    parsed = parse_schema(schema)
    c_read, py_read = compile_flat_reader(parsed), compile_flat_reader(parsed, native=False)
    assert isinstance(c_read, _speedups.FlatReader) and py_read is not None
    assert c_read(b"\x7e\x02", 0) == py_read(b"\x7e\x02", 0) == {"e": "S63", "n": 1}
    for data in (b"\x80\x01\x02", b"\x80\x01", b"\x82\x01\x02"):
        assert c_read(data, 0) is None and py_read(data, 0) is None


# ------------------------------------------------------------------ chained body

EVENTS, CHAINED = codec(AUTH_EVENT), codec(CHAINED_RECORD)
EVENT_HEADER = SINGLE_OBJECT_MARKER + EVENTS.reader_fingerprint
INT32, INT64 = (-(2**31), 2**31 - 1), (-(2**63), 2**63 - 1)
SHA = st.binary(min_size=32, max_size=32)


def _codec_body(value: bytes, link: tuple[Any, ...], position: tuple[Any, ...]) -> bytes:
    """What the worker wrote before the C code: the codec's spliced body."""
    body = EVENTS.current_body(value)
    assert body is not None
    partition, offset, epoch, index = position
    rest = {
        "seq": link[0], "prev_hash": link[1], "leaf_hash": link[2], "hash": link[3],
        "source_partition": partition, "source_offset": offset, "epoch": epoch,
        "source_index": index,
    }  # fmt: skip
    return CHAINED.spliced_body(body, rest)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(traffic(40)),
    st.integers(*INT64), SHA, SHA, SHA,
    st.integers(*INT32), st.integers(*INT64), st.integers(*INT64),
    st.one_of(st.none(), st.integers(*INT32)),
)  # fmt: skip
def test_the_chained_body_is_the_codecs(
    event: dict[str, Any], seq: int, prev: bytes, leaf: bytes, chained: bytes,
    partition: int, offset: int, epoch: int, index: int | None,
) -> None:  # fmt: skip
    value = EVENTS.encode(event)
    link = ChainLink(seq, prev, leaf, chained)
    native = _speedups.chained_body(value, EVENT_HEADER, link, partition, offset, epoch, index)
    assert native is not None
    assert native == _codec_body(value, link, (partition, offset, epoch, index))
    record = CHAINED.decode(SINGLE_OBJECT_MARKER + CHAINED.reader_fingerprint + native)
    assert record["event"] == EVENTS.decode(value)
    assert (record["seq"], record["prev_hash"], record["leaf_hash"], record["hash"]) == link
    assert record["source_index"] == index and record["epoch"] == epoch


def test_the_worker_writes_chained_bodies_in_c() -> None:
    assert sequencing._native_chained_body is _speedups.chained_body


def test_the_worker_chains_the_known_bytes_with_the_codec_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sequencing, "_native_chained_body", lambda *args: None)
    assert run(workload(3000, 20, 100))["chained_sha256"] == CHAINED_DIGEST


@pytest.mark.parametrize(
    "change",
    [
        {"value": b"\xc3\x01" + bytes(8) + b"body"},  # another schema's fingerprint
        {"value": EVENT_HEADER[:5]},  # shorter than the header
        {"value": bytearray(EVENT_HEADER + b"x")},
        {"link": (1, bytes(32), bytes(32))},  # not four fields
        {"link": (1, bytes(31), bytes(32), bytes(32))},
        {"link": (1, bytes(32), bytearray(32), bytes(32))},
        {"link": (2**63, bytes(32), bytes(32), bytes(32))},  # beyond a long
        {"link": (True, bytes(32), bytes(32), bytes(32))},  # not an exact int
        {"partition": 2**31},  # beyond an int
        {"offset": -(2**63) - 1},
        {"epoch": 1.0},
        {"index": 2**31},
        {"index": "0"},
    ],
)
def test_the_chained_body_leaves_the_unusual_to_the_codec(change: dict[str, Any]) -> None:
    args = {"value": EVENT_HEADER + b"body", "header": EVENT_HEADER,
            "link": (1, bytes(32), bytes(32), bytes(32)), "partition": 0, "offset": 0,
            "epoch": 0, "index": None} | change  # fmt: skip
    assert _speedups.chained_body(*args.values()) is None


def test_the_c_leaf_writes_every_integer_as_python_does() -> None:
    # The digits are C's own, not snprintf's: every length, both signs, both ends.
    numbers = [0, 1, -1, 9, 10, -9, -10, 99, 100, 1_700_000_000_000_000, 2**63 - 1, -(2**63)]
    numbers += [10**k - 1 for k in range(1, 19)] + [-(10**k) for k in range(1, 19)]
    for number in numbers:
        event = {"n": number, "m": -number if number > -(2**63) else 0}
        assert c_leaf(event) == python_leaf(event)
