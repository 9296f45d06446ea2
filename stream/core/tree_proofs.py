"""RFC 6962 proofs assembled from perfect-subtree hashes, with O(log n) lookups.

Every element of an RFC 6962 inclusion or consistency proof is the root of a range of
leaves ``[start, end)`` that the RFC's recursion splits off. Such a range starts at a
multiple of a power of two at least as large as the range, so it is the fold, from the
right, of a few *perfect* subtrees: one per set bit of ``end - start``. Perfect subtrees
are exactly what :class:`authtrail.stream.core.audit.MerkleLevels` holds and what C2SP tlog-tiles
store, so a proof needs only those nodes and a handful of hashes, never the leaves.

Planning and assembly are apart, so an adapter can fetch all nodes of a proof in one
round trip: :func:`inclusion_ranges` / :func:`consistency_ranges` say which leaf ranges
the proof elements cover (they depend on sizes only), :func:`nodes_of_ranges` which
perfect subtrees ``(height, index)`` those need, and :func:`proof_from_nodes` hashes them
into the proof. Node ``(height, index)`` covers leaves ``[index * 2**height,
(index + 1) * 2**height)``.

Pure: no I/O. The results equal
:func:`authtrail.stream.core.merkle.inclusion_proof_from_leaf_hashes` and
:func:`authtrail.stream.core.merkle.consistency_proof_from_leaf_hashes` (tests check both against
the naive RFC transcription in tests/unit/merkle_reference.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from authtrail.errors import InvalidArgumentError
from authtrail.stream.core.merkle import HASH_SIZE, node_hash

__all__ = [
    "NodeId",
    "NodeSource",
    "consistency_proof_from_nodes",
    "consistency_ranges",
    "inclusion_proof_from_nodes",
    "inclusion_ranges",
    "nodes_of_ranges",
    "proof_from_nodes",
    "range_nodes",
]

NodeId = tuple[int, int]
"""A perfect subtree ``(height, index)``: leaves ``[index << height, (index + 1) << height)``."""

NodeSource = Callable[[int, int], bytes] | Mapping[NodeId, bytes]
"""Where node hashes come from: ``node(height, index)`` (e.g. ``MerkleLevels.node``) or a
mapping filled with the nodes :func:`nodes_of_ranges` named."""

LeafRange = tuple[int, int]
"""Leaves ``[start, end)`` whose RFC 6962 root is one proof element."""


def _largest_power_of_two_below(count: int) -> int:
    return 1 << ((count - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[LeafRange]:
    """The leaf ranges of the audit path PATH(index, D[size]) (RFC 6962 §2.1.1), leaf level first.

    Raises:
        InvalidArgumentError: unless ``0 <= index < size``.
    """
    _require_int(index, "leaf index")
    _require_int(size, "tree size")
    if not 0 <= index < size:
        raise InvalidArgumentError(f"leaf index {index} is not in [0, {size})")
    ranges: list[LeafRange] = []
    start, end = 0, size
    while end - start > 1:
        middle = start + _largest_power_of_two_below(end - start)
        if index < middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start = middle
    return ranges[::-1]


def consistency_ranges(old_size: int, new_size: int) -> list[LeafRange]:
    """The leaf ranges of PROOF(old_size, D[new_size]) (RFC 6962 §2.1.2), in proof order.

    Empty for ``old_size == 0`` or ``old_size == new_size``, as
    :func:`authtrail.stream.core.merkle.consistency_proof` decides.

    Raises:
        InvalidArgumentError: unless ``0 <= old_size <= new_size``.
    """
    _require_int(old_size, "old size")
    _require_int(new_size, "new size")
    if not 0 <= old_size <= new_size:
        raise InvalidArgumentError(f"old size {old_size} is not in [0, {new_size}]")
    if old_size in (0, new_size):
        return []
    # SUBPROOF(m, D[start:end], complete), unrolled: each step appends the sibling range
    # the RFC appends after its recursive call, so the list comes out reversed.
    ranges: list[LeafRange] = []
    start, end, complete = 0, new_size, True
    while old_size != end:
        middle = start + _largest_power_of_two_below(end - start)
        if old_size <= middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start, complete = middle, False
    if not complete:
        ranges.append((start, end))
    return ranges[::-1]


def range_nodes(start: int, end: int) -> list[NodeId]:
    """The perfect subtrees, left to right, whose fold is the root of leaves ``[start, end)``.

    Requires ``0 <= start < end`` and ``start`` a multiple of the smallest power of two
    not below ``end - start`` (true of every range :func:`inclusion_ranges` and
    :func:`consistency_ranges` return), else :class:`InvalidArgumentError`.
    """
    count = end - start
    if start < 0 or count < 1 or start % (1 << (count - 1).bit_length()):
        raise InvalidArgumentError(f"leaf range [{start}, {end}) is not a subtree of RFC 6962")
    nodes: list[NodeId] = []
    position = start
    for height in reversed(range(count.bit_length())):
        if count >> height & 1:
            nodes.append((height, position >> height))
            position += 1 << height
    return nodes


def nodes_of_ranges(ranges: Sequence[LeafRange]) -> list[NodeId]:
    """Every node the roots of ``ranges`` need, each once, in first-use order.

    Raises :class:`InvalidArgumentError` as :func:`range_nodes` does.
    """
    needed: dict[NodeId, None] = {}
    for start, end in ranges:
        needed.update(dict.fromkeys(range_nodes(start, end)))
    return list(needed)


def proof_from_nodes(ranges: Sequence[LeafRange], nodes: NodeSource) -> list[bytes]:
    """The proof whose elements are the roots of ``ranges``, hashed from perfect subtrees.

    Costs ``len(nodes_of_ranges(ranges))`` lookups and fewer node hashes than that.

    Raises:
        InvalidArgumentError: a range is not an RFC 6962 subtree, a node is missing from
            a mapping, or a node is not 32 bytes.
    """
    lookup = _lookup(nodes)
    proof = []
    for start, end in ranges:
        hashes = [lookup(height, index) for height, index in range_nodes(start, end)]
        calculated = hashes[-1]
        for left in reversed(hashes[:-1]):
            calculated = node_hash(left, calculated)
        proof.append(calculated)
    return proof


def inclusion_proof_from_nodes(nodes: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) from perfect subtrees of the tree of ``size`` leaves.

    Raises :class:`InvalidArgumentError` unless ``0 <= index < size``, or as
    :func:`proof_from_nodes` does.
    """
    return proof_from_nodes(inclusion_ranges(index, size), nodes)


def consistency_proof_from_nodes(nodes: NodeSource, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) from perfect subtrees of the tree of ``new_size`` leaves.

    Raises :class:`InvalidArgumentError` unless ``0 <= old_size <= new_size``, or as
    :func:`proof_from_nodes` does.
    """
    return proof_from_nodes(consistency_ranges(old_size, new_size), nodes)


def _lookup(nodes: NodeSource) -> Callable[[int, int], bytes]:
    def from_mapping(height: int, index: int) -> bytes:
        assert isinstance(nodes, Mapping)
        try:
            return nodes[height, index]
        except KeyError:
            raise InvalidArgumentError(f"node ({height}, {index}) was not supplied") from None

    source = from_mapping if isinstance(nodes, Mapping) else nodes

    def checked(height: int, index: int) -> bytes:
        value = bytes(source(height, index))
        if len(value) != HASH_SIZE:
            raise InvalidArgumentError(f"node ({height}, {index}) is {len(value)} bytes, not 32")
        return value

    return checked


def _require_int(value: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be an integer, got {type(value).__name__}")
