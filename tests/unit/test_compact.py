"""Tests for authtrail.stream.core.compact.CompactTree: known answers, reference roots,
serialisation; each on both storages (C, and the Python one of a build without it).

Known subtree hashes per size are transparency-dev/merkle testonly/constants.go
@582a6ad1 ``CompactTrees()`` (expressed there through ``NodeHashes()``).
"""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail.errors import FormatError, InvalidArgumentError
from authtrail.stream.core import merkle
from authtrail.stream.core.compact import CompactTree, PythonCompactTree
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


IMPLEMENTATIONS = {"c": CompactTree, "python": PythonCompactTree}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tree_class" in metafunc.fixturenames:
        metafunc.parametrize("tree_class", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())


def test_the_c_storage_is_built() -> None:
    assert CompactTree is not PythonCompactTree
    assert type(CompactTree()).__mro__[1].__name__ == "CompactCore"


def _built(tree_class: type[CompactTree], leaves: list[bytes]) -> CompactTree:
    tree = tree_class()
    for data in leaves:
        tree.append(data)
    return tree


@pytest.mark.parametrize("size", range(9))
def test_known_subtree_hashes_and_roots(tree_class: type[CompactTree], size: int) -> None:
    tree = _built(tree_class, LEAVES[:size])
    expected = [bytes.fromhex(NODE_HASHES[level][index]) for level, index in COMPACT_TREES[size]]
    assert tree.size == size
    assert tree.to_hashes() == expected
    assert tree.root().hex() == ROOTS[size]


def test_empty_tree(tree_class: type[CompactTree]) -> None:
    tree = tree_class()
    assert tree.size == 0
    assert tree.root() == merkle.EMPTY_ROOT
    assert tree.to_hashes() == []
    assert tree_class.from_bytes(tree.to_bytes()) == tree
    assert tree.to_bytes() == b"\x00" * 8


def test_append_returns_leaf_hash_and_matches_append_leaf_hash(
    tree_class: type[CompactTree],
) -> None:
    by_data, by_hash, by_extend = tree_class(), tree_class(), tree_class()
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
def test_root_equals_merkle_root_at_every_size(
    tree_class: type[CompactTree], leaves: list[bytes]
) -> None:
    tree = tree_class()
    assert tree.root() == merkle.root([])
    for size, data in enumerate(leaves, start=1):
        tree.append(data)
        assert tree.size == size
        assert len(tree.to_hashes()) == size.bit_count()
        assert tree.root() == merkle.root(leaves[:size])
    assert tree.root() == ref.mth(leaves)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_serialisation_round_trips_and_resumes(
    tree_class: type[CompactTree], data: st.DataObject
) -> None:
    leaves = data.draw(st.lists(st.binary(max_size=6), max_size=70))
    split = data.draw(st.integers(0, len(leaves)))
    tree = _built(tree_class, leaves[:split])

    from_hashes = tree_class.from_hashes(tree.size, tree.to_hashes())
    from_bytes = tree_class.from_bytes(tree.to_bytes())
    assert from_hashes == from_bytes == tree
    assert len(tree.to_bytes()) == 8 + 32 * split.bit_count()

    # A restored state must carry on exactly as the original would.
    for restored in (from_hashes, from_bytes):
        for entry in leaves[split:]:
            restored.append(entry)
        assert restored.root() == merkle.root(leaves)


def test_copy_is_independent(tree_class: type[CompactTree]) -> None:
    tree = _built(tree_class, LEAVES[:5])
    branch = tree.copy()
    branch.append(b"more")
    assert tree.size == 5 and branch.size == 6
    assert tree.root().hex() == ROOTS[5]
    assert tree != branch


def test_to_hashes_returns_a_copy(tree_class: type[CompactTree]) -> None:
    tree = _built(tree_class, LEAVES[:3])
    hashes = tree.to_hashes()
    hashes.clear()
    assert tree.root().hex() == ROOTS[3]


def test_unhashable_and_comparable_only_to_itself(tree_class: type[CompactTree]) -> None:
    tree = _built(tree_class, LEAVES[:2])
    with pytest.raises(TypeError):
        hash(tree)
    assert tree != (2, tree.to_hashes())
    assert "size=2" in repr(tree)


def test_large_size_is_representable(tree_class: type[CompactTree]) -> None:
    size = 2**40 + 2**7 + 1
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(3)]
    tree = tree_class.from_hashes(size, hashes)
    assert tree_class.from_bytes(tree.to_bytes()) == tree
    tree.append(b"next")  # 2**40 + 2**7 + 2: merges the trailing leaf, popcount 3 again.
    assert tree.size == size + 1
    assert len(tree.to_hashes()) == 3


# --- rejected input -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32, bytearray(32)])
def test_append_leaf_hash_rejects_non_hashes(tree_class: type[CompactTree], bad: bytes) -> None:
    tree = _built(tree_class, LEAVES[:3])
    with pytest.raises(InvalidArgumentError):
        tree.append_leaf_hash(bad)
    assert tree.size == 3 and tree.root().hex() == ROOTS[3]  # unchanged


def test_a_bytes_subclass_of_32_bytes_is_appended_like_bytes(
    tree_class: type[CompactTree],
) -> None:
    """What _require_hash takes, both storages take (the C one asks it)."""

    class Hash(bytes):
        pass

    leaves = [merkle.leaf_hash(data) for data in LEAVES[:5]]
    tree = tree_class()
    for leaf in leaves:
        tree.append_leaf_hash(Hash(leaf))
    assert tree.root().hex() == ROOTS[5]
    with pytest.raises(InvalidArgumentError, match="leaf hash must be 32 bytes, got 31 bytes"):
        tree.append_leaf_hash(Hash(bytes(31)))
    assert tree.size == 5


@pytest.mark.parametrize(
    ("size", "count"),
    [(0, 1), (1, 0), (1, 2), (3, 1), (3, 3), (7, 2), (8, 2), (2**40 + 1, 1)],
)
def test_from_hashes_rejects_wrong_number_of_hashes(
    tree_class: type[CompactTree], size: int, count: int
) -> None:
    with pytest.raises(InvalidArgumentError):
        tree_class.from_hashes(size, [merkle.EMPTY_ROOT] * count)


@pytest.mark.parametrize("size", [-1, True, 1.0, "1"])
def test_from_hashes_rejects_bad_sizes(tree_class: type[CompactTree], size: int) -> None:
    with pytest.raises(InvalidArgumentError):
        tree_class.from_hashes(size, [merkle.EMPTY_ROOT])


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32])
def test_from_hashes_rejects_non_hashes(tree_class: type[CompactTree], bad: bytes) -> None:
    with pytest.raises(InvalidArgumentError):
        tree_class.from_hashes(3, [merkle.EMPTY_ROOT, bad])


def test_from_bytes_rejects_malformed_state(tree_class: type[CompactTree]) -> None:
    state = _built(tree_class, LEAVES[:7]).to_bytes()
    for malformed in (state[:-1], state + b"\x00", state[:7], b"", state[:8]):
        with pytest.raises(FormatError):
            tree_class.from_bytes(malformed)
    with pytest.raises(FormatError):
        tree_class.from_bytes(bytearray(state))  # type: ignore[arg-type]


def test_tampered_state_changes_the_root(tree_class: type[CompactTree]) -> None:
    state = bytearray(_built(tree_class, LEAVES[:7]).to_bytes())
    for position in range(8, len(state)):
        tampered = bytearray(state)
        tampered[position] ^= 0x01
        assert tree_class.from_bytes(bytes(tampered)).root().hex() != ROOTS[7]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=4), max_size=200))
def test_both_storages_agree_at_every_size(leaves: list[bytes]) -> None:
    native, python = CompactTree(), PythonCompactTree()
    for data in leaves:
        assert native.append(data) == python.append(data)
        assert native.size == python.size and native.to_hashes() == python.to_hashes()
        assert native == python and native.root() == python.root()
        assert native.to_bytes() == python.to_bytes()


def test_copies_and_pickles_are_independent_equal_states(tree_class: type[CompactTree]) -> None:
    tree = _built(tree_class, LEAVES[:7])
    for twin in (copy.copy(tree), copy.deepcopy(tree), pickle.loads(pickle.dumps(tree))):
        assert type(twin) is tree_class and twin == tree and twin.root().hex() == ROOTS[7]
        twin.append(b"more")
        assert tree.size == 7 and twin != tree


def test_sizes_beyond_64_bits_are_refused(tree_class: type[CompactTree]) -> None:
    with pytest.raises(InvalidArgumentError):
        tree_class.from_hashes(2**64, [merkle.EMPTY_ROOT])
