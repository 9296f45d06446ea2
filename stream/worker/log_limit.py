"""Log lines that cannot flood the log: a few per kind per interval, then a count.

A flood of bad input (issue: "the worker keeps running and its throughput for good events
holds") made the worker spend ~22 % of its CPU writing one warning per rejected message,
~170 bytes each. Every rejection is stored in full anyway (dead-letter topic and the
``rejected`` table), so the log only needs to say that rejections happen, and how many.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    started: float
    logged: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """Logs at most ``burst`` warnings of each kind per ``interval`` seconds; when a kind
    logs again after an interval, one line says how many of it were left out."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger, self._burst, self._interval, self._clock = logger, burst, interval, clock
        self._windows: dict[str, _Window] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless ``kind`` already logged ``burst`` times lately."""
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or now - window.started >= self._interval:
            if window is not None and window.suppressed:
                self._logger.warning(
                    "%d more %s warnings not logged in the last %.0f s",
                    window.suppressed, kind, now - window.started,
                )  # fmt: skip
            window = self._windows[kind] = _Window(now)
        if window.logged < self._burst:
            window.logged += 1
            self._logger.warning(message, *args)
        else:
            window.suppressed += 1
