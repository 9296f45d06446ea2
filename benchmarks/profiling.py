"""Sampling profiles of running pipeline processes with py-spy (when it is installed).

py-spy attaches to a live process without changing it (``--nonblocking``), so the worker
and the store host are profiled exactly as deployed. Its collapsed-stack output is
summarised into the functions that take the most time: *self* (samples whose innermost
frame is the function) and *inclusive* (samples with the function anywhere on the stack).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter or on PATH, or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_recording(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Record ``pid`` for ``seconds`` into ``out`` (collapsed stacks); None without py-spy."""
    executable = py_spy()
    if executable is None:
        return None
    log = out.with_suffix(".log").open("wb")
    return subprocess.Popen(
        [
            executable,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "100",
            "--format",
            "raw",
            "--nonblocking",
            "--threads",
            "--output",
            str(out),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _frame_name(frame: str) -> str:
    """``function (path/to/file.py:123)`` → ``function (file.py)``; line numbers vary."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if parts else file
    return f"{name} ({short})"


def summarise(collapsed: Path, top: int = 30) -> dict[str, Any]:
    """Top functions by self and inclusive share of samples in a collapsed-stack file."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    idle = total = 0
    try:
        lines = collapsed.read_text(errors="replace").splitlines()
    except OSError:
        return {"samples": 0, "error": f"no profile at {collapsed}"}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        names = [_frame_name(frame) for frame in frames[1:]] or ["(no frames)"]
        self_counts[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
        if any(marker in names[-1] for marker in ("select (selectors", "poll (", "wait (")):
            idle += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "share": round(count / total, 4)}
            for name, count in counter.most_common(top)
        ]

    return {
        "samples": total,
        "idle_share": round(idle / total, 4) if total else None,
        "threads": share(threads),
        "self": share(self_counts),
        "inclusive": share(inclusive),
    }
