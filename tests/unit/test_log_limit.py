"""Rate-limited warnings (stream/worker/log_limit.py)."""

import logging

import pytest

from authtrail.stream.worker.log_limit import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_per_kind_per_interval_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = RateLimitedLog(logging.getLogger("t"), burst=2, interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t"):
        for n in range(5):
            log.warning("undecodable", "bad %d", n)
        log.warning("oversized", "big %d", 0)
        clock.now = 61
        log.warning("undecodable", "bad %d", 5)
    assert [r.getMessage() for r in caplog.records] == [
        "bad 0",
        "bad 1",
        "big 0",
        "3 more undecodable warnings not logged in the last 61 s",
        "bad 5",
    ]
