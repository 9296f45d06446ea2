"""A fast reader for Avro records (the auth event, the chained record), compiled once per
schema.

fastavro's ``schemaless_reader`` costs ~15 µs for one auth event (30 fields, most of them
null): the largest single item of the worker's per-event core (docs/PERFORMANCE.md § Bulk
worker core), and ~23 µs for a chained record, which recovery reads for every record it
replays. A function generated for the schema's exact field list, straight-line code with
no per-field dispatch, reads the same record in about a third of that.

:func:`compile_flat_reader` compiles records whose fields are long, int, boolean, string,
bytes, fixed, an enum, a map of strings, an array of bytes (the event envelope), a union
of null (first) and one of those but a map or an array, or a record of such fields. The
reader returns the record only for a body it read completely and canonically enough to be
sure fastavro reads the same dict; for anything unusual (truncated or trailing bytes, bad
UTF-8, a negative length, a union branch or enum index out of range, a varint beyond 64
bits, an int beyond 32, a boolean byte other than 0 or 1, map or array blocks with a byte
size) it returns None and the caller reads with fastavro, which then owns every error
message. tests/unit/test_flat_reader.py compares both on generated and mutated bodies.
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


def _block(data: bytes, pos: int) -> tuple[int, int]:
    """The item count of a map's or array's block at ``pos`` (0: the end), and the
    position after it; :class:`_Unusual` for a block with its byte size (a negative
    count)."""
    count = data[pos]
    pos += 1
    if count & 0x80:
        count, pos = _varint(data, pos, count)
    if count & 1:
        raise _Unusual
    return count >> 1, pos


def _string_map(data: bytes, pos: int) -> tuple[dict[str, str], int]:
    """A map of strings at ``pos`` (blocks of entries, ending with a count of 0)."""
    entries: dict[str, str] = {}
    while True:
        count, pos = _block(data, pos)
        if count == 0:
            return entries, pos
        for _ in range(count):
            key, pos = _string(data, pos)
            entries[key], pos = _string(data, pos)


def _bytes_array(data: bytes, pos: int) -> tuple[list[bytes], int]:
    """An array of bytes at ``pos`` (blocks of items, ending with a count of 0)."""
    items: list[bytes] = []
    while True:
        count, pos = _block(data, pos)
        if count == 0:
            return items, pos
        for _ in range(count):
            start, pos = _sized(data, pos)
            items.append(data[start:pos])


def _sized(data: bytes, pos: int) -> tuple[int, int]:
    """Where the bytes of the string or bytes value at ``pos`` start and end."""
    size = data[pos]
    pos += 1
    if size & 0x80:
        size, pos = _varint(data, pos, size)
    end = pos + (size >> 1)
    if size & 1 or end > len(data):
        raise _Unusual
    return pos, end


def _string(data: bytes, pos: int) -> tuple[str, int]:
    start, end = _sized(data, pos)
    return data[start:end].decode(), end


# Source of one field's read into ``value`` (the generated function's local), by kind.
_LONG = """\
value = data[pos]; pos += 1
if value & 0x80: value, pos = _varint(data, pos, value)
value = (value >> 1) ^ -(value & 1)"""
_INT = (
    _LONG
    + """
if not -0x80000000 <= value <= 0x7FFFFFFF: raise _Unusual"""
)
_SIZED = """\
size = data[pos]; pos += 1
if size & 0x80: size, pos = _varint(data, pos, size)
end = pos + (size >> 1)
if size & 1 or end > length: raise _Unusual
value = data[pos:end]{decode}; pos = end"""
_STRING, _BYTES = _SIZED.format(decode=".decode()"), _SIZED.format(decode="")
_BOOLEAN = """\
value = data[pos]; pos += 1
if value > 1: raise _Unusual
value = value == 1"""
_FIXED = """\
end = pos + {size}
if end > length: raise _Unusual
value = data[pos:end]; pos = end"""
_ENUM = """\
value = data[pos]; pos += 1
if value & 0x81 or value >> 1 >= {count}: raise _Unusual
value = SYMBOLS_{index}[value >> 1]"""
_MAP = "value, pos = _string_map(data, pos)"
_BYTES_ARRAY = "value, pos = _bytes_array(data, pos)"
_RECORD = "value, pos = RECORD_{index}(data, pos, length)"
_OPTIONAL = """\
branch = data[pos]; pos += 1
if branch == 0: value = None
elif branch != 2: raise _Unusual
else:
{read}"""
_PRIMITIVES = {"long": _LONG, "int": _INT, "boolean": _BOOLEAN, "string": _STRING,
               "bytes": _BYTES}  # fmt: skip

#: The C reader's field kinds (authtrail/_speedups.c): the writer's, a nested record and an
#: array of bytes.
_NATIVE_KINDS = {**NATIVE_KINDS, "record": 8, "array": 9}
# The containers read (never optional): a map of strings, an array of bytes.
_CONTAINERS = {"map": ("values", "string"), "array": ("items", "bytes")}

# ``fields(data, pos, length)``: a record's fields read from ``pos`` and the position after
# them; raises _Unusual, IndexError or UnicodeDecodeError for what it leaves to fastavro.
_Fields = Callable[[bytes, int, int], tuple[dict[str, Any], int]]


def compile_flat_reader(parsed: Any, native: bool = True) -> FlatReader | None:
    """A reader for ``parsed`` (as ``fastavro.parse_schema`` returns it, logical types
    removed) when it is a record of the field kinds in the module docs; else None. The C
    reader of ``authtrail._speedups`` (same results, ~3x faster) when it is built and
    ``native``, else one generated in Python."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    named = parsed.get("__named_schemas", {})
    if native and _speedups is not None:
        return _native_reader(parsed, named, frozenset())
    fields = _compile_fields(parsed, named, frozenset())
    if fields is None:
        return None

    def read(data: bytes, pos: int) -> dict[str, Any] | None:
        length = len(data)
        try:
            record, end = fields(data, pos, length)
        except (_Unusual, IndexError, UnicodeDecodeError):
            return None
        return record if end == length else None

    return read


def _resolved(kind: Any, named: Mapping[str, Any]) -> tuple[Any, bool] | None:
    """:func:`field_type` of ``kind``, None for a type with a logical type (fastavro would
    turn it into another Python type)."""
    resolved = field_type(kind, named)
    if resolved is None or (isinstance(resolved[0], dict) and "logicalType" in resolved[0]):
        return None
    return resolved


def _native_reader(
    record: dict[str, Any], named: Mapping[str, Any], within: frozenset[str]
) -> _speedups.FlatReader | None:
    """The C reader of ``record`` (``within``: the records it is nested in, which it must
    not contain again), or None when a field is not one it reads (the same fields
    :func:`_field_source` refuses)."""
    if record.get("name") in within:
        return None
    within |= {record.get("name", "")}
    spec = []
    for field in record["fields"]:
        resolved = _resolved(field["type"], named)
        if resolved is None:
            return None
        kind, optional = resolved
        extra: Any = None
        if isinstance(kind, dict):
            if kind.get("type") == "enum":
                extra = tuple(kind["symbols"])
            elif kind.get("type") == "fixed":
                extra = int(kind["size"])
            elif kind.get("type") in _CONTAINERS:
                part, wanted = _CONTAINERS[kind["type"]]
                if optional or kind.get(part) != wanted:
                    return None
            elif kind.get("type") == "record":
                extra = None if optional else _native_reader(kind, named, within)
                if extra is None:
                    return None
            kind = kind.get("type")
        if kind not in _NATIVE_KINDS:
            return None
        spec.append((field["name"], _NATIVE_KINDS[kind], optional, extra))
    assert _speedups is not None
    return _speedups.FlatReader(spec)


def _compile_fields(
    record: dict[str, Any], named: Mapping[str, Any], within: frozenset[str]
) -> _Fields | None:
    """The generated reader of ``record``'s fields, or None when one is unsupported."""
    if record.get("name") in within:
        return None
    within |= {record.get("name", "")}
    names: dict[str, Any] = {"_Unusual": _Unusual, "_varint": _varint,
                             "_string_map": _string_map, "_bytes_array": _bytes_array}  # fmt: skip
    lines = ["def fields(data, pos, length):"]
    entries = []
    for index, field in enumerate(record["fields"]):
        read = _field_source(field["type"], named, index, names, within)
        if read is None:
            return None
        lines += [" " + line for line in read.splitlines()]
        lines.append(f" field_{index} = value")
        entries.append(f"{field['name']!r}: field_{index}")
    lines.append(f" return {{{', '.join(entries)}}}, pos")
    exec("\n".join(lines), names)  # the source is built above from the schema alone
    fields: _Fields = names["fields"]
    return fields


def _field_source(kind: Any, named: Mapping[str, Any], index: int, names: dict[str, Any],
                  within: frozenset[str]) -> str | None:  # fmt: skip
    """The source reading one value of ``kind`` into ``value``, or None if unsupported."""
    read = ""
    resolved = _resolved(kind, named)  # an enum may be defined in an earlier field
    if resolved is None:
        return None
    kind, optional = resolved
    if isinstance(kind, dict):
        if kind.get("type") == "enum":
            names[f"SYMBOLS_{index}"] = tuple(kind["symbols"])
            read = _ENUM.format(count=len(kind["symbols"]), index=index)
        elif kind.get("type") == "fixed":
            read = _FIXED.format(size=int(kind["size"]))
        elif kind.get("type") == "map" and kind.get("values") == "string" and not optional:
            read = _MAP
        elif kind.get("type") == "array" and kind.get("items") == "bytes" and not optional:
            read = _BYTES_ARRAY
        elif kind.get("type") == "record" and not optional:
            nested = _compile_fields(kind, named, within)
            if nested is None:
                return None
            names[f"RECORD_{index}"] = nested
            read = _RECORD.format(index=index)
        elif kind.get("type") in ("map", "record", "array"):
            return None
        else:
            kind = kind.get("type")  # {"type": "long"}
    if isinstance(kind, str):
        read = _PRIMITIVES.get(kind, "")
    if not read:
        return None
    if optional:
        return _OPTIONAL.format(read="\n".join(" " + line for line in read.splitlines()))
    return read
