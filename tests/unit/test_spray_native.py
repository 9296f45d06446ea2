"""The spraying detector's hot paths in C (NativeSprayDetector) against the Python one.

tests/unit/test_spray.py runs every scripted case and both property tests against each
implementation; here random traces over several tenants, addresses and policies must give
both the same alerts, counters and state at every step, and a state must carry over
between them.
"""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
from typing import Any

import pytest

from authtrail.stream.detection import spray as spray_module
from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout_policy import PolicySet, SprayPolicy
from authtrail.stream.detection.spray import SprayDetector

pytestmark = pytest.mark.skipif(
    spray_module.SprayCore is None, reason="authtrail._speedups is not built"
)

SECOND = 1_000_000
ORIGIN = 1_700_000_000 * SECOND
TENANTS = ("acme", "globex", "initech")
POLICIES = {
    "acme": SprayPolicy(distinct_users=3, window_seconds=60, sample_size=2),
    "globex": SprayPolicy(distinct_users=2, window_seconds=30, count_mfa_failures=True,
                          case_insensitive_user_names=False),
    "initech": SprayPolicy(distinct_users=4, window_seconds=120),
}  # fmt: skip
DISABLED = SprayPolicy(enabled=False)
TYPES = ["LOGIN_FAILED", "LOGIN_FAILED", "LOGIN_FAILED", "LOGIN", "MFA_FAILURE", "LOGOUT"]
ADDRESSES = ["192.0.2.7", "198.51.100.9", "203.0.113.5", None, ""]


def random_event(rng: random.Random, clock: int, serial: int) -> dict[str, Any]:
    user = rng.choice(["alice", "Bob", "bob", "carol", "dave", "erin", ""])
    event: dict[str, Any] = {
        "tenant_id": rng.choice(TENANTS),
        "event_id": f"e{serial if rng.random() < 0.9 else rng.randrange(max(serial, 1))}",
        "event_type": rng.choice(TYPES),
        "outcome": rng.choice(["FAILURE", "FAILURE", "SUCCESS"]),
        "occurred_at": clock
        + rng.choice([-90, -10, -5, -1, 0, 0, 0, 1]) * SECOND
        + rng.randrange(3) * 500_000,
        "service": "authtrail-lockout" if rng.random() < 0.05 else "keycloak",
        "client_ip": rng.choice(ADDRESSES),
    }
    if rng.random() < 0.4:
        event["user_id"] = rng.choice([f"id-{user}", "", None])
    if user or rng.random() < 0.5:
        event["user_name"] = user or None
    return event


@pytest.mark.parametrize("seed", range(60))
def test_random_traces_alert_count_and_remember_the_same(seed: int) -> None:
    rng = random.Random(seed)
    disabled = rng.choice(TENANTS) if seed % 4 == 0 else None
    lateness = rng.choice([0.0, 5.0, 30.0])
    windows = {"acme": POLICIES["acme"]}

    def policy_for(tenant_id: str) -> SprayPolicy:
        if tenant_id == disabled:
            return DISABLED
        return windows.get(tenant_id) or POLICIES[tenant_id]

    # Odd seeds: a PolicySet's spray_for, whose lookup the core reads in C (its overrides
    # changed below as windows is, which must apply at once there too).
    overrides = {tenant: policy_for(tenant) for tenant in TENANTS}
    lookup = PolicySet(tenant_spray=overrides).spray_for if seed % 2 else policy_for
    python = SprayDetector(lookup, allowed_lateness_seconds=lateness)
    native = spray_module.NativeSprayDetector(lookup, allowed_lateness_seconds=lateness)
    clock = ORIGIN
    for serial in range(400):
        clock += rng.choice([0, 0, 1, 2, 5]) * SECOND + rng.randrange(1_000)
        roll = rng.random()
        if roll < 0.12:
            tenant, now = rng.choice(TENANTS), clock - rng.choice([0, 0, 20]) * SECOND
            assert native.advance(tenant, now) == python.advance(tenant, now)
        elif roll < 0.14:  # the policy's window changes: the empty index is rebuilt
            windows["acme"] = SprayPolicy(distinct_users=3, window_seconds=rng.choice([30, 60]))
            overrides["acme"] = policy_for("acme")
        elif roll < 0.16:
            # A restart: each goes on from the other's state, through real JSON.
            native_state = json.loads(json.dumps(native.to_state()))
            python_state = json.loads(json.dumps(python.to_state()))
            assert native_state == python_state
            native = spray_module.NativeSprayDetector.from_state(
                python_state, lookup, allowed_lateness_seconds=lateness
            )
            python = SprayDetector.from_state(
                native_state, lookup, allowed_lateness_seconds=lateness
            )
        else:
            event = random_event(rng, clock, serial)
            assert native.observe(event) == python.observe(event), (serial, event)
        assert native.counters == python.counters
        assert native.to_state() == python.to_state()
    final = clock + 86_400 * SECOND
    for tenant in TENANTS:
        assert native.advance(tenant, final) == python.advance(tenant, final)
    assert native.to_state() == python.to_state()


def test_the_traces_do_alert() -> None:
    """The random traces reach the alerts they compare (else they prove little)."""
    alerts = 0
    for seed in range(10):
        rng = random.Random(seed)
        native = spray_module.NativeSprayDetector(POLICIES.__getitem__)
        clock = ORIGIN
        for serial in range(400):
            clock += rng.choice([0, 0, 1, 2, 5]) * SECOND
            alerts += len(native.observe(random_event(rng, clock, serial)))
    assert alerts > 20, alerts


def test_the_guard_uses_the_native_detector() -> None:
    guard = Guard(PolicySet())
    assert type(guard._spray) is spray_module.NativeSprayDetector
    guard.load_state(guard.to_state())
    assert type(guard._spray) is spray_module.NativeSprayDetector


def test_a_time_beyond_64_bits_is_refused_as_a_value_error() -> None:
    native = spray_module.NativeSprayDetector(POLICIES.__getitem__)
    event = {"tenant_id": "acme", "event_id": "e", "event_type": "LOGIN_FAILED",
             "outcome": "FAILURE", "occurred_at": 2**63, "user_name": "bob",
             "client_ip": "192.0.2.7"}  # fmt: skip
    with pytest.raises(ValueError, match="64 bits"):
        native.observe(event)
    with pytest.raises(ValueError, match="64 bits"):
        native.advance("acme", 2**64)


def test_the_native_detector_keeps_no_memory_per_event() -> None:
    native = spray_module.NativeSprayDetector(POLICIES.__getitem__, allowed_lateness_seconds=5)

    def feed(first: int, last: int) -> None:
        for n in range(first, last):
            at = ORIGIN + n * SECOND // 10
            native.observe({"tenant_id": "acme", "event_id": f"e{n}", "outcome": "FAILURE",
                            "event_type": "LOGIN_FAILED", "occurred_at": at,
                            "user_name": f"u{n % 7}", "client_ip": f"10.0.0.{n % 20}"})  # fmt: skip
            if n % 10 == 0:
                native.advance("acme", at)

    feed(0, 2_000)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    feed(2_000, 22_000)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 100_000, grown  # 20 addresses and a window, not 20 000 failures


def _failure(event_id: str, at: int, user: str, ip: str = "192.0.2.7") -> dict[str, Any]:
    return {"tenant_id": "acme", "event_id": event_id, "event_type": "LOGIN_FAILED",
            "outcome": "FAILURE", "occurred_at": at, "user_name": user,
            "client_ip": ip}  # fmt: skip


def test_a_failure_one_microsecond_before_the_alerted_window_ends_is_not_counted() -> None:
    """After an alert the address is quiet until its window's end, to the microsecond."""
    ends = []
    for kind in (SprayDetector, spray_module.NativeSprayDetector):
        spray = kind(POLICIES.__getitem__, allowed_lateness_seconds=0)  # 3 users, 60 s
        alerts = [spray.observe(_failure(f"e{n}", ORIGIN + n, user))
                  for n, user in enumerate(("amy", "bob", "cat"))]  # fmt: skip
        assert [len(made) for made in alerts] == [0, 0, 1]
        end = ORIGIN + 60 * SECOND  # window_start + window
        spray.observe(_failure("quiet", end - 1, "dan"))  # inside: not counted
        spray.observe(_failure("next", end, "eve"))  # the first of the next window
        ends.append(spray.to_state()["addresses"]["acme"]["192.0.2.7"]["failures"])
    assert ends[0] == ends[1] == [[ORIGIN + 60 * SECOND, "name:eve", "eve"]]


def test_alerts_of_equal_time_come_in_the_order_addresses_were_made() -> None:
    """One time step releases two addresses that alert at the same event time: both
    detectors visit them in the order they were made, not in the order they became due."""
    made = []
    for kind in (SprayDetector, spray_module.NativeSprayDetector):
        spray = kind(POLICIES.__getitem__, allowed_lateness_seconds=5)
        spray.observe(_failure("early", ORIGIN, "zed", "203.0.113.5"))  # made first...
        spray.advance("acme", ORIGIN + 10 * SECOND)  # ...and its due entry used up
        at = ORIGIN + 20 * SECOND
        for ip in ("192.0.2.7", "203.0.113.5"):  # due in this order
            for user in ("amy", "bob", "cat"):
                spray.observe(_failure(f"{ip}-{user}", at, user, ip))
        made.append(spray.advance("acme", at + 10 * SECOND))
    python, native = made
    assert native == python
    assert [alert.client_ip for alert in native] == ["203.0.113.5", "192.0.2.7"]


def test_a_foreign_object_in_its_dicts_is_a_type_error_not_a_crash() -> None:
    native = spray_module.NativeSprayDetector(POLICIES.__getitem__)
    native._counters["acme"] = 5  # type: ignore[assignment]
    with pytest.raises(TypeError, match="dict"):
        native.observe(_failure("e", ORIGIN, "bob"))
    del native._counters["acme"]
    native._addresses["acme"] = {"192.0.2.7": object()}
    with pytest.raises(TypeError, match="SprayAddress"):
        native.observe(_failure("f", ORIGIN, "bob"))
    with pytest.raises(TypeError, match="SprayAddress"):
        native.advance("acme", ORIGIN + 3600 * SECOND)
