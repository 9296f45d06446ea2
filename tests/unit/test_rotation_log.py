"""A key rotation carried out by the real Sequencer, checked by the real verifier.

The old worker signs with OLD; a snapshot of its state is restored into a sequencer that
signs with NEW and hands over with OLD, as a restarted worker would. Known answers: who
signs which checkpoint, the hand-over note's exact bytes, the ranges verify reports.
Tampered variants: each signature of the hand-over stripped, the old key signing after
it, the new key signing before it, a retirement mark, keyrings missing a key, and proof
bundles on both sides of the rotation.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field, replace

import pytest

from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.stream.core.audit import (
    FORGED_CHECKPOINT,
    MISMATCHED_CHECKPOINT,
    CheckpointDamage,
    MerkleLevels,
    TenantSummary,
    verify_checkpoints,
)
from authtrail.stream.core.bundle import (
    BundleCheckpointError,
    make_consistency_bundle,
    make_inclusion_bundle,
    verify_bundle,
)
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.chain import ChainLink
from authtrail.stream.core.checkpoint import Checkpoint, open_signed_checkpoint, sign
from authtrail.stream.core.handover import handover_event
from authtrail.stream.core.merkle import leaf_hash as rfc6962_leaf_hash
from authtrail.stream.core.note import Keyring, Signer, VerifierKey, make_keyring, open_note
from authtrail.stream.core.rotation import (
    MISSING_HANDOVER,
    RETIRED_KEY,
    RetiredKeyError,
    SignedRange,
)
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.tree_proofs import (
    consistency_proof_from_nodes,
    inclusion_proof_from_nodes,
)
from authtrail.stream.worker.admission import reserved_identity
from authtrail.stream.worker.snapshot import encode_state, restore_state

OLD = Signer("authtrail", bytes(range(32)))
NEW = Signer("authtrail-2", bytes(range(1, 33)))
STRANGER = Signer("authtrail-x", bytes(range(2, 34)))
A, B = OLD.verifier_key().label, NEW.verifier_key().label
BOTH = make_keyring([OLD.verifier_key(), NEW.verifier_key()])
ORIGIN = "authtrail.test"
BATCH = 4
T0 = 1_800_000_000_000_000  # checkpoint n is stamped T0 + n seconds


class _Clock:
    def __init__(self) -> None:
        self.stamps = 0

    def __call__(self) -> int:
        self.stamps += 1
        return T0 + self.stamps * 1_000_000


def _event(n: int) -> dict[str, object]:
    return {"event_id": f"e{n}", "tenant_id": "acme", "occurred_at": n, "user_name": "alice"}


@dataclass
class Log:
    """One tenant's records and notes in size order, as the sequencers emitted them."""

    events: list[dict[str, object]] = field(default_factory=list)
    leaf_hashes: list[bytes] = field(default_factory=list)
    chain_hashes: list[bytes] = field(default_factory=list)
    notes: list[bytes] = field(default_factory=list)

    def run(self, sequencer: Sequencer, count: int) -> None:
        for _ in range(count):
            n = len(self.events) + 1
            event = _event(n)
            link = sequencer.offer("acme", f"e{n}", canonical_leaf(event), n).link
            assert link is not None
            self.events.append(event)
            self.leaf_hashes.append(link.leaf_hash)
            self.chain_hashes.append(link.hash)
            self.notes += [sequencer.close_batch(t).note for t in sequencer.full_batches()]

    def verify(self, keyring: Keyring = BOTH, notes: list[bytes] | None = None) -> TenantSummary:
        return verify_checkpoints(
            "acme", self.leaf_hashes, self.chain_hashes,
            self.notes if notes is None else notes, keyring, ORIGIN,
        )  # fmt: skip

    def damage(self, notes: list[bytes], keyring: Keyring = BOTH) -> CheckpointDamage:
        with pytest.raises(CheckpointDamage) as caught:
            self.verify(keyring, notes)
        return caught.value


def _sequencer(signer: Signer, clock: _Clock, handover: Signer | None = None) -> Sequencer:
    return Sequencer(
        signer, ORIGIN, batch_size=BATCH, batch_interval=3600, handover=handover,
        wall_clock_micros=clock,
    )  # fmt: skip


def _rotated(before: int = 8, after: int = 12) -> Log:
    """Checkpoints at 4, 8 by OLD; 12 by OLD & NEW (the hand-over); 16, 20 by NEW."""
    clock, log = _Clock(), Log()
    old = _sequencer(OLD, clock)
    log.run(old, before)
    restarted = _sequencer(NEW, clock, handover=OLD)
    restore_state(encode_state(old, None), restarted, None)
    log.run(restarted, after)
    return log


def _signers(note: bytes) -> list[str]:
    return [f"{s.name}+{s.key_id:08x}" for s in open_note(note, BOTH).signatures]


def _body(note: bytes) -> bytes:
    return open_note(note, BOTH).text


def _resigned(note: bytes, *signers: Signer) -> bytes:
    return sign(Checkpoint.parse(_body(note)), *signers)


def _stripped(note: bytes, label_name: str) -> bytes:
    """``note`` without the signature line of the key named ``label_name``."""
    head, _, block = note.rpartition(b"\n\n")
    kept = [line for line in block.split(b"\n") if line and not line.startswith(
        f"\u2014 {label_name} ".encode())]  # fmt: skip
    return head + b"\n\n" + b"".join(line + b"\n" for line in kept)


# --- the sequencer's decisions -----------------------------------------------------------


def test_the_next_checkpoint_is_signed_by_both_keys_and_later_ones_by_the_new_alone() -> None:
    log = _rotated()
    assert [_signers(note) for note in log.notes] == [[A], [A], [B, A], [B], [B]]


def test_the_hand_over_note_bytes_by_hand() -> None:
    """The hand-over is the checkpoint body, a blank line, then one C2SP signature line
    per key: em dash, name, base64(key id || Ed25519 signature of the body)."""
    note = _rotated().notes[2]
    body = _body(note)
    lines = []
    for signer in (NEW, OLD):
        public = signer.verifier_key().public_key
        key_id = hashlib.sha256(signer.name.encode() + b"\n\x01" + public).digest()[:4]
        payload = base64.b64encode(key_id + signer.sign(body)).decode()
        lines.append(f"\u2014 {signer.name} {payload}\n")
    assert note == body + b"\n" + "".join(lines).encode()
    assert Checkpoint.parse(body).time_micros == T0 + 3_000_000  # the third stamp


def test_a_tenant_new_after_the_rotation_is_signed_by_the_new_key_only() -> None:
    log = Log()
    log.run(_sequencer(NEW, _Clock(), handover=OLD), 8)
    assert [_signers(note) for note in log.notes] == [[B], [B]]
    assert log.verify().signed_ranges == (SignedRange(1, 8, (B,), 2),)


def test_a_snapshot_from_before_rotation_support_still_hands_over() -> None:
    clock, log = _Clock(), Log()
    old = _sequencer(OLD, clock)
    log.run(old, 8)
    for tenant in old.tenants.values():
        tenant.last_signers = None  # what a snapshot without "signed_by" restores
    restarted = _sequencer(NEW, clock, handover=OLD)
    restore_state(encode_state(old, None), restarted, None)
    log.run(restarted, 8)
    assert [_signers(note) for note in log.notes] == [[A], [A], [B, A], [B]]


def _recover(sequencer: Sequencer, log: Log) -> None:
    """What authtrail.stream.worker.recovery does with a partition: the checkpoints (opened with the
    keyring, their signers kept), then the chained records."""
    for note in log.notes:
        opened = open_signed_checkpoint(note, BOTH, f"{ORIGIN}/acme")
        sequencer.restore_checkpoint("acme", opened.checkpoint, opened.signed_by)
    previous = bytes(32)
    for seq, (leaf_hash, chained) in enumerate(
        zip(log.leaf_hashes, log.chain_hashes, strict=True), 1
    ):
        link = ChainLink(seq, previous, leaf_hash, chained)
        sequencer.restore_record("acme", f"e{seq}", link, seq)
        previous = chained


def test_a_snapshot_after_the_hand_over_keeps_the_new_key_alone() -> None:
    """Restarted again (still with the hand-over key) from a snapshot taken after the
    hand-over: the snapshot says who signed, so no second hand-over follows."""
    clock, log = _Clock(), Log()
    old = _sequencer(OLD, clock)
    log.run(old, 8)
    first = _sequencer(NEW, clock, handover=OLD)
    restore_state(encode_state(old, None), first, None)
    log.run(first, 4)  # the hand-over at 12
    second = _sequencer(NEW, clock, handover=OLD)
    restore_state(encode_state(first, None), second, None)
    assert second.tenants["acme"].last_signers == (B, A)
    log.run(second, 8)
    assert [_signers(note) for note in log.notes] == [[A], [A], [B, A], [B], [B]]
    assert log.verify().signed_size == 20


def test_recovery_from_notes_gives_the_signers_to_the_sequencer() -> None:
    log = _rotated(before=8, after=4)  # newest: the hand-over at 12
    replayed = _sequencer(NEW, _Clock(), handover=OLD)
    _recover(replayed, log)
    assert replayed.tenants["acme"].last_signers == (B, A)
    log.run(replayed, 4)
    assert _signers(log.notes[-1]) == [B]
    assert log.verify().signed_size == 16


def test_a_worker_still_on_the_old_key_refuses_a_handed_over_tenant() -> None:
    log = _rotated()
    stale = _sequencer(OLD, _Clock())
    _recover(stale, log)
    stale.offer("acme", "e21", canonical_leaf(_event(21)), 21)
    expected = re.escape(f"signed by {B}, not by this worker's key {A}")
    with pytest.raises(ConfigurationError, match=expected):
        stale.close_batch("acme")
    assert stale.open_batches() == ["acme"]  # nothing signed, nothing lost


def test_a_second_rotation_before_the_first_finished_is_refused() -> None:
    clock, log = _Clock(), Log()
    old = _sequencer(OLD, clock)
    log.run(old, 4)
    third = _sequencer(STRANGER, clock, handover=NEW)  # hands over from NEW, never used
    restore_state(encode_state(old, None), third, None)
    third.offer("acme", "e5", canonical_leaf(_event(5)), 5)
    with pytest.raises(ConfigurationError, match="neither by the signing key"):
        third.close_batch("acme")


def test_the_hand_over_key_must_be_another_key() -> None:
    with pytest.raises(InvalidArgumentError):
        _sequencer(OLD, _Clock(), handover=OLD)


# --- verification ------------------------------------------------------------------------


def test_verify_reports_which_key_signed_which_range() -> None:
    summary = _rotated().verify()
    assert summary.signed_size == 20
    assert summary.signed_ranges == (
        SignedRange(1, 8, (A,), 2),
        SignedRange(9, 12, tuple(sorted((A, B))), 1, hand_over=True),
        SignedRange(13, 20, (B,), 2),
    )
    assert set(summary.signed_by) == {A, B}


def test_hand_over_without_the_old_signature_is_missing_hand_over() -> None:
    log = _rotated()
    notes = [*log.notes[:2], _stripped(log.notes[2], OLD.name), *log.notes[3:]]
    error = log.damage(notes)
    assert (error.seq, error.damage) == (12, MISSING_HANDOVER)


def test_hand_over_without_the_new_signature_fails_at_the_next_checkpoint() -> None:
    log = _rotated()
    notes = [*log.notes[:2], _stripped(log.notes[2], NEW.name), *log.notes[3:]]
    error = log.damage(notes)
    assert (error.seq, error.damage) == (16, MISSING_HANDOVER)


def test_the_new_key_signing_before_any_hand_over_is_missing_hand_over() -> None:
    log = _rotated()
    notes = [log.notes[0], _resigned(log.notes[1], NEW), *log.notes[2:]]
    error = log.damage(notes)
    assert (error.seq, error.damage) == (8, MISSING_HANDOVER)


def test_the_old_key_signing_after_the_hand_over_is_retired_key() -> None:
    """A thief holding only the old key re-signs the newest checkpoint, or appends one."""
    log = _rotated()
    resigned = [*log.notes[:4], _resigned(log.notes[4], OLD)]
    error = log.damage(resigned)
    assert (error.seq, error.damage) == (20, RETIRED_KEY)
    assert A in error.detail
    right_after = [*log.notes[:3], _resigned(log.notes[3], OLD), log.notes[4]]
    error = log.damage(right_after)
    assert (error.seq, error.damage) == (16, RETIRED_KEY)
    assert "handed this log over to" in error.detail


def test_the_old_key_co_signing_again_is_retired_key() -> None:
    log = _rotated()
    error = log.damage([*log.notes[:4], _resigned(log.notes[4], NEW, OLD)])
    assert (error.seq, error.damage) == (20, RETIRED_KEY)


def test_a_retired_mark_keeps_old_checkpoints_and_refuses_new_ones() -> None:
    log = _rotated()
    hand_over_time = Checkpoint.parse(_body(log.notes[2])).time_micros
    retired = replace(OLD.verifier_key(), retired_micros=hand_over_time)
    keyring = make_keyring([retired, NEW.verifier_key()])
    assert log.verify(keyring).signed_size == 20  # old-key checkpoints are older: fine
    # An old-key checkpoint stamped at or after the mark (here: in a tenant with no
    # hand-over, so only the mark can tell) is refused, with its size named.
    clock, idle = _Clock(), Log()
    clock.stamps = 2  # stamps 3, 4: at and after the mark
    idle.run(_sequencer(OLD, clock), 8)
    error = idle.damage(idle.notes, keyring)
    assert (error.seq, error.damage) == (4, RETIRED_KEY)
    assert "signed only by retired keys" in error.detail
    earlier = make_keyring([replace(retired, retired_micros=hand_over_time + 1)])
    with pytest.raises(CheckpointDamage) as caught:
        idle.verify(earlier)
    assert caught.value.seq == 8


def test_retired_keys_are_refused_wherever_a_note_is_opened() -> None:
    log = _rotated()
    late = Checkpoint.parse(_body(log.notes[1])).time_micros
    keyring = make_keyring([replace(OLD.verifier_key(), retired_micros=late)])
    open_signed_checkpoint(log.notes[0], keyring, f"{ORIGIN}/acme")
    with pytest.raises(RetiredKeyError):
        open_signed_checkpoint(log.notes[1], keyring, f"{ORIGIN}/acme")


def test_keyrings_missing_a_key_see_forged_checkpoints() -> None:
    log = _rotated()
    only_new = make_keyring([NEW.verifier_key()])
    error = log.damage(log.notes, only_new)
    assert (error.seq, error.damage) == (1, FORGED_CHECKPOINT)
    only_old = make_keyring([OLD.verifier_key()])
    error = log.damage(log.notes, only_old)  # the hand-over opens with the old key
    assert (error.seq, error.damage) == (13, FORGED_CHECKPOINT)


def test_a_stranger_key_in_the_keyring_cannot_take_over() -> None:
    """An attacker who talks an auditor into trusting their key still needs the old
    key's signature on a hand-over."""
    log = _rotated()
    keyring = make_keyring([OLD.verifier_key(), NEW.verifier_key(), STRANGER.verifier_key()])
    error = log.damage([*log.notes[:4], _resigned(log.notes[4], STRANGER)], keyring)
    assert (error.seq, error.damage) == (20, MISSING_HANDOVER)


# --- proof bundles across the rotation ----------------------------------------------------


def _inclusion(log: Log, seq: int, note: bytes) -> dict[str, object]:
    size = Checkpoint.parse(_body(note)).size
    levels = MerkleLevels.from_leaf_hashes(log.leaf_hashes)
    return make_inclusion_bundle(
        log_origin=ORIGIN, tenant_id="acme", seq=seq, event=log.events[seq - 1],
        tree_size=size, inclusion_proof=inclusion_proof_from_nodes(levels.node, seq - 1, size),
        checkpoint_note=note, stored_leaf_hash=log.leaf_hashes[seq - 1],
    )  # fmt: skip


def test_bundles_verify_on_both_sides_of_the_rotation_with_one_keyring() -> None:
    log = _rotated()
    hand_over_time = Checkpoint.parse(_body(log.notes[2])).time_micros
    keyring = make_keyring(
        [replace(OLD.verifier_key(), retired_micros=hand_over_time), NEW.verifier_key()]
    )
    assert verify_bundle(_inclusion(log, 3, log.notes[0]), keyring).signed_by == (A,)
    assert set(verify_bundle(_inclusion(log, 10, log.notes[2]), keyring).signed_by) == {A, B}
    assert verify_bundle(_inclusion(log, 3, log.notes[4]), keyring).signed_by == (B,)
    levels = MerkleLevels.from_leaf_hashes(log.leaf_hashes)
    across = make_consistency_bundle(
        log_origin=ORIGIN, tenant_id="acme", old_note=log.notes[0], new_note=log.notes[4],
        consistency_proof=consistency_proof_from_nodes(levels.node, 4, 20),
    )  # fmt: skip
    verdict = verify_bundle(across, keyring)
    assert (verdict.old_signed_by, verdict.new_signed_by) == ((A,), (B,))  # type: ignore[union-attr]


def test_a_bundle_whose_checkpoint_only_a_retired_key_signed_late_fails() -> None:
    log = _rotated()
    forged_late = _resigned(log.notes[4], OLD)  # stamped after the retirement mark
    early = Checkpoint.parse(_body(log.notes[0])).time_micros + 1
    keyring = make_keyring([replace(OLD.verifier_key(), retired_micros=early)])
    with pytest.raises(BundleCheckpointError, match="retired"):
        verify_bundle(_inclusion(log, 3, forged_late), keyring)
    verify_bundle(_inclusion(log, 3, log.notes[0]), keyring)  # the early one is fine


def test_verifier_keys_compare_without_their_marks_only_in_the_keyring() -> None:
    key: VerifierKey = OLD.verifier_key()
    assert replace(key, retired_micros=1) != key  # a marked key is another trust statement
    assert replace(key, retired_micros=1).key_id == key.key_id


# --- idle logs: handed over by a record of the worker's own (stream/core/handover.py) ----------


def _idle_handover() -> tuple[Log, Sequencer]:
    """8 records signed by OLD, then a restart with NEW (hand-over OLD) and no input: the
    hand-over record appended and its batch closed at once, as the worker does."""
    clock, log = _Clock(), Log()
    old = _sequencer(OLD, clock)
    log.run(old, 8)
    restarted = _sequencer(NEW, clock, handover=OLD)
    restore_state(encode_state(old, None), restarted, None)
    assert restarted.handovers_due() == ["acme"]
    event = handover_event("acme", restarted.newest_signers("acme"), B, 8, T0)
    link = restarted.append_own("acme", event["event_id"], canonical_leaf(event))
    log.events.append(event)
    log.leaf_hashes.append(link.leaf_hash)
    log.chain_hashes.append(link.hash)
    log.notes.append(restarted.close_batch("acme").note)
    return log, restarted


def test_an_idle_tenant_is_handed_over_by_one_record_of_the_workers_own() -> None:
    log, sequencer = _idle_handover()
    assert _signers(log.notes[-1]) == [B, A]  # size 9: the new key first, then the old
    assert sequencer.handovers_due() == []  # handed over: nothing more to do
    assert sequencer.source_offset == 8  # read from no input: the position did not move
    event = log.events[-1]
    assert event["event_type"] == "OTHER"
    assert event["event_type_other"] == "AUTHTRAIL_KEY_HANDOVER"
    assert event["attributes"] == {"from_keys": A, "to_key": B, "after_size": "8"}
    assert str(event["event_id"]).startswith("authtrail-keys:handover:")
    assert event["service"] == "authtrail-keys"  # not in the lockouts view
    assert reserved_identity(event) is not None  # no producer can send one
    # The same log handed over again after a restart gets the same event id.
    assert handover_event("acme", [A], B, 8, T0 + 5)["event_id"] == event["event_id"]
    # Later checkpoints: the new key alone; the old private key is no longer needed.
    without_old = _sequencer(NEW, _Clock())
    restore_state(encode_state(sequencer, None), without_old, None)
    without_old.check_signing_keys()
    log.run(without_old, 4)
    assert _signers(log.notes[-1]) == [B]
    ranges = log.verify().signed_ranges
    assert ranges == (
        SignedRange(1, 8, (A,), 2),
        SignedRange(9, 9, tuple(sorted((A, B))), 1, hand_over=True),
        SignedRange(10, 13, (B,), 1),
    )


def test_nothing_is_handed_over_without_a_hand_over_key_or_with_an_open_batch() -> None:
    clock, log = _Clock(), Log()
    old = _sequencer(OLD, clock)
    log.run(old, 6)  # 4 signed, 2 in an open batch: that batch's checkpoint hands over
    restarted = _sequencer(NEW, clock, handover=OLD)
    restore_state(encode_state(old, None), restarted, None)
    assert restarted.handovers_due() == []
    same_key = _sequencer(OLD, clock)
    restore_state(encode_state(old, None), same_key, None)
    assert same_key.handovers_due() == []


def test_a_tampered_idle_hand_over_is_rejected() -> None:
    log, _ = _idle_handover()
    handover = log.notes[2]
    # Signed by the new key alone: the old key never vouched for it.
    assert log.damage([*log.notes[:2], _stripped(handover, "authtrail")]).damage == (
        MISSING_HANDOVER
    )
    # Moved before the old key's last checkpoint: the old key signs after the hand-over.
    forged_early = _resigned(log.notes[1], NEW, OLD)
    assert log.damage([log.notes[0], forged_early, _resigned(log.notes[2], OLD)]).damage == (
        RETIRED_KEY
    )
    # Its record edited (another key named): the signed roots no longer match the records.
    edited = dict(log.events[-1], attributes={"from_keys": A, "to_key": "x", "after_size": "8"})
    log.leaf_hashes[-1] = rfc6962_leaf_hash(canonical_leaf(edited))
    assert log.damage(log.notes).damage == MISMATCHED_CHECKPOINT
