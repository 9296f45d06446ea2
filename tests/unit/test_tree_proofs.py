"""authtrail.stream.core.tree_proofs: proofs from perfect subtrees equal the RFC 6962 proofs, in
O(log n).

Checked against both authtrail.stream.core.merkle (leaf-hash generators) and the naive RFC
transcription in merkle_reference, which shares no code with either.
"""

from __future__ import annotations

import hashlib

import pytest

from authtrail.errors import InvalidArgumentError
from authtrail.stream.core.audit import MerkleLevels
from authtrail.stream.core.merkle import (
    consistency_proof_from_leaf_hashes,
    inclusion_proof_from_leaf_hashes,
    leaf_hash,
    verify_consistency,
    verify_inclusion_leaf_hash,
)
from authtrail.stream.core.tree_proofs import (
    consistency_proof_from_nodes,
    consistency_ranges,
    inclusion_proof_from_nodes,
    inclusion_ranges,
    nodes_of_ranges,
    proof_from_nodes,
    range_nodes,
)
from tests.unit import merkle_reference as ref

ENTRIES = [f"entry {n}".encode() for n in range(70)]
LEAF_HASHES = [leaf_hash(entry) for entry in ENTRIES]


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_three_leaves_by_hand() -> None:
    """RFC 6962 §2.1.3 with n = 3: k = 2, so leaf 2 is proven by MTH(D[0:2]) alone."""
    h0, h1, h2 = (_sha(b"\x00" + entry) for entry in ENTRIES[:3])
    h01 = _sha(b"\x01" + h0 + h1)
    root = _sha(b"\x01" + h01 + h2)
    levels = MerkleLevels.from_leaf_hashes([h0, h1, h2])
    assert inclusion_ranges(0, 3) == [(1, 2), (2, 3)]
    assert inclusion_ranges(2, 3) == [(0, 2)]
    assert inclusion_proof_from_nodes(levels.node, 0, 3) == [h1, h2]
    assert inclusion_proof_from_nodes(levels.node, 1, 3) == [h0, h2]
    assert inclusion_proof_from_nodes(levels.node, 2, 3) == [h01]
    assert levels.root(3) == root
    assert consistency_ranges(1, 3) == [(1, 2), (2, 3)]
    assert consistency_ranges(2, 3) == [(2, 3)]
    assert consistency_proof_from_nodes(levels.node, 2, 3) == [h2]


def test_seven_leaves_ragged_border() -> None:
    """Size 7: leaf 0's path ends in MTH(D[4:7]), itself a fold of node(1, 2) and leaf 6."""
    assert inclusion_ranges(0, 7) == [(1, 2), (2, 4), (4, 7)]
    assert range_nodes(4, 7) == [(1, 2), (0, 6)]
    assert consistency_ranges(3, 7) == [(2, 3), (3, 4), (0, 2), (4, 7)]


@pytest.mark.parametrize("size", range(1, 40))
def test_inclusion_equals_rfc6962(size: int) -> None:
    levels = MerkleLevels.from_leaf_hashes(LEAF_HASHES[:size])
    for index in range(size):
        proof = inclusion_proof_from_nodes(levels.node, index, size)
        assert proof == inclusion_proof_from_leaf_hashes(LEAF_HASHES[:size], index)
        assert proof == ref.path(index, ENTRIES[:size])
        verify_inclusion_leaf_hash(LEAF_HASHES[index], index, size, proof, levels.root(size))


@pytest.mark.parametrize("new_size", range(1, 34))
def test_consistency_equals_rfc6962(new_size: int) -> None:
    levels = MerkleLevels.from_leaf_hashes(LEAF_HASHES[:new_size])
    for old_size in range(new_size + 1):
        proof = consistency_proof_from_nodes(levels.node, old_size, new_size)
        assert proof == consistency_proof_from_leaf_hashes(LEAF_HASHES[:new_size], old_size)
        if 0 < old_size < new_size:
            assert proof == ref.proof(old_size, ENTRIES[:new_size])
        verify_consistency(old_size, new_size, proof, levels.root(old_size), levels.root(new_size))


def test_a_tree_of_larger_levels_proves_its_prefixes() -> None:
    """Nodes of a bigger log serve every smaller size: a prefix's nodes are the log's."""
    levels = MerkleLevels.from_leaf_hashes(LEAF_HASHES)
    for size in (1, 5, 16, 33, 69):
        for index in (0, size // 2, size - 1):
            assert inclusion_proof_from_nodes(levels.node, index, size) == ref.path(
                index, ENTRIES[:size]
            )


def test_nodes_needed_grow_with_log_n() -> None:
    for size in (10**6 + 3, 2**40 - 1, 2**63 + 12345):
        for index in (0, size // 3, size - 1):
            assert len(nodes_of_ranges(inclusion_ranges(index, size))) <= 2 * size.bit_length()
        old = size // 2 + 1
        assert len(nodes_of_ranges(consistency_ranges(old, size))) <= 2 * size.bit_length()


def test_nodes_from_a_mapping_fetched_in_one_round() -> None:
    levels = MerkleLevels.from_leaf_hashes(LEAF_HASHES[:21])
    ranges = inclusion_ranges(13, 21)
    fetched = {node: levels.node(*node) for node in nodes_of_ranges(ranges)}
    assert proof_from_nodes(ranges, fetched) == ref.path(13, ENTRIES[:21])
    missing = dict(list(fetched.items())[1:])
    with pytest.raises(InvalidArgumentError, match="was not supplied"):
        proof_from_nodes(ranges, missing)
    with pytest.raises(InvalidArgumentError, match="not 32"):
        proof_from_nodes(ranges, {node: b"short" for node in fetched})


@pytest.mark.parametrize(
    ("call", "args"),
    [(inclusion_ranges, (3, 3)), (inclusion_ranges, (-1, 3)), (inclusion_ranges, (0, 0)),
     (inclusion_ranges, (True, 3)), (consistency_ranges, (4, 3)), (consistency_ranges, (-1, 3)),
     (range_nodes, (1, 3)), (range_nodes, (2, 2)), (range_nodes, (2, 5))],
)  # fmt: skip
def test_preconditions(call: object, args: tuple[int, int]) -> None:
    with pytest.raises(InvalidArgumentError):
        call(*args)  # type: ignore[operator]
