"""How many checkpoints a worker signs per second for batches closed by their interval.

A batch closes after ``batch_size`` events or ``batch_interval`` seconds (docs/INTEGRITY.md
§5). With many sparse tenants the interval alone means one signed checkpoint per tenant
per interval: at 10 000 tenants and a 250 ms interval nearly one per event, and a
checkpoint (an Ed25519 signature, its note, its record, its row and tiles in the store)
costs more than the event it covers (docs/PERFORMANCE.md). The budget caps those
closings at ``per_second``, oldest batch first; a deferred batch stays open and keeps
growing, so nothing is lost or reordered, only signed later. Full batches are never
deferred (they are bounded by the event rate, a batch per ``batch_size`` events).

A token bucket: ``per_second`` tokens a second, holding at most one second's worth.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from authtrail.errors import InvalidArgumentError


class SigningBudget:
    """Checkpoints that may still be signed now; ``per_second`` 0: no limit."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second < 0:
            raise InvalidArgumentError(f"per_second must be >= 0, got {per_second}")
        self._rate = per_second
        self._clock = clock
        self._tokens = per_second
        self._at = clock()

    def available(self) -> int | None:
        """Whole checkpoints that may be signed now (0 or more); None: no limit."""
        if not self._rate:
            return None
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        return max(0, int(self._tokens))

    def spend(self, count: int) -> None:
        """Count ``count`` signed checkpoints (it may go below zero: see the module docs)."""
        if self._rate:
            self._tokens -= count
