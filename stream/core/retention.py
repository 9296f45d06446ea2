"""Retention: a signed statement that a tenant's oldest records may be deleted. Pure.

A tenant's records ``1..pruned_size`` may be dropped from the store once a *retention
statement* saying so is chained into the tenant's own log (docs/INTEGRITY.md, "What a
pruned log proves"). The statement is a C2SP signed note whose body is::

    <origin>                                  "<log_origin>/<tenant_id>"
    authtrail-retention-v1
    <pruned_size>                             records 1..pruned_size may be deleted
    <base64 root>                             RFC 6962 root of the log at pruned_size
    authtrail-chain <base64 chain_hash>       chain hash of record pruned_size
    authtrail-time <unix microseconds>        when the operator signed it

The second line is not a number, so the body never parses as a checkpoint, and a
checkpoint never as this. ``pruned_size`` is a multiple of :data:`TILE_WIDTH`: the
stored tile entries of level 1 then cover the dropped leaves exactly, and every node a
retained proof or checkpoint needs is either a retained leaf or built from those
entries (:func:`pruned_levels`). The chain hash is the anchor the retained chain is
checked from; the root binds the level-1 entries under the cut to a signature.

The note travels in an ordinary event (:func:`retention_event`, service
:data:`RETENTION_SERVICE`) that the sequencer chains and signs like any other; its
authority is the note's signature by a key the verifier trusts, never the event.

A rejection log (stream/core/rejection.py) is pruned the same way. Its statement is sent
as such an event naming the log as its tenant, to the log's input partition; the worker,
having checked it, chains it into the log as a rejection of kind
:data:`RETENTION_REJECTION_KIND` whose reason is the note (:func:`retention_rejection`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authtrail.errors import CheckpointError, InvalidArgumentError, VerificationError
from authtrail.stream.core.audit import MerkleLevels
from authtrail.stream.core.checkpoint import checkpoint_origin
from authtrail.stream.core.merkle import HASH_SIZE
from authtrail.stream.core.note import Keyring, Signer, open_note, sign_note
from authtrail.stream.core.rotation import RetiredKeyError, check_retirement
from authtrail.stream.core.tiles import TILE_HEIGHT, TILE_WIDTH

RETENTION_SERVICE = "authtrail-retention"
RETENTION_EVENT_TYPE = "AUTHTRAIL_RETENTION"
#: The event attribute holding the signed note, verbatim.
NOTE_ATTRIBUTE = "retention_note"
STATEMENT_LINE = "authtrail-retention-v1"
_CHAIN_KEYWORD = "authtrail-chain"
_TIME_KEYWORD = "authtrail-time"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_MAX_NUMBER = 2**64 - 1

#: The ``error_kind`` of a rejection-log record carrying a checked retention statement.
RETENTION_REJECTION_KIND = "retention"

# Damage kinds only a retention statement can show (record kinds: authtrail.stream.core.chain).
FORGED_RETENTION = "forged retention"
RETENTION_MISMATCH = "retention mismatch"
RETENTION_INCOMPLETE = "retention incomplete"


class RetentionDamage(VerificationError):
    """A tenant's retention is damaged at ``seq``; ``damage`` names how."""

    def __init__(self, tenant_id: str, seq: int, damage: str, detail: str) -> None:
        self.tenant_id, self.seq, self.damage, self.detail = tenant_id, seq, damage, detail
        super().__init__(f"tenant {tenant_id!r} seq {seq}: {damage}: {detail}")


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


@dataclass(frozen=True)
class RetentionStatement:
    """Records ``1..pruned_size`` of the log ``origin`` may be deleted.

    Requires (else :class:`InvalidArgumentError`): ``pruned_size`` a positive multiple of
    :data:`TILE_WIDTH` at most 2^64-1; ``root`` and ``chain_hash`` 32 bytes;
    ``0 <= time_micros <= 2^64-1``.
    """

    origin: str
    pruned_size: int
    root: bytes
    chain_hash: bytes
    time_micros: int

    def __post_init__(self) -> None:
        if not 0 < self.pruned_size <= _MAX_NUMBER or self.pruned_size % TILE_WIDTH:
            raise InvalidArgumentError(
                f"pruned size must be a positive multiple of {TILE_WIDTH}, got {self.pruned_size}"
            )
        if len(self.root) != HASH_SIZE or len(self.chain_hash) != HASH_SIZE:
            raise InvalidArgumentError(f"root and chain hash must be {HASH_SIZE} bytes")
        if not 0 <= self.time_micros <= _MAX_NUMBER:
            raise InvalidArgumentError(f"time_micros must be in 0..2^64-1, got {self.time_micros}")

    def body(self) -> bytes:
        """The note text (the signed bytes): six lines, each ending in ``\\n``."""
        lines = (
            self.origin, STATEMENT_LINE, str(self.pruned_size), _b64(self.root),
            f"{_CHAIN_KEYWORD} {_b64(self.chain_hash)}", f"{_TIME_KEYWORD} {self.time_micros}",
        )  # fmt: skip
        return "".join(line + "\n" for line in lines).encode("utf-8")

    @classmethod
    def parse(cls, body: bytes) -> RetentionStatement:
        """Parse a statement body. Raises :class:`CheckpointError` unless it is exactly
        the six lines above in their one canonical spelling."""
        try:
            lines = body.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise CheckpointError("retention statement is not UTF-8") from None
        if len(lines) != 7 or lines[6] or lines[1] != STATEMENT_LINE:
            raise CheckpointError(f"not a {STATEMENT_LINE} statement of six lines")
        origin, _, size_text, root_text, chain_line, time_line = lines[:6]
        chain_keyword, _, chain_text = chain_line.partition(" ")
        time_keyword, _, time_text = time_line.partition(" ")
        if chain_keyword != _CHAIN_KEYWORD or time_keyword != _TIME_KEYWORD:
            raise CheckpointError(f"retention statement lines 5-6 must be {_CHAIN_KEYWORD}, "
                                  f"{_TIME_KEYWORD}")  # fmt: skip
        try:
            statement = cls(
                origin, _number(size_text), _hash(root_text), _hash(chain_text),
                _number(time_text),
            )  # fmt: skip
        except InvalidArgumentError as exc:
            raise CheckpointError(f"invalid retention statement: {exc}") from None
        if statement.body() != body:
            raise CheckpointError("retention statement is not in canonical form")
        return statement


def _number(text: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise CheckpointError(f"{text[:24]!r} is not a canonical decimal")
    return int(text)


def _hash(text: str) -> bytes:
    try:
        value = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("hash is not standard base64") from None
    if len(value) != HASH_SIZE or _b64(value) != text:
        raise CheckpointError("hash is not a canonical base64 32-byte hash")
    return value


def retention_cut(before_seq: int) -> int:
    """The pruned size for "drop records before ``before_seq``": the largest multiple of
    :data:`TILE_WIDTH` below ``before_seq`` (0: nothing can be dropped yet). Rounding
    down keeps a record rather than lose a node a proof needs."""
    if before_seq < 1:
        raise InvalidArgumentError(f"seq must be at least 1, got {before_seq}")
    return (before_seq - 1) // TILE_WIDTH * TILE_WIDTH


def sign_retention(statement: RetentionStatement, *signers: Signer) -> bytes:
    """The signed note of ``statement``."""
    return sign_note(statement.body(), *signers)


def open_retention(
    tenant_id: str, seq: int, note: bytes | str, keyring: Keyring, log_origin: str
) -> RetentionStatement:
    """The statement of the retention note stored in record ``seq`` of ``tenant_id``.

    Raises :class:`RetentionDamage` (``forged retention``) when no trusted key signed
    the note, a trusted key's signature fails, every signer was retired at its time, it
    does not parse, names another log or tenant, or claims records at or after ``seq``
    (a statement can only prune what was chained before it).
    """
    message = note.encode("utf-8") if isinstance(note, str) else note
    try:
        opened = open_note(message, keyring)
        statement = RetentionStatement.parse(opened.text)
        signers = [keyring[signature.name, signature.key_id] for signature in opened.signatures]
        check_retirement(statement.time_micros, signers)
    except (CheckpointError, RetiredKeyError) as exc:
        raise RetentionDamage(tenant_id, seq, FORGED_RETENTION, str(exc)) from exc
    expected = checkpoint_origin(log_origin, tenant_id)
    if statement.origin != expected:
        detail = f"statement names log {statement.origin!r}, not {expected!r}"
        raise RetentionDamage(tenant_id, seq, FORGED_RETENTION, detail)
    if statement.pruned_size >= seq:
        raise RetentionDamage(
            tenant_id, seq, FORGED_RETENTION,
            f"statement in record {seq} prunes records up to {statement.pruned_size}, "
            "which includes itself",
        )  # fmt: skip
    return statement


def retention_event(tenant_id: str, note: bytes, statement: RetentionStatement) -> dict[str, Any]:
    """The event carrying ``note`` into ``tenant_id``'s log. Its id follows from the
    note, so a re-sent statement is chained once (the sequencer deduplicates by id)."""
    digest = hashlib.sha256(note).hexdigest()
    return {
        "event_id": f"{RETENTION_SERVICE}:{digest[:32]}",
        "tenant_id": tenant_id,
        "event_type": "OTHER",
        "event_type_other": RETENTION_EVENT_TYPE,
        "outcome": "SUCCESS",
        "occurred_at": statement.time_micros,
        "service": RETENTION_SERVICE,
        "message": f"records 1..{statement.pruned_size} are past retention and may be deleted",
        "attributes": {NOTE_ATTRIBUTE: note.decode("utf-8")},
    }


def retention_rejection(
    event: Mapping[str, Any], events_topic: str, position: tuple[int, int, int | None],
    now_micros: int,
) -> dict[str, Any]:  # fmt: skip
    """The record of rejection log ``event["tenant_id"]`` that carries the retention
    statement of ``event`` (checked by the caller); ``position`` is the input's
    ``(partition, offset, index)``."""
    partition, offset, index = position
    attributes = event.get("attributes") or {}
    return {
        "original": b"",
        "original_key": None,
        "reason": str(attributes.get(NOTE_ATTRIBUTE, "")),
        "error_kind": RETENTION_REJECTION_KIND,
        "source_topic": events_topic,
        "source_partition": partition,
        "source_offset": offset,
        "source_timestamp": None,
        "tenant_id": event["tenant_id"],
        "rejected_at": now_micros,
        "source_index": index,
    }


def is_retention_event(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` claims to carry a retention statement (then it must verify)."""
    return (
        event.get("service") == RETENTION_SERVICE
        and event.get("event_type_other") == RETENTION_EVENT_TYPE
    )


def check_retention_event(
    event: Mapping[str, Any], next_seq: int, keyring: Keyring, log_origin: str
) -> None:
    """Admission of an event that claims to carry a retention statement, before it is
    chained as record ``next_seq``: its note must be one ``keyring`` signed for this
    tenant's log, pruning records before it. Raises :class:`RetentionDamage`; any other
    event passes. Without this check, anyone who may produce events could put a record
    into a tenant's log that ``verify`` then reports as a forged retention."""
    if not is_retention_event(event):
        return
    attributes = event.get("attributes") or {}
    note = attributes.get(NOTE_ATTRIBUTE, "") if isinstance(attributes, Mapping) else ""
    open_retention(str(event["tenant_id"]), next_seq, str(note), keyring, log_origin)


def pruned_levels(
    pruned_size: int, level_one: Sequence[bytes], retained_leaf_hashes: Sequence[bytes]
) -> MerkleLevels:
    """The Merkle levels of a log whose leaves ``1..pruned_size`` are gone.

    ``level_one`` are the stored tile entries ``0 .. pruned_size / 256 - 1`` of level 1
    (each the root of 256 dropped leaves), ``retained_leaf_hashes`` the leaves after
    ``pruned_size``. Nodes of height below 8 inside the dropped range are unknown and
    read as 32 zero bytes: callers must ask only for roots
    :func:`authtrail.stream.core.audit.provable` allows.

    Raises InvalidArgumentError when ``pruned_size`` is not a multiple of 256 or the
    entries do not cover it.
    """
    if pruned_size % TILE_WIDTH or len(level_one) != pruned_size // TILE_WIDTH:
        raise InvalidArgumentError(
            f"{len(level_one)} level-1 entries do not cover {pruned_size} pruned leaves"
        )
    retained = MerkleLevels.from_leaf_hashes(retained_leaf_hashes)
    count = len(retained_leaf_hashes)
    size = pruned_size + count
    tops = [retained.node(TILE_HEIGHT, index) for index in range(count >> TILE_HEIGHT)]
    upper = MerkleLevels.from_leaf_hashes([*level_one, *tops])
    levels = []
    for height in range(size.bit_length()):
        if height < TILE_HEIGHT:
            above = retained.level(height) if count >> height else b""
            levels.append(bytes(HASH_SIZE * (pruned_size >> height)) + above)
        else:
            levels.append(upper.level(height - TILE_HEIGHT))
    return MerkleLevels(size, levels)
