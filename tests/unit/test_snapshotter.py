"""When a partition is snapshotted and where the snapshot stands (stream/worker/snapshotter.py)."""

from __future__ import annotations

from authtrail.schemas import SNAPSHOT
from authtrail.stream.worker.app import codec
from authtrail.stream.worker.recovery import Recovery, SnapshotPosition
from authtrail.stream.worker.snapshotter import (
    BYTES_PER_RECORD,
    CHAINED,
    CHECKPOINTS,
    Snapshotter,
)
from tests.unit.test_sequencer import _events, _run
from tests.unit.test_snapshot import _sequencer

SNAPSHOTS = codec(SNAPSHOT)


def test_due_after_every_records_and_positioned_after_what_was_acknowledged() -> None:
    snapshotter = Snapshotter(100, SNAPSHOTS)
    snapshotter.recovered(0, Recovery(0, epoch=3, chained_claim=41, checkpoints_claim=7))
    snapshotter.wrote(0, 79)
    snapshotter.acknowledged({(CHAINED, 0): (42, 45), (CHECKPOINTS, 0): (8, 9)})
    assert snapshotter.due() == []  # 79 records, in 4 messages
    snapshotter.wrote(0, 21)
    snapshotter.wrote(1, 500)  # a partition not owned
    snapshotter.acknowledged({(CHAINED, 0): (46, 46), ("events", 0): (0, 500)})
    assert snapshotter.due() == [0]  # 100 records

    sequencer = _sequencer()
    _run(sequencer, _events(20, tenants=2))
    (value,) = snapshotter.take(0, sequencer, None, epoch=3)
    record = SNAPSHOTS.decode(value)
    assert (record["chained_next"], record["checkpoints_next"]) == (47, 10)
    assert (record["records"], record["epoch"]) == (20, 3)
    assert snapshotter.due() == []  # counting starts over
    snapshotter.wrote(0, 99)
    snapshotter.acknowledged({(CHAINED, 0): (47, 240)})
    assert snapshotter.due() == []
    snapshotter.wrote(0)
    assert snapshotter.due() == [0]


def test_nothing_acknowledged_nothing_due_and_zero_means_never() -> None:
    never = Snapshotter(0, SNAPSHOTS)
    never.recovered(1, Recovery(0, epoch=1))
    never.wrote(1, 10_000)
    never.acknowledged({(CHAINED, 1): (0, 10_000)})
    assert never.due() == []
    untracked = Snapshotter(10, SNAPSHOTS)
    untracked.wrote(2, 100)  # a partition not (or no longer) owned
    untracked.acknowledged({(CHAINED, 2): (0, 100)})
    assert untracked.due() == []
    owned = Snapshotter(10, SNAPSHOTS)
    owned.recovered(2, Recovery(0, epoch=1))
    owned.forget(2)
    owned.wrote(2, 100)
    owned.acknowledged({(CHAINED, 2): (0, 100)})
    assert owned.due() == []


def test_records_replayed_by_a_recovery_count_towards_the_next_snapshot() -> None:
    """A worker restarted every few thousand records must still snapshot."""
    snapshotter = Snapshotter(100, SNAPSHOTS)
    position = SnapshotPosition(chained_next=500, checkpoints_next=20, records=450)
    snapshotter.recovered(0, Recovery(90, epoch=4, snapshot=position, chained_claim=590,
                                      checkpoints_claim=30))  # fmt: skip
    snapshotter.wrote(0, 10)
    snapshotter.acknowledged({(CHAINED, 0): (591, 600)})
    assert snapshotter.due() == [0]  # 90 replayed + 10 new since the snapshot at 500
    snapshotter.take(0, _sequencer(), None, epoch=4)
    assert snapshotter.due() == []
    fresh = Snapshotter(100, SNAPSHOTS)
    fresh.recovered(1, Recovery(500_000, epoch=1, chained_claim=500_000, checkpoints_claim=9))
    fresh.wrote(1)
    fresh.acknowledged({(CHAINED, 1): (500_001, 500_001)})
    assert fresh.due() == [1]  # a long history replayed from the start


def test_a_large_state_spaces_its_snapshots_by_its_size() -> None:
    """A snapshot costs time in proportion to its size: the next waits for a record per
    BYTES_PER_RECORD bytes of the last, or for ``every`` records if that is more."""
    snapshotter = Snapshotter(10, SNAPSHOTS)
    snapshotter.recovered(0, Recovery(0, epoch=1))
    sequencer = _sequencer()
    _run(sequencer, _events(400, tenants=40))
    size = sum(map(len, snapshotter.take(0, sequencer, None, epoch=1)))
    wait = size // BYTES_PER_RECORD
    assert wait > 10  # the size decides here, not every
    snapshotter.wrote(0, wait - 1)
    snapshotter.acknowledged({(CHAINED, 0): (0, wait - 1)})
    assert snapshotter.due() == []
    snapshotter.wrote(0)
    assert snapshotter.due() == [0]
    snapshotter.take(0, _sequencer(), None, epoch=1)  # a tiny state: every decides again
    snapshotter.wrote(0, 10)
    assert snapshotter.due() == [0]


def test_the_snapshot_a_recovery_loaded_spaces_the_next_by_its_size() -> None:
    """After a restart the next snapshot waits as long as if this worker had taken the one
    it loaded; a recovery without a snapshot leaves ``every`` alone to decide."""
    snapshotter = Snapshotter(10, SNAPSHOTS)
    position = SnapshotPosition(chained_next=0, checkpoints_next=0, records=0,
                                state_bytes=100 * BYTES_PER_RECORD)  # fmt: skip
    snapshotter.recovered(0, Recovery(0, epoch=1, snapshot=position))
    snapshotter.recovered(1, Recovery(0, epoch=1))
    snapshotter.wrote(0, 99)
    snapshotter.wrote(1, 10)
    assert snapshotter.due() == [1]
    snapshotter.wrote(0)
    assert snapshotter.due() == [0, 1]


def test_the_most_overdue_partition_comes_first() -> None:
    """The worker takes one snapshot a step (stream/worker/sequencing.py): the partition
    furthest past its spacing goes first, ties in partition order."""
    snapshotter = Snapshotter(10, SNAPSHOTS)
    for partition in (0, 1, 2, 3):
        snapshotter.recovered(partition, Recovery(0, epoch=1))
    for partition, records in ((0, 12), (1, 30), (2, 9), (3, 12)):
        snapshotter.wrote(partition, records)
    assert snapshotter.due() == [1, 0, 3]
