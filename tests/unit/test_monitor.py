"""Anchors from outside the store (auditor state, publication) against the store's log."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from authtrail.errors import ConfigurationError
from authtrail.stream.core.audit import CheckpointDamage, MerkleLevels
from authtrail.stream.core.auditor_state import (
    AuditorState,
    RememberedCheckpoint,
    state_from_json,
    state_to_json,
)
from authtrail.stream.core.checkpoint import Checkpoint
from authtrail.stream.core.merkle import leaf_hash
from authtrail.stream.core.monitor import (
    FORKED,
    ROLLED_BACK,
    TENANT_MISSING,
    TRUNCATED,
    Anchor,
    check_anchor,
    missing_tenant,
)
from authtrail.stream.core.note import Signer, generate_key_strings, make_keyring, open_note
from authtrail.stream.core.sequencer import Sequencer
from tests.unit import merkle_reference as ref

SIGNER = Signer.parse(generate_key_strings("monitor-test")[0])
KEYRING = make_keyring([SIGNER.verifier_key()])
ORIGIN = "authtrail.test"
LEAVES = [f"event {n}".encode() for n in range(40)]


def _levels(count: int) -> MerkleLevels:
    return MerkleLevels.from_leaf_hashes([leaf_hash(leaf) for leaf in LEAVES[:count]])


def _anchor(size: int, leaves: list[bytes] = LEAVES) -> Anchor:
    return Anchor(size, ref.mth(leaves[:size]), "the test")


@pytest.mark.parametrize("size", [1, 2, 7, 16, 31, 40])
def test_a_log_that_extends_the_anchor_passes(size: int) -> None:
    check_anchor("acme", _levels(40), 40, _anchor(size))


def test_records_ending_before_the_anchor_are_truncated() -> None:
    with pytest.raises(CheckpointDamage) as caught:
        check_anchor("acme", _levels(30), 30, _anchor(35))
    assert (caught.value.damage, caught.value.seq) == (TRUNCATED, 31)
    assert "the test saw a signed log of 35" in caught.value.detail


@pytest.mark.parametrize("changed", [0, 12, 34])
def test_another_history_under_the_anchor_is_forked(changed: int) -> None:
    other = list(LEAVES)
    other[changed] = b"rewritten"
    with pytest.raises(CheckpointDamage) as caught:
        check_anchor("acme", _levels(40), 40, _anchor(35, other))
    assert (caught.value.damage, caught.value.seq) == (FORKED, 35)


def test_records_without_a_checkpoint_as_new_as_the_anchor_are_rolled_back() -> None:
    with pytest.raises(CheckpointDamage) as caught:
        check_anchor("acme", _levels(40), 20, _anchor(35))
    assert (caught.value.damage, caught.value.seq) == (ROLLED_BACK, 21)


def test_a_missing_tenant_is_named() -> None:
    damage = missing_tenant("acme", _anchor(3))
    assert (damage.tenant_id, damage.damage, damage.seq) == ("acme", TENANT_MISSING, 1)


# --- the auditor state ------------------------------------------------------------------


def _signed_log(count: int = 12) -> tuple[list[bytes], list[bytes]]:
    sequencer = Sequencer(SIGNER, ORIGIN, batch_size=5, batch_interval=60)
    notes = []
    for offset in range(count):
        sequencer.offer("acme", f"e{offset}", f"event {offset}".encode(), offset)
        notes += [sequencer.close_batch(t).note for t in sequencer.due_batches()]
    notes.append(sequencer.close_batch("acme").note)
    return [leaf_hash(f"event {n}".encode()) for n in range(count)], notes


def _remembered(note: bytes) -> RememberedCheckpoint:
    checkpoint = Checkpoint.parse(open_note(note, KEYRING).text)
    return RememberedCheckpoint(checkpoint.size, checkpoint.root, note, "2026-12-03T10:00:00Z")


def _state() -> AuditorState:
    _, notes = _signed_log()
    return AuditorState(ORIGIN, {"acme": _remembered(notes[-1])}, directory_index=4)


def test_a_state_reads_back_as_written_and_anchors_its_tenants() -> None:
    state = _state()
    again = state_from_json(state_to_json(state), KEYRING, ORIGIN)
    assert again == state
    (anchor,) = again.anchors().values()
    assert (anchor.size, anchor.root) == (12, state.tenants["acme"].root)
    assert "2026-12-03T10:00:00Z" in anchor.source


def test_remember_keeps_the_newer_checkpoint_and_the_other_tenants() -> None:
    _, notes = _signed_log()
    state = AuditorState(ORIGIN, {"acme": _remembered(notes[-1]), "globex": _remembered(notes[0])})
    older = state.remember({"acme": _remembered(notes[0])}, directory_index=2)
    assert older.tenants["acme"].size == 12 and "globex" in older.tenants
    assert older.directory_index == 2
    newer = AuditorState(ORIGIN, {"acme": _remembered(notes[0])}).remember(
        {"acme": _remembered(notes[-1])}
    )
    assert newer.tenants["acme"].size == 12


def _edited(change) -> bytes:  # type: ignore[no-untyped-def]
    document = json.loads(state_to_json(_state()))
    change(document)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["tenants"]["acme"].update(size=11),
        lambda d: d["tenants"]["acme"].update(root=base64.b64encode(bytes(32)).decode()),
        lambda d: d["tenants"]["acme"].update(
            note=d["tenants"]["acme"]["note"].replace("\n12\n", "\n13\n")
        ),
        lambda d: d.update(log_origin="other.origin"),
        lambda d: d.update(version=2),
        lambda d: d["tenants"].update(globex=d["tenants"]["acme"]),
        lambda d: d["tenants"]["acme"].pop("note"),
    ],
    ids=["size", "root", "note", "origin", "version", "moved-tenant", "no-note"],
)
def test_a_tampered_state_is_refused(change) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigurationError):
        state_from_json(_edited(change), KEYRING, ORIGIN)


def test_a_state_written_under_another_key_is_refused() -> None:
    other = make_keyring([Signer.parse(generate_key_strings("monitor-test")[0]).verifier_key()])
    with pytest.raises(ConfigurationError, match="does not verify with the trusted keys"):
        state_from_json(state_to_json(_state()), other, ORIGIN)


@pytest.mark.parametrize("data", [b"", b"[]", b"not json", b"\xff"])
def test_a_malformed_state_is_refused(data: bytes) -> None:
    with pytest.raises(ConfigurationError):
        state_from_json(data, KEYRING, ORIGIN)


def test_the_state_file_is_stable_text() -> None:
    state = _state()
    assert state_to_json(state) == state_to_json(replace(state))
    assert state_to_json(state).endswith(b"}\n")
