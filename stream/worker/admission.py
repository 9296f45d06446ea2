"""What may enter a chain: checks on a decoded event before it gets a sequence number. Pure.

Decoding proves an event has the schema's shape; these checks refuse what the schema
cannot: an empty or absurdly long identifier, an oversized record, a timestamp no
authentication event can have, an identity reserved to authtrail's own lockout
decisions, key hand-overs and erasure records (an erasure record passes only when the
worker's key store confirms it). A refused event never enters a chain; the worker sends
it, with the reason, to the dead-letter topic and the ``rejected`` table.

Checks depend only on the record itself, never on the wall clock: a timestamp is judged
against the Kafka record's own timestamp, so replaying the same input decides the same.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from authtrail.errors import FormatError
from authtrail.producers.sdk.events import TENANT_ID_PATTERN
from authtrail.producers.sdk.partitioning import tenant_partition
from authtrail.stream.core.handover import HANDOVER_ID_PREFIX, KEYS_SERVICE
from authtrail.stream.core.rejection import REJECTION_TENANT_PREFIX
from authtrail.stream.detection.decisions import DECISION_ID_PREFIX, LOCKOUT_SERVICE
from authtrail.stream.worker.shredding import (
    ERASURE_EVENT_TYPE,
    ERASURE_ID_PREFIX,
    PRIVACY_SERVICE,
)

OVERSIZED = "oversized"
MISSING_FIELD = "missing_field"
ABSURD_TIMESTAMP = "absurd_timestamp"
WRONG_PARTITION = "wrong_partition"
RESERVED_IDENTITY = "reserved_identity"
INVALID_EVENT = "invalid_event"

_YEAR_2000_MICROS = 946_684_800_000_000

# Asked for every event, and murmur2 in Python costs ~2 µs; bounded (a few MB at most).
_tenant_partition = functools.lru_cache(maxsize=16_384)(tenant_partition)
# (tenant id, partition, partitions, max id chars) that passed every tenant check. A miss
# costs the checks again, and the event the worker's Python path (~60-90 µs, not ~10 in
# C), so the bound is above the tenants a worker serves: at 16 384, 40 000 tenants kept
# clearing it and 8 % of their events took that path again. ~180 bytes an entry, less
# than a quarter of what the sequencer keeps for a tenant (cleared when full).
_admitted: set[tuple[object, ...]] = set()
_MAX_ADMITTED = 1 << 20

try:  # check_event's usual case in C (authtrail/_speedups.c)
    from authtrail._speedups import AdmissionCore as _CAdmissionCore

    AdmissionCore: type[_CAdmissionCore] | None = _CAdmissionCore
except ImportError:  # pragma: no cover - a build without a compiler
    AdmissionCore = None

#: ``(event, record_bytes, record_timestamp_micros, partition, partitions)``: see
#: :func:`usual_admission`.
UsualAdmission = Callable[[Mapping[str, Any], int, "int | None", int, "int | None"], bool]


class RejectedEvent(FormatError):
    """An event that decodes but may not enter a chain; ``kind`` names the rule."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        super().__init__(reason)


@dataclass(frozen=True)
class Limits:
    """Admission limits. Defaults suit authentication events; all are configurable."""

    max_record_bytes: int = 64 * 1024  # one event (bare, or inside an envelope)
    # One envelope message (schemas/event_envelope.avsc): Kafka's default message.max.bytes.
    max_envelope_bytes: int = 1024 * 1024
    max_id_chars: int = 256
    earliest_micros: int = _YEAR_2000_MICROS
    max_future_seconds: int = 24 * 3600


def _folded(text: str) -> str:
    # NFKC folds full-width and other compatibility look-alikes, casefold the case:
    # what a case-insensitive search or a human reading a dashboard would take as equal.
    if text.isascii():  # the common case, 3 times per event: NFKC keeps ASCII, casefold is lower
        return text.strip().lower()
    return unicodedata.normalize("NFKC", text).strip().casefold()


# authtrail's own events: lockout decisions (stream/detection/decisions.py), key hand-overs
# (stream/core/handover.py) and erasure records (stream/worker/shredding.py).
_FOLDED_SERVICES = frozenset(
    _folded(service) for service in (LOCKOUT_SERVICE, KEYS_SERVICE, PRIVACY_SERVICE)
)
_FOLDED_ID_PREFIXES = tuple(
    _folded(prefix) for prefix in (DECISION_ID_PREFIX, HANDOVER_ID_PREFIX, ERASURE_ID_PREFIX)
)
_FOLDED_PRIVACY_SERVICE = _folded(PRIVACY_SERVICE)
_FOLDED_ERASURE_PREFIX = _folded(ERASURE_ID_PREFIX)
_FOLDED_ERASURE_TYPE = _folded(ERASURE_EVENT_TYPE)
_FOLDED_REJECTION_PREFIX = _folded(REJECTION_TENANT_PREFIX)


def reserved_identity(event: Mapping[str, Any]) -> str | None:
    """Why ``event`` claims to be one of authtrail's own events, else None.

    It does when its ``service`` is :data:`~authtrail.stream.detection.decisions.LOCKOUT_SERVICE`,
    :data:`~authtrail.stream.core.handover.KEYS_SERVICE` or
    :data:`~authtrail.stream.worker.shredding.PRIVACY_SERVICE`, its ``event_id`` starts with
    :data:`~authtrail.stream.detection.decisions.DECISION_ID_PREFIX`,
    :data:`~authtrail.stream.core.handover.HANDOVER_ID_PREFIX` or
    :data:`~authtrail.stream.worker.shredding.ERASURE_ID_PREFIX`, or its ``event_type_other`` is
    :data:`~authtrail.stream.worker.shredding.ERASURE_EVENT_TYPE`, compared after Unicode
    compatibility folding, stripping and case folding, so that ``"Authtrail-Lockout "``
    cannot pass for a decision where names are compared loosely.
    """
    service = event.get("service")
    if isinstance(service, str) and _folded(service) in _FOLDED_SERVICES:
        return f"service {service!r} is reserved to authtrail's own events"
    event_id = event.get("event_id")
    if isinstance(event_id, str) and _folded(event_id).startswith(_FOLDED_ID_PREFIXES):
        return f"event_id {event_id!r} uses a prefix reserved to authtrail's own events"
    other = event.get("event_type_other")
    if isinstance(other, str) and _folded(other) == _FOLDED_ERASURE_TYPE:
        return f"event_type_other {other!r} is reserved to authtrail's erasure records"
    return None


def claims_erasure(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` claims to be an erasure record (docs/PRIVACY.md): its service,
    event id prefix or ``event_type_other`` is the erasure record's, folded as in
    :func:`reserved_identity`. Such an event is chained only when its claim is true."""
    service, event_id = event.get("service"), event.get("event_id")
    other = event.get("event_type_other")
    return (
        (isinstance(service, str) and _folded(service) == _FOLDED_PRIVACY_SERVICE)
        or (isinstance(event_id, str) and _folded(event_id).startswith(_FOLDED_ERASURE_PREFIX))
        or (isinstance(other, str) and _folded(other) == _FOLDED_ERASURE_TYPE)
    )


def _check_tenant_id(tenant_id: str) -> None:
    """Refuse a tenant id no event may carry (after the missing/length checks)."""
    if _folded(tenant_id).startswith(_FOLDED_REJECTION_PREFIX):
        # Only the worker writes rejection logs (stream/core/rejection.py), and never through
        # the events topic: no event may ever join one.
        raise RejectedEvent(
            RESERVED_IDENTITY,
            f"tenant_id {tenant_id!r} is reserved to authtrail's rejection logs",
        )
    if not TENANT_ID_PATTERN.fullmatch(tenant_id):
        # The SDK refuses these; a foreign producer may not. Refused here, before anything
        # (sealing, key stores, checkpoint origins) takes the id as a name.
        raise RejectedEvent(
            INVALID_EVENT,
            f"tenant_id {tenant_id!r} must match {TENANT_ID_PATTERN.pattern}",
        )


def usual_admission(limits: Limits) -> UsualAdmission:
    """A test that is True only for an event :func:`check_event` surely admits with these
    limits (given the same record size, timestamp, partition and partitions), so the
    worker may skip that function for it: a tenant whose checks passed before, plain
    ASCII identities that claim nothing reserved, a time within the bounds. In C, once per
    event (the Python checks cost ~1.3 µs); False for anything else, and always without
    the extension, and then :func:`check_event` decides."""
    core = admission_core(limits)
    if core is not None:
        return core.usual
    return lambda event, record_bytes, record_timestamp_micros, partition, partitions: False


def admission_core(limits: Limits) -> _CAdmissionCore | None:
    """The C object behind :func:`usual_admission` (None without the extension, or for
    limits beyond 64 bits, which only Python judges)."""
    if AdmissionCore is None:
        return None
    try:
        return AdmissionCore(
            _admitted, limits.max_record_bytes, limits.max_id_chars,
            limits.earliest_micros, limits.max_future_seconds,
        )  # fmt: skip
    except (OverflowError, ValueError):
        return None


def check_event(
    event: Mapping[str, Any], *, record_bytes: int, record_timestamp_micros: int | None,
    limits: Limits = Limits(), partition: int | None = None, partitions: int | None = None,
    own_decision: Callable[[Mapping[str, Any]], bool] | None = None,
    erasure_claim: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> None:  # fmt: skip
    """Raise :class:`RejectedEvent` if ``event`` may not be chained.

    ``record_bytes`` is the size of the Kafka record; ``record_timestamp_micros`` its
    timestamp (None: unknown, then only the lower time bound applies). With ``partition``
    and ``partitions``, the event must have arrived in its tenant's partition
    (:func:`authtrail.producers.sdk.partitioning.tenant_partition`): one tenant, one chain.

    A tenant id starting with the rejection logs' prefix is always refused, and an event
    with a :func:`reserved_identity` is refused (:data:`RESERVED_IDENTITY`) unless
    ``own_decision(event)`` is true. The worker's decisions reach it through the same
    events topic as producers' input, so only the worker can tell its own from a forgery;
    ``own_decision`` is called only for events that claim the identity.

    An event that :func:`claims_erasure` is refused (:data:`RESERVED_IDENTITY`) unless
    ``erasure_claim(event)`` returns None: the worker checks the record against its key
    store and returns why the claim is false. Without ``erasure_claim`` (no key store to
    check against) every erasure claim is refused.
    """
    if record_bytes > limits.max_record_bytes:
        raise RejectedEvent(
            OVERSIZED, f"record of {record_bytes} bytes exceeds {limits.max_record_bytes}"
        )
    tenant_id = event.get("tenant_id")
    # The tenant checks (and the partition check below) depend on the tenant id and
    # settings alone: an id that passed them once passes again, and only the event id is
    # left to check (it is checked first either way, so the same rule fails first).
    admitted_as = (tenant_id, partition, partitions, limits.max_id_chars)
    admitted = type(tenant_id) is str and admitted_as in _admitted
    for name in ("event_id",) if admitted else ("event_id", "tenant_id"):
        value = event.get(name)
        if not isinstance(value, str) or not value.strip():
            raise RejectedEvent(MISSING_FIELD, f"{name} is missing or empty")
        if len(value) > limits.max_id_chars:
            raise RejectedEvent(
                MISSING_FIELD, f"{name} is longer than {limits.max_id_chars} characters"
            )
    if not admitted:
        _check_tenant_id(event["tenant_id"])
    reserved = reserved_identity(event)
    if reserved is not None and claims_erasure(event):
        # A forged record would show an erasure that never happened in a signed log.
        false = (
            "this worker has no privacy key store to check it against"
            if erasure_claim is None
            else erasure_claim(event)
        )
        if false is not None:
            raise RejectedEvent(
                RESERVED_IDENTITY,
                f"{reserved}; an erasure record is chained only when its claim is true "
                f"(tenant {event['tenant_id']!r}): {false}",
            )
    elif reserved is not None and (own_decision is None or not own_decision(event)):
        # A forged decision would show as a lockout that never happened, and one sent
        # ahead with a decision's deterministic id would make the real one a conflict.
        raise RejectedEvent(
            RESERVED_IDENTITY,
            f"{reserved}; only authtrail's worker may emit these (tenant "
            f"{event['tenant_id']!r}): producers must use another service name and event id",
        )
    if not admitted:
        if partition is not None and partitions is not None:
            expected = _tenant_partition(str(event["tenant_id"]), partitions)
            if partition != expected:
                raise RejectedEvent(
                    WRONG_PARTITION,
                    f"tenant {event['tenant_id']!r} belongs to partition {expected}, the event "
                    f"arrived in {partition}: key events by tenant id with Kafka's default "
                    "(murmur2) partitioner",
                )
        if len(_admitted) >= _MAX_ADMITTED:
            _admitted.clear()
        _admitted.add(admitted_as)
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
