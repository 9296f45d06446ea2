"""Brute-force and spraying detection over the audited stream of one partition. Pure.

The :class:`Guard` sees exactly what the sequencer chains, in chain order: live, as each
event is sequenced; after a restart, by replaying the partition's chained records. Its
state is therefore a function of the audit log itself, rebuilt from Kafka on any machine,
and a restart decides exactly what an uninterrupted run decides (docs/LOCKOUT.md).

Decisions become events (ACCOUNT_LOCKED, ACCOUNT_UNLOCKED, BRUTE_FORCE_SUSPECTED) that go
back into the audited stream, so every lockout is itself chained and signed. Their event
ids are derived from the triggering event, so publishing one twice is harmless: the
sequencer records an event id once. During a replay nothing is published; decisions whose
events never reached the log (a crash between deciding and publishing) are returned by
:meth:`Guard.unpublished` to be published then.

Decisions come back through the same events topic as producers' input, and anyone who can
produce there could send an event that looks like one. So the guard remembers the
decisions it *owes* the log (decided, not yet chained) and :meth:`Guard.owes` tells the
worker whether an event claiming to be a decision is exactly one of them; anything else
that claims the identity is refused at admission (:mod:`authtrail.stream.worker.admission`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.handover import KEYS_SERVICE
from authtrail.stream.detection.decisions import (
    LOCKOUT_SERVICE,
    Decision,
    decision_to_event,
    event_identity,
)
from authtrail.stream.detection.lockout import NativeLockoutDetector, best_lockout_detector
from authtrail.stream.detection.lockout_policy import PolicySet
from authtrail.stream.detection.spray import NativeSprayDetector, best_spray_detector

try:  # observe()'s glue in C (authtrail/_speedups.c) when both detectors are native
    from authtrail._speedups import GuardCore as _CGuardCore

    GuardCore: type[_CGuardCore] | None = _CGuardCore
except ImportError:  # pragma: no cover - a build without a compiler
    GuardCore = None

_ADVANCE_STEP = 1_000_000  # µs of event time
# Event times the detectors see: from 1970 to the end of year 9999. An event outside says
# nothing about a login a person could make, and its time plus a policy's wait would
# leave the native detectors' 64-bit microseconds; admission refuses times before 2000
# and far after the record's own, but a producer chooses the record's timestamp too.
_OBSERVED_TIMES = range(0, 253_402_300_800_000_000)
# Settled accounts (LockoutDetector.prune) go after at most this much event time: pruning
# changes no decision (tests/unit/test_lockout.py), and every account kept is carried by
# each snapshot and replayed state; a prune visits the tenant's accounts once.
_PRUNE_STEP = 60_000_000


class Guard:
    """Lockout and spraying detectors for the tenants of one partition."""

    def __init__(self, policies: PolicySet) -> None:
        lateness = policies.allowed_lateness_seconds
        self._policies, self._lateness = policies, lateness
        self._lockout = best_lockout_detector()(
            policies.lockout_for, allowed_lateness_seconds=lateness
        )
        self._spray = best_spray_detector()(policies.spray_for, allowed_lateness_seconds=lateness)
        self._replayed: dict[str, dict[str, Any]] = {}  # decided in replay, not yet in the log
        self._owed: dict[str, dict[str, Any]] = {}  # decided (live or replay), not yet chained
        self._advanced: dict[str, int] = {}  # per tenant: event time last advanced to
        self._pruned: dict[str, int] = {}
        self._bind()

    def _bind(self) -> None:
        """Observe through the C glue when both detectors are native: the same steps as
        :meth:`observe`, whose Python it calls for anything but the usual event. Bound to
        the detectors and the advanced dict of the moment: called again when they change."""
        self.__dict__.pop("observe", None)
        if (
            GuardCore is not None
            and isinstance(self._lockout, NativeLockoutDetector)
            and isinstance(self._spray, NativeSprayDetector)
        ):
            core = GuardCore(
                self._lockout.observe_identified, self._spray.observe_identified,
                self._advanced, self._advance, self._decided, partial(Guard.observe, self),
                KEYS_SERVICE, LOCKOUT_SERVICE, _ADVANCE_STEP, _OBSERVED_TIMES.stop,
            )  # fmt: skip
            self.observe = core.observe  # type: ignore[method-assign,assignment]

    def observe(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Feed one newly sequenced event; return the decision events to publish."""
        service = event.get("service")
        if service == KEYS_SERVICE:
            # A key hand-over (stream/core/handover.py): no login, and never observed live, so
            # a recovery that replays it must not let it move any clock either.
            return []
        if service == LOCKOUT_SERVICE:
            event_id = str(event.get("event_id"))
            self._replayed.pop(event_id, None)
            self._owed.pop(event_id, None)
            return []
        tenant_id, event_id, occurred_at = event_identity(event)  # checked once for both
        if occurred_at not in _OBSERVED_TIMES:
            return []
        decisions = self._lockout.observe_identified(event, tenant_id, event_id, occurred_at)
        decisions += self._spray.observe_identified(event, tenant_id, event_id, occurred_at)
        if occurred_at - self._advanced.get(tenant_id, 0) >= _ADVANCE_STEP:  # _advance()'s test
            decisions += self._advance(tenant_id, occurred_at)
        return self._decided(decisions) if decisions else []  # almost every event: none

    def _decided(self, decisions: list[Decision]) -> list[dict[str, Any]]:
        """The events of ``decisions``, owed to the log until they are chained."""
        decision_events = [decision_to_event(decision) for decision in decisions]
        for decision_event in decision_events:
            self._owed[decision_event["event_id"]] = decision_event
        return decision_events

    def owes(self, event_id: str, leaf: bytes) -> bool:
        """Whether ``event_id`` is a decision this guard made and has not yet seen chained,
        and ``leaf`` (:func:`~authtrail.stream.core.canonical.canonical_leaf`) is exactly its
        content.

        The worker admits an event claiming a decision's identity only then: an id sent
        ahead by someone else, or the right id with other content, is not the guard's.
        """
        owed = self._owed.get(event_id)
        return owed is not None and canonical_leaf(owed) == leaf

    def _advance(self, tenant_id: str, occurred_at: int) -> list[Decision]:
        """Move the tenant's event-time clock: failures buffered for lateness are applied,
        and temporary locks that ended are announced, even if their account or address
        sends nothing more. Done in steps of event time (the caller tests whether a step
        is due), because it scans the tenant; driven by the input alone, so a replay
        advances identically."""
        self._advanced[tenant_id] = occurred_at
        decisions = self._lockout.advance(tenant_id, occurred_at)
        decisions += self._spray.advance(tenant_id, occurred_at)
        if occurred_at - self._pruned.setdefault(tenant_id, occurred_at) >= _PRUNE_STEP:
            self._pruned[tenant_id] = occurred_at
            self._lockout.prune(tenant_id)
        return decisions

    def replay(self, event: Mapping[str, Any]) -> None:
        """Feed one event of the already chained log (recovery): decide, publish nothing."""
        for decision_event in self.observe(event):
            self._replayed[decision_event["event_id"]] = decision_event

    def unpublished(self) -> list[dict[str, Any]]:
        """Decision events made during replay that the log does not hold; then forget them.

        Some may be in flight (published, not yet chained): publishing them again is
        harmless because their ids repeat. They stay owed (:meth:`owes`) until chained.
        """
        pending, self._replayed = list(self._replayed.values()), {}
        return pending

    def to_state(self) -> dict[str, Any]:
        """The whole guard as JSON-compatible data (for a snapshot,
        :mod:`authtrail.stream.worker.snapshot`)."""
        return {
            "lockout": self._lockout.to_state(),
            "spray": self._spray.to_state(),
            "replayed": dict(self._replayed),
            "owed": dict(self._owed),
            "advanced": dict(self._advanced),
            "pruned": dict(self._pruned),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace this guard's state by :meth:`to_state`'s output, keeping its policies.

        Raises :class:`InvalidArgumentError` for a detector state of another version (and
        KeyError/TypeError/ValueError for a malformed one); the guard is then unchanged.
        """
        lockout = best_lockout_detector().from_state(
            state["lockout"], self._policies.lockout_for, allowed_lateness_seconds=self._lateness
        )
        spray = best_spray_detector().from_state(
            state["spray"], self._policies.spray_for, allowed_lateness_seconds=self._lateness
        )
        replayed = dict(state["replayed"])
        owed = dict(state["owed"])
        advanced = {tenant: int(at) for tenant, at in state["advanced"].items()}
        pruned = {tenant: int(at) for tenant, at in state["pruned"].items()}
        # Only now, so a state that fails to load leaves this guard as it was.
        self._lockout, self._spray, self._replayed = lockout, spray, replayed
        self._owed = owed
        self._advanced, self._pruned = advanced, pruned
        self._bind()

    @property
    def counters(self) -> dict[str, int]:
        """What the detectors counted (late events, duplicates, decisions …)."""
        merged: dict[str, int] = {}
        for counters in (self._lockout.counters, self._spray.counters):
            for name, value in dict(counters).items():
                merged[name] = merged.get(name, 0) + int(value)
        return merged
