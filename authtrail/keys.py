"""Key files: create, load and trust the Ed25519 keys that sign checkpoints.

A key pair named ``<name>`` lives in two files (``/`` in the name becomes ``_``):

* ``<name>.key``: the signer key string (``PRIVATE+KEY+...``), mode 0600 from its first
  byte on; :func:`load_signer` refuses it once group or others get any access.
* ``<name>.pub``: the verifier key string, mode 0644, to hand to anyone who verifies.

A keyring file (``authtrail.keyring``) lists several verifier keys, one per line (blank
lines and ``#`` comments ignored), each optionally marked ``retired <time>``
(stream/core/rotation.py), so checkpoints signed before a key rotation keep verifying; a
``.pub`` file is a keyring of one key. :func:`rotate_signing_key` and :func:`retire_key`
carry out the rotation procedure of docs/INTEGRITY.md. A witness key file lists C2SP
witness vkeys (type ``0x04``) the same way (:func:`load_witness_keys`).

Secrets are never logged and never put into an exception message. Every failure raises
:class:`ConfigurationError` naming the file and what to do.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from authtrail.atomic_file import replace_file
from authtrail.errors import AuthtrailError, ConfigurationError
from authtrail.stream.core.cosignature import WitnessKey
from authtrail.stream.core.note import (
    Keyring,
    Signer,
    VerifierKey,
    generate_key_strings,
    make_keyring,
)
from authtrail.stream.core.rotation import format_time, keyring_line, parse_keyring_line

SIGNER_SUFFIX = ".key"
VERIFIER_SUFFIX = ".pub"
KEYRING_HEADER = (
    "# authtrail keyring: every key that signed this log's checkpoints, one a line;\n"
    "# 'retired <time>': that key may not sign a checkpoint alone from <time> on.\n"
)
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


def _keyring_lines(path: Path) -> list[tuple[str, VerifierKey | None]]:
    """Every line of keyring file ``path`` with the key it holds (None: blank, comment)."""
    lines: list[tuple[str, VerifierKey | None]] = []
    for line_number, line in enumerate(_read_key_file(path, secret=False).splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            lines.append((line, None))
            continue
        try:
            lines.append((line, parse_keyring_line(text)))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{path} line {line_number}: {exc}") from None
    return lines


def _verifier_keys_in_file(path: Path) -> list[VerifierKey]:
    keys = [key for _, key in _keyring_lines(path) if key is not None]
    if not keys:
        raise ConfigurationError(f"verifier key file {path} holds no key")
    return keys


def describe_keys(paths: Iterable[str | os.PathLike[str]]) -> dict[str, str]:
    """key label -> where it came from (and its retirement), for reports."""
    described: dict[str, str] = {}
    for path in paths:
        for key in load_keyring([path]).values():
            retired = f" (retired {format_time(key.retired_micros)})" if key.retired_micros else ""
            described[key.label] = f"{path}{retired}"
    return described


def load_keyring(sources: Iterable[str | os.PathLike[str]]) -> Keyring:
    """Build the keyring of trusted verifier keys from ``sources``.

    Each source is a keyring line (``<name>+<hex8>+<base64>``, optionally ``retired
    <time>``) or the path of a keyring or ``.pub`` file (a :class:`~pathlib.Path` is
    always a path; a ``str`` is a key string when it parses as one). Raises
    :class:`ConfigurationError` for an unreadable or malformed source, a signer key given
    where a verifier key goes, two different keys under one ``(name, key_id)``, or no key
    at all.
    """
    keys: list[VerifierKey] = []
    for source in sources:
        if isinstance(source, str) and source.startswith("PRIVATE+"):
            raise ConfigurationError(
                "a signer (private) key was given as a trusted key; pass its .pub instead"
            )
        if isinstance(source, str) and source.count("+") >= 2 and not os.path.exists(source):
            keys.append(parse_keyring_line(source))
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


def next_key_name(name: str) -> str:
    """The default name of the key after ``name``: ``authtrail`` -> ``authtrail-2`` ->
    ``authtrail-3``."""
    stem, dash, number = name.rpartition("-")
    if dash and number.isdigit() and not number.startswith("0"):
        return f"{stem}-{int(number) + 1}"
    return f"{name}-2"


def _write_keyring(path: Path, lines: list[str]) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace_file(path, "".join(line + "\n" for line in lines), 0o644)
    except OSError as exc:
        raise ConfigurationError(f"cannot write keyring {path}: {exc.strerror}") from None


def rotate_signing_key(
    current_key: Path, keyring: Path, new_name: str | None = None
) -> tuple[Signer, Signer, Path, Path]:
    """Make the key that takes over from the signer key in ``current_key``.

    Writes ``<new_name>.key`` and ``.pub`` beside ``current_key`` (never overwriting)
    and adds both keys' verifier keys to ``keyring`` (created if missing; lines already
    there are kept, comments too). Returns ``(old_signer, new_signer, new_key_path,
    keyring)``. Raises :class:`ConfigurationError` for an unreadable current key, an
    existing new key file, a keyring that marks the current key retired, or a new name
    equal to the old one.
    """
    old = load_signer(current_key)
    name = new_name or next_key_name(old.name)
    if name == old.name:
        raise ConfigurationError(f"the new key needs another name than {old.name!r}")
    lines = _keyring_lines(keyring) if keyring.exists() else [(KEYRING_HEADER.rstrip(), None)]
    known = {key.label: key for _, key in lines if key is not None}
    old_key = known.get(old.verifier_key().label)
    if old_key is not None and old_key.retired_micros is not None:
        raise ConfigurationError(f"{keyring} marks the current key {old_key.label} retired")
    new_key_path, _ = write_key_pair(current_key.parent, name)
    new = load_signer(new_key_path)
    text = [line for line, _ in lines]
    text += [keyring_line(key.verifier_key()) for key in (old, new) if key.verifier_key().label
             not in known]  # fmt: skip
    _write_keyring(keyring, text)
    return old, new, new_key_path, keyring


def retire_key(keyring: Path, label: str, at_micros: int) -> VerifierKey:
    """Mark the key ``label`` (``<name>+<hex8 key id>``) in ``keyring`` retired from
    ``at_micros`` on; an earlier mark already there is kept. Returns the marked key.

    Raises :class:`ConfigurationError` if the keyring is unreadable, does not hold the key,
    or would be left without a key that is not retired.
    """
    lines = _keyring_lines(keyring)
    keys = [key for _, key in lines if key is not None]
    found = [key for key in keys if key.label == label]
    if not found:
        listed = ", ".join(key.label for key in keys) or "none"
        raise ConfigurationError(f"{keyring} holds no key {label} (it holds: {listed})")
    if not any(key.label != label and key.retired_micros is None for key in keys):
        raise ConfigurationError(
            f"retiring {label} would leave {keyring} without a key that may sign: rotate first"
        )
    current = found[0].retired_micros
    marked = replace(found[0], retired_micros=min(at_micros, current or at_micros))
    text = [keyring_line(marked) if key is not None and key.label == label else line
            for line, key in lines]  # fmt: skip
    _write_keyring(keyring, text)
    return marked
