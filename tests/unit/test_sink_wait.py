"""How long the sink's consume waits (sinks/sink.py): never past the buffer's batch interval."""

from __future__ import annotations

import time
from types import SimpleNamespace

from authtrail.sinks.sink import Sink


def _wait(first_buffered: float | None, batch_seconds: float = 0.25) -> float:
    return Sink._wait(SimpleNamespace(_first_buffered=first_buffered, _batch_seconds=batch_seconds))  # type: ignore[arg-type]


def test_a_consume_waits_at_most_until_what_is_buffered_is_due() -> None:
    assert _wait(None) == 0.2  # nothing buffered: the longest wait
    now = time.monotonic()
    assert 0.15 < _wait(now) <= 0.2  # 0.25 s left, capped
    assert 0.0 < _wait(now - 0.2) <= 0.05  # what is left of the interval
    assert _wait(now - 1.0) == 0.0  # overdue: do not wait at all
    assert 0.0 < _wait(now, batch_seconds=0.05) <= 0.05  # a short interval, not 0.2 s
