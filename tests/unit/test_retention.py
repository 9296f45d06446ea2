"""Retention statements: exact encoding, strict parser, signatures, and a pruned tree's nodes."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from authtrail.errors import CheckpointError, ConfigurationError, InvalidArgumentError
from authtrail.retention import retention_days
from authtrail.stream.core.audit import (
    MerkleLevels,
    provable,
    verify_checkpoint_levels,
    verify_checkpoints,
)
from authtrail.stream.core.checkpoint import Checkpoint, sign
from authtrail.stream.core.note import Signer, generate_key_strings, make_keyring
from authtrail.stream.core.retention import (
    FORGED_RETENTION,
    RetentionDamage,
    RetentionStatement,
    is_retention_event,
    open_retention,
    pruned_levels,
    retention_cut,
    retention_event,
    sign_retention,
)
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.tiles import TILE_WIDTH

# The Go note test key (golang.org/x/mod/sumdb/note): a fixed, public test signer.
PETER = Signer.parse(
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
)
KEYRING = make_keyring([PETER.verifier_key()])
STATEMENT = RetentionStatement(
    "authtrail.local/acme", 512, bytes(range(32)), bytes(range(64, 96)), 1764151200000000
)
BODY = (
    b"authtrail.local/acme\n"
    b"authtrail-retention-v1\n"
    b"512\n"
    b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    b"authtrail-chain QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\n"
    b"authtrail-time 1764151200000000\n"
)
# Ed25519 is deterministic: the whole note is a known answer.
NOTE = (
    BODY
    + (
        "\n\u2014 PeterNeumann x08goysbpFWUQy2dI100bazjFWPzIc+aUO31ZM5tLl3qChBje7JV9"
        "6bDTu9UoSgA0SDe/4hPzE7cAe3Qyh8dtD/HoAU=\n"
    ).encode()
)


def test_known_answer_body_and_note() -> None:
    assert STATEMENT.body() == BODY
    assert sign_retention(STATEMENT, PETER) == NOTE
    assert RetentionStatement.parse(BODY) == STATEMENT
    assert open_retention("acme", 600, NOTE, KEYRING, "authtrail.local") == STATEMENT


@pytest.mark.parametrize(
    "body",
    [
        BODY.replace(b"512\n", b"0512\n"),  # not canonical
        BODY.replace(b"authtrail-retention-v1", b"authtrail-retention-v2"),
        BODY.replace(b"authtrail-chain", b"authtrail-head"),
        BODY + b"extra\n",
        BODY[:-1],  # no final newline
        BODY.replace(b"=\nauthtrail-chain", b"\nauthtrail-chain"),  # base64 without padding
        BODY.replace(b"512\n", b"500\n"),  # not a tile boundary
        BODY.replace(b"512\n", b"0\n"),  # nothing pruned
    ],
)
def test_parser_refuses_every_other_spelling(body: bytes) -> None:
    with pytest.raises(CheckpointError):
        RetentionStatement.parse(body)


def test_statement_and_checkpoint_never_parse_as_each_other() -> None:
    checkpoint = Checkpoint(
        "authtrail.local/acme", 512, bytes(32), 1, 512, bytes(32), bytes(32), bytes(32), 0
    )
    with pytest.raises(CheckpointError):
        RetentionStatement.parse(checkpoint.body())
    with pytest.raises(CheckpointError):
        Checkpoint.parse(BODY)


def _forged(note: bytes, seq: int = 600, origin: str = "authtrail.local") -> str:
    with pytest.raises(RetentionDamage) as caught:
        open_retention("acme", seq, note, KEYRING, origin)
    assert caught.value.damage == FORGED_RETENTION and caught.value.seq == seq
    return caught.value.detail


def test_tampered_notes_are_forged() -> None:
    other = Signer.parse(generate_key_strings("someone")[0])
    assert "trusted key" in _forged(sign_retention(STATEMENT, other))
    assert _forged(NOTE.replace(b"\n512\n", b"\n768\n"))  # text changed under the signature
    assert _forged(BODY)  # no signature at all
    assert _forged(NOTE.replace(b"PeterNeumann x0", b"PeterNeumann x1"))  # signature changed
    assert "names log" in _forged(NOTE, origin="authtrail.other")
    assert "includes itself" in _forged(NOTE, seq=512)
    with pytest.raises(RetentionDamage):
        open_retention("globex", 600, NOTE, KEYRING, "authtrail.local")
    checkpoint_note = sign(
        Checkpoint("authtrail.local/acme", 512, bytes(32), 1, 512, bytes(32), bytes(32),
                   bytes(32), 0), PETER,
    )  # fmt: skip
    assert _forged(checkpoint_note)  # a genuine checkpoint is no retention statement


def test_cut_rounds_down_to_a_tile_boundary() -> None:
    assert [retention_cut(seq) for seq in (1, 256, 257, 258, 513, 1000)] == [
        0, 0, 256, 256, 512, 768,
    ]  # fmt: skip
    with pytest.raises(InvalidArgumentError):
        retention_cut(0)
    with pytest.raises(InvalidArgumentError):
        dataclasses.replace(STATEMENT, pruned_size=300)


def test_event_carries_the_note_and_its_id_follows_from_it() -> None:
    event = retention_event("acme", NOTE, STATEMENT)
    assert is_retention_event(event)
    assert event["attributes"] == {"retention_note": NOTE.decode()}
    assert event["occurred_at"] == STATEMENT.time_micros
    assert event["event_id"] == "authtrail-retention:" + hashlib.sha256(NOTE).hexdigest()[:32]
    assert retention_event("acme", NOTE, STATEMENT) == event
    assert not is_retention_event({**event, "service": "app"})


def _leaves(count: int) -> list[bytes]:
    return [hashlib.sha256(b"leaf %d" % index).digest() for index in range(count)]


@pytest.mark.parametrize(("pruned", "size"), [(256, 256), (256, 257), (512, 700), (768, 66_000)])
def test_pruned_levels_keep_every_node_a_retained_proof_needs(pruned: int, size: int) -> None:
    leaves = _leaves(size)
    full = MerkleLevels.from_leaf_hashes(leaves)
    level_one = [full.node(8, index) for index in range(pruned // TILE_WIDTH)]
    pruned_tree = pruned_levels(pruned, level_one, leaves[pruned:])
    assert pruned_tree.size == size
    for height in range(size.bit_length()):
        for index in range(size >> height):
            if height >= 8 or index << height >= pruned:  # kept: compare with the full tree
                assert pruned_tree.node(height, index) == full.node(height, index)
    for end in {pruned, pruned + 1, size, (pruned + size) // 2}:
        for start in (0, pruned, 256):
            if start <= end <= size and provable(start, end, pruned):
                assert pruned_tree.range_root(start, end) == full.range_root(start, end)


def test_provable_ranges() -> None:
    assert provable(0, 700, 512) and provable(512, 530, 512) and provable(256, 512, 512)
    assert not provable(0, 500, 512)  # the dropped partial tile 256..500
    assert not provable(500, 550, 512)  # a batch across the cut
    assert provable(0, 500, 0)  # nothing pruned: everything


def test_checkpoints_of_a_pruned_log_verify_where_provable() -> None:
    sequencer = Sequencer(PETER, "authtrail.local", batch_size=50, batch_interval=3600)
    leaves, hashes, notes = [], [], []
    for n in range(700):
        link = sequencer.offer("acme", f"e{n}", b"leaf %d" % n, n).link
        assert link is not None
        leaves.append(link.leaf_hash)
        hashes.append(link.hash)
        for due in sequencer.full_batches():
            notes.append(sequencer.close_batch(due).note)
    full = verify_checkpoints("acme", leaves, hashes, notes, KEYRING, "authtrail.local")
    tree = MerkleLevels.from_leaf_hashes(leaves)
    pruned = pruned_levels(512, [tree.node(8, 0), tree.node(8, 1)], leaves[512:])
    summary = verify_checkpoint_levels(
        "acme", pruned, lambda size: hashes[size - 1], notes, KEYRING, "authtrail.local",
        pruned_size=512,
    )  # fmt: skip
    assert (summary.records, summary.checkpoints, summary.signed_size) == (
        full.records, full.checkpoints, full.signed_size,
    )  # fmt: skip


def test_retention_days_from_the_privacy_policy_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    periods = '{"default": 365, "tenants": {"acme": 30, "keep": null}}'
    policy.write_text(f'{{"tenants": {{"acme": {{}}}}, "retention_days": {periods}}}')
    assert [retention_days(policy, name) for name in ("acme", "globex", "keep")] == [30, 365, None]
    assert retention_days(None, "acme") is None
    toml = tmp_path / "policy.toml"
    toml.write_text("[retention_days.tenants]\nacme = 7\n")
    assert (retention_days(toml, "acme"), retention_days(toml, "globex")) == (7, None)
    policy.write_text('{"retention_days": {"tenants": {"acme": 0}}}')
    with pytest.raises(ConfigurationError, match="whole days"):
        retention_days(policy, "acme")
