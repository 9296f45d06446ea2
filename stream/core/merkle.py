"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification.

Pure functions over bytes: no I/O, no state. Hashing is SHA-256 with the RFC 6962 domain
separation (``0x00`` before a leaf, ``0x01`` before two child hashes), so a leaf can never
be passed off as an interior node.

Functions come in the pairs transparency-dev/merkle uses: ``root_from_*`` computes a root
from a proof and raises only for malformed input (:class:`ProofError`); ``verify_*``
computes and compares, raising :class:`RootMismatchError` on a mismatch. Nothing returns
a bool. Generators (``root``, ``inclusion_proof``, ``consistency_proof`` and their
``*_from_leaf_hashes`` variants) raise :class:`InvalidArgumentError` when called outside
their preconditions.

Proof generation builds the levels of the tree bottom-up, carrying an unpaired last node
up unchanged: that shape is exactly RFC 6962's split at the largest power of two below
``n`` and costs ``n - 1`` node hashes, so every generator is O(n) hashing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from authtrail.errors import InvalidArgumentError, ProofError, RootMismatchError
from authtrail.stream.core import native_hashes

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "consistency_proof",
    "consistency_proof_from_leaf_hashes",
    "inclusion_proof",
    "inclusion_proof_from_leaf_hashes",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
    "verify_inclusion_leaf_hash",
]

HASH_SIZE = 32
"""Length in bytes of every leaf hash, node hash, root and proof element."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree: MTH({}) = SHA-256() (RFC 6962 §2.1, RFC 9162 §2.1.1)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
# authtrail._hashing's (None for what they leave to hashlib: stream/core/native_hashes.py)
_native_leaf_hash, _native_node_hash = native_hashes.leaf_hash, native_hashes.node_hash


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 || data)`` of one raw entry."""
    return _native_leaf_hash(data) or hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``.

    ``left`` and ``right`` are child hashes (32 bytes each); they are not checked here
    because this sits on every hot path, and callers that take hashes from outside
    validate them first.
    """
    return _native_node_hash(left, right) or hashlib.sha256(_NODE_PREFIX + left + right).digest()


# --- Generation -----------------------------------------------------------------------


def root(leaves: Sequence[bytes]) -> bytes:
    """Return the Merkle Tree Hash (RFC 6962 §2.1) of the raw entries ``leaves``.

    The empty tree's root is :data:`EMPTY_ROOT` (SHA-256 of the empty string).
    """
    return _root_of_hashes([leaf_hash(data) for data in leaves])


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle Tree Hash of a tree whose leaves hash to ``leaf_hashes``.

    Raises:
        InvalidArgumentError: an element is not 32 bytes.
    """
    _require_leaf_hashes(leaf_hashes)
    return _root_of_hashes(leaf_hashes)


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Return the audit path PATH(index, D_n) (RFC 6962 §2.1.1, RFC 9162 §2.1.3.1).

    ``leaves`` are the raw entries of the whole tree (size ``n = len(leaves)``). The path
    lists sibling hashes from the leaf's level upwards; it is empty for a 1-leaf tree.

    Raises:
        InvalidArgumentError: unless ``0 <= index < len(leaves)`` (so never for an empty
            tree: it has no leaf to include).
    """
    _require_in_range(index, len(leaves), "leaf index")
    return _path([leaf_hash(data) for data in leaves], 0, index)


def inclusion_proof_from_leaf_hashes(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Like :func:`inclusion_proof`, for a tree given by its leaf hashes.

    Raises:
        InvalidArgumentError: unless ``0 <= index < len(leaf_hashes)``, or an element is
            not 32 bytes.
    """
    _require_leaf_hashes(leaf_hashes)
    _require_in_range(index, len(leaf_hashes), "leaf index")
    return _path(leaf_hashes, 0, index)


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Return PROOF(old_size, D_n) (RFC 6962 §2.1.2, RFC 9162 §2.1.4.1).

    Proves that the tree of the first ``old_size`` entries is a prefix of the tree of all
    ``len(leaves)`` raw entries. For ``old_size == len(leaves)`` the proof is empty.

    For ``old_size == 0`` the proof is empty too: RFC 9162 defines proofs only for
    ``0 < m < n``, and transparency-dev ``proof.Consistency`` refuses ``size1 == 0`` as
    meaningless, but its ``VerifyConsistency`` accepts exactly the empty proof from size
    0. Returning ``[]`` keeps generate-then-verify total over ``0 <= old_size <= n``.

    Raises:
        InvalidArgumentError: unless ``0 <= old_size <= len(leaves)``.
    """
    _require_in_range(old_size, len(leaves) + 1, "old size")
    return _consistency([leaf_hash(data) for data in leaves], old_size)


def consistency_proof_from_leaf_hashes(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Like :func:`consistency_proof`, for a tree given by its leaf hashes.

    Raises:
        InvalidArgumentError: unless ``0 <= old_size <= len(leaf_hashes)``, or an element
            is not 32 bytes.
    """
    _require_leaf_hashes(leaf_hashes)
    _require_in_range(old_size, len(leaf_hashes) + 1, "old size")
    return _consistency(leaf_hashes, old_size)


def _root_of_hashes(level: Sequence[bytes]) -> bytes:
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    # An unpaired last node moves up unchanged; that is what makes this level-by-level
    # build equal to RFC 6962's split at the largest power of two smaller than n.
    paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        paired.append(level[-1])
    return paired


def _path(leaf_hashes: Sequence[bytes], level: int, index: int) -> list[bytes]:
    """Siblings of node (level, index) up to the root, in the tree over ``leaf_hashes``.

    With ``level == 0`` this is the inclusion proof of leaf ``index``. A node with no
    sibling on its level is the unpaired last node and contributes nothing there.
    """
    nodes: Sequence[bytes] = leaf_hashes
    for _ in range(level):
        nodes = _next_level(nodes)
    proof: list[bytes] = []
    while len(nodes) > 1:
        sibling = index ^ 1
        if sibling < len(nodes):
            proof.append(nodes[sibling])
        index >>= 1
        nodes = _next_level(nodes)
    return proof


def _consistency(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    if old_size in (0, len(leaf_hashes)):
        return []
    # Following transparency-dev proof.Consistency: the proof is the root of the largest
    # perfect subtree ending at old_size (omitted when old_size is a power of two, since
    # the verifier already holds it as the old root) followed by that node's inclusion
    # path in the new tree.
    level = _trailing_zeros(old_size)
    index = (old_size - 1) >> level
    path = _path(leaf_hashes, level, index)
    if index == 0:
        return path
    start = index << level
    subtree_root = _root_of_hashes(leaf_hashes[start : start + (1 << level)])
    return [subtree_root, *path]


# --- Verification ---------------------------------------------------------------------


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that raw entry ``leaf`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Requires ``0 <= index < size``: RFC 9162 §2.1.3.2 step 1, "If leaf_index is greater
    than or equal to tree_size, then fail the proof verification"; a tree of size 0 has
    no inclusion proofs at all.

    Raises:
        ProofError: sizes impossible, proof of the wrong length, or a hash not 32 bytes.
        RootMismatchError: the root recomputed from the proof differs from ``root``.
    """
    if not isinstance(leaf, bytes):
        raise ProofError(f"leaf must be bytes, got {type(leaf).__name__}")
    verify_inclusion_leaf_hash(leaf_hash(leaf), index, size, proof, root)


def verify_inclusion_leaf_hash(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Like :func:`verify_inclusion`, for a leaf given by its 32-byte leaf hash.

    Mirrors transparency-dev ``proof.VerifyInclusion``.

    Raises:
        ProofError: sizes impossible, proof of the wrong length, or a hash not 32 bytes.
        RootMismatchError: the root recomputed from the proof differs from ``root``.
    """
    _check_hash(root, "root")
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if calculated != root:
        raise RootMismatchError(root, calculated, f"root of tree size {size} (leaf {index})")


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Return the root implied by ``proof`` for leaf ``index`` (hash ``leaf_hash``) of ``size``.

    Requires ``0 <= index < size`` (RFC 9162 §2.1.3.2 step 1). The proof length is checked
    exactly before any hashing, as transparency-dev ``RootFromInclusionProof`` does; the
    hash chaining is equivalent to RFC 9162 §2.1.3.2 steps 2-6.

    Raises:
        ProofError: sizes impossible, proof of the wrong length, or a hash not 32 bytes.
    """
    _check_size(size, "size")
    _check_size(index, "index")
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    _check_hash(leaf_hash, "leaf hash")
    _check_proof(proof)
    inner, border = _inclusion_shape(index, size)
    if len(proof) != inner + border:
        raise ProofError(
            f"inclusion proof for leaf {index} of tree size {size} must have "
            f"{inner + border} hashes, got {len(proof)}"
        )
    calculated = _chain_inner(leaf_hash, proof[:inner], index)
    return _chain_border(calculated, proof[inner:])


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that the tree (``old_size``, ``old_root``) is a prefix of (``new_size``, ``new_root``).

    Edge cases decided as transparency-dev ``proof.VerifyConsistency`` does (it requires
    ``0 <= size1 <= size2``):

    * ``old_size > new_size``: malformed (:class:`ProofError`).
    * ``old_size == new_size``: the proof must be empty and the roots equal.
    * ``old_size == 0 < new_size``: the proof must be empty; every tree extends the empty
      tree. Stricter than transparency-dev, ``old_root`` must still be :data:`EMPTY_ROOT`,
      since MTH({}) is defined (RFC 9162 §2.1.1) and a different claimed root is false.
    * otherwise the proof is checked against both roots; an empty proof fails
      (RFC 9162 §2.1.4.2 step 1).

    Raises:
        ProofError: sizes impossible, proof of the wrong length, or a hash not 32 bytes.
        RootMismatchError: the old or the new root differs from the one the proof implies.
    """
    _check_hash(new_root, "new root")
    calculated = _root_from_consistency(old_size, new_size, proof, old_root)
    if calculated is None:
        return  # From the empty tree: nothing to compare, every tree extends it.
    if calculated != new_root:
        raise RootMismatchError(new_root, calculated, f"root of tree size {new_size}")


def root_from_consistency_proof(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes
) -> bytes:
    """Check ``proof`` against ``old_root`` and return the root it implies for ``new_size``.

    Requires ``0 < old_size <= new_size``, or ``old_size == new_size == 0``; for
    ``old_size == new_size`` the proof must be empty and ``old_root`` is returned. From
    ``old_size == 0`` no new root can be derived (the proof is empty), so that case is a
    :class:`ProofError` here and is handled by :func:`verify_consistency`.

    Mirrors transparency-dev ``RootFromConsistencyProof`` (RFC 9162 §2.1.4.2 in effect).

    Raises:
        ProofError: sizes impossible, proof of the wrong length, or a hash not 32 bytes.
        RootMismatchError: ``old_root`` differs from the old root the proof implies.
    """
    calculated = _root_from_consistency(old_size, new_size, proof, old_root)
    if calculated is None:
        raise ProofError(f"no root for size {new_size} can be derived from the empty tree")
    return calculated


def _root_from_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes
) -> bytes | None:
    """:func:`root_from_consistency_proof`, but None for ``0 == old_size < new_size``."""
    _check_size(old_size, "old size")
    _check_size(new_size, "new size")
    _check_hash(old_root, "old root")
    _check_proof(proof)
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise ProofError(
                f"consistency proof from size {old_size} to {new_size} must be empty, "
                f"got {len(proof)} hashes"
            )
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise RootMismatchError(EMPTY_ROOT, old_root, "root of the empty tree")
        return old_root if old_size == new_size else None

    # The proof is a suffix of the inclusion proof of leaf old_size - 1 in the new tree,
    # starting at the level of the largest perfect subtree that ends at old_size.
    inner, border = _inclusion_shape(old_size - 1, new_size)
    shift = _trailing_zeros(old_size)
    inner -= shift  # inner > shift whenever old_size < new_size, so this stays >= 1.
    if old_size == 1 << shift:
        seed, start = old_root, 0  # That subtree is the whole old tree: its root is known.
    else:
        seed, start = (proof[0] if proof else b""), 1
    if len(proof) != start + inner + border:
        raise ProofError(
            f"consistency proof from size {old_size} to {new_size} must have "
            f"{start + inner + border} hashes, got {len(proof)}"
        )
    path = proof[start:]
    index = (old_size - 1) >> shift

    # Only left siblings existed in the old tree, so chaining just those rebuilds it.
    calculated_old = seed
    for level, sibling in enumerate(path[:inner]):
        if (index >> level) & 1:
            calculated_old = node_hash(sibling, calculated_old)
    calculated_old = _chain_border(calculated_old, path[inner:])
    if calculated_old != old_root:
        raise RootMismatchError(old_root, calculated_old, f"root of tree size {old_size}")

    calculated_new = _chain_inner(seed, path[:inner], index)
    return _chain_border(calculated_new, path[inner:])


def _inclusion_shape(index: int, size: int) -> tuple[int, int]:
    """Split the inclusion proof of ``index`` in a tree of ``size`` into two lengths.

    ``inner`` counts levels below the point where the paths to ``index`` and to
    ``size - 1`` meet (siblings on either side); ``border`` counts the left siblings
    above it, along the tree's right border. Their sum is the exact proof length.
    """
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for level, sibling in enumerate(proof):
        # A set bit means this node is a right child: its sibling goes on the left.
        is_right_child = (index >> level) & 1
        seed = node_hash(sibling, seed) if is_right_child else node_hash(seed, sibling)
    return seed


def _chain_border(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for sibling in proof:
        seed = node_hash(sibling, seed)
    return seed


def _trailing_zeros(value: int) -> int:
    return (value & -value).bit_length() - 1


# --- Argument checks: verifiers report malformed input as ProofError, generators as
# InvalidArgumentError (the caller broke a precondition).


def _check_size(value: int, what: str) -> None:
    # bool is an int subclass; a flag passed as a size is a caller bug, not a size.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProofError(f"{what} must be a non-negative integer, got {value!r}")


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes, got {_describe(value)}")


def _check_proof(proof: Sequence[bytes]) -> None:
    if not isinstance(proof, Sequence) or isinstance(proof, (bytes, str)):
        raise ProofError(f"proof must be a sequence of hashes, got {type(proof).__name__}")
    for position, element in enumerate(proof):
        _check_hash(element, f"proof element {position}")


def _describe(value: object) -> str:
    return f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__


def _require_in_range(value: int, stop: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < stop:
        raise InvalidArgumentError(f"{what} {value!r} is not in [0, {stop})")


def _require_leaf_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for position, value in enumerate(leaf_hashes):
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise InvalidArgumentError(
                f"leaf hash {position} must be {HASH_SIZE} bytes, got {_describe(value)}"
            )
