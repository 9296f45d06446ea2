"""Tests for authtrail.stream.core.compact.CompactTree: known answers, reference roots,
serialisation.

Known subtree hashes per size are transparency-dev/merkle testonly/constants.go
@582a6ad1 ``CompactTrees()`` (expressed there through ``NodeHashes()``).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail.errors import FormatError, InvalidArgumentError
from authtrail.stream.core import merkle
from authtrail.stream.core.compact import CompactTree
from tests.unit import merkle_reference as ref
from tests.unit.test_merkle import LEAVES, NODE_HASHES, ROOTS

COMPACT_TREES = [  # CompactTrees()[size] as (level, index) into NodeHashes().
    [],
    [(0, 0)],
    [(1, 0)],
    [(1, 0), (0, 2)],
    [(2, 0)],
    [(2, 0), (0, 4)],
    [(2, 0), (1, 2)],
    [(2, 0), (1, 2), (0, 6)],
    [(3, 0)],
]


def _built(leaves: list[bytes]) -> CompactTree:
    tree = CompactTree()
    for data in leaves:
        tree.append(data)
    return tree


@pytest.mark.parametrize("size", range(9))
def test_known_subtree_hashes_and_roots(size: int) -> None:
    tree = _built(LEAVES[:size])
    expected = [bytes.fromhex(NODE_HASHES[level][index]) for level, index in COMPACT_TREES[size]]
    assert tree.size == size
    assert tree.to_hashes() == expected
    assert tree.root().hex() == ROOTS[size]


def test_empty_tree() -> None:
    tree = CompactTree()
    assert tree.size == 0
    assert tree.root() == merkle.EMPTY_ROOT
    assert tree.to_hashes() == []
    assert CompactTree.from_bytes(tree.to_bytes()) == tree
    assert tree.to_bytes() == b"\x00" * 8


def test_append_returns_leaf_hash_and_matches_append_leaf_hash() -> None:
    by_data, by_hash, by_extend = CompactTree(), CompactTree(), CompactTree()
    hashes = []
    for data in LEAVES:
        hashed = by_data.append(data)
        assert hashed == merkle.leaf_hash(data)
        by_hash.append_leaf_hash(hashed)
        hashes.append(hashed)
    by_extend.extend_leaf_hashes(hashes)
    assert by_data == by_hash == by_extend
    assert by_data.root().hex() == ROOTS[8]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=6), max_size=70))
def test_root_equals_merkle_root_at_every_size(leaves: list[bytes]) -> None:
    tree = CompactTree()
    assert tree.root() == merkle.root([])
    for size, data in enumerate(leaves, start=1):
        tree.append(data)
        assert tree.size == size
        assert len(tree.to_hashes()) == size.bit_count()
        assert tree.root() == merkle.root(leaves[:size])
    assert tree.root() == ref.mth(leaves)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_serialisation_round_trips_and_resumes(data: st.DataObject) -> None:
    leaves = data.draw(st.lists(st.binary(max_size=6), max_size=70))
    split = data.draw(st.integers(0, len(leaves)))
    tree = _built(leaves[:split])

    from_hashes = CompactTree.from_hashes(tree.size, tree.to_hashes())
    from_bytes = CompactTree.from_bytes(tree.to_bytes())
    assert from_hashes == from_bytes == tree
    assert len(tree.to_bytes()) == 8 + 32 * split.bit_count()

    # A restored state must carry on exactly as the original would.
    for restored in (from_hashes, from_bytes):
        for entry in leaves[split:]:
            restored.append(entry)
        assert restored.root() == merkle.root(leaves)


def test_copy_is_independent() -> None:
    tree = _built(LEAVES[:5])
    branch = tree.copy()
    branch.append(b"more")
    assert tree.size == 5 and branch.size == 6
    assert tree.root().hex() == ROOTS[5]
    assert tree != branch


def test_to_hashes_returns_a_copy() -> None:
    tree = _built(LEAVES[:3])
    hashes = tree.to_hashes()
    hashes.clear()
    assert tree.root().hex() == ROOTS[3]


def test_unhashable_and_comparable_only_to_itself() -> None:
    tree = _built(LEAVES[:2])
    with pytest.raises(TypeError):
        hash(tree)
    assert tree != (2, tree.to_hashes())
    assert "size=2" in repr(tree)


def test_large_size_is_representable() -> None:
    size = 2**40 + 2**7 + 1
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(3)]
    tree = CompactTree.from_hashes(size, hashes)
    assert CompactTree.from_bytes(tree.to_bytes()) == tree
    tree.append(b"next")  # 2**40 + 2**7 + 2: merges the trailing leaf, popcount 3 again.
    assert tree.size == size + 1
    assert len(tree.to_hashes()) == 3


# --- rejected input -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32, bytearray(32)])
def test_append_leaf_hash_rejects_non_hashes(bad: bytes) -> None:
    tree = _built(LEAVES[:3])
    with pytest.raises(InvalidArgumentError):
        tree.append_leaf_hash(bad)
    assert tree.size == 3 and tree.root().hex() == ROOTS[3]  # unchanged


@pytest.mark.parametrize(
    ("size", "count"),
    [(0, 1), (1, 0), (1, 2), (3, 1), (3, 3), (7, 2), (8, 2), (2**40 + 1, 1)],
)
def test_from_hashes_rejects_wrong_number_of_hashes(size: int, count: int) -> None:
    with pytest.raises(InvalidArgumentError):
        CompactTree.from_hashes(size, [merkle.EMPTY_ROOT] * count)


@pytest.mark.parametrize("size", [-1, True, 1.0, "1"])
def test_from_hashes_rejects_bad_sizes(size: int) -> None:
    with pytest.raises(InvalidArgumentError):
        CompactTree.from_hashes(size, [merkle.EMPTY_ROOT])


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32])
def test_from_hashes_rejects_non_hashes(bad: bytes) -> None:
    with pytest.raises(InvalidArgumentError):
        CompactTree.from_hashes(3, [merkle.EMPTY_ROOT, bad])


def test_from_bytes_rejects_malformed_state() -> None:
    state = _built(LEAVES[:7]).to_bytes()
    for malformed in (state[:-1], state + b"\x00", state[:7], b"", state[:8]):
        with pytest.raises(FormatError):
            CompactTree.from_bytes(malformed)
    with pytest.raises(FormatError):
        CompactTree.from_bytes(bytearray(state))  # type: ignore[arg-type]


def test_tampered_state_changes_the_root() -> None:
    state = bytearray(_built(LEAVES[:7]).to_bytes())
    for position in range(8, len(state)):
        tampered = bytearray(state)
        tampered[position] ^= 0x01
        assert CompactTree.from_bytes(bytes(tampered)).root().hex() != ROOTS[7]
