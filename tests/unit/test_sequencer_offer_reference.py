"""Sequencer.offer's inlined hot path against a plain reference built from the public parts
(ChainHead.append, CompactTree.append, IdWindow, merkle.root): random sequences with
duplicates, conflicts, ids kept forever, replayed positions, tenant switches and batches
closed mid-run must give the same outcomes, links, checkpoints and window."""

from __future__ import annotations

import random

import pytest

from authtrail.stream.core import merkle
from authtrail.stream.core.chain import ChainHead
from authtrail.stream.core.id_window import IdWindow
from authtrail.stream.core.note import Signer, generate_key_strings
from authtrail.stream.core.sequencer import (
    CONFLICT,
    DUPLICATE,
    REPLAYED,
    SEQUENCED,
    Sequencer,
    position,
)

SIGNER = Signer.parse(generate_key_strings("test-log")[0])
KEEP = "keep-"


class _Reference:
    """What offer must decide, spelled out with the slow public pieces."""

    def __init__(self, window: int) -> None:
        self.heads: dict[str, ChainHead] = {}
        self.leaves: dict[str, list[bytes]] = {}
        self.kept: dict[tuple[str, str], bytes] = {}
        self.window = IdWindow(window) if window else None
        self.position = (-1, 1 << 62)

    def offer(self, tenant: str, event_id: str, leaf: bytes, offset: int, index: int | None):
        if position(offset, index) <= self.position:
            return REPLAYED, None
        leaf_hash = merkle.leaf_hash(leaf)
        kept = self.kept.get((tenant, event_id))
        if kept is not None:
            same: bool | None = kept == leaf_hash
        else:
            same = self.window.same_content(tenant, event_id, leaf_hash) if self.window else None
        if same is False:
            return CONFLICT, None
        self.position = position(offset, index)
        if same:
            return DUPLICATE, None
        head = self.heads.get(tenant, ChainHead(tenant))
        self.heads[tenant], link = head.append(leaf_hash)
        self.leaves.setdefault(tenant, []).append(leaf_hash)
        if event_id.startswith(KEEP):
            self.kept[(tenant, event_id)] = leaf_hash
        elif self.window is not None:
            self.window.add(tenant, event_id, leaf_hash)
        return SEQUENCED, link


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("window", [0, 6, 200])
def test_offer_equals_the_reference(seed: int, window: int) -> None:
    rng = random.Random(seed)
    batch_size = rng.choice([1, 2, 3, 7])
    sequencer = Sequencer(SIGNER, "authtrail.test", batch_size=batch_size, batch_interval=1.0,
                          dedup_window=window, monotonic=lambda: 0.0,
                          remember_forever=KEEP)  # fmt: skip
    reference = _Reference(window)
    offset, index = 0, None
    tenant = "t0"
    for _ in range(400):
        if rng.random() < 0.2:  # tenant switch
            tenant = f"t{rng.randrange(4)}"
        move = rng.random()
        if move < 0.05:  # a replayed position
            at = (max(offset - rng.randrange(3), 0), rng.choice([None, 0, 1]))
        elif move < 0.4:  # next event of the same envelope
            index = 0 if index is None else index + 1
            at = (offset, index)
        else:
            offset, index = offset + 1, rng.choice([None, 0])
            at = (offset, index)
        prefix = KEEP if rng.random() < 0.1 else "e"
        event_id = f"{prefix}{rng.randrange(30)}"  # repeats: duplicates and conflicts
        leaf = bytes([rng.randrange(2)]) * 5 + event_id.encode()
        expected = reference.offer(tenant, event_id, leaf, *at)
        got = sequencer.offer(tenant, event_id, leaf, *at)
        assert (got.outcome, got.link) == expected
        for full in sequencer.full_batches():  # batches closed mid-run, as the worker does
            signed = sequencer.close_batch(full)
            leaves = reference.leaves[full]
            assert signed.checkpoint.root == merkle.root_from_leaf_hashes(leaves)
            first = signed.checkpoint.batch_first_seq
            assert signed.checkpoint.batch_root == merkle.root_from_leaf_hashes(leaves[first - 1 :])
            assert signed.checkpoint.chain_hash == reference.heads[full].hash
    for tenant, head in reference.heads.items():
        assert sequencer.tenants[tenant].head == head
        leaves = reference.leaves[tenant]
        assert sequencer.tenants[tenant].tree.root() == merkle.root_from_leaf_hashes(leaves)
    if window:
        assert reference.window is not None
        assert sequencer.window_bytes() == reference.window.to_bytes()
