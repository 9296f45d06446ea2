"""Replace a file atomically, with the permissions it must have; read one back, bounded.

Standard library only (and authtrail's errors).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def replace_file(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` by a file holding ``text`` with permissions ``mode``.

    The text goes to a new name beside ``path`` (``O_CREAT | O_EXCL | O_NOFOLLOW``: never
    into a file or symlink someone planted there), created 0600 and given ``mode`` only
    once written, is fsynced and renamed over ``path``, and the folder fsynced, so a
    reader — or a restart after a crash — sees the old or the new file whole, and never
    a world-readable secret. Raises OSError.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fchmod(file.fileno(), mode)  # umask may have removed bits of mode
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_bounded(path: Path, max_bytes: int, what: str) -> bytes | None:
    """The bytes of ``path``, None when it does not exist.

    Raises ConfigurationError naming ``what`` and ``path`` when it cannot be read or holds
    more than ``max_bytes`` (a state or report file never does; reading on would let a
    planted file fill the memory).
    """
    from authtrail.errors import ConfigurationError

    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise ConfigurationError(f"{what} {path} is too large")
    return data
