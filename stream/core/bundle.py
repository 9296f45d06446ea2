"""Proof bundles: one event's inclusion, or two checkpoints' consistency, checkable offline.

A bundle is a JSON object an outsider verifies with nothing but the log's verifier key
(docs/INTEGRITY.md, section "Proof bundles", is normative; this module follows it):

* ``authtrail-inclusion-v1``: a stored event, its canonical leaf and leaf hash, optionally
  its chain link, an RFC 6962 inclusion proof and the signed checkpoint it leads to;
* ``authtrail-consistency-v1``: two signed checkpoints of one tenant and the RFC 6962
  consistency proof that the newer tree extends the older.

Binary values are canonical padded base64 (as in checkpoint notes); messages show hashes
in hex, like every authtrail message. Verification raises and never returns a bool: a
bundle that is not well-formed raises :class:`FormatError`
(:mod:`authtrail.stream.core.bundle_format`); one that is well-formed but does not prove what it
claims raises a :class:`BundleError` subclass naming the tenant, the seq (or sizes) and what
differed, expected vs calculated.

Pure: no I/O. Reading the file and the keys is the CLI's job (authtrail/cli/prove.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authtrail.errors import (
    CheckpointError,
    FormatError,
    InvalidArgumentError,
    ProofError,
    RootMismatchError,
    VerificationError,
)
from authtrail.stream.core.audit import key_label
from authtrail.stream.core.bundle_format import (
    CONSISTENCY_FORMAT,
    INCLUSION_FORMAT,
    b64,
    bundle_json,
    event_json,
    load_bundle,
    parse_consistency,
    parse_inclusion,
)
from authtrail.stream.core.canonical import FieldValue, canonical_leaf
from authtrail.stream.core.chain import GENESIS_HASH, chain_hash
from authtrail.stream.core.checkpoint import Checkpoint, checkpoint_origin, open_signed_checkpoint
from authtrail.stream.core.cosignature import CosignatureError, WitnessPolicy
from authtrail.stream.core.merkle import (
    HASH_SIZE,
    leaf_hash,
    verify_consistency,
    verify_inclusion_leaf_hash,
)
from authtrail.stream.core.note import Keyring, Note

__all__ = [
    "CONSISTENCY_FORMAT",
    "INCLUSION_FORMAT",
    "BundleCheckpointError",
    "BundleError",
    "BundleProofError",
    "ChainLinkError",
    "ConsistencyVerdict",
    "EventMismatchError",
    "InclusionVerdict",
    "bundle_json",
    "load_bundle",
    "make_consistency_bundle",
    "make_inclusion_bundle",
    "verify_bundle",
    "verify_consistency_bundle",
    "verify_inclusion_bundle",
]


class BundleError(VerificationError):
    """A well-formed bundle that does not prove its claim; ``what`` names the failed check."""

    def __init__(self, tenant_id: str, where: str, what: str, detail: str) -> None:
        self.tenant_id = tenant_id
        self.where = where  # "seq 7", or "sizes 25..50" for consistency
        self.what = what
        self.detail = detail
        super().__init__(f"tenant {tenant_id!r} {where}: {what}: {detail}")


class EventMismatchError(BundleError):
    """The event's fields do not hash to the bundle's canonical leaf or leaf hash, or the
    event belongs to another tenant than the bundle states."""


class BundleCheckpointError(BundleError):
    """A checkpoint note no trusted key signed, malformed, of another log or tenant, of
    another size than the bundle states, or not linked to the checkpoint it follows."""


class BundleProofError(BundleError):
    """A Merkle proof is malformed or leads to another root than the signed one (or the
    sizes admit no proof: seq outside the tree, old larger than new, a fork)."""


class ChainLinkError(BundleError):
    """The chain link (``prev_hash``, ``hash``) does not hash as INTEGRITY.md §4 says."""


@dataclass(frozen=True)
class InclusionVerdict:
    """What a verified inclusion bundle proved: event ``seq`` is in the signed tree."""

    log_origin: str
    tenant_id: str
    seq: int
    event_id: str | None
    leaf_hash: bytes
    checkpoint: Checkpoint
    signed_by: tuple[str, ...]  # key labels (<name>+<hex8 id>) whose signatures verified
    chain_checked: bool
    cosigned_by: tuple[str, ...] = ()  # trusted witnesses (<name>+<hex8 id>) that cosigned

    def report(self) -> dict[str, Any]:
        """JSON-ready summary (hashes in base64, as in the bundle)."""
        return {
            "ok": True, "format": INCLUSION_FORMAT, "origin": self.checkpoint.origin,
            "tenant_id": self.tenant_id, "seq": self.seq, "event_id": self.event_id,
            "leaf_hash": b64(self.leaf_hash), "tree_size": self.checkpoint.size,
            "root": b64(self.checkpoint.root), "signed_by": list(self.signed_by),
            "chain_checked": self.chain_checked, "cosigned_by": list(self.cosigned_by),
        }  # fmt: skip


@dataclass(frozen=True)
class ConsistencyVerdict:
    """What a verified consistency bundle proved: ``new`` extends ``old``, both signed."""

    log_origin: str
    tenant_id: str
    old: Checkpoint
    new: Checkpoint
    old_signed_by: tuple[str, ...]
    new_signed_by: tuple[str, ...]
    old_cosigned_by: tuple[str, ...] = ()
    new_cosigned_by: tuple[str, ...] = ()

    def report(self) -> dict[str, Any]:
        """JSON-ready summary (roots in base64)."""
        return {
            "ok": True, "format": CONSISTENCY_FORMAT, "origin": self.new.origin,
            "tenant_id": self.tenant_id, "old_size": self.old.size, "new_size": self.new.size,
            "old_root": b64(self.old.root), "new_root": b64(self.new.root),
            "old_signed_by": list(self.old_signed_by), "new_signed_by": list(self.new_signed_by),
            "old_cosigned_by": list(self.old_cosigned_by),
            "new_cosigned_by": list(self.new_cosigned_by),
        }  # fmt: skip


# --- Making bundles --------------------------------------------------------------------


def make_inclusion_bundle(
    *,
    log_origin: str,
    tenant_id: str,
    seq: int,
    event: Mapping[str, FieldValue],
    tree_size: int,
    inclusion_proof: Sequence[bytes],
    checkpoint_note: bytes | str,
    stored_leaf_hash: bytes | None = None,
    chain: tuple[bytes, bytes] | None = None,
) -> dict[str, Any]:
    """Return the inclusion bundle of ``event`` (seq ``seq``) in the tree of ``tree_size``.

    ``event`` holds the stored event fields (timestamps as integer microseconds, maps as
    mappings, null fields as None: they are written as ``null``). ``stored_leaf_hash`` is
    the leaf hash the store holds (default: computed from ``event``); ``chain`` is the
    stored ``(prev_hash, hash)``. ``checkpoint_note`` goes in verbatim: the prover needs
    no key, and a stored value that differs from the event is for the verifier to name.

    Raises:
        InvalidArgumentError: ``1 <= seq <= tree_size`` does not hold, ``event`` has no
            canonical leaf or another ``tenant_id``, a hash is not 32 bytes, or the note
            is not UTF-8.
    """
    if not 1 <= seq <= tree_size:
        raise InvalidArgumentError(f"seq {seq} is not in 1..{tree_size}")
    if event.get("tenant_id") != tenant_id:
        raise InvalidArgumentError(f"event belongs to tenant {event.get('tenant_id')!r}")
    leaf = canonical_leaf(event)
    stated_leaf_hash = leaf_hash(leaf) if stored_leaf_hash is None else stored_leaf_hash
    hashes = [stated_leaf_hash, *inclusion_proof, *(chain or ())]
    if any(len(value) != HASH_SIZE for value in hashes):
        raise InvalidArgumentError("leaf hash, proof and chain hashes must be 32 bytes")
    bundle: dict[str, Any] = {
        "format": INCLUSION_FORMAT,
        "log_origin": log_origin,
        "tenant_id": tenant_id,
        "seq": seq,
        "event": event_json(event),
        "canonical_leaf": b64(leaf),
        "leaf_hash": b64(hashes[0]),
        "tree_size": tree_size,
        "inclusion_proof": [b64(value) for value in inclusion_proof],
        "checkpoint": _note_text(checkpoint_note),
    }
    if chain is not None:
        bundle["chain"] = {"prev_hash": b64(chain[0]), "hash": b64(chain[1])}
    return bundle


def make_consistency_bundle(
    *,
    log_origin: str,
    tenant_id: str,
    old_note: bytes | str,
    new_note: bytes | str,
    consistency_proof: Sequence[bytes],
) -> dict[str, Any]:
    """Return the consistency bundle from checkpoint ``old_note`` to ``new_note``.

    Raises :class:`InvalidArgumentError` if a proof hash is not 32 bytes or a note not UTF-8.
    """
    if any(len(value) != HASH_SIZE for value in consistency_proof):
        raise InvalidArgumentError("consistency proof hashes must be 32 bytes")
    return {
        "format": CONSISTENCY_FORMAT,
        "log_origin": log_origin,
        "tenant_id": tenant_id,
        "old": _note_text(old_note),
        "new": _note_text(new_note),
        "consistency_proof": [b64(value) for value in consistency_proof],
    }


# --- Verifying bundles -----------------------------------------------------------------


def verify_bundle(
    bundle: Mapping[str, Any],
    keyring: Keyring,
    *,
    log_origin: str | None = None,
    witnesses: WitnessPolicy | None = None,
) -> InclusionVerdict | ConsistencyVerdict:
    """Verify an inclusion or consistency bundle, whichever its ``format`` names.

    Raises :class:`FormatError` for an unknown format, else as the verifier it picks.
    """
    kind = bundle.get("format") if isinstance(bundle, Mapping) else None
    if kind == INCLUSION_FORMAT:
        return verify_inclusion_bundle(bundle, keyring, log_origin=log_origin, witnesses=witnesses)
    if kind == CONSISTENCY_FORMAT:
        return verify_consistency_bundle(
            bundle, keyring, log_origin=log_origin, witnesses=witnesses
        )
    raise FormatError(
        f"unknown bundle format {kind!r} (expected {INCLUSION_FORMAT} or {CONSISTENCY_FORMAT})"
    )


def verify_inclusion_bundle(
    bundle: Mapping[str, Any],
    keyring: Keyring,
    *,
    log_origin: str | None = None,
    witnesses: WitnessPolicy | None = None,
) -> InclusionVerdict:
    """Check an inclusion bundle (INTEGRITY.md, "Proof bundles"); ``log_origin`` pins the log.

    With ``witnesses``, the checkpoint must carry ``witnesses.required`` valid
    cosignatures of distinct trusted witnesses (INTEGRITY.md §9), and no forged one.

    Raises:
        FormatError: a key missing or unknown, a value of the wrong type, bad base64, a
            hash not 32 bytes, a field name or value without a canonical encoding.
        EventMismatchError: the event's tenant, canonical leaf or leaf hash differs.
        BundleCheckpointError: the bundle is of another log than ``log_origin``; the
            note is not signed by a key in ``keyring`` (or a trusted signature fails), is
            malformed, is of another log or tenant, or its size is not ``tree_size``; or
            it lacks the cosignatures ``witnesses`` requires, or one of them is forged.
        BundleProofError: ``seq`` is outside the signed tree, or the proof is malformed
            or leads to another root than the signed one.
        ChainLinkError: the chain link is present and does not hash to its ``hash``, seq
            1 does not link to genesis, or at ``seq == tree_size`` it is not the signed
            chain head.
    """
    fields = parse_inclusion(bundle)
    at = _Where(fields.tenant_id, f"seq {fields.seq}")
    _check_pin(at, fields.log_origin, log_origin)
    if fields.event.get("tenant_id") != fields.tenant_id:
        raise at(
            EventMismatchError, "tenant_id", f"the event's is {fields.event.get('tenant_id')!r}"
        )
    try:
        leaf = canonical_leaf(fields.event)
    except InvalidArgumentError as exc:
        raise FormatError(f"bundle event has no canonical leaf: {exc}") from None
    if leaf != fields.canonical_leaf:
        raise at(
            EventMismatchError, "canonical leaf", _leaf_difference(fields.canonical_leaf, leaf)
        )
    calculated_leaf_hash = leaf_hash(leaf)
    if calculated_leaf_hash != fields.leaf_hash:
        raise at(EventMismatchError, "leaf hash", _differs(fields.leaf_hash, calculated_leaf_hash))

    checkpoint, signed_by, opened = _open(
        at, fields.checkpoint, keyring, fields.log_origin, "checkpoint"
    )
    cosigned_by = _cosigners(at, opened, witnesses, "checkpoint")
    size = checkpoint.size
    if fields.tree_size != size:
        raise at(BundleCheckpointError, "tree size", f"expected {size} (signed), the bundle says "
                 f"{fields.tree_size}")  # fmt: skip
    if fields.seq > size:
        raise at(BundleProofError, "seq", f"not in the signed tree of size {size} (1..{size})")
    try:
        verify_inclusion_leaf_hash(
            calculated_leaf_hash, fields.seq - 1, size, fields.inclusion_proof, checkpoint.root
        )
    except RootMismatchError as exc:
        detail = f"root of tree size {size}: {_differs(exc.expected_root, exc.calculated_root)}"
        raise at(BundleProofError, "inclusion proof", detail) from exc
    except ProofError as exc:
        raise at(BundleProofError, "inclusion proof", str(exc)) from exc

    if fields.chain is not None:
        _check_chain(at, fields.seq, calculated_leaf_hash, fields.chain, checkpoint)
    event_id = fields.event.get("event_id")
    return InclusionVerdict(
        fields.log_origin, fields.tenant_id, fields.seq,
        event_id if isinstance(event_id, str) else None, calculated_leaf_hash, checkpoint,
        signed_by, fields.chain is not None, cosigned_by,
    )  # fmt: skip


def verify_consistency_bundle(
    bundle: Mapping[str, Any],
    keyring: Keyring,
    *,
    log_origin: str | None = None,
    witnesses: WitnessPolicy | None = None,
) -> ConsistencyVerdict:
    """Check a consistency bundle (INTEGRITY.md, "Proof bundles"); ``log_origin`` pins the log.

    With ``witnesses``, ``new`` must carry ``witnesses.required`` valid cosignatures of
    distinct trusted witnesses. ``old`` needs none: once ``new`` is witnessed and proven
    to extend ``old``, ``old`` is part of the witnessed history (an old checkpoint is
    often one the verifier already holds). A forged cosignature on either note fails.

    Raises:
        FormatError: a key missing or unknown, a value of the wrong type, bad base64.
        BundleCheckpointError: the bundle is of another log than ``log_origin``; a note is
            not signed by a key in ``keyring``, malformed, of another log or tenant;
            ``new``'s batch starts right after ``old`` but does not link to it; ``new``
            lacks the cosignatures ``witnesses`` requires; a note's cosignature is forged.
        BundleProofError: ``old`` is larger than ``new`` (swapped), equal sizes with
            different roots (a fork) or a non-empty proof, or the proof is malformed or
            does not lead from the old root to the new one (a fork, or a wrong proof).
    """
    fields = parse_consistency(bundle)
    opening = _Where(fields.tenant_id, "checkpoints")
    _check_pin(opening, fields.log_origin, log_origin)
    old, old_keys, old_note = _open(
        opening, fields.old, keyring, fields.log_origin, "old checkpoint"
    )
    new, new_keys, new_note = _open(
        opening, fields.new, keyring, fields.log_origin, "new checkpoint"
    )
    old_cosigners = _cosigners(opening, old_note, witnesses, "old checkpoint", required=0)
    new_cosigners = _cosigners(opening, new_note, witnesses, "new checkpoint")
    at = _Where(fields.tenant_id, f"sizes {old.size}..{new.size}")
    if old.size > new.size:
        raise at(BundleProofError, "sizes", "the old checkpoint is larger than the new one: "
                 "old and new swapped?")  # fmt: skip
    if old.size == new.size and old.root != new.root:
        raise at(BundleProofError, "fork", f"two signed checkpoints of size {old.size}: roots "
                 f"{old.root.hex()} and {new.root.hex()}")  # fmt: skip
    try:
        verify_consistency(old.size, new.size, fields.consistency_proof, old.root, new.root)
    except RootMismatchError as exc:
        raise at(
            BundleProofError, "consistency proof", f"{exc} (a fork, or a wrong proof)"
        ) from exc
    except ProofError as exc:
        raise at(BundleProofError, "consistency proof", str(exc)) from exc
    if new.batch_first_seq == old.size + 1 and new.prev_digest != old.digest():
        raise at(BundleCheckpointError, "prev link", f"the new checkpoint follows the old one: "
                 f"{_differs(old.digest(), new.prev_digest)}")  # fmt: skip
    return ConsistencyVerdict(
        fields.log_origin, fields.tenant_id, old, new, old_keys, new_keys,
        old_cosigners, new_cosigners,
    )  # fmt: skip


# --- Checks ----------------------------------------------------------------------------


class _Where:
    """Builds the error of one check, for one tenant at one place (seq or sizes)."""

    def __init__(self, tenant_id: str, where: str) -> None:
        self.tenant_id, self.where = tenant_id, where

    def __call__(self, kind: type[BundleError], what: str, detail: str) -> BundleError:
        return kind(self.tenant_id, self.where, what, detail)


def _check_pin(at: _Where, log_origin: str, pinned: str | None) -> None:
    if pinned is not None and log_origin != pinned:
        raise at(BundleCheckpointError, "log origin", f"expected {pinned!r}, the bundle is of "
                 f"{log_origin!r}")  # fmt: skip


def _open(
    at: _Where, note: str, keyring: Keyring, log_origin: str, what: str
) -> tuple[Checkpoint, tuple[str, ...], Note]:
    expected = checkpoint_origin(log_origin, at.tenant_id)  # valid: parsing checked both
    try:
        opened = open_signed_checkpoint(note, keyring)
    except CheckpointError as exc:  # SignatureError and RetiredKeyError included
        raise at(BundleCheckpointError, what, str(exc)) from exc
    checkpoint = opened.checkpoint
    if checkpoint.origin != expected:
        raise at(BundleCheckpointError, what, f"origin expected {expected!r}, the signed note "
                 f"is of {checkpoint.origin!r}")  # fmt: skip
    return checkpoint, opened.signed_by, opened.note


def _cosigners(
    at: _Where,
    opened: Note,
    witnesses: WitnessPolicy | None,
    what: str,
    required: int | None = None,
) -> tuple[str, ...]:
    """The trusted witnesses that cosigned ``opened``; raises if too few or one is forged."""
    if witnesses is None:
        return ()
    try:
        found = witnesses.check(opened, required=required)
    except CosignatureError as exc:  # MissingCosignaturesError included
        raise at(BundleCheckpointError, f"{what} cosignatures", str(exc)) from exc
    return tuple(key_label(c.name, c.key_id) for c in found)


def _check_chain(
    at: _Where, seq: int, leaf: bytes, chain: tuple[bytes, bytes], checkpoint: Checkpoint
) -> None:
    prev_hash, stated_hash = chain
    if seq == 1 and prev_hash != GENESIS_HASH:
        raise at(ChainLinkError, "prev_hash", f"seq 1 links to genesis: "
                 f"{_differs(GENESIS_HASH, prev_hash)}")  # fmt: skip
    calculated = chain_hash(at.tenant_id, seq, prev_hash, leaf)
    if calculated != stated_hash:
        raise at(ChainLinkError, "chain hash", _differs(stated_hash, calculated))
    if seq == checkpoint.size and stated_hash != checkpoint.chain_hash:
        raise at(ChainLinkError, "chain head", f"expected {checkpoint.chain_hash.hex()} "
                 f"(signed), the bundle's is {stated_hash.hex()}")  # fmt: skip


def _differs(expected: bytes, calculated: bytes) -> str:
    return f"expected {expected.hex()}, calculated {calculated.hex()}"


def _leaf_difference(stated: bytes, calculated: bytes) -> str:
    pairs = zip(stated, calculated, strict=False)
    offset = next(
        (i for i, (a, b) in enumerate(pairs) if a != b), min(map(len, (stated, calculated)))
    )
    return (f"the bundle's ({len(stated)} bytes) and the event's ({len(calculated)} bytes) "
            f"first differ at byte {offset}")  # fmt: skip


def _note_text(note: bytes | str) -> str:
    try:
        return note.decode("utf-8") if isinstance(note, bytes) else note
    except UnicodeDecodeError:
        raise InvalidArgumentError("checkpoint note is not UTF-8") from None
