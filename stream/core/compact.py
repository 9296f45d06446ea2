"""Incremental Merkle state for an append-only log: the compact range ``[0, size)``.

A :class:`CompactTree` keeps only the roots of the perfect subtrees in the binary
decomposition of ``size`` (at most one per set bit, ordered left to right, largest
first), like transparency-dev ``compact.Range`` starting at 0. That is O(log n) hashes,
enough to append further leaves and to compute the RFC 6962 root of everything appended
so far, which is what a stream processor needs to keep in a changelog-backed table.

Two storages behind one class name: with ``authtrail._hashing`` built, the state and its
hot methods are C (``CompactCore``: the sequencer appends to two trees per event, and its
C offer does so without a Python call); without it, :class:`PythonCompactTree`. Both give
the same results (tests/unit/test_compact.py runs every test on each).

Pure: no I/O. Serialisation produces plain values (a list of hashes, or one bytes value)
for the adapter to store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self

from authtrail.errors import FormatError, InvalidArgumentError
from authtrail.stream.core.merkle import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash

__all__ = ["CompactTree", "PythonCompactTree"]

# to_bytes() layout: 8-byte big-endian size, then popcount(size) hashes of 32 bytes.
_SIZE_BYTES = 8
_sha256 = hashlib.sha256
_NODE_PREFIX = b"\x01"  # merkle.node_hash: SHA-256(0x01 || left || right)


class _CompactMethods:
    """What both storages share, built on theirs: ``size``, ``append_leaf_hash``, ``root``,
    ``to_hashes`` and ``_load``."""

    __slots__ = ()

    if TYPE_CHECKING:

        @property
        def size(self) -> int: ...

        def append_leaf_hash(self, leaf_hash: bytes) -> None: ...

        def root(self) -> bytes: ...

        def to_hashes(self) -> list[bytes]: ...

        def _load(self, size: int, hashes: Sequence[bytes]) -> None: ...

    def append(self, data: bytes) -> bytes:
        """Append one raw entry; return its leaf hash (``SHA-256(0x00 || data)``)."""
        hashed = leaf_hash(data)
        self.append_leaf_hash(hashed)
        return hashed

    def extend_leaf_hashes(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append several leaf hashes in order.

        Raises:
            InvalidArgumentError: an element is not 32 bytes; the ones before it stay
                appended.
        """
        for hashed in leaf_hashes:
            self.append_leaf_hash(hashed)

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> Self:
        """Rebuild the state from ``size`` and the subtree roots :meth:`to_hashes` gave.

        Raises:
            InvalidArgumentError: ``size`` is negative or not an int, the number of hashes
                is not ``popcount(size)``, or a hash is not 32 bytes.
        """
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgumentError(f"size must be a non-negative integer, got {size!r}")
        if size >= 2**64:  # every size is stored as a ClickHouse UInt64
            raise InvalidArgumentError(f"size must be below 2^64, got {size}")
        expected = size.bit_count()
        if len(hashes) != expected:
            raise InvalidArgumentError(
                f"a compact tree of size {size} has {expected} subtree hashes, got {len(hashes)}"
            )
        for position, hashed in enumerate(hashes):
            _require_hash(hashed, f"subtree hash {position}")
        tree = cls()
        tree._load(size, hashes)  # each storage copies them
        return tree

    def to_bytes(self) -> bytes:
        """Serialise as an 8-byte big-endian size followed by the subtree roots."""
        return self.size.to_bytes(_SIZE_BYTES, "big") + b"".join(self.to_hashes())

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse what :meth:`to_bytes` produced.

        Raises:
            FormatError: ``data`` is not bytes, is shorter than the size field, or its
                length does not match ``popcount(size)`` hashes.
        """
        if not isinstance(data, bytes) or len(data) < _SIZE_BYTES:
            raise FormatError("compact tree state must be at least 8 bytes")
        size = int.from_bytes(data[:_SIZE_BYTES], "big")
        body = data[_SIZE_BYTES:]
        expected = size.bit_count() * HASH_SIZE
        if len(body) != expected:
            raise FormatError(
                f"compact tree state of size {size} needs {expected} hash bytes, got {len(body)}"
            )
        hashes = [body[start : start + HASH_SIZE] for start in range(0, expected, HASH_SIZE)]
        return cls.from_hashes(size, hashes)

    def copy(self) -> Self:
        """Return an independent copy of this state."""
        return type(self).from_hashes(self.size, self.to_hashes())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _CompactMethods):
            return NotImplemented
        return self.size == other.size and self.to_hashes() == other.to_hashes()

    __hash__ = None  # type: ignore[assignment]  # mutable: equal states may diverge

    def __reduce__(self) -> tuple[Any, tuple[int, list[bytes]]]:
        # copy and pickle rebuild through from_hashes (the C state has no __dict__ to copy).
        return type(self).from_hashes, (self.size, self.to_hashes())

    def __repr__(self) -> str:
        return f"CompactTree(size={self.size}, root={self.root().hex()})"


class PythonCompactTree(_CompactMethods):
    """Roots of the perfect subtrees covering leaves ``[0, size)`` of an append-only log,
    in Python (the storage without ``authtrail._hashing``).

    ``root()`` always equals :func:`authtrail.stream.core.merkle.root` over every entry appended so
    far. Instances are mutable (``append*``); use :meth:`copy` to branch.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        """Create the state of an empty log (size 0, root :data:`EMPTY_ROOT`)."""
        self._size = 0
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def append_leaf_hash(self, leaf_hash: bytes) -> None:
        """Append one leaf given by its 32-byte RFC 6962 leaf hash.

        Raises:
            InvalidArgumentError: ``leaf_hash`` is not 32 bytes.
        """
        if type(leaf_hash) is not bytes or len(leaf_hash) != HASH_SIZE:
            _require_hash(leaf_hash, "leaf hash")
        # Each trailing 1 bit of size is a perfect subtree of the same height as the one
        # being carried up: merge them, like a binary increment (~once on average).
        size = self._size
        hashes = self._hashes
        while size & 1:
            leaf_hash = _sha256(_NODE_PREFIX + hashes.pop() + leaf_hash).digest()
            size >>= 1
        hashes.append(leaf_hash)
        self._size += 1

    def root(self) -> bytes:
        """Return the RFC 6962 Merkle Tree Hash of all leaves appended so far.

        Costs ``popcount(size) - 1`` node hashes; the empty log's root is
        :data:`EMPTY_ROOT`.
        """
        if not self._hashes:
            return EMPTY_ROOT
        # Folding from the right reproduces RFC 6962's split at the largest power of two:
        # each stored subtree is the left sibling of everything to its right.
        calculated = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            calculated = node_hash(left, calculated)
        return calculated

    def to_hashes(self) -> list[bytes]:
        """Return a copy of the subtree roots, left to right (``popcount(size)`` of them)."""
        return list(self._hashes)

    def _load(self, size: int, hashes: Sequence[bytes]) -> None:
        self._size, self._hashes = size, list(hashes)


if TYPE_CHECKING:
    CompactTree = PythonCompactTree
else:
    try:
        from authtrail._hashing import CompactCore
    except ImportError:  # pragma: no cover - a build without OpenSSL's headers
        CompactTree = PythonCompactTree
    else:

        class CompactTree(CompactCore, _CompactMethods):
            """Roots of the perfect subtrees covering leaves ``[0, size)`` of an
            append-only log, held in C (``authtrail._hashing.CompactCore``); see
            :class:`PythonCompactTree` for the methods' contracts."""

            __slots__ = ()


def _require_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise InvalidArgumentError(f"{what} must be {HASH_SIZE} bytes, got {got}")
