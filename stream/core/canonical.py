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

Version 2 (docs/INTEGRITY.md §2.1): an event with at least one *sealed* string value (one
that starts with :data:`SEALED_PREFIX`, a personal field encrypted by
:mod:`authtrail.producers.sdk.sealed_values`) has :data:`MAGIC_V2` and type ``b"c"`` for
those values; every other byte is as in version 1, so events without sealed values keep
their v1 leaves.

Speed: this runs once per event on the worker's hot path, and almost every event has the
same key set (the decoder yields every schema field, in schema order). So the sorted
order, the name checks and each field's encoded ``str(name) || type`` prefix are worked
out once per distinct key tuple (``_layout``) and reused; only values are encoded
per event. tests/unit/test_canonical.py checks the result byte for byte against a plain
reference implementation of the spec.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping

from authtrail.errors import InvalidArgumentError

try:  # the version-1 leaf in C, built by hatch_build.py where a C compiler is
    from authtrail._speedups import leaf_known as _leaf_known
    from authtrail._speedups import leaf_v1 as _leaf_v1
    from authtrail._speedups import remember_layout as _remember_layout
except ImportError:  # pragma: no cover - a build without a compiler
    _leaf_v1 = _leaf_known = _remember_layout = None  # type: ignore[assignment]

# The sealed-value format belongs to the producer SDK, which seals at the source and
# cannot import the stream processor; the leaf only needs its prefix.
from authtrail.producers.sdk.sealed_values import SEALED_PREFIX as SEALED_PREFIX
from authtrail.producers.sdk.sealed_values import is_sealed as is_sealed

MAGIC = b"authtrail-event-v1\n"
MAGIC_V2 = b"authtrail-event-v2\n"
#: In a leaf, the mark of a value that may be sealed (the v2 check, and the C leaves'
#: refusal): the sealed prefix's bytes.
SEALED_MARK = SEALED_PREFIX.encode("ascii")

FieldValue = str | int | Mapping[str, str] | None

_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_U32_MAX = 0xFFFFFFFF
# A compiled Struct packs about twice as fast as struct.pack or int.to_bytes; it raises
# struct.error above _U32_MAX, which the fast path turns into the general path's error.
_u32 = struct.Struct(">I").pack
# Distinct key tuples seen; a bound keeps hostile or ever-changing key sets from growing
# memory without limit (real traffic has one tuple per schema version and decoder).
_MAX_LAYOUTS = 256


def speedups_built() -> bool:
    """Whether the C leaf (and with it the C reader, one extension) is in use."""
    return _leaf_v1 is not None


def length_prefixed(data: bytes) -> bytes:
    """``u32(len(data)) || data``: how the canonical leaf frames every name and value."""
    if len(data) > _U32_MAX:
        raise InvalidArgumentError(f"value of {len(data)} bytes is too long to encode")
    return _u32(len(data)) + data


def utf8(text: str, where: str) -> bytes:
    """``text`` as UTF-8; :class:`InvalidArgumentError` naming ``where`` if it cannot be."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates cannot be stored or hashed portably
        raise InvalidArgumentError(f"{where} is not valid Unicode text: {exc}") from exc


def _encode_value(name: str, value: str | int | Mapping[str, str]) -> bytes:
    # bool is an int subclass; a schema with no boolean fields must not hash True as 1.
    if isinstance(value, bool):
        raise InvalidArgumentError(f"field {name!r}: booleans have no canonical encoding")
    if isinstance(value, str):
        return b"s" + length_prefixed(utf8(value, f"field {name!r}"))
    if isinstance(value, int):
        return b"i" + length_prefixed(str(value).encode("ascii"))
    if isinstance(value, Mapping):
        entries = []
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                raise InvalidArgumentError(f"field {name!r}: map entries must be str -> str")
            entries.append((utf8(key, f"key in field {name!r}"), utf8(item, f"field {name!r}")))
        entries.sort()
        framed = (length_prefixed(key) + length_prefixed(item) for key, item in entries)
        return b"m" + _u32(len(entries)) + b"".join(framed)
    raise InvalidArgumentError(f"field {name!r}: unsupported type {type(value).__name__}")


def _encode_field(name: str, value: FieldValue) -> bytes:
    """``str(name) || type || value``, or b"" for an omitted field (general path)."""
    if value is None or (isinstance(value, Mapping) and not value):
        return b""
    return length_prefixed(name.encode("ascii")) + _encode_value(name, value)


# Per key tuple: ``(name, str(name) || b"s", str(name) || b"i")`` in leaf order, the
# prefixes of the two common value types (maps are rare and take the general path).
_Layout = tuple[tuple[str, bytes, bytes], ...]
_layouts: dict[tuple[object, ...], _Layout] = {}


def _layout(keys: tuple[object, ...]) -> _Layout:
    """The cached layout of ``keys``; raises :class:`InvalidArgumentError` on a bad name."""
    layout = _layouts.get(keys)
    if layout is not None:
        return layout
    names: list[str] = []
    for name in keys:
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            raise InvalidArgumentError(f"field name {name!r} is not [a-z][a-z0-9_]*")
        names.append(name)
    names.sort()
    layout = tuple(
        (name, prefix + b"s", prefix + b"i")
        for name in names
        for prefix in (length_prefixed(name.encode("ascii")),)
    )
    if len(_layouts) >= _MAX_LAYOUTS:
        _layouts.clear()
    _layouts[keys] = layout
    return layout


def canonical_leaf(event: Mapping[str, FieldValue]) -> bytes:
    """Return the canonical leaf bytes of ``event``.

    Requires: field names match ``[a-z][a-z0-9_]*``; values are ``str``, ``int``, a
    mapping of ``str`` to ``str``, or ``None``. Enum values are passed as their symbol
    (``str``) and timestamps as integer microseconds.
    Raises :class:`InvalidArgumentError` for anything else.
    """
    if _leaf_known is not None:
        # The usual event: the decoder's dict, whose keys (the same str objects, in the
        # same order) were laid out last time. No key tuple built and looked up, no
        # lookup per field (~0.5 µs an event).
        leaf = _leaf_known(event, MAGIC, SEALED_MARK)
        if leaf is not None:
            return leaf
    keys = tuple(event)
    fields = _layout(keys)
    if _leaf_v1 is not None:
        leaf = _leaf_v1(event, fields, MAGIC)
        if leaf is not None:
            _remember_layout(keys, fields)
            return _sealed_leaf(event, fields, leaf) if SEALED_MARK in leaf else leaf
    return _python_leaf(event, fields)


def _python_leaf(event: Mapping[str, FieldValue], fields: _Layout) -> bytes:
    """:func:`canonical_leaf` in Python: the reference for the C leaf, and the path for
    whatever the C leaf leaves (another mapping or value type, text UTF-8 cannot encode,
    an integer beyond 64 bits), which also owns every error."""
    parts = [MAGIC]
    extend = parts.extend  # one call per field (three appends cost ~0.7 µs an event more)
    try:
        for name, string_prefix, integer_prefix in fields:
            value = event[name]
            if value is None:
                continue
            # Exact types only: bool (an int subclass), str/int subclasses and maps take
            # the general path, which also owns every error message.
            if type(value) is str:
                data = value.encode("utf-8")
                extend((string_prefix, _u32(len(data)), data))
            elif type(value) is int:
                digits = b"%d" % value
                extend((integer_prefix, _u32(len(digits)), digits))
            else:
                parts.append(_encode_field(name, value))
    except (UnicodeEncodeError, struct.error):
        # Lone surrogates or a value over 4 GiB: the general path raises the precise error.
        for name, _, _ in fields:
            _encode_field(name, event[name])
        raise  # unreachable while both paths agree on what is encodable
    leaf = b"".join(parts)
    # One scan of the joined bytes keeps the per-field cost of v1 events unchanged; a hit
    # may be inside a map or mid-string, which _sealed_leaf sorts out.
    return _sealed_leaf(event, fields, leaf) if SEALED_MARK in leaf else leaf


def _sealed_leaf(event: Mapping[str, FieldValue], fields: _Layout, leaf_v1: bytes) -> bytes:
    """The v2 leaf of ``event`` if a top-level string value is sealed, else ``leaf_v1``."""
    parts = [MAGIC_V2]
    sealed = False
    for name, string_prefix, _ in fields:
        value = event[name]
        if is_sealed(value):
            assert isinstance(value, str)
            sealed = True
            data = utf8(value, f"field {name!r}")
            parts.append(string_prefix[:-1] + b"c" + length_prefixed(data))
        else:
            parts.append(_encode_field(name, value))
    return b"".join(parts) if sealed else leaf_v1


def canonical_leaves(events: Iterable[Mapping[str, FieldValue]]) -> list[bytes]:
    """Canonical leaves of several events, in order (see :func:`canonical_leaf`)."""
    return [canonical_leaf(event) for event in events]
