"""Per-tenant hash chain (docs/INTEGRITY.md §3) and the pure check of a stored chain.

Each record of tenant ``tenant_id`` with sequence number ``seq`` (1, 2, 3 …) stores::

    hash = SHA-256(CHAIN_DOMAIN || u32(len(tenant)) || tenant || u64(seq) || prev_hash || leaf_hash)

where ``prev_hash`` is the previous record's ``hash`` (``GENESIS_HASH`` for seq 1) and
``leaf_hash`` is the RFC 6962 leaf hash of the canonical event leaf. The domain prefix
starts with a byte other than 0x00/0x01, so a chain hash can never be confused with a
Merkle leaf or node hash.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from authtrail.errors import ChainError, InvalidArgumentError
from authtrail.stream.core import native_hashes

CHAIN_DOMAIN = b"authtrail-chain-v1\n"
GENESIS_HASH = bytes(32)
HASH_SIZE = 32

# Kinds of damage a stored chain can show; verify reports the first per tenant.
MODIFIED = "modified"
DELETED = "deleted"
INSERTED = "inserted"
DUPLICATED = "duplicated"
REORDERED = "reordered"


def chain_hash(tenant_id: str, seq: int, prev_hash: bytes, leaf_hash: bytes) -> bytes:
    """Return the chain hash of the record ``seq`` of ``tenant_id``.

    Requires: ``seq >= 1``; ``prev_hash`` and ``leaf_hash`` are 32 bytes.
    Raises :class:`InvalidArgumentError` otherwise.
    """
    if seq < 1 or seq > 0xFFFFFFFFFFFFFFFF:
        raise InvalidArgumentError(f"seq must be in 1..2^64-1, got {seq}")
    if len(prev_hash) != HASH_SIZE or len(leaf_hash) != HASH_SIZE:
        raise InvalidArgumentError("prev_hash and leaf_hash must be 32 bytes")
    return chain_hash_unchecked(tenant_id, seq, prev_hash, leaf_hash)


def chain_hash_unchecked(tenant_id: str, seq: int, prev_hash: bytes, leaf_hash: bytes) -> bytes:
    """:func:`chain_hash` without its argument checks, for callers whose ``seq`` and hashes
    are valid by construction (the sequencer's hot path: a head's hash and a fresh digest).
    Garbage in gives a hash no verifier will match, never an exception."""
    native = _native_chain_hash(tenant_id, seq, prev_hash, leaf_hash)
    if native is not None:  # the same bytes hashed in C; None for anything unusual
        return native
    tenant = tenant_id.encode("utf-8")
    # One join and precompiled packers: this runs for every event sequenced.
    return _sha256(
        b"".join((CHAIN_DOMAIN, _U32(len(tenant)), tenant, _U64(seq), prev_hash, leaf_hash))
    ).digest()


_sha256 = hashlib.sha256
_native_chain_hash = native_hashes.chain_hash
_U32, _U64 = struct.Struct(">I").pack, struct.Struct(">Q").pack


class ChainLink(NamedTuple):
    """One stored chain record, reduced to what the chain commits to (a named tuple, like
    :class:`ChainHead`: one of each is made per event, ~4x faster than a frozen dataclass)."""

    seq: int
    prev_hash: bytes
    leaf_hash: bytes
    hash: bytes


class ChainHead(NamedTuple):
    """The last link of a tenant's chain: ``seq`` 0 and ``GENESIS_HASH`` when empty."""

    tenant_id: str
    seq: int = 0
    hash: bytes = GENESIS_HASH

    def append(self, leaf_hash: bytes) -> tuple[ChainHead, ChainLink]:
        """Extend the chain by one leaf; return the new head and the new link."""
        seq = self.seq + 1
        link = ChainLink(
            seq, self.hash, leaf_hash, chain_hash(self.tenant_id, seq, self.hash, leaf_hash)
        )
        return ChainHead(self.tenant_id, seq, link.hash), link


@dataclass(frozen=True, slots=True)
class StoredLink:
    """A link as read back from storage, plus the leaf hash recomputed from its content.

    ``content_leaf_hash`` is the RFC 6962 leaf hash of the canonical leaf rebuilt from
    the stored event columns; it differs from ``link.leaf_hash`` when the event was edited.
    """

    link: ChainLink
    content_leaf_hash: bytes


def verify_chain(
    tenant_id: str,
    records: Sequence[StoredLink],
    *,
    start: ChainHead | None = None,
    expected_size: int | None = None,
) -> ChainHead:
    """Check a tenant's stored links, in ascending ``seq`` order, and return the head.

    ``start`` is the head just before ``records`` (genesis by default), so a long chain can be
    checked in slices. ``expected_size`` is the size of the newest trusted checkpoint: a chain
    that stops before it lost its tail.
    Raises :class:`ChainError` at the first damaged seq, naming the kind of damage:
    ``duplicated`` (a seq stored twice, same content), ``inserted`` (a second, different
    record claims a seq), ``deleted`` (a seq is missing, or the tail before
    ``expected_size``), ``reordered`` (a record's content or hash belongs to another seq),
    ``modified`` (content or hashes no longer match).
    """
    head = start or ChainHead(tenant_id)
    if head.tenant_id != tenant_id:
        raise InvalidArgumentError("start head belongs to another tenant")
    leaf_seq = {stored.link.leaf_hash: stored.link.seq for stored in records}
    hash_seq = _positions_by_links(records)
    by_seq: dict[int, list[StoredLink]] = {}
    for stored in records:
        by_seq.setdefault(stored.link.seq, []).append(stored)
    previous: StoredLink | None = None
    for stored in records:
        link = stored.link
        expected_seq = head.seq + 1
        if link.seq < expected_seq:
            damage = DUPLICATED if previous is not None and stored == previous else INSERTED
            raise ChainError(tenant_id, link.seq, damage, "more than one record has this seq")
        if link.seq > expected_seq:
            raise ChainError(
                tenant_id, expected_seq, DELETED, f"seq {expected_seq}..{link.seq - 1} missing"
            )
        claimants = by_seq[link.seq]
        if len(claimants) > 1:  # judged before content: which claimant is the forgery is moot
            same = all(other == claimants[0] for other in claimants)
            damage = DUPLICATED if same else INSERTED
            raise ChainError(tenant_id, link.seq, damage, f"{len(claimants)} records have this seq")
        _check_link(tenant_id, stored, head, leaf_seq, hash_seq)
        head = ChainHead(tenant_id, link.seq, link.hash)
        previous = stored
    if expected_size is not None and head.seq < expected_size:
        raise ChainError(
            tenant_id,
            head.seq + 1,
            DELETED,
            f"chain ends at seq {head.seq} but a checkpoint covers {expected_size}",
        )
    return head


def _check_link(
    tenant_id: str,
    stored: StoredLink,
    head: ChainHead,
    leaf_seq: dict[bytes, int],
    hash_seq: dict[bytes, int],
) -> None:
    link = stored.link
    if stored.content_leaf_hash != link.leaf_hash:
        other = leaf_seq.get(stored.content_leaf_hash)
        if other is not None and other != link.seq:
            raise ChainError(tenant_id, link.seq, REORDERED, f"content belongs to seq {other}")
        raise ChainError(
            tenant_id,
            link.seq,
            MODIFIED,
            f"leaf hash expected {link.leaf_hash.hex()}, calculated "
            f"{stored.content_leaf_hash.hex()}",
        )
    calculated = chain_hash(tenant_id, link.seq, link.prev_hash, link.leaf_hash)
    if calculated != link.hash:
        # A moved record still hashes correctly at its true place: its position when the
        # records are followed by their prev_hash links from genesis.
        true_seq = hash_seq.get(link.hash, link.seq)
        moved = true_seq != link.seq
        if moved and chain_hash(tenant_id, true_seq, link.prev_hash, link.leaf_hash) == link.hash:
            raise ChainError(tenant_id, link.seq, REORDERED, f"record belongs to seq {true_seq}")
        raise ChainError(
            tenant_id,
            link.seq,
            MODIFIED,
            f"hash expected {link.hash.hex()}, calculated {calculated.hex()}",
        )
    if link.prev_hash != head.hash:
        raise ChainError(
            tenant_id,
            link.seq,
            MODIFIED,
            f"prev_hash expected {head.hash.hex()}, stored {link.prev_hash.hex()}",
        )


def _positions_by_links(records: Sequence[StoredLink]) -> dict[bytes, int]:
    """Map each record's hash to its position on the prev_hash walk from genesis."""
    by_prev = {stored.link.prev_hash: stored.link for stored in records}
    positions: dict[bytes, int] = {}
    current, position = GENESIS_HASH, 1
    while current in by_prev and position <= len(records):
        current = by_prev[current].hash
        positions[current] = position
        position += 1
    return positions


def build_chain(tenant_id: str, leaf_hashes: Iterable[bytes]) -> list[ChainLink]:
    """Chain ``leaf_hashes`` from genesis; a convenience for producers of test data."""
    head = ChainHead(tenant_id)
    links = []
    for leaf_hash in leaf_hashes:
        head, link = head.append(leaf_hash)
        links.append(link)
    return links
