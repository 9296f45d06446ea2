"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, as golang.org/x/mod/sumdb/note.

A signed note is a UTF-8 text ending in a newline, a blank line, then one or more lines::

    — <key name> <base64(4-byte big-endian key ID || Ed25519 signature over the text)>

Keys are identified by ``(name, key_id)`` with ``key_id`` the first four bytes of
``SHA-256(name || 0x0A || 0x01 || 32-byte public key)`` read as a big-endian ``int``.
Key strings are those of the Go note package:

* verifier key: ``<name>+<hex8 key_id>+<base64(0x01 || public key)>``
* signer key:   ``PRIVATE+KEY+<name>+<hex8 key_id>+<base64(0x01 || 32-byte seed)>``

Errors: a note that does not follow the format raises :class:`CheckpointError` (in
authtrail every signed note is a checkpoint, and a damaged stored checkpoint is integrity
damage, not bad user input); a note without a verifying signature by a trusted key, or
with a trusted key's signature that fails, raises :class:`SignatureError`. Malformed key
strings raise :class:`ConfigurationError` and never quote the key material.

Pure: no file or network I/O. Key generation draws from the OS random source through
``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from authtrail.errors import (
    CheckpointError,
    ConfigurationError,
    InvalidArgumentError,
    SignatureError,
)

ED25519_ALGORITHM = 0x01
ED25519_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
KEY_ID_SIZE = 4
# The spec requires accepting at least 16; Go's note.Open stops at 100. Same cap as Go,
# so a note Go accepts we accept too, and parsing cost stays bounded.
MAX_SIGNATURES = 100

SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_SIGNER_PREFIX = "PRIVATE+KEY+"
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")

Keyring = Mapping[tuple[str, int], "VerifierKey"]
"""Trusted verifier keys by ``(name, key_id)``; build one with :func:`make_keyring`."""


def is_valid_key_name(name: str) -> bool:
    """Return whether ``name`` may name a key: non-empty, no Unicode space, no ``+``.

    Control characters are refused too: a note may not contain any, so a name with one
    could never appear in a signature line.
    """
    return (
        bool(name)
        and "+" not in name
        and not any(char.isspace() or ord(char) < 0x20 or char == "\x7f" for char in name)
    )


def key_label(name: str, key_id: int) -> str:
    """How reports name a verifier key: ``<name>+<hex8 key id>``, as in its key string."""
    return f"{name}+{key_id:08x}"


def key_id(name: str, public_key: bytes) -> int:
    """Return the C2SP key ID of the Ed25519 ``public_key`` named ``name``.

    Requires a valid key name and a 32-byte key; raises :class:`InvalidArgumentError`.
    """
    if not is_valid_key_name(name):
        raise InvalidArgumentError(f"invalid key name {name!r}: empty, space, '+' or control")
    if len(public_key) != ED25519_KEY_SIZE:
        raise InvalidArgumentError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([ED25519_ALGORITHM]) + public_key
    ).digest()
    return int.from_bytes(digest[:KEY_ID_SIZE], "big")


def _strict_b64decode(text: str) -> bytes:
    """Decode standard padded base64, refusing any other spelling of the same bytes."""
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not standard base64") from exc
    # Canonical form only: one byte string, one text (no stray padding bits).
    if base64.b64encode(decoded).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return decoded


def _split_key_string(text: str) -> tuple[str, int, bytes]:
    """Split ``<name>+<hex8>+<base64>`` (base64 may itself contain '+')."""
    parts = text.split("+", 2)
    if len(parts) != 3 or not _HEX8.fullmatch(parts[1]):
        raise ValueError("expected <name>+<hex8 key id>+<base64 key>")
    name, hex_id, key_b64 = parts
    if not is_valid_key_name(name):
        raise ValueError("invalid key name")
    key_data = _strict_b64decode(key_b64)
    if len(key_data) != 1 + ED25519_KEY_SIZE or key_data[0] != ED25519_ALGORITHM:
        raise ValueError("key is not 0x01 (Ed25519) followed by 32 bytes")
    return name, int(hex_id, 16), key_data[1:]


@dataclass(frozen=True)
class VerifierKey:
    """A trusted Ed25519 public key and its name; ``key_id`` is derived, never stored apart.

    Requires a valid key name and a 32-byte public key (:class:`InvalidArgumentError`).
    """

    name: str
    public_key: bytes
    # Unix microseconds from which this key may no longer sign a checkpoint on its own
    # (a keyring's ``retired`` mark, stream/core/rotation.py); None: not retired.
    retired_micros: int | None = None
    key_id: int = field(init=False)
    _public: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", key_id(self.name, self.public_key))
        try:
            public = Ed25519PublicKey.from_public_bytes(self.public_key)
        except ValueError as exc:
            raise InvalidArgumentError(f"not an Ed25519 public key: {exc}") from exc
        object.__setattr__(self, "_public", public)

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse a verifier key string ``<name>+<hex8 key id>+<base64(0x01 || key)>``.

        Raises :class:`ConfigurationError` if it is malformed, names another algorithm, or
        its key ID does not match its name and key.
        """
        if text.startswith(_SIGNER_PREFIX):
            raise ConfigurationError("a signer (private) key was given where a verifier key goes")
        try:
            name, stated_id, public_key = _split_key_string(text)
            verifier = cls(name, public_key)
        except (ValueError, InvalidArgumentError) as exc:
            raise ConfigurationError(f"malformed verifier key: {exc}") from None
        if verifier.key_id != stated_id:
            raise ConfigurationError(
                f"verifier key {name!r}: stated key id {stated_id:08x} does not match the key "
                f"({verifier.key_id:08x})"
            )
        return verifier

    @cached_property
    def label(self) -> str:
        """How reports name this key: ``<name>+<hex8 key id>`` (:func:`key_label`)."""
        return key_label(self.name, self.key_id)

    def key_string(self) -> str:
        """Return the verifier key string (inverse of :meth:`parse`; no retirement mark)."""
        key_b64 = base64.b64encode(bytes([ED25519_ALGORITHM]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{key_b64}"

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check that ``signature`` is this key's Ed25519 signature of ``message``.

        Raises :class:`SignatureError` if it is not (including a wrong-length signature).
        """
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            raise SignatureError(
                f"invalid signature for key {self.name}+{self.key_id:08x}"
            ) from None


class Signer:
    """An Ed25519 signing key with its name. ``repr`` and errors never show the secret."""

    __slots__ = ("_private", "_verifier", "key_id", "name")

    def __init__(self, name: str, seed: bytes) -> None:
        """Build a signer from its 32-byte RFC 8032 seed (the "secret key").

        Raises :class:`InvalidArgumentError` for a bad name or seed size.
        """
        if len(seed) != ED25519_KEY_SIZE:
            raise InvalidArgumentError("Ed25519 seed must be 32 bytes")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.name = name
        public_key = self._private.public_key().public_bytes_raw()
        self.key_id = key_id(name, public_key)
        # Made once: every checkpoint asks for it (~6 µs a time to derive and check).
        self._verifier = VerifierKey(name, public_key)

    @classmethod
    def parse(cls, text: str) -> Signer:
        """Parse a signer key string ``PRIVATE+KEY+<name>+<hex8>+<base64(0x01 || seed)>``.

        Raises :class:`ConfigurationError` (without quoting the key) if it is malformed or
        its key ID does not match the public key derived from the seed.
        """
        if not text.startswith(_SIGNER_PREFIX):
            raise ConfigurationError("malformed signer key: does not start with PRIVATE+KEY+")
        try:
            name, stated_id, seed = _split_key_string(text[len(_SIGNER_PREFIX) :])
            signer = cls(name, seed)
        except (ValueError, InvalidArgumentError) as exc:
            raise ConfigurationError(f"malformed signer key: {exc}") from None
        if signer.key_id != stated_id:
            raise ConfigurationError(
                f"signer key {name!r}: stated key id does not match the key derived from it"
            )
        return signer

    def verifier_key(self) -> VerifierKey:
        """Return the public half, to hand to verifiers."""
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature (RFC 8032, deterministic) of ``message``."""
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id:08x})"


def generate_key_strings(name: str) -> tuple[str, str]:
    """Generate a fresh Ed25519 key named ``name``; return ``(signer_key, verifier_key)``.

    The signer key string is the secret: store it only where nobody else can read it.
    Raises :class:`InvalidArgumentError` for an invalid key name.
    """
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    verifier = Signer(name, seed).verifier_key()
    seed_b64 = base64.b64encode(bytes([ED25519_ALGORITHM]) + seed).decode("ascii")
    signer_key = f"{_SIGNER_PREFIX}{name}+{verifier.key_id:08x}+{seed_b64}"
    return signer_key, verifier.key_string()


def make_keyring(keys: Iterable[VerifierKey]) -> Keyring:
    """Index trusted ``keys`` by ``(name, key_id)``; repeated identical keys collapse.

    A key given twice with different retirement marks keeps the earliest (a key retired
    in any source is retired). Two different public keys under the same
    ``(name, key_id)`` make every signature by either ambiguous, so that raises
    :class:`ConfigurationError`.
    """
    keyring: dict[tuple[str, int], VerifierKey] = {}
    for key in keys:
        known = keyring.setdefault((key.name, key.key_id), key)
        if known.public_key != key.public_key:
            raise ConfigurationError(f"ambiguous key {key.name}+{key.key_id:08x} in keyring")
        marks = [m for m in (known.retired_micros, key.retired_micros) if m is not None]
        if marks and min(marks) != known.retired_micros:
            keyring[key.name, key.key_id] = replace(known, retired_micros=min(marks))
    return keyring


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key ID and the raw signature bytes."""

    name: str
    key_id: int
    signature: bytes


@dataclass(frozen=True)
class Note:
    """An opened note: its text and the signatures that verified / that were ignored."""

    text: bytes
    signatures: tuple[NoteSignature, ...]
    unverified_signatures: tuple[NoteSignature, ...]


# Control characters other than newline (a regex: verify opens every stored note, and a
# per-character generator took ~0.09 ms a 400-character note, this ~0.01 ms).
_CONTROL_CHARACTER = re.compile("[\x00-\x09\x0b-\x1f]")


def _check_note_characters(text: str) -> bool:
    return _CONTROL_CHARACTER.search(text) is None


def sign_note(text: bytes, *signers: Signer) -> bytes:
    """Return the signed note: ``text``, a blank line, one signature line per signer.

    Requires: ``text`` is non-empty UTF-8 ending in ``\\n`` without control characters
    other than newline; at least one signer, no two with the same ``(name, key_id)``.
    Raises :class:`InvalidArgumentError` otherwise.
    """
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(f"note text is not UTF-8: {exc}") from None
    if not decoded.endswith("\n") or not _check_note_characters(decoded):
        raise InvalidArgumentError("note text must end in a newline and hold no control chars")
    if not signers or len({(s.name, s.key_id) for s in signers}) != len(signers):
        raise InvalidArgumentError("need at least one signer, each key once")
    if len(signers) > MAX_SIGNATURES:
        raise InvalidArgumentError(f"at most {MAX_SIGNATURES} signatures fit a note")
    lines = []
    for signer in signers:
        payload = signer.key_id.to_bytes(KEY_ID_SIZE, "big") + signer.sign(text)
        lines.append(f"{SIGNATURE_PREFIX}{signer.name} {base64.b64encode(payload).decode()}\n")
    return text + b"\n" + "".join(lines).encode("utf-8")


def parse_signature_line(line: str) -> NoteSignature:
    """Parse one signature line ``— <name> base64(key_id || signature)`` (no newline).

    Verifies nothing. Raises :class:`CheckpointError` if the line is malformed.
    """
    if not line.startswith(SIGNATURE_PREFIX):
        raise CheckpointError("malformed note: signature line does not start with '\u2014 '")
    name, space, payload_b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not space or not is_valid_key_name(name):
        raise CheckpointError("malformed note: signature line has no valid key name")
    try:
        payload = _strict_b64decode(payload_b64)
    except ValueError as exc:
        raise CheckpointError(f"malformed note: signature of {name!r}: {exc}") from None
    if len(payload) < KEY_ID_SIZE + 1:
        raise CheckpointError(f"malformed note: signature of {name!r} is too short")
    return NoteSignature(name, int.from_bytes(payload[:KEY_ID_SIZE], "big"), payload[KEY_ID_SIZE:])


def open_note(message: bytes, keyring: Keyring) -> Note:
    """Parse signed note ``message`` and verify its signatures against ``keyring``.

    Signatures by keys not in the keyring are ignored (kept in ``unverified_signatures``),
    as the spec requires: that is what lets old checkpoints verify after key rotation
    and lets witnesses cosign. Every signature by a trusted key must verify.

    Raises :class:`CheckpointError` if the note is malformed (not UTF-8, control
    characters, no blank line before the signatures, a bad signature line, more than
    :data:`MAX_SIGNATURES` signatures); :class:`SignatureError` if a trusted key's
    signature fails (forged or altered text) or no trusted key signed it;
    :class:`ConfigurationError` if a keyring entry is filed under another key's
    ``(name, key_id)`` (build keyrings with :func:`make_keyring`).
    """
    try:
        decoded = message.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("malformed note: not valid UTF-8") from None
    if not _check_note_characters(decoded):
        raise CheckpointError("malformed note: control character other than newline")
    # The text may itself hold blank lines; the signatures start after the last one.
    split = decoded.rfind("\n\n")
    if split < 0:
        raise CheckpointError("malformed note: no blank line before the signatures")
    text, signature_block = decoded[: split + 1], decoded[split + 2 :]
    if not signature_block.endswith("\n"):
        raise CheckpointError("malformed note: signature block must end in a newline")
    lines = signature_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"malformed note: more than {MAX_SIGNATURES} signatures")

    text_bytes = text.encode("utf-8")
    verified: dict[tuple[str, int], NoteSignature] = {}
    unverified: dict[NoteSignature, None] = {}  # ordered set: drop repeated lines
    for line in lines:
        signature = parse_signature_line(line)
        key = keyring.get((signature.name, signature.key_id))
        if key is None:
            unverified[signature] = None
            continue
        if (key.name, key.key_id) != (signature.name, signature.key_id):
            raise ConfigurationError(f"keyring maps {signature.name!r} to another key's entry")
        # Spec: a known key's signature MUST be checked. Check every one, repeats
        # included, so no line by a trusted key is left unexamined.
        key.verify(text_bytes, signature.signature)
        verified.setdefault((signature.name, signature.key_id), signature)

    if not verified:
        seen = ", ".join(f"{s.name}+{s.key_id:08x}" for s in unverified) or "none"
        raise SignatureError(f"note has no signature by a trusted key (signed by: {seen})")
    return Note(text_bytes, tuple(verified.values()), tuple(unverified))
