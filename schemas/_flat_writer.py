"""A fast writer for flat records of scalar fields, compiled once per schema.

fastavro's ``schemaless_writer`` costs ~5 µs per call even for a few fields, and the
conformance check it needs (:mod:`authtrail.schemas._conformance`) as much again; for a small
record the two are most of the cost of producing it. Two paths write small flat records
often enough for that to matter:

* the worker's hot path: the fields that follow the spliced event in every chained record
  (seq, three SHA-256 digests, source partition and offset, epoch):
  :meth:`authtrail.schemas.codec.SingleObjectCodec.encode_spliced`;
* dead letters: under a flood of bad input every rejected message costs the worker one
  DeadLetter record, and encoding it through fastavro was ~25 of the ~34 µs a reject cost.

:func:`compile_flat_writer` compiles records whose fields are int, long, boolean, bytes,
string, fixed, enum or map of strings, each possibly ``["null", T]``; anything else is
left to fastavro. The bytes are those of Avro's binary encoding (zig-zag varints,
length-prefixed bytes and UTF-8, fixed as is, an enum's symbol index, a map as one block
of pairs and an empty block, the branch index before a union's value), so they equal
fastavro's; tests compare on generated records. The auth event itself is such a record,
so the producer SDK's encode goes through it too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from authtrail.errors import InvalidArgumentError

try:  # built by hatch_build.py where a C compiler is; the generated Python front otherwise
    from authtrail import _speedups
except ImportError:  # pragma: no cover - a build without a compiler
    _speedups = None  # type: ignore[assignment]

#: Appends to the parts of a record (b"".join takes bytearrays too, unconverted).
_Append = Callable[[bytes | bytearray], None]
#: Appends the Avro encoding of a value to the parts of a record, or raises _Mismatch.
_Encode = Callable[[Any, _Append], None]

_NULL_BRANCH = b"\x00"  # union index 0: null (Avro requires a null default to be first)
_VALUE_BRANCH = b"\x02"  # union index 1, zig-zag encoded


def compile_flat_writer(
    parsed: Any, name: str, check: Callable[[Any], None], native: bool = True
) -> Callable[[Mapping[str, Any]], bytes] | None:
    """A writer for ``parsed`` (as ``fastavro.parse_schema`` returns it) when it is a record
    whose fields are int, long, boolean, bytes, string, fixed, enum or map of strings, or a
    union of null (first) and one of those; else None.

    ``check`` is the conformance check of ``parsed`` (``compile_check``). The writer
    rejects exactly what it rejects (a missing field without default, a field the schema
    lacks, a value of the wrong type, out of range or of the wrong size, ``bool`` where a
    number is due, ``bytearray`` where bytes are) and then calls it to raise
    :class:`InvalidArgumentError`, so messages do not depend on which path wrote. Text
    UTF-8 cannot encode (a lone surrogate) raises it too, naming ``name`` and the field.
    Its fast front is the C writer of ``authtrail._speedups`` when that is built and
    ``native``, else generated Python (same bytes, same fallbacks).
    """
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    named = parsed.get("__named_schemas", {})
    # (name, encode, optional, encoded default or None when the field is required)
    layout: list[tuple[str, _Encode, bool, bytes | None]] = []
    for field in parsed["fields"]:
        compiled = _field_encoder(field["type"], named)
        if compiled is None:
            return None
        encode, optional = compiled
        default = None
        if "default" in field:
            default = _encoded_default(field["default"], encode, optional)
            if default is None:  # a default we would not write as fastavro does
                return None
        layout.append((field["name"], encode, optional, default))
    names = frozenset(entry[0] for entry in layout)

    def checked_write(record: Mapping[str, Any]) -> bytes:
        parts: list[bytes | bytearray] = []
        append = parts.append
        field_name = ""
        try:
            if type(record) is not dict and not isinstance(record, Mapping):
                raise _Mismatch
            for field_name, encode, optional, default in layout:
                value = record.get(field_name, _MISSING)
                if value is _MISSING:
                    if default is None:
                        raise _Mismatch
                    append(default)
                elif optional and value is None:
                    append(_NULL_BRANCH)
                else:
                    if optional:
                        append(_VALUE_BRANCH)
                    encode(value, append)
            if not names.issuperset(record):
                raise _Mismatch
        except (_Mismatch, UnicodeEncodeError) as exc:
            check(record)  # raises for everything but text UTF-8 cannot encode
            raise InvalidArgumentError(
                f"cannot encode {name}: field {field_name!r}: {exc}"
            ) from exc
        return b"".join(parts)

    if native and _speedups is not None:
        spec = [
            _native_field(field, named, entry)
            for field, entry in zip(parsed["fields"], layout, strict=True)
        ]
        return _speedups.FlatWriter(spec, checked_write)
    return _compile_fast_path(parsed["fields"], named, layout, names, checked_write)


#: The C code's field kinds (``KIND_*`` in authtrail/_speedups.c): its writer's, and its
#: reader's with a nested record besides.
NATIVE_KINDS = {"long": 0, "string": 1, "enum": 2, "map": 3, "int": 4, "boolean": 5,
                "bytes": 6, "fixed": 7}  # fmt: skip


def _native_field(
    field: dict[str, Any], named: Mapping[str, Any],
    entry: tuple[str, _Encode, bool, bytes | None],
) -> tuple[str, int, bool, bytes | None, Any]:  # fmt: skip
    """The C writer's ``(name, kind, optional, default, extra)`` of a compiled field."""
    resolved = field_type(field["type"], named)
    assert resolved is not None  # compile_flat_writer compiled it
    kind, _ = resolved
    extra: Any = None
    if isinstance(kind, dict):
        if kind.get("type") == "enum":
            extra = _symbol_indexes(kind["symbols"])
        elif kind.get("type") == "fixed":
            extra = int(kind["size"])
        kind = kind.get("type")
    name, _, optional, default = entry
    return name, NATIVE_KINDS[kind], optional, default, extra


def _compile_fast_path(
    fields: list[dict[str, Any]], named: Mapping[str, Any],
    layout: list[tuple[str, _Encode, bool, bytes | None]], names: frozenset[str],
    checked_write: Callable[[Mapping[str, Any]], bytes],
) -> Callable[[Mapping[str, Any]], bytes]:  # fmt: skip
    """``checked_write`` with a generated front for the common case: a plain dict whose
    values have exactly the schema's Python types (``int``, ``bool``, ``bytes``, ``str``,
    None), written by straight-line code without a call per field (the chained record's
    tail, once per event: ~4 → ~1.5 µs). Anything else (another Mapping, an int subclass, a
    wrong type or size, a missing field without default, a field the schema lacks, text
    UTF-8 cannot encode) goes to ``checked_write``, which owns every error; both write the
    same bytes (tests/unit/test_flat_writer.py)."""
    scope: dict[str, Any] = {"slow": checked_write, "MISSING": _MISSING, "NAMES": names,
                             "ONE": _ONE_BYTE, "varint": _varint}  # fmt: skip
    lines = ["def write(record):", " if type(record) is not dict: return slow(record)",
             " get = record.get", " defaulted = False", " try:"]  # fmt: skip
    parts: list[str] = []
    for index, (field, (name, _, optional, default)) in enumerate(zip(fields, layout, strict=True)):
        kind = field_type(field["type"], named)
        assert kind is not None  # compile_flat_writer compiled it
        source, two_parts, extra = _fast_field_source(kind[0])
        source = source.replace("{i}", str(index))
        scope.update({name.replace("{i}", str(index)): value for name, value in extra.items()})
        rest = f"; g{index} = b''" if two_parts else ""
        lines.append(f"  value = get({name!r}, MISSING)")
        branches = []
        if default is not None:
            scope[f"DEFAULT_{index}"] = default
            branches.append(f"value is MISSING: defaulted = True; f{index} = DEFAULT_{index}")
        if optional:
            branches.append(f"value is None: f{index} = NULL")
            source = source.replace(f"f{index} = (", f"f{index} = BRANCH + (")
        for number, branch in enumerate(branches):
            lines.append(f"  {'el' if number else ''}if {branch}{rest}")
        lines += (["  else:"] if branches else []) + [
            ("   " if branches else "  ") + line for line in source.splitlines()
        ]
        parts += [f"f{index}", f"g{index}"] if two_parts else [f"f{index}"]
    scope.update(NULL=_NULL_BRANCH, BRANCH=_VALUE_BRANCH)
    lines += [
        " except UnicodeEncodeError: return slow(record)",
        f" if (defaulted or len(record) != {len(layout)}) and not NAMES.issuperset(record):",
        "  return slow(record)",
        f" return b''.join(({', '.join(parts)},))",
    ]
    exec("\n".join(lines), scope)  # the source is built above from the schema alone
    write: Callable[[Mapping[str, Any]], bytes] = scope["write"]
    return write


# Source of one value's fast write into f{i} (and g{i} for a length and its bytes), by kind;
# anything unexpected goes back to the checked writer.
_FAST_INTEGER = """\
if type(value) is not int or not LOW <= value <= HIGH: return slow(record)
value = (value << 1) ^ (value >> 63)
f{i} = (ONE[value] if value < 0x80 else varint(value))"""
_FAST_BOOLEAN = """\
if value is True: f{i} = (b'\\x01')
elif value is False: f{i} = (b'\\x00')
else: return slow(record)"""
_FAST_BYTES = """\
if type(value) is not bytes: return slow(record)
size = len(value) << 1
f{i} = (ONE[size] if size < 0x80 else varint(size)); g{i} = value"""
_FAST_STRING = """\
if type(value) is not str: return slow(record)
value = value.encode()
size = len(value) << 1
f{i} = (ONE[size] if size < 0x80 else varint(size)); g{i} = value"""
_FAST_FIXED = """\
if type(value) is not bytes or len(value) != SIZE: return slow(record)
f{i} = (value)"""
_FAST_ENUM = """\
encoded = SYMBOLS_{i}.get(value) if type(value) is str else None
if encoded is None: return slow(record)
f{i} = (encoded)"""
_FAST_STRING_MAP = """\
encoded = string_map(value) if type(value) is dict else None
if encoded is None: return slow(record)
f{i} = (encoded)"""


def _fast_field_source(kind: Any) -> tuple[str, bool, dict[str, Any]]:
    """The fast write of a value of ``kind`` (a type compile_flat_writer compiles), whether
    it has two parts (f and g), and the names it needs in scope (``{i}``: the field)."""
    if isinstance(kind, dict):
        if kind.get("type") == "fixed":
            return _FAST_FIXED.replace("SIZE", str(int(kind["size"]))), False, {}
        if kind.get("type") == "enum":
            return _FAST_ENUM, False, {"SYMBOLS_{i}": _symbol_indexes(kind["symbols"])}
        if kind.get("type") == "map":
            return _FAST_STRING_MAP, False, {"string_map": _fast_string_map}
        kind = kind.get("type")
    if kind in ("int", "long"):
        bits = 31 if kind == "int" else 63
        bounds = {"LOW": str(-(1 << bits)), "HIGH": str((1 << bits) - 1)}
        fast = _FAST_INTEGER.replace("LOW", bounds["LOW"]).replace("HIGH", bounds["HIGH"])
        return fast, False, {}
    if kind == "boolean":
        return _FAST_BOOLEAN, False, {}
    return (_FAST_BYTES if kind == "bytes" else _FAST_STRING), True, {}


def _fast_string_map(value: dict[Any, Any]) -> bytes | None:
    """A plain dict of ``str`` to ``str`` as Avro writes a map (one block, then an empty
    one), or None for anything else. UnicodeEncodeError goes to the caller's handler."""
    if not value:
        return b"\x00"
    parts: list[bytes | bytearray] = [_varint(len(value) << 1)]
    for key, item in value.items():
        if type(key) is not str or type(item) is not str:
            return None
        key_bytes, item_bytes = key.encode(), item.encode()
        parts += (
            _varint(len(key_bytes) << 1),
            key_bytes,
            _varint(len(item_bytes) << 1),
            item_bytes,
        )
    parts.append(b"\x00")
    return b"".join(parts)


class _Mismatch(Exception):
    """A value the conformance check rejects; it words the message."""


_MISSING = object()


def field_type(kind: Any, named: Mapping[str, Any]) -> tuple[Any, bool] | None:
    """A field's type ``kind`` as ``(type, optional)``: ``["null", T]`` unwrapped to ``T``,
    a name resolved to the type an earlier field defined; None for any other union."""
    optional = isinstance(kind, list)
    if optional:
        if len(kind) != 2 or kind[0] != "null":
            return None
        kind = kind[1]
    if isinstance(kind, str):
        kind = named.get(kind, kind)
    return kind, optional


def _field_encoder(kind: Any, named: Mapping[str, Any]) -> tuple[_Encode, bool] | None:
    """The encoder of a field of type ``kind`` and whether it is ``["null", T]``."""
    resolved = field_type(kind, named)
    if resolved is None:
        return None
    kind, optional = resolved
    if isinstance(kind, dict):
        if kind.get("type") == "fixed":
            return _fixed(int(kind["size"])), optional
        if kind.get("type") == "enum":
            return _enum(kind["symbols"]), optional
        if kind.get("type") == "map":
            values = field_type(kind.get("values"), named)
            return (_string_map, optional) if values == ("string", False) else None
        kind = kind.get("type")  # {"type": "long"}, left of {"type": "long", "logicalType": ...}
    encode = _PRIMITIVES.get(kind) if isinstance(kind, str) else None
    return None if encode is None else (encode, optional)


def _encoded_default(default: Any, encode: _Encode, optional: bool) -> bytes | None:
    """The encoding of a field's default, or None for a default this module does not
    write as fastavro would (a bytes or fixed default, JSON text in Avro schemas)."""
    if optional:
        return _NULL_BRANCH if default is None else None  # Avro: the first branch's type
    parts: list[bytes | bytearray] = []
    try:
        encode(default, parts.append)
    except (_Mismatch, UnicodeEncodeError):
        return None
    return b"".join(parts)


_ONE_BYTE = tuple(bytes((number,)) for number in range(0x80))


def _varint(number: int) -> bytes | bytearray:
    """Avro's varint of a non-negative ``number`` (already zig-zag encoded)."""
    if number < 0x80:
        return _ONE_BYTE[number]
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return out


def avro_long(number: int) -> bytes:
    """Avro's encoding of an ``int`` or ``long``: zig-zag, then base-128 varint."""
    return bytes(_varint((number << 1) ^ (number >> 63)))


def _integer(bits: int) -> _Encode:
    low, high = -(1 << bits), (1 << bits) - 1

    def encode(value: Any, append: _Append) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise _Mismatch
        append(_varint((value << 1) ^ (value >> 63)))  # zig-zag; in range, >> 63 == >> bits

    return encode


def _boolean(value: Any, append: _Append) -> None:
    if value is True:
        append(b"\x01")
    elif value is False:
        append(b"\x00")
    else:
        raise _Mismatch


def _bytes(value: Any, append: _Append) -> None:
    if not isinstance(value, bytes):  # as the check: no bytearray, memoryview or str
        raise _Mismatch
    append(_varint(len(value) << 1))
    append(value)


def _string(value: Any, append: _Append) -> None:
    if not isinstance(value, str):
        raise _Mismatch
    encoded = value.encode()  # UnicodeEncodeError for a lone surrogate
    append(_varint(len(encoded) << 1))
    append(encoded)


def _fixed(size: int) -> _Encode:
    def encode(value: Any, append: _Append) -> None:
        if not isinstance(value, bytes) or len(value) != size:
            raise _Mismatch
        append(value)

    return encode


def _symbol_indexes(symbols: list[str]) -> dict[str, bytes]:
    return {symbol: bytes(_varint(index << 1)) for index, symbol in enumerate(symbols)}


def _enum(symbols: list[str]) -> _Encode:
    indexes = _symbol_indexes(symbols)

    def encode(value: Any, append: _Append) -> None:
        encoded = indexes.get(value) if isinstance(value, str) else None
        if encoded is None:
            raise _Mismatch
        append(encoded)

    return encode


def _string_map(value: Any, append: _Append) -> None:
    if not isinstance(value, Mapping):
        raise _Mismatch
    if value:
        append(_varint(len(value) << 1))
        for key, item in value.items():
            _string(key, append)  # the check's rule: keys are strings
            _string(item, append)
    append(b"\x00")


_PRIMITIVES: dict[str, _Encode] = {
    "int": _integer(31),
    "long": _integer(63),
    "boolean": _boolean,
    "bytes": _bytes,
    "string": _string,
}
