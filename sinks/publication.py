"""The publication: signed checkpoints and tenant directories, written outside the store.

Whoever can write to ClickHouse can delete a tenant's newest events together with their
checkpoints, delete a whole tenant, or put back an older data directory, and the store
alone still verifies. So the sink also writes every checkpoint it stored, and a signed
directory of the tenants (:mod:`authtrail.stream.core.tenant_directory`), into a folder meant to be
a mount of write-once storage (docs/DEPLOYMENT.md, "Publishing checkpoints outside the
store")::

    <publication_dir>/checkpoints/<tenant_id>/<size, 20 digits>.note   verbatim signed note
    <publication_dir>/tenants/<n, 20 digits>.note                      signed tenant directory

Nothing is ever overwritten or deleted: a file is created with ``O_EXCL``, mode 0444,
written whole and fsynced, then its folder is fsynced. Publishing a file that exists
with the same bytes does nothing, so a replay after a crash is harmless; one that exists
with other bytes is a :class:`PublicationConflict`.

The readers for ``authtrail verify --published`` live in :mod:`authtrail.sinks.publication_files`
and are importable from here too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from authtrail.errors import (
    AuthtrailError,
    ConfigurationError,
    InvalidArgumentError,
    PublicationConflict,
    PublicationError,
)
from authtrail.sinks.publication_files import (
    CHECKPOINTS_FOLDER,
    COSIGNATURES_FOLDER,
    TENANTS_FOLDER,
    FileDiffers,
    all_checkpoints,
    cosignature_file_name,
    ensure_folder,
    late_cosignatures,
    newest_checkpoints,
    newest_tenant_directory,
    newest_tenant_directory_numbered,
    note_body,
    note_file_name,
    open_tenant_folder,
    opened_folder,
    published_sizes,
    write_new_file,
)
from authtrail.stream.core.checkpoint import Checkpoint, checkpoint_origin
from authtrail.stream.core.note import Signer, make_keyring
from authtrail.stream.core.tenant_directory import (
    MAX_NUMBER,
    TenantDirectory,
    is_valid_tenant_id,
    open_directory,
    sign_directory,
)

__all__ = [
    "Publication",
    "all_checkpoints",
    "late_cosignatures",
    "newest_checkpoints",
    "newest_tenant_directory",
    "published_sizes",
]

_LOG = logging.getLogger(__name__)
_DIRECTORY_ATTEMPTS = 5


class Publication:
    """Writes checkpoints and tenant directories into ``directory``, append-only.

    ``signer`` signs the tenant directories (None: checkpoints only). Creating the object
    creates ``directory`` and its two folders if missing. Raises
    :class:`ConfigurationError` if they cannot be created or ``log_origin`` is invalid,
    :class:`PublicationError` if either folder is a symlink or a file.
    """

    def __init__(
        self,
        directory: Path,
        *,
        log_origin: str,
        signer: Signer | None,
        now_micros: Callable[[], int] | None = None,
    ) -> None:
        try:
            checkpoint_origin(log_origin, "tenant")
        except InvalidArgumentError as exc:
            raise ConfigurationError(f"publication: {exc}") from None
        self.directory = directory
        self._log_origin = log_origin
        self._signer = signer
        self._now_micros = now_micros or (lambda: time.time_ns() // 1000)
        try:
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            with opened_folder(directory) as root:
                for name in (CHECKPOINTS_FOLDER, TENANTS_FOLDER):
                    ensure_folder(root, name, directory / name)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the publication directory {directory}: {exc.strerror}"
            ) from None

    @property
    def signs_directories(self) -> bool:
        """Whether :meth:`publish_directory` writes anything (a signer was given)."""
        return self._signer is not None

    def check_note(self, tenant_id: str, size: int, note: bytes) -> None:
        """Check that ``note`` is the checkpoint of ``tenant_id`` at ``size`` of this log.

        Only the body is checked (origin and size), not the signature: that is the
        verifier's job, with its own keys. Raises :class:`InvalidArgumentError` saying
        what does not match.
        """
        if not is_valid_tenant_id(tenant_id):
            raise InvalidArgumentError(f"invalid tenant id {tenant_id!r}")
        if not 1 <= size <= MAX_NUMBER:
            raise InvalidArgumentError(f"tenant {tenant_id!r}: size {size} not in 1..2^64-1")
        try:
            checkpoint = Checkpoint.parse(note_body(note))
        except AuthtrailError as exc:
            raise InvalidArgumentError(f"tenant {tenant_id!r} size {size}: {exc}") from None
        expected = checkpoint_origin(self._log_origin, tenant_id)
        if (checkpoint.origin, checkpoint.size) != (expected, size):
            raise InvalidArgumentError(
                f"tenant {tenant_id!r} size {size}: the note is the checkpoint of "
                f"{checkpoint.origin!r} at size {checkpoint.size}"
            )

    def publish_checkpoints(self, notes: Iterable[tuple[str, int, bytes]]) -> int:
        """Publish each ``(tenant_id, size, note)``; return how many files were new.

        Requires each note to pass :meth:`check_note`; all are checked before anything
        is written, else :class:`InvalidArgumentError`. A file already holding exactly
        the note is left alone. A file holding other bytes is left alone too, the other
        notes are still published, and then :class:`PublicationConflict` names every
        such file (its ``written`` says how many files were new). Raises ``OSError``
        when writing fails (full disk, read-only mount): what was written stays, and a
        call with the same notes continues where this one stopped.
        """
        batch = list(notes)
        for tenant_id, size, note in batch:
            self.check_note(tenant_id, size, note)
        written = 0
        conflicts: list[tuple[str, int, Path]] = []
        details: list[str] = []
        tenant_folders: dict[str, int] = {}
        with (
            opened_folder(self.directory) as root,
            opened_folder(CHECKPOINTS_FOLDER, root, self.directory / CHECKPOINTS_FOLDER) as folder,
        ):
            try:
                for tenant_id, size, note in batch:
                    tenant_folder = tenant_folders.get(tenant_id)
                    if tenant_folder is None:
                        tenant_folder = open_tenant_folder(folder, tenant_id, self.directory)
                        tenant_folders[tenant_id] = tenant_folder
                    name = note_file_name(size)
                    path = self.directory / CHECKPOINTS_FOLDER / tenant_id / name
                    try:
                        written += write_new_file(tenant_folder, name, note, path)
                    except FileDiffers as differs:
                        conflicts.append((tenant_id, size, path))
                        details.append(differs.detail)
            finally:
                for descriptor in tenant_folders.values():
                    os.close(descriptor)
        if conflicts:
            raise PublicationConflict(conflicts, details[0], written=written)
        return written

    def publish_cosignatures(self, lines: Iterable[tuple[str, int, int, bytes]]) -> int:
        """Publish each ``(tenant_id, size, key_id, line)``: a witness's cosignature of the
        already published checkpoint of ``tenant_id`` at ``size``, obtained later. Returns
        how many files were new. Like notes, files are written once and never rewritten:
        another file at that place raises :class:`PublicationConflict` after the others
        are written; ``OSError`` when writing fails.
        """
        written = 0
        conflicts: list[tuple[str, int, Path]] = []
        details: list[str] = []
        with opened_folder(self.directory) as root:
            ensure_folder(root, COSIGNATURES_FOLDER, self.directory / COSIGNATURES_FOLDER)
            with opened_folder(COSIGNATURES_FOLDER, root) as folder:
                for tenant_id, size, key_id, line in lines:
                    if not is_valid_tenant_id(tenant_id):
                        raise InvalidArgumentError(f"invalid tenant id {tenant_id!r}")
                    shown = self.directory / COSIGNATURES_FOLDER / tenant_id
                    ensure_folder(folder, tenant_id, shown)
                    name = cosignature_file_name(size, key_id)
                    with opened_folder(tenant_id, folder, shown) as tenant_folder:
                        try:
                            written += write_new_file(tenant_folder, name, line, shown / name)
                        except FileDiffers as differs:
                            conflicts.append((tenant_id, size, shown / name))
                            details.append(differs.detail)
        if conflicts:
            raise PublicationConflict(conflicts, details[0], written=written)
        return written

    def publish_directory(self) -> Path | None:
        """Sign and publish the tenant directory of what the publication holds now.

        Each tenant's entry is the size and root of its newest published checkpoint
        (highest size) whose body is that tenant's checkpoint at that size; a newest
        note that is not (a torn or foreign file) is logged at ERROR and the next older
        one is listed. Writes ``tenants/<n+1>.note`` (n: the highest there, 0 if none)
        and returns its path. Returns None without writing when there is no signer, or
        when the tenants are exactly those of the newest directory (as far as this
        signer can open it: one by another key is superseded).

        Raises :class:`PublicationError` for a publication holding what its layout
        forbids, :class:`ConfigurationError` when it cannot be read, ``OSError`` when
        the directory cannot be written.
        """
        if self._signer is None:
            return None
        keyring = make_keyring([self._signer.verifier_key()])
        for _ in range(_DIRECTORY_ATTEMPTS):
            entries = {}
            for tenant_id, (size, note) in newest_checkpoints(self.directory).items():
                entry = self._directory_entry(tenant_id, size, note)
                if entry is not None:
                    entries[tenant_id] = entry
            newest = newest_tenant_directory_numbered(self.directory)
            number, time_micros = 1, self._now_micros()
            if newest is not None:
                number = newest[0] + 1
                try:
                    previous = open_directory(newest[1], keyring, self._log_origin)
                except AuthtrailError:
                    pass  # another key's, or damaged: a new directory supersedes it
                else:
                    if dict(previous.entries) == entries:
                        return None
                    time_micros = max(time_micros, previous.time_micros)  # never backwards
            directory = TenantDirectory(self._log_origin, time_micros, entries)
            note = sign_directory(directory, self._signer)
            name = note_file_name(number)
            path = self.directory / TENANTS_FOLDER / name
            with (
                opened_folder(self.directory) as root,
                opened_folder(TENANTS_FOLDER, root, self.directory / TENANTS_FOLDER) as folder,
            ):
                try:
                    write_new_file(folder, name, note, path)
                except FileDiffers:
                    continue  # another sink published number n+1 meanwhile: build anew
            return path
        raise PublicationError(
            f"could not publish a tenant directory in {self.directory / TENANTS_FOLDER}: "
            f"the next number was taken {_DIRECTORY_ATTEMPTS} times in a row"
        )

    def _directory_entry(self, tenant_id: str, size: int, note: bytes) -> tuple[int, bytes] | None:
        """``(size, root)`` of the tenant's newest readable published checkpoint."""
        try:
            return size, self._published_checkpoint(tenant_id, size, note).root
        except AuthtrailError as exc:
            _LOG.error("publication: %s; listing an older checkpoint of tenant %r", exc, tenant_id)
        for older_size, older_note in reversed(all_checkpoints(self.directory, tenant_id)):
            if older_size >= size:
                continue
            try:
                checkpoint = self._published_checkpoint(tenant_id, older_size, older_note)
            except AuthtrailError as exc:
                _LOG.error("publication: %s", exc)
            else:
                return older_size, checkpoint.root
        _LOG.error(
            "publication: tenant %r has no readable checkpoint; it is left out of the "
            "tenant directory",
            tenant_id,
        )
        return None

    def _published_checkpoint(self, tenant_id: str, size: int, note: bytes) -> Checkpoint:
        path = self.directory / CHECKPOINTS_FOLDER / tenant_id / note_file_name(size)
        try:
            self.check_note(tenant_id, size, note)
        except InvalidArgumentError as exc:
            raise PublicationError(f"{path}: {exc}") from None
        return Checkpoint.parse(note_body(note))
