"""A witness's decision on one ``add-checkpoint`` request (c2sp.org/tlog-witness), pure.

A witness keeps, per log origin, the newest checkpoint it cosigned. It cosigns a new
checkpoint only if the log's key signed it and an RFC 6962 consistency proof shows that
its tree extends the stored one, so it never cosigns a rollback or a fork.

Request body (every line ends in ``\\n``)::

    old <size the client believes the witness holds>
    <base64 consistency proof hash>          zero to 63 lines
                                             one empty line
    <signed checkpoint note>

Checks, in the spec's order, each with the refusal it raises (status for the adapter):

=====================================================  ==============================  ====
malformed request, note or checkpoint body             :class:`MalformedRequestError`  400
origin not configured                                  :class:`UnknownOriginError`     404
no valid signature by a key trusted for the origin     :class:`LogSignatureError`      403
old size above the checkpoint's size                   :class:`RollbackError`          400
old size is not the size the witness holds             :class:`SizeConflictError`      409
consistency proof does not verify                      :class:`ConsistencyProofError`  422
same size as the witness holds, different root         :class:`ForkError`              409
=====================================================  ==============================  ====

A 409 for a size conflict carries the witness's size (``text/x.tlog.size``), so the
client can retry with a proof from that size. An origin never cosigned counts as size 0
with the empty tree's root: its first checkpoint needs ``old 0`` and an empty proof.

Which log keys a witness trusts is a :class:`LogTrust`: exact origins, and, an
authtrail-specific convenience, *prefixes*: an entry ending in ``/`` (e.g.
``authtrail.local/``) trusts its keys for every origin that is that prefix plus one more
non-empty path segment without ``/`` (``authtrail.local/acme``, not
``authtrail.local/a/b``), because authtrail logs are per tenant,
``<log_origin>/<tenant_id>``, and tenants appear without the witness being told. An
exact entry wins over a prefix.

The witness parses only what tlog-checkpoint defines (origin, size, root; extension
lines are opaque), so it can witness any RFC 6962 log signed with Ed25519 notes.

Pure: no I/O, no clock. Persisting the result atomically with the check of the old size
is the adapter's job (authtrail/witness.py).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from authtrail.errors import (
    AuthtrailError,
    CheckpointError,
    ConfigurationError,
    InvalidArgumentError,
    ProofError,
    RootMismatchError,
    SignatureError,
    VerificationError,
)
from authtrail.stream.core.merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from authtrail.stream.core.note import Keyring, VerifierKey, make_keyring, open_note

MAX_PROOF_LINES = 63
"""tlog-witness: a client MUST NOT send more consistency proof lines than this."""

MAX_SIZE = 2**63 - 1  # Go witnesses parse sizes as int64; larger ones are malformed
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


class WitnessRefusal(VerificationError):
    """The witness refuses to cosign; subclasses say why (and map to an HTTP status)."""


class MalformedRequestError(WitnessRefusal):
    """The request, its note or its checkpoint body is not well-formed (400)."""


class UnknownOriginError(WitnessRefusal):
    """No log key is configured for the checkpoint's origin (404)."""


class LogSignatureError(WitnessRefusal):
    """No signature by a key trusted for the origin verifies, or one is forged (403)."""


class RollbackError(WitnessRefusal):
    """The checkpoint is smaller than the old size the client claims (400)."""


class SizeConflictError(WitnessRefusal):
    """The old size is not the size the witness holds; ``current_size`` is (409)."""

    def __init__(self, origin: str, old_size: int, current_size: int) -> None:
        self.origin = origin
        self.old_size = old_size
        self.current_size = current_size
        super().__init__(f"{origin}: old size {old_size} is not the witnessed size {current_size}")


class ConsistencyProofError(WitnessRefusal):
    """The consistency proof from the witnessed tree to the checkpoint fails (422)."""


class ForkError(WitnessRefusal):
    """Same size as the witnessed checkpoint but another root: a fork (409)."""


@dataclass(frozen=True)
class CheckpointHead:
    """The three lines of a tlog-checkpoint body every witness understands."""

    origin: str
    size: int
    root: bytes


def parse_checkpoint_head(body: bytes) -> CheckpointHead:
    """Parse origin, size and root of a tlog-checkpoint note text; extension lines pass.

    Raises :class:`MalformedRequestError` unless ``body`` is UTF-8 ending in ``\\n`` with
    at least three non-empty lines: a non-empty origin, a size in canonical decimal (at
    most ``2^63 - 1``) and a 32-byte root in canonical standard base64.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequestError("checkpoint body is not UTF-8") from None
    lines = text[:-1].split("\n") if text.endswith("\n") else []
    if len(lines) < 3 or not all(lines):
        raise MalformedRequestError("checkpoint body needs three or more non-empty lines")
    origin, size_text, root_text = lines[:3]
    if not _DECIMAL.fullmatch(size_text) or int(size_text) > MAX_SIZE:
        raise MalformedRequestError(f"{origin}: size {size_text[:24]!r} is not canonical decimal")
    root = _decode_hash(root_text)
    if root is None:
        raise MalformedRequestError(f"{origin}: root is not a canonical base64 32-byte hash")
    return CheckpointHead(origin, int(size_text), root)


def _decode_hash(text: str) -> bytes | None:
    try:
        value = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(value) != HASH_SIZE or base64.b64encode(value).decode("ascii") != text:
        return None
    return value


@dataclass(frozen=True)
class AddCheckpointRequest:
    """One ``add-checkpoint`` request: old size, consistency proof, signed note.

    ``origin`` is the note's first line, by which the witness looks up keys and state.
    Requires (:class:`InvalidArgumentError`) ``0 <= old_size <= 2^63 - 1``, at most 63
    proof hashes of 32 bytes each, and a ``note`` whose first line is non-empty UTF-8.
    """

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes
    origin: str = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.old_size, bool) or not 0 <= self.old_size <= MAX_SIZE:
            raise InvalidArgumentError(f"old size {self.old_size!r} is not in 0..2^63-1")
        if len(self.proof) > MAX_PROOF_LINES:
            raise InvalidArgumentError(f"at most {MAX_PROOF_LINES} proof hashes, got more")
        if any(len(element) != HASH_SIZE for element in self.proof):
            raise InvalidArgumentError(f"every proof hash must be {HASH_SIZE} bytes")
        first, newline, _ = self.note.partition(b"\n")
        try:
            origin = first.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgumentError("the note's origin line is not UTF-8") from None
        if not origin or not newline:
            raise InvalidArgumentError("the note has no origin line")
        object.__setattr__(self, "origin", origin)

    def encode(self) -> bytes:
        """Return the HTTP request body (the inverse of :func:`parse_add_checkpoint_request`)."""
        lines = [f"old {self.old_size}"]
        lines += [base64.b64encode(element).decode("ascii") for element in self.proof]
        return ("\n".join(lines) + "\n\n").encode("ascii") + self.note


def parse_add_checkpoint_request(body: bytes) -> AddCheckpointRequest:
    """Parse an ``add-checkpoint`` request body.

    Raises :class:`MalformedRequestError` if there is no empty line after the proof, the
    first line is not ``old <canonical decimal>``, there are more than 63 proof lines, a
    proof line is not a canonical base64 32-byte hash, or the note has no origin line.
    """
    head, separator, note = body.partition(b"\n\n")
    if not separator:
        raise MalformedRequestError("request has no empty line before the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise MalformedRequestError("old size and proof lines must be ASCII") from None
    keyword, space, size_text = lines[0].partition(" ")
    if keyword != "old" or not space or not _DECIMAL.fullmatch(size_text):
        raise MalformedRequestError(f"first line must be 'old <size>', got {lines[0][:40]!r}")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise MalformedRequestError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for number, line in enumerate(lines[1:], 2):
        element = _decode_hash(line)
        if element is None:
            raise MalformedRequestError(f"line {number} is not a base64 32-byte proof hash")
        proof.append(element)
    try:
        return AddCheckpointRequest(int(size_text), tuple(proof), note)
    except InvalidArgumentError as exc:
        raise MalformedRequestError(str(exc)) from None


@dataclass(frozen=True)
class WitnessedCheckpoint:
    """What the witness holds for one origin: the newest checkpoint it cosigned.

    ``note`` is the log's signed note as the witness verified it (kept as evidence);
    ``body`` its text. Build with :func:`witnessed_from_note` or :func:`add_checkpoint`.
    """

    origin: str
    size: int
    root: bytes
    body: bytes
    note: bytes


def witnessed_from_note(note: bytes, expected_origin: str) -> WitnessedCheckpoint:
    """Rebuild the stored state from a note the witness itself persisted.

    Signatures are not checked again: the witness trusts its own state, and must keep
    remembering a log's size after that log's key is rotated out of its configuration.
    Raises :class:`CheckpointError` if the note is malformed or of another origin.
    """
    split = note.rfind(b"\n\n")
    if split < 0:
        raise CheckpointError(f"stored checkpoint of {expected_origin!r} is not a signed note")
    body = note[: split + 1]
    try:
        head = parse_checkpoint_head(body)
    except MalformedRequestError as exc:
        raise CheckpointError(f"stored checkpoint of {expected_origin!r}: {exc}") from None
    if head.origin != expected_origin:
        raise CheckpointError(
            f"stored checkpoint for {expected_origin!r} is of origin {head.origin!r}"
        )
    return WitnessedCheckpoint(head.origin, head.size, head.root, body, note)


class LogTrust:
    """The log keys a witness trusts, by exact origin or by origin prefix (``…/``).

    ``entries`` maps an origin, or a prefix ending in ``/``, to its verifier keys (see
    the module docstring for what a prefix matches). Raises :class:`ConfigurationError`
    for an empty origin, an entry without keys, or two different keys under one
    ``(name, key_id)`` in one entry.
    """

    def __init__(self, entries: Mapping[str, Iterable[VerifierKey]]) -> None:
        self._exact: dict[str, Keyring] = {}
        self._prefixes: dict[str, Keyring] = {}
        for origin, keys in entries.items():
            if not origin or origin == "/":
                raise ConfigurationError("a log origin (or prefix) must not be empty")
            keyring = make_keyring(keys)
            if not keyring:
                raise ConfigurationError(f"no log key configured for {origin!r}")
            (self._prefixes if origin.endswith("/") else self._exact)[origin] = keyring

    def keyring_for(self, origin: str) -> Keyring:
        """Return the keys trusted for ``origin``.

        Raises :class:`UnknownOriginError` if neither the origin nor its prefix (the
        origin up to and including its last ``/``) is configured.
        """
        keyring = self._exact.get(origin)
        if keyring is None:
            prefix, slash, segment = origin.rpartition("/")
            if slash and segment:
                keyring = self._prefixes.get(prefix + "/")
        if keyring is None:
            raise UnknownOriginError(f"{origin}: no log key configured for this origin")
        return keyring


def add_checkpoint(
    request: AddCheckpointRequest, stored: WitnessedCheckpoint | None, trust: LogTrust
) -> WitnessedCheckpoint:
    """Decide whether to cosign ``request``; return the state to persist if so.

    ``stored`` is what the witness holds for ``request.origin`` (``None``: never
    cosigned). The caller must persist the result before cosigning, and must serialise
    calls per origin so that no other request changes the stored state in between.

    Raises the :class:`WitnessRefusal` the module docstring's table names.
    """
    origin = request.origin
    keyring = trust.keyring_for(origin)
    try:
        note = open_note(request.note, keyring)
    except SignatureError as exc:
        raise LogSignatureError(f"{origin}: {exc}") from None
    except AuthtrailError as exc:  # malformed note (CheckpointError)
        raise MalformedRequestError(f"{origin}: {exc}") from None
    head = parse_checkpoint_head(note.text)
    if head.origin != origin:  # cannot differ (same first line); kept as a guard
        raise MalformedRequestError(f"note origin {origin!r} differs from {head.origin!r}")
    if stored is not None and stored.origin != origin:
        raise InvalidArgumentError(f"state of {stored.origin!r} passed for {origin!r}")

    if request.old_size > head.size:
        raise RollbackError(
            f"{origin}: checkpoint size {head.size} is below old size {request.old_size}"
        )
    stored_size, stored_root = (stored.size, stored.root) if stored else (0, EMPTY_ROOT)
    if request.old_size != stored_size:
        raise SizeConflictError(origin, request.old_size, stored_size)
    if head.size == stored_size:
        if request.proof:
            raise ConsistencyProofError(f"{origin}: proof for equal sizes must be empty")
        if head.root != stored_root:
            raise ForkError(
                f"{origin} size {head.size}: root {head.root.hex()} differs from the "
                f"witnessed root {stored_root.hex()}"
            )
    else:
        _verify_proof(origin, stored_size, stored_root, head, request.proof)
    return WitnessedCheckpoint(origin, head.size, head.root, note.text, request.note)


def _verify_proof(
    origin: str, old_size: int, old_root: bytes, head: CheckpointHead, proof: Sequence[bytes]
) -> None:
    try:
        verify_consistency(old_size, head.size, proof, old_root, head.root)
    except (ProofError, RootMismatchError) as exc:
        raise ConsistencyProofError(
            f"{origin}: no consistency from size {old_size} to {head.size}: {exc}"
        ) from None
