"""authtrail checkpoints: C2SP tlog-checkpoint bodies with authtrail extension lines.

A checkpoint commits to a tenant's whole log at ``size`` and to the batch it closes::

    <origin>                                  "<origin_prefix>/<tenant_id>"
    <size>                                    events in the tenant's log (= last seq)
    <base64 root>                             RFC 6962 root of the log at that size
    authtrail-batch <first_seq> <last_seq> <base64 batch_root>
    authtrail-chain <base64 chain_hash>       chain hash of the record seq == size
    authtrail-prev <base64 prev_digest>       SHA-256 of the previous checkpoint's body
    authtrail-time <unix microseconds>        when the batch closed (informational)

Every line ends in ``\\n``. Numbers are ASCII decimal without sign or leading zeros;
hashes are 32 bytes in canonical standard base64. The body has exactly one spelling per
value, so ``parse(body).body() == body`` and the digest of a checkpoint is stable.

``prev_digest`` links each checkpoint to its predecessor (:data:`GENESIS_PREV_DIGEST`
for the first): deleting, reordering or replacing a signed checkpoint breaks the link
even where each signature is still valid. Root consistency between checkpoints is
checked elsewhere (Merkle consistency proofs); this module does not import them.

Pure: no I/O. Every malformed or mismatching checkpoint raises :class:`CheckpointError`
(signature failures: its subclass :class:`SignatureError`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from authtrail.errors import CheckpointError, InvalidArgumentError
from authtrail.stream.core.note import Keyring, Note, Signer, VerifierKey, open_note, sign_note
from authtrail.stream.core.rotation import check_retirement

GENESIS_PREV_DIGEST = bytes(32)
HASH_SIZE = 32
MAX_NUMBER = 2**64 - 1  # every number is stored as a ClickHouse UInt64

BATCH_KEYWORD = "authtrail-batch"
CHAIN_KEYWORD = "authtrail-chain"
PREV_KEYWORD = "authtrail-prev"
TIME_KEYWORD = "authtrail-time"

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_LINE_COUNT = 7


# Stricter than tlog-checkpoint's MUST (non-empty): no spaces, '+' or control characters,
# so the origin is also usable as a note key name and splits cleanly. ``\s`` of a str
# pattern is exactly str.isspace() (tests/unit/test_checkpoint.py checks every code point).
_ORIGIN_REFUSED = re.compile(r"[+\s\x00-\x1f\x7f]")


def _is_valid_origin(origin: str) -> bool:
    return bool(origin) and _ORIGIN_REFUSED.search(origin) is None


def checkpoint_origin(origin_prefix: str, tenant_id: str) -> str:
    """Return the origin line of ``tenant_id``'s checkpoints: ``<origin_prefix>/<tenant_id>``.

    Raises :class:`InvalidArgumentError` if the result holds a space, ``+`` or a control
    character, or either part is empty.
    """
    origin = f"{origin_prefix}/{tenant_id}"
    if not origin_prefix or not tenant_id or not _is_valid_origin(origin):
        raise InvalidArgumentError(f"no valid checkpoint origin from {origin!r}")
    return origin


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


@dataclass(frozen=True)
class Checkpoint:
    """One signed statement about a tenant's log; see the module docstring for the body.

    Requires (else :class:`InvalidArgumentError`): a valid origin; ``1 <= batch_first_seq
    <= batch_last_seq == size <= 2^64-1``; ``root``, ``batch_root``, ``chain_hash`` and
    ``prev_digest`` 32 bytes each; ``0 <= time_micros <= 2^64-1``; and ``prev_digest`` is
    :data:`GENESIS_PREV_DIGEST` exactly when ``batch_first_seq == 1`` (the first
    checkpoint of a tenant, and only it, has no predecessor).
    """

    origin: str
    size: int
    root: bytes
    batch_first_seq: int
    batch_last_seq: int
    batch_root: bytes
    chain_hash: bytes
    prev_digest: bytes
    time_micros: int

    def __post_init__(self) -> None:
        if not _is_valid_origin(self.origin):
            raise InvalidArgumentError(f"invalid origin {self.origin!r}")
        if not 1 <= self.size <= MAX_NUMBER:
            raise InvalidArgumentError(f"size must be in 1..2^64-1, got {self.size}")
        if self.batch_last_seq != self.size:
            raise InvalidArgumentError(
                f"batch last seq {self.batch_last_seq} must equal size {self.size}"
            )
        if not 1 <= self.batch_first_seq <= self.batch_last_seq:
            raise InvalidArgumentError(
                f"batch first seq {self.batch_first_seq} must be in 1..{self.batch_last_seq}"
            )
        for name in ("root", "batch_root", "chain_hash", "prev_digest"):
            if len(getattr(self, name)) != HASH_SIZE:
                raise InvalidArgumentError(f"{name} must be {HASH_SIZE} bytes")
        if not 0 <= self.time_micros <= MAX_NUMBER:
            raise InvalidArgumentError(f"time_micros must be in 0..2^64-1, got {self.time_micros}")
        if (self.batch_first_seq == 1) != (self.prev_digest == GENESIS_PREV_DIGEST):
            raise InvalidArgumentError(
                "prev_digest must be the genesis digest exactly for the batch starting at seq 1"
                f" (batch starts at {self.batch_first_seq})"
            )

    def body(self) -> bytes:
        """Return the note text (the signed bytes): seven lines, each ending in ``\\n``."""
        # Made once (the instance is frozen): signing, the next checkpoint's prev_digest
        # and the published record each need it.
        cached: bytes | None = self.__dict__.get("_body")
        if cached is None:
            cached = self._make_body()
            object.__setattr__(self, "_body", cached)
        return cached

    def _make_body(self) -> bytes:
        lines = (
            self.origin,
            str(self.size),
            _b64(self.root),
            f"{BATCH_KEYWORD} {self.batch_first_seq} {self.batch_last_seq} {_b64(self.batch_root)}",
            f"{CHAIN_KEYWORD} {_b64(self.chain_hash)}",
            f"{PREV_KEYWORD} {_b64(self.prev_digest)}",
            f"{TIME_KEYWORD} {self.time_micros}",
        )
        return "".join(line + "\n" for line in lines).encode("utf-8")

    def digest(self) -> bytes:
        """Return SHA-256 of :meth:`body`: what the next checkpoint's ``prev_digest`` holds."""
        return hashlib.sha256(self.body()).digest()

    @classmethod
    def parse(cls, body: bytes) -> Checkpoint:
        """Parse a checkpoint body (the note text, without blank line or signatures).

        Raises :class:`CheckpointError` naming the offending line if the body is not
        UTF-8, does not have exactly the seven lines above in that order (missing,
        duplicated, unknown or extra lines, trailing garbage), spells a number or hash
        in any but the one canonical way, or breaks a :class:`Checkpoint` requirement.
        """
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("checkpoint body is not valid UTF-8") from None
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint body must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) != _LINE_COUNT:
            raise CheckpointError(f"checkpoint body has {len(lines)} lines, expected {_LINE_COUNT}")
        origin, size_text, root_text = lines[:3]
        batch = _fields(lines[3], BATCH_KEYWORD, 3, line_number=4)
        (chain_text,) = _fields(lines[4], CHAIN_KEYWORD, 1, line_number=5)
        (prev_text,) = _fields(lines[5], PREV_KEYWORD, 1, line_number=6)
        (time_text,) = _fields(lines[6], TIME_KEYWORD, 1, line_number=7)
        try:
            checkpoint = cls(
                origin=origin,
                size=_number(size_text, "size"),
                root=_hash(root_text, "root"),
                batch_first_seq=_number(batch[0], "batch first seq"),
                batch_last_seq=_number(batch[1], "batch last seq"),
                batch_root=_hash(batch[2], "batch root"),
                chain_hash=_hash(chain_text, "chain hash"),
                prev_digest=_hash(prev_text, "prev digest"),
                time_micros=_number(time_text, "time"),
            )
        except InvalidArgumentError as exc:
            raise CheckpointError(f"invalid checkpoint {origin!r}: {exc}") from None
        # Canonical spellings make this hold; check anyway, the digest chain relies on it.
        if checkpoint.body() != body:
            raise CheckpointError(f"checkpoint {origin!r} is not in canonical form")
        return checkpoint


def _fields(line: str, keyword: str, count: int, line_number: int) -> list[str]:
    parts = line.split(" ")
    if parts[0] != keyword or len(parts) != count + 1:
        raise CheckpointError(
            f"checkpoint line {line_number} must be '{keyword}' and {count} value(s), "
            f"got {line[:40]!r}"
        )
    return parts[1:]


def _number(text: str, what: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise CheckpointError(f"checkpoint {what} {text[:24]!r} is not a canonical decimal")
    return int(text)


def _hash(text: str, what: str) -> bytes:
    try:
        value = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"checkpoint {what} is not standard base64") from None
    if len(value) != HASH_SIZE or _b64(value) != text:
        raise CheckpointError(f"checkpoint {what} is not a canonical base64 32-byte hash")
    return value


def sign(checkpoint: Checkpoint, *signers: Signer) -> bytes:
    """Return the signed note of ``checkpoint``, signed by each of ``signers`` (at least one).

    Raises :class:`InvalidArgumentError` without a signer or with one key twice.
    """
    return sign_note(checkpoint.body(), *signers)


@dataclass(frozen=True)
class OpenedCheckpoint:
    """A checkpoint whose note verified: the note and the trusted keys that signed it."""

    checkpoint: Checkpoint
    note: Note
    signers: tuple[VerifierKey, ...]

    @property
    def signed_by(self) -> tuple[str, ...]:
        """Labels (``<name>+<hex8 key id>``) of the keys whose signatures verified."""
        return tuple(key.label for key in self.signers)


def open_signed_checkpoint(
    note_text: bytes | str, keyring: Keyring, expected_origin: str | None = None
) -> OpenedCheckpoint:
    """Verify a signed checkpoint note against ``keyring``; parse its body.

    Raises :class:`SignatureError` if no trusted key signed it or a trusted key's
    signature fails, its subclass :class:`~authtrail.stream.core.rotation.RetiredKeyError` if every
    trusted signer was retired at the checkpoint's time stamp, and
    :class:`CheckpointError` if the note or body is malformed or the origin is not
    ``expected_origin`` (when given: a checkpoint of another log or tenant).
    """
    message = note_text.encode("utf-8") if isinstance(note_text, str) else note_text
    note = open_note(message, keyring)
    checkpoint = Checkpoint.parse(note.text)
    signers = tuple(keyring[signature.name, signature.key_id] for signature in note.signatures)
    check_retirement(checkpoint.time_micros, signers)
    if expected_origin is not None and checkpoint.origin != expected_origin:
        raise CheckpointError(
            f"checkpoint origin {checkpoint.origin!r} is not the expected {expected_origin!r}"
        )
    return OpenedCheckpoint(checkpoint, note, signers)


def open_checkpoint(note_text: bytes | str, keyring: Keyring, expected_origin: str) -> Checkpoint:
    """Verify a signed checkpoint note against ``keyring`` and return the checkpoint.

    Raises as :func:`open_signed_checkpoint` does.
    """
    return open_signed_checkpoint(note_text, keyring, expected_origin).checkpoint


def verify_successor(prev: Checkpoint | None, next: Checkpoint) -> None:
    """Check that ``next`` directly follows ``prev`` (``None``: ``next`` is the first).

    Raises :class:`CheckpointError` if the origins differ, the size does not grow, the
    batch does not start at ``prev.size + 1`` (gap or overlap), or ``next.prev_digest``
    is not ``prev.digest()`` (a stale or forged link: a checkpoint was removed, replaced
    or reordered; a genesis link on a later batch cannot even be parsed). Roots are not
    compared here: that needs a consistency proof.
    """
    if prev is None:
        if next.batch_first_seq != 1 or next.prev_digest != GENESIS_PREV_DIGEST:
            raise CheckpointError(
                f"{next.origin} size {next.size}: the first checkpoint must start at seq 1 "
                f"and link to the genesis digest (starts at {next.batch_first_seq}, links to "
                f"{next.prev_digest.hex()})"
            )
        return
    where = f"{next.origin} size {next.size} after size {prev.size}"
    if next.origin != prev.origin:
        raise CheckpointError(f"{where}: origin changed from {prev.origin!r}")
    if next.size <= prev.size:
        raise CheckpointError(f"{where}: size does not grow")
    if next.batch_first_seq != prev.size + 1:
        raise CheckpointError(
            f"{where}: batch starts at seq {next.batch_first_seq}, expected {prev.size + 1}"
        )
    expected_digest = prev.digest()
    if next.prev_digest != expected_digest:
        raise CheckpointError(
            f"{where}: stale or forged prev link: expected {expected_digest.hex()}, "
            f"found {next.prev_digest.hex()}"
        )
