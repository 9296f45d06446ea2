"""Chained records gathered into ChainedBatch messages (schemas/chained_batch.avsc).

The worker writes the chained records of one input partition and processing step as one
Kafka message instead of one each, so it pays one produce (and one delivery report) per
batch, and the sink can hand the bodies to ClickHouse's Avro input format without
decoding them (sinks/avro_rows.py). A batch carries what the sink must know without
decoding: the writer epoch (fencing), each tenant's seq range (duplicates after a
restart, tiles) and the UTC month of its records (one insert should touch one partition
of the month-partitioned ``events`` table; sinks/sink.py).

Pure: bytes and dicts in and out, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from authtrail.errors import FormatError
from authtrail.schemas.codec import (
    SINGLE_OBJECT_HEADER_SIZE,
    SINGLE_OBJECT_MARKER,
    Codec,
    SingleObjectCodec,
    avro_long,
)

#: Bodies per message at most this many bytes (the broker's default limit is 1 MB).
DEFAULT_BATCH_BYTES = 512 * 1024

_MICROS_PER_DAY = 86_400_000_000

#: Fingerprint of the ChainedBatch schema :func:`_encode` writes (schemas/chained_batch.avsc);
#: a codec of any other schema encodes through the codec.
ENCODED_SCHEMA = bytes.fromhex("f7e192bb76482276")


def utc_month(micros: int) -> int:
    """``YYYYMM`` of the UTC date ``micros`` after the Unix epoch (ClickHouse ``toYYYYMM``).

    Proleptic Gregorian for any integer (civil-from-days, H. Hinnant), so no value raises.
    """
    days = micros // _MICROS_PER_DAY + 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524
                   - day_of_era // 146_096) // 365  # fmt: skip
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153  # 0 = March
    month = month_index + 3 if month_index < 10 else month_index - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return year * 100 + month


def _month_start(month: int) -> int:
    """Micros after the Unix epoch at which UTC month ``YYYYMM`` begins (days-from-civil)."""
    year, number = divmod(month, 100)
    year -= number <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (number + (-3 if number > 2 else 9)) + 2) // 5
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return (era * 146_097 + day_of_era - 719_468) * _MICROS_PER_DAY


@dataclass
class _Open:
    epoch: int
    month: int
    ranges: dict[str, list[int]] = field(default_factory=dict)  # tenant -> [first, last]
    bodies: list[bytes] = field(default_factory=list)
    size: int = 0
    newest: int | None = None  # occurred_at


class BatchBuilder:
    """Chained record bodies of one partition, cut into ChainedBatch message values.

    :meth:`add` returns a finished batch when the new record cannot join the open one
    (another month or epoch, or the size bound); :meth:`take` ends the open batch. Each
    tenant's records must be added in seq order without gaps, as the sequencer makes them.
    """

    def __init__(
        self, batch_codec: SingleObjectCodec, record_fingerprint: bytes,
        max_bytes: int = DEFAULT_BATCH_BYTES,
    ) -> None:  # fmt: skip
        self._codec = batch_codec
        self._direct = batch_codec.reader_fingerprint == ENCODED_SCHEMA
        self._record_fingerprint = record_fingerprint
        self._max_bytes = max_bytes
        self._open: _Open | None = None
        self._month_span = (0, 0, 0)  # [start, end) micros of the last month seen, and it

    def add(
        self, *, epoch: int, tenant_id: str, seq: int, occurred_at: int, body: bytes
    ) -> bytes | None:
        """Add one record; returns the batch it closed, if any."""
        finished = self.add_run(epoch, [tenant_id, seq, occurred_at, body])
        return finished[0] if finished else None

    def add_run(self, epoch: int, records: list[Any]) -> list[bytes]:
        """Add records given flat, four items each (tenant_id, seq, occurred_at, body, as
        :meth:`add` takes them), in order; returns the batches they closed."""
        finished: list[bytes] = []
        start, end, month = self._month_span
        current = self._open
        for at in range(0, len(records), 4):
            tenant_id, seq, occurred_at, body = records[at : at + 4]
            if not start <= occurred_at < end:
                month = utc_month(occurred_at)
                year, number = divmod(month, 100)
                following = (year + 1) * 100 + 1 if number == 12 else month + 1
                start, end = _month_start(month), _month_start(following)
                self._month_span = (start, end, month)
            if current is not None and (
                current.month != month or current.epoch != epoch
                or current.size + len(body) > self._max_bytes
            ):  # fmt: skip
                closed = self.take()
                if closed is not None:
                    finished.append(closed)
                current = None
            if current is None:
                current = self._open = _Open(epoch, month)
            span = current.ranges.get(tenant_id)
            if span is None:
                current.ranges[tenant_id] = [seq, seq]
            else:
                span[1] = seq
            current.bodies.append(body)
            current.size += len(body)
            if current.newest is None or occurred_at > current.newest:
                current.newest = occurred_at
        return finished

    def take(self) -> bytes | None:
        """The open batch as a message value (None when empty); a new one opens on add."""
        current, self._open = self._open, None
        if current is None:
            return None
        body = _encode(current, self._record_fingerprint) if self._direct else None
        if body is not None:
            return SINGLE_OBJECT_MARKER + ENCODED_SCHEMA + body
        return self._codec.encode(
            {
                "epoch": current.epoch,
                "record_schema": self._record_fingerprint,
                "newest_occurred_at": current.newest,
                "month": current.month,
                "tenants": [
                    {"tenant_id": tenant, "first_seq": first, "last_seq": last}
                    for tenant, (first, last) in current.ranges.items()
                ],
                "records": current.bodies,
            }
        )


def _size(size: int) -> bytes:
    """Avro's varint of a length ``size`` (non-negative): the zig-zag of the common sizes
    (below 8 KiB, one or two bytes) without a loop."""
    size <<= 1
    if size < 0x80:
        return _ONE_BYTE[size]
    if size < 0x4000:
        return bytes(((size & 0x7F) | 0x80, size >> 7))
    return avro_long(size >> 1)


_ONE_BYTE = tuple(bytes((number,)) for number in range(0x80))
_INT, _LONG = (-(1 << 31), (1 << 31) - 1), (-(1 << 63), (1 << 63) - 1)


def _encode(batch: _Open, record_fingerprint: bytes) -> bytes | None:
    """The Avro body of ``batch`` in the ChainedBatch schema of :data:`ENCODED_SCHEMA`, as
    the codec writes it (each array in one block, then a zero count), without the codec's
    check of every item (~0.9 → ~0.2 µs per record; the records' array is written in C).
    None for anything the codec would refuse (a number out of range, text UTF-8 cannot
    encode, a record that is not bytes): the codec then says why.
    tests/unit/test_chained_batch.py compares both."""
    numbers = [batch.epoch, batch.newest]
    for first, last in batch.ranges.values():
        numbers += (first, last)
    if (
        batch.newest is None or len(record_fingerprint) != 8
        or not _INT[0] <= batch.month <= _INT[1]
        or not all(type(n) is int and _LONG[0] <= n <= _LONG[1] for n in numbers)
    ):  # fmt: skip
        return None
    records = _records_array(batch.bodies)
    if records is None:  # a record that is not bytes
        return None
    parts = [avro_long(batch.epoch), record_fingerprint]
    parts += (avro_long(batch.newest), avro_long(batch.month))
    if batch.ranges:
        parts.append(avro_long(len(batch.ranges)))
        try:
            for tenant_id, (first, last) in batch.ranges.items():
                name = tenant_id.encode()
                parts += (_size(len(name)), name, avro_long(first), avro_long(last))
        except (UnicodeEncodeError, AttributeError):
            return None
    parts += (b"\x00", records)
    return b"".join(parts)


def _python_records_array(bodies: list[bytes]) -> bytes | None:
    """The records as an Avro array of bytes in one block (None unless all are bytes):
    authtrail/_speedups.c's bytes_array, and the reference tests compare it with."""
    if not all(type(body) is bytes for body in bodies):
        return None
    parts = [avro_long(len(bodies))] if bodies else []
    for body in bodies:
        parts += (_size(len(body)), body)
    parts.append(b"\x00")
    return b"".join(parts)


try:  # the records' array in C (authtrail/_speedups.c), once per batch
    from authtrail._speedups import bytes_array as _records_array
except ImportError:  # pragma: no cover - a build without a C compiler
    _records_array = _python_records_array


def is_batch(value: bytes, batch_codec: SingleObjectCodec) -> bool:
    """Whether a chained-topic value is a ChainedBatch (else a bare record or a claim)."""
    return value[2:SINGLE_OBJECT_HEADER_SIZE] in batch_codec.known_fingerprints


def decode_batch(value: bytes, batch_codec: SingleObjectCodec) -> dict[str, Any]:
    """A ChainedBatch, checked: its tenant ranges account for exactly its records.

    Raises FormatError otherwise (or when undecodable).
    """
    batch = batch_codec.decode(value)
    counted = 0
    for span in batch["tenants"]:
        if span["first_seq"] < 1 or span["last_seq"] < span["first_seq"]:
            raise FormatError(f"chained batch: bad seq range {span}")
        counted += span["last_seq"] - span["first_seq"] + 1
    if counted != len(batch["records"]) or not counted:
        raise FormatError(
            f"chained batch: tenant ranges count {counted} records, it holds "
            f"{len(batch['records'])}"
        )
    return batch


def batch_records(batch: dict[str, Any], chained_codec: Codec) -> Iterator[dict[str, Any]]:
    """The decoded ChainedRecords of a batch from :func:`decode_batch`, in order."""
    header = SINGLE_OBJECT_MARKER + batch["record_schema"]
    for body in batch["records"]:
        yield chained_codec.decode(header + body)


def chained_records(
    value: bytes, chained_codec: Codec, batch_codec: SingleObjectCodec
) -> list[dict[str, Any]]:
    """The ChainedRecords of one chained-topic value: a batch's, or the one bare record."""
    if is_batch(value, batch_codec):
        return list(batch_records(decode_batch(value, batch_codec), chained_codec))
    return [chained_codec.decode(value)]
