"""Verify one tenant's stored log against its signed checkpoints (docs/INTEGRITY.md §7).

Pure: the caller reads rows from wherever they are stored and hands over leaf hashes (or
the perfect subtrees of their Merkle tree, :class:`MerkleLevels`, which a store that hashes
in bulk can compute itself), chain heads and signed notes; this module recomputes and
compares. The row-by-row chain check can be done here (:func:`stream.chain.verify_chain`)
or pushed into the store's SQL; the Merkle roots at checkpoint sizes and the signature
checks always happen here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from authtrail.errors import CheckpointError, InvalidArgumentError, RootMismatchError
from stream.checkpoint import Checkpoint, checkpoint_origin, open_checkpoint, verify_successor
from stream.merkle import EMPTY_ROOT, HASH_SIZE
from stream.note import Keyring

# Damage kinds of checkpoints (record damage kinds live in stream.chain).
FORGED_CHECKPOINT = "forged checkpoint"
MISSING_CHECKPOINT = "missing checkpoint"
MISMATCHED_CHECKPOINT = "checkpoint mismatch"

_NODE_PREFIX = b"\x01"


class CheckpointDamage(CheckpointError):
    """A tenant's checkpoints are damaged at ``size``; ``damage`` names how."""

    def __init__(self, tenant_id: str, size: int, damage: str, detail: str) -> None:
        self.tenant_id = tenant_id
        self.seq = size
        self.damage = damage
        self.detail = detail
        super().__init__(f"tenant {tenant_id!r} checkpoint at seq {size}: {damage}: {detail}")


@dataclass(frozen=True)
class TenantSummary:
    """What was proven about an intact tenant."""

    tenant_id: str
    records: int
    checkpoints: int
    signed_size: int  # records covered by the newest checkpoint; the rest are not yet signed


class MerkleLevels:
    """The perfect subtrees of a log's RFC 6962 tree, level by level.

    ``levels[k]`` holds the 32-byte hashes, concatenated, of the complete subtrees of
    height ``k`` left to right: node ``j`` covers leaves ``[j * 2**k, (j + 1) * 2**k)``, so
    level 0 is the leaf hashes and a log of ``size`` leaves has ``size.bit_length()`` levels
    of ``size >> k`` nodes. That is ``size - 1`` node hashes in all, computed once (here by
    :meth:`from_leaf_hashes`, or by a store that hashes in bulk); the root of any prefix
    then costs ``popcount(size) - 1`` hashes, and of any range a few more (see
    :meth:`range_root`). Levels may be any bytes-like objects (e.g. memoryviews of an
    Arrow buffer); they are only read.
    """

    __slots__ = ("_levels", "size")

    def __init__(self, size: int, levels: Sequence[bytes | memoryview]) -> None:
        """Wrap precomputed levels of a log of ``size`` leaves.

        Raises:
            InvalidArgumentError: ``size`` is negative, or the number of levels or a
                level's length does not match ``size`` (levels of another log shape).
        """
        if size < 0 or len(levels) != size.bit_length():
            raise InvalidArgumentError(
                f"a log of {size} leaves has {max(size, 0).bit_length()} levels, got {len(levels)}"
            )
        for height, level in enumerate(levels):
            if len(level) != HASH_SIZE * (size >> height):
                raise InvalidArgumentError(
                    f"level {height} of a log of {size} leaves needs {size >> height} hashes, "
                    f"got {len(level)} bytes"
                )
        self.size = size
        self._levels = levels

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Sequence[bytes]) -> MerkleLevels:
        """Compute every level from the leaf hashes (``size - 1`` SHA-256 calls).

        Raises:
            InvalidArgumentError: a leaf hash is not 32 bytes.
        """
        for index, leaf_hash in enumerate(leaf_hashes):
            if len(leaf_hash) != HASH_SIZE:
                raise InvalidArgumentError(f"leaf hash {index} is {len(leaf_hash)} bytes, not 32")
        levels = [b"".join(leaf_hashes)] if leaf_hashes else []
        while len(levels[-1] if levels else b"") >= 2 * HASH_SIZE:
            levels.append(_pair_up(levels[-1]))
        return cls(len(leaf_hashes), levels)

    def level(self, height: int) -> bytes:
        """The concatenated hashes of every perfect subtree of height ``height``."""
        return bytes(self._levels[height])

    def node(self, height: int, index: int) -> bytes:
        """Hash of the perfect subtree ``index`` of height ``height``.

        Requires ``0 <= index < size >> height`` (not checked: internal hot path).
        """
        start = HASH_SIZE * index
        return bytes(self._levels[height][start : start + HASH_SIZE])

    def root(self, size: int) -> bytes:
        """RFC 6962 root of the first ``size`` leaves. Requires ``0 <= size <= self.size``."""
        return self.range_root(0, size)

    def range_root(self, start: int, end: int) -> bytes:
        """RFC 6962 root of the tree over leaves ``[start, end)`` alone (a batch root).

        Requires ``0 <= start <= end <= self.size`` (else InvalidArgumentError). The
        range's own perfect subtrees of height ``k`` are nodes of the log's levels while
        ``2**k`` divides ``start``; above that they are paired up here, which costs about
        ``(end - start) >> trailing_zeros(start)`` hashes.
        """
        if not 0 <= start <= end <= self.size:
            raise InvalidArgumentError(f"range [{start}, {end}) is not within 0..{self.size}")
        count = end - start
        if count == 0:
            return EMPTY_ROOT
        aligned = (start & -start).bit_length() - 1 if start else len(self._levels)
        # RFC 6962's split at the largest power of two means the root is the fold, from the
        # right, of the last perfect subtree of every height whose bit is set in count.
        calculated: bytes | None = None
        upper: bytes | memoryview = b""
        for height in range(count.bit_length()):
            if height > aligned:
                upper = _pair_up(upper)
            elif height == aligned:
                first = start >> height
                level = self._levels[height]
                upper = level[HASH_SIZE * first : HASH_SIZE * (first + (count >> height))]
            if not (count >> height) & 1:
                continue
            index = (count >> height) - 1
            if height < aligned:
                subtree = self.node(height, (start >> height) + index)
            else:
                subtree = bytes(upper[HASH_SIZE * index : HASH_SIZE * (index + 1)])
            calculated = subtree if calculated is None else _node(subtree, calculated)
        assert calculated is not None  # count > 0 has a set bit
        return calculated


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _pair_up(level: bytes | memoryview) -> bytes:
    """The next level up: each pair of adjacent hashes hashed together, a last odd one dropped."""
    sha256 = hashlib.sha256
    pairs = len(level) // (2 * HASH_SIZE)
    return b"".join(
        [sha256(_NODE_PREFIX + level[offset : offset + 2 * HASH_SIZE]).digest()
         for offset in range(0, pairs * 2 * HASH_SIZE, 2 * HASH_SIZE)]
    )  # fmt: skip


def verify_checkpoints(
    tenant_id: str,
    leaf_hashes: Sequence[bytes],
    chain_hashes: Sequence[bytes],
    notes: Sequence[bytes],
    keyring: Keyring,
    log_origin: str,
) -> TenantSummary:
    """Check every signed checkpoint of ``tenant_id`` against the stored records.

    Requires: ``leaf_hashes[i]`` and ``chain_hashes[i]`` are the stored hashes of seq
    ``i + 1`` of a chain already checked gapless; ``notes`` are the stored signed notes in
    ascending size order. Raises :class:`CheckpointDamage` naming the first bad checkpoint:
    a bad or missing signature or a foreign origin (forged), a broken succession (missing),
    roots or chain head that disagree with the records (mismatch), or records that stop
    before a checkpoint's size (mismatch: the tail was deleted).
    """
    levels = MerkleLevels.from_leaf_hashes(leaf_hashes)
    return verify_checkpoint_levels(
        tenant_id, levels, lambda size: chain_hashes[size - 1], notes, keyring, log_origin
    )


def verify_checkpoint_levels(
    tenant_id: str,
    levels: MerkleLevels,
    chain_head: Callable[[int], bytes],
    notes: Sequence[bytes],
    keyring: Keyring,
    log_origin: str,
) -> TenantSummary:
    """:func:`verify_checkpoints` over precomputed :class:`MerkleLevels` of the records.

    Requires: ``levels`` are those of the stored leaf hashes of seq ``1..levels.size`` of a
    chain already checked gapless; ``chain_head(size)`` returns the stored chain hash of
    seq ``size`` (called only with ``1 <= size <= levels.size``); ``notes`` as for
    :func:`verify_checkpoints`. Raises :class:`CheckpointDamage` exactly as it does.
    """
    origin = checkpoint_origin(log_origin, tenant_id)
    previous: Checkpoint | None = None
    for note in notes:
        checkpoint = _open(tenant_id, note, keyring, origin, previous)
        try:
            verify_successor(previous, checkpoint)
        except CheckpointError as exc:
            raise CheckpointDamage(
                tenant_id, checkpoint.size, MISSING_CHECKPOINT, str(exc)
            ) from exc
        if checkpoint.size > levels.size:
            raise CheckpointDamage(
                tenant_id, levels.size + 1, MISMATCHED_CHECKPOINT,
                f"records end at seq {levels.size} but a checkpoint covers {checkpoint.size}",
            )  # fmt: skip
        batch_root = levels.range_root(checkpoint.batch_first_seq - 1, checkpoint.size)
        _compare(tenant_id, checkpoint, "batch root", checkpoint.batch_root, batch_root)
        _compare(tenant_id, checkpoint, "log root", checkpoint.root, levels.root(checkpoint.size))
        _compare(
            tenant_id, checkpoint, "chain head", checkpoint.chain_hash,
            chain_head(checkpoint.size),
        )  # fmt: skip
        previous = checkpoint
    return TenantSummary(tenant_id, levels.size, len(notes), previous.size if previous else 0)


def _open(
    tenant_id: str, note: bytes, keyring: Keyring, origin: str, previous: Checkpoint | None
) -> Checkpoint:
    try:
        return open_checkpoint(note, keyring, origin)
    except CheckpointError as exc:
        size = previous.size + 1 if previous else 1
        raise CheckpointDamage(tenant_id, size, FORGED_CHECKPOINT, str(exc)) from exc


def _compare(
    tenant_id: str, checkpoint: Checkpoint, what: str, expected: bytes, calculated: bytes
) -> None:
    if expected != calculated:
        mismatch = RootMismatchError(expected, calculated, what)
        raise CheckpointDamage(tenant_id, checkpoint.size, MISMATCHED_CHECKPOINT, str(mismatch))
