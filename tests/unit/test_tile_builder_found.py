"""The tile builder's view of the hashes one round read (sinks/tile_builder.py ``_Found``):
the same tile roots whether the engine's Arrow column is FixedString's packed buffer
(hashed in C, or sliced when the C code is off) or a column of separate binaries, in one
chunk or several, sliced or not; a run that is not one hash per index is never taken."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from authtrail.sinks import tile_builder
from authtrail.sinks.tile_builder import _Found
from authtrail.stream.core.tiles import TILE_WIDTH


def _hash(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def _root(hashes: list[bytes]) -> bytes:
    """A perfect tree's root over 32-byte hashes, pairs hashed level by level (RFC 6962
    node hashes, written out again)."""
    while len(hashes) > 1:
        hashes = [hashlib.sha256(b"\x01" + hashes[i] + hashes[i + 1]).digest()
                  for i in range(0, len(hashes), 2)]  # fmt: skip
    return hashes[0]


W = TILE_WIDTH
ROWS = (
    [("a", i, _hash(i)) for i in range(2 * W)]  # two whole tiles
    + [("b", i, _hash(1000 + i)) for i in range(W)]
    + [("b", 1, _hash(7))]  # index 1 twice
    + [("c", i, _hash(i)) for i in range(W, 2 * W) if i != W + 44]
    + [("c", W + 43, _hash(W + 43))]  # index W+43 twice, W+44 missing: the right count
)


def _table(hash_type: pa.DataType, pad: int) -> pa.Table:
    """ROWS in two chunks, after ``pad`` rows that are sliced off."""
    rows = [("0", 0, _hash(99))] * pad + sorted(ROWS, key=lambda row: row[:2])
    columns = list(zip(*rows, strict=True))
    table = pa.table({"tenant": pa.array(columns[0]),
                      "index": pa.array(columns[1], pa.uint64()),
                      "hash": pa.array(columns[2], hash_type)})  # fmt: skip
    table = table.slice(pad)
    return pa.concat_tables([table.slice(0, 300), table.slice(300)])


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("hash_type", [pa.binary(32), pa.binary()])
@pytest.mark.parametrize("pad", [0, 3])
def test_runs_are_taken_whole_only_when_one_hash_per_index(
    hash_type: pa.DataType, pad: int, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not native:
        monkeypatch.setattr(tile_builder, "native_tile_roots", lambda packed, width: None)
    found = _Found(_table(hash_type, pad), level=1)
    a = [_hash(i) for i in range(2 * W)]
    assert found.roots("a", 0, 2 * W) == [_root(a[:W]), _root(a[W:])]
    assert found.roots("a", 0, W) is None  # more rows than indexes asked
    assert found.roots("b", 0, W) is None  # index 1 twice
    assert found.by_index("b")[1] is None  # twice, different hashes
    assert found.roots("c", W, 2 * W) is None  # the right count, other indexes
    assert found.by_index("c")[W + 43] == _hash(W + 43)  # twice, equal: kept
    assert W + 44 not in found.by_index("c")
    assert found.roots("z", 0, 0) == []  # no run, nothing asked
    assert found.by_index("z") == {}


def test_a_null_hash_is_never_taken_as_a_run() -> None:
    hashes = [_hash(i) for i in range(W)]
    table = pa.table({"tenant": ["a"] * W, "index": pa.array(range(W), pa.uint64()),
                      "hash": pa.array([*hashes[:-1], None], pa.binary(32))})  # fmt: skip
    found = _Found(table, level=1)
    assert found.roots("a", 0, W) is None
    assert found.by_index("a")[W - 1] is None
