"""A fast reader for flat records (the auth event), compiled once per schema.

fastavro's ``schemaless_reader`` costs ~15 µs for one auth event (30 fields, most of them
null): the largest single item of the worker's per-event core (docs/PERFORMANCE.md § Bulk
worker core). A function generated for the schema's exact field list, straight-line code
with no per-field dispatch, reads the same event in about a third of that.

:func:`compile_flat_reader` compiles records whose fields are long, string, an enum, a map
of strings, or a union of null (first) and long, string or enum. The reader returns the
record only for a body it read completely and canonically enough to be sure fastavro
reads the same dict; for anything unusual (truncated or trailing bytes, bad UTF-8, a
negative length, a union branch or enum index out of range, a varint beyond 64 bits,
map blocks with a byte size) it returns None and the caller reads with fastavro, which
then owns every error message. tests/unit/test_flat_reader.py compares both on generated
and mutated bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from authtrail.schemas._flat_writer import NATIVE_KINDS, field_type

try:  # built by hatch_build.py where a C compiler is; the Python reader otherwise
    from authtrail import _speedups
except ImportError:  # pragma: no cover - a build without a compiler
    _speedups = None  # type: ignore[assignment]

#: ``read(data, offset)``: the record whose body is ``data[offset:]``, or None.
FlatReader = Callable[[bytes, int], dict[str, Any] | None]


class _Unusual(Exception):
    """A body the fast reader leaves to fastavro."""


def _varint(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """The raw (still zig-zag encoded) varint whose first byte ``first`` ends before
    ``pos``, and the position after it; :class:`_Unusual` beyond 64 bits."""
    number, shift = first & 0x7F, 7
    while True:
        byte = data[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise _Unusual
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            return number, pos
        shift += 7


def _string_map(data: bytes, pos: int) -> tuple[dict[str, str], int]:
    """A map of strings at ``pos`` (blocks of entries, ending with a count of 0)."""
    entries: dict[str, str] = {}
    while True:
        count = data[pos]
        pos += 1
        if count & 0x80:
            count, pos = _varint(data, pos, count)
        if count == 0:
            return entries, pos
        if count & 1:  # a negative count: a block with its byte size
            raise _Unusual
        for _ in range(count >> 1):
            key, pos = _string(data, pos)
            entries[key], pos = _string(data, pos)


def _string(data: bytes, pos: int) -> tuple[str, int]:
    size = data[pos]
    pos += 1
    if size & 0x80:
        size, pos = _varint(data, pos, size)
    end = pos + (size >> 1)
    if size & 1 or end > len(data):
        raise _Unusual
    return data[pos:end].decode(), end


# Source of one field's read into ``value`` (the generated function's local), by kind.
_LONG = """\
value = data[pos]; pos += 1
if value & 0x80: value, pos = _varint(data, pos, value)
value = (value >> 1) ^ -(value & 1)"""
_STRING = """\
size = data[pos]; pos += 1
if size & 0x80: size, pos = _varint(data, pos, size)
end = pos + (size >> 1)
if size & 1 or end > length: raise _Unusual
value = data[pos:end].decode(); pos = end"""
_ENUM = """\
value = data[pos]; pos += 1
if value & 0x81 or value >> 1 >= {count}: raise _Unusual
value = SYMBOLS_{index}[value >> 1]"""
_MAP = "value, pos = _string_map(data, pos)"
_OPTIONAL = """\
branch = data[pos]; pos += 1
if branch == 0: value = None
elif branch != 2: raise _Unusual
else:
{read}"""


def compile_flat_reader(parsed: Any, native: bool = True) -> FlatReader | None:
    """A reader for ``parsed`` (as ``fastavro.parse_schema`` returns it) when it is a
    record of the field kinds in the module docs; else None. The C reader of
    ``authtrail._speedups`` (same results, ~3x faster) when it is built and ``native``,
    else one generated in Python."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    named = parsed.get("__named_schemas", {})
    if native and _speedups is not None:
        spec = _native_spec(parsed["fields"], named)
        return None if spec is None else _speedups.FlatReader(spec)
    names: dict[str, Any] = {"_Unusual": _Unusual, "_varint": _varint,
                             "_string_map": _string_map}  # fmt: skip
    lines = ["def read(data, pos):", " length = len(data)", " try:"]
    fields = []
    for index, field in enumerate(parsed["fields"]):
        read = _field_source(field["type"], named, index, names)
        if read is None:
            return None
        lines += ["  " + line for line in read.splitlines()]
        lines.append(f"  field_{index} = value")
        fields.append(f"{field['name']!r}: field_{index}")
    lines += [
        "  if pos != length: return None",
        " except (_Unusual, IndexError, UnicodeDecodeError): return None",
        f" return {{{', '.join(fields)}}}",
    ]
    exec("\n".join(lines), names)  # the source is built above from the schema alone
    reader: FlatReader = names["read"]
    return reader


# The C reader's field kinds (authtrail/_speedups.c).
_NATIVE_KINDS = {kind: NATIVE_KINDS[kind] for kind in ("long", "string", "enum", "map")}


def _native_spec(fields: Any, named: Mapping[str, Any]) -> list[tuple[Any, ...]] | None:
    """``(name, kind, optional, symbols)`` per field for the C reader, or None when a
    field is not one it reads (the same fields :func:`_field_source` refuses)."""
    spec = []
    for field in fields:
        resolved = field_type(field["type"], named)
        if resolved is None:
            return None
        kind, optional = resolved
        symbols = None
        if isinstance(kind, dict):
            if kind.get("type") == "enum":
                symbols = tuple(kind["symbols"])
            elif kind.get("type") == "map" and (kind.get("values") != "string" or optional):
                return None
            kind = kind.get("type")
        if kind not in _NATIVE_KINDS:
            return None
        spec.append((field["name"], _NATIVE_KINDS[kind], optional, symbols))
    return spec


def _field_source(kind: Any, named: Mapping[str, Any], index: int,
                  names: dict[str, Any]) -> str | None:  # fmt: skip
    """The source reading one value of ``kind`` into ``value``, or None if unsupported."""
    read = ""
    resolved = field_type(kind, named)  # an enum may be defined in an earlier field
    if resolved is None:
        return None
    kind, optional = resolved
    if isinstance(kind, dict):
        if kind.get("type") == "enum":
            names[f"SYMBOLS_{index}"] = tuple(kind["symbols"])
            read = _ENUM.format(count=len(kind["symbols"]), index=index)
        elif kind.get("type") == "map" and kind.get("values") == "string" and not optional:
            read = _MAP
        else:
            kind = kind.get("type")  # {"type": "long", "logicalType": ...}
    if isinstance(kind, str):
        read = {"long": _LONG, "string": _STRING}.get(kind, "")
    if not read:
        return None
    if optional:
        return _OPTIONAL.format(read="\n".join(" " + line for line in read.splitlines()))
    return read
