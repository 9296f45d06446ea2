"""The rejection log's canonical leaf and reserved tenants (stream/core/rejection.py).

Known answers are written out from docs/INTEGRITY.md §12 byte by byte, so a change in the
encoding fails here before it makes stored rejection logs unverifiable.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from authtrail.errors import InvalidArgumentError
from authtrail.stream.core.rejection import is_rejection_tenant, rejection_leaf, rejection_tenant

DEAD_LETTER = {
    "original": b"\x00garbage",
    "original_key": None,
    "reason": "no",
    "error_kind": "undecodable",
    "source_topic": "events",
    "source_partition": 3,
    "source_offset": 41,
    "source_timestamp": None,
    "tenant_id": None,
    "rejected_at": 1700000000000000,
}


def _field(name: str, kind: bytes, value: bytes) -> bytes:
    u32 = struct.Struct(">I").pack
    return u32(len(name)) + name.encode() + kind + u32(len(value)) + value


def test_known_answer_fields_sorted_by_name_nulls_omitted_bytes_as_is() -> None:
    expected = (
        b"authtrail-rejection-v1\n"
        + _field("error_kind", b"s", b"undecodable")
        + _field("original", b"b", b"\x00garbage")
        + _field("reason", b"s", b"no")
        + _field("rejected_at", b"i", b"1700000000000000")
        + _field("source_offset", b"i", b"41")
        + _field("source_partition", b"i", b"3")
        + _field("source_topic", b"s", b"events")
    )
    assert rejection_leaf(DEAD_LETTER) == expected
    assert (
        hashlib.sha256(b"\x00" + expected).hexdigest()
        == hashlib.sha256(
            b"\x00" + rejection_leaf(dict(reversed(list(DEAD_LETTER.items()))))
        ).hexdigest()
    )  # independent of the order fields were filled in


@pytest.mark.parametrize(
    "change",
    [{"reason": "No"}, {"original": b"\x00garbagf"}, {"original_key": b""},
     {"tenant_id": "acme"}, {"source_offset": 42}, {"rejected_at": 1700000000000001},
     {"source_timestamp": 0}, {"error_kind": "undecodable "}],
)  # fmt: skip
def test_every_field_is_covered(change: dict) -> None:
    assert rejection_leaf({**DEAD_LETTER, **change}) != rejection_leaf(DEAD_LETTER)


@pytest.mark.parametrize(
    "bad",
    [{"original": "text, not bytes"}, {"reason": b"bytes"}, {"source_offset": True},
     {"source_offset": "41"}, {"reason": "\ud800"}, {"original": None}, {"rejected_at": None},
     {"source_partition": None}],
)  # fmt: skip
def test_wrong_types_missing_fields_and_lone_surrogates_are_refused(bad: dict) -> None:
    with pytest.raises(InvalidArgumentError):
        rejection_leaf({**DEAD_LETTER, **bad})


def test_reserved_tenants() -> None:
    assert rejection_tenant(0) == "authtrail-rejected-0"
    assert is_rejection_tenant(rejection_tenant(12))
    for other in ("authtrail-rejected-01", "authtrail-rejected-", "authtrail-rejected-1x", "acme"):
        assert not is_rejection_tenant(other)
    with pytest.raises(InvalidArgumentError):
        rejection_tenant(-1)
