"""Decoding canonical leaves: known answers from the spec, round trips, tampered variants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authtrail.errors import FormatError
from authtrail.stream.core.canonical import MAGIC, MAGIC_V2, canonical_leaf
from authtrail.stream.core.leaf_decode import decode_canonical_leaf

# tests/unit/test_canonical.py: the §2 example.
V1_LEAF = (
    b"authtrail-event-v1\n"
    + b"\x00\x00\x00\x0aattributes" + b"m" + b"\x00\x00\x00\x02"
    + b"\x00\x00\x00\x01a" + b"\x00\x00\x00\x02\xc3\xa9"
    + b"\x00\x00\x00\x01b" + b"\x00\x00\x00\x012"
    + b"\x00\x00\x00\x0boccurred_at" + b"i" + b"\x00\x00\x00\x101700000000000000"
    + b"\x00\x00\x00\x08seq_hint" + b"i" + b"\x00\x00\x00\x02-5"
    + b"\x00\x00\x00\x09tenant_id" + b"s" + b"\x00\x00\x00\x04acme"
)  # fmt: skip
# tests/unit/test_shredding.py: the §2.1 example.
SEALED = (
    "authtrail-sealed-v1:00112233445566778899aabbccddeeff:nLD+SC88DwBbTTEv:"
    "hVmlcVRqlRAtd+OKlfgmUv+jBkTK57HM8tXxFbuT7OET"
)
V2_LEAF = (
    b"authtrail-event-v2\n"
    + b"\x00\x00\x00\x0boccurred_at" + b"i" + b"\x00\x00\x00\x015"
    + b"\x00\x00\x00\x09tenant_id" + b"s" + b"\x00\x00\x00\x04acme"
    + b"\x00\x00\x00\x09user_name" + b"c" + len(SEALED).to_bytes(4, "big") + SEALED.encode()
)  # fmt: skip


def _field(name: bytes, kind: bytes, value: bytes) -> bytes:
    return len(name).to_bytes(4, "big") + name + kind + len(value).to_bytes(4, "big") + value


def test_known_answer_v1() -> None:
    event = decode_canonical_leaf(V1_LEAF)
    assert event == {"attributes": {"a": "é", "b": "2"}, "occurred_at": 1700000000000000,
                     "seq_hint": -5, "tenant_id": "acme"}  # fmt: skip
    assert list(event) == sorted(event) and list(event["attributes"]) == ["a", "b"]  # type: ignore[arg-type]
    assert canonical_leaf(event) == V1_LEAF


def test_known_answer_v2() -> None:
    event = decode_canonical_leaf(V2_LEAF)
    assert event == {"occurred_at": 5, "tenant_id": "acme", "user_name": SEALED}
    assert canonical_leaf(event) == V2_LEAF


def test_the_empty_event() -> None:
    assert decode_canonical_leaf(MAGIC) == {}


def test_64_bit_bounds_and_zero() -> None:
    for value in (0, -(2**63), 2**64 - 1):
        assert decode_canonical_leaf(canonical_leaf({"n": value})) == {"n": value}


names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
values = st.one_of(
    st.none(),
    text,
    text.map(lambda value: "authtrail-sealed-v1:" + value),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.dictionaries(text, text, max_size=4),
)


@given(st.dictionaries(names, values, max_size=10))
def test_round_trip(event: dict) -> None:
    leaf = canonical_leaf(event)
    decoded = decode_canonical_leaf(leaf)
    assert canonical_leaf(decoded) == leaf
    assert decoded == {k: v for k, v in event.items() if v is not None and v != {}}


@given(st.dictionaries(names, values, min_size=1, max_size=6), st.data())
def test_any_flipped_or_cut_byte_is_refused_or_another_leaf(
    event: dict, data: st.DataObject
) -> None:
    leaf = canonical_leaf(event)
    position = data.draw(st.integers(0, len(leaf) - 1))
    flipped = bytearray(leaf)
    flipped[position] ^= data.draw(st.integers(1, 255))
    for variant in (bytes(flipped), leaf[:position], leaf + b"\x00"):
        try:
            decoded = decode_canonical_leaf(variant)
        except FormatError:
            continue
        assert canonical_leaf(decoded) == variant != leaf  # only ever an exact other leaf


def _v1(*fields: bytes) -> bytes:
    return MAGIC + b"".join(fields)


TAMPERED = {
    "trailing bytes": V1_LEAF + b"\x00",
    "cut short": V1_LEAF[:-1],
    "cut in a length": V1_LEAF[: len(MAGIC) + 2],
    "overlong length": MAGIC + b"\xff\xff\xff\xff" + b"a",
    "unknown magic": b"authtrail-event-v3\n",
    "no magic": b"",
    "unsorted names": _v1(_field(b"b", b"s", b"x"), _field(b"a", b"s", b"x")),
    "duplicate names": _v1(_field(b"a", b"s", b"x"), _field(b"a", b"s", b"y")),
    "bad name": _v1(_field(b"A", b"s", b"x")),
    "empty name": _v1(_field(b"", b"s", b"x")),
    "bad type byte": _v1(_field(b"a", b"x", b"x")),
    "invalid utf-8": _v1(_field(b"a", b"s", b"\xff")),
    "surrogate utf-8": _v1(_field(b"a", b"s", b"\xed\xa0\x80")),
    "leading zero": _v1(_field(b"a", b"i", b"01")),
    "minus zero": _v1(_field(b"a", b"i", b"-0")),
    "plus sign": _v1(_field(b"a", b"i", b"+1")),
    "empty integer": _v1(_field(b"a", b"i", b"")),
    "space in integer": _v1(_field(b"a", b"i", b" 1")),
    "unicode digit": _v1(_field(b"a", b"i", "\u0661".encode())),
    "over 64 bits": _v1(_field(b"a", b"i", str(2**64).encode())),
    "hostile digit count": _v1(_field(b"a", b"i", b"9" * 5000)),
    "empty map": _v1(b"\x00\x00\x00\x01a" + b"m" + b"\x00\x00\x00\x00"),
    "unsorted map keys": _v1(
        b"\x00\x00\x00\x01a"
        + b"m"
        + b"\x00\x00\x00\x02"
        + b"\x00\x00\x00\x01b\x00\x00\x00\x00"
        + b"\x00\x00\x00\x01a\x00\x00\x00\x00"
    ),
    "duplicate map keys": _v1(
        b"\x00\x00\x00\x01a"
        + b"m"
        + b"\x00\x00\x00\x02"
        + b"\x00\x00\x00\x01a\x00\x00\x00\x00"
        + b"\x00\x00\x00\x01a\x00\x00\x00\x00"
    ),
    "map count too large": _v1(
        b"\x00\x00\x00\x01a" + b"m" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x01a\x00\x00\x00\x00"
    ),
    "sealed type in v1": _v1(_field(b"a", b"c", SEALED.encode())),
    "sealed text typed s in v1": _v1(_field(b"a", b"s", SEALED.encode())),
    "sealed text typed s in v2": MAGIC_V2
    + _field(b"a", b"c", SEALED.encode())
    + _field(b"b", b"s", SEALED.encode()),
    "c without the sealed prefix": MAGIC_V2 + _field(b"a", b"c", b"plain"),
    "v2 without a sealed field": MAGIC_V2 + _field(b"a", b"s", b"x"),
}


@pytest.mark.parametrize("leaf", TAMPERED.values(), ids=TAMPERED.keys())
def test_non_canonical_bytes_are_refused(leaf: bytes) -> None:
    with pytest.raises(FormatError):
        decode_canonical_leaf(leaf)


def test_errors_name_what_and_where() -> None:
    with pytest.raises(FormatError, match=r"b'a' at byte 30 is out of order after b'b'"):
        decode_canonical_leaf(TAMPERED["unsorted names"])
    with pytest.raises(FormatError, match=r"field 'a'.*b'01' is not a canonical decimal"):
        decode_canonical_leaf(TAMPERED["leading zero"])
    with pytest.raises(FormatError, match="ends inside"):
        decode_canonical_leaf(TAMPERED["cut short"])


def test_sealed_text_inside_a_map_stays_version_1() -> None:
    event = {"attributes": {"note": SEALED}}
    leaf = canonical_leaf(event)
    assert leaf.startswith(MAGIC) and decode_canonical_leaf(leaf) == event
