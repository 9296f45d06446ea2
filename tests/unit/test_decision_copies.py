"""When decision ids may stop being kept (stream/worker/decision_copies.py), and what the
sequencer does then (Sequencer.stop_keeping_ids)."""

from __future__ import annotations

from authtrail.stream.core.note import Signer, generate_key_strings
from authtrail.stream.core.sequencer import DUPLICATE, SEQUENCED, Sequencer
from authtrail.stream.worker.decision_copies import DecisionCopies

SIGNER = Signer.parse(generate_key_strings("decision-copies")[0])


def test_keeping_lasts_until_input_past_the_first_acknowledged_decision() -> None:
    copies = DecisionCopies("events")
    copies.acknowledged({("events", 1): (1, 2)})
    assert not copies.passed(1, 10**9)  # never recovered: nothing kept to stop keeping
    copies.recovered(1)
    copies.recovered(2)
    assert not copies.passed(1, 10**9)  # keeping, but no decision of its own acknowledged
    copies.acknowledged({("chained", 1): (0, 50), ("events", 2): (7, 9), ("lockouts", 1): (3, 3)})
    assert not copies.passed(1, 10**9)  # other roles and partitions say nothing
    copies.acknowledged({("events", 1): (40, 42)})
    copies.acknowledged({("events", 1): (43, 60)})  # later ones do not move it
    assert not copies.passed(1, 41) and not copies.passed(1, 42)
    assert copies.passed(1, 43)
    assert not copies.passed(1, 44)  # once
    copies.forget(2)
    assert not copies.passed(2, 10)  # revoked: its horizon (9) is gone with it
    copies.recovered(1)  # a later recovery keeps again, until its own first decision
    assert not copies.passed(1, 10**9)
    copies.acknowledged({("events", 1): (70, 71)})
    assert copies.passed(1, 72)


def test_stop_keeping_ids_forgets_them_and_remembers_new_ones_in_the_window() -> None:
    sequencer = Sequencer(SIGNER, "test", batch_size=10, batch_interval=60, dedup_window=4,
                          remember_forever="own:")  # fmt: skip
    assert sequencer.offer("t", "own:1", b"decision", 0).outcome == SEQUENCED
    assert sequencer.offer("u", "own:2", b"decision", 1).outcome == SEQUENCED
    for offset in range(2, 8):  # push anything out of a window of 4
        sequencer.offer("t", f"e{offset}", b"event %d" % offset, offset)
    assert sequencer.offer("t", "own:1", b"decision", 8).outcome == DUPLICATE  # kept
    assert sequencer.stop_keeping_ids() == 2
    assert sequencer.tenants["t"].kept_ids == {} and sequencer.tenants["u"].kept_ids == {}
    assert sequencer.offer("t", "own:1", b"decision", 9).outcome == SEQUENCED  # forgotten
    assert sequencer.offer("t", "own:3", b"decision", 10).outcome == SEQUENCED
    assert sequencer.tenants["t"].kept_ids == {}
    assert sequencer.offer("t", "own:3", b"decision", 11).outcome == DUPLICATE  # the window
    assert sequencer.stop_keeping_ids() == 0
