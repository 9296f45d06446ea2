"""Auth events as the SDK takes them: :func:`new_event` builds one, :func:`validate_event`
checks what the Avro schema cannot express (ids, the event-type rules).

Pure (no Kafka client), so HTTP ingest and other adapters check events with the rules
``AuditProducer.send`` applies.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from authtrail.errors import InvalidArgumentError

__all__ = ["TENANT_ID_PATTERN", "event_ids", "new_event", "validate_event"]

#: What ``auth_event.avsc`` allows as a tenant id.
TENANT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

_ALWAYS_FAILURE = frozenset({"LOGIN_FAILED", "MFA_FAILURE"})


def new_event(
    tenant_id: str,
    event_type: str,
    *,
    event_id: str | None = None,
    outcome: str | None = None,
    occurred_at: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Return a new AuthEvent dict for one logical event, ready for ``AuditProducer.send``.

    ``event_id`` defaults to a fresh UUID4: create the event once and resend that same
    dict on retry, so downstream deduplication sees one event. Pass your source's own id
    (``"okta:<uuid>"``) when it has one. ``occurred_at`` defaults to now, in microseconds
    since the epoch; ``outcome`` to FAILURE for LOGIN_FAILED and MFA_FAILURE, else
    SUCCESS. ``fields`` are further AuthEvent fields (``user_id=...``, ``client_ip=...``).

    Raises :class:`InvalidArgumentError` for a tenant id outside :data:`TENANT_ID_PATTERN`.
    Schema conformance of ``fields`` is checked by ``AuditProducer.send``.
    """
    _check_tenant_id(tenant_id)
    event: dict[str, Any] = {
        "event_id": event_id if event_id is not None else str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "event_type": event_type,
        "outcome": outcome or ("FAILURE" if event_type in _ALWAYS_FAILURE else "SUCCESS"),
        "occurred_at": occurred_at if occurred_at is not None else time.time_ns() // 1000,
    }
    event.update(fields)
    return event


# Tenant ids that matched, so an event pays a set lookup, not the pattern (a service
# sends for few tenants; bounded, cleared when full).
_VALID_TENANT_IDS: set[str] = set()
_MAX_VALID_TENANT_IDS = 16_384


def _check_tenant_id(tenant_id: Any) -> None:
    if type(tenant_id) is str and tenant_id in _VALID_TENANT_IDS:
        return
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise InvalidArgumentError(
            f"tenant_id {tenant_id!r} must match {TENANT_ID_PATTERN.pattern} "
            "(letters, digits, '.', '_', '-'; at most 128)"
        )
    if type(tenant_id) is str:  # a subclass could compare equal to what it is not
        if len(_VALID_TENANT_IDS) >= _MAX_VALID_TENANT_IDS:
            _VALID_TENANT_IDS.clear()
        _VALID_TENANT_IDS.add(tenant_id)


def validate_event(event: Any) -> None:
    """Raise :class:`InvalidArgumentError` if ``AuditProducer.send`` would refuse
    ``event`` for its ids or event-type rules (the schema itself is checked on encoding)."""
    event_ids(event)


def event_ids(event: Any) -> tuple[str, str]:
    """Check what the Avro schema cannot express; return ``(event_id, tenant_id)``."""
    if type(event) is not dict and not isinstance(event, Mapping):  # dict: no ABC check
        raise InvalidArgumentError(f"event must be a mapping, got {type(event).__name__}")
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidArgumentError(
            f"event_id must be a non-empty string, got {event_id!r}; use new_event()"
        )
    tenant_id = event.get("tenant_id")
    _check_tenant_id(tenant_id)
    assert isinstance(tenant_id, str)
    event_type = event.get("event_type")
    if event_type == "LOGIN_FAILED" and event.get("outcome") != "FAILURE":
        raise InvalidArgumentError(
            f"event {event_id!r}: LOGIN_FAILED requires outcome FAILURE, "
            f"got {event.get('outcome')!r}"
        )
    if event.get("event_type_other") is not None and event_type != "OTHER":
        raise InvalidArgumentError(
            f"event {event_id!r}: event_type_other is only for event_type OTHER, not {event_type!r}"
        )
    return event_id, tenant_id
