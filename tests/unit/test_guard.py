"""The guard over the audited stream: decisions become events; a restart that replays the
log decides and publishes exactly what an uninterrupted run does."""

from __future__ import annotations

import random

import pytest

from authtrail.schemas import AUTH_EVENT
from authtrail.stream.detection.decisions import (
    ACCOUNT_LOCKED,
    BRUTE_FORCE_SUSPECTED,
    LOCKOUT_SERVICE,
)
from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout_policy import LockoutPolicy, PolicySet, SprayPolicy
from authtrail.stream.worker.app import codec

POLICIES = PolicySet(
    lockout=LockoutPolicy(max_login_failures=3, quick_login_check_milliseconds=0),
    spray=SprayPolicy(distinct_users=4, window_seconds=600),
    allowed_lateness_seconds=1.0,
)
START = 1_767_225_600_000_000


def _traffic(seed: int, count: int = 400) -> list[dict]:
    rng = random.Random(seed)
    events = []
    for n in range(count):
        failed = rng.random() < 0.6
        events.append(
            {
                "event_id": f"e{n}",
                "tenant_id": rng.choice(["acme", "globex"]),
                "event_type": "LOGIN_FAILED" if failed else "LOGIN",
                "outcome": "FAILURE" if failed else "SUCCESS",
                "occurred_at": START + n * 2_000_000,
                "user_name": f"user{rng.randrange(8)}",
                "client_ip": f"203.0.113.{rng.randrange(3)}",
                "service": "sso",
            }
        )
    return events


def _live(events: list[dict]) -> tuple[list[dict], list[dict]]:
    """Run uninterrupted; return the chain (inputs and decision events in log order)
    and every decision event published."""
    guard, log, published = Guard(POLICIES), [], []
    for event in events:
        log.append(event)
        decided = guard.observe(event)
        published += decided
        for decision in decided:  # its event comes back through the sequencer
            log.append(decision)
            assert guard.observe(decision) == []
    return log, published


def test_decisions_are_encodable_events_that_go_back_into_the_stream() -> None:
    _, published = _live(_traffic(1))
    kinds = {event["event_type"] for event in published}
    assert ACCOUNT_LOCKED in kinds and BRUTE_FORCE_SUSPECTED in kinds
    events = codec(AUTH_EVENT)
    for event in published:
        assert event["service"] == LOCKOUT_SERVICE
        assert events.decode(events.encode(event))["event_id"] == event["event_id"]
    assert len({event["event_id"] for event in published}) == len(published)


def test_same_input_gives_identical_decisions() -> None:
    assert _live(_traffic(2))[1] == _live(_traffic(2))[1]


@pytest.mark.parametrize("cut", [0, 1, 57, 180, 399])
@pytest.mark.parametrize("lost_last_publish", [False, True])
def test_restart_publishes_what_an_uninterrupted_run_publishes(
    cut: int, lost_last_publish: bool
) -> None:
    inputs = _traffic(3)
    log, reference = _live(inputs)
    # The log up to the crash: inputs[:cut] and the decision events that made it in.
    crash_at = log.index(inputs[cut]) if cut < len(inputs) else len(log)
    before = log[:crash_at]
    if lost_last_publish and before and before[-1].get("service") == LOCKOUT_SERVICE:
        before = before[:-1]  # decided, then crashed before the publish landed
    restarted = Guard(POLICIES)
    for event in before:
        restarted.replay(event)
    published = [e for e in before if e.get("service") == LOCKOUT_SERVICE]
    published += restarted.unpublished()
    for event in inputs[cut:]:
        for decision in restarted.observe(event):
            published.append(decision)
            restarted.observe(decision)
    assert sorted(e["event_id"] for e in published) == sorted(e["event_id"] for e in reference)


def test_quiet_attacker_is_still_flagged_when_the_tenants_time_moves_on() -> None:
    """Failures wait for the allowed lateness per address; other accounts' events move the
    tenant's event time, so a spray followed by silence is decided without a timer."""
    guard = Guard(PolicySet())  # Keycloak defaults; spraying: 10 accounts in 10 minutes
    spray = [
        {"event_id": f"s{n}", "tenant_id": "acme", "event_type": "LOGIN_FAILED",
         "outcome": "FAILURE", "occurred_at": START + n * 1_000_000,
         "user_name": f"victim{n}", "client_ip": "203.0.113.99"}
        for n in range(12)
    ]  # fmt: skip
    assert [d for event in spray for d in guard.observe(event)] == []
    later = {"event_id": "later", "tenant_id": "acme", "event_type": "LOGIN",
             "outcome": "SUCCESS", "occurred_at": START + 60_000_000, "user_name": "bob",
             "client_ip": "192.0.2.1"}  # fmt: skip
    decided = guard.observe(later)
    assert [(d["event_type"], d["client_ip"]) for d in decided] == [
        (BRUTE_FORCE_SUSPECTED, "203.0.113.99")
    ]


def test_the_guard_owes_each_decision_until_it_is_chained_across_restarts() -> None:
    import json

    from authtrail.stream.core.canonical import canonical_leaf

    events = codec(AUTH_EVENT)
    inputs = _traffic(4, count=60)
    guard, decided = Guard(POLICIES), []
    for event in inputs:
        decided += guard.observe(event)
    assert decided
    first = decided[0]
    leaf = canonical_leaf(events.decode(events.encode(first)))  # as it comes back from Kafka
    assert guard.owes(first["event_id"], leaf)
    assert not guard.owes(first["event_id"], canonical_leaf({**first, "message": "forged"}))
    assert not guard.owes("authtrail-lockout:account_locked:" + "0" * 32, leaf)
    # A snapshot taken while the decision is in flight still owes it after a restart.
    restored = Guard(POLICIES)
    restored.load_state(json.loads(json.dumps(guard.to_state())))
    assert restored.owes(first["event_id"], leaf) and restored.unpublished() == []
    guard.observe(first)  # chained: no longer owed
    assert not guard.owes(first["event_id"], leaf)
    # A restart that replays the log (without the decision) owes it and publishes it.
    replayed = Guard(POLICIES)
    for event in inputs:
        replayed.replay(event)
    assert first in replayed.unpublished()
    assert replayed.owes(first["event_id"], leaf)  # still, until its event is chained


def test_a_key_hand_over_replayed_in_a_recovery_changes_nothing() -> None:
    # The worker appends hand-overs without showing them to the guard; a recovery
    # replays them with the log, so the guard must ignore them to rebuild the same state.
    from authtrail.stream.core.handover import handover_event

    guard = Guard(POLICIES)
    for event in _traffic(3, 60):
        guard.replay(event)
    before = guard.to_state()
    late = START + 10**12  # far ahead of the tenant's events: would move its clock
    guard.replay(handover_event("acme", ["authtrail+00000000"], "authtrail-2+11111111", 60, late))
    assert guard.to_state() == before
