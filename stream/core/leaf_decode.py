"""Canonical leaf back to event: the inverse of :mod:`authtrail.stream.core.canonical`.

A static tlog-tiles directory (docs/INTEGRITY.md §10.6) keeps each record as its
canonical leaf (§2, §2.1), not as columns. A proof bundle carries the event as fields
(§10.2), so proving from such a directory needs the fields back. Null fields and empty
maps are not in a leaf; §10.2 lets a bundle's ``event`` leave them out, so the decoded
event is a valid bundle event and spells the same leaf.

Strict: a leaf is accepted only if :func:`canonical_leaf` would have written exactly
these bytes, so no two byte strings decode to one event (the leaf hash stays the one
name of a record). Refused, with :class:`FormatError` naming the byte offset: an unknown
magic, a cut-short or overlong length, trailing bytes, names that are not
``[a-z][a-z0-9_]*`` or not in strictly ascending order, unknown type bytes, invalid
UTF-8, integers that are not canonical decimal (``+``, leading zeros, ``-0``) or not 64-bit,
empty or unsorted maps, and the version mix-ups of §2.1 (``c`` in a v1 leaf, a sealed
string typed ``s``, ``c`` text without the sealed prefix, a v2 leaf without ``c``).

Pure: no I/O.
"""

from __future__ import annotations

import re

from authtrail.errors import FormatError
from authtrail.stream.core.canonical import (
    MAGIC,
    MAGIC_V2,
    SEALED_PREFIX,
    FieldValue,
    canonical_leaf,
)

__all__ = ["decode_canonical_leaf"]

_NAME = re.compile(rb"[a-z][a-z0-9_]*\Z")
_INTEGER = re.compile(rb"(0|-?[1-9][0-9]*)\Z")
# Stored event integers and timestamps are Int64 / UInt64 columns (docs/INTEGRITY.md §10.1);
# the bound also keeps int() away from Python's digit limit on hostile input.
_MIN_INTEGER, _MAX_INTEGER = -(2**63), 2**64 - 1


class _Reader:
    """A cursor over the leaf; every read checks the bytes are there."""

    def __init__(self, data: bytes, position: int) -> None:
        self.data, self.position = data, position

    def at_end(self) -> bool:
        return self.position == len(self.data)

    def take(self, count: int, what: str) -> bytes:
        end = self.position + count
        if end > len(self.data):
            raise FormatError(
                f"canonical leaf ends inside {what} at byte {self.position} "
                f"({count} bytes needed, {len(self.data) - self.position} left)"
            )
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, f"the length of {what}"), "big")

    def framed(self, what: str) -> bytes:
        return self.take(self.u32(what), what)

    def text(self, what: str) -> str:
        start = self.position
        data = self.framed(what)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{what} at byte {start} is not valid UTF-8: {exc.reason}") from None


def decode_canonical_leaf(leaf: bytes) -> dict[str, FieldValue]:
    """The event whose canonical leaf is ``leaf``: ``canonical_leaf(result) == leaf``.

    Fields come out in leaf (sorted) order; strings as ``str`` (sealed values included,
    as their sealed text), integers as ``int``, maps as ``dict`` in key order. Null fields
    and empty maps are absent.

    Raises :class:`FormatError` for bytes :func:`canonical_leaf` would not have written.
    """
    if not isinstance(leaf, bytes | bytearray | memoryview):
        raise FormatError(f"a canonical leaf is bytes, got {type(leaf).__name__}")
    leaf = bytes(leaf)
    if leaf.startswith(MAGIC):
        version, reader = 1, _Reader(leaf, len(MAGIC))
    elif leaf.startswith(MAGIC_V2):
        version, reader = 2, _Reader(leaf, len(MAGIC_V2))
    else:
        raise FormatError(f"not a canonical leaf: starts with {leaf[:24]!r}")
    event: dict[str, FieldValue] = {}
    previous = b""
    sealed_fields = 0
    while not reader.at_end():
        start = reader.position
        name_bytes = reader.framed("a field name")
        if not _NAME.match(name_bytes):
            raise FormatError(
                f"field name {name_bytes[:40]!r} at byte {start} is not [a-z][a-z0-9_]*"
            )
        if event and name_bytes <= previous:
            order = "repeats" if name_bytes == previous else "is out of order after"
            raise FormatError(f"field name {name_bytes!r} at byte {start} {order} {previous!r}")
        previous, name = name_bytes, name_bytes.decode("ascii")
        kind = reader.take(1, f"the type of field {name!r}")
        where = f"field {name!r}"
        value: FieldValue
        if kind == b"s":
            value = text = reader.text(where)
            if version == 2 and text.startswith(SEALED_PREFIX):
                raise FormatError(f"{where}: a sealed value must have type 'c', not 's'")
            if version == 1 and text.startswith(SEALED_PREFIX):
                raise FormatError(f"{where}: a sealed value makes a version-2 leaf, not version 1")
        elif kind == b"c":
            if version == 1:
                raise FormatError(f"{where}: type 'c' (sealed) does not occur in a version-1 leaf")
            value = text = reader.text(where)
            if not text.startswith(SEALED_PREFIX):
                raise FormatError(f"{where}: a 'c' value must start with {SEALED_PREFIX!r}")
            sealed_fields += 1
        elif kind == b"i":
            value = _integer(reader.framed(where), where)
        elif kind == b"m":
            value = _map(reader, where)
        else:
            raise FormatError(f"{where}: unknown type byte {kind!r} at byte {reader.position - 1}")
        event[name] = value
    if version == 2 and not sealed_fields:
        raise FormatError("a version-2 leaf without a sealed ('c') field is not canonical")
    # The checks above are meant to be complete; re-encoding proves it for every leaf.
    if canonical_leaf(event) != leaf:
        raise FormatError("the leaf decodes, but is not the canonical encoding of its fields")
    return event


def _integer(digits: bytes, where: str) -> int:
    if not _INTEGER.match(digits) or len(digits) > 20:
        raise FormatError(f"{where}: {digits[:30]!r} is not a canonical decimal integer")
    value = int(digits)
    if not _MIN_INTEGER <= value <= _MAX_INTEGER:
        raise FormatError(f"{where}: {value} does not fit in 64 bits")
    return value


def _map(reader: _Reader, where: str) -> dict[str, str]:
    count = reader.u32(where)
    if count == 0:
        raise FormatError(f"{where}: an empty map is omitted from a canonical leaf, not encoded")
    entries: dict[str, str] = {}
    previous = b""
    for position in range(count):
        start = reader.position
        key = reader.text(f"key {position} of {where}")
        key_bytes = key.encode("utf-8")
        if position and key_bytes <= previous:
            order = "repeats" if key_bytes == previous else "is out of order"
            raise FormatError(f"{where}: map key {key[:40]!r} at byte {start} {order}")
        previous = key_bytes
        entries[key] = reader.text(f"the value of key {key[:40]!r} of {where}")
    return entries
