"""The bench's SHA-256 limit arithmetic (benchmarks/verify_limit.py), by known answers."""

from __future__ import annotations

from benchmarks.verify_limit import blocks, ceiling, row_shape


def test_blocks_count_padding() -> None:
    # 55 bytes + 0x80 + 8-byte length fit one block; 56 need two (FIPS 180-4 §5.1.1).
    assert (blocks(0), blocks(55), blocks(56), blocks(119), blocks(120)) == (1, 1, 2, 2, 3)


def test_row_shape_of_a_633_byte_leaf() -> None:
    shape = row_shape(633.0, 12.0)
    assert shape["message_bytes"] == {"leaf": 634, "chain": 139, "node": 65}
    assert shape["blocks_per_row"] == 11 + 3 + 2


def test_ceiling_is_hashings_share_of_read_plus_hash() -> None:
    limit = {"cores": 2, "limit_rows_per_s": 2_000_000}
    # 1 M rows hash in 2 x 1 M / 2 M = 1.0 CPU s at the limit.
    assert ceiling(limit, 0.25, 1_000_000) == 0.8
    assert ceiling(limit, 1.0, 1_000_000) == 0.5
    assert ceiling(limit, 0.0, 1_000_000) == 1.0
    assert ceiling(limit, 0.5, 500_000) == 0.5  # the hashing scales with the rows
