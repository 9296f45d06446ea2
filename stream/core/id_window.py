"""The event ids a partition sequenced recently, in bounded memory. Pure.

A producer that re-sends an event (same ``event_id``) must see it recorded once, and the
same id with other content must be told apart. Remembering every id forever would grow
without bound, and a window per tenant grows with the tenant count (10 000 ids for each of 10 000
tenants is gigabytes). So one window serves a whole partition, holding two generations of
``size // 2`` ids each: when the newer fills up, the older is dropped. Every one of the
last ``size // 2`` ids sequenced in the partition is always remembered, never more than
``size``. Entries are 128-bit digests, not the strings, to keep them small (~145 bytes
with the dict).
"""

from __future__ import annotations

from hashlib import blake2b

from authtrail.errors import FormatError
from authtrail.stream.core import native_hashes

_DIGEST_BYTES = 16
_ENTRY_BYTES = 2 * _DIGEST_BYTES


def id_key(tenant_id: str, event_id: str) -> bytes:
    """The window's key of ``event_id`` of ``tenant_id`` (a 128-bit digest): work it out
    once when asking and then adding the same id (:meth:`IdWindow.same_content_at`)."""
    # The NUL cannot occur in a tenant id (checkpoint origins refuse it), so no two
    # (tenant, id) pairs share a digest input. The same digest in C, when built (None:
    # left to hashlib, e.g. for text UTF-8 cannot encode).
    return (
        _native_id_key(tenant_id, event_id)
        or blake2b(f"{tenant_id}\0{event_id}".encode(), digest_size=_DIGEST_BYTES).digest()
    )


_native_id_key = native_hashes.id_key


class IdWindow:
    """Recently sequenced ``(tenant_id, event_id)`` pairs and what their leaf hash was.

    ``size`` ≥ 2 bounds the entries; the newest ``size // 2`` are always kept.
    """

    __slots__ = ("_generation", "_newer", "_older")

    def __init__(self, size: int) -> None:
        if size < 2:
            raise ValueError("an id window holds at least 2 ids")
        self._generation = size // 2
        # Digests as bytes, stored as the snapshot writes them (to_bytes joins them).
        self._newer: dict[bytes, bytes] = {}
        self._older: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self._newer) + len(self._older)

    def add(self, tenant_id: str, event_id: str, leaf_hash: bytes) -> None:
        """Remember that ``event_id`` of ``tenant_id`` was sequenced with ``leaf_hash``."""
        self.add_at(id_key(tenant_id, event_id), leaf_hash)

    def add_at(self, key: bytes, leaf_hash: bytes) -> None:
        """:meth:`add` of the id whose :func:`id_key` is ``key``."""
        if len(self._newer) >= self._generation:
            self._older, self._newer = self._newer, {}
        self._newer[key] = leaf_hash[:_DIGEST_BYTES]

    def same_content(self, tenant_id: str, event_id: str, leaf_hash: bytes) -> bool | None:
        """None if the id is not remembered; else whether it came with ``leaf_hash``."""
        return self.same_content_at(id_key(tenant_id, event_id), leaf_hash)

    def same_content_at(self, key: bytes, leaf_hash: bytes) -> bool | None:
        """:meth:`same_content` of the id whose :func:`id_key` is ``key``."""
        known = self._newer.get(key)
        if known is None:
            known = self._older.get(key)
        return None if known is None else known == leaf_hash[:_DIGEST_BYTES]

    def to_bytes(self) -> bytes:
        """The window as bytes for a snapshot: the number of older entries (8 bytes), then
        every entry (digest of the id, then of the content, 16 bytes each), oldest first."""
        parts = [len(self._older).to_bytes(8, "big")]
        for generation in (self._older, self._newer):
            for key, content in generation.items():
                parts += (key, content)
        return b"".join(parts)

    def load(self, data: bytes) -> None:
        """Replace the entries by those :meth:`to_bytes` wrote (same or another size).

        Raises :class:`FormatError` for data of the wrong length.
        """
        if len(data) < 8 or (len(data) - 8) % _ENTRY_BYTES:
            raise FormatError(f"an id window of {len(data)} bytes is not whole entries")
        older_count = int.from_bytes(data[:8], "big")
        entries = [
            (data[at : at + _DIGEST_BYTES], data[at + _DIGEST_BYTES : at + _ENTRY_BYTES])
            for at in range(8, len(data), _ENTRY_BYTES)
        ]
        if older_count > len(entries):
            raise FormatError("an id window with more older entries than entries")
        self._older, self._newer = dict(entries[:older_count]), dict(entries[older_count:])
