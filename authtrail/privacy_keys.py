"""The embedded subject key store: one directory per tenant (docs/PRIVACY.md, "Key store").

Implements :class:`authtrail.producers.sdk.sealed_values.SubjectKeys`; a KMS-backed store
implements the same operations. Layout under the root (``<data_dir>/privacy`` by default)::

    <tenant>/pseudonym.key            hex HMAC key for the tenant's pseudonyms
    <tenant>/keys/<key_id>            hex AES-256 key of one subject
    <tenant>/subjects/<sha256(subject)>   the subject's current key id
    <tenant>/erased/<sha256(subject)>     JSON: key ids destroyed, and when
    <tenant>/destroyed/<key_id>       tombstone of one destroyed key: JSON, when (µs) and
                                      the pseudonym of the subject whose key it was

A key id is *destroyed* when its tombstone exists and its key file does not
(:meth:`DirectoryKeyStore.destroyed`): what the worker checks before it chains an erasure
record, so that only a true claim of erasure enters the log.

Files are 0600, written whole and fsynced before a key is used (a value sealed under a key
that a crash lost could never be read). Subjects are named by a hash, so a listing does
not show them in clear (it still confirms a guessed one: docs/PRIVACY.md, limits).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from authtrail.atomic_file import read_bounded, replace_file
from authtrail.errors import ConfigurationError
from authtrail.producers.sdk.sealed_values import KEY_BYTES, SubjectKey, pseudonym

_HEX_KEY = re.compile(r"[0-9a-f]{64}\n?\Z")
_KEY_ID = re.compile(r"[0-9a-f]{32}\n?\Z")
_BARE_KEY_ID = re.compile(r"[0-9a-f]{32}\Z")
# A reader cannot tell a lost key from a stored value changed to name a key the tenant
# never had (verify can): the errors say both.
_CHANGED_ROW = "a stored value was changed (run `authtrail verify`)"
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


@dataclass(frozen=True)
class Erasure:
    """What :meth:`DirectoryKeyStore.erase` did: ``destroyed`` now, or nothing because
    ``already`` (the key ids an earlier erasure destroyed, at ``erased_at`` µs)."""

    destroyed: tuple[str, ...]
    already: tuple[str, ...]
    erased_at: int


class DirectoryKeyStore:
    """Subject keys in files under ``root``. Raises :class:`ConfigurationError` with the
    path when the store is unreadable, a key file is corrupt, or a key is lost."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def key_for(self, tenant_id: str, subject: str) -> SubjectKey:
        """The subject's current key, created if it has none. Safe to call from several
        processes at once (producers sealing at the source, the worker): a live key is
        read without a lock; creating one, or replacing a pointer an interrupted erasure
        left, happens under the tenant's lock, so all of them get the same key."""
        pointer = self._tenant(tenant_id) / "subjects" / _subject_file(subject)
        key = self._live_key(tenant_id, pointer)
        if key is not None:
            return key
        with self._locked(tenant_id):
            key = self._live_key(tenant_id, pointer)  # another process may have been first
            if key is not None:
                return key
            pointer.unlink(missing_ok=True)  # an erasure stopped before removing it
            key = SubjectKey(secrets.token_hex(16), secrets.token_bytes(KEY_BYTES))
            keys = self._tenant(tenant_id) / "keys"
            keys.mkdir(parents=True, exist_ok=True)
            replace_file(keys / key.key_id, key.key.hex() + "\n", 0o600)
            pointer.parent.mkdir(parents=True, exist_ok=True)
            replace_file(pointer, key.key_id + "\n", 0o600)  # the key is durable first
            return key

    def _live_key(self, tenant_id: str, pointer: Path) -> SubjectKey | None:
        key_id = self._read_key_id(pointer)
        return None if key_id is None else self.find(tenant_id, key_id)

    @contextmanager
    def _locked(self, tenant_id: str) -> Iterator[None]:
        """Hold the tenant's lock (``flock`` on ``<tenant>/.lock``): what creates or
        destroys a subject's key runs under it. Without it, a process that found a pointer
        to an erased key could delete the pointer another had just written, leaving a live
        key no erasure would ever find."""
        tenant = self._tenant(tenant_id)
        tenant.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(tenant / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def find(self, tenant_id: str, key_id: str) -> SubjectKey | None:
        if not _KEY_ID.match(key_id):
            raise ConfigurationError(f"not a subject key id: {key_id!r}")
        tenant = self._tenant(tenant_id)
        if not tenant.is_dir():
            raise ConfigurationError(
                f"no privacy key store for tenant {tenant_id!r} at {tenant}: keys lost, the "
                f"wrong --data-dir, or {_CHANGED_ROW}"
            )
        path = tenant / "keys" / key_id
        data = read_bounded(path, 256, "subject key")
        if data is None:
            if self._tombstoned(tenant_id, key_id):
                return None
            raise ConfigurationError(
                f"subject key {key_id} of tenant {tenant_id!r} is missing from {path.parent} "
                f"and no erasure destroyed it: the key store was damaged or restored partly, "
                f"or {_CHANGED_ROW}"
            )
        return SubjectKey(key_id, bytes.fromhex(_checked(data, _HEX_KEY, path).strip()))

    def pseudonym_key(self, tenant_id: str) -> bytes:
        path = self._tenant(tenant_id) / "pseudonym.key"
        data = read_bounded(path, 256, "pseudonym key")
        if data is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not _create_exclusive(path, secrets.token_bytes(KEY_BYTES).hex() + "\n"):
                return self.pseudonym_key(tenant_id)
            data = read_bounded(path, 256, "pseudonym key") or b""
        return bytes.fromhex(_checked(data, _HEX_KEY, path).strip())

    def existing_pseudonym_key(self, tenant_id: str) -> bytes:
        """The tenant's pseudonym key; :class:`ConfigurationError` if it has none (a
        reader must not create one: its pseudonyms would match nothing stored)."""
        if not (self._tenant(tenant_id) / "pseudonym.key").exists():
            raise ConfigurationError(
                f"tenant {tenant_id!r} has no pseudonym key under {self.root}: no event of it "
                "was pseudonymised here, or the wrong --data-dir"
            )
        return self.pseudonym_key(tenant_id)

    def destroyed(self, tenant_id: str, key_id: str, subject_pseudonym: str) -> bool:
        """Whether key ``key_id`` of ``tenant_id`` existed here, was destroyed by an
        erasure, and was the key of the subject whose pseudonym is ``subject_pseudonym``.
        False for a live key, for one this store never had, for another subject's, and for
        an id or tenant it could not hold (the worker asks about ids from untrusted input:
        they must not stop it). A key erased before tombstones were written is judged by
        its id alone (no pseudonym was kept). :class:`ConfigurationError` only for a
        damaged store."""
        if not _BARE_KEY_ID.match(key_id) or not _TENANT.match(tenant_id):
            return False
        if (self._tenant(tenant_id) / "keys" / key_id).exists():
            return False  # live, or an erasure stopped before deleting it
        tombstone = self._tenant(tenant_id) / "destroyed" / key_id
        data = read_bounded(tombstone, 1024, "key tombstone")
        if data is None:
            return key_id in self._erased_ids(tenant_id)
        try:
            recorded = json.loads(data)["subject_pseudonym"]
            if not isinstance(recorded, str):
                raise TypeError
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"key tombstone {tombstone} is corrupt") from exc
        return recorded == subject_pseudonym

    def erase(self, tenant_id: str, subject: str) -> Erasure:
        """Destroy ``subject``'s key: idempotent (a second call reports the first)."""
        if not self._tenant(tenant_id).is_dir():  # no key ever: leave no lock file behind
            return Erasure((), (), 0)
        with self._locked(tenant_id):
            return self._erase(tenant_id, subject)

    def _erase(self, tenant_id: str, subject: str) -> Erasure:
        name = _subject_file(subject)
        pointer = self._tenant(tenant_id) / "subjects" / name
        record = self._tenant(tenant_id) / "erased" / name
        earlier_ids, earlier_at = _read_erasure(record)
        key_id = self._read_key_id(pointer)
        if key_id is None:
            return Erasure((), tuple(earlier_ids), earlier_at)
        erased_at = time.time_ns() // 1000
        record.parent.mkdir(parents=True, exist_ok=True)
        # The erasure is written down before the key goes, so a key found missing later
        # is told apart from a damaged store (find()).
        entry = {"key_ids": sorted({*earlier_ids, key_id}), "erased_at": erased_at}
        replace_file(record, json.dumps(entry) + "\n", 0o600)
        # The key's tombstone: one file per key id, so the worker can check an erasure
        # record's claim without reading every erasure of the tenant.
        tombstones = self._tenant(tenant_id) / "destroyed"
        tombstones.mkdir(parents=True, exist_ok=True)
        tombstone = {
            "erased_at": erased_at,
            "subject_pseudonym": pseudonym(self.pseudonym_key(tenant_id), subject),
        }
        replace_file(tombstones / key_id, json.dumps(tombstone) + "\n", 0o600)
        (self._tenant(tenant_id) / "keys" / key_id).unlink(missing_ok=True)
        pointer.unlink(missing_ok=True)
        return Erasure((key_id,), (), erased_at)

    def _tombstoned(self, tenant_id: str, key_id: str) -> bool:
        """Whether an erasure destroyed ``key_id``: its tombstone, or (a store erased
        before tombstones were written) its id in a subject's ``erased/`` record."""
        tombstone = self._tenant(tenant_id) / "destroyed" / key_id
        if read_bounded(tombstone, 1024, "key tombstone") is not None:
            return True
        return key_id in self._erased_ids(tenant_id)

    def _erased_ids(self, tenant_id: str) -> set[str]:
        erased = self._tenant(tenant_id) / "erased"
        found: set[str] = set()
        for path in erased.iterdir() if erased.is_dir() else ():
            found.update(_read_erasure(path)[0])
        return found

    def _read_key_id(self, pointer: Path) -> str | None:
        data = read_bounded(pointer, 64, "subject key pointer")
        return None if data is None else _checked(data, _KEY_ID, pointer).strip()

    def _tenant(self, tenant_id: str) -> Path:
        if not _TENANT.match(tenant_id):  # the name becomes a path component
            raise ConfigurationError(f"not a tenant id: {tenant_id!r}")
        return self.root / tenant_id


def _subject_file(subject: str) -> str:
    return hashlib.sha256(subject.encode("utf-8")).hexdigest()


def _checked(data: bytes, pattern: re.Pattern[str], path: Path) -> str:
    text = data.decode("ascii", "replace")
    if not pattern.match(text):
        raise ConfigurationError(f"key store file {path} is corrupt (unexpected content)")
    return text


def _read_erasure(path: Path) -> tuple[list[str], int]:
    """(key ids destroyed, when in µs) of a subject; ([], 0) if it was never erased."""
    data = read_bounded(path, 1 << 20, "erasure record")
    if data is None:
        return [], 0
    try:
        entry = json.loads(data)
        ids, at = entry["key_ids"], entry["erased_at"]
        if not all(isinstance(key_id, str) for key_id in ids) or not isinstance(at, int):
            raise TypeError
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"erasure record {path} is corrupt") from exc
    return list(ids), at


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` (0600, fsynced) unless it exists; False if it did."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    replace_file(temporary, text, 0o600)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    return True
