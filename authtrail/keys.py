"""Key files: create, load and trust the Ed25519 keys that sign checkpoints.

A key pair named ``<name>`` lives in two files (``/`` in the name becomes ``_``):

* ``<name>.key``: the signer key string (``PRIVATE+KEY+...``), mode 0600 from its first
  byte on; :func:`load_signer` refuses it once group or others get any access.
* ``<name>.pub``: the verifier key string, mode 0644, to hand to anyone who verifies.

A keyring file may list several verifier keys, one per line (blank lines and ``#``
comments ignored), so checkpoints signed before a key rotation keep verifying. A witness
key file lists C2SP witness vkeys (type ``0x04``) the same way (:func:`load_witness_keys`).

Secrets are never logged and never put into an exception message. Every failure raises
:class:`ConfigurationError` naming the file and what to do.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from authtrail.errors import AuthtrailError, ConfigurationError
from stream.cosignature import WitnessKey
from stream.note import Keyring, Signer, VerifierKey, generate_key_strings, make_keyring

SIGNER_SUFFIX = ".key"
VERIFIER_SUFFIX = ".pub"
_MAX_KEY_FILE_BYTES = 64 * 1024  # a key line is ~100 bytes; refuse to slurp anything big


def generate_signing_key(name: str) -> tuple[str, str]:
    """Generate a new Ed25519 key named ``name``; return ``(signer_key, verifier_key)``.

    Raises :class:`ConfigurationError` for a name with spaces, ``+`` or control chars.
    """
    try:
        return generate_key_strings(name)
    except AuthtrailError as exc:
        raise ConfigurationError(f"cannot generate key {name!r}: {exc}") from None


def key_file_paths(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Return the ``(<name>.key, <name>.pub)`` paths in ``directory``."""
    stem = name.replace("/", "_")
    return Path(directory) / f"{stem}{SIGNER_SUFFIX}", Path(directory) / f"{stem}{VERIFIER_SUFFIX}"


def _write_new_file(path: Path, content: str, mode: int) -> None:
    # O_EXCL: never overwrite (a lost signer key cannot be recovered) and never follow a
    # planted symlink. Creating with the final mode means there is no moment at which a
    # secret sits in a more permissive file.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # umask may have removed bits we want (0644 for .pub)
        os.write(fd, content.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_pair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Generate a key named ``name`` and write ``<name>.key`` (0600) and ``<name>.pub`` (0644).

    Creates ``directory`` (mode 0700) if missing. Returns ``(key_path, pub_path)``.
    Raises :class:`ConfigurationError` if either file already exists (nothing is
    overwritten), the name is invalid, or the files cannot be written.
    """
    key_path, pub_path = key_file_paths(directory, name)
    signer_key, verifier_key = generate_signing_key(name)
    for path in (key_path, pub_path):
        if os.path.lexists(path):
            raise ConfigurationError(
                f"{path} already exists; refusing to overwrite a key (move it away first)"
            )
    try:
        Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new_file(key_path, signer_key + "\n", 0o600)
    except OSError as exc:
        raise ConfigurationError(f"cannot write signer key {key_path}: {exc.strerror}") from None
    try:
        _write_new_file(pub_path, verifier_key + "\n", 0o644)
    except OSError as exc:
        # A signer key without its public half is useless and confusing: take it back.
        key_path.unlink(missing_ok=True)
        raise ConfigurationError(f"cannot write verifier key {pub_path}: {exc.strerror}") from None
    return key_path, pub_path


def _read_key_file(path: Path, *, secret: bool) -> str:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigurationError(f"cannot open key file {path}: {exc.strerror}") from None
    try:
        # fstat the open descriptor: the mode checked is the mode of the file read.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(f"key file {path} is not a regular file")
        if secret and info.st_mode & 0o077:
            raise ConfigurationError(
                f"signer key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
            )
        data = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"cannot read key file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ConfigurationError(f"key file {path} is too large to be a key file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"key file {path} is not UTF-8 text") from None


def load_signer(path: str | os.PathLike[str]) -> Signer:
    """Load the signer key in ``path`` (one ``PRIVATE+KEY+...`` line).

    Raises :class:`ConfigurationError` if the file is missing, not a regular file,
    accessible by group or others (``mode & 0o077``; fix: ``chmod 600``), or does not
    hold exactly one valid signer key. The message never contains the key.
    """
    key_path = Path(path)
    lines = _read_key_file(key_path, secret=True).splitlines()
    if len(lines) != 1:
        raise ConfigurationError(f"signer key file {key_path} must hold exactly one key line")
    try:
        return Signer.parse(lines[0].strip())
    except ConfigurationError as exc:
        raise ConfigurationError(f"signer key file {key_path}: {exc}") from None


def _verifier_keys_in_file(path: Path) -> list[VerifierKey]:
    keys = []
    for line_number, line in enumerate(_read_key_file(path, secret=False).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(VerifierKey.parse(line))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{path} line {line_number}: {exc}") from None
    if not keys:
        raise ConfigurationError(f"verifier key file {path} holds no key")
    return keys


def load_keyring(sources: Iterable[str | os.PathLike[str]]) -> Keyring:
    """Build the keyring of trusted verifier keys from ``sources``.

    Each source is a verifier key string (``<name>+<hex8>+<base64>``) or the path of a
    file of them (a :class:`~pathlib.Path` is always a path; a ``str`` is a key string
    when it parses as one). Raises :class:`ConfigurationError` for an unreadable or
    malformed source, a signer key given where a verifier key goes, two different keys
    under one ``(name, key_id)``, or no key at all.
    """
    keys: list[VerifierKey] = []
    for source in sources:
        if isinstance(source, str) and source.startswith("PRIVATE+"):
            raise ConfigurationError(
                "a signer (private) key was given as a trusted key; pass its .pub instead"
            )
        if isinstance(source, str) and source.count("+") >= 2 and not os.path.exists(source):
            keys.append(VerifierKey.parse(source))
        else:
            keys.extend(_verifier_keys_in_file(Path(source)))
    if not keys:
        raise ConfigurationError("no trusted verifier key configured")
    return make_keyring(keys)


def load_witness_keys(paths: Iterable[str | os.PathLike[str]]) -> tuple[WitnessKey, ...]:
    """Load the trusted witness vkeys in the files ``paths`` (one per line, ``#`` comments).

    Raises :class:`ConfigurationError` naming the file (and line) for an unreadable file,
    a malformed vkey or one not of type ``0x04`` (a log's ``.pub`` given by mistake), or a
    file holding no key.
    """
    keys: list[WitnessKey] = []
    for source in paths:
        path = Path(source)
        found = 0
        for line_number, line in enumerate(_read_key_file(path, secret=False).splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                keys.append(WitnessKey.parse(line))
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"witness key file {path} line {line_number}: {exc}"
                ) from None
            found += 1
        if not found:
            raise ConfigurationError(f"witness key file {path} holds no key")
    return tuple(keys)
