"""Event-time order for detectors: put one key's events back in order within a lateness bound.

Events reach a detector in arrival order, which is not event-time order: producers batch,
retry, and sit behind different networks. Keycloak's brute-force rules are not
commutative (a "quick login" depends on the gap to the previous failure), so a detector
must see each account's events in event-time order to decide what the source decided.
:class:`ReorderBuffer` holds them until nothing earlier can still arrive, within
``allowed_lateness``; anything older is refused as late rather than applied out of order.

Pure: no clock, no I/O; its state is JSON-compatible (:meth:`ReorderBuffer.to_state`).
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["ACCEPTED", "DUPLICATE", "LATE", "EventOrder", "ReorderBuffer", "new_order",
           "order_from_state"]  # fmt: skip

ACCEPTED, LATE, DUPLICATE = "accepted", "late", "duplicate"


class ReorderBuffer:
    """One key's events, released in (occurred_at, event_id) order once they cannot be
    overtaken any more.

    ``cutoff = max(watermark, floor) - lateness``; ``watermark`` is the newest event time
    offered, ``floor`` a promise from the caller that event time has reached it. An event
    is *late* if older than the cutoff or ordered before an event already released; it is
    a *duplicate* if its id is among the events at or after the cutoff. Released: pending
    events at or before the cutoff.
    """

    __slots__ = ("_expiry", "frontier", "pending", "recent_ids", "watermark")

    def __init__(self) -> None:
        self.watermark: int | None = None
        self.frontier: tuple[int, str] | None = None
        # A deque: a release takes its oldest events without moving the rest (a busy key
        # holds the events of its whole lateness window).
        self.pending: deque[tuple[int, str, dict[str, Any]]] = deque()
        self.recent_ids: dict[str, int] = {}
        # recent_ids as a heap of (occurred_at, event_id): its top tells in O(1) whether a
        # cutoff passed any id, and forgetting those costs O(log n) each, not a pass over
        # all of them (one busy account, or an attacker's flood of failures against it,
        # holds thousands within the lateness).
        self._expiry: list[tuple[int, str]] = []

    def cutoff(self, lateness: int, floor: int | None) -> int | None:
        mark = self.watermark
        if floor is not None and (mark is None or floor > mark):
            mark = floor
        return None if mark is None else mark - lateness

    def offer(
        self,
        occurred_at: int,
        event_id: str,
        payload: dict[str, Any],
        lateness: int,
        floor: int | None,
    ) -> str:
        """Queue an event; return ACCEPTED, LATE or DUPLICATE (the latter two change nothing)."""
        # cutoff() inlined, and no slices of tuples: asked for every event of a detector.
        recent_ids = self.recent_ids
        if event_id in recent_ids:
            return DUPLICATE
        mark = self.watermark
        if floor is not None and (mark is None or floor > mark):
            mark = floor
        if mark is not None and occurred_at < mark - lateness:
            return LATE
        frontier = self.frontier
        if frontier is not None and (occurred_at, event_id) < frontier:
            return LATE
        if self.watermark is None or occurred_at > self.watermark:
            self.watermark = occurred_at
        pending, item = self.pending, (occurred_at, event_id, payload)
        if not pending or (
            (last := pending[-1])[0] < occurred_at
            or (last[0] == occurred_at and last[1] <= event_id)
        ):
            pending.append(item)  # in order, as most are: no search
        else:
            bisect.insort(pending, item, key=lambda entry: entry[:2])
        recent_ids[event_id] = occurred_at
        heapq.heappush(self._expiry, (occurred_at, event_id))
        return ACCEPTED

    def release(self, lateness: int, floor: int | None) -> list[tuple[int, str, dict[str, Any]]]:
        """Remove and return, oldest first, the pending events no later event may precede."""
        # cutoff() and _forget_before() inlined: asked for every buffered key at every
        # time step and on every event, most calls release and forget nothing.
        mark = self.watermark
        if floor is not None and (mark is None or floor > mark):
            mark = floor
        if mark is None:
            return []
        cutoff = mark - lateness
        pending, expiry = self.pending, self._expiry
        if not pending or pending[0][0] > cutoff:
            if expiry and expiry[0][0] < cutoff:
                self._forget_before(cutoff)
            return []
        released = []
        while pending and pending[0][0] <= cutoff:
            released.append(pending.popleft())
        self.frontier = released[-1][:2]
        if expiry and expiry[0][0] < cutoff:
            self._forget_before(cutoff)
        return released

    def oldest(self) -> int | None:
        """The oldest pending event's time; None when nothing is pending."""
        return self.pending[0][0] if self.pending else None

    def due(self) -> int | None:
        """The smallest cutoff at which :meth:`release` would change anything: the oldest
        pending event's time, or one past the oldest remembered id's (then forgotten);
        None when it never would. A caller may skip a release whose cutoff is below it,
        provided the watermark did not move since the last release (it moves only by
        :meth:`offer`, which a release follows)."""
        pending = self.pending[0][0] if self.pending else None
        oldest = self._expiry[0][0] if self._expiry else None
        if oldest is None:
            return pending
        return oldest + 1 if pending is None or oldest + 1 < pending else pending

    def forget(self, lateness: int, floor: int | None) -> None:
        """Drop remembered ids older than the cutoff: such an event is refused as late."""
        cutoff = self.cutoff(lateness, floor)
        if cutoff is not None:
            self._forget_before(cutoff)

    def _forget_before(self, cutoff: int) -> None:
        expiry, recent_ids = self._expiry, self.recent_ids
        while expiry and expiry[0][0] < cutoff:
            del recent_ids[heapq.heappop(expiry)[1]]

    def to_state(self) -> dict[str, Any]:
        return {
            "watermark": self.watermark,
            "frontier": list(self.frontier) if self.frontier else None,
            "pending": [list(item) for item in self.pending],
            "recent_ids": dict(self.recent_ids),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ReorderBuffer:
        buffer = cls()
        buffer.watermark = state["watermark"]
        frontier = state["frontier"]
        buffer.frontier = (frontier[0], frontier[1]) if frontier else None
        buffer.pending = deque((item[0], item[1], dict(item[2])) for item in state["pending"])
        buffer.recent_ids = dict(state["recent_ids"])
        buffer._expiry = [(at, event_id) for event_id, at in buffer.recent_ids.items()]
        heapq.heapify(buffer._expiry)
        return buffer


class EventOrder(Protocol):
    """What the detectors use of a reorder buffer: :class:`ReorderBuffer`, or the same in C."""

    @property
    def watermark(self) -> int | None: ...
    @property
    def recent_ids(self) -> dict[str, int]: ...
    def offer(
        self, occurred_at: int, event_id: str, payload: dict[str, Any], lateness: int,
        floor: int | None,
    ) -> str: ...  # fmt: skip
    def release(
        self, lateness: int, floor: int | None
    ) -> list[tuple[int, str, dict[str, Any]]]: ...
    def oldest(self) -> int | None: ...
    def due(self) -> int | None: ...
    def forget(self, lateness: int, floor: int | None) -> None: ...
    def to_state(self) -> dict[str, Any]: ...


try:  # the same buffer in C (authtrail/_speedups.c), method for method
    from authtrail._speedups import ReorderBuffer as _CReorderBuffer

    _NativeReorderBuffer: type[_CReorderBuffer] | None = _CReorderBuffer
except ImportError:  # pragma: no cover - a build without a C compiler
    _NativeReorderBuffer = None


def new_order() -> EventOrder:
    """An empty reorder buffer: in C when built (a third of the memory of an idle one, and
    ~0.5-2 µs less of the guard's CPU per event, docs/PERFORMANCE.md), else
    :class:`ReorderBuffer`."""
    return _NativeReorderBuffer() if _NativeReorderBuffer is not None else ReorderBuffer()


def order_from_state(state: Mapping[str, Any]) -> EventOrder:
    """:meth:`ReorderBuffer.from_state` into the buffer :func:`new_order` makes."""
    if _NativeReorderBuffer is None:
        return ReorderBuffer.from_state(state)
    frontier = state["frontier"]
    buffer = _NativeReorderBuffer()
    buffer._load(
        state["watermark"],
        (frontier[0], frontier[1]) if frontier else None,
        [(item[0], item[1], dict(item[2])) for item in state["pending"]],
        dict(state["recent_ids"]),
    )
    return buffer
