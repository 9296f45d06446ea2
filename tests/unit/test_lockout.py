"""Lockout decisions: Keycloak's brute-force rules, scripted, with outcomes from its docs.

Every expected outcome below is written from the Keycloak Server Administration Guide,
"Brute force attacks" (keycloak/keycloak docs/documentation/server_admin/topics/threat/
brute-force.adoc), quoted where it decides the case, not from this implementation. Times
are seconds from an arbitrary origin; ``run`` turns them into event-time microseconds.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail.errors import InvalidArgumentError
from authtrail.schemas import AUTH_EVENT, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.stream.detection import lockout as lockout_module
from authtrail.stream.detection.decisions import (
    ACCOUNT_LOCKED,
    ACCOUNT_UNLOCKED,
    LOCKOUT_SERVICE,
    Decision,
    decision_to_event,
)
from authtrail.stream.detection.lockout import LockoutDetector, _Tenant
from authtrail.stream.detection.lockout_policy import LockoutPolicy

# Every test here runs against the Python detector and against the one whose hot paths
# are in C (when built); _VisitEveryAccount below stays the Python reference.
IMPLEMENTATIONS = [lockout_module.LockoutDetector] + (
    [lockout_module.NativeLockoutDetector] if lockout_module.LockoutCore is not None else []
)


@pytest.fixture(scope="module", autouse=True, params=IMPLEMENTATIONS, ids=lambda c: c.__name__)
def implementation(request: pytest.FixtureRequest) -> Any:
    """Module-scoped (hypothesis tests take no function-scoped fixture): the detector
    class the tests' ``LockoutDetector`` names while they run."""
    global LockoutDetector
    LockoutDetector = request.param
    yield request.param
    LockoutDetector = lockout_module.LockoutDetector


SECOND = 1_000_000
ORIGIN = 1_700_000_000 * SECOND
TENANT = "acme"
CODEC = SingleObjectCodec(load_schema(AUTH_EVENT))

# (seconds, event_type[, user[, outcome]]) — LOGIN_FAILED unless said otherwise.
Step = tuple[Any, ...]


def event(
    seconds: float,
    event_type: str = "LOGIN_FAILED",
    user: str = "bob",
    outcome: str | None = None,
    *,
    event_id: str | None = None,
    tenant_id: str = TENANT,
    client_ip: str = "192.0.2.7",
) -> dict[str, Any]:
    return {
        "event_id": event_id or f"{tenant_id}-{user}-{event_type}-{seconds}",
        "tenant_id": tenant_id,
        "event_type": event_type,
        "outcome": outcome or ("FAILURE" if event_type == "LOGIN_FAILED" else "SUCCESS"),
        "occurred_at": ORIGIN + round(seconds * SECOND),
        "user_name": user,
        "client_ip": client_ip,
        "service": "keycloak",
    }


def detector(policy: LockoutPolicy, lateness: float = 0.0) -> LockoutDetector:
    return LockoutDetector(lambda tenant_id: policy, allowed_lateness_seconds=lateness)


def run(policy: LockoutPolicy, steps: Sequence[Step], lateness: float = 0.0) -> list[Decision]:
    """Feed the steps; finish with advance() far in the future so every expiry is announced."""
    lockout = detector(policy, lateness)
    decisions: list[Decision] = []
    for step in steps:
        decisions += lockout.observe(event(*step))
    return decisions + lockout.advance(TENANT, ORIGIN + 10**6 * SECOND)


def at(seconds: float) -> int:
    return ORIGIN + round(seconds * SECOND)


def locks(decisions: Sequence[Decision]) -> list[tuple[float, str, int, float | None]]:
    """(time, reason, failure count, locked until) of each lock, in seconds."""
    return [
        (
            (decision.occurred_at - ORIGIN) / SECOND,
            decision.reason,
            decision.failure_count,
            None if decision.locked_until is None else (decision.locked_until - ORIGIN) / SECOND,
        )
        for decision in decisions
        if decision.kind == ACCOUNT_LOCKED
    ]


def failures_every(interval: float, count: int, start: float = 0.0) -> list[Step]:
    return [(start + index * interval,) for index in range(count)]


# -- policy defaults --------------------------------------------------------------------


def test_defaults_are_keycloaks() -> None:
    # RealmManager.setupRealmDefaults and the guide's parameter tables.
    policy = LockoutPolicy()
    assert (policy.permanent_lockout, policy.max_temporary_lockouts, policy.strategy) == (
        False,
        0,
        "MULTIPLE",
    )
    assert policy.max_login_failures == 30
    assert policy.wait_increment_seconds == 60
    assert policy.max_failure_wait_seconds == 15 * 60
    assert policy.quick_login_check_milliseconds == 1000
    assert policy.minimum_quick_login_wait_seconds == 60
    assert policy.failure_reset_time_seconds == 12 * 3600
    assert policy.mode == "temporary"


# -- Lockout temporarily ----------------------------------------------------------------


def test_multiple_strategy_reproduces_the_guides_table() -> None:
    # "Max Login Failures 5, Wait Increment 30": effective waits 0,0,0,0,30,30,30,30,30,60.
    # Failures 100 s apart: never quick, and every lock has expired before the next one.
    policy = LockoutPolicy(max_login_failures=5, wait_increment_seconds=30)
    decisions = run(policy, failures_every(100, 10))
    waits = {count: until - time for time, _, count, until in locks(decisions) if until}
    assert waits == {5: 30, 6: 30, 7: 30, 8: 30, 9: 30, 10: 60}
    assert {reason for _, reason, _, _ in locks(decisions)} == {"max_login_failures"}


def test_linear_strategy_reproduces_the_guides_table() -> None:
    # "Linear": 0,0,0,0,30,60,90,120,150,180 — Wait Increment * (1 + count - Max Failures).
    policy = LockoutPolicy(max_login_failures=5, wait_increment_seconds=30, strategy="LINEAR")
    decisions = run(policy, failures_every(200, 10))
    waits = {count: until - time for time, _, count, until in locks(decisions) if until}
    assert waits == {5: 30, 6: 60, 7: 90, 8: 120, 9: 150, 10: 180}


def test_wait_grows_up_to_max_wait() -> None:
    # "Temporarily disable the user for the smallest of wait and Max Wait seconds."
    policy = LockoutPolicy(max_login_failures=1, wait_increment_seconds=300, strategy="LINEAR")
    decisions = run(policy, failures_every(1000, 5))
    assert [until - time for time, _, _, until in locks(decisions) if until] == [
        300,
        600,
        900,
        900,
        900,
    ]


def test_quick_login_locks_for_minimum_quick_login_wait() -> None:
    # "If wait <= 0 and the time between this failure and the last failure is less than
    # Quick Login Check Milliseconds, set wait to Minimum Quick Login Wait."
    decisions = run(LockoutPolicy(), [(0,), (0.5,)])
    assert locks(decisions) == [(0.5, "quick_login", 2, 60.5)]
    unlock = [decision for decision in decisions if decision.kind == ACCOUNT_UNLOCKED]
    assert [(d.occurred_at, d.reason, d.triggering_event_id) for d in unlock] == [
        (at(60.5), "lock_expired", decisions[0].triggering_event_id)
    ]


def test_exactly_quick_login_check_apart_is_not_quick() -> None:
    assert locks(run(LockoutPolicy(), [(0,), (1.0,)])) == []  # "less than", not "at most"


def test_failures_while_locked_are_not_counted() -> None:
    # "count does not increment when a temporarily disabled account commits a login failure"
    # Nor is it the "last failure": at 61 s the gap to the last counted one (0.5) is 60.5 s.
    lockout = detector(LockoutPolicy(max_login_failures=4))
    decisions: list[Decision] = []
    for step in [(0,), (0.5,), (10,), (20,), (30,), (61,), (200,)]:
        decisions += lockout.observe(event(*step))
    assert locks(decisions) == [
        (0.5, "quick_login", 2, 60.5),
        (200.0, "max_login_failures", 4, 260.0),
    ]
    assert lockout.counters["failure_while_locked"] == 3


def test_failure_count_resets_after_failure_reset_time() -> None:
    # "If the time between this failure and the last failure is greater than Failure Reset
    # Time, reset count." 3 failures lock; with a gap over 12 h the count restarts.
    policy = LockoutPolicy(max_login_failures=3)
    twelve_hours = 12 * 3600
    reset = run(policy, [(0,), (10,), (10 + twelve_hours + 1,), (20 + twelve_hours + 1,)])
    assert locks(reset) == []
    kept = run(policy, [(0,), (10,), (10 + twelve_hours,)])  # exactly the reset time: kept
    assert locks(kept) == [(10.0 + twelve_hours, "max_login_failures", 3, 70.0 + twelve_hours)]


def test_successful_login_resets_the_count() -> None:
    # "On successful login: Reset count."
    policy = LockoutPolicy(max_login_failures=3)
    steps = [(0,), (10,), (20, "LOGIN"), (30,), (40,)]
    assert locks(run(policy, steps)) == []
    assert locks(run(policy, [*steps, (50,)])) == [(50.0, "max_login_failures", 3, 110.0)]


def test_success_during_a_lock_does_not_reset() -> None:
    # Keycloak refuses a disabled account before checking its password, so a "success"
    # the source let through while locked is not Keycloak's successful login.
    policy = LockoutPolicy(max_login_failures=3)
    lockout = detector(policy)
    decisions: list[Decision] = []
    steps: list[Step] = [(0,), (0.5,), (30, "LOGIN"), (100,)]
    for step in steps:
        decisions += lockout.observe(event(*step))
    assert locks(decisions) == [
        (0.5, "quick_login", 2, 60.5),
        (100.0, "max_login_failures", 3, 160.0),
    ]
    assert lockout.counters["success_while_locked"] == 1


# -- Lockout permanently ----------------------------------------------------------------


def test_permanent_lockout_at_max_login_failures() -> None:
    # "If count is greater than or equals to Max login failures, locks the user" — for
    # good: nothing unlocks it but an administrator, and later failures are not counted.
    policy = LockoutPolicy(permanent_lockout=True, max_login_failures=3)
    decisions = run(policy, [(0,), (10,), (20,), (30,), (10_000,)])
    assert [
        (d.kind, d.reason, d.permanent, d.locked_until, d.failure_count) for d in decisions
    ] == [(ACCOUNT_LOCKED, "max_login_failures", True, None, 3)]


def test_permanent_mode_has_no_failure_reset_time() -> None:
    # The Permanent Lockout Flow has no Failure Reset Time step.
    policy = LockoutPolicy(permanent_lockout=True, max_login_failures=3)
    decisions = run(policy, [(0,), (10,), (13 * 3600,)])
    assert [(d.kind, d.permanent) for d in decisions] == [(ACCOUNT_LOCKED, True)]


def test_permanent_mode_quick_login_is_temporary() -> None:
    # "Else if the time between this failure and the last failure is less than Quick Login
    # Check Milliseconds: locks the user for Minimum Quick Login Wait."
    policy = LockoutPolicy(permanent_lockout=True, max_login_failures=3)
    decisions = run(policy, [(0,), (0.2,)])
    assert locks(decisions) == [(0.2, "quick_login", 2, 60.2)]
    assert [d.kind for d in decisions] == [ACCOUNT_LOCKED, ACCOUNT_UNLOCKED]


def test_source_unlock_ends_a_permanent_lock_and_resets_the_count() -> None:
    # "Enabling an user account resets the count."
    policy = LockoutPolicy(permanent_lockout=True, max_login_failures=2)
    steps = [(0,), (10,), (100, "ACCOUNT_UNLOCKED"), (110,), (120,)]
    decisions = run(policy, steps)
    assert [(d.kind, d.reason, (d.occurred_at - ORIGIN) / SECOND) for d in decisions] == [
        (ACCOUNT_LOCKED, "max_login_failures", 10.0),
        (ACCOUNT_UNLOCKED, "unlocked_by_source", 100.0),
        (ACCOUNT_LOCKED, "max_login_failures", 120.0),
    ]


# -- Lockout permanently after temporary lockout ---------------------------------------


def test_permanent_after_max_temporary_lockouts() -> None:
    # maxTemporaryLockouts 1: the first lockout is temporary, the second permanent.
    policy = LockoutPolicy(permanent_lockout=True, max_temporary_lockouts=1, max_login_failures=3)
    assert policy.mode == "permanent_after_temporary"
    decisions = run(policy, [(0,), (10,), (20,), (100,), (200,)])
    assert [(d.kind, d.reason, d.permanent, d.temporary_lockouts) for d in decisions] == [
        (ACCOUNT_LOCKED, "max_login_failures", False, 1),
        (ACCOUNT_UNLOCKED, "lock_expired", False, 1),
        (ACCOUNT_LOCKED, "max_temporary_lockouts", True, 2),
    ]
    assert decisions[0].locked_until == at(80)


def test_quick_login_lock_is_not_a_temporary_lockout() -> None:
    # "if quick login failure is false: Increment temporary lockout counter".
    policy = LockoutPolicy(permanent_lockout=True, max_temporary_lockouts=1, max_login_failures=3)
    decisions = run(policy, [(0,), (0.5,), (100,), (200,), (300,)])
    assert [(d.kind, d.reason, d.permanent) for d in decisions if d.kind == ACCOUNT_LOCKED] == [
        (ACCOUNT_LOCKED, "quick_login", False),
        (ACCOUNT_LOCKED, "max_login_failures", False),  # count 3: temporary lockout 1
        (ACCOUNT_LOCKED, "max_temporary_lockouts", True),  # count 4: lockout 2 > 1
    ]


def test_reset_time_also_resets_temporary_lockouts() -> None:
    # "Reset count; Reset temporary lockout counter" after Failure Reset Time.
    policy = LockoutPolicy(permanent_lockout=True, max_temporary_lockouts=1, max_login_failures=2)
    later = 13 * 3600
    decisions = run(policy, [(0,), (10,), (later,), (later + 10,)])
    assert [(d.kind, d.permanent) for d in decisions if d.kind == ACCOUNT_LOCKED] == [
        (ACCOUNT_LOCKED, False),
        (ACCOUNT_LOCKED, False),
    ]


def test_success_resets_temporary_lockouts() -> None:
    policy = LockoutPolicy(permanent_lockout=True, max_temporary_lockouts=1, max_login_failures=2)
    decisions = run(policy, [(0,), (10,), (100, "LOGIN"), (200,), (210,)])
    assert all(not d.permanent for d in decisions)


# -- expiry, time, tenants ------------------------------------------------------------------


def test_expiry_is_announced_on_the_next_event_of_the_tenant() -> None:
    lockout = detector(LockoutPolicy())
    assert locks(lockout.observe(event(0)) + lockout.observe(event(0.5))) == [
        (0.5, "quick_login", 2, 60.5)
    ]
    assert lockout.observe(event(30, "LOGOUT", user="alice")) == []  # still locked at 30
    later = lockout.observe(event(61, "LOGOUT", user="alice"))  # another account's event
    assert [(d.kind, d.user_name, d.occurred_at) for d in later] == [
        (ACCOUNT_UNLOCKED, "bob", at(60.5))
    ]
    assert lockout.observe(event(62, "LOGOUT", user="alice")) == []  # announced once


def test_advance_announces_expiry_without_events() -> None:
    lockout = detector(LockoutPolicy())
    lockout.observe(event(0))
    lockout.observe(event(0.5))
    assert lockout.advance(TENANT, at(60)) == []
    assert [d.kind for d in lockout.advance(TENANT, at(60.5))] == [ACCOUNT_UNLOCKED]
    assert lockout.advance("other-tenant", at(100)) == []


def test_a_lock_ended_and_taken_again_expires_at_its_new_end_only() -> None:
    """The first lock's end passes while the second lock holds: nothing is announced."""
    lockout = detector(LockoutPolicy())
    lockout.observe(event(0))
    lockout.observe(event(0.5))  # quick login: locked until 60.5
    lockout.observe(event(10, "ACCOUNT_UNLOCKED"))  # announced as unlocked by the source
    lockout.observe(event(20))
    assert locks(lockout.observe(event(20.5))) == [(20.5, "quick_login", 2, 80.5)]
    assert lockout.advance(TENANT, at(70)) == []
    expired = lockout.advance(TENANT, at(81))
    assert [(d.kind, d.reason, d.occurred_at) for d in expired] == [
        (ACCOUNT_UNLOCKED, "lock_expired", at(80.5))
    ]
    assert lockout.advance(TENANT, at(200)) == []


def test_an_expiry_held_for_buffered_events_waits_for_their_release_not_every_event() -> None:
    """Bob's lock ends while his failure from before its end is still buffered: the end
    is announced once that failure is applied, and until then the other accounts' events
    do not take the held expiry up again (each did, at O(held) an event)."""
    lockout = detector(LockoutPolicy(), lateness=5.0)
    lockout.observe(event(0))
    lockout.observe(event(0.5))
    assert locks(lockout.advance(TENANT, at(6))) == [(0.5, "quick_login", 2, 60.5)]
    assert lockout.observe(event(58)) == []  # buffered until event time reaches 63
    for second in range(61, 63):
        assert lockout.observe(event(second, "LOGOUT", user="alice")) == []
    tenant = lockout._tenants[TENANT]
    if isinstance(tenant, _Tenant):
        assert tenant.expiries == [] and "name:bob" not in tenant.locked
    else:  # the C tenant: its expiry heap
        assert tenant.index_sizes()[1] == 0
    expired = lockout.advance(TENANT, at(64))
    assert [(d.kind, d.reason, d.occurred_at) for d in expired] == [
        (ACCOUNT_UNLOCKED, "lock_expired", at(60.5))
    ]
    assert lockout.counters["failure_while_locked"] == 1


def test_tenants_and_accounts_are_separate() -> None:
    lockout = detector(LockoutPolicy())
    decisions = lockout.observe(event(0, user="bob"))
    decisions += lockout.observe(event(0.5, user="alice"))
    decisions += lockout.observe(event(0.6, user="bob", tenant_id="globex"))
    assert decisions == []


def test_user_key_prefers_user_id_and_folds_name_case() -> None:
    lockout = detector(LockoutPolicy())
    assert lockout.observe(event(0, user="Bob")) == []
    assert locks(lockout.observe(event(0.5, user="bob"))) == [(0.5, "quick_login", 2, 60.5)]
    strict = detector(LockoutPolicy(case_insensitive_user_names=False))
    assert strict.observe(event(0, user="Bob")) + strict.observe(event(0.5, user="bob")) == []
    by_id = detector(LockoutPolicy())
    first, second = event(0, user="bob"), event(0.5, user="robert")
    first["user_id"] = second["user_id"] = "u-1"
    assert by_id.observe(first) == []
    assert [d.user_key for d in by_id.observe(second)] == ["id:u-1"]


def test_mfa_failures_count_only_when_the_policy_says_so() -> None:
    steps = [(0, "MFA_FAILURE", "bob", "FAILURE"), (0.5, "MFA_FAILURE", "bob", "FAILURE")]
    assert run(LockoutPolicy(), steps) == []
    assert locks(run(LockoutPolicy(count_mfa_failures=True), steps)) == [
        (0.5, "quick_login", 2, 60.5)
    ]


def test_disabled_policy_decides_nothing() -> None:
    assert run(LockoutPolicy(enabled=False), [(0,), (0.5,)]) == []


def test_own_decision_events_are_ignored() -> None:
    lockout = detector(LockoutPolicy())
    lockout.observe(event(0))
    lock = lockout.observe(event(0.5))
    feedback = decision_to_event(lock[0])
    assert feedback["service"] == LOCKOUT_SERVICE
    assert lockout.observe(feedback) == []
    unlocked = dict(decision_to_event(lock[0]), event_type="ACCOUNT_UNLOCKED")
    assert lockout.observe(unlocked) == []  # ours, not an administrator's


def test_source_unlock_during_temporary_lock() -> None:
    decisions = run(LockoutPolicy(), [(0,), (0.5,), (10, "ACCOUNT_UNLOCKED")])
    assert [(d.kind, d.reason) for d in decisions] == [
        (ACCOUNT_LOCKED, "quick_login"),
        (ACCOUNT_UNLOCKED, "unlocked_by_source"),
    ]


def test_events_without_the_identity_fields_are_refused() -> None:
    lockout = detector(LockoutPolicy())
    for missing in ("tenant_id", "event_id", "occurred_at"):
        broken = event(0)
        del broken[missing]
        with pytest.raises(InvalidArgumentError):
            lockout.observe(broken)
    with pytest.raises(InvalidArgumentError):
        LockoutDetector(lambda tenant_id: LockoutPolicy(), allowed_lateness_seconds=-1)


# -- determinism, replay, restart, lateness --------------------------------------------------


def attack(seed: int, count: int = 400) -> list[dict[str, Any]]:
    """A reproducible mix of failures and successes over a few accounts and tenants."""
    rng = random.Random(seed)
    events, now = [], 0.0
    for index in range(count):
        now += rng.choice([0.1, 0.3, 0.9, 2.0, 15.0, 70.0])
        kind = "LOGIN" if rng.random() < 0.05 else "LOGIN_FAILED"
        user = rng.choice(["bob", "alice", "carol"])
        tenant = rng.choice([TENANT, "globex"])
        events.append(event(now, kind, user, event_id=f"e{index}", tenant_id=tenant))
    return events


POLICY = LockoutPolicy(max_login_failures=5, wait_increment_seconds=20)


def jittered(events: Sequence[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    """``events`` in an arrival order where each is up to ``seconds`` late, reproducibly."""

    def arrival(item: dict[str, Any]) -> float:
        delay = random.Random(item["event_id"]).uniform(0, seconds * SECOND)
        return float(item["occurred_at"]) + delay

    return sorted(events, key=arrival)


def by_time(decisions: Sequence[Decision]) -> list[Decision]:
    return sorted(decisions, key=lambda d: (d.occurred_at, d.kind, d.tenant_id, d.user_key or ""))


def decide(
    events: Sequence[dict[str, Any]],
    lateness: float = 5.0,
    detector_: LockoutDetector | None = None,
) -> list[Decision]:
    lockout = detector_ or detector(POLICY, lateness)
    decisions: list[Decision] = []
    for item in events:
        decisions += lockout.observe(item)
    for tenant in (TENANT, "globex"):
        decisions += lockout.advance(tenant, ORIGIN + 10**7 * SECOND)
    return decisions


def test_replay_gives_identical_decisions() -> None:
    events = attack(1)
    first, second = decide(events), decide(events)
    assert first == second
    assert len([d for d in first if d.kind == ACCOUNT_LOCKED]) > 5  # the input does lock


def test_replayed_events_make_no_new_decision() -> None:
    events = attack(2)
    doubled = [item for original in events for item in (original, dict(original))]
    lockout = detector(POLICY, 5.0)
    assert decide(doubled, detector_=lockout) == decide(events)
    assert lockout.counters["duplicate"] == len(events)


@pytest.mark.parametrize("cut", [1, 57, 200, 399])
def test_restart_from_state_decides_the_same(cut: int) -> None:
    events = attack(3)
    # Local disorder within the lateness, so buffered events cross the restart.
    shuffled = jittered(events, 4.0)
    before = detector(POLICY, 5.0)
    decisions: list[Decision] = []
    for item in shuffled[:cut]:
        decisions += before.observe(item)
    stored = json.loads(json.dumps(before.to_state()))  # plain data, through real JSON
    after = LockoutDetector.from_state(
        stored, lambda tenant_id: POLICY, allowed_lateness_seconds=5.0
    )
    assert decisions + decide(shuffled[cut:], detector_=after) == decide(shuffled)


def test_tenant_state_round_trip() -> None:
    lockout = detector(POLICY, 5.0)
    for item in attack(4, 100):
        lockout.observe(item)
    copy = detector(POLICY, 5.0)
    for tenant in (TENANT, "globex"):
        state = lockout.tenant_state(tenant)
        assert state is not None
        copy.load_tenant_state(tenant, json.loads(json.dumps(state)))
    assert copy.to_state() == lockout.to_state()
    assert lockout.tenant_state("nobody") is None
    with pytest.raises(InvalidArgumentError):
        LockoutDetector.from_state({"version": 99}, lambda tenant_id: POLICY)


def test_out_of_order_within_lateness_is_applied_in_event_time_order() -> None:
    # In event time: failures at 0 and 2 (not quick), then 2.5 (0.5 s after 2: quick).
    # They arrive 2.5, 0, 2: without reordering 0 and 2 would look like a quick pair.
    in_order = decide([event(0), event(2), event(2.5), event(100, "LOGOUT")])
    arrived = decide([event(2.5), event(0), event(2), event(100, "LOGOUT")])
    assert locks(arrived) == locks(in_order) == [(2.5, "quick_login", 3, 62.5)]
    # Every event displaced by under 4 s of arrival: the same decisions (announced at
    # other moments, so compared in event-time order).
    assert by_time(decide(jittered(attack(5), 4.0))) == by_time(decide(attack(5)))


def test_late_events_beyond_lateness_are_ignored_and_counted() -> None:
    lockout = detector(LockoutPolicy(), 5.0)
    decisions = lockout.observe(event(10))
    decisions += lockout.observe(event(20))
    decisions += lockout.observe(event(10.5))  # 9.5 s behind bob's newest event: late
    decisions += lockout.advance(TENANT, at(1000))
    assert locks(decisions) == []  # 10 and 10.5 would have been a quick pair
    assert lockout.counters["late"] == 1


def test_advance_makes_older_events_late_for_every_account() -> None:
    lockout = detector(LockoutPolicy(), 5.0)
    lockout.advance(TENANT, at(100))
    assert lockout.observe(event(94, user="new")) == []
    assert lockout.counters["late"] == 1


def test_prune_forgets_only_settled_accounts() -> None:
    lockout = detector(LockoutPolicy(max_login_failures=3), 0.0)
    lockout.observe(event(0, user="settled"))
    lockout.observe(event(1, "LOGIN", user="settled"))
    lockout.observe(event(0, user="counting"))
    lockout.observe(event(0, user="locked"))
    lockout.observe(event(0.5, user="locked"))
    lockout.advance(TENANT, at(30))
    assert lockout.prune(TENANT) == 1  # "settled": no failures left, nothing pending
    state = lockout.tenant_state(TENANT)
    assert state is not None
    assert sorted(state["accounts"]) == ["name:counting", "name:locked"]
    lockout.advance(TENANT, at(13 * 3600))  # "locked" announced; "counting" past reset
    assert lockout.prune(TENANT) == 2


def test_prune_keeps_failures_until_strictly_older_than_the_reset_time() -> None:
    policy = LockoutPolicy(max_login_failures=3, failure_reset_time_seconds=600)
    lockout = detector(policy, 0.0)
    lockout.observe(event(0, user="edge"))
    lockout.advance(TENANT, at(600))  # the failure is exactly the reset time old
    assert lockout.prune(TENANT) == 0
    lockout.advance(TENANT, at(600) + 1)
    assert lockout.prune(TENANT) == 1


# -- the events decisions become ---------------------------------------------------------------


def test_decision_events_encode_and_keep_their_ids_on_replay() -> None:
    decisions = decide(attack(6))
    events = [decision_to_event(decision) for decision in decisions]
    for item in events:
        assert CODEC.decode(CODEC.encode(item))["event_id"] == item["event_id"]
    assert [decision_to_event(d)["event_id"] for d in decide(attack(6))] == [
        item["event_id"] for item in events
    ]
    assert len({item["event_id"] for item in events}) == len(events)


def test_decision_event_fields() -> None:
    decisions = run(LockoutPolicy(), [(0,), (0.5,)])
    lock, unlock = (decision_to_event(decision) for decision in decisions)
    assert lock["event_type"] == "ACCOUNT_LOCKED" and unlock["event_type"] == "ACCOUNT_UNLOCKED"
    assert lock["outcome"] == "SUCCESS" and lock["service"] == LOCKOUT_SERVICE
    assert lock["occurred_at"] == at(0.5) and unlock["occurred_at"] == at(60.5)
    assert lock["attributes"] == {
        "reason": "quick_login",
        "triggering_event_id": f"{TENANT}-bob-LOGIN_FAILED-0.5",
        "failure_count": "2",
        "permanent": "false",
        "temporary_lockouts": "0",
        "user_key": "name:bob",
        "window_start": str(at(0)),
        "window_end": str(at(0.5)),
        "locked_until": str(at(60.5)),
    }
    assert lock["event_id"].startswith("authtrail-lockout:account_locked:")
    assert unlock["correlation_id"] == lock["correlation_id"]  # both name the trigger
    # The id is bound to tenant, trigger and kind: change any and it changes.
    for changed in (
        replace(decisions[0], triggering_event_id="x"),
        replace(decisions[0], tenant_id="globex"),
        replace(decisions[0], kind=ACCOUNT_UNLOCKED),
    ):
        assert decision_to_event(changed)["event_id"] != lock["event_id"]


class _VisitEveryAccount(LockoutDetector):
    """The time step as it was before the due index: a release of every buffered account;
    and expiry as it was before the expiry heap: a look at every locked account."""

    def _expire(self, tenant: _Tenant) -> list[Decision]:
        if tenant.clock is None or not tenant.locked:
            return []
        due = []
        for key in tenant.locked:
            account = tenant.accounts[key]
            until = account.locked_until or 0
            oldest = account.order.oldest()
            held_back = oldest is not None and oldest < until
            if account.expiry_due(tenant.clock) and not held_back:
                due.append((until, key))
        decisions = []
        for _, key in sorted(due):
            decisions.append(tenant.accounts[key].unlocked(None, tenant.clock))
            del tenant.locked[key]
        return decisions

    def advance(self, tenant_id: str, now: int) -> list[Decision]:
        tenant = self._tenants.get(tenant_id) or self._tenants.setdefault(tenant_id, _Tenant())
        tenant.floor = now if tenant.floor is None else max(tenant.floor, now)
        tenant.clock = now if tenant.clock is None else max(tenant.clock, now)
        policy = self._policy_for(tenant_id)
        decisions: list[Decision] = []
        for key in sorted(tenant.buffered):
            account = tenant.accounts[key]
            released = account.order.release(self._lateness, tenant.floor)
            if released:
                decisions += self._apply(tenant, account, released, policy)
        decisions += self._expire(tenant)
        return sorted(decisions, key=lambda decision: decision.occurred_at)


def _step_event(at: int, event_type: str, user: str, copy: int) -> dict[str, Any]:
    """The event of a generated step: ``copy`` tells copies of one event apart."""
    return {"tenant_id": TENANT, "event_id": f"{user}-{at}-{copy}", "event_type": event_type,
            "outcome": "FAILURE" if "FAILED" in event_type else "SUCCESS", "occurred_at": at,
            "user_name": user}  # fmt: skip


@settings(max_examples=500, derandomize=True, database=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["event", "event", "event", "event", "advance", "prune"]),
            # Seconds the sources' clock moves on, and an event's time against it (late
            # ones too): multiples of 5 like the latenesses, so that events fall exactly on
            # a cutoff, where a release leaves their ids remembered.
            st.sampled_from([0, 5, 5, 10]),
            st.sampled_from(range(-40, 5, 5)),
            st.sampled_from(["LOGIN_FAILED", "LOGIN_FAILED", "LOGIN", "ACCOUNT_UNLOCKED"]),
            st.sampled_from(["alice", "bob", "carol"]),
            st.integers(0, 2),  # event id: repeats are duplicates (or late copies)
        ),
        max_size=150,
    ),
    lateness=st.sampled_from([0.0, 5.0, 30.0]),
)
def test_the_indexes_decide_and_remember_what_visiting_every_account_does(
    steps: list[tuple[str, int, int, str, str, int]], lateness: float
) -> None:
    policy = LockoutPolicy(max_login_failures=3, wait_increment_seconds=60,
                           quick_login_check_milliseconds=2000,
                           failure_reset_time_seconds=300)  # fmt: skip
    indexed = LockoutDetector(lambda _: policy, allowed_lateness_seconds=lateness)
    reference = _VisitEveryAccount(lambda _: policy, allowed_lateness_seconds=lateness)
    clock = ORIGIN
    for action, moved, jitter, event_type, user, copy in steps:
        clock += moved * SECOND
        if action == "advance":
            assert indexed.advance(TENANT, clock) == reference.advance(TENANT, clock)
        elif action == "prune":
            assert indexed.prune(TENANT) == reference.prune(TENANT)
        else:
            event = _step_event(clock + jitter * SECOND, event_type, user, copy)
            assert indexed.observe(event) == reference.observe(event)
        assert indexed.to_state() == reference.to_state()
    # Reloaded from its state, the index is rebuilt and goes on deciding the same.
    reloaded = LockoutDetector.from_state(indexed.to_state(), lambda _: policy,
                                          allowed_lateness_seconds=lateness)  # fmt: skip
    final = clock + 3600 * SECOND
    assert reloaded.advance(TENANT, final) == reference.advance(TENANT, final)
    assert reloaded.to_state() == reference.to_state()


def test_the_due_index_stays_bounded_under_distinct_accounts() -> None:
    """Entries leave the index as event time passes them, so a stream of ever new accounts
    keeps it at about the events of the lateness window."""
    policy = LockoutPolicy()
    detector = LockoutDetector(lambda _: policy, allowed_lateness_seconds=5.0)
    for n in range(20_000):
        at = ORIGIN + n * SECOND // 10
        event = {"tenant_id": TENANT, "event_id": f"e{n}", "event_type": "LOGIN_FAILED",
                 "outcome": "FAILURE", "occurred_at": at, "user_name": f"u{n}"}  # fmt: skip
        detector.observe(event)
        if n % 10 == 0:
            detector.advance(TENANT, at)
        if n % 6000 == 0:
            detector.prune(TENANT)
    tenant = detector._tenants[TENANT]
    if isinstance(tenant, _Tenant):
        assert len(tenant.due) <= 200 and len(tenant.buffered) <= 60
    else:  # the C tenant: its heaps' sizes
        due, expiries = tenant.index_sizes()
        assert due <= 200 and expiries == 0
        assert sum(account.order.oldest() is not None for account in tenant.accounts.values()) <= 60


@settings(max_examples=500, derandomize=True, database=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["event", "event", "event", "event", "advance", "prune"]),
            st.sampled_from([0, 5, 5, 10, 400]),
            st.sampled_from(range(-40, 5, 5)),
            st.sampled_from(["LOGIN_FAILED", "LOGIN_FAILED", "LOGIN", "ACCOUNT_UNLOCKED"]),
            st.sampled_from(["alice", "bob", "carol"]),
            st.integers(0, 2),
        ),
        max_size=150,
    ),
    lateness=st.sampled_from([0.0, 5.0, 30.0]),
    mode=st.sampled_from(["temporary", "permanent"]),
)
def test_pruning_changes_no_decision(
    steps: list[tuple[str, int, int, str, str, int]], lateness: float, mode: str
) -> None:
    """prune() forgets only accounts a fresh one would replace exactly: a detector that
    prunes whenever it may decides what one that never prunes decides (so the guard may
    prune as often as it likes)."""
    policy = LockoutPolicy(max_login_failures=3, wait_increment_seconds=60,
                           quick_login_check_milliseconds=2000, failure_reset_time_seconds=300,
                           permanent_lockout=mode == "permanent")  # fmt: skip
    pruned = LockoutDetector(lambda _: policy, allowed_lateness_seconds=lateness)
    kept = LockoutDetector(lambda _: policy, allowed_lateness_seconds=lateness)
    clock = ORIGIN
    for action, moved, jitter, event_type, user, copy in steps:
        clock += moved * SECOND
        if action == "advance":
            assert pruned.advance(TENANT, clock) == kept.advance(TENANT, clock)
        elif action == "prune":
            pruned.prune(TENANT)
        else:
            event = _step_event(clock + jitter * SECOND, event_type, user, copy)
            assert pruned.observe(event) == kept.observe(event)
    final = clock + 3600 * SECOND
    assert pruned.advance(TENANT, final) == kept.advance(TENANT, final)
