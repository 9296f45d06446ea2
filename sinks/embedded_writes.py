"""Inserts into the embedded store (chdb) that report write failures, as one clear line.

chdb 4.4's streaming insert (``send_insert``) loses write failures: on a full disk it
reported every row written and stored none (``tests/integration/test_store_write_errors.py``).
A plain ``INSERT … SELECT`` raises them (NOT_ENOUGH_SPACE), so insert data is written to
a file and read with ``INSERT INTO t (cols) SELECT * FROM file(path, format)``. With
``SELECT *`` and no structure argument the engine gives the file the insertion table's
structure (``use_structure_from_insertion_table_in_table_functions``), so the same input
format reader converts and refuses exactly what the streaming insert did ('one' into
UInt64, an over-long FixedString, NULL into a non-Nullable column are refused).

An operator reading the sink's log must see at once *what* failed (an insert into which
table, or opening the data directory), *where* (the data directory) and *why* in plain
words — "disk full" rather than ``Code: 243`` or ``errno: 28`` somewhere in an engine
message. The engine's own text follows, on the same line, for the details.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from authtrail.errors import StoreError
from authtrail.sinks.clickhouse_sql import error_code, quote_identifier, quote_string_literal

# Where insert data waits for the engine: inside the data directory, so that a full disk
# fails the write of this file first, with the operating system's own errno.
INSERT_FILES = "authtrail-inserts"
_GLOB_CHARACTERS = frozenset("*?{}[]")  # file() would expand them in a path

# ClickHouse error codes that mean the disk, not the statement, failed.
NOT_ENOUGH_SPACE = 243
CANNOT_WRITE_TO_FILE_DESCRIPTOR = 75
CANNOT_OPEN_FILE = 76
CANNOT_FSYNC = 95

_ENGINE_ERRNO = re.compile(r"\berrno:\s*(\d+)")
_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "I/O error",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_WRITE_CODES = frozenset(
    {NOT_ENOUGH_SPACE, CANNOT_WRITE_TO_FILE_DESCRIPTOR, CANNOT_OPEN_FILE, CANNOT_FSYNC}
)


def failure_reason(message: str = "", os_errno: int | None = None) -> str | None:
    """Plain words for a disk-level failure ("disk full", "I/O error"…), else None.

    ``os_errno`` comes from an OSError; otherwise the engine message is searched for
    ClickHouse's NOT_ENOUGH_SPACE code or an ``errno: N`` it quotes.
    """
    if os_errno is None:
        found = _ENGINE_ERRNO.search(message)
        os_errno = int(found.group(1)) if found else None
    if os_errno in _REASONS:
        return _REASONS[os_errno]
    code = error_code(message)
    if code == NOT_ENOUGH_SPACE:
        return "disk full"
    if code in _WRITE_CODES:
        return "write failed"
    return None


def one_line(text: str) -> str:
    """``text`` on one line (engine messages may carry newlines and stack traces)."""
    return " ".join(text.split())


def insert_failure(
    directory: object, what: str, message: str, os_errno: int | None = None
) -> StoreError:
    """The StoreError for an insert that did not happen; ``what`` names it for the reader.

    Its message names the insert, the data directory and, when it is a disk-level failure,
    the reason first: ``ClickHouse insert of 5000 rows into events failed: disk full in
    /data/clickhouse: <engine message>``. ``code`` is the engine's, or NOT_ENOUGH_SPACE
    for a full disk found by the operating system.
    """
    reason = failure_reason(message, os_errno)
    why = f": {reason}" if reason else ""
    code = error_code(message) or (NOT_ENOUGH_SPACE if reason == "disk full" else 0)
    return StoreError(f"ClickHouse {what} failed{why} in {directory}: {one_line(message)}", code)


class _Querying(Protocol):
    def query(self, sql: str, fmt: str = ...) -> Any: ...


@dataclass(frozen=True)
class InsertTarget:
    """Where an insert goes, for the file and the error message: the data ``directory``,
    the directory of insert files, and ``what`` the insert is ("insert of 5 rows into t")."""

    directory: Path
    insert_files: Path
    what: str


def insert_files_directory(data_directory: Path) -> Path:
    """The directory insert data passes through, emptied of files a killed process left.

    Requires ``data_directory`` to exist. A path with glob characters (which ``file()``
    would expand) uses a directory under the system's temporary directory instead.
    """
    directory = data_directory / INSERT_FILES
    if _GLOB_CHARACTERS & set(str(directory)):
        directory = Path(tempfile.gettempdir()) / f"{INSERT_FILES}-{os.getpid()}"
    directory.mkdir(exist_ok=True)
    for leftover in directory.glob("*.data"):
        leftover.unlink(missing_ok=True)
    return directory


def insert_through_file(
    session: _Querying, statement: str, input_format: str, data: bytes, target: InsertTarget
) -> Any:
    """Run ``statement`` (``INSERT INTO t [(cols)] [SETTINGS …]``, no FORMAT) on ``data``.

    ``data`` is encoded in ``input_format`` (ArrowStream, Native…). The caller holds the
    session. Returns chdb's query result (``rows_written()``…). Raises StoreError naming
    the insert, the data directory and a disk-level reason ("disk full"…) if there is one.
    """
    name = ""
    try:
        handle, name = tempfile.mkstemp(suffix=".data", dir=target.insert_files)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
    except OSError as exc:
        if name:
            os.unlink(name)
        raise insert_failure(target.directory, target.what, str(exc), exc.errno) from exc
    source = f"file({quote_string_literal(name)}, {quote_identifier(input_format)})"
    try:
        return session.query(f"{statement}\nSELECT * FROM {source}", "TabSeparated")
    except RuntimeError as exc:
        raise insert_failure(target.directory, target.what, str(exc)) from exc
    finally:
        os.unlink(name)
