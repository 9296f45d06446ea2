"""Rows as one ClickHouse Native block, rewritten from Avro bodies in C (authtrail/_native_rows.c).

ClickHouse reads the Avro object container of :mod:`authtrail.sinks.avro_rows` at ~4 CPU µs
a row and one Native block of the same rows at ~1, plus ~0.5 ms for each block it reads
(docs/PERFORMANCE.md, "Native blocks"): so one block per insert, written in C at ~0.5 µs a
row. :class:`NativeRows` writes each kept field of each body as ClickHouse's own Avro
reader stores it (an enum as its symbol, a timestamp as its microseconds, a union with
null as a nullable value), so the stored rows are the same:
tests/integration/test_native_rows.py compares the two paths column by column.
:func:`rows_format` gives the Avro container wherever this cannot be used: the C module
not built, or a writer schema with a type the plan has no op for.

Both have one interface: ``block(bodies, suffix)`` per Kafka message, ``container(blocks)``
per insert (raising :class:`MalformedRows` for a body that is not a row, where that is
known before ClickHouse reads it), and the ``input_format`` and ``columns`` of that insert.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from fastavro.schema import SchemaParseException, UnknownType, expand_schema

from authtrail.errors import FormatError
from authtrail.sinks.avro_rows import (
    CONTAINER_COLUMNS,
    KAFKA_FIELDS,
    RowsContainer,
    stored_event_fields,
)

try:
    from authtrail._native_rows import native_block as _native_block
except ImportError:  # pragma: no cover - a machine without a C compiler (hatch_build.py)
    _native_block = None  # type: ignore[assignment]

# authtrail/_native_rows.c's op codes and flags.
_STRING, _LONG, _INT, _ENUM, _FIXED, _MAP = range(6)
_KEEP, _NULLABLE, _NULL_SECOND = 1, 2, 4

Op = tuple[int, int, Any]


class Rows(Protocol):
    """Rows of one writer schema: a block per Kafka message, one insert's data of blocks."""

    input_format: str
    columns: tuple[str, ...]

    def block(self, bodies: Sequence[bytes], suffix: bytes) -> Any: ...

    def container(self, blocks: Sequence[Any]) -> bytes: ...


class MalformedRows(FormatError):
    """Block ``part`` of an insert holds a body that is not one row of its writer schema."""

    def __init__(self, part: int, detail: str) -> None:
        super().__init__(f"a record is not one row of its writer schema: {detail}")
        self.part = part


class _NoOp(Exception):
    """A field's type has no op: the Avro container carries it instead."""


def _plain_op(node: Any) -> tuple[int, Any, str]:
    """(code, arg, ClickHouse type) of a non-union Avro type, as ClickHouse's Avro reader
    stores it."""
    kind = node.get("type") if isinstance(node, dict) else node
    logical = node.get("logicalType") if isinstance(node, dict) else None
    if kind in ("string", "bytes") and logical is None:
        return _STRING, None, "String"
    if kind == "long":
        if logical == "timestamp-micros":
            return _LONG, None, "DateTime64(6, 'UTC')"
        if logical is None:
            return _LONG, None, "Int64"
    if kind == "int" and logical is None:
        return _INT, None, "Int32"
    if kind == "enum":
        return _ENUM, tuple(symbol.encode() for symbol in node["symbols"]), "String"
    if kind == "fixed" and logical is None:
        return _FIXED, int(node["size"]), f"FixedString({int(node['size'])})"
    if kind == "map" and _plain_op(node["values"])[0] == _STRING:
        return _MAP, None, "Map(String, String)"
    raise _NoOp(f"no op for Avro type {kind!r} ({logical or 'no logical type'})")


def _op(node: Any, keep: bool) -> tuple[Op, str]:
    """The op of one field's type and the ClickHouse type of its column."""
    flags = _KEEP if keep else 0
    if isinstance(node, list):  # a union: only null and one other type
        if len(node) != 2 or "null" not in node or node[0] == node[1]:
            raise _NoOp(f"no op for the union {node!r}")
        second = node.index("null") == 1
        code, arg, kind = _plain_op(node[0] if second else node[1])
        if code == _MAP:
            raise _NoOp("ClickHouse has no nullable map")
        flags |= _NULLABLE | (_NULL_SECOND if second else 0)
        return (code, flags, arg), f"Nullable({kind})"
    code, arg, kind = _plain_op(node)
    return (code, flags, arg), kind


def _header(name: str, kind: str) -> bytes:
    def string(text: str) -> bytes:
        data = text.encode()
        length, out = len(data), bytearray()
        while True:  # unsigned LEB128, as the Native format writes lengths
            byte, length = length & 0x7F, length >> 7
            out.append(byte | (0x80 if length else 0))
            if not length:
                return bytes(out) + data

    return string(name) + string(kind)


class NativeRows:
    """Rows with ``fields`` (a body's, then the last ``suffix_fields`` a suffix's) as Native
    blocks of the fields named in ``columns``; the others are read and skipped, as the Avro
    reader skips them. A column no field names (``epoch`` in an older worker's record) is
    not in the block and takes the table's DEFAULT.

    Raises ValueError when a field's type has no op (use :func:`rows_format`).
    """

    input_format = "Native"

    def __init__(
        self, fields: Sequence[Mapping[str, Any]], suffix_fields: int, columns: Sequence[str]
    ) -> None:
        wanted = set(columns)
        ops: list[Op] = []
        headers: list[bytes] = []
        kept: list[str] = []
        row = {"type": "record", "name": "Row", "namespace": "io.authtrail", "fields": list(fields)}
        try:
            expanded: dict[str, Any] = expand_schema(row)  # type: ignore[assignment]
            for field in expanded["fields"]:
                keep = field["name"] in wanted
                op, kind = _op(field["type"], keep)
                ops.append(op)
                if keep:
                    headers.append(_header(field["name"], kind))
                    kept.append(field["name"])
        except (_NoOp, SchemaParseException, UnknownType) as exc:
            raise ValueError(str(exc)) from None
        self._ops, self._headers = tuple(ops), tuple(headers)
        self._body_ops = len(ops) - suffix_fields
        self.columns = tuple(kept)

    def block(self, bodies: Sequence[bytes], suffix: bytes) -> tuple[list[bytes], bytes]:
        """The rows body + ``suffix`` of one message, rewritten by :meth:`container`: one
        Native block per insert, as ClickHouse spends ~0.5 ms on each block it reads."""
        return list(bodies), suffix

    def container(self, blocks: Sequence[tuple[list[bytes], bytes]]) -> bytes:
        """One Native block of the rows of ``blocks``. Raises :class:`MalformedRows` naming
        the first block that holds a body which is not one row of the fields."""
        assert _native_block is not None  # rows_format chose this class
        parts = list(blocks)
        try:
            return _native_block(self._ops, self._headers, self._body_ops, parts)
        except ValueError as exc:
            failure = exc
        for index, part in enumerate(parts):  # which one: rare, so found by trying each
            try:
                _native_block(self._ops, self._headers, self._body_ops, [part])
            except ValueError as exc:
                raise MalformedRows(index, str(exc)) from None
        raise FormatError(f"rows not readable: {failure}")  # pragma: no cover - found above


def rows_format(
    fields: Sequence[Mapping[str, Any]], suffix_fields: int, columns: Sequence[str]
) -> Rows:
    """Native blocks of ``fields`` where the C module and the fields' types allow, else the
    Avro container (ClickHouse reads it by field name into ``columns``)."""
    if _native_block is not None:
        try:
            return NativeRows(fields, suffix_fields, columns)
        except ValueError:
            pass
    # Only the columns the fields have: ClickHouse refuses a column the container lacks
    # (an older worker's record has no ``epoch``); the others take their DEFAULT.
    names = {field["name"] for field in fields}
    return RowsContainer(fields, [name for name in columns if name in names])


@functools.lru_cache(maxsize=8)
def _event_rows(schema_json: str) -> Rows:
    fields = stored_event_fields(json.loads(schema_json))
    return rows_format(fields, len(KAFKA_FIELDS), CONTAINER_COLUMNS)


def event_rows(chained_schema: Mapping[str, Any]) -> Rows:
    """The (cached) ``events`` rows of bodies of a ChainedRecord writer schema."""
    return _event_rows(json.dumps(chained_schema, sort_keys=True))
