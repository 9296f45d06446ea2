"""A bounded, crash-safe, append-only on-disk queue: the producer's spool for broker outages.

Layout of a spool directory::

    00000000000000000000.seg   segment files, named by the index of their first record
    00000000000000001234.seg   (records are numbered 0, 1, 2, ... for the spool's life)
    cursor                     index of the first record not yet acknowledged
    lock                       flock'ed by the one process using the spool

Records are framed and checked by :mod:`authtrail.producers.sdk.spool_format` (length + CRC-32). On
open the spool scans every segment: a torn tail of the newest segment (an append cut short by a
crash) is truncated and logged; any other damage raises :class:`FormatError` — a record is
never skipped silently. The cursor file is replaced atomically (write a temporary file,
fsync, rename, fsync the directory), so a crash leaves either the old or the new cursor.
It is saved by :meth:`Spool.commit`, before the segments it covers are deleted; a crash
between an acknowledgement and the next commit means those records are delivered again.

Life of a record: :meth:`Spool.append` writes it (durable per ``sync_interval_ms``),
:meth:`Spool.read` hands it out once, in append order, and :meth:`Spool.acknowledge`
releases it and every record before it. Until then it counts against ``max_events`` and
``max_bytes``; a full spool makes :meth:`Spool.append` wait or raise
:class:`ProducerQueueFullError`, never drop.

This is an adapter (file I/O). Every method is safe to call from several threads.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from authtrail.errors import (
    ConfigurationError,
    FormatError,
    InvalidArgumentError,
    ProducerQueueFullError,
)
from authtrail.producers.sdk.spool_directory import make_private_directory
from authtrail.producers.sdk.spool_format import (
    FRAME_HEADER_SIZE,
    SEGMENT_MAGIC,
    SpoolRecord,
    decode_cursor,
    decode_frame,
    encode_cursor,
    frame_record,
    frame_size_at,
    scan_segment,
)

__all__ = ["Spool", "SpoolStatus", "SpooledRecord"]

_LOG = logging.getLogger(__name__)

_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
_READ_CHUNK = 256 * 1024


@dataclass(frozen=True)
class SpooledRecord:
    """A record handed out by :meth:`Spool.read`: its ``index`` in the spool, the
    ``record`` and its framed ``size`` on disk."""

    index: int
    record: SpoolRecord
    size: int


@dataclass(frozen=True)
class SpoolStatus:
    """What a spool holds that is not acknowledged yet.

    ``events`` and ``bytes`` (framed, on disk) count every unacknowledged record,
    ``unread`` those not yet handed out by :meth:`Spool.read`;
    ``oldest_spooled_at_us`` is when the oldest of them was appended (None when empty).
    """

    directory: Path
    events: int
    bytes: int
    unread: int
    oldest_spooled_at_us: int | None


@dataclass
class _Segment:
    start: int  # index of its first record
    path: Path
    count: int
    size: int  # bytes in the file, magic included


@dataclass(frozen=True)
class _Position:
    """Where record ``index`` starts: in the segment starting at ``segment``, at ``offset``."""

    segment: int
    offset: int
    index: int


class Spool:
    """An append-only queue of :class:`SpoolRecord` in ``directory``, bounded and durable.

    Args:
        directory: created (mode 0700) if missing; an existing one must be a directory
            of this user that group and others cannot use. One process uses it at a time.
        max_bytes: most framed bytes the unacknowledged records may take; at least 1.
        max_events: most unacknowledged records; at least 1.
        segment_bytes: a segment is closed and a new one started when the next record
            would take it past this size. Disk use is at most ``max_bytes`` plus one
            segment of acknowledged records awaiting :meth:`commit`.
        sync_interval_ms: 0 fsyncs every append before it returns (survives a machine
            crash); N > 0 fsyncs at most every N ms, in :meth:`append`,
            :meth:`sync_if_due` or :meth:`close` (a machine crash may lose the last N ms of
            appends; a process crash loses nothing either way).

    Raises:
        InvalidArgumentError: a bound or interval out of range.
        ConfigurationError: another process holds the spool, or the directory is unusable
            or not private (another owner, group/other permissions, a symbolic link).
        FormatError: a segment or the cursor file is damaged (see module docs).
    """

    def __init__(
        self,
        directory: str | Path,
        max_bytes: int,
        max_events: int,
        *,
        segment_bytes: int = 16 * 1024 * 1024,
        sync_interval_ms: int = 0,
    ) -> None:
        for name, value, least in (
            ("max_bytes", max_bytes, 1),
            ("max_events", max_events, 1),
            ("segment_bytes", segment_bytes, len(SEGMENT_MAGIC) + FRAME_HEADER_SIZE + 1),
            ("sync_interval_ms", sync_interval_ms, 0),
        ):
            if not isinstance(value, int) or value < least:
                raise InvalidArgumentError(f"{name} must be an int >= {least}, got {value!r}")
        self._directory = Path(directory)
        self._max_bytes = max_bytes
        self._max_events = max_events
        self._segment_bytes = segment_bytes
        self._sync_interval = sync_interval_ms / 1000
        self._changed = threading.Condition(threading.Lock())
        self._segments: dict[int, _Segment] = {}  # by start index, oldest first
        self._write_fd: int | None = None
        self._reader: tuple[int, int] | None = None  # (segment start, read-only fd)
        self._dirty = False
        self._last_sync = time.monotonic()
        self._window: collections.deque[tuple[int, int, int]] = collections.deque()
        self._closed = False
        make_private_directory(self._directory)
        try:
            self._lock_fd = os.open(self._directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigurationError(f"spool directory {self._directory} unusable: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise ConfigurationError(
                f"spool {self._directory} is in use by another process (it holds the lock)"
            ) from None
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening ------------------------------------------------------------------------

    def _recover(self) -> None:
        (self._directory / "cursor.tmp").unlink(missing_ok=True)  # a save cut short
        self._cursor = self._saved_cursor = self._load_cursor()
        starts = sorted(
            int(match.group(1))
            for match in map(_SEGMENT_NAME.match, os.listdir(self._directory))
            if match
        )
        pending_bytes = 0
        self._end = self._cursor
        for number, start in enumerate(starts):
            path = self._directory / f"{start:020d}.seg"
            final = number == len(starts) - 1
            scan = scan_segment(path.read_bytes(), final=final, name=str(path))
            if scan.torn_size:
                _LOG.warning(
                    "spool %s: cut a %d-byte torn tail off %s (an append interrupted by a crash)",
                    self._directory, scan.torn_size, path.name,
                )  # fmt: skip
                with open(path, "r+b") as segment_file:
                    segment_file.truncate(scan.valid_size)
                    os.fsync(segment_file.fileno())
            if self._segments and start != self._end:
                raise FormatError(
                    f"spool {self._directory}: records {self._end}..{start - 1} are missing "
                    f"(no segment holds them; next is {path.name})"
                )
            if not self._segments and start > self._cursor:
                raise FormatError(
                    f"spool {self._directory}: records {self._cursor}..{start - 1} are not "
                    f"acknowledged but no segment holds them (oldest is {path.name})"
                )
            end = start + scan.count
            # All acknowledged, or an empty newest segment (a crash right after creating
            # it, perhaps before its magic was written): the next append starts afresh.
            if end <= self._cursor or scan.count == 0:
                path.unlink()
                continue
            skip = self._cursor - start if not self._segments else 0
            if not self._segments:
                self._read = _Position(start, scan.record_start(skip), self._cursor)
            pending_bytes += scan.valid_size - scan.record_start(skip)
            self._segments[start] = _Segment(start, path, scan.count, scan.valid_size)
            self._end = end
        if not self._segments:
            self._read = _Position(self._end, len(SEGMENT_MAGIC), self._end)
        self._bytes = pending_bytes
        self._fsync_directory()
        if self._segments:
            active = next(reversed(self._segments.values()))
            self._write_fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
        if self._end > self._cursor:
            _LOG.info(
                "spool %s: %d events (%d bytes) await delivery from an earlier run",
                self._directory, self._end - self._cursor, pending_bytes,
            )  # fmt: skip

    def _load_cursor(self) -> int:
        path = self._directory / "cursor"
        try:
            return decode_cursor(path.read_bytes(), str(path))
        except FileNotFoundError:
            return 0

    # -- appending ----------------------------------------------------------------------

    def append(self, record: SpoolRecord, timeout: float = 0.0) -> int:
        """Append ``record`` (stamped with the time now) and return its index.

        When the spool is full, waits up to ``timeout`` seconds for acknowledgements to
        make room. Requires ``timeout >= 0``.

        Raises:
            ProducerQueueFullError: still no room after ``timeout``; nothing was written.
            InvalidArgumentError: the record is larger than ``max_bytes`` on its own or
                cannot be framed (see :func:`frame_record`), or the spool is closed.
            OSError: the disk refused the write; the partial write was cut off again.
        """
        frame = frame_record(replace(record, spooled_at_us=time.time_ns() // 1000))
        size = len(frame)
        if size > self._max_bytes:
            raise InvalidArgumentError(
                f"event {record.event_id!r} takes {size} bytes, more than the spool's "
                f"max_bytes {self._max_bytes}"
            )
        started = time.monotonic()
        with self._changed:
            while True:
                self._check_open()
                if self._end - self._cursor < self._max_events and self._bytes + size <= (
                    self._max_bytes
                ):
                    break
                waited = time.monotonic() - started
                if waited >= timeout:
                    pending = self._end - self._cursor
                    raise ProducerQueueFullError(record.event_id, pending, waited if timeout else 0)
                self._changed.wait(timeout - waited)
            fd = self._writable_segment(size)
            active = self._segments[next(reversed(self._segments))]
            try:
                written = 0
                while written < size:
                    written += os.write(fd, frame[written:])
            except OSError:
                os.ftruncate(fd, active.size)  # never leave half a record mid-segment
                raise
            active.count += 1
            active.size += size
            index = self._end
            self._end += 1
            self._bytes += size
            self._dirty = True
            if time.monotonic() - self._last_sync >= self._sync_interval:
                self._sync_locked()
            self._changed.notify_all()
            return index

    def _writable_segment(self, size: int) -> int:
        """The fd of the segment the next ``size`` bytes go to, rotating when it is full."""
        if self._segments:
            active = self._segments[next(reversed(self._segments))]
            if active.size + size <= self._segment_bytes or active.count == 0:
                assert self._write_fd is not None
                return self._write_fd
            self._sync_locked()  # an older segment is complete on disk before a newer exists
            assert self._write_fd is not None
            os.close(self._write_fd)
            self._write_fd = None
        path = self._directory / f"{self._end:020d}.seg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.write(fd, SEGMENT_MAGIC)
        os.fdatasync(fd)
        self._fsync_directory()
        self._segments[self._end] = _Segment(self._end, path, 0, len(SEGMENT_MAGIC))
        self._write_fd = fd
        self._read = self._past_boundary(self._read)
        return fd

    # -- reading and acknowledging ------------------------------------------------------

    def read(self, limit: int) -> list[SpooledRecord]:
        """Hand out up to ``limit`` records not handed out before, oldest first.

        Each record is handed out once per open spool; a new Spool on the directory
        starts again at the first unacknowledged record.

        Raises:
            FormatError: a record changed on disk since it was written or scanned.
            InvalidArgumentError: ``limit`` < 0, or the spool is closed.
        """
        if limit < 0:
            raise InvalidArgumentError(f"limit must be >= 0, got {limit}")
        with self._changed:
            self._check_open()
            taken: list[SpooledRecord] = []
            while len(taken) < limit and self._read.index < self._end:
                position = self._past_boundary(self._read)
                segment = self._segments[position.segment]
                wanted = min(segment.start + segment.count - position.index, limit - len(taken))
                frames, offset = self._read_frames(segment, position, wanted)
                for number, (record, size) in enumerate(frames):
                    taken.append(SpooledRecord(position.index + number, record, size))
                self._read = _Position(segment.start, offset, position.index + len(frames))
            self._window.extend(
                (spooled.index, spooled.size, spooled.record.spooled_at_us) for spooled in taken
            )
            return taken

    def acknowledge(self, next_index: int) -> None:
        """Release every record before ``next_index``: it was delivered.

        Requires the records to have been handed out by :meth:`read` and acknowledgements
        to move forward: ``cursor <= next_index <= (index of the next unread record)``.
        The cursor reaches the disk at the next :meth:`commit`.

        Raises:
            InvalidArgumentError: ``next_index`` out of that range, or the spool is closed.
        """
        with self._changed:
            self._check_open()
            if not self._cursor <= next_index <= self._read.index:
                raise InvalidArgumentError(
                    f"acknowledge({next_index}) outside {self._cursor}..{self._read.index} "
                    "(from the current cursor to the last record read)"
                )
            while self._window and self._window[0][0] < next_index:
                self._bytes -= self._window.popleft()[1]
            self._cursor = next_index
            self._changed.notify_all()

    def commit(self) -> None:
        """Save the cursor atomically, then delete segments holding only acknowledged records.

        Raises InvalidArgumentError if the spool is closed.
        """
        with self._changed:
            self._check_open()
            self._commit_locked()

    def _commit_locked(self) -> None:
        if self._cursor == self._saved_cursor:
            return
        self._save_cursor(self._cursor)
        # The cursor is on disk first: a crash in between must not leave a cursor that
        # points into a deleted segment.
        for segment in list(self._segments.values())[:-1]:
            if segment.start + segment.count > self._cursor:
                break
            if self._reader is not None and self._reader[0] == segment.start:
                os.close(self._reader[1])
                self._reader = None
            segment.path.unlink()
            del self._segments[segment.start]

    def _save_cursor(self, index: int) -> None:
        data = encode_cursor(index)
        temporary = self._directory / "cursor.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self._directory / "cursor")
        self._fsync_directory()
        self._saved_cursor = index

    # -- durability, waiting, status ----------------------------------------------------

    def sync_if_due(self) -> None:
        """fsync if ``sync_interval_ms`` passed since the last fsync and anything is unsynced.

        The owner of a spool with ``sync_interval_ms > 0`` calls this periodically, so that
        records appended just before a quiet spell also reach the disk. No-op when closed.
        """
        with self._changed:
            if not self._closed and time.monotonic() - self._last_sync >= self._sync_interval:
                self._sync_locked()

    def _sync_locked(self) -> None:
        if self._dirty and self._write_fd is not None:
            os.fdatasync(self._write_fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    def wait_for_unread(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a record :meth:`read` has not handed out.

        Returns True if there is one (False on timeout or when the spool is closed).
        """
        with self._changed:
            return (
                self._changed.wait_for(
                    lambda: self._closed or self._read.index < self._end, timeout
                )
                and not self._closed
            )

    def status(self) -> SpoolStatus:
        """Count what is not acknowledged yet (see :class:`SpoolStatus`).

        Raises:
            FormatError: the oldest unread record changed on disk (it is read to get its
                timestamp when nothing is handed out).
        """
        with self._changed:
            oldest: int | None = None
            if self._window:
                oldest = self._window[0][2]
            elif self._read.index < self._end and not self._closed:
                position = self._past_boundary(self._read)
                frames, _ = self._read_frames(self._segments[position.segment], position, 1)
                oldest = frames[0][0].spooled_at_us
            return SpoolStatus(
                directory=self._directory,
                events=self._end - self._cursor,
                bytes=self._bytes,
                unread=self._end - self._read.index,
                oldest_spooled_at_us=oldest,
            )

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def pending_events(self) -> int:
        """Records appended and not acknowledged (what :meth:`status` counts as events)."""
        return self._end - self._cursor

    def close(self) -> None:
        """Sync, commit, release the directory. Records not acknowledged stay for the next
        Spool on it; when every record was acknowledged no segment is left. Idempotent."""
        with self._changed:
            if self._closed:
                return
            try:
                self._sync_locked()
                self._commit_locked()
                if self._saved_cursor == self._end:  # all delivered: leave no segment
                    for segment in self._segments.values():
                        segment.path.unlink()
                    self._segments.clear()
            finally:
                self._closed = True
                for fd in (self._write_fd, self._reader[1] if self._reader else None):
                    if fd is not None:
                        os.close(fd)
                self._write_fd = self._reader = None
                os.close(self._lock_fd)  # also releases the flock
                self._changed.notify_all()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Spool({str(self._directory)!r}, events={self._end - self._cursor}, "
            f"bytes={self._bytes}, closed={self._closed})"
        )

    # -- internals ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError(f"spool {self._directory} is closed")

    def _past_boundary(self, position: _Position) -> _Position:
        """``position`` moved to the next segment's start if it is the end of its own."""
        segment = self._segments.get(position.segment)
        if (
            segment is not None
            and position.index != segment.start
            and position.index == segment.start + segment.count
            and position.index in self._segments
        ):
            return _Position(position.index, len(SEGMENT_MAGIC), position.index)
        return position

    def _reader_fd(self, segment: _Segment) -> int:
        if self._reader is not None and self._reader[0] == segment.start:
            return self._reader[1]
        if self._reader is not None:
            os.close(self._reader[1])
        self._reader = (segment.start, os.open(segment.path, os.O_RDONLY))
        return self._reader[1]

    def _read_frames(
        self, segment: _Segment, position: _Position, count: int
    ) -> tuple[list[tuple[SpoolRecord, int]], int]:
        """Read ``count`` records of ``segment`` from ``position``; return them with their
        framed sizes, and the offset after the last one."""
        fd = self._reader_fd(segment)
        frames: list[tuple[SpoolRecord, int]] = []
        offset = position.offset
        buffer, buffer_offset = b"", offset
        while len(frames) < count:
            start = offset - buffer_offset
            size = frame_size_at(buffer, start)
            if size is None or len(buffer) - start < size:
                buffer = os.pread(fd, max(_READ_CHUNK, size or 0), offset)
                buffer_offset, start = offset, 0
            index = position.index + len(frames)
            name = f"{segment.path} offset {offset} (record {index}, changed since written)"
            record, size = decode_frame(buffer, start, name)
            frames.append((record, size))
            offset += size
        return frames, offset

    def _fsync_directory(self) -> None:
        # A new, renamed or deleted file is durable only once its directory entry is.
        fd = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
