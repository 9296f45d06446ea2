"""Checkpoint verification against stored records: intact passes, every tampering is named."""

from __future__ import annotations

from dataclasses import replace

import pytest

from authtrail.errors import InvalidArgumentError
from authtrail.stream.core.audit import (
    CHECKPOINT_COLUMNS,
    DUPLICATED_CHECKPOINT,
    FORGED_CHECKPOINT,
    FORKED_CHECKPOINT,
    MISMATCHED_CHECKPOINT,
    MISSING_CHECKPOINT,
    MODIFIED_CHECKPOINT,
    CheckpointDamage,
    MerkleLevels,
    StoredCheckpoint,
    verify_checkpoint_levels,
    verify_checkpoints,
)
from authtrail.stream.core.checkpoint import Checkpoint, sign
from authtrail.stream.core.merkle import leaf_hash
from authtrail.stream.core.note import Signer, generate_key_strings, make_keyring, open_note
from authtrail.stream.core.sequencer import Sequencer
from tests.unit import merkle_reference as ref

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


def test_dropped_checkpoint_is_missing_at_the_seq_it_would_end_at() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    del notes[1]
    error = _damage(leaf_hashes, chain_hashes, notes)
    assert (error.seq, error.damage) == (10, MISSING_CHECKPOINT)
    assert "no checkpoint covers seq 6..10" in error.detail


def test_dropped_first_checkpoint_is_missing() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    error = _damage(leaf_hashes, chain_hashes, notes[1:])
    assert (error.seq, error.damage) == (5, MISSING_CHECKPOINT)


def test_stored_order_does_not_matter_the_notes_sizes_do() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    notes[1], notes[2] = notes[2], notes[1]
    summary = verify_checkpoints("acme", leaf_hashes, chain_hashes, notes, KEYRING, ORIGIN)
    assert summary.signed_size == 20


def test_a_checkpoint_stored_twice_is_duplicated() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    error = _damage(leaf_hashes, chain_hashes, [*notes[:3], notes[2], *notes[3:]])
    assert (error.seq, error.damage) == (15, DUPLICATED_CHECKPOINT)


def test_two_different_signed_checkpoints_of_one_size_are_forked() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    other = Checkpoint.parse(open_note(notes[2], KEYRING).text)
    resigned = sign(replace(other, time_micros=other.time_micros + 1), SIGNER)
    error = _damage(leaf_hashes, chain_hashes, [*notes, resigned])
    assert (error.seq, error.damage) == (15, FORKED_CHECKPOINT)


def _stored(notes: list[bytes]) -> list[StoredCheckpoint]:
    stored = []
    for note in notes:
        checkpoint = Checkpoint.parse(open_note(note, KEYRING).text)
        columns = {column: getattr(checkpoint, attribute)
                   for column, attribute in CHECKPOINT_COLUMNS.items()}  # fmt: skip
        stored.append(StoredCheckpoint(note, columns))
    return stored


def test_stored_columns_equal_to_the_notes_verify_and_name_the_signing_key() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    summary = verify_checkpoints("acme", leaf_hashes, chain_hashes, _stored(notes), KEYRING, ORIGIN)
    assert summary.signed_size == 20
    assert summary.signed_by == (f"audit-test+{SIGNER.key_id:08x}",)
    assert summary.newest_note == notes[-1]


@pytest.mark.parametrize("column", sorted(CHECKPOINT_COLUMNS))
def test_every_stored_column_that_differs_from_its_note_is_a_modified_checkpoint(
    column: str,
) -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    stored = _stored(notes)
    columns = dict(stored[2].columns or {})
    value = columns[column]
    columns[column] = bytes(32) if isinstance(value, bytes) else value + 1
    stored[2] = StoredCheckpoint(stored[2].note, columns)
    error = _damage(leaf_hashes, chain_hashes, stored)
    assert (error.seq, error.damage) == (15, MODIFIED_CHECKPOINT)
    assert f"stored column {column} " in error.detail


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


# --- MerkleLevels: every range root against the naive RFC 6962 reference ----------------

ENTRIES = [f"entry {n}".encode() for n in range(37)]


def test_levels_give_every_prefix_and_range_root_of_the_reference() -> None:
    for size in range(len(ENTRIES) + 1):
        levels = MerkleLevels.from_leaf_hashes([leaf_hash(entry) for entry in ENTRIES[:size]])
        assert levels.size == size
        for start in range(size + 1):
            for end in range(start, size + 1):
                assert levels.range_root(start, end) == ref.mth(ENTRIES[start:end]), (start, end)
        assert levels.root(size) == ref.mth(ENTRIES[:size])


def test_levels_match_the_known_answer_of_an_empty_and_a_one_leaf_log() -> None:
    assert MerkleLevels.from_leaf_hashes([]).root(0).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    one = MerkleLevels.from_leaf_hashes([leaf_hash(b"")])
    assert one.root(1).hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


def test_levels_from_a_buffer_equal_levels_from_leaf_hashes() -> None:
    computed = MerkleLevels.from_leaf_hashes([leaf_hash(entry) for entry in ENTRIES])
    buffers = [memoryview(computed.level(height)) for height in range(6)]
    wrapped = MerkleLevels(len(ENTRIES), buffers)
    assert [wrapped.range_root(3, end) for end in range(3, 38)] == [
        computed.range_root(3, end) for end in range(3, 38)
    ]


@pytest.mark.parametrize("height", range(6))
def test_a_flipped_byte_in_a_level_changes_the_roots_that_read_it(height: int) -> None:
    """Levels are trusted as given: a damaged node shows in every root folded from it."""
    computed = MerkleLevels.from_leaf_hashes([leaf_hash(entry) for entry in ENTRIES])
    levels = [bytearray(computed.level(height)) for height in range(6)]
    levels[height][-1] ^= 1  # the last perfect node of this height
    tampered = MerkleLevels(len(ENTRIES), [bytes(level) for level in levels])
    index = (len(ENTRIES) >> height) - 1
    start, end = index << height, (index + 1) << height
    assert tampered.range_root(start, end) != ref.mth(ENTRIES[start:end])
    assert tampered.range_root(0, start) == ref.mth(ENTRIES[:start])  # left of it: intact


@pytest.mark.parametrize(
    ("size", "lengths"),
    [(5, [160, 64]), (5, [160, 64, 32, 32]), (5, [160, 96, 32]), (-1, []), (0, [0])],
)
def test_levels_of_the_wrong_shape_are_refused(size: int, lengths: list[int]) -> None:
    with pytest.raises(InvalidArgumentError):
        MerkleLevels(size, [bytes(length) for length in lengths])


def test_ranges_outside_the_log_are_refused() -> None:
    levels = MerkleLevels.from_leaf_hashes([leaf_hash(entry) for entry in ENTRIES[:4]])
    for start, end in ((0, 5), (3, 2), (-1, 2)):
        with pytest.raises(InvalidArgumentError):
            levels.range_root(start, end)


def test_a_short_leaf_hash_is_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        MerkleLevels.from_leaf_hashes([bytes(32), bytes(31)])


def test_levels_check_every_checkpoint_like_leaf_hashes() -> None:
    leaf_hashes, chain_hashes, notes = _tenant_log()
    levels = MerkleLevels.from_leaf_hashes(leaf_hashes)
    heads = lambda size: chain_hashes[size - 1]  # noqa: E731
    summary = verify_checkpoint_levels("acme", levels, heads, notes, KEYRING, ORIGIN)
    assert (summary.records, summary.checkpoints, summary.signed_size) == (23, 4, 20)
