"""``events`` rows as an Avro object container, built from chained record bodies by joining bytes.

Avro writes a record as the plain concatenation of its fields' encodings, so a
ChainedRecord body (its ``event`` record, then ``seq``, the hashes, …) is also the body of
a *flat* record with the event's fields followed by the others; appending the encodings of
``kafka_cluster``, ``kafka_partition`` and ``kafka_offset`` makes it a whole ``events``
row. ClickHouse's ``Avro`` input format reads such a container by field name (fields
without a column, like ``source_offset``, are skipped), so the sink never decodes a
record in Python (issue 12; ENVIRONMENT.md measured ~3.4 µs a row to decode and insert).

Container layout (Avro specification, "Object Container Files"): the header fastavro
writes for zero records, then per Kafka message one block: record count and byte length
as zig-zag varints, the rows, the header's sync marker.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import fastavro

from authtrail.errors import InvalidArgumentError
from authtrail.schemas.codec import avro_long
from authtrail.sinks.tables import event_columns

#: What the sink appends to every body: where it read the record.
KAFKA_FIELDS: tuple[dict[str, Any], ...] = (
    {"name": "kafka_cluster", "type": "string"},
    {"name": "kafka_partition", "type": "int"},
    {"name": "kafka_offset", "type": "long"},
)
#: The ``events`` columns a container fills (``stored_at`` takes its default).
CONTAINER_COLUMNS: tuple[str, ...] = (
    *(column.name for column in event_columns()),
    "seq", "prev_hash", "leaf_hash", "hash", "epoch",
    *(str(kafka["name"]) for kafka in KAFKA_FIELDS),
)  # fmt: skip


def _without_docs(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _without_docs(value) for key, value in node.items() if key != "doc"}
    if isinstance(node, list):
        return [_without_docs(item) for item in node]
    return node


class RowsContainer:
    """Avro object containers of rows with ``fields``, made of bodies and a per-block suffix,
    inserted into ``columns`` (default: the fields'), which ClickHouse fills by field name.

    Raises InvalidArgumentError when a field name repeats.
    """

    input_format = "Avro"

    def __init__(
        self, fields: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
    ) -> None:
        names = [str(item["name"]) for item in fields]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"a row's fields repeat a name: {names}")
        self.columns = tuple(names if columns is None else columns)
        schema = _without_docs(
            {"type": "record", "name": "Row", "namespace": "io.authtrail", "fields": list(fields)}
        )
        header = io.BytesIO()
        fastavro.writer(header, fastavro.parse_schema(schema), [], codec="null")
        self.header = header.getvalue()
        self._sync = self.header[-16:]  # the header ends with the file's sync marker

    def block(self, bodies: Sequence[bytes], suffix: bytes) -> bytes:
        """One block of rows: each body followed by ``suffix`` (the fields after the body's)."""
        rows = suffix.join(bodies) + suffix
        return avro_long(len(bodies)) + avro_long(len(rows)) + rows + self._sync

    def container(self, blocks: Sequence[bytes]) -> bytes:
        """The container holding ``blocks`` (from :meth:`block`), in order."""
        return self.header + b"".join(blocks)


def kafka_suffix(cluster: str, partition: int, offset: int) -> bytes:
    """The encoding of :data:`KAFKA_FIELDS`: where a record was read."""
    name = cluster.encode()
    return avro_long(len(name)) + name + avro_long(partition) + avro_long(offset)


def stored_event_fields(chained_schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The fields of an ``events`` row made of a body of ``chained_schema`` and the Kafka
    suffix. Raises InvalidArgumentError when its first field is not the event record."""
    fields = list(chained_schema.get("fields", ()))
    event = fields[0]["type"] if fields else None
    if not (isinstance(event, dict) and event.get("type") == "record"):
        raise InvalidArgumentError("a chained record's first field must be the event record")
    return [*event["fields"], *fields[1:], *KAFKA_FIELDS]
