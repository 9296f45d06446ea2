"""Child processes of a benchmark: own process groups, always stopped, measured via /proc.

Every process a benchmark starts runs in its own process group (``start_new_session``) so
that :func:`stop_group` reaches everything it spawned, and the caller stops it in a
``finally``. CPU time and resident memory are read from ``/proc`` for the whole group, so
helper threads and any grandchildren are counted too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra``, with the repository on PYTHONPATH."""
    environment = {**os.environ, **(extra or {})}
    path = environment.get("PYTHONPATH", "")
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPOSITORY_ROOT), path) if p)
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def start_python(
    arguments: Sequence[str], log_path: Path, extra_environment: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run ``python arguments`` (this interpreter) in a new process group, output to a log."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, *arguments],
            cwd=REPOSITORY_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_environment(extra_environment),
            start_new_session=True,
        )


def stop_group(
    process: subprocess.Popen[bytes], first_signal: int = signal.SIGTERM, grace: float = 20.0
) -> int | None:
    """Signal the process group, wait up to ``grace`` s, then SIGKILL it. Returns the code.

    SIGKILL after the grace period because a Faust worker was seen ignoring SIGTERM.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, first_signal)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    # Threads or grandchildren may outlive the leader; the group must be gone entirely.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode


def wait_for_text(
    log_path: Path, text: str, process: subprocess.Popen[bytes], timeout: float
) -> None:
    """Return once ``text`` appears in the log; raise RuntimeError on exit or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log_path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(
                f"{log_path.name}: exited with {process.returncode}:\n{tail(log_path)}"
            )
        time.sleep(0.1)
    raise RuntimeError(f"{log_path.name}: no {text!r} within {timeout:.0f} s:\n{tail(log_path)}")


def json_result(
    process: subprocess.Popen[bytes], out: Path, log: Path, timeout: float, what: str
) -> dict[str, Any]:
    """Wait up to ``timeout`` s for ``process``; the JSON object it wrote to ``out``.

    Raises RuntimeError with the end of ``log`` when it does not finish in time (it is
    then killed), exits non-zero or wrote nothing; ``what`` names it in the message.
    """
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        stop_group(process, signal.SIGKILL)
        raise RuntimeError(f"{what} did not finish within {timeout:.0f} s:\n{tail(log)}") from None
    if code != 0 or not out.exists():
        raise RuntimeError(f"{what} exited with {code}:\n{tail(log)}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def tail(log_path: Path, size: int = 3000) -> str:
    """The end of a log file, for error messages."""
    try:
        data = log_path.read_bytes()
    except OSError:
        return ""
    return data[-size:].decode(errors="replace")


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system) and resident bytes of a process group at one moment."""

    cpu_seconds: float
    rss_bytes: int


def group_usage(group_id: int) -> Usage:
    """Sum CPU time and RSS over the live processes of process group ``group_id``, CPU
    time including their children that ended (the worker's forked snapshot encoders,
    stream/worker/forked.py: alive, each is counted as a member; once reaped, in its
    parent's cutime)."""
    cpu_ticks = 0
    rss_pages = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        # Fields after "(comm)": state ppid pgrp ... utime(14) stime(15) cutime(16)
        # cstime(17) ... rss(24).
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) != group_id:
            continue
        cpu_ticks += sum(int(field) for field in fields[11:15])
        rss_pages += int(fields[21])
    return Usage(cpu_ticks / _CLOCK_TICKS, rss_pages * _PAGE_SIZE)


def peak_rss_bytes(pid: int) -> int | None:
    """The kernel's high-water mark of resident memory (VmHWM) of ``pid``, if readable."""
    return _status_bytes(pid, "VmHWM:")


def rss_bytes(pid: int) -> int | None:
    """Resident memory (VmRSS) of ``pid`` now, if readable."""
    return _status_bytes(pid, "VmRSS:")


def _status_bytes(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def system_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle, iowait).

    Compared with the CPU of our own processes over a window, it shows how much of the
    machine something else used meanwhile (other jobs on a shared machine skew results).
    """
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return 0.0
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    values = [int(field) for field in fields[:8]]
    return (sum(values[:3]) + sum(values[5:8])) / _CLOCK_TICKS


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]
