"""Verify one tenant's stored log against its signed checkpoints (docs/INTEGRITY.md §7).

Pure: the caller reads rows from wherever they are stored and hands over leaf hashes,
chain links and signed notes; this module recomputes and compares. The row-by-row chain
check can be done here (:func:`stream.chain.verify_chain`) or pushed into the store's SQL;
the Merkle and signature checks always happen here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from authtrail.errors import CheckpointError, RootMismatchError
from stream.checkpoint import Checkpoint, checkpoint_origin, open_checkpoint, verify_successor
from stream.compact import CompactTree
from stream.note import Keyring

# Damage kinds of checkpoints (record damage kinds live in stream.chain).
FORGED_CHECKPOINT = "forged checkpoint"
MISSING_CHECKPOINT = "missing checkpoint"
MISMATCHED_CHECKPOINT = "checkpoint mismatch"


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
    origin = checkpoint_origin(log_origin, tenant_id)
    tree = CompactTree()
    previous: Checkpoint | None = None
    for note in notes:
        checkpoint = _open(tenant_id, note, keyring, origin, previous)
        try:
            verify_successor(previous, checkpoint)
        except CheckpointError as exc:
            raise CheckpointDamage(
                tenant_id, checkpoint.size, MISSING_CHECKPOINT, str(exc)
            ) from exc
        if checkpoint.size > len(leaf_hashes):
            raise CheckpointDamage(
                tenant_id, len(leaf_hashes) + 1, MISMATCHED_CHECKPOINT,
                f"records end at seq {len(leaf_hashes)} but a checkpoint covers {checkpoint.size}",
            )  # fmt: skip
        batch = CompactTree()
        batch.extend_leaf_hashes(leaf_hashes[checkpoint.batch_first_seq - 1 : checkpoint.size])
        tree.extend_leaf_hashes(leaf_hashes[tree.size : checkpoint.size])
        _compare(tenant_id, checkpoint, "batch root", checkpoint.batch_root, batch.root())
        _compare(tenant_id, checkpoint, "log root", checkpoint.root, tree.root())
        _compare(
            tenant_id, checkpoint, "chain head", checkpoint.chain_hash,
            chain_hashes[checkpoint.size - 1],
        )  # fmt: skip
        previous = checkpoint
    return TenantSummary(tenant_id, len(leaf_hashes), len(notes), previous.size if previous else 0)


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
