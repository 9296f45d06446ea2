"""The publication's layout on disk: file names, append-only writes, strict reads.

::

    <publication_dir>/checkpoints/<tenant_id>/<size, 20 digits>.note   verbatim signed note
    <publication_dir>/tenants/<n, 20 digits>.note                      signed tenant directory

Files are only ever created, never rewritten, renamed or deleted (:func:`write_new_file`).
Every path below the publication root is opened relative to its open folder with
``O_NOFOLLOW``, so no symlink planted there is ever followed; the root itself is the
operator's path and may be reached through symlinks (a mount point often is).

The readers (for ``authtrail verify --published``) accept nothing the layout does not
name: a stray file or folder, a symlink, a special file or an oversized note raises
:class:`PublicationError` naming it, so nothing in the publication is ignored silently.
Read failures (missing root, permissions, I/O) raise :class:`ConfigurationError`.

Adapter: file system I/O only. :mod:`authtrail.sinks.publication` writes through it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from authtrail.errors import ConfigurationError, InvalidArgumentError, PublicationError
from authtrail.stream.core.tenant_directory import MAX_NUMBER, is_valid_tenant_id

CHECKPOINTS_FOLDER = "checkpoints"
TENANTS_FOLDER = "tenants"
# Witness cosignatures obtained after a checkpoint was published (its note is never
# rewritten): cosignatures/<tenant>/<size, 20 digits>-<key id, 8 hex>.cosig, one line each.
COSIGNATURES_FOLDER = "cosignatures"
FILE_MODE = 0o444
FOLDER_MODE = 0o755
MAX_NOTE_BYTES = 1 << 20  # a note is < 1 KB (10 KB with 100 signatures): refuse to slurp more

_NOTE_NAME = re.compile(r"([0-9]{20})\.note")
_COSIGNATURE_NAME = re.compile(r"([0-9]{20})-([0-9a-f]{8})\.cosig")
# Some network and FUSE file systems cannot fsync a folder and say so; their entries are
# durable once the file is (object stores publish an object whole on close).
_NO_FOLDER_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def note_file_name(number: int) -> str:
    """Return ``<number, 20 digits zero-padded>.note``. Requires ``1 <= number <= 2^64-1``."""
    if not 1 <= number <= MAX_NUMBER:
        raise InvalidArgumentError(f"a published note number must be in 1..2^64-1, got {number}")
    return f"{number:020d}.note"


def cosignature_file_name(size: int, key_id: int) -> str:
    """Return ``<size, 20 digits>-<key id as 8 hex digits>.cosig``."""
    if not 0 <= key_id <= 0xFFFFFFFF:
        raise InvalidArgumentError("a witness key id is 4 bytes")
    return f"{note_file_name(size).removesuffix('.note')}-{key_id:08x}.cosig"


class FileDiffers(Exception):
    """An existing file holds other bytes; ``detail`` says how they differ."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


def note_body(note: bytes) -> bytes:
    """The text of signed ``note`` (before the blank line), without checking signatures.

    For building a directory from the sink's own publication only; a verifier opens
    notes with :func:`authtrail.stream.core.note.open_note`. Raises :class:`PublicationError` if
    there is no blank line.
    """
    split = note.rfind(b"\n\n")
    if split < 0:
        raise PublicationError("published note has no blank line before its signatures")
    return note[: split + 1]


# -- readers ---------------------------------------------------------------------------------


def newest_checkpoints(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Each published tenant's newest checkpoint: tenant → ``(size, note bytes)``.

    A tenant folder without notes yet (a crash between creating it and its first file)
    is not listed. Raises :class:`PublicationError` naming any entry the layout does not
    allow (a misnamed or special file, a folder that is not a tenant id, a symlink, a
    note over 1 MiB); :class:`ConfigurationError` if ``directory`` is missing or cannot
    be read. A missing ``checkpoints/`` folder is an empty publication.
    """
    result: dict[str, tuple[int, bytes]] = {}
    with _reading(directory) as root, _optional_folder(CHECKPOINTS_FOLDER, root) as folder:
        if folder is None:
            return result
        for tenant_id in _tenant_ids(folder, directory / CHECKPOINTS_FOLDER):
            shown = directory / CHECKPOINTS_FOLDER / tenant_id
            with opened_folder(tenant_id, folder, shown) as tenant_folder:
                notes = _note_names(tenant_folder, shown)
                if notes:
                    size, name = notes[-1]
                    result[tenant_id] = (size, _read_note(tenant_folder, name, shown / name))
    return result


def all_checkpoints(directory: Path, tenant_id: str) -> list[tuple[int, bytes]]:
    """Every published checkpoint of ``tenant_id`` as ``(size, note bytes)``, ascending size.

    Requires a valid tenant id (else :class:`InvalidArgumentError`, before any file is
    touched). No folder for the tenant: ``[]``. Raises as :func:`newest_checkpoints`.
    """
    with _tenant_folder(directory, CHECKPOINTS_FOLDER, tenant_id) as (tenant_folder, shown):
        if tenant_folder is None:
            return []
        return [
            (size, _read_note(tenant_folder, name, shown / name))
            for size, name in _note_names(tenant_folder, shown)
        ]


def published_checkpoint(directory: Path, tenant_id: str, size: int) -> bytes | None:
    """The published note of ``tenant_id`` at ``size``, None if there is none.

    Read as every published note is: never through a symlink, never a special file, at
    most :data:`MAX_NOTE_BYTES` (else :class:`PublicationError`).
    """
    with _tenant_folder(directory, CHECKPOINTS_FOLDER, tenant_id) as (tenant_folder, shown):
        if tenant_folder is None:
            return None
        name = note_file_name(size)
        try:
            return _read_note(tenant_folder, name, shown / name)
        except FileNotFoundError:
            return None


def late_cosignatures(directory: Path, tenant_id: str, size: int) -> list[bytes]:
    """The cosignature lines published for ``tenant_id``'s checkpoint of ``size`` after
    the checkpoint itself, in file-name order (verified by the reader, not here).

    Raises :class:`PublicationError` for anything else in the tenant's cosignatures
    folder, as :func:`newest_checkpoints` does for the checkpoints.
    """
    with _tenant_folder(directory, COSIGNATURES_FOLDER, tenant_id) as (tenant_folder, shown):
        if tenant_folder is None:
            return []
        names = []
        with os.scandir(tenant_folder) as entries:
            for entry in entries:
                match = _COSIGNATURE_NAME.fullmatch(entry.name)
                if match is None or not entry.is_file(follow_symlinks=False):
                    expected = "a file named '<20 digits>-<8 hex digits>.cosig'"
                    raise _stray(shown / entry.name, entry, expected)
                if int(match.group(1)) == size:
                    names.append(entry.name)
        return [_read_note(tenant_folder, name, shown / name) for name in sorted(names)]


def published_sizes(directory: Path) -> dict[str, list[int]]:
    """Each published tenant's checkpoint sizes, ascending (file names only, no content).

    Raises as :func:`newest_checkpoints`.
    """
    result: dict[str, list[int]] = {}
    with _reading(directory) as root, _optional_folder(CHECKPOINTS_FOLDER, root) as folder:
        if folder is None:
            return result
        for tenant_id in _tenant_ids(folder, directory / CHECKPOINTS_FOLDER):
            shown = directory / CHECKPOINTS_FOLDER / tenant_id
            with opened_folder(tenant_id, folder, shown) as tenant_folder:
                result[tenant_id] = [size for size, _ in _note_names(tenant_folder, shown)]
    return result


def newest_tenant_directory(directory: Path) -> bytes | None:
    """The signed note of the newest tenant directory (highest n), or None if there is none.

    Raises as :func:`newest_checkpoints`; the signature is not checked here (see
    :func:`authtrail.stream.core.tenant_directory.open_directory`).
    """
    newest = newest_tenant_directory_numbered(directory)
    return newest[1] if newest is not None else None


def newest_tenant_directory_numbered(directory: Path) -> tuple[int, bytes] | None:
    """As :func:`newest_tenant_directory`, with its number n: ``(n, note)``."""
    shown = directory / TENANTS_FOLDER
    with _reading(directory) as root, _optional_folder(TENANTS_FOLDER, root, shown) as folder:
        if folder is None:
            return None
        names = _note_names(folder, shown)
        if not names:
            return None
        number, name = names[-1]
        return number, _read_note(folder, name, shown / name)


# -- file system helpers: every path below the root is opened relative to its folder -------


@contextmanager
def _reading(directory: Path) -> Iterator[int]:
    """The publication root, open; read errors become :class:`ConfigurationError`."""
    try:
        with opened_folder(directory) as root:
            yield root
    except OSError as exc:
        where = exc.filename or directory
        raise ConfigurationError(f"cannot read publication {where}: {exc.strerror}") from None


def open_folder(name: str | Path, parent: int | None = None, shown: Path | None = None) -> int:
    """Open folder ``name``; relative to the open folder ``parent`` it is never a symlink.

    Raises :class:`PublicationError` for a symlink or a file there (``parent`` given),
    else ``OSError`` with ``filename`` set to ``shown``.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        if parent is None:
            return os.open(name, flags)
        return os.open(name, flags | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as exc:
        # Linux says ENOTDIR for a symlink opened with O_DIRECTORY | O_NOFOLLOW, others ELOOP.
        if parent is not None and exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise PublicationError(f"{shown or name} is a symlink or not a folder") from None
        exc.filename = str(shown or name)
        raise


@contextmanager
def opened_folder(
    name: str | Path, parent: int | None = None, shown: Path | None = None
) -> Iterator[int]:
    """:func:`open_folder` as a context: closed on leaving."""
    descriptor = open_folder(name, parent, shown)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


@contextmanager
def _optional_folder(
    name: str, parent: int | None, shown: Path | None = None
) -> Iterator[int | None]:
    """As :func:`opened_folder`, but None when ``parent`` is None or ``name`` is missing."""
    descriptor = None
    if parent is not None:
        with suppress(FileNotFoundError):
            descriptor = open_folder(name, parent, shown)
    try:
        yield descriptor
    finally:
        if descriptor is not None:
            os.close(descriptor)


@contextmanager
def _tenant_folder(directory: Path, top: str, tenant_id: str) -> Iterator[tuple[int | None, Path]]:
    """``top/<tenant_id>`` of the publication, open (None: missing), and its path to show.

    Refuses an invalid tenant id with :class:`InvalidArgumentError` before any file is
    touched."""
    if not is_valid_tenant_id(tenant_id):
        raise InvalidArgumentError(f"invalid tenant id {tenant_id!r}")
    shown = directory / top / tenant_id
    with (
        _reading(directory) as root,
        _optional_folder(top, root) as folder,
        _optional_folder(tenant_id, folder, shown) as tenant_folder,
    ):
        yield tenant_folder, shown


def _stray(path: Path, entry: os.DirEntry[str], expected: str) -> PublicationError:
    what = "a symlink" if entry.is_symlink() else f"not {expected}"
    return PublicationError(f"{path} is {what}; the publication holds nothing else")


def _tenant_ids(folder: int, shown: Path) -> list[str]:
    tenant_ids = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not is_valid_tenant_id(entry.name) or not entry.is_dir(follow_symlinks=False):
                raise _stray(shown / entry.name, entry, "a folder named by a tenant id")
            tenant_ids.append(entry.name)
    return sorted(tenant_ids)


def _note_names(folder: int, shown: Path) -> list[tuple[int, str]]:
    """``(number, file name)`` of the notes in ``folder``, ascending; nothing else allowed."""
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _NOTE_NAME.fullmatch(entry.name)
            number = int(match.group(1)) if match else 0
            if not 1 <= number <= MAX_NUMBER or not entry.is_file(follow_symlinks=False):
                expected = "a file named '<20 digits>.note', numbered 1..2^64-1"
                raise _stray(shown / entry.name, entry, expected)
            names.append((number, entry.name))
    return sorted(names)


def _read_note(folder: int, name: str, shown: Path) -> bytes:
    # O_NONBLOCK: a FIFO planted under a note's name must not hang the reader.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        descriptor = os.open(name, flags, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PublicationError(f"{shown} is a symlink") from None
        exc.filename = str(shown)
        raise
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise PublicationError(f"{shown} is not a regular file")
        chunks, total = [], 0
        while chunk := os.read(descriptor, MAX_NOTE_BYTES + 1 - total):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_NOTE_BYTES:
                raise PublicationError(f"{shown} is larger than {MAX_NOTE_BYTES} bytes")
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def _fsync_folder(descriptor: int) -> None:
    try:
        os.fsync(descriptor)
    except OSError as exc:
        if exc.errno not in _NO_FOLDER_FSYNC:
            raise


def ensure_folder(parent: int, name: str, shown: Path) -> None:
    """Create folder ``name`` in ``parent`` if missing, durably; refuse a symlink there."""
    try:
        os.mkdir(name, FOLDER_MODE, dir_fd=parent)
    except FileExistsError:
        pass
    else:
        _fsync_folder(parent)
    with opened_folder(name, parent, shown):
        pass  # refuses a symlink or a file under that name


def open_tenant_folder(checkpoints: int, tenant_id: str, directory: Path) -> int:
    """The tenant's folder in ``checkpoints/``, created durably if missing; open."""
    shown = directory / CHECKPOINTS_FOLDER / tenant_id
    ensure_folder(checkpoints, tenant_id, shown)
    return open_folder(tenant_id, checkpoints, shown)


def write_new_file(folder: int, name: str, data: bytes, shown: Path) -> int:
    """Create file ``name`` in ``folder`` holding ``data``, durably; return 1.

    Returns 0 if it exists holding exactly ``data``; raises :class:`FileDiffers` if it
    holds anything else. Never opens an existing file for writing.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(name, flags, FILE_MODE, dir_fd=folder)
    except FileExistsError:  # also a symlink under that name, wherever it points
        existing = _read_note(folder, name, shown)
        if existing == data:
            return 0
        if data.startswith(existing):
            raise FileDiffers(
                f"holds only the first {len(existing)} of the note's {len(data)} bytes (a write "
                "cut short by a crash or power loss?)"
            ) from None
        raise FileDiffers(f"holds {len(existing)} other bytes than the note") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    _fsync_folder(folder)
    return 1
