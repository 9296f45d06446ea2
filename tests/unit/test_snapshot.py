"""Snapshots of a partition's state (stream/worker/snapshot.py): a sequencer and guard restored
from one continue exactly as the uninterrupted ones do; damaged snapshots are refused."""

from __future__ import annotations

import dataclasses
import json
import zlib

import pytest

from authtrail.errors import CheckpointError, FormatError, InvalidArgumentError
from authtrail.stream.core.checkpoint import Checkpoint
from authtrail.stream.core.sequencer import DUPLICATE, Sequencer
from authtrail.stream.detection.guard import Guard
from authtrail.stream.worker.snapshot import encode_state, join, restore_state, split
from tests.unit.test_guard import POLICIES, _traffic
from tests.unit.test_sequencer import SIGNER, FakeClock, _events, _run


def _body(checkpoint: Checkpoint) -> tuple:
    """What a checkpoint commits to, but its wall-clock time (and the digest chaining it)."""
    return (checkpoint.size, checkpoint.root, checkpoint.batch_first_seq, checkpoint.batch_root,
            checkpoint.chain_hash)  # fmt: skip


def _sequencer() -> Sequencer:
    return Sequencer(SIGNER, "authtrail.test", batch_size=4, batch_interval=1.0,
                     monotonic=FakeClock(), remember_forever="keep:")  # fmt: skip


@pytest.mark.parametrize("cut", [0, 1, 5, 77, 199])
def test_restored_sequencer_continues_like_the_uninterrupted_one(cut: int) -> None:
    events = _events(200, tenants=3)
    events[3] = (events[3][0], "keep:decision", events[3][2])  # an id kept for good
    uninterrupted = _sequencer()
    expected, expected_checkpoints = _run(uninterrupted, events)

    before = _sequencer()
    records, checkpoints = _run(before, events[:cut])
    restored = _sequencer()
    restore_state(encode_state(before, None), restored, None)
    more, more_checkpoints = _run(restored, events, start_offset=cut)

    assert records + more == expected
    assert [_body(c.checkpoint) for c in checkpoints + more_checkpoints] == [
        _body(c.checkpoint) for c in expected_checkpoints
    ]
    if cut > 3:  # the kept id survived the snapshot
        tenant = events[3][0]
        assert restored.offer(tenant, "keep:decision", events[3][2], 10_000).outcome == DUPLICATE
    if cut > 0:  # the duplicate window came with the snapshot
        tenant, event_id, leaf = events[0]
        assert restored.offer(tenant, event_id, leaf, 20_000).outcome == DUPLICATE


def test_an_open_batch_survives_and_closes_with_the_same_root() -> None:
    events = _events(6, tenants=1)  # batch_size 4: one closed batch, one open with 2
    before = _sequencer()
    _run(before, events)
    restored = _sequencer()
    restore_state(encode_state(before, None), restored, None)
    (tenant,) = restored.open_batches()
    closed, reference = restored.close_batch(tenant), before.close_batch(tenant)
    assert _body(closed.checkpoint) == _body(reference.checkpoint)
    assert closed.checkpoint.prev_digest == reference.checkpoint.prev_digest


def test_restored_guard_decides_what_the_uninterrupted_one_decides() -> None:
    inputs = _traffic(5)
    uninterrupted, restored_source = Guard(POLICIES), Guard(POLICIES)
    expected = [d for event in inputs for d in uninterrupted.observe(event)]
    cut = 150
    before = [d for event in inputs[:cut] for d in restored_source.observe(event)]
    sequencer = _sequencer()
    restored = Guard(POLICIES)
    restore_state(encode_state(sequencer, restored_source), _sequencer(), restored)
    after = [d for event in inputs[cut:] for d in restored.observe(event)]
    assert before + after == expected
    assert any(after), "the cut must fall before some decisions"


def _tamper(data: bytes, change) -> bytes:
    state = json.loads(zlib.decompress(data))
    change(state)
    return zlib.compress(json.dumps(state).encode())


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-5],
        lambda data: b"not a snapshot",
        lambda data: _tamper(data, lambda s: s.update(format=99)),
        lambda data: _tamper(data, lambda s: s["tenants"][0].update(seq=10**6)),
        lambda data: _tamper(data, lambda s: s["tenants"][0].update(tree="!!")),
        lambda data: _tamper(data, lambda s: s["tenants"][0]["checkpoint"].update(size=0)),
        lambda data: _tamper(data, lambda s: s.pop("tenants")),
        lambda data: _tamper(data, lambda s: s.update(window="AAAA")),
    ],
    ids=["truncated", "garbage", "format", "seq", "tree", "checkpoint", "missing", "window"],
)
def test_damaged_snapshots_are_refused(damage) -> None:
    before = _sequencer()
    _run(before, _events(30, tenants=2))
    with pytest.raises(FormatError):
        restore_state(damage(encode_state(before, None)), _sequencer(), None)


def test_split_and_join() -> None:
    data = bytes(range(256)) * 10
    parts = split(data, 1000)
    assert [len(p) for p in parts] == [1000, 1000, 560]
    assert join(parts) == data
    assert split(b"", 10) == [b""]
    with pytest.raises(InvalidArgumentError):
        split(data, 0)


def test_a_checkpoint_published_after_the_snapshot_closes_its_open_batch() -> None:
    """The timer may close a batch between a snapshot and the next records: recovery
    reads that checkpoint after the snapshot and must close the restored batch with it."""
    events = _events(6, tenants=1)  # batch_size 4: an open batch of 2 at the snapshot
    before = _sequencer()
    _run(before, events)
    state = encode_state(before, None)
    (tenant,) = before.open_batches()
    closed = before.close_batch(tenant)

    restored = _sequencer()
    restore_state(state, restored, None)
    restored.restore_checkpoint(tenant, closed.checkpoint)
    assert restored.open_batches() == []
    later = [(tenant, f"later{n}", f"later {n}".encode()) for n in range(4)]
    expected = _run(before, [*events, *later], start_offset=len(events))[1]
    got = _run(restored, [*events, *later], start_offset=len(events))[1]
    assert [_body(c.checkpoint) for c in got] == [_body(c.checkpoint) for c in expected]
    assert got[0].checkpoint.batch_first_seq == closed.checkpoint.size + 1


def test_a_checkpoint_that_disagrees_with_the_snapshot_is_refused() -> None:
    events = _events(6, tenants=1)
    before = _sequencer()
    _run(before, events)
    state = encode_state(before, None)
    (tenant,) = before.open_batches()
    closed = before.close_batch(tenant).checkpoint
    forged = dataclasses.replace(closed, root=bytes(32))
    restored = _sequencer()
    restore_state(state, restored, None)
    with pytest.raises(CheckpointError):
        restored.restore_checkpoint(tenant, forged)
    behind = _sequencer()
    restore_state(state, behind, None)  # newest checkpoint 4, records up to seq 6
    five = Sequencer(SIGNER, "authtrail.test", batch_size=5, batch_interval=1.0,
                     monotonic=FakeClock())  # fmt: skip
    size_five = _run(five, events)[1][0].checkpoint
    assert size_five.size == 5
    with pytest.raises(CheckpointError, match="comes after records"):
        behind.restore_checkpoint(tenant, size_five)


def test_a_snapshot_keeps_the_position_inside_an_envelope() -> None:
    sequencer = _sequencer()
    sequencer.offer("acme", "a", b"leaf a", 12, 4)
    restored = _sequencer()
    restore_state(encode_state(sequencer, None), restored, None)
    assert (restored.source_offset, restored.source_index) == (12, 4)
    assert restored.handled(12, 4) and not restored.handled(12, 5)


def test_a_snapshot_from_before_envelopes_means_the_whole_message() -> None:
    sequencer = _sequencer()
    sequencer.offer("acme", "a", b"leaf a", 12)
    state = json.loads(zlib.decompress(encode_state(sequencer, None)))
    del state["source_index"]  # written before envelopes existed
    restored = _sequencer()
    restore_state(zlib.compress(json.dumps(state).encode()), restored, None)
    assert (restored.source_offset, restored.source_index) == (12, None)
    assert restored.handled(12, 10**6)
