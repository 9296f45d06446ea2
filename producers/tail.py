"""Follow a growing log file like ``tail -F``, by polling: rotation and truncation included.

Polling (``os.stat`` every ``poll_interval`` seconds at end of file) rather than inotify:
it works on every filesystem, including network mounts and container volumes, and needs
nothing beyond the standard library.

* **Rotation** (the path now names another file: logrotate's rename + create): the old
  file is read to its end, then the new one from its start. Rotation is recognised by
  the (device, inode) pair, so a new file with the same name is never mistaken for the
  old one.
* **Truncation** in place (logrotate's ``copytruncate``): when the file becomes shorter
  than the position read, reading restarts at its start. A file truncated and regrown
  past the old position between two polls cannot be told apart from one that grew;
  ``tail -F`` has the same blind spot. Event ids of re-read lines are content-derived
  (:mod:`authtrail.producers.sshd`), so a re-read is deduplicated downstream.
* Only whole lines are yielded: a line still being written waits for its newline (at a
  rotation the old file's unterminated last line is yielded as it is).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["follow"]


def follow(
    path: str | Path,
    *,
    poll_interval: float = 1.0,
    from_start: bool = True,
    stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Yield the lines of ``path`` (without line endings) as they are written.

    ``from_start``: begin with the lines already in the file (else at its current end).
    ``stop`` is asked at every end of file; the generator returns once it says True. A
    missing file is waited for. Bytes that are not UTF-8 are replaced, never raised.
    """
    path = Path(path)
    handle: BinaryIO | None = None
    identity: tuple[int, int] | None = None
    partial = b""
    first_open = True
    try:
        while True:
            if handle is None:
                try:
                    handle = path.open("rb")
                except FileNotFoundError:
                    if stop is not None and stop():
                        return
                    sleep(poll_interval)
                    continue
                status = os.fstat(handle.fileno())
                identity = (status.st_dev, status.st_ino)
                if first_open and not from_start:
                    handle.seek(0, os.SEEK_END)
                first_open = False
            chunk = handle.readline()
            if chunk.endswith(b"\n"):
                yield _text(partial + chunk)
                partial = b""
                continue
            partial += chunk  # end of file, perhaps inside a line still being written
            if stop is not None and stop():
                return
            try:
                status = os.stat(path)
                current: tuple[int, int] | None = (status.st_dev, status.st_ino)
            except FileNotFoundError:
                current = None
            if current is not None and current != identity:
                # Rotated. The writer may have appended to the old file after our last
                # read and before it switched: drain it; its unterminated tail is final.
                for line in handle.read().splitlines(keepends=True):
                    partial += line
                    if partial.endswith(b"\n"):
                        yield _text(partial)
                        partial = b""
                if partial:
                    yield _text(partial)
                    partial = b""
                handle.close()
                handle = None
                continue
            if current is not None and status.st_size < handle.tell():
                handle.seek(0)  # truncated in place (copytruncate)
                partial = b""
                continue
            sleep(poll_interval)
    finally:
        if handle is not None:
            handle.close()


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").rstrip("\r\n")
