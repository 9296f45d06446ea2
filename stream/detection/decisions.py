"""What the brute-force detectors decide, and the AuthEvents that record it. Pure.

A :class:`Decision` is ACCOUNT_LOCKED / ACCOUNT_UNLOCKED (:mod:`authtrail.stream.detection.lockout`)
or BRUTE_FORCE_SUSPECTED (:mod:`authtrail.stream.detection.spray`). :func:`decision_to_event` turns
one into an AuthEvent whose ``event_id`` is derived from the event that triggered it, so replaying
the input reproduces the same ids and the sequencer records each decision once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from authtrail.errors import InvalidArgumentError
from authtrail.stream.core.canonical import is_sealed

__all__ = [
    "ACCOUNT_LOCKED",
    "ACCOUNT_UNLOCKED",
    "BRUTE_FORCE_SUSPECTED",
    "LOCKOUT_SERVICE",
    "Decision",
    "by_time",
    "decision_to_event",
    "event_identity",
    "keyed_identity",
    "pseudonym_attribute",
    "user_key",
]

ACCOUNT_LOCKED = "ACCOUNT_LOCKED"
ACCOUNT_UNLOCKED = "ACCOUNT_UNLOCKED"
BRUTE_FORCE_SUSPECTED = "BRUTE_FORCE_SUSPECTED"
#: ``service`` of the events authtrail's own decisions become; the detectors ignore them.
LOCKOUT_SERVICE = "authtrail-lockout"
#: Every decision event's id starts with this; the sequencer remembers such ids forever.
DECISION_ID_PREFIX = f"{LOCKOUT_SERVICE}:"


@dataclass(frozen=True, slots=True)
class Decision:
    """One lockout or spraying decision. Times are event time, microseconds since the epoch.

    ``occurred_at`` is when the decision took effect: the triggering failure for a lock,
    ``locked_until`` for an expiry. ``triggering_event_id`` is the event that caused it
    (for an expiry: the event that caused the lock).
    """

    kind: str
    tenant_id: str
    reason: str
    occurred_at: int
    triggering_event_id: str
    user_key: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    client_ip: str | None = None
    failure_count: int = 0
    window_start: int | None = None
    window_end: int | None = None
    locked_until: int | None = None
    permanent: bool = False
    temporary_lockouts: int = 0
    distinct_users: int = 0
    sample_user_names: tuple[str, ...] = ()


def by_time(decisions: list[Decision]) -> list[Decision]:
    """``decisions`` oldest first (a stable sort: decisions of one time keep their order)."""
    return sorted(decisions, key=lambda decision: decision.occurred_at)


def pseudonym_attribute(field: str) -> str:
    """The ``attributes`` key holding ``field``'s pseudonym (stream/worker/shredding.py)."""
    return "pseudonym." + field


def keyed_identity(event: Mapping[str, Any], field: str) -> str | None:
    """``field``'s value for correlation (the lockout detector): its pseudonym when the
    value is sealed (each sealing differs, the pseudonym does not), else the value."""
    value = event.get(field)
    if not is_sealed(value):
        return value if isinstance(value, str) else None
    attributes = event.get("attributes") or {}
    found = attributes.get(pseudonym_attribute(field))
    return f"pseudonym:{found}" if found else None


def user_key(event: Mapping[str, Any], case_insensitive_names: bool) -> str | None:
    """The account an event is about: ``id:<user_id>``, else ``name:<user_name>``, else None.

    Names are case-folded when ``case_insensitive_names`` (Keycloak lower-cases user
    names; a Linux account name is case-sensitive).
    """
    if event.get("user_id"):
        return f"id:{event['user_id']}"
    # A sealed name differs in every event; its pseudonym does not (docs/PRIVACY.md).
    name = keyed_identity(event, "user_name")
    if not name:
        return None
    return f"name:{name.casefold() if case_insensitive_names else name}"


def event_identity(event: Mapping[str, Any]) -> tuple[str, str, int]:
    """``(tenant_id, event_id, occurred_at)`` of an AuthEvent; raises
    :class:`InvalidArgumentError` when one is missing or of the wrong type."""
    tenant_id, event_id, occurred_at = (
        event.get("tenant_id"), event.get("event_id"), event.get("occurred_at"),
    )  # fmt: skip
    if not isinstance(tenant_id, str) or not tenant_id:
        raise InvalidArgumentError(f"event needs a tenant_id, got {tenant_id!r}")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidArgumentError(f"event needs an event_id, got {event_id!r}")
    if isinstance(occurred_at, bool) or not isinstance(occurred_at, int):
        raise InvalidArgumentError(f"event {event_id!r} needs integer occurred_at micros")
    return tenant_id, event_id, occurred_at


def decision_to_event(decision: Decision) -> dict[str, Any]:
    """The AuthEvent recording ``decision``, ready for the codec and the sequencer.

    ``event_id`` is ``authtrail-lockout:<kind>:<32 hex>`` from SHA-256 over tenant,
    triggering event id and kind: replaying the trigger reproduces the id.
    """
    seed = "\x00".join((decision.tenant_id, decision.triggering_event_id, decision.kind))
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:32]
    attributes = {
        "reason": decision.reason,
        "triggering_event_id": decision.triggering_event_id,
        "failure_count": str(decision.failure_count),
        "permanent": "true" if decision.permanent else "false",
        "temporary_lockouts": str(decision.temporary_lockouts),
    }
    optional = {
        "user_key": decision.user_key,
        "window_start": decision.window_start,
        "window_end": decision.window_end,
        "locked_until": decision.locked_until,
    }
    attributes.update({name: str(value) for name, value in optional.items() if value is not None})
    if decision.kind == BRUTE_FORCE_SUSPECTED:
        attributes["distinct_users"] = str(decision.distinct_users)
        # JSON: a user name may contain a comma.
        attributes["sample_user_names"] = json.dumps(list(decision.sample_user_names))
    return {
        "event_id": f"{DECISION_ID_PREFIX}{decision.kind.lower()}:{digest}",
        "tenant_id": decision.tenant_id,
        "event_type": decision.kind,
        "outcome": "SUCCESS",
        "occurred_at": decision.occurred_at,
        "service": LOCKOUT_SERVICE,
        "user_id": decision.user_id,
        "user_name": decision.user_name,
        "client_ip": decision.client_ip,
        "correlation_id": decision.triggering_event_id,
        "message": _message(decision),
        "attributes": attributes,
    }


def _message(decision: Decision) -> str:
    who = decision.user_name or decision.user_id or decision.client_ip or "?"
    if decision.kind == BRUTE_FORCE_SUSPECTED:
        return (
            f"{decision.distinct_users} accounts failed to log in from {decision.client_ip} "
            f"between {_iso(decision.window_start)} and {_iso(decision.window_end)}"
        )
    if decision.kind == ACCOUNT_UNLOCKED:
        return f"account {who} unlocked ({decision.reason})"
    until = "permanently" if decision.permanent else f"until {_iso(decision.locked_until)}"
    return (
        f"account {who} locked {until} after {decision.failure_count} failures ({decision.reason})"
    )


def _iso(micros: int | None) -> str:
    if micros is None:
        return "?"
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
