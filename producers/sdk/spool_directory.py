"""The spool's directory: private to the user that runs the producer.

A spool holds audit events waiting for the broker. Another local user who can read the
directory reads those events; one who can write it can plant segment or cursor files that
the producer would then deliver as its own, or skip. So the directory is created with mode
0700, and an existing one is refused unless it is a real directory (not a symbolic link)
owned by this process's effective user with no group or other permission bits.

This is an adapter (file system); it is called once, when a spool is opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from authtrail.errors import ConfigurationError

__all__ = ["make_private_directory"]

_PRIVATE_MODE = 0o700


def make_private_directory(directory: Path) -> None:
    """Create ``directory`` (mode 0700) if it is missing, then check that it is private.

    Missing parents are created with the default mode; only ``directory`` itself must be
    private. Raises :class:`ConfigurationError` if it cannot be created or opened, is a
    symbolic link or not a directory, belongs to another user, or grants any permission
    to group or others; the message names the path, the owners, the mode and the fix.
    """
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(directory, _PRIVATE_MODE)
            created = True
        except FileExistsError:
            created = False
        link = os.lstat(directory)
    except OSError as exc:
        raise ConfigurationError(f"spool directory {directory} unusable: {exc}") from exc
    if stat.S_ISLNK(link.st_mode):
        raise ConfigurationError(
            f"spool directory {directory} is a symbolic link (to {os.readlink(directory)!r}): "
            "whoever controls the link decides where audit events go; give the real "
            "directory's path instead"
        )
    if not stat.S_ISDIR(link.st_mode):
        raise ConfigurationError(f"spool directory {directory} exists and is not a directory")
    if not created:
        _check_private(directory, link)  # before opening: say why, not "permission denied"
    try:
        # O_NOFOLLOW: what is checked is the directory itself, even if the path was
        # swapped for a link since the lstat above.
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigurationError(f"spool directory {directory} unusable: {exc}") from exc
    try:
        if created:
            # mkdir's mode passes through the umask, which only removes bits; but one that
            # removes the owner's own (0o277) would leave a spool we cannot write.
            os.fchmod(fd, _PRIVATE_MODE)
        _check_private(directory, os.fstat(fd))
    finally:
        os.close(fd)


def _check_private(directory: Path, status: os.stat_result) -> None:
    """Refuse a directory another user owns or that group or others may use."""
    ours = os.geteuid()
    mode = stat.S_IMODE(status.st_mode)
    problems = []
    fixes = []
    if status.st_uid != ours:
        problems.append(f"is owned by uid {status.st_uid}, not by this process's uid {ours}")
        fixes.append(f"chown {ours} {directory}")
    if mode & 0o077:
        problems.append(f"has mode {mode:04o}, which lets group or others read or plant files")
        fixes.append(f"chmod 700 {directory}")
    if problems:
        raise ConfigurationError(
            f"spool directory {directory} {' and '.join(problems)}; it holds audit events "
            f"awaiting delivery and must be private to the producer's user (mode 0700). "
            f"Fix: {' && '.join(fixes)}, or use a new directory (it is created private)"
        )
