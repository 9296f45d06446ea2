"""Witness cosignatures (c2sp.org/tlog-cosignature, Ed25519 ``cosignature/v1``).

A witness cosigns a checkpoint by adding one more signed-note signature line::

    — <witness name> base64(key_id || u64(timestamp) || Ed25519 signature)

* ``key_id`` = first 4 bytes of ``SHA-256(name || 0x0A || 0x04 || public_key)``, read
  big-endian: the signed-note key ID with signature type ``0x04`` ("timestamped Ed25519
  witness cosignature"), so a cosignature line never matches a log key (type ``0x01``)
  and :func:`authtrail.stream.core.note.open_note` ignores it as a signature by an unknown key.
* ``timestamp`` is POSIX seconds, 8 bytes big-endian, at most ``2^63 - 1``.
* the Ed25519 signature covers ``"cosignature/v1\\ntime <timestamp>\\n" || body``, with
  ``body`` the whole note text of the checkpoint (extension lines included, signature
  lines excluded) and ``<timestamp>`` ASCII decimal without leading zeros.

The Ed25519 message does not commit to the witness name, so one key must never serve two
witness names. A witness's verifier key is a C2SP vkey with type ``0x04``:
``<name>+<hex8 key_id>+<base64(0x04 || public_key)>``. The private half is an ordinary
authtrail signer key (``authtrail keygen --name <witness name>``); :func:`witness_key_of`
derives the vkey from it.

Pure: no I/O. A cosignature line by a trusted witness that is malformed or does not
verify raises :class:`CosignatureError` (a forgery, never skipped); too few valid
cosignatures raise :class:`MissingCosignaturesError`. Both are
:class:`~authtrail.errors.CheckpointError`\\ s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from authtrail.errors import CheckpointError, ConfigurationError, InvalidArgumentError
from authtrail.stream.core.note import (
    ED25519_KEY_SIZE,
    ED25519_SIGNATURE_SIZE,
    KEY_ID_SIZE,
    SIGNATURE_PREFIX,
    Note,
    Signer,
    VerifierKey,
    is_valid_key_name,
    parse_signature_line,
)

__all__ = [
    "COSIGNATURE_ALGORITHM",
    "COSIGNATURE_HEADER",
    "MAX_TIMESTAMP",
    "CosignatureError",
    "MissingCosignaturesError",
    "WitnessCosignature",
    "WitnessKey",
    "WitnessPolicy",
    "append_cosignatures",
    "check_witness_reply",
    "cosign",
    "cosignature_key_id",
    "cosigned_message",
    "verify_cosignatures",
    "witness_key_of",
]

COSIGNATURE_ALGORITHM = 0x04
"""Signed-note signature type of timestamped Ed25519 witness cosignatures."""

COSIGNATURE_HEADER = b"cosignature/v1\n"
"""First line of every cosigned message: domain separation from note signatures."""

MAX_TIMESTAMP = 2**63 - 1
TIMESTAMP_SIZE = 8
_PAYLOAD_SIZE = KEY_ID_SIZE + TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


class CosignatureError(CheckpointError):
    """A cosignature line by a trusted witness is malformed or does not verify (forged)."""


class MissingCosignaturesError(CosignatureError):
    """Fewer than ``required`` distinct trusted witnesses cosigned the checkpoint.

    ``found`` names the witnesses whose cosignatures did verify.
    """

    def __init__(self, origin: str, required: int, found: Iterable[str]) -> None:
        self.origin = origin
        self.required = required
        self.found = tuple(found)
        super().__init__(
            f"checkpoint {origin!r}: {len(self.found)} of {required} required witness "
            f"cosignatures (cosigned by: {', '.join(self.found) or 'none'})"
        )


def cosignature_key_id(name: str, public_key: bytes) -> int:
    """Return the key ID of witness ``name`` with Ed25519 ``public_key`` (type ``0x04``).

    Requires a valid key name (non-empty, no space, ``+`` or control character) and a
    32-byte key; raises :class:`InvalidArgumentError` otherwise.
    """
    if not is_valid_key_name(name):
        raise InvalidArgumentError(f"invalid witness name {name!r}: empty, space, '+' or control")
    if len(public_key) != ED25519_KEY_SIZE:
        raise InvalidArgumentError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([COSIGNATURE_ALGORITHM]) + public_key
    ).digest()
    return int.from_bytes(digest[:KEY_ID_SIZE], "big")


def cosigned_message(body: bytes, time_seconds: int) -> bytes:
    """Return the bytes a witness signs: ``cosignature/v1\\ntime <t>\\n`` then ``body``.

    Requires ``body`` to be a note text (non-empty, ending in ``\\n``) and
    ``0 <= time_seconds <= 2^63 - 1``; raises :class:`InvalidArgumentError` otherwise.
    """
    if not body.endswith(b"\n"):
        raise InvalidArgumentError("a cosigned body must be a note text ending in a newline")
    _require_timestamp(time_seconds)
    return COSIGNATURE_HEADER + b"time %d\n" % time_seconds + body


def _require_timestamp(time_seconds: int) -> None:
    if isinstance(time_seconds, bool) or not 0 <= time_seconds <= MAX_TIMESTAMP:
        raise InvalidArgumentError(f"cosignature time {time_seconds!r} is not in 0..2^63-1")


@dataclass(frozen=True)
class WitnessKey:
    """A trusted witness: its name and Ed25519 public key; ``key_id`` is derived.

    Requires a valid key name and a 32-byte Ed25519 public key
    (:class:`InvalidArgumentError`).
    """

    name: str
    public_key: bytes
    key_id: int = field(init=False)
    _public: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", cosignature_key_id(self.name, self.public_key))
        try:
            public = Ed25519PublicKey.from_public_bytes(self.public_key)
        except ValueError as exc:
            raise InvalidArgumentError(f"not an Ed25519 public key: {exc}") from exc
        object.__setattr__(self, "_public", public)

    @classmethod
    def parse(cls, text: str) -> WitnessKey:
        """Parse a witness vkey ``<name>+<hex8 key id>+<base64(0x04 || public key)>``.

        Raises :class:`ConfigurationError` if it is malformed, is not of type ``0x04``
        (a log's ``0x01`` key: convert with :meth:`from_verifier_key` if that is meant),
        or its key ID does not match its name and key.
        """
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not _HEX8.fullmatch(parts[1]):
            raise ConfigurationError("malformed witness key: expected <name>+<hex8>+<base64>")
        name, hex_id, key_b64 = parts
        try:
            key_data = base64.b64decode(key_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"witness key {name!r}: key is not standard base64") from None
        if base64.b64encode(key_data).decode("ascii") != key_b64:
            raise ConfigurationError(f"witness key {name!r}: key is not canonical base64")
        if len(key_data) != 1 + ED25519_KEY_SIZE or key_data[0] != COSIGNATURE_ALGORITHM:
            raise ConfigurationError(
                f"witness key {name!r} is not type 0x04 (Ed25519 cosignature) with 32 bytes"
            )
        try:
            key = cls(name, key_data[1:])
        except InvalidArgumentError as exc:
            raise ConfigurationError(f"malformed witness key: {exc}") from None
        if key.key_id != int(hex_id, 16):
            raise ConfigurationError(
                f"witness key {name!r}: stated key id {hex_id} does not match the key "
                f"({key.key_id:08x})"
            )
        return key

    @classmethod
    def from_verifier_key(cls, key: VerifierKey) -> WitnessKey:
        """Return the witness key of the same name and Ed25519 key as log key ``key``."""
        return cls(key.name, key.public_key)

    def key_string(self) -> str:
        """Return the witness vkey string (inverse of :meth:`parse`)."""
        key_b64 = base64.b64encode(bytes([COSIGNATURE_ALGORITHM]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{key_b64}"

    def verify(self, body: bytes, time_seconds: int, signature: bytes) -> None:
        """Check ``signature`` is this witness's cosignature of ``body`` at ``time_seconds``.

        Raises :class:`CosignatureError` if it is not (wrong length included), and
        :class:`InvalidArgumentError` under :func:`cosigned_message`'s preconditions.
        """
        try:
            self._public.verify(signature, cosigned_message(body, time_seconds))
        except InvalidSignature:
            raise CosignatureError(
                f"invalid cosignature by witness {self.name}+{self.key_id:08x} "
                f"(time {time_seconds})"
            ) from None


def witness_key_of(signer: Signer) -> WitnessKey:
    """Return the witness key (vkey type ``0x04``) of ``signer``'s Ed25519 key."""
    return WitnessKey(signer.name, signer.verifier_key().public_key)


def cosign(body: bytes, signer: Signer, time_seconds: int) -> str:
    """Return the cosignature line of ``body`` by witness ``signer`` at ``time_seconds``.

    The line is ``— <name> base64(key_id || u64(time) || signature)\\n``. Requires a note
    text ``body`` ending in ``\\n`` and ``0 <= time_seconds <= 2^63 - 1``; raises
    :class:`InvalidArgumentError` otherwise.
    """
    message = cosigned_message(body, time_seconds)
    key_id = witness_key_of(signer).key_id
    payload = (
        key_id.to_bytes(KEY_ID_SIZE, "big")
        + time_seconds.to_bytes(TIMESTAMP_SIZE, "big")
        + signer.sign(message)
    )
    return f"{SIGNATURE_PREFIX}{signer.name} {base64.b64encode(payload).decode('ascii')}\n"


@dataclass(frozen=True)
class WitnessCosignature:
    """One verified cosignature: which witness, when (POSIX seconds), and its signature."""

    name: str
    key_id: int
    timestamp: int
    signature: bytes


def verify_cosignatures(
    note: Note,
    witness_keys: Iterable[WitnessKey],
    required: int,
    *,
    latest_time: int | None = None,
) -> list[WitnessCosignature]:
    """Verify the witness cosignatures of an opened checkpoint note.

    ``note`` comes from :func:`authtrail.stream.core.note.open_note` (so the log's own signature is
    already verified); cosignature lines are among its ``unverified_signatures``. Lines
    by keys not in ``witness_keys`` are ignored, as the signed-note spec requires. Every
    line whose ``(name, key_id)`` is a trusted witness's must verify. Returns one
    :class:`WitnessCosignature` per distinct trusted witness (its first valid line), in
    note order.

    Requires ``0 <= required <= `` the number of distinct witness keys
    (:class:`InvalidArgumentError`: a policy no note could meet is a configuration bug).
    ``latest_time``, when given, rejects cosignatures timestamped after it (POSIX
    seconds), which the spec allows verifiers to do.

    Raises :class:`CosignatureError` if a trusted witness's line is malformed (not
    ``4 + 8 + 64`` bytes, timestamp above ``2^63 - 1``), timestamped after
    ``latest_time``, or does not verify over ``note.text`` (forged, or copied from
    another checkpoint); :class:`MissingCosignaturesError` if fewer than ``required``
    distinct trusted witnesses cosigned.
    """
    trusted: dict[tuple[str, int], WitnessKey] = {}
    for key in witness_keys:
        known = trusted.setdefault((key.name, key.key_id), key)
        if known.public_key != key.public_key:
            raise InvalidArgumentError(f"ambiguous witness key {key.name}+{key.key_id:08x}")
    if isinstance(required, bool) or not 0 <= required <= len(trusted):
        raise InvalidArgumentError(
            f"required cosignatures {required!r} must be in 0..{len(trusted)} (trusted witnesses)"
        )
    origin = note.text.split(b"\n", 1)[0].decode("utf-8", "replace")
    found: dict[tuple[str, int], WitnessCosignature] = {}
    for line in note.unverified_signatures:
        witness = trusted.get((line.name, line.key_id))
        if witness is None:
            continue
        where = f"checkpoint {origin!r}: cosignature by {line.name}+{line.key_id:08x}"
        # NoteSignature.signature is the payload after the 4-byte key ID.
        if len(line.signature) != TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE:
            raise CosignatureError(
                f"{where} has {KEY_ID_SIZE + len(line.signature)} bytes, expected {_PAYLOAD_SIZE}"
            )
        timestamp = int.from_bytes(line.signature[:TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            raise CosignatureError(f"{where}: timestamp {timestamp} exceeds 2^63-1")
        if latest_time is not None and timestamp > latest_time:
            raise CosignatureError(f"{where}: timestamp {timestamp} is after {latest_time}")
        try:
            witness.verify(note.text, timestamp, line.signature[TIMESTAMP_SIZE:])
        except CosignatureError as exc:
            raise CosignatureError(f"{where}: {exc}") from None
        found.setdefault(
            (witness.name, witness.key_id),
            WitnessCosignature(
                witness.name, witness.key_id, timestamp, line.signature[TIMESTAMP_SIZE:]
            ),
        )
    if len(found) < required:
        raise MissingCosignaturesError(origin, required, (c.name for c in found.values()))
    return list(found.values())


@dataclass(frozen=True)
class WitnessPolicy:
    """Which witnesses a verifier trusts and how many of them must cosign a checkpoint.

    Requires distinct ``(name, key_id)`` pairs to name one key each and
    ``0 <= required <=`` the number of distinct witnesses; raises
    :class:`InvalidArgumentError` otherwise (a policy no note could meet).
    """

    keys: tuple[WitnessKey, ...]
    required: int

    def __post_init__(self) -> None:
        # verify_cosignatures checks the same preconditions; fail when the policy is made.
        distinct = {(key.name, key.key_id): key.public_key for key in self.keys}
        if len(distinct) != len({(key.name, key.key_id, key.public_key) for key in self.keys}):
            raise InvalidArgumentError("two different witness keys share a name and key id")
        if isinstance(self.required, bool) or not 0 <= self.required <= len(distinct):
            raise InvalidArgumentError(
                f"required cosignatures {self.required!r} must be in 0..{len(distinct)} "
                "(trusted witnesses)"
            )

    def check(self, note: Note, *, required: int | None = None) -> list[WitnessCosignature]:
        """:func:`verify_cosignatures` of ``note`` under this policy (``required`` overrides).

        Raises :class:`CosignatureError` / :class:`MissingCosignaturesError` as it does.
        """
        count = self.required if required is None else required
        return verify_cosignatures(note, self.keys, count)


def append_cosignatures(note: bytes, lines: Iterable[str]) -> bytes:
    """Return ``note`` with the signature ``lines`` (e.g. a witness's reply) appended.

    Lines already in the note are not repeated. Nothing is verified here: open the
    result with :func:`authtrail.stream.core.note.open_note` and :func:`verify_cosignatures`.

    Requires ``note`` to be a signed note (text, blank line, signature lines, ending in
    ``\\n``) and every line to be one signature line ``— <name> <base64>`` with or
    without its final ``\\n``; raises :class:`InvalidArgumentError` otherwise.
    """
    if b"\n\n" not in note or not note.endswith(b"\n") or note.endswith(b"\n\n"):
        raise InvalidArgumentError("not a signed note: no blank line before signature lines")
    present = set(note[note.rfind(b"\n\n") + 2 :].decode("utf-8", "replace").splitlines())
    added: list[str] = []
    for raw in lines:
        line = raw[:-1] if raw.endswith("\n") else raw
        name, space, payload = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
        if (
            not line.startswith(SIGNATURE_PREFIX)
            or not space
            or not is_valid_key_name(name)
            or not payload
            or any(char.isspace() or ord(char) < 0x20 for char in payload)
        ):
            raise InvalidArgumentError(f"not a note signature line: {line[:60]!r}")
        if line not in present:
            present.add(line)
            added.append(line + "\n")
    return note + "".join(added).encode("utf-8")


def check_witness_reply(body: bytes, lines: Iterable[str], witness: WitnessKey) -> list[str]:
    """Return the lines of a witness's reply that are ``witness``'s valid cosignatures of
    the note text ``body``, each ending in ``\\n``; other keys' lines are dropped.

    For a submitter, before it publishes what a witness sent: a line by another key is
    no statement of this witness, and one by its key that does not verify is a forgery.

    Raises :class:`CheckpointError` for a malformed line, :class:`CosignatureError` for
    a line by ``witness`` that does not verify over ``body``, and
    :class:`MissingCosignaturesError` when no line is by ``witness``.
    """
    parsed = [(line, parse_signature_line(line.removesuffix("\n"))) for line in lines]
    kept = [(line, signature) for line, signature in parsed
            if (signature.name, signature.key_id) == (witness.name, witness.key_id)]  # fmt: skip
    verify_cosignatures(Note(body, (), tuple(s for _, s in kept)), [witness], 1)
    return [line.removesuffix("\n") + "\n" for line, _ in kept]
