"""What may enter a chain: checks on a decoded event before it gets a sequence number. Pure.

Decoding proves an event has the schema's shape; these checks refuse what the schema
cannot: an empty or absurdly long identifier, an oversized record, a timestamp no
authentication event can have. A refused event never enters a chain; the worker sends
it, with the reason, to the dead-letter topic and the ``rejected`` table.

Checks depend only on the record itself, never on the wall clock: a timestamp is judged
against the Kafka record's own timestamp, so replaying the same input decides the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authtrail.errors import FormatError
from stream.partitioning import tenant_partition

OVERSIZED = "oversized"
MISSING_FIELD = "missing_field"
ABSURD_TIMESTAMP = "absurd_timestamp"
WRONG_PARTITION = "wrong_partition"

_YEAR_2000_MICROS = 946_684_800_000_000


class RejectedEvent(FormatError):
    """An event that decodes but may not enter a chain; ``kind`` names the rule."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        super().__init__(reason)


@dataclass(frozen=True)
class Limits:
    """Admission limits. Defaults suit authentication events; all are configurable."""

    max_record_bytes: int = 64 * 1024
    max_id_chars: int = 256
    earliest_micros: int = _YEAR_2000_MICROS
    max_future_seconds: int = 24 * 3600


def check_event(
    event: Mapping[str, Any], *, record_bytes: int, record_timestamp_micros: int | None,
    limits: Limits = Limits(), partition: int | None = None, partitions: int | None = None,
) -> None:  # fmt: skip
    """Raise :class:`RejectedEvent` if ``event`` may not be chained.

    ``record_bytes`` is the size of the Kafka record; ``record_timestamp_micros`` its
    timestamp (None: unknown, then only the lower time bound applies). With ``partition``
    and ``partitions``, the event must have arrived in its tenant's partition
    (:func:`stream.partitioning.tenant_partition`): one tenant, one chain.
    """
    if record_bytes > limits.max_record_bytes:
        raise RejectedEvent(
            OVERSIZED, f"record of {record_bytes} bytes exceeds {limits.max_record_bytes}"
        )
    for name in ("event_id", "tenant_id"):
        value = event.get(name)
        if not isinstance(value, str) or not value.strip():
            raise RejectedEvent(MISSING_FIELD, f"{name} is missing or empty")
        if len(value) > limits.max_id_chars:
            raise RejectedEvent(
                MISSING_FIELD, f"{name} is longer than {limits.max_id_chars} characters"
            )
    if partition is not None and partitions is not None:
        expected = tenant_partition(str(event["tenant_id"]), partitions)
        if partition != expected:
            raise RejectedEvent(
                WRONG_PARTITION,
                f"tenant {event['tenant_id']!r} belongs to partition {expected}, the event "
                f"arrived in {partition}: key events by tenant id with Kafka's default "
                "(murmur2) partitioner",
            )
    occurred_at = event.get("occurred_at")
    if not isinstance(occurred_at, int) or occurred_at < limits.earliest_micros:
        raise RejectedEvent(
            ABSURD_TIMESTAMP, f"occurred_at {occurred_at!r} is before 2000-01-01T00:00:00Z"
        )
    if record_timestamp_micros is not None:
        latest = record_timestamp_micros + limits.max_future_seconds * 1_000_000
        if occurred_at > latest:
            ahead = (occurred_at - record_timestamp_micros) // 1_000_000
            raise RejectedEvent(
                ABSURD_TIMESTAMP,
                f"occurred_at is {ahead} s after the record was produced "
                f"(more than {limits.max_future_seconds} s in the future)",
            )
