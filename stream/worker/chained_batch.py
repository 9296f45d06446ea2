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
)

#: Bodies per message at most this many bytes (the broker's default limit is 1 MB).
DEFAULT_BATCH_BYTES = 512 * 1024

_MICROS_PER_DAY = 86_400_000_000


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
        self._record_fingerprint = record_fingerprint
        self._max_bytes = max_bytes
        self._open: _Open | None = None
        self._month_span = (0, 0, 0)  # [start, end) micros of the last month seen, and it

    def add(
        self, *, epoch: int, tenant_id: str, seq: int, occurred_at: int, body: bytes
    ) -> bytes | None:
        """Add one record; returns the batch it closed, if any."""
        start, end, month = self._month_span
        if not start <= occurred_at < end:
            month = utc_month(occurred_at)
            year, number = divmod(month, 100)
            following = (year + 1) * 100 + 1 if number == 12 else month + 1
            start, end = _month_start(month), _month_start(following)
            self._month_span = (start, end, month)
        finished = None
        current = self._open
        if current is not None and (
            current.month != month or current.epoch != epoch
            or current.size + len(body) > self._max_bytes
        ):  # fmt: skip
            finished = self.take()
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
