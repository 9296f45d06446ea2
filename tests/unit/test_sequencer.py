"""The sequencer's decisions: gapless chains, batch tiling, signed checkpoints, recovery."""

from __future__ import annotations

import random

import pytest

from authtrail.errors import ChainError, CheckpointError, InvalidArgumentError
from authtrail.stream.core import merkle
from authtrail.stream.core.chain import ChainLink, StoredLink, verify_chain
from authtrail.stream.core.checkpoint import open_checkpoint, verify_successor
from authtrail.stream.core.note import Signer, generate_key_strings, make_keyring
from authtrail.stream.core.sequencer import CONFLICT, DUPLICATE, REPLAYED, SEQUENCED, Sequencer

SIGNER = Signer.parse(generate_key_strings("test-log")[0])
KEYRING = make_keyring([SIGNER.verifier_key()])


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _sequencer(batch_size: int = 4, clock: FakeClock | None = None) -> Sequencer:
    return Sequencer(
        SIGNER,
        "authtrail.test",
        batch_size=batch_size,
        batch_interval=1.0,
        monotonic=clock or FakeClock(),
    )


def _events(count: int, tenants: int = 3, seed: int = 7) -> list[tuple[str, str, bytes]]:
    rng = random.Random(seed)
    return [
        (f"t{rng.randrange(tenants)}", f"e{n}", f"leaf {n} {seed}".encode()) for n in range(count)
    ]


def _run(sequencer: Sequencer, events, start_offset: int = 0):
    """Feed events; collect emitted records and checkpoints in emission order."""
    records, checkpoints = [], []
    for offset, (tenant, event_id, leaf) in enumerate(events[start_offset:], start_offset):
        offer = sequencer.offer(tenant, event_id, leaf, offset)
        if offer.link is not None:
            records.append((tenant, event_id, offer.link, offset, leaf))
        for due in sequencer.due_batches():
            checkpoints.append(sequencer.close_batch(due))
    return records, checkpoints


def test_each_tenant_gets_a_gapless_verifiable_chain() -> None:
    events = _events(200)
    records, _ = _run(_sequencer(), events)
    assert len(records) == 200
    for tenant in {t for t, *_ in events}:
        links = [link for t, _, link, _, _ in records if t == tenant]
        assert [link.seq for link in links] == list(range(1, len(links) + 1))
        stored = [StoredLink(link, link.leaf_hash) for link in links]
        assert verify_chain(tenant, stored).seq == len(links)


def test_checkpoints_tile_batches_and_commit_to_the_right_roots() -> None:
    events = _events(101)
    records, checkpoints = _run(_sequencer(batch_size=4), events)
    for tenant in {t for t, *_ in events}:
        leaves = [leaf for t, _, _, _, leaf in records if t == tenant]
        links = [link for t, _, link, _, _ in records if t == tenant]
        previous = None
        for signed in (c for c in checkpoints if c.tenant_id == tenant):
            opened = open_checkpoint(signed.note, KEYRING, f"authtrail.test/{tenant}")
            assert opened == signed.checkpoint
            verify_successor(previous, opened)
            assert opened.size - opened.batch_first_seq + 1 == 4  # batches close at batch_size
            assert opened.root == merkle.root(leaves[: opened.size])
            assert opened.batch_root == merkle.root(
                leaves[opened.batch_first_seq - 1 : opened.size]
            )
            assert opened.chain_hash == links[opened.size - 1].hash
            previous = opened


def test_batches_close_on_time_too() -> None:
    clock = FakeClock()
    sequencer = _sequencer(batch_size=1000, clock=clock)
    sequencer.offer("acme", "e1", b"x", 0)
    assert sequencer.due_batches() == []
    clock.now = 1.5
    assert sequencer.due_batches() == ["acme"]
    signed = sequencer.close_batch("acme")
    assert (signed.checkpoint.batch_first_seq, signed.checkpoint.size) == (1, 1)
    assert sequencer.due_batches() == []
    with pytest.raises(InvalidArgumentError):
        sequencer.close_batch("acme")


def test_retry_is_recorded_once_and_reused_id_is_a_conflict() -> None:
    sequencer = _sequencer()
    assert sequencer.offer("acme", "e1", b"login", 0).outcome == SEQUENCED
    assert sequencer.offer("acme", "e1", b"login", 1).outcome == DUPLICATE
    assert sequencer.offer("acme", "e1", b"logout", 2).outcome == CONFLICT
    # A conflict leaves its offset to the rejection that the worker chains for it.
    link = sequencer.chain_rejection("authtrail-rejected-0", b"rejection", 2)
    assert link is not None and link.seq == 1
    assert sequencer.offer("acme", "e1", b"login", 2).outcome == REPLAYED
    assert sequencer.chain_rejection("authtrail-rejected-0", b"rejection", 2) is None
    assert sequencer.tenants["acme"].head.seq == 1


def test_rejections_are_chained_but_never_remembered_as_event_ids() -> None:
    sequencer = _sequencer()
    assert sequencer.offer("acme", "e1", b"login", 0).outcome == SEQUENCED
    for offset in range(1, 50):  # a flood of bad input
        sequencer.chain_rejection("authtrail-rejected-0", b"junk %d" % offset, offset)
    assert sequencer.tenants["authtrail-rejected-0"].head.seq == 49
    assert sequencer.offer("acme", "e1", b"login", 50).outcome == DUPLICATE
    assert sequencer.tenants["authtrail-rejected-0"].kept_ids == {}


def test_unusable_tenant_id_is_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        _sequencer().offer("has space", "e1", b"x", 0)


@pytest.mark.parametrize("crash_after", [0, 1, 37, 150, 199])
@pytest.mark.parametrize("lost_checkpoints", [0, 1])
def test_restart_continues_every_chain_as_if_never_interrupted(
    crash_after: int, lost_checkpoints: int
) -> None:
    """Crash after `crash_after` records were published; input replays from offset 0."""
    events = _events(200)
    reference, _ = _run(_sequencer(), events)
    first, first_checkpoints = _run(_sequencer(), events[:crash_after])
    published = first_checkpoints[: len(first_checkpoints) - lost_checkpoints]

    restarted = _sequencer()
    for signed in published:
        restarted.restore_checkpoint(signed.tenant_id, signed.checkpoint)
    for tenant, event_id, link, offset, _ in first:
        restarted.restore_record(tenant, event_id, link, offset)
        restarted.restore_record(tenant, event_id, link, offset)  # a publish retry: skipped
    rest, rest_checkpoints = _run(restarted, events)
    combined = first + rest
    assert [(t, e, link) for t, e, link, _, _ in combined] == [
        (t, e, link) for t, e, link, _, _ in reference
    ]
    # The checkpoints after the restart link onto the published ones without a gap.
    by_tenant: dict[str, list] = {}
    for signed in published + rest_checkpoints:
        by_tenant.setdefault(signed.tenant_id, []).append(signed.checkpoint)
    for chain in by_tenant.values():
        for previous, current in zip([None, *chain], chain, strict=False):
            verify_successor(previous, current)


def test_restore_refuses_a_forked_topic() -> None:
    records, _ = _run(_sequencer(), _events(10, tenants=1))
    restarted = _sequencer()
    tenant, event_id, link, offset, _ = records[0]
    restarted.restore_record(tenant, event_id, link, offset)
    forged = ChainLink(1, link.prev_hash, merkle.leaf_hash(b"other"), link.hash)
    with pytest.raises(ChainError):
        restarted.restore_record(tenant, "x", forged, offset + 1)
    skipping = records[2][2]
    with pytest.raises(ChainError):
        restarted.restore_record(tenant, "y", skipping, offset + 2)


def test_restore_refuses_records_that_disagree_with_a_checkpoint() -> None:
    _, checkpoints = _run(_sequencer(), _events(8, tenants=1))
    other, _ = _run(_sequencer(), _events(8, tenants=1, seed=99))
    restarted = _sequencer()
    restarted.restore_checkpoint(checkpoints[0].tenant_id, checkpoints[0].checkpoint)
    with pytest.raises((CheckpointError, ChainError)):
        for tenant, event_id, link, offset, _ in other:
            restarted.restore_record(tenant, event_id, link, offset)


def test_ids_with_the_kept_prefix_are_never_forgotten() -> None:
    """A lockout decision republished by a recovery long after its first copy is still
    recognised, however many events came in between."""
    sequencer = Sequencer(SIGNER, "authtrail.test", batch_size=1000, batch_interval=60,
                          dedup_window=3, remember_forever="authtrail-lockout:")  # fmt: skip
    assert sequencer.offer("acme", "authtrail-lockout:x", b"lock", 0).outcome == SEQUENCED
    for offset in range(1, 10):
        sequencer.offer("acme", f"e{offset}", f"event {offset}".encode(), offset)
    assert sequencer.offer("acme", "authtrail-lockout:x", b"lock", 10).outcome == DUPLICATE
    assert sequencer.offer("acme", "e1", b"event 1", 11).outcome == SEQUENCED  # window: 3


def test_has_recorded_predicts_a_duplicate_and_changes_nothing() -> None:
    sequencer = Sequencer(SIGNER, "authtrail.test", batch_size=1000, batch_interval=60,
                          dedup_window=4, remember_forever="authtrail-lockout:")  # fmt: skip
    sequencer.offer("acme", "authtrail-lockout:x", b"lock", 0)
    sequencer.offer("acme", "e1", b"login", 1)
    assert sequencer.has_recorded("acme", "authtrail-lockout:x", b"lock")
    assert sequencer.has_recorded("acme", "e1", b"login")
    assert not sequencer.has_recorded("acme", "e1", b"logout")  # a conflict, not a duplicate
    assert not sequencer.has_recorded("acme", "e2", b"login")
    assert not sequencer.has_recorded("globex", "e1", b"login")
    assert "globex" not in sequencer.tenants and sequencer.source_offset == 1
    assert sequencer.offer("acme", "e2", b"login", 2).outcome == SEQUENCED


@pytest.mark.parametrize("seed", range(5))
def test_due_batches_are_exactly_those_full_or_older_than_the_interval(seed: int) -> None:
    """The deadline heap answers what a scan of every tenant would (stream/core/sequencer.py)."""
    rng = random.Random(seed)
    clock = FakeClock()
    sequencer = _sequencer(batch_size=5, clock=clock)
    for offset in range(2000):
        clock.now += rng.choice([0.0, 0.0, 0.1, 0.3, 1.5])
        tenant = f"t{rng.randrange(12)}"
        sequencer.offer(tenant, f"e{offset}", f"leaf {offset}".encode(), offset)
        if rng.random() < 0.3:
            expected = {
                name for name, log in sequencer.tenants.items()
                if log.batch.size
                and (log.batch.size >= 5 or log.batch_opened_at <= clock.now - 1.0)
            }  # fmt: skip
            due = sequencer.due_batches()
            assert len(due) == len(set(due)) and set(due) == expected
            for name in due:
                sequencer.close_batch(name)


@pytest.mark.parametrize("seed", range(5))
def test_a_limit_takes_the_oldest_overdue_batches_and_keeps_the_rest_due(seed: int) -> None:
    """With ``limit`` (the signing budget), the full batches and the ``limit`` oldest of
    the overdue ones, by when they opened; the others are due at the next call."""
    rng = random.Random(seed)
    clock = FakeClock()
    sequencer = _sequencer(batch_size=5, clock=clock)
    for offset in range(3000):
        clock.now += rng.choice([0.0, 0.0, 0.1, 0.3, 1.5])
        tenant = f"t{rng.randrange(30)}"
        sequencer.offer(tenant, f"e{offset}", f"leaf {offset}".encode(), offset)
        if rng.random() < 0.3:
            full = {name for name, log in sequencer.tenants.items() if log.batch.size >= 5}
            overdue = sorted(
                (log.batch_opened_at, name) for name, log in sequencer.tenants.items()
                if log.batch.size and name not in full
                and log.batch_opened_at <= clock.now - 1.0
            )  # fmt: skip
            limit = rng.choice([0, 1, 2, 5])
            due = sequencer.due_batches(limit)
            assert len(due) == len(set(due))
            taken = set(due) - full
            assert full <= set(due) and len(taken) == min(limit, len(overdue))
            # the oldest first (ties in opening time may go either way)
            if taken:
                cutoff = overdue[len(taken) - 1][0]
                assert all(opened <= cutoff for opened, name in overdue if name in taken)
                assert all(opened >= cutoff for opened, name in overdue if name not in taken)
            for name in due:
                sequencer.close_batch(name)
    clock.now += 2.0
    left = {name for name, log in sequencer.tenants.items() if log.batch.size}
    assert set(sequencer.due_batches()) == left  # nothing deferred was lost


# --- positions (offset, index): envelopes of many events in one input message -----------


def test_positions_order_an_envelopes_events_before_its_whole_message() -> None:
    sequencer = _sequencer()
    assert sequencer.offer("acme", "a", b"leaf a", 5, 0).outcome == SEQUENCED
    assert sequencer.offer("acme", "b", b"leaf b", 5, 1).outcome == SEQUENCED
    assert (sequencer.source_offset, sequencer.source_index) == (5, 1)
    assert sequencer.offer("acme", "b", b"leaf b", 5, 1).outcome == REPLAYED
    assert sequencer.offer("acme", "a", b"leaf a", 4).outcome == REPLAYED  # bare, earlier
    assert sequencer.handled(5, 0) and sequencer.handled(5, 1)
    assert not sequencer.handled(5, 2) and not sequencer.handled(5)  # the rest of it
    assert sequencer.chain_rejection("authtrail-rejected-0", b"bad", 5, 2) is not None
    assert sequencer.chain_rejection("authtrail-rejected-0", b"bad", 5, 2) is None
    assert sequencer.offer("acme", "c", b"leaf c", 6).outcome == SEQUENCED  # a bare message
    assert (sequencer.source_offset, sequencer.source_index) == (6, None)
    assert sequencer.handled(6) and sequencer.handled(6, 10**6)  # whole: every index


def test_restored_records_restore_the_position_with_its_index() -> None:
    first = _sequencer()
    links = [first.offer("acme", f"e{i}", b"leaf %d" % i, 9, i).link for i in range(3)]
    second = _sequencer()
    for index, link in enumerate(links[:2]):  # the third was lost in a crash
        assert link is not None
        second.restore_record("acme", f"e{index}", link, 9, index)
    assert (second.source_offset, second.source_index) == (9, 1)
    assert second.offer("acme", "e1", b"leaf 1", 9, 1).outcome == REPLAYED
    again = second.offer("acme", "e2", b"leaf 2", 9, 2)
    assert again.outcome == SEQUENCED and again.link == links[2]
