"""When a partition's decision ids may stop being kept: after the last copy of any decision
chained so far has been read back. Pure.

The guard publishes each lockout decision into the events topic, and the worker chains it
when it reads it back (docs/PIPELINE.md). A recovery publishes again the decisions it
re-made that the log does not hold; if the first copy was still in flight, the log gets it
first and the second copy later, which must be recognised as a duplicate. So the sequencer
keeps decision ids beyond its id window (``Sequencer(remember_forever=...)``), and kept them
for good: one entry per decision for the worker's lifetime, carried by every snapshot, so an
attacker who triggers lockouts could grow the worker's memory without bound.

Every copy of a decision is published before that decision is first chained: a live
decision once, by the worker that made it; a second copy only by a recovery, and only while
the log does not hold it. All copies of everything chained so far are therefore in the
events partition before the first decision this incarnation publishes after its recovery
(its re-published ones included: they are enqueued first). Once the worker has read past
that decision's offset, no copy of anything it chained can arrive any more, and the kept ids
can go. A later recovery keeps ids again (the sequencer it rebuilds keeps them while it
replays), until the same point comes again.
"""

from __future__ import annotations

from collections.abc import Mapping


class DecisionCopies:
    """Per partition, whether decision ids must still be kept, and until which input offset.

    ``role`` is the publisher role decisions go out under (back into the stream). A
    partition is *keeping* from :meth:`recovered` until :meth:`passed` says the input
    handled went past the first decision this incarnation's publisher had acknowledged
    since then.
    """

    def __init__(self, role: str) -> None:
        self._role = role
        # partition -> None (keeping; no decision acknowledged since the recovery) or the
        # offset of the last decision acknowledged in the first flush that had one.
        self._until: dict[int, int | None] = {}

    def recovered(self, partition: int) -> None:
        """The partition was just recovered (and its re-made decisions enqueued)."""
        self._until[partition] = None

    def acknowledged(self, offsets: Mapping[tuple[str, int], tuple[int, int]]) -> None:
        """Record a flush's ``(role, partition) -> (first, last)`` acknowledged offsets."""
        for (role, partition), (_, last) in offsets.items():
            if role == self._role and partition in self._until and self._until[partition] is None:
                self._until[partition] = last

    def passed(self, partition: int, handled_offset: int) -> bool:
        """Whether ``partition`` was keeping and, with input up to ``handled_offset``
        handled, need not any more (then it stops keeping: True once per recovery)."""
        until = self._until.get(partition)
        if until is None or handled_offset <= until:
            return False
        del self._until[partition]
        return True

    def forget(self, partition: int) -> None:
        """The partition was revoked."""
        self._until.pop(partition, None)
