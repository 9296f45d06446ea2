"""Work out a value in a forked copy of the process, while this one goes on.

The worker's snapshots (stream/worker/snapshotter.py) encode a partition's whole state:
~0.1 µs a byte, over a second for the ~10 MB a busy partition holds. Done on the event
loop, that is a second in which no event is sequenced, the largest part of the p99
latency at half load (docs/PERFORMANCE.md). A fork is a consistent copy of the state at
the moment it is taken (the kernel copies a page only when one side writes it) for
~15 ms of the loop's time at 1 GB resident, so the encoding runs beside the loop, on
another core, and the state at the snapshot's position is exactly what it encodes.

The child runs ``compute`` and nothing else: it touches no lock another thread may have
held at the fork (no logging, no buffered stdio, no Kafka client), writes the parts it
returns to a pipe, and leaves with ``os._exit``. The parent reads them in a thread (the
read releases the GIL). A part list that is not complete (the child failed or was
killed) raises :class:`ChildFailed`; nothing is retried here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import traceback
from collections.abc import Callable
from typing import NoReturn

_LENGTH_BYTES = 8
_END = (1 << 64) - 1  # a length no part has: the child finished every part


class ChildFailed(Exception):
    """The forked child did not deliver its whole result."""


def can_fork() -> bool:
    """Whether this platform forks (not Windows)."""
    return hasattr(os, "fork")


class ForkedJob:
    """``compute()`` (a list of byte strings) worked out in a child forked at construction.

    Requires a platform that forks (:func:`can_fork`). Await :meth:`result` exactly once;
    :meth:`kill` stops the child (the worker stopping). Raises :class:`ChildFailed` when
    no child can be started (no memory or process left).
    """

    def __init__(self, compute: Callable[[], list[bytes]]) -> None:
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            raise ChildFailed(f"cannot fork: {exc}") from exc
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            _run_child(compute, write_fd)
        os.close(write_fd)
        self.pid, self._read_fd, self._reaped = pid, read_fd, False

    async def result(self) -> list[bytes]:
        """The parts ``compute`` returned. Raises :class:`ChildFailed` if the child did
        not deliver them all."""
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(None, _read_to_end, self._read_fd)
        except BaseException:
            self.kill()
            raise
        # The pipe ends when the child's last descriptor closes: at its exit, so waiting
        # for it is brief (and only this thread ever reaps it: no pid is signalled after).
        status = self._reap()
        parts = _parse(data)
        if parts is None:
            raise ChildFailed(f"snapshot child {self.pid} delivered {len(data)} bytes, "
                              f"not all its parts ({_describe(status)})")  # fmt: skip
        return parts

    def kill(self) -> None:
        """Stop the child if it still runs, and reap it."""
        if self._reaped:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> int | None:
        if self._reaped:
            return None
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:  # reaped by someone else: the parts speak for it
            status = None
        self._reaped = True
        return status


def _run_child(compute: Callable[[], list[bytes]], write_fd: int) -> NoReturn:
    code = 1
    try:
        _forget_the_parents_signals()
        _prefer_as_oom_victim()
        gc.disable()  # a collection would touch (and so copy) every page of the state
        parts = compute()
        frames = [item for part in parts for item in (len(part).to_bytes(8, "big"), part)]
        _write_all(write_fd, b"".join([*frames, _END.to_bytes(_LENGTH_BYTES, "big")]))
        code = 0
    except BaseException:  # reported through stderr (unbuffered: no lock) and the exit code
        with contextlib.suppress(BaseException):
            os.write(2, f"snapshot child {os.getpid()} failed:\n{traceback.format_exc()}".encode())
    finally:
        os._exit(code)


def _forget_the_parents_signals() -> None:
    """A signal sent to the child ends it, as for any process: the handlers it inherited
    are the worker's, and the wakeup descriptor they write to is the worker's event loop,
    which would take the child's SIGTERM for its own."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(number, signal.SIG_DFL)


def _prefer_as_oom_victim() -> None:
    """Out of memory, the kernel kills the process it scores highest, by size: the worker
    rather than its copy. Raising the child's score (allowed without privilege) makes the
    child go instead, which costs one snapshot, not the partition's sequencing."""
    with contextlib.suppress(OSError):
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, b"1000")
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.close(fd)


def _read_to_end(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _parse(data: bytes) -> list[bytes] | None:
    """The parts framed in ``data``, or None unless they end with the end mark."""
    parts: list[bytes] = []
    at = 0
    while at + _LENGTH_BYTES <= len(data):
        length = int.from_bytes(data[at : at + _LENGTH_BYTES], "big")
        at += _LENGTH_BYTES
        if length == _END:
            return parts if at == len(data) else None
        if at + length > len(data):
            return None
        parts.append(data[at : at + length])
        at += length
    return None


def _describe(status: int | None) -> str:
    if status is None:
        return "exit status unknown"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
