"""Verify one tenant's stored log against its signed checkpoints (docs/INTEGRITY.md §7).

Pure: the caller reads rows from wherever they are stored and hands over leaf hashes (or
the perfect subtrees of their Merkle tree, :class:`MerkleLevels`, which a store that hashes
in bulk can compute itself), chain heads and signed notes; this module recomputes and
compares. The row-by-row chain check can be done here
(:func:`authtrail.stream.core.chain.verify_chain`) or pushed into the store's SQL; the Merkle roots
at checkpoint sizes and the signature checks always happen here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from authtrail.errors import CheckpointError, InvalidArgumentError, RootMismatchError
from authtrail.stream.core.checkpoint import (
    Checkpoint,
    checkpoint_origin,
    open_checkpoint,
    open_signed_checkpoint,
    verify_successor,
)
from authtrail.stream.core.merkle import EMPTY_ROOT, HASH_SIZE
from authtrail.stream.core.note import Keyring
from authtrail.stream.core.note import (
    key_label as key_label,  # re-exported: callers name keys from here
)
from authtrail.stream.core.rotation import (
    RETIRED_KEY as RETIRED_KEY,  # a damage kind, like those below
)
from authtrail.stream.core.rotation import (
    KeySuccession,
    KeySuccessionError,
    RetiredKeyError,
    SignedRange,
)
from authtrail.stream.core.tiles import TILE_WIDTH

# Damage kinds of checkpoints (record damage kinds live in authtrail.stream.core.chain).
FORGED_CHECKPOINT = "forged checkpoint"
MISSING_CHECKPOINT = "missing checkpoint"
MISMATCHED_CHECKPOINT = "checkpoint mismatch"
MODIFIED_CHECKPOINT = "modified checkpoint"
DUPLICATED_CHECKPOINT = "duplicated checkpoint"
FORKED_CHECKPOINT = "forked checkpoint"

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
    newest: Checkpoint | None = None  # the newest verified checkpoint
    newest_note: bytes | None = None  # and its signed note, verbatim
    signed_by: tuple[str, ...] = ()  # labels (key_label) of the keys whose signatures verified
    signed_ranges: tuple[SignedRange, ...] = ()  # which keys signed which seq range


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


@dataclass(frozen=True)
class StoredCheckpoint:
    """A stored checkpoint: its signed note and the columns stored beside it, if any.

    ``columns`` maps a column name of :data:`CHECKPOINT_COLUMNS` to its stored value
    (integers as int, hashes as 32 bytes, ``time_micros`` as integer microseconds).
    Analysts' queries and ``authtrail status`` read those columns, so each must equal
    the value inside the note; None means none are stored (nothing to compare).
    """

    note: bytes
    columns: Mapping[str, int | bytes] | None = None


#: Stored checkpoint column -> the :class:`Checkpoint` attribute the note gives it.
CHECKPOINT_COLUMNS = {
    "size": "size",
    "batch_first_seq": "batch_first_seq",
    "batch_last_seq": "batch_last_seq",
    "root": "root",
    "batch_root": "batch_root",
    "chain_head": "chain_hash",
    "prev_digest": "prev_digest",
    "time_micros": "time_micros",
}


def verify_checkpoints(
    tenant_id: str,
    leaf_hashes: Sequence[bytes],
    chain_hashes: Sequence[bytes],
    checkpoints: Sequence[StoredCheckpoint | bytes],
    keyring: Keyring,
    log_origin: str,
) -> TenantSummary:
    """Check every signed checkpoint of ``tenant_id`` against the stored records.

    Requires: ``leaf_hashes[i]`` and ``chain_hashes[i]`` are the stored hashes of seq
    ``i + 1`` of a chain already checked gapless; ``checkpoints`` are the stored
    checkpoints (or bare notes), in any order: they are put in the order of the sizes
    their notes state. Raises :class:`CheckpointDamage` naming the first bad checkpoint:
    a bad or missing signature or a foreign origin (forged); a stored column that
    differs from the note (modified); the same checkpoint stored twice (duplicated); two
    different signed checkpoints of one size (forked); a batch nobody signed or a broken
    ``prev`` link (missing, named at the seq the absent checkpoint would end at); roots
    or chain head that disagree with the records, or records that stop before a
    checkpoint's size (mismatch).
    """
    levels = MerkleLevels.from_leaf_hashes(leaf_hashes)
    return verify_checkpoint_levels(
        tenant_id, levels, lambda size: chain_hashes[size - 1], checkpoints, keyring, log_origin
    )


def provable(start: int, end: int, pruned_size: int) -> bool:
    """Whether the root of leaves ``[start, end)`` of a log whose leaves below
    ``pruned_size`` (a multiple of 256) are gone needs only nodes it keeps: retained
    leaves, and subtrees of height 8 and up (stored tile entries, stream/core/retention.py).
    True for every range starting at or after the cut, and for ranges starting on a
    tile boundary whose last partial tile is not pruned. Always true when nothing is
    pruned."""
    if start >= pruned_size:
        return True
    if start % TILE_WIDTH:
        return False
    return end % TILE_WIDTH == 0 or end - end % TILE_WIDTH >= pruned_size


def verify_checkpoint_levels(
    tenant_id: str,
    levels: MerkleLevels,
    chain_head: Callable[[int], bytes],
    checkpoints: Sequence[StoredCheckpoint | bytes],
    keyring: Keyring,
    log_origin: str,
    *,
    pruned_size: int = 0,
) -> TenantSummary:
    """:func:`verify_checkpoints` over precomputed :class:`MerkleLevels` of the records.

    Requires: ``levels`` are those of the stored leaf hashes of seq ``1..levels.size`` of a
    chain already checked gapless; ``chain_head(size)`` returns the stored chain hash of
    seq ``size`` (called only with ``pruned_size <= size <= levels.size``); ``checkpoints``
    as for :func:`verify_checkpoints`. Raises :class:`CheckpointDamage` exactly as it does.

    With ``pruned_size`` (a log whose records ``1..pruned_size`` were deleted under a
    signed retention statement, :func:`authtrail.stream.core.retention.pruned_levels`), signatures,
    columns and succession of every checkpoint are still checked, but a root is compared
    only where :func:`provable` says the kept nodes determine it, and a chain head only
    from ``pruned_size`` on (the retention statement's anchor).
    """
    origin = checkpoint_origin(log_origin, tenant_id)
    stored = _in_stated_order([_as_stored(checkpoint) for checkpoint in checkpoints])
    previous: Checkpoint | None = None
    previous_note: bytes | None = None
    signed_by: dict[str, None] = {}
    succession = KeySuccession()
    for entry in stored:
        checkpoint, keys = _open(tenant_id, entry.note, keyring, origin, previous)
        signed_by.update(dict.fromkeys(keys))
        _compare_columns(tenant_id, checkpoint, entry.columns)
        if previous is not None and checkpoint.size == previous.size:
            same = checkpoint == previous
            raise CheckpointDamage(
                tenant_id, checkpoint.size, DUPLICATED_CHECKPOINT if same else FORKED_CHECKPOINT,
                f"two signed checkpoints at size {checkpoint.size}"
                + ("" if same else " that differ: the signer signed two histories"),
            )  # fmt: skip
        _check_succession(tenant_id, previous, checkpoint)
        try:
            succession.add(checkpoint.batch_first_seq, checkpoint.size, keys)
        except KeySuccessionError as exc:
            raise CheckpointDamage(tenant_id, checkpoint.size, exc.damage, exc.detail) from exc
        if checkpoint.size > levels.size:
            raise CheckpointDamage(
                tenant_id, levels.size + 1, MISMATCHED_CHECKPOINT,
                f"records end at seq {levels.size} but a checkpoint covers {checkpoint.size}",
            )  # fmt: skip
        first = checkpoint.batch_first_seq - 1
        if provable(first, checkpoint.size, pruned_size):
            batch_root = levels.range_root(first, checkpoint.size)
            _compare(tenant_id, checkpoint, "batch root", checkpoint.batch_root, batch_root)
        if provable(0, checkpoint.size, pruned_size):
            log_root = levels.root(checkpoint.size)
            _compare(tenant_id, checkpoint, "log root", checkpoint.root, log_root)
        if checkpoint.size >= pruned_size:
            _compare(
                tenant_id, checkpoint, "chain head", checkpoint.chain_hash,
                chain_head(checkpoint.size),
            )  # fmt: skip
        previous, previous_note = checkpoint, entry.note
    return TenantSummary(
        tenant_id, levels.size, len(stored), previous.size if previous else 0,
        newest=previous, newest_note=previous_note, signed_by=tuple(signed_by),
        signed_ranges=succession.ranges(),
    )  # fmt: skip


def signed_size(
    tenant_id: str, checkpoints: Sequence[StoredCheckpoint | bytes], keyring: Keyring,
    log_origin: str,
) -> int:  # fmt: skip
    """The largest size among ``checkpoints`` whose signature verifies (0: none does).

    What a damaged tenant is still signed up to, for reports; checks nothing else.
    """
    origin = checkpoint_origin(log_origin, tenant_id)
    sizes = [0]
    for entry in map(_as_stored, checkpoints):
        try:
            sizes.append(open_checkpoint(entry.note, keyring, origin).size)
        except CheckpointError:
            continue
    return max(sizes)


def _as_stored(checkpoint: StoredCheckpoint | bytes) -> StoredCheckpoint:
    return checkpoint if isinstance(checkpoint, StoredCheckpoint) else StoredCheckpoint(checkpoint)


def _in_stated_order(stored: list[StoredCheckpoint]) -> list[StoredCheckpoint]:
    """``stored`` ordered by the sizes the notes' bodies state (signatures unchecked).

    Rows have no order of their own and a size column may be edited, so the order is the
    notes'. A note too damaged to parse goes where its size column puts it, else right
    after its neighbour in the given order; it is reported as forged when its turn comes.
    """
    keys: list[int] = []
    for entry in stored:
        column = (entry.columns or {}).get("size")
        fallback = column if isinstance(column, int) else keys[-1] if keys else 0
        keys.append(_stated_size(entry.note, fallback))
    order = sorted(range(len(stored)), key=keys.__getitem__)
    return [stored[index] for index in order]


def _stated_size(note: bytes, default: int) -> int:
    """The size ``note``'s body states (signatures unchecked); -1 without a signature
    block, ``default`` when the body does not parse."""
    body, separator, _ = note.rpartition(b"\n\n")
    if not separator:
        return -1
    try:
        return Checkpoint.parse(body + b"\n").size
    except CheckpointError:
        return default


def _open(
    tenant_id: str, note: bytes, keyring: Keyring, origin: str, previous: Checkpoint | None
) -> tuple[Checkpoint, list[str]]:
    size = previous.size + 1 if previous else 1
    try:
        opened = open_signed_checkpoint(note, keyring, origin)
    except RetiredKeyError as exc:
        # The note is genuine but too new for its keys: named at the size it states.
        raise CheckpointDamage(tenant_id, _stated_size(note, size), RETIRED_KEY, str(exc)) from exc
    except CheckpointError as exc:
        raise CheckpointDamage(tenant_id, size, FORGED_CHECKPOINT, str(exc)) from exc
    return opened.checkpoint, list(opened.signed_by)


def _compare_columns(
    tenant_id: str, checkpoint: Checkpoint, columns: Mapping[str, int | bytes] | None
) -> None:
    for column, attribute in CHECKPOINT_COLUMNS.items():
        if columns is None or column not in columns:
            continue
        signed, stored = getattr(checkpoint, attribute), columns[column]
        if stored != signed:
            raise CheckpointDamage(
                tenant_id, checkpoint.size, MODIFIED_CHECKPOINT,
                f"stored column {column} is {_shown(stored)}, "
                f"the signed note says {_shown(signed)}",
            )  # fmt: skip


def _shown(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def _check_succession(tenant_id: str, previous: Checkpoint | None, checkpoint: Checkpoint) -> None:
    expected_first = previous.size + 1 if previous else 1
    if checkpoint.batch_first_seq > expected_first:
        # The batch in between has no checkpoint: name the seq that one would end at.
        raise CheckpointDamage(
            tenant_id, checkpoint.batch_first_seq - 1, MISSING_CHECKPOINT,
            f"no checkpoint covers seq {expected_first}..{checkpoint.batch_first_seq - 1} "
            f"(the next one starts its batch at {checkpoint.batch_first_seq})",
        )  # fmt: skip
    try:
        verify_successor(previous, checkpoint)
    except CheckpointError as exc:
        raise CheckpointDamage(tenant_id, checkpoint.size, MISSING_CHECKPOINT, str(exc)) from exc


def _compare(
    tenant_id: str, checkpoint: Checkpoint, what: str, expected: bytes, calculated: bytes
) -> None:
    if expected != calculated:
        mismatch = RootMismatchError(expected, calculated, what)
        raise CheckpointDamage(tenant_id, checkpoint.size, MISMATCHED_CHECKPOINT, str(mismatch))
