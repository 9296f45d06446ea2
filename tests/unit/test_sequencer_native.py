"""Sequencer.offer's usual case in C (authtrail/_hashing.c ``sequencer_offer``) against the
method's own Python, which it stands in for.

The same random runs of offers (known and new tenants, duplicates, conflicts, replayed and
out-of-order positions, envelopes, ids kept forever, batches filling up and closing, the id
window turning over) go through a sequencer with the C path and one without: every
result, the sequencer's snapshot, its full batches and the checkpoints it signs must be
the same. The C path must be taken for ordinary input, and must change nothing where it
leaves an event to Python.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail.keys import generate_key_strings
from authtrail.stream.core import sequencer as sequencer_module
from authtrail.stream.core.compact import PythonCompactTree
from authtrail.stream.core.id_window import id_key
from authtrail.stream.core.note import Signer
from authtrail.stream.core.sequencer import CONFLICT, SEQUENCED, Sequencer
from authtrail.stream.worker.snapshot import encode_state

try:
    from authtrail import _hashing
except ImportError as exc:  # pragma: no cover - tests/unit/test_hashing.py says why
    pytest.fail(f"authtrail._hashing is not built ({exc})", pytrace=False)

SIGNER = Signer.parse(generate_key_strings("native")[0])
KEPT_PREFIX = "authtrail-decision:"
TENANTS = ["acme", "globex", "initech", "ümlaut-co"]
IDS = [f"id-{n}" for n in range(12)] + [KEPT_PREFIX + "1", "é" * 40, "x" * 300]
LEAVES = [b"leaf-a", b"leaf-b", b"\x00" * 700, b""]

OFFER = st.tuples(
    st.just("offer"),
    st.sampled_from(TENANTS),
    st.sampled_from(IDS),
    st.sampled_from(LEAVES),
    st.integers(-2, 3),  # the offset's step: back (a replay), same (an envelope), ahead
    st.one_of(st.none(), st.integers(0, 3)),
)
CLOSE = st.tuples(st.just("close"), st.sampled_from(TENANTS))


def _new() -> Sequencer:
    """A sequencer whose clock ticks at every reading: a batch opened at another moment,
    or a reading more or fewer, shows in its deadlines."""
    ticks = itertools.count()
    return Sequencer(
        SIGNER, "native.test", batch_size=3, batch_interval=3600.0, dedup_window=6,
        monotonic=lambda: float(next(ticks)), remember_forever=KEPT_PREFIX,
        wall_clock_micros=lambda: 1,
    )  # fmt: skip


def _deadlines(sequencer: Sequencer) -> list[Any]:
    """When each tenant's batch opened, and the deadlines waiting to close them."""
    opened = {tenant: log.batch_opened_at for tenant, log in sequencer.tenants.items()}
    return [opened, sorted(sequencer._deadlines)]


def _run(steps: list[tuple[Any, ...]]) -> list[Any]:
    """Every result, then the snapshot, the full batches and the window's entries."""
    sequencer, offset, results = _new(), 0, []
    for step in steps:
        if step[0] == "close":
            if step[1] in sequencer.open_batches():
                checkpoint = sequencer.close_batch(step[1])
                results.append(("closed", checkpoint.checkpoint, checkpoint.note))
            continue
        _, tenant, event_id, leaf, stride, index = step
        offset = max(0, offset + stride)
        try:
            results.append(sequencer.offer(tenant, event_id, leaf, offset, index))
        except Exception as exc:  # both paths must fail alike
            results.append(("raised", type(exc), str(exc)))
    results += [encode_state(sequencer, None), sequencer.full_batches(), sequencer.window_bytes(),
                _deadlines(sequencer)]  # fmt: skip
    return results


@pytest.fixture
def python_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sequencer_module, "_native_offer", lambda *args: None)
    yield


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(OFFER, OFFER, OFFER, CLOSE), max_size=60))
def test_the_c_path_sequences_as_the_method_does(steps: list[tuple[Any, ...]]) -> None:
    with_c = _run(steps)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sequencer_module, "_native_offer", lambda *args: None)
        without = _run(steps)
    assert with_c == without


def test_the_c_path_is_taken_for_an_ordinary_event() -> None:
    assert sequencer_module._native_offer is _hashing.sequencer_offer
    sequencer = _new()
    first = sequencer.offer("acme", "id-1", b"leaf-a", 0)  # opens the batch: the method
    assert first.outcome == SEQUENCED
    offered = _hashing.sequencer_offer(sequencer, "acme", "id-2", b"leaf-b", 1, None)
    assert offered is not None and offered.outcome == SEQUENCED
    assert offered.link is not None and offered.link.seq == 2
    assert offered.link.prev_hash == first.link.hash
    assert offered.link.leaf_hash == hashlib.sha256(b"\x00leaf-b").digest()
    assert sequencer.tenants["acme"].head.seq == 2 and sequencer.tenants["acme"].tree.size == 2
    assert sequencer.source_offset == 1 and sequencer.source_index is None
    # an envelope's events: one offset, each a later index
    assert _hashing.sequencer_offer(sequencer, "acme", "id-3", b"x", 2, 0) is not None
    assert _hashing.sequencer_offer(sequencer, "acme", "id-4", b"x", 2, 1) is not None
    assert (sequencer.source_offset, sequencer.source_index) == (2, 1)


def _unusual(sequencer: Sequencer) -> list[tuple[Any, ...]]:
    return [
        ("acme", "id-2", b"leaf-b", 1, None),  # a duplicate
        ("acme", "id-2", b"other", 2, None),  # a conflict
        ("acme", "id-9", b"x", 0, None),  # a position already handled
        ("acme", "id-9", b"x", 1, None),  # the same position
        ("globex", "id-9", b"x", 5, None),  # a tenant not yet known
        ("acme", KEPT_PREFIX + "7", b"x", 5, None),  # an id kept forever
        ("acme", "\ud800", b"x", 5, None),  # an id UTF-8 cannot encode
        ("acme", "id-9", bytearray(b"x"), 5, None),  # not bytes
        ("acme", "id-9", b"x", 2**70, None),  # an offset beyond 64 bits
        ("acme", "id-9", b"x", True, None),  # not an exact int
        ("acme", "id-9", b"x", 5, 2**70),
    ]


def test_what_the_c_path_leaves_to_python_it_does_not_change() -> None:
    sequencer = _new()
    sequencer.offer("acme", "id-1", b"leaf-a", 0)
    sequencer.offer("acme", "id-2", b"leaf-b", 1)

    def state() -> tuple[Any, ...]:
        return (encode_state(sequencer, None), sequencer.window_bytes(),
                sequencer.full_batches(), _deadlines(sequencer))  # fmt: skip

    before = state()
    for args in _unusual(sequencer):
        assert _hashing.sequencer_offer(sequencer, *args) is None, args
    assert state() == before
    # Trees of the Python storage (a sequencer given it, as a build without C has it).
    log = sequencer.tenants["acme"]
    log.tree = PythonCompactTree.from_hashes(log.tree.size, log.tree.to_hashes())
    before = state()
    assert _hashing.sequencer_offer(sequencer, "acme", "id-9", b"x", 5, None) is None
    assert state() == before
    assert sequencer.offer("acme", "id-9", b"x", 5).outcome == SEQUENCED  # the method's own
    assert log.tree.size == 3 and log.batch.size == 3
    # A tenant that has an id kept forever still takes the C path for other ids.
    kept = _new()
    kept.offer("acme", "id-1", b"leaf-a", 0)
    kept.offer("acme", KEPT_PREFIX + "1", b"decision", 1)
    assert kept.tenants["acme"].kept_ids
    assert _hashing.sequencer_offer(kept, "acme", KEPT_PREFIX + "1", b"decision", 2, None) is None
    assert _hashing.sequencer_offer(kept, "acme", "id-2", b"x", 3, None) is not None
    # Kept under another prefix (a snapshot from a worker configured otherwise): still kept.
    kept.tenants["acme"].kept_ids["old-7"] = bytes(32)
    assert _hashing.sequencer_offer(kept, "acme", "old-7", b"x", 4, None) is None
    assert kept.offer("acme", "old-7", b"x", 4).outcome == CONFLICT


def test_the_c_path_opens_a_batch_as_the_method_does() -> None:
    """The first event after a checkpoint opens the tenant's next batch: its deadline is
    pushed once, at the clock's reading then (a batch that never closed on time, or
    closed twice, would not show in the chain, only in late or extra checkpoints)."""
    closed = _new()
    closed.offer("acme", "id-1", b"leaf-a", 0)
    closed.close_batch("acme")
    assert closed.open_batches() == [] and closed.due_batches() == []
    reopened = _hashing.sequencer_offer(closed, "acme", "id-2", b"x", 1, None)
    assert reopened is not None and reopened.outcome == SEQUENCED
    log = closed.tenants["acme"]
    assert log.batch.size == 1 and log.batch_first_seq == 2
    assert closed._deadlines[-1] == (log.batch_opened_at + 3600.0, log.batch_opened_at, "acme")
    assert len(closed._deadlines) == 2  # the first batch's entry stays until popped, stale
    # The next event of that batch reads no clock and pushes nothing.
    assert _hashing.sequencer_offer(closed, "acme", "id-3", b"y", 2, None) is not None
    assert len(closed._deadlines) == 2 and log.batch.size == 2


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_id_keys_are_the_windows_blake2b(tenant: str, event_id: str) -> None:
    try:
        expected = hashlib.blake2b(f"{tenant}\0{event_id}".encode(), digest_size=16).digest()
    except UnicodeEncodeError:  # a lone surrogate: left to hashlib's path, which raises
        assert _hashing.id_key(tenant, event_id) is None
        with pytest.raises(UnicodeEncodeError):
            id_key(tenant, event_id)
        return
    assert _hashing.id_key(tenant, event_id) == expected == id_key(tenant, event_id)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 129, 255, 256, 257, 1000])
def test_id_keys_at_block_boundaries(size: int) -> None:
    tenant, event_id = "t" * (size // 2), "e" * (size - size // 2)
    data = f"{tenant}\0{event_id}".encode()
    assert _hashing.id_key(tenant, event_id) == hashlib.blake2b(data, digest_size=16).digest()
    assert _hashing.id_key(b"t", "e") is None and _hashing.id_key("t", 1) is None
