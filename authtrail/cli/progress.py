"""A progress bar for long CLI work, on stderr, only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_MIN_INTERVAL = 0.1


class Progress:
    """``update(done, total)`` redraws one line; ``close()`` ends it. Silent off a TTY."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None):
        self._label = label
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._started = time.monotonic()
        self._drawn = 0.0
        self._shown = False

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self._enabled or (now - self._drawn < _MIN_INTERVAL and done < total):
            return
        self._drawn, self._shown = now, True
        filled = _WIDTH * done // total if total else _WIDTH
        bar = "#" * filled + "." * (_WIDTH - filled)
        elapsed = now - self._started
        self._stream.write(f"\r\x1b[K{self._label} [{bar}] {done}/{total} {elapsed:.1f}s")
        self._stream.flush()

    def close(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()
