"""The lockout detector's hot paths in C (NativeLockoutDetector) against the Python one.

tests/unit/test_lockout.py runs every scripted Keycloak case and both property tests
against each implementation; here random traces over several tenants, accounts and
policies must give both the same decisions, counters and state at every step, and a
state must carry over between them.
"""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
from types import MappingProxyType
from typing import Any

import pytest

from authtrail._speedups import PolicyLookup
from authtrail.stream.detection import lockout as lockout_module
from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout import LockoutDetector
from authtrail.stream.detection.lockout_policy import (
    LockoutPolicy,
    PolicySet,
    native_policy_for,
)

pytestmark = pytest.mark.skipif(
    lockout_module.LockoutCore is None, reason="authtrail._speedups is not built"
)

SECOND = 1_000_000
ORIGIN = 1_700_000_000 * SECOND
TENANTS = ("acme", "globex", "initech")
POLICIES = {
    "acme": LockoutPolicy(max_login_failures=3, wait_increment_seconds=60,
                          quick_login_check_milliseconds=2000, failure_reset_time_seconds=300),
    "globex": LockoutPolicy(permanent_lockout=True, max_temporary_lockouts=2,
                            max_login_failures=2, strategy="LINEAR", wait_increment_seconds=30,
                            max_failure_wait_seconds=90, count_mfa_failures=True,
                            case_insensitive_user_names=False),
    "initech": LockoutPolicy(permanent_lockout=True, max_login_failures=4,
                             minimum_quick_login_wait_seconds=5),
}  # fmt: skip
DISABLED = LockoutPolicy(enabled=False)
TYPES = ["LOGIN_FAILED", "LOGIN_FAILED", "LOGIN", "LOGIN", "MFA_FAILURE", "ACCOUNT_UNLOCKED",
         "LOGOUT", "TOKEN_ISSUED"]  # fmt: skip


def random_event(rng: random.Random, clock: int, serial: int) -> dict[str, Any]:
    event_type = rng.choice(TYPES)
    user = rng.choice(["alice", "Bob", "bob", "carol", "dave", ""])
    event: dict[str, Any] = {
        "tenant_id": rng.choice(TENANTS),
        # Repeated ids are duplicates, or late copies once behind the cutoff.
        "event_id": f"e{serial if rng.random() < 0.9 else rng.randrange(max(serial, 1))}",
        "event_type": event_type,
        "outcome": rng.choice(["SUCCESS", "FAILURE"]),
        "occurred_at": clock
        + rng.choice([-40, -10, -5, -1, 0, 0, 0, 1]) * SECOND
        + rng.randrange(3) * 500_000,
        "service": "keycloak",
        "client_ip": rng.choice(["192.0.2.7", "198.51.100.9", None, ""]),
    }
    if rng.random() < 0.5:
        event["user_id"] = rng.choice([f"id-{user}", "", None])
    if user or rng.random() < 0.5:
        event["user_name"] = user or None
    return event


def observe(detector: LockoutDetector, event: dict[str, Any]) -> list[Any]:
    return detector.observe(event)


@pytest.mark.parametrize("seed", range(60))
def test_random_traces_decide_count_and_remember_the_same(seed: int) -> None:
    rng = random.Random(seed)
    disabled = rng.choice(TENANTS) if seed % 4 == 0 else None
    lateness = rng.choice([0.0, 5.0, 30.0])

    def policy_for(tenant_id: str) -> LockoutPolicy:
        return DISABLED if tenant_id == disabled else POLICIES[tenant_id]

    # Odd seeds: a PolicySet's lockout_for, whose lookup the core reads in C.
    overrides = {tenant: policy_for(tenant) for tenant in TENANTS}
    lookup = PolicySet(tenant_lockout=overrides).lockout_for if seed % 2 else policy_for
    python = LockoutDetector(lookup, allowed_lateness_seconds=lateness)
    native = lockout_module.NativeLockoutDetector(lookup, allowed_lateness_seconds=lateness)
    clock = ORIGIN
    for serial in range(400):
        clock += rng.choice([0, 0, 1, 2, 5]) * SECOND + rng.randrange(1_000)
        roll = rng.random()
        if roll < 0.1:
            tenant = rng.choice(TENANTS)
            assert native.advance(tenant, clock) == python.advance(tenant, clock)
        elif roll < 0.13:
            tenant = rng.choice(TENANTS)
            assert native.prune(tenant) == python.prune(tenant)
        elif roll < 0.15:
            # A restart: each goes on from the other's state, through real JSON.
            native_state = json.loads(json.dumps(native.to_state()))
            python_state = json.loads(json.dumps(python.to_state()))
            assert native_state == python_state
            native = lockout_module.NativeLockoutDetector.from_state(
                python_state, lookup, allowed_lateness_seconds=lateness
            )
            python = LockoutDetector.from_state(
                native_state, lookup, allowed_lateness_seconds=lateness
            )
        else:
            event = random_event(rng, clock, serial)
            assert observe(native, event) == observe(python, event), (serial, event)
        assert native.counters == python.counters
        assert native.to_state() == python.to_state()
    final = clock + 3 * 86_400 * SECOND
    for tenant in TENANTS:
        assert native.advance(tenant, final) == python.advance(tenant, final)
        assert native.prune(tenant) == python.prune(tenant)
    assert native.to_state() == python.to_state()


def test_the_traces_do_lock_and_unlock() -> None:
    """The random traces reach the decisions they compare (else they prove little)."""
    kinds: dict[str, int] = {}
    for seed in range(20):
        rng = random.Random(seed)
        native = lockout_module.NativeLockoutDetector(POLICIES.__getitem__)
        clock = ORIGIN
        for serial in range(400):
            clock += rng.choice([0, 0, 1, 2, 5]) * SECOND
            for decision in native.observe(random_event(rng, clock, serial)):
                key = f"{decision.kind}:{decision.reason}"
                kinds[key] = kinds.get(key, 0) + 1
        for tenant in TENANTS:
            for decision in native.advance(tenant, clock + 86_400 * SECOND):
                key = f"{decision.kind}:{decision.reason}"
                kinds[key] = kinds.get(key, 0) + 1
    for reason in ("ACCOUNT_LOCKED:max_login_failures", "ACCOUNT_LOCKED:quick_login",
                   "ACCOUNT_LOCKED:max_temporary_lockouts", "ACCOUNT_UNLOCKED:lock_expired",
                   "ACCOUNT_UNLOCKED:unlocked_by_source"):  # fmt: skip
        assert kinds.get(reason, 0) > 0, (reason, kinds)


def test_the_guard_uses_the_native_detector() -> None:
    guard = Guard(PolicySet())
    assert type(guard._lockout) is lockout_module.NativeLockoutDetector
    guard.load_state(guard.to_state())
    assert type(guard._lockout) is lockout_module.NativeLockoutDetector


def test_a_time_beyond_64_bits_is_refused_as_a_value_error() -> None:
    native = lockout_module.NativeLockoutDetector(POLICIES.__getitem__)
    event = {"tenant_id": "acme", "event_id": "e", "event_type": "LOGIN_FAILED",
             "outcome": "FAILURE", "occurred_at": 2**63, "user_name": "bob"}  # fmt: skip
    with pytest.raises(ValueError, match="64 bits"):
        native.observe(event)
    with pytest.raises(ValueError, match="64 bits"):
        native.advance("acme", -(2**64))
    state = native.to_state()
    state["tenants"]["acme"] = {"clock": 2**64, "floor": None, "counters": {}, "accounts": {}}
    with pytest.raises(ValueError, match="64 bits"):  # what a snapshot's loader catches
        Guard(PolicySet()).load_state({**Guard(PolicySet()).to_state(), "lockout": state})


def test_the_native_detector_keeps_no_memory_per_event() -> None:
    native = lockout_module.NativeLockoutDetector(POLICIES.__getitem__, allowed_lateness_seconds=5)

    def feed(first: int, last: int) -> None:
        for n in range(first, last):
            at = ORIGIN + n * SECOND // 10
            native.observe({"tenant_id": "acme", "event_id": f"e{n}", "outcome": "FAILURE",
                            "event_type": "LOGIN_FAILED" if n % 3 else "LOGIN",
                            "occurred_at": at, "user_name": f"u{n % 50}"})  # fmt: skip
            if n % 10 == 0:
                native.advance("acme", at)
            if n % 1000 == 0:
                native.prune("acme")

    feed(0, 2_000)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    feed(2_000, 22_000)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 100_000, grown  # 50 accounts and a lateness window, not 20 000 events


def test_decisions_of_equal_time_come_in_account_order() -> None:
    """One time step releases two accounts that lock at the same event time: both
    detectors visit them in key order (the final sort by time is stable)."""
    made = []
    for kind in (LockoutDetector, lockout_module.NativeLockoutDetector):
        detector = kind(POLICIES.__getitem__, allowed_lateness_seconds=5)
        for user in ("zed", "amy"):
            for second in range(3):
                at = ORIGIN + second * SECOND
                detector.observe({"tenant_id": "acme", "event_id": f"{user}{second}",
                                  "event_type": "LOGIN_FAILED", "outcome": "FAILURE",
                                  "occurred_at": at, "user_name": user})  # fmt: skip
        made.append(detector.advance("acme", ORIGIN + 100 * SECOND))
    python, native = made
    assert native == python
    assert [d.user_key for d in native][:2] == ["name:amy", "name:zed"]


@pytest.mark.parametrize("occurred_at", [2**63 - 1, 253_402_300_800_000_000, -1])
def test_the_guard_does_not_observe_times_outside_years_1970_to_9999(occurred_at: int) -> None:
    """An Avro long admission let through (a producer chooses the record's timestamp
    too): the detectors never see it, so no time of theirs leaves 64 bits."""
    guard = Guard(PolicySet())
    for n in range(40):  # enough failures to lock, were they observed
        failure = {"tenant_id": "acme", "event_id": f"e{n}", "event_type": "LOGIN_FAILED",
                   "outcome": "FAILURE", "occurred_at": occurred_at, "user_name": "bob",
                   "client_ip": f"192.0.2.{n}", "service": "keycloak"}  # fmt: skip
        assert guard.observe(failure) == []
    assert guard.counters == {}
    last = dict(failure, event_id="last", occurred_at=253_402_300_800_000_000 - 1)
    guard.observe(last)  # the end of year 9999 is observed
    assert guard.counters == {"accepted": 2}  # by both detectors


def test_a_foreign_object_in_its_dicts_is_a_type_error_not_a_crash() -> None:
    native = lockout_module.NativeLockoutDetector(POLICIES.__getitem__)
    event = {"tenant_id": "acme", "event_id": "e", "event_type": "LOGIN_FAILED",
             "outcome": "FAILURE", "occurred_at": ORIGIN, "user_name": "bob"}  # fmt: skip
    native._tenants["acme"] = object()
    with pytest.raises(TypeError, match="LockoutTenant"):
        native.observe(event)
    del native._tenants["acme"]
    native.observe(event)
    native._tenants["acme"].accounts["name:bob"] = object()
    with pytest.raises(TypeError, match="LockoutAccount"):
        native.observe(dict(event, event_id="f"))


def test_a_policy_sets_lookup_is_read_in_c_and_changes_apply_at_once() -> None:
    overrides: dict[str, LockoutPolicy] = {}
    policies = PolicySet(lockout=POLICIES["acme"], tenant_lockout=overrides)
    lookup = native_policy_for(policies.lockout_for)
    assert isinstance(lookup, PolicyLookup)
    assert lookup("acme") is policies.lockout
    assert isinstance(native_policy_for(policies.spray_for), PolicyLookup)
    detector = lockout_module.NativeLockoutDetector(policies.lockout_for)
    assert isinstance(detector._policy_for, PolicyLookup)

    def failure(serial: int) -> dict[str, Any]:
        return {"tenant_id": "acme", "event_id": f"e{serial}", "event_type": "LOGIN_FAILED",
                "outcome": "FAILURE", "occurred_at": ORIGIN + serial * SECOND,
                "user_id": "id-alice", "user_name": "alice"}  # fmt: skip

    assert detector.observe(failure(0)) == [] and "irrelevant" not in detector.counters
    overrides["acme"] = DISABLED  # the next event is judged by the new policy
    assert lookup("acme") is DISABLED
    detector.observe(failure(1))
    assert detector.counters.get("irrelevant") == 1
    # Anything else is asked as given: another callable, another mapping, a subclass.
    other = PolicySet(tenant_lockout=MappingProxyType({"acme": DISABLED}))
    for policy_for in (POLICIES.__getitem__, other.lockout_for):
        assert native_policy_for(policy_for) is policy_for
    with pytest.raises(TypeError):
        PolicyLookup(MappingProxyType({}), DISABLED)
