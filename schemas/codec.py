"""Wire framing of authtrail's Avro records: never bare Avro, always a schema handle first.

Two framings, both ``header || Avro binary body``:

* **Avro single-object encoding** (the default; Avro specification, "Single object
  encoding"): ``C3 01`` || the 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint of the
  writer schema's Parsing Canonical Form || body. :class:`SingleObjectCodec`.
* **Confluent wire format** (when a Schema Registry is configured): ``00`` || 4-byte
  big-endian schema id || body. :class:`ConfluentCodec`; the registry is any
  ``Mapping[int, schema]``, the seam where an HTTP registry client plugs in.

A codec is built from one *reader* schema (the newest this process knows; records are
encoded with it and decoded into its shape) and the writer schemas it accepts. Decoding
resolves the writer schema named in the header to the reader schema, so data written by
older (or newer) producers decodes, with defaults filled in and unknown enum symbols
read as the enum's default.

Values are plain Python: strings, ints, bytes, dicts. Logical types are *not* converted:
a ``timestamp-micros`` is an ``int`` of microseconds since the epoch, both ways, which is
exactly what the canonical leaf (docs/INTEGRITY.md section 2) hashes.

Errors: bytes that cannot be decoded raise :class:`FormatError` (unknown writer schema:
:class:`UnknownSchemaError`); a record that does not match the schema raises
:class:`InvalidArgumentError` on encode, because producing it is the caller's bug, not bad
input. fastavro's own exceptions never escape.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from authtrail.errors import (
    ConfigurationError,
    FormatError,
    InvalidArgumentError,
    UnknownSchemaError,
)
from authtrail.schemas._conformance import compile_check
from authtrail.schemas._flat_reader import FlatReader, compile_flat_reader
from authtrail.schemas._flat_writer import avro_long, compile_flat_writer

__all__ = [
    "CONFLUENT_HEADER_SIZE",
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_HEADER_SIZE",
    "SINGLE_OBJECT_MARKER",
    "Codec",
    "ConfluentCodec",
    "Schema",
    "SingleObjectCodec",
    "avro_long",
    "parsing_canonical_form",
    "schema_fingerprint",
]

#: An Avro schema as JSON: a dict, a list (union) or a string (a name or JSON text).
Schema = Mapping[str, Any] | Sequence[Any] | str

SINGLE_OBJECT_MARKER = b"\xc3\x01"
FINGERPRINT_SIZE = 8
SINGLE_OBJECT_HEADER_SIZE = len(SINGLE_OBJECT_MARKER) + FINGERPRINT_SIZE
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_SIZE = len(CONFLUENT_MAGIC) + 4

_MESSAGE_LIMIT = 300  # fastavro messages can embed whole schemas; keep ours readable


class Codec(Protocol):
    """What the stream, producers and sinks need from a framing: bytes <-> record dicts."""

    def encode(self, record: Mapping[str, Any]) -> bytes: ...

    def decode(self, data: bytes) -> dict[str, Any]: ...


def parsing_canonical_form(schema: Schema) -> str:
    """Return the Avro Parsing Canonical Form of ``schema``.

    Requires a self-contained schema (every named type defined before use), as
    :func:`schemas.load_schema` returns. Raises :class:`InvalidArgumentError` if
    ``schema`` is not a valid Avro schema.
    """
    as_json = _as_json(schema)
    try:
        parse_schema(as_json)
        return str(to_parsing_canonical_form(as_json))
    except Exception as exc:  # fastavro raises SchemaParseException, KeyError, TypeError...
        raise InvalidArgumentError(f"not a valid Avro schema: {_short(exc)}") from exc


def schema_fingerprint(schema: Schema) -> bytes:
    """Return the 8-byte CRC-64-AVRO fingerprint of ``schema``, little-endian (as framed).

    Same preconditions and errors as :func:`parsing_canonical_form`.
    """
    return bytes.fromhex(fingerprint(parsing_canonical_form(schema), "CRC-64-AVRO"))


class _ParsedSchema:
    """One schema, parsed once: its fingerprint, fastavro form and record layout.

    ``write(record)`` returns the Avro body of a record of this schema and raises
    :class:`InvalidArgumentError` when the record does not conform or holds text UTF-8
    cannot encode.
    """

    __slots__ = (
        "_tail_writer", "check", "fingerprint", "name", "parsed", "read", "source", "write",
    )  # fmt: skip

    def __init__(self, schema: Schema) -> None:
        self.source = _as_json(schema)
        self.fingerprint = schema_fingerprint(self.source)
        # Logical types stay in the schema (and out of the canonical form, which drops
        # them); fastavro just must not turn our integer microseconds into datetimes.
        self.parsed = parse_schema(_without_logical_types(self.source))
        if isinstance(self.parsed, dict):
            self.name = str(self.parsed.get("name", self.parsed.get("type")))
        else:
            self.name = str(self.parsed)
        self.check = compile_check(self.parsed)
        # Flat records (dead letters, checkpoints, the chained record's tail) have a
        # compiled writer several times faster than check + fastavro, same bytes.
        self.write: Callable[[Mapping[str, Any]], bytes] = (
            compile_flat_writer(self.parsed, self.name, self.check) or self._checked_write
        )
        self._tail_writer: Callable[[Mapping[str, Any]], bytes] | None = None
        # Likewise a compiled reader for the auth event, ~3x faster than fastavro's: used
        # when no schema resolution is needed, fastavro for anything it leaves (None).
        self.read: FlatReader | None = compile_flat_reader(self.parsed)

    def _checked_write(self, record: Mapping[str, Any]) -> bytes:
        self.check(record)
        body = io.BytesIO()
        try:
            schemaless_writer(body, self.parsed, record)
        except Exception as exc:  # it conformed, so this is text UTF-8 cannot encode
            raise InvalidArgumentError(f"cannot encode {self.name}: {_short(exc)}") from exc
        return body.getvalue()

    def first_field(self) -> tuple[str, bytes | None]:
        """Name of this record's first field and the fingerprint of its type when the type
        is defined inline (None for a primitive or a reference by name)."""
        fields = self.source.get("fields") if isinstance(self.source, dict) else None
        if not fields:
            raise InvalidArgumentError(f"{self.name} is not a record with fields")
        field_type = fields[0]["type"]
        inline = isinstance(field_type, dict) and field_type.get("type") == "record"
        return str(fields[0]["name"]), schema_fingerprint(field_type) if inline else None

    def write_tail(self, rest: Mapping[str, Any]) -> bytes:
        """The encoding of every field but the first, taken from ``rest``.

        Avro writes a record as the plain concatenation of its fields' encodings, so
        ``write(record) == encoding(first field) || write_tail(other fields)``. Raises
        :class:`InvalidArgumentError` when ``rest`` does not conform, or when a later
        field refers to a named type that only the first field defines.
        """
        if self._tail_writer is None:
            self.first_field()  # a record with fields, else InvalidArgumentError
            self._tail_writer = _ParsedSchema(
                {**self.source, "fields": self.source["fields"][1:]}
            ).write
        return self._tail_writer(rest)


def _read_body(
    data: bytes, offset: int, writer: _ParsedSchema, reader: _ParsedSchema, handle: str
) -> dict[str, Any]:
    resolve_to = None if writer.fingerprint == reader.fingerprint else reader.parsed
    if resolve_to is None and writer.read is not None:
        read = writer.read(data, offset)
        if read is not None:
            return read
    body = io.BytesIO(data)
    body.seek(offset)
    try:
        record = schemaless_reader(body, writer.parsed, resolve_to)
    except Exception as exc:  # EOFError, bad varint, enum index, UTF-8, resolution...
        # fastavro does not always say EOFError when input runs out mid-value.
        problem = "truncated" if body.tell() >= len(data) else "undecodable"
        raise FormatError(f"{problem} {writer.name} body ({handle}): {_short(exc)}") from exc
    trailing = len(data) - body.tell()
    if trailing:
        raise FormatError(f"{trailing} trailing bytes after the {writer.name} body ({handle})")
    if not isinstance(record, dict):
        raise FormatError(f"{writer.name} body ({handle}) is not a record")
    return record


class SingleObjectCodec:
    """Avro single-object encoding: ``C3 01 || fingerprint (8 bytes LE) || body``.

    ``reader_schema`` is the schema records are encoded with and decoded into;
    ``writer_schemas`` are further schemas whose data this codec accepts (older or newer
    versions of the same record). Every schema must be self-contained and valid, else
    :class:`InvalidArgumentError`.
    """

    def __init__(self, reader_schema: Schema, writer_schemas: Iterable[Schema] = ()) -> None:
        self._reader = _ParsedSchema(reader_schema)
        self._writers = {self._reader.fingerprint: self._reader}
        for schema in writer_schemas:
            writer = _ParsedSchema(schema)
            self._writers.setdefault(writer.fingerprint, writer)
        self._header = SINGLE_OBJECT_MARKER + self._reader.fingerprint

    @property
    def reader_fingerprint(self) -> bytes:
        """Fingerprint written in the header of every record this codec encodes."""
        return self._reader.fingerprint

    @property
    def flat_reader(self) -> FlatReader | None:
        """The compiled reader of bodies in the reader schema, which :meth:`decode` uses
        after the header (None: fastavro reads them)."""
        return self._reader.read

    @property
    def known_fingerprints(self) -> frozenset[bytes]:
        """Fingerprints of every writer schema :meth:`decode` accepts."""
        return frozenset(self._writers)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Frame ``record`` with the reader schema.

        Requires every required field, no field the schema lacks, and values of the
        schema's types (``int`` microseconds for timestamps, enum symbols as ``str``).
        Raises :class:`InvalidArgumentError` otherwise.
        """
        return self._header + self._reader.write(record)

    def encode_body(self, record: Mapping[str, Any]) -> bytes:
        """:meth:`encode` without the header: the Avro body alone."""
        return self._reader.write(record)

    def writer_schema(self, fingerprint: bytes) -> Any | None:
        """The writer schema (JSON form) known under ``fingerprint``, else None."""
        writer = self._writers.get(fingerprint)
        return None if writer is None else writer.source

    @property
    def first_field_fingerprint(self) -> bytes | None:
        """Fingerprint of the reader schema's first field's type, when that type is a record
        defined inline (the auth event inside a chained record); else None.

        :meth:`encode_spliced` takes bytes another :class:`SingleObjectCodec` wrote when
        its :attr:`reader_fingerprint` equals this. Raises :class:`InvalidArgumentError`
        when the reader schema is not a record with fields.
        """
        return self._reader.first_field()[1]

    def current_body(self, data: bytes) -> memoryview | None:
        """The Avro body of ``data`` (after the header) when the header names this codec's
        reader schema, else None (older writer, other framing, too short).

        Only the header is looked at: use it on data :meth:`decode` accepted, so the body
        is known to be exactly one record of the reader schema.
        """
        if data[:SINGLE_OBJECT_HEADER_SIZE] != self._header:  # also when data is shorter
            return None
        return memoryview(data)[SINGLE_OBJECT_HEADER_SIZE:]

    def encode_spliced(
        self, first_field_body: bytes | memoryview, rest: Mapping[str, Any]
    ) -> bytes:
        """Frame a record whose first field is given already encoded, without re-encoding it.

        Equals ``encode({first_field: decoded, **rest})`` byte for byte when
        ``first_field_body`` is the canonical Avro encoding of ``decoded`` (what fastavro
        writes); a body some other writer encoded differently (e.g. a map in several
        blocks) is copied as is and decodes to the same value. Requires
        ``first_field_body`` to be exactly one value of the first field's type — it is
        not checked (e.g. :meth:`current_body` of a record another codec of that type
        decoded). ``rest`` must hold the other fields, as for :meth:`encode`; raises
        :class:`InvalidArgumentError` otherwise.
        """
        return b"".join((self._header, first_field_body, self._reader.write_tail(rest)))

    def spliced_body(self, first_field_body: bytes | memoryview, rest: Mapping[str, Any]) -> bytes:
        """:meth:`encode_spliced` without the header: the Avro body alone."""
        return b"".join((first_field_body, self._reader.write_tail(rest)))

    def decode(self, data: bytes) -> dict[str, Any]:
        """Return the record framed in ``data``, in the reader schema's shape.

        Raises :class:`FormatError` for a wrong marker, a truncated header or body,
        trailing bytes or an undecodable body, and :class:`UnknownSchemaError` (naming
        the fingerprint in hex) when the writer schema is not known.
        """
        # The worker's case, once per event: the reader's own schema and a compiled reader
        # (what _read_body does for it, without the framing checks' calls and slices).
        read = self._reader.read
        if (
            read is not None
            and type(data) is bytes
            and data[:SINGLE_OBJECT_HEADER_SIZE] == self._header
        ):
            record = read(data, SINGLE_OBJECT_HEADER_SIZE)
            if record is not None:
                return record
        data = _as_bytes(data)
        if data[: len(SINGLE_OBJECT_MARKER)] != SINGLE_OBJECT_MARKER:
            raise FormatError(
                f"not Avro single-object encoding: starts with {data[:2].hex() or 'nothing'}, "
                f"expected c301{_framing_hint(data)}"
            )
        if len(data) < SINGLE_OBJECT_HEADER_SIZE:
            raise FormatError(
                f"truncated single-object header: {len(data)} of {SINGLE_OBJECT_HEADER_SIZE} bytes"
            )
        schema_handle = data[len(SINGLE_OBJECT_MARKER) : SINGLE_OBJECT_HEADER_SIZE]
        writer = self._writers.get(schema_handle)
        if writer is None:
            raise UnknownSchemaError(
                f"unknown schema fingerprint {schema_handle.hex()}; this reader knows "
                f"{', '.join(sorted(fp.hex() for fp in self._writers))}"
            )
        return _read_body(
            data,
            SINGLE_OBJECT_HEADER_SIZE,
            writer,
            self._reader,
            f"fingerprint {schema_handle.hex()}",
        )


class ConfluentCodec:
    """Confluent Schema Registry wire format: ``00 || schema id (4 bytes BE) || body``.

    ``registry`` maps schema ids to schemas; an HTTP Schema Registry client implements
    it as a ``Mapping`` whose ``__getitem__`` fetches (and may cache) a schema, raising
    ``KeyError`` for an id the registry does not have. ``schema_id`` is the id under
    which ``reader_schema`` is registered; :meth:`encode` writes it. Schemas read from the
    registry are parsed once per id and kept.

    Raises :class:`ConfigurationError` if ``schema_id`` is not in the registry or names a
    different schema than ``reader_schema``, and :class:`InvalidArgumentError` for an
    invalid schema or an id outside 0..2^31-1.
    """

    def __init__(
        self, reader_schema: Schema, schema_id: int, registry: Mapping[int, Schema]
    ) -> None:
        if not 0 <= schema_id <= 0x7FFFFFFF:
            raise InvalidArgumentError(f"schema id must be in 0..2^31-1, got {schema_id}")
        self._reader = _ParsedSchema(reader_schema)
        self._registry = registry
        self._writers: dict[int, _ParsedSchema] = {}
        registered = self._writer(schema_id, error=ConfigurationError)
        if registered.fingerprint != self._reader.fingerprint:
            raise ConfigurationError(
                f"schema id {schema_id} is {registered.name} with fingerprint "
                f"{registered.fingerprint.hex()}, not the reader schema {self._reader.name} "
                f"({self._reader.fingerprint.hex()})"
            )
        self._header = CONFLUENT_MAGIC + struct.pack(">i", schema_id)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Frame ``record`` with the reader schema's id.

        Same preconditions and errors as :meth:`SingleObjectCodec.encode`.
        """
        return self._header + self._reader.write(record)

    def decode(self, data: bytes) -> dict[str, Any]:
        """Return the record framed in ``data``, in the reader schema's shape.

        Raises :class:`FormatError` for a wrong magic byte, truncation, trailing bytes or
        an undecodable body, and :class:`UnknownSchemaError` for a schema id the registry
        does not know.
        """
        data = _as_bytes(data)
        if data[:1] != CONFLUENT_MAGIC:
            raise FormatError(
                f"not Confluent wire format: starts with {data[:1].hex() or 'nothing'}, "
                f"expected magic byte 00{_framing_hint(data)}"
            )
        if len(data) < CONFLUENT_HEADER_SIZE:
            raise FormatError(
                f"truncated Confluent header: {len(data)} of {CONFLUENT_HEADER_SIZE} bytes"
            )
        (schema_id,) = struct.unpack(">i", data[1:CONFLUENT_HEADER_SIZE])
        writer = self._writer(schema_id, error=UnknownSchemaError)
        return _read_body(
            data, CONFLUENT_HEADER_SIZE, writer, self._reader, f"schema id {schema_id}"
        )

    def _writer(self, schema_id: int, error: type[Exception]) -> _ParsedSchema:
        writer = self._writers.get(schema_id)
        if writer is not None:
            return writer
        try:
            schema = self._registry[schema_id]
        except KeyError as exc:
            raise error(f"unknown schema id {schema_id}: not in the schema registry") from exc
        try:
            writer = _ParsedSchema(schema)
        except InvalidArgumentError as exc:
            raise error(f"schema id {schema_id} in the registry is not usable: {exc}") from exc
        self._writers[schema_id] = writer
        return writer


def _as_json(schema: Schema) -> Any:
    """Accept a schema as JSON text too (what a Schema Registry returns)."""
    if isinstance(schema, str):
        if schema.lstrip()[:1] in ("{", "[", '"'):
            try:
                return json.loads(schema)
            except ValueError as exc:
                raise InvalidArgumentError(f"schema is not valid JSON: {_short(exc)}") from exc
        return schema  # a bare type name such as "string" (json.loads("null") is None)
    return schema


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    # A Kafka tombstone arrives as None: bad input for us, not a crash.
    raise FormatError(f"expected bytes, got {type(data).__name__}")


def _framing_hint(data: bytes) -> str:
    if data[:1] == CONFLUENT_MAGIC:
        return " (this looks like Confluent wire format: is a schema registry configured?)"
    if data[:2] == SINGLE_OBJECT_MARKER:
        return " (this looks like Avro single-object encoding)"
    return ""


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _without_logical_types(value)
            for key, value in node.items()
            if key != "logicalType"
        }
    if isinstance(node, list):
        return [_without_logical_types(item) for item in node]
    return node


def _short(problem: BaseException | str) -> str:
    text = str(problem)
    if not text and isinstance(problem, BaseException):
        text = type(problem).__name__  # e.g. a bare EOFError()
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."
