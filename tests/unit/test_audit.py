"""Checkpoint verification against stored records: intact passes, every tampering is named."""

from __future__ import annotations

import pytest

from stream.audit import (
    FORGED_CHECKPOINT,
    MISMATCHED_CHECKPOINT,
    MISSING_CHECKPOINT,
    CheckpointDamage,
    verify_checkpoints,
)
from stream.note import Signer, generate_key_strings, make_keyring
from stream.sequencer import Sequencer

SIGNER = Signer.parse(generate_key_strings("audit-test")[0])
KEYRING = make_keyring([SIGNER.verifier_key()])
ORIGIN = "authtrail.test"


class _Clock:
    def __call__(self) -> float:
        return 0.0


def _tenant_log(count: int = 23, batch_size: int = 5):
    sequencer = Sequencer(
        SIGNER, ORIGIN, batch_size=batch_size, batch_interval=60, monotonic=_Clock()
    )
    leaf_hashes, chain_hashes, notes = [], [], []
    for offset in range(count):
        link = sequencer.offer("acme", f"e{offset}", f"event {offset}".encode(), offset).link
        assert link is not None
        leaf_hashes.append(link.leaf_hash)
        chain_hashes.append(link.hash)
        notes += [sequencer.close_batch(t).note for t in sequencer.due_batches()]
    return leaf_hashes, chain_hashes, notes


def _damage(leaf_hashes, chain_hashes, notes, keyring=KEYRING) -> CheckpointDamage:
    with pytest.raises(CheckpointDamage) as caught:
        verify_checkpoints("acme", leaf_hashes, chain_hashes, notes, keyring, ORIGIN)
    return caught.value


def test_intact_log_verifies_and_reports_the_unsigned_tail() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    summary = verify_checkpoints("acme", leaf_hashes, chain_hashes, notes, KEYRING, ORIGIN)
    assert (summary.records, summary.checkpoints, summary.signed_size) == (23, 4, 20)


def test_modified_leaf_hash_is_a_root_mismatch() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    leaf_hashes[7] = bytes(32)
    error = _damage(leaf_hashes, chain_hashes, notes)
    assert (error.seq, error.damage) == (10, MISMATCHED_CHECKPOINT)
    assert "batch root" in error.detail


def test_modified_chain_head_is_a_mismatch() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    chain_hashes[14] = bytes(32)
    error = _damage(leaf_hashes, chain_hashes, notes)
    assert (error.seq, error.damage) == (15, MISMATCHED_CHECKPOINT)


def test_dropped_checkpoint_is_missing() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    del notes[1]
    error = _damage(leaf_hashes, chain_hashes, notes)
    assert (error.seq, error.damage) == (15, MISSING_CHECKPOINT)


def test_swapped_checkpoints_are_missing() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    notes[1], notes[2] = notes[2], notes[1]
    assert _damage(leaf_hashes, chain_hashes, notes).damage == MISSING_CHECKPOINT


def test_altered_note_is_forged() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    notes[2] = notes[2].replace(b"\n15\n", b"\n16\n")
    error = _damage(leaf_hashes, chain_hashes, notes)
    assert (error.seq, error.damage) == (11, FORGED_CHECKPOINT)


def test_checkpoint_signed_by_an_untrusted_key_is_forged() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    other = Signer.parse(generate_key_strings("audit-test")[0])
    assert _damage(
        leaf_hashes, chain_hashes, notes, make_keyring([other.verifier_key()])
    ).damage == (FORGED_CHECKPOINT)


def test_checkpoint_of_another_tenant_is_forged() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    with pytest.raises(CheckpointDamage) as caught:
        verify_checkpoints("globex", leaf_hashes, chain_hashes, notes, KEYRING, ORIGIN)
    assert caught.value.damage == FORGED_CHECKPOINT


def test_truncated_records_are_caught_by_the_newest_checkpoint() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    error = _damage(leaf_hashes[:17], chain_hashes[:17], notes)
    assert (error.seq, error.damage) == (18, MISMATCHED_CHECKPOINT)
