"""When the worker snapshots a partition, and where in Kafka the snapshot stands.

A snapshot (docs/PIPELINE.md § 6) must describe exactly the state after the chained
records and checkpoints this worker has had *acknowledged*: the worker takes one only
right after a flush, inside its lock, and this class turns the offsets the publisher
reports as acknowledged into the snapshot's position. It counts chained *records*, which
the worker reports as it writes them (a chained batch holds many per offset); counting
starts over after each snapshot.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from authtrail.schemas.codec import Codec
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.detection.guard import Guard
from authtrail.stream.worker.recovery import Recovery, SnapshotPosition, snapshot_messages

CHAINED, CHECKPOINTS = "chained", "checkpoints"  # the publisher roles tracked

#: A snapshot costs time in proportion to its size (~170 ns a compressed byte measured,
#: docs/PERFORMANCE.md), and the guard's share grows with traffic: the accounts it tracks
#: and the events it holds for the allowed lateness. So the next snapshot also waits for
#: one chained record per this many bytes of the last: its cost per record stays ~3 µs
#: however large the state, and a recovery replays records in proportion to the state, as
#: it spends loading it anyway.
BYTES_PER_RECORD = 16


@dataclass
class _Partition:
    chained_next: int  # after the last record acknowledged (or the recovery's claim)
    checkpoints_next: int
    written: int = 0  # chained records since the last snapshot (replayed ones included)
    last_bytes: int = 0  # the size of the last snapshot this worker took
    in_progress: bool = False  # begun, not yet finished


class Snapshotter:
    """Tracks acknowledged offsets per partition; says when ``every`` chained records,
    and at least one per :data:`BYTES_PER_RECORD` bytes of the partition's last snapshot,
    were written since it (``every`` 0: never)."""

    def __init__(self, every: int, snapshot_codec: Codec | None) -> None:
        self._every = every if snapshot_codec is not None else 0
        self._codec = snapshot_codec
        self._partitions: dict[int, _Partition] = {}

    def recovered(self, partition: int, recovery: Recovery) -> None:
        """Start tracking a partition just recovered: its state covers what precedes the
        recovery's claims. Records it replayed count as written since the last snapshot:
        a worker restarted more often than every ``every`` records still snapshots. The
        snapshot it loaded spaces the next one as one this worker took would."""
        loaded = recovery.snapshot.state_bytes if recovery.snapshot is not None else 0
        self._partitions[partition] = _Partition(
            recovery.chained_claim + 1, recovery.checkpoints_claim + 1, recovery.replayed,
            loaded,
        )  # fmt: skip

    def forget(self, partition: int) -> None:
        self._partitions.pop(partition, None)

    def wrote(self, partition: int, records: int = 1) -> None:
        """Count ``records`` chained records (events or rejections) written to ``partition``;
        they count towards :meth:`due` once a flush acknowledged them."""
        tracked = self._partitions.get(partition)
        if tracked is not None:
            tracked.written += records

    def acknowledged(self, offsets: Mapping[tuple[str, int], tuple[int, int]]) -> None:
        """Record ``(role, partition) -> (first, last)`` offsets acknowledged by a flush."""
        for (role, partition), (_, last) in offsets.items():
            tracked = self._partitions.get(partition)
            if tracked is None:
                continue
            if role == CHAINED:
                tracked.chained_next = max(tracked.chained_next, last + 1)
            elif role == CHECKPOINTS:
                tracked.checkpoints_next = max(tracked.checkpoints_next, last + 1)

    def due(self) -> list[int]:
        """Partitions with enough chained records since their last snapshot, the most
        overdue (records written ÷ records needed) first."""
        if not self._every:
            return []
        overdue = {}
        for partition, tracked in self._partitions.items():
            needed = max(self._every, tracked.last_bytes // BYTES_PER_RECORD)
            if tracked.written >= needed and not tracked.in_progress:
                overdue[partition] = tracked.written / needed
        return sorted(overdue, key=lambda partition: (-overdue[partition], partition))

    def begin(
        self, partition: int, sequencer: Sequencer, guard: Guard | None, epoch: int
    ) -> Callable[[], list[bytes]]:
        """Begin a snapshot of ``partition`` now: return what encodes its messages, to be
        called before the state changes (now, or in a copy of the process forked now:
        stream/worker/forked.py). Counting starts over; the partition is not due again
        until :meth:`finished`.

        Requires every output published for the partition to be acknowledged and
        reported through :meth:`acknowledged`.
        """
        tracked = self._partitions[partition]
        assert self._codec is not None
        position = SnapshotPosition(
            chained_next=tracked.chained_next,
            checkpoints_next=tracked.checkpoints_next,
            records=sum(log.head.seq for log in sequencer.tenants.values()),
        )
        tracked.written, tracked.in_progress = 0, True
        return functools.partial(
            snapshot_messages, sequencer, guard, partition=partition, epoch=epoch,
            position=position, snapshot_codec=self._codec,
        )  # fmt: skip

    def finished(self, partition: int, messages: list[bytes] | None) -> None:
        """The snapshot begun for ``partition`` was published as ``messages``, or failed
        (None: the next one waits as long as after a success)."""
        tracked = self._partitions.get(partition)
        if tracked is None:  # forgotten meanwhile
            return
        tracked.in_progress = False
        if messages is not None:
            tracked.last_bytes = sum(map(len, messages))

    def take(
        self, partition: int, sequencer: Sequencer, guard: Guard | None, epoch: int
    ) -> list[bytes]:
        """:meth:`begin` and :meth:`finished` at once: the snapshot messages of
        ``partition`` now, encoded on the caller's thread."""
        messages = self.begin(partition, sequencer, guard, epoch)()
        self.finished(partition, messages)
        return messages
