"""The broker-less memory benchmark's parts (benchmarks/worker_memory.py)."""

from __future__ import annotations

import asyncio

from authtrail.stream.detection.lockout_policy import PolicySet
from benchmarks.worker_memory import _Echo, _slope, windows_minutes


def test_slope_is_least_squares_mb_per_minute() -> None:
    assert _slope([(11, 100.0), (12, 102.0), (13, 104.0)]) == 2.0
    assert _slope([(11, 100.0), (12, 101.0), (13, 100.0), (14, 101.0)]) == 0.2
    assert _slope([(11, 100.0), (12, 90.0)]) is None  # too few to say


def test_windows_are_the_spray_window_plus_the_lateness() -> None:
    assert windows_minutes(PolicySet()) == (600 + 5) / 60


def test_decisions_land_at_the_end_of_their_partition_and_come_back_first() -> None:
    echo = _Echo()
    echo.now = 7
    first = echo.records([(0, 99, b"a"), (0, 99, b"b"), (1, 99, b"c")])
    assert [(r.partition, r.offset, r.value) for r in first] == [(0, 0, b"a"), (0, 1, b"b"),
                                                                 (1, 0, b"c")]  # fmt: skip
    echo.publish("events", b"t", b"decision-1", 0)
    echo.publish("lockouts", b"t", b"decision-1", 0)  # only the events topic comes back
    echo.publish("events", b"t", b"decision-2", 0)
    assert echo.take_acknowledged() == {}  # not before the flush
    asyncio.run(echo.flush())
    assert echo.take_acknowledged() == {("events", 0): (2, 3)}
    assert echo.take_acknowledged() == {}
    second = echo.records([(0, 99, b"d")])
    assert [(r.partition, r.offset, r.value, r.timestamp_micros) for r in second] == [
        (0, 2, b"decision-1", 7), (0, 3, b"decision-2", 7), (0, 4, b"d", 7),
    ]  # fmt: skip
    assert echo.read_back == 2
