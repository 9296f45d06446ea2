"""Canonical leaf: the deterministic bytes of one auth event (docs/INTEGRITY.md §2).

The leaf is what the hash chain and the Merkle log commit to. It depends only on the
event's field names and values, never on Avro framing, Kafka metadata or the order in
which producer code filled the fields, so an event read back from ClickHouse hashes to
the same leaf as the event the producer sent.

Encoding (all integers big-endian)::

    leaf    = MAGIC || field*                  fields sorted by name (bytewise UTF-8)
    field   = str(name) || type || value       fields whose value is None or {} are omitted
    str(b)  = u32(len(b)) || b
    type    = b"s" string | b"i" integer | b"m" map of string to string
    value   = str(utf8)            for "s"
            | str(ascii decimal)   for "i"  (canonical: no "+", no leading zeros, "-" for < 0)
            | u32(count) || (str(key) || str(value))*   for "m", entries sorted by key bytes

Omitting None and empty maps is what lets the schema grow: a field added later with a
null/empty default leaves every older event's leaf unchanged.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping

from authtrail.errors import InvalidArgumentError

MAGIC = b"authtrail-event-v1\n"

FieldValue = str | int | Mapping[str, str] | None

_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_U32_MAX = 0xFFFFFFFF


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _str(data: bytes) -> bytes:
    if len(data) > _U32_MAX:
        raise InvalidArgumentError(f"value of {len(data)} bytes is too long to encode")
    return _u32(len(data)) + data


def _utf8(text: str, where: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates cannot be stored or hashed portably
        raise InvalidArgumentError(f"{where} is not valid Unicode text: {exc}") from exc


def _encode_value(name: str, value: str | int | Mapping[str, str]) -> bytes:
    # bool is an int subclass; a schema with no boolean fields must not hash True as 1.
    if isinstance(value, bool):
        raise InvalidArgumentError(f"field {name!r}: booleans have no canonical encoding")
    if isinstance(value, str):
        return b"s" + _str(_utf8(value, f"field {name!r}"))
    if isinstance(value, int):
        return b"i" + _str(str(value).encode("ascii"))
    if isinstance(value, Mapping):
        entries = []
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                raise InvalidArgumentError(f"field {name!r}: map entries must be str -> str")
            entries.append((_utf8(key, f"key in field {name!r}"), _utf8(item, f"field {name!r}")))
        entries.sort()
        return b"m" + _u32(len(entries)) + b"".join(_str(k) + _str(v) for k, v in entries)
    raise InvalidArgumentError(f"field {name!r}: unsupported type {type(value).__name__}")


def canonical_leaf(event: Mapping[str, FieldValue]) -> bytes:
    """Return the canonical leaf bytes of ``event``.

    Requires: field names match ``[a-z][a-z0-9_]*``; values are ``str``, ``int``, a
    mapping of ``str`` to ``str``, or ``None``. Enum values are passed as their symbol
    (``str``) and timestamps as integer microseconds.
    Raises :class:`InvalidArgumentError` for anything else.
    """
    parts = [MAGIC]
    for name in sorted(event):
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            raise InvalidArgumentError(f"field name {name!r} is not [a-z][a-z0-9_]*")
        value = event[name]
        if value is None or (isinstance(value, Mapping) and not value):
            continue
        parts.append(_str(name.encode("ascii")) + _encode_value(name, value))
    return b"".join(parts)


def canonical_leaves(events: Iterable[Mapping[str, FieldValue]]) -> list[bytes]:
    """Canonical leaves of several events, in order (see :func:`canonical_leaf`)."""
    return [canonical_leaf(event) for event in events]
