"""Envelopes (schemas/event_envelope.avsc) through the worker: each event handled alone.

Edge cases of the issue: a bad event in the middle of an envelope, a crash in the middle
of an envelope replaying it, an envelope mixing tenants of one partition, an oversized
envelope; and the replay position (offset, index) through the real recovery decoder.
"""

from __future__ import annotations

import hashlib
from typing import Any

from authtrail.producers.sdk.partitioning import tenant_partition
from authtrail.schemas import CHAINED_RECORD, CHAINED_REJECTION, CHECKPOINT, CLAIM, EVENT_ENVELOPE
from authtrail.stream.core.chain import ChainLink
from authtrail.stream.core.note import make_keyring
from authtrail.stream.core.rejection import rejection_leaf
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.worker import recovery
from authtrail.stream.worker.admission import Limits
from authtrail.stream.worker.app import codec
from authtrail.stream.worker.chained_batch import decode_batch
from authtrail.stream.worker.sequencing import CHAINED, CHECKPOINTS
from authtrail.stream.worker.sequencing import DEAD_LETTER as DEAD_LETTER_ROLE
from tests.unit.test_worker import BATCHES, EVENTS, SIGNER, Harness, _event

ENVELOPES = codec(EVENT_ENVELOPE)


def _envelope(*values: bytes) -> bytes:
    return ENVELOPES.encode({"events": list(values)})


def _restored(harness: Harness, upto: int | None = None) -> list[tuple[Any, ...]]:
    """What recovery would replay from ``harness``'s chained outputs (the first ``upto``
    of them: the rest was lost in a crash), in publish order."""
    chained = [value for role, _, value, _ in harness.published if role == CHAINED][:upto]
    restored = []
    for value in chained:
        if value[2:10] in codec(CHAINED_REJECTION).known_fingerprints:
            r = codec(CHAINED_REJECTION).decode(value)
            tenant, event_id, index = r["chain_tenant_id"], None, r["rejection"]["source_index"]
        else:
            r = codec(CHAINED_RECORD).decode(value)
            tenant, event_id = r["event"]["tenant_id"], r["event"]["event_id"]
            index = r["source_index"]
        link = ChainLink(r["seq"], r["prev_hash"], r["leaf_hash"], r["hash"])
        restored.append((tenant, event_id, link, r["source_offset"], index))
    return restored


def test_an_envelopes_events_are_chained_in_order_with_their_offset_and_index() -> None:
    harness = Harness([_event(0), _envelope(*(_event(n) for n in range(1, 5))), _event(5)])
    harness.run([0, 1, 2])
    chained = harness.decoded(CHAINED)
    assert [r["event"]["event_id"] for r in chained] == [f"e{n}" for n in range(6)]
    assert [(r["source_offset"], r["source_index"]) for r in chained] == [
        (0, None), (1, 0), (1, 1), (1, 2), (1, 3), (2, None),
    ]  # fmt: skip
    assert [r["seq"] for r in chained] == list(range(1, 7))
    # Batches close at exactly batch_size (3) events, even inside one envelope.
    assert [c["size"] for c in harness.decoded(CHECKPOINTS)] == [3, 6]
    # The chained record holds the event's own bytes, as from a bare message.
    chained_values = [v for role, _, v, _ in harness.published if role == CHAINED]
    assert _event(2)[10:] in chained_values[2]


def test_a_bad_event_mid_envelope_is_rejected_alone_with_its_offset_and_index() -> None:
    bad = [b"\x00garbage", _event(9, tenant="bad tenant"), b"\xc3\x01" + bytes(8) + b"x"]
    envelope = _envelope(_event(0), bad[0], _event(1), bad[1], bad[2], _event(2))
    harness = Harness([envelope])
    harness.run([0])
    assert [r["event"]["event_id"] for r in harness.decoded(CHAINED)] == ["e0", "e1", "e2"]
    dead = harness.decoded(DEAD_LETTER_ROLE)
    assert [(d["error_kind"], d["source_offset"], d["source_index"]) for d in dead] == [
        ("undecodable", 0, 1), ("invalid_event", 0, 3), ("unknown_schema", 0, 4),
    ]  # fmt: skip
    assert [d["original"] for d in dead] == bad  # the event's bytes, not the envelope's
    chained = harness.rejections()
    assert [c["rejection"] for c in chained] == dead
    for record in chained:  # the index is part of the chained leaf
        leaf = rejection_leaf(record["rejection"])
        assert b"source_index" in leaf
        assert record["leaf_hash"] == hashlib.sha256(b"\x00" + leaf).digest()


def test_a_bare_rejection_leaf_has_no_index_so_older_leaves_are_unchanged() -> None:
    harness = Harness([b"\x00garbage"])
    harness.run([0])
    (record,) = harness.rejections()
    assert record["rejection"]["source_index"] is None
    assert b"source_index" not in rejection_leaf(record["rejection"])


def test_a_crash_mid_envelope_replays_it_and_neither_loses_nor_repeats_an_event() -> None:
    envelope = _envelope(_event(0), _event(1), b"\x00bad", _event(3), _event(4), _event(5))
    inputs = [envelope, _event(6)]
    whole = Harness(inputs)
    whole.run([0, 1])
    expected = [r["event"]["event_id"] for r in whole.decoded(CHAINED)]
    for stored in range(0, 7):  # the crash left the first `stored` chained outputs in Kafka
        first = Harness(inputs)
        first.run([0])
        restored = _restored(first, stored)
        second = Harness(inputs, restored)
        second.run([0, 1])  # the envelope is delivered again (its offset was not committed)
        before = [r[1] for r in restored if r[1] is not None]
        after = [r["event"]["event_id"] for r in second.decoded(CHAINED)]
        assert before + after == expected, stored
        rejected_before = sum(1 for r in restored if r[1] is None)
        assert rejected_before + len(second.rejections()) == 1, stored
        seqs = [r["seq"] for r in second.decoded(CHAINED) if r["event"]["tenant_id"] == "acme"]
        assert seqs == list(range(len(before) + 1, len(expected) + 1)), stored


def test_a_restart_after_a_whole_envelope_skips_it_without_decoding() -> None:
    inputs = [_envelope(_event(0), _event(1)), _event(2)]
    first = Harness(inputs)
    first.run([0])
    second = Harness(inputs, _restored(first))
    second.run([0, 1])
    assert [r["event"]["event_id"] for r in second.decoded(CHAINED)] == ["e2"]
    assert second.worker.counters.duplicates == 0 and second.worker.counters.rejected == 0


def test_an_envelope_may_mix_tenants_of_its_partition_each_keeping_its_order() -> None:
    partitions = 4
    tenants = [t for t in (f"t{n}" for n in range(40)) if tenant_partition(t, partitions) == 2]
    one, two = tenants[:2]
    other = next(t for t in (f"t{n}" for n in range(40)) if tenant_partition(t, partitions) != 2)
    values = [_event(0, one), _event(1, two), _event(2, one), _event(3, other), _event(4, two)]
    harness = Harness([_envelope(*values)])
    harness.worker._partitions = partitions  # check tenant -> partition, as the app does
    harness.run([0])
    chained = harness.decoded(CHAINED)
    by_tenant = {t: [(r["seq"], r["event"]["event_id"]) for r in chained
                     if r["event"]["tenant_id"] == t] for t in (one, two)}  # fmt: skip
    assert by_tenant == {one: [(1, "e0"), (2, "e2")], two: [(1, "e1"), (2, "e4")]}
    (dead,) = harness.decoded(DEAD_LETTER_ROLE)
    assert (dead["error_kind"], dead["source_index"]) == ("wrong_partition", 3)
    # The rejection of e3 cut the records into two batches (the chained topic keeps the
    # order of sequencing); each says which tenants' seqs it holds.
    batches = [decode_batch(value, BATCHES) for value, _ in harness.batches]
    ranges = [[(r["tenant_id"], r["first_seq"], r["last_seq"]) for r in b["tenants"]]
              for b in batches]  # fmt: skip
    assert ranges == [[(one, 1, 2), (two, 1, 1)], [(two, 2, 2)]]


def test_an_oversized_envelope_is_rejected_whole_and_an_oversized_event_alone() -> None:
    limits = Limits(max_record_bytes=200, max_envelope_bytes=600)
    big_event = EVENTS.encode({**EVENTS.decode(_event(1)), "message": "x" * 300})
    too_big = _envelope(*(_event(n) for n in range(10, 22)))
    inputs = [_envelope(_event(0), big_event, _event(2)), too_big, _event(3)]
    assert len(too_big) > 600 and len(inputs[0]) <= 600
    harness = Harness(inputs, limits=limits)
    harness.run([0, 1, 2])
    dead = harness.decoded(DEAD_LETTER_ROLE)
    assert [(d["error_kind"], d["source_offset"], d["source_index"]) for d in dead] == [
        ("oversized", 0, 1), ("oversized", 1, None),
    ]  # fmt: skip
    assert dead[1]["original"] == too_big
    assert [r["event"]["event_id"] for r in harness.decoded(CHAINED)] == ["e0", "e2", "e3"]


def test_an_empty_or_broken_envelope_is_rejected_whole() -> None:
    broken = _envelope(_event(0))[:-5]
    harness = Harness([_envelope(), broken, _event(2)])
    harness.run([0, 1, 2])
    dead = harness.decoded(DEAD_LETTER_ROLE)
    assert [(d["error_kind"], d["source_index"]) for d in dead] == [
        ("undecodable", None), ("undecodable", None),
    ]  # fmt: skip
    assert "no events" in dead[0]["reason"]
    assert [r["event"]["event_id"] for r in harness.decoded(CHAINED)] == ["e2"]


def test_an_envelope_inside_an_envelope_is_an_unknown_schema_not_unpacked() -> None:
    harness = Harness([_envelope(_event(0), _envelope(_event(1)))])
    harness.run([0])
    (dead,) = harness.decoded(DEAD_LETTER_ROLE)
    assert (dead["error_kind"], dead["source_index"]) == ("unknown_schema", 1)


def test_recovery_restores_the_position_from_chained_records_and_rejections() -> None:
    """The real recovery decoder: the index comes back from both kinds of record."""
    inputs = [_envelope(_event(0), _event(1), b"\x00bad", _event(3))]
    first = Harness(inputs)
    first.run([0])
    chained = [value for role, _, value, _ in first.published if role == CHAINED]
    topics = recovery.Topics(
        chained="chained", checkpoints="checkpoints", snapshots=None,
        chained_codec=codec(CHAINED_RECORD), checkpoint_codec=codec(CHECKPOINT),
        claim_codec=codec(CLAIM), rejection_codec=codec(CHAINED_REJECTION),
    )  # fmt: skip
    for stored, position in ((2, (0, 1)), (3, (0, 2)), (4, (0, 3))):
        sequencer = Sequencer(SIGNER, "authtrail.test", batch_size=3, batch_interval=60)
        replay = recovery._Replay(sequencer, topics, make_keyring([SIGNER.verifier_key()]),
                                  "authtrail.test", None)  # fmt: skip
        replay.records(iter([(n, None, value, None) for n, value in enumerate(chained[:stored])]))
        assert (sequencer.source_offset, sequencer.source_index) == position
        assert sequencer.handled(*position) and not sequencer.handled(0, position[1] + 1)
        assert not sequencer.handled(0, None)  # the envelope is not finished
