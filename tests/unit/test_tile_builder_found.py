"""The tile builder's view of the hashes one round read (sinks/tile_builder.py ``_Found``):
the same answers whether the engine's Arrow column is FixedString's packed buffer or a
column of separate binaries, in one chunk or several, sliced or not."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from authtrail.sinks.tile_builder import _Found


def _hash(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


ROWS = [("a", 0, _hash(0)), ("a", 1, _hash(1)), ("a", 2, _hash(2)),
        ("b", 0, _hash(10)), ("b", 1, _hash(11)), ("b", 1, _hash(12)),
        ("c", 4, _hash(20)), ("c", 5, _hash(21))]  # fmt: skip


def _table(hash_type: pa.DataType, pad: int) -> pa.Table:
    """ROWS in two chunks, after ``pad`` rows that are sliced off."""
    rows = [("0", 0, _hash(99))] * pad + ROWS
    columns = list(zip(*rows, strict=True))
    table = pa.table({"tenant": pa.array(columns[0]),
                      "index": pa.array(columns[1], pa.uint64()),
                      "hash": pa.array(columns[2], hash_type)})  # fmt: skip
    table = table.slice(pad)
    return pa.concat_tables([table.slice(0, 4), table.slice(4)])


@pytest.mark.parametrize("hash_type", [pa.binary(32), pa.binary()])
@pytest.mark.parametrize("pad", [0, 3])
def test_runs_are_taken_whole_only_when_one_hash_per_index(
    hash_type: pa.DataType, pad: int
) -> None:
    found = _Found(_table(hash_type, pad), level=1)
    assert found.hashes("a", 0, 3) == [_hash(0), _hash(1), _hash(2)]
    assert found.hashes("a", 0, 2) is None  # more rows than indexes asked
    assert found.hashes("b", 0, 2) is None  # index 1 twice
    assert found.by_index("b") == {0: _hash(10), 1: None}  # twice, different hashes
    assert found.hashes("c", 4, 6) == [_hash(20), _hash(21)]
    assert found.hashes("c", 3, 5) is None  # the right count, other indexes
    assert found.hashes("z", 0, 0) == []  # no run, nothing asked
    assert found.by_index("z") == {}


def test_a_null_hash_is_never_taken_as_a_run() -> None:
    table = pa.table({"tenant": ["a", "a"], "index": pa.array([0, 1], pa.uint64()),
                      "hash": pa.array([_hash(0), None], pa.binary(32))})  # fmt: skip
    found = _Found(table, level=1)
    assert found.hashes("a", 0, 2) is None
    assert found.by_index("a") == {0: _hash(0), 1: None}
