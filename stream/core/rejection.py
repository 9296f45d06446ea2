"""The rejection log: every rejected input message, chained like a tenant's events. Pure.

A dead letter is evidence too: that a forged lockout decision was refused, that a service
sent garbage. So each rejection joins the hash chain of a reserved tenant, one per input
partition (``authtrail-rejected-<partition>``), is batched, signed and published like any
tenant's events, and ``verify`` finds a rejected row deleted, edited or truncated away
(docs/INTEGRITY.md §12). Input events may not use these tenant ids
(:mod:`authtrail.stream.worker.admission`).

Canonical leaf of a rejection (same framing as an event's, docs/INTEGRITY.md §2, with one
more value type for raw bytes)::

    leaf   = "authtrail-rejection-v1\\n" || field*      fields sorted by name, None omitted
    field  = str(name) || type || value
    type   = b"b" bytes: str(bytes) | b"s" string: str(utf8) | b"i" integer: str(decimal)
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from authtrail.errors import InvalidArgumentError
from authtrail.stream.core.canonical import length_prefixed, utf8

REJECTION_TENANT_PREFIX = "authtrail-rejected-"
MAGIC = b"authtrail-rejection-v1\n"

_REJECTION_TENANT = re.compile(r"authtrail-rejected-(0|[1-9][0-9]{0,9})\Z")

# The dead letter's fields (schemas/dead_letter.avsc) and their leaf types.
FIELD_TYPES: dict[str, bytes] = {
    "error_kind": b"s",
    "original": b"b",
    "original_key": b"b",
    "reason": b"s",
    "rejected_at": b"i",
    "source_index": b"i",  # None (omitted) for a whole message: older leaves unchanged
    "source_offset": b"i",
    "source_partition": b"i",
    "source_timestamp": b"i",
    "source_topic": b"s",
    "tenant_id": b"s",
}
# (name, type, the field's framing before its value) in leaf order.
_FIELDS = [
    (name, FIELD_TYPES[name], length_prefixed(name.encode("ascii")) + FIELD_TYPES[name])
    for name in sorted(FIELD_TYPES, key=lambda name: name.encode("ascii"))
]
_REQUIRED = ("original", "reason", "error_kind", "source_topic", "source_partition",
             "source_offset", "rejected_at")  # fmt: skip


def rejection_tenant(partition: int) -> str:
    """The reserved tenant whose chain holds the rejections of input ``partition``."""
    if partition < 0:
        raise InvalidArgumentError(f"partition {partition} has no rejection log")
    return f"{REJECTION_TENANT_PREFIX}{partition}"


def is_rejection_tenant(tenant_id: str) -> bool:
    """Whether ``tenant_id`` names a rejection log (exactly, as the worker spells it)."""
    return _REJECTION_TENANT.match(tenant_id) is not None


def rejection_leaf(rejection: Mapping[str, bytes | str | int | None]) -> bytes:
    """The canonical leaf of a dead letter (schemas/dead_letter.avsc, timestamps as µs).

    Raises :class:`InvalidArgumentError` for a missing required field, a value of the
    wrong type or text that is not valid Unicode.
    """
    parts = [MAGIC]
    for name, kind, header in _FIELDS:
        value = rejection.get(name)
        if value is None:
            continue
        if kind == b"b" and isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
        elif kind == b"s" and isinstance(value, str):
            data = utf8(value, f"field {name!r}")
        elif kind == b"i" and type(value) is int:
            data = b"%d" % value
        else:
            raise InvalidArgumentError(
                f"rejection field {name!r}: {type(value).__name__} is not of type {kind.decode()}"
            )
        parts += (header, length_prefixed(data))
    missing = [name for name in _REQUIRED if rejection.get(name) is None]
    if missing:
        raise InvalidArgumentError(f"rejection field {missing[0]!r} is missing")
    return b"".join(parts)
