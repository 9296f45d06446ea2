"""Password spraying: distinct accounts failing from one address within a window."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail.errors import InvalidArgumentError
from authtrail.schemas import AUTH_EVENT, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.stream.detection import spray as spray_module
from authtrail.stream.detection.decisions import BRUTE_FORCE_SUSPECTED, Decision, decision_to_event
from authtrail.stream.detection.lockout_policy import SprayPolicy
from authtrail.stream.detection.spray import SprayDetector

# Every test here runs against the Python detector and against the one whose hot paths
# are in C (when built); _VisitEveryAddress below stays the Python reference.
IMPLEMENTATIONS = [spray_module.SprayDetector] + (
    [spray_module.NativeSprayDetector] if spray_module.SprayCore is not None else []
)


@pytest.fixture(scope="module", autouse=True, params=IMPLEMENTATIONS, ids=lambda c: c.__name__)
def implementation(request: pytest.FixtureRequest) -> Any:
    """Module-scoped (hypothesis tests take no function-scoped fixture): the detector
    class the tests' ``SprayDetector`` names while they run."""
    global SprayDetector
    SprayDetector = request.param
    yield request.param
    SprayDetector = spray_module.SprayDetector


SECOND = 1_000_000
ORIGIN = 1_700_000_000 * SECOND
TENANT = "acme"
IP = "198.51.100.9"


def failure(
    seconds: float,
    user: str,
    ip: str = IP,
    *,
    tenant_id: str = TENANT,
    event_type: str = "LOGIN_FAILED",
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id or f"{tenant_id}-{ip}-{user}-{seconds}",
        "tenant_id": tenant_id,
        "event_type": event_type,
        "outcome": "FAILURE",
        "occurred_at": ORIGIN + round(seconds * SECOND),
        "user_name": user,
        "client_ip": ip,
    }


def run(
    events: Sequence[dict[str, Any]],
    policy: SprayPolicy | None = None,
    lateness: float = 0.0,
    detector: SprayDetector | None = None,
) -> list[Decision]:
    spray = detector or SprayDetector(
        lambda tenant_id: policy or SprayPolicy(), allowed_lateness_seconds=lateness
    )
    decisions: list[Decision] = []
    for item in events:
        decisions += spray.observe(item)
    for tenant in {item["tenant_id"] for item in events}:
        decisions += spray.advance(tenant, ORIGIN + 10**7 * SECOND)
    return decisions


def summary(decisions: Sequence[Decision]) -> list[tuple[float, float, int, str | None]]:
    """(window start, window end, distinct users, address) of each alert, in seconds."""
    return [
        (
            ((decision.window_start or 0) - ORIGIN) / SECOND,
            ((decision.window_end or 0) - ORIGIN) / SECOND,
            decision.distinct_users,
            decision.client_ip,
        )
        for decision in decisions
    ]


def test_ten_accounts_in_ten_minutes_raise_one_alert() -> None:
    events = [failure(index * 30, f"user{index}") for index in range(10)]
    decisions = run(events)
    assert summary(decisions) == [(0.0, 270.0, 10, IP)]
    (alert,) = decisions
    assert alert.kind == BRUTE_FORCE_SUSPECTED and alert.reason == "password_spraying"
    assert alert.sample_user_names == tuple(f"user{index}" for index in range(10))
    assert alert.failure_count == 10
    assert alert.triggering_event_id == events[-1]["event_id"]
    assert alert.user_key is None and alert.permanent is False  # locks nothing


def test_nine_accounts_or_one_account_many_times_are_not_spraying() -> None:
    assert run([failure(index, f"user{index}") for index in range(9)]) == []
    assert run([failure(index, "root") for index in range(500)]) == []


def test_accounts_spread_beyond_the_window_are_not_counted_together() -> None:
    # 10 accounts 70 s apart span 630 s: no 600 s window holds all ten.
    assert run([failure(index * 70, f"user{index}") for index in range(10)]) == []
    # The window is (t - 600 s, t]: a failure exactly 600 s older has left it.
    edge = [failure(0, "user0")] + [failure(600, f"user{index}") for index in range(1, 10)]
    assert run(edge) == []
    inside = [failure(0.5, "user0")] + [failure(600, f"user{index}") for index in range(1, 10)]
    assert summary(run(inside)) == [(0.5, 600.0, 10, IP)]


def test_one_alert_per_window() -> None:
    # 30 accounts in 5 minutes: one alert; its window is [0, 600). The next alert needs
    # ten new accounts after that window.
    burst = [failure(index * 10, f"user{index}") for index in range(30)]
    later = [failure(600 + index, f"late{index}") for index in range(10)]
    assert summary(run(burst)) == [(0.0, 90.0, 10, IP)]
    assert summary(run(burst + later)) == [(0.0, 90.0, 10, IP), (600.0, 609.0, 10, IP)]


def test_addresses_and_tenants_are_separate() -> None:
    mixed = [
        failure(index, f"user{index}", ip="203.0.113.1" if index % 2 else IP) for index in range(18)
    ]
    assert run(mixed) == []
    tenants = [
        failure(index, f"user{index}", tenant_id="globex" if index % 2 else TENANT)
        for index in range(18)
    ]
    assert run(tenants) == []


def test_only_failures_with_an_address_and_an_account_count() -> None:
    no_ip = [dict(failure(index, f"user{index}"), client_ip=None) for index in range(10)]
    no_user = [dict(failure(index, f"user{index}"), user_name=None) for index in range(10)]
    successes = [
        dict(failure(index, f"user{index}"), event_type="LOGIN", outcome="SUCCESS")
        for index in range(10)
    ]
    assert run(no_ip) == run(no_user) == run(successes) == []
    logins_failed = [
        dict(failure(index, f"user{index}"), event_type="LOGIN") for index in range(10)
    ]
    assert len(run(logins_failed)) == 1  # LOGIN with outcome FAILURE is a failed login


def test_mfa_failures_and_disabled_policy() -> None:
    mfa = [failure(index, f"user{index}", event_type="MFA_FAILURE") for index in range(10)]
    assert run(mfa) == []
    assert len(run(mfa, SprayPolicy(count_mfa_failures=True))) == 1
    accounts = [failure(index, f"user{index}") for index in range(10)]
    assert run(accounts, SprayPolicy(enabled=False)) == []
    assert len(run(accounts[:3], SprayPolicy(distinct_users=3))) == 1


def test_user_names_fold_case_unless_told_not_to() -> None:
    names = [failure(index, name) for index, name in enumerate(["Bob", "bob", "BOB"])]
    assert run(names, SprayPolicy(distinct_users=2)) == []
    assert len(run(names, SprayPolicy(distinct_users=2, case_insensitive_user_names=False))) == 1


def test_sample_is_limited() -> None:
    events = [failure(index, f"user{index}") for index in range(10)]
    (alert,) = run(events, SprayPolicy(sample_size=3))
    assert alert.sample_user_names == ("user0", "user1", "user2")
    assert alert.distinct_users == 10


def spraying(seed: int, count: int = 600) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now, events = 0.0, []
    for index in range(count):
        now += rng.choice([0.2, 1.0, 5.0, 40.0])
        ip = rng.choice([IP, "203.0.113.1", "203.0.113.2"])
        user = f"user{rng.randrange(40)}"
        events.append(failure(now, user, ip, event_id=f"e{index}"))
    return events


def jittered(events: Sequence[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    def arrival(item: dict[str, Any]) -> float:
        delay = random.Random(item["event_id"]).uniform(0, seconds * SECOND)
        return float(item["occurred_at"]) + delay

    return sorted(events, key=arrival)


def by_time(decisions: Sequence[Decision]) -> list[Decision]:
    return sorted(decisions, key=lambda decision: (decision.occurred_at, decision.client_ip or ""))


def test_replay_and_duplicates_give_identical_alerts() -> None:
    events = spraying(1)
    alerts = run(events, lateness=5.0)
    assert len(alerts) > 3
    assert run(events, lateness=5.0) == alerts
    spray = SprayDetector(lambda tenant_id: SprayPolicy(), allowed_lateness_seconds=5.0)
    doubled = [item for original in events for item in (original, dict(original))]
    assert run(doubled, detector=spray) == alerts
    assert spray.counters["duplicate"] == len(events)


def test_out_of_order_within_lateness_and_restart() -> None:
    events = spraying(2)
    expected = run(events, lateness=5.0)
    shuffled = jittered(events, 4.0)
    # Announced at other moments, so compared in event-time order.
    assert by_time(run(shuffled, lateness=5.0)) == by_time(expected)
    for cut in (1, 150, 599):
        before = SprayDetector(lambda tenant_id: SprayPolicy(), allowed_lateness_seconds=5.0)
        decisions: list[Decision] = []
        for item in shuffled[:cut]:
            decisions += before.observe(item)
        state = json.loads(json.dumps(before.to_state()))
        after = SprayDetector.from_state(
            state, lambda tenant_id: SprayPolicy(), allowed_lateness_seconds=5.0
        )
        assert decisions + run(shuffled[cut:], detector=after) == run(shuffled, lateness=5.0)
    with pytest.raises(InvalidArgumentError):
        SprayDetector.from_state({"version": 2}, lambda tenant_id: SprayPolicy())


def test_late_failures_are_ignored_and_counted() -> None:
    spray = SprayDetector(lambda tenant_id: SprayPolicy(), allowed_lateness_seconds=5.0)
    events = [failure(100 + index, f"user{index}") for index in range(9)]
    events.append(failure(50, "user9"))  # 58 s behind the address's newest failure
    assert run(events, detector=spray) == []
    assert spray.counters["late"] == 1


def test_alert_event_encodes() -> None:
    (alert,) = run([failure(index, f"user{index}") for index in range(10)])
    event = decision_to_event(alert)
    codec = SingleObjectCodec(load_schema(AUTH_EVENT))
    assert codec.decode(codec.encode(event))["event_type"] == "BRUTE_FORCE_SUSPECTED"
    assert event["client_ip"] == IP and event["user_name"] is None
    assert event["attributes"]["distinct_users"] == "10"
    assert json.loads(event["attributes"]["sample_user_names"]) == [f"user{i}" for i in range(10)]


def test_advance_forgets_quiet_addresses() -> None:
    spray = SprayDetector(lambda tenant_id: SprayPolicy(), allowed_lateness_seconds=0.0)
    spray.observe(failure(0, "user0"))
    spray.advance(TENANT, ORIGIN + 10 * SECOND)
    assert spray.to_state()["addresses"][TENANT] != {}  # its failure is still in the window
    spray.advance(TENANT, ORIGIN + 601 * SECOND)
    assert spray.to_state()["addresses"][TENANT] == {}


class _VisitEveryAddress(spray_module.SprayDetector):
    """The time step as it was before the due index: a release of every address."""

    def advance(self, tenant_id: str, now: int) -> list[Decision]:
        floor = self._floors[tenant_id] = max(self._floors.get(tenant_id, now), now)
        policy = self._policy_for(tenant_id)
        decisions: list[Decision] = []
        addresses = self._addresses.get(tenant_id, {})
        for client_ip, address in addresses.items():
            for occurred_at, event_id, payload in address.order.release(self._lateness, floor):
                decision = address.failed(
                    tenant_id, client_ip, occurred_at, event_id, payload, policy
                )
                if decision is not None:
                    decisions.append(decision)
        horizon = now - policy.window_seconds * 1_000_000
        for client_ip in [
            client_ip
            for client_ip, address in addresses.items()
            if not (address.order.oldest() is not None or address.order.recent_ids)
            and (address.order.watermark or 0) <= now
            and all(item[0] <= horizon for item in address.failures)
            and (address.quiet_until or 0) <= now
        ]:
            del addresses[client_ip]
        return sorted(decisions, key=lambda decision: decision.occurred_at)


def _agree(indexed: SprayDetector, reference: SprayDetector, step: int | dict[str, Any]) -> None:
    """Advance both to ``step`` (an int) or let both observe it: same alerts, same state."""
    if isinstance(step, int):
        assert indexed.advance(TENANT, step) == reference.advance(TENANT, step)
    else:
        assert indexed.observe(step) == reference.observe(step)
    assert indexed.to_state() == reference.to_state()


@settings(max_examples=500, derandomize=True, database=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["event", "event", "event", "event", "advance"]),
            # As in test_lockout's: multiples of 5 s, so events fall exactly on a cutoff.
            st.sampled_from([0, 5, 5, 10]),
            st.sampled_from(range(-40, 5, 5)),
            st.sampled_from(["alice", "bob", "carol", "dave"]),
            st.sampled_from(["198.51.100.1", "198.51.100.2"]),
            st.integers(0, 2),
        ),
        max_size=150,
    ),
    lateness=st.sampled_from([0.0, 5.0, 30.0]),
)
def test_the_due_index_alerts_and_remembers_what_visiting_every_address_does(
    steps: list[tuple[str, int, int, str, str, int]], lateness: float
) -> None:
    policy = SprayPolicy(distinct_users=3, window_seconds=60)
    indexed = SprayDetector(lambda _: policy, allowed_lateness_seconds=lateness)
    reference = _VisitEveryAddress(lambda _: policy, allowed_lateness_seconds=lateness)
    clock = ORIGIN
    for action, moved, jitter, user, ip, copy in steps:
        clock += moved * SECOND
        at = clock + jitter * SECOND
        event = failure((at - ORIGIN) / SECOND, user, ip, event_id=f"{user}-{ip}-{at}-{copy}")
        _agree(indexed, reference, clock if action == "advance" else event)
    reloaded = SprayDetector.from_state(indexed.to_state(), lambda _: policy,
                                        allowed_lateness_seconds=lateness)  # fmt: skip
    final = clock + 3600 * SECOND
    assert reloaded.advance(TENANT, final) == reference.advance(TENANT, final)
    assert reloaded.to_state() == reference.to_state()


@settings(max_examples=400, derandomize=True, database=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["event", "event", "event", "advance", "advance", "window"]),
            # Mostly small moves on a 5 s grid (events on a cutoff or a window's end),
            # sometimes a watermark jump past every window.
            st.sampled_from([0, 5, 5, 10, 30, 60, 400]),
            st.sampled_from(range(-40, 5, 5)),
            st.sampled_from(["alice", "bob", "carol"]),
            st.sampled_from(["198.51.100.1", "198.51.100.2", "198.51.100.3"]),
            st.sampled_from([30, 60, 120]),
        ),
        max_size=150,
    ),
    lateness=st.sampled_from([0.0, 5.0, 30.0]),
)
def test_the_empty_index_forgets_what_scanning_every_address_does(
    steps: list[tuple[str, int, int, str, str, int]], lateness: float
) -> None:
    """The clean-up by the empty index against the scan of every address, with the
    policy's window changing between steps and ``now`` sometimes behind the floor."""
    policies = {"now": SprayPolicy(distinct_users=2, window_seconds=60)}
    indexed = SprayDetector(lambda _: policies["now"], allowed_lateness_seconds=lateness)
    reference = _VisitEveryAddress(lambda _: policies["now"], allowed_lateness_seconds=lateness)
    clock = ORIGIN
    for number, (action, moved, jitter, user, ip, window) in enumerate(steps):
        clock += moved * SECOND
        at = clock + jitter * SECOND  # for a step: behind the floor at times
        if action == "window":
            policies["now"] = SprayPolicy(distinct_users=2, window_seconds=window)
        else:
            event = failure((at - ORIGIN) / SECOND, user, ip, event_id=f"{number}")
            _agree(indexed, reference, at if action == "advance" else event)
    reloaded = SprayDetector.from_state(indexed.to_state(), lambda _: policies["now"],
                                        allowed_lateness_seconds=lateness)  # fmt: skip
    for now in (clock, clock + 61 * SECOND, clock + 3600 * SECOND):
        assert reloaded.advance(TENANT, now) == reference.advance(TENANT, now)
        assert reloaded.to_state() == reference.to_state()


def test_state_and_indexes_stay_bounded_under_distinct_addresses() -> None:
    """Each failure from a new address and account: what the detector keeps, indexes
    included, is bounded by the window, not by how many addresses it has seen."""
    spray = SprayDetector(
        lambda _: SprayPolicy(distinct_users=3, window_seconds=60), allowed_lateness_seconds=5.0
    )
    sizes = []
    for second in range(20_000):
        spray.observe(failure(second, f"user{second}", f"10.{second // 65536}.{second % 65536}"))
        if second % 10 == 0:
            spray.advance(TENANT, ORIGIN + second * SECOND)
            if isinstance(spray, spray_module.NativeSprayDetector):  # its C heaps' sizes
                kept = (len(spray._addresses[TENANT]), *spray._core.index_sizes(TENANT))
            else:
                empty = spray._empty[TENANT]
                parts = (spray._addresses[TENANT], spray._due[TENANT], empty.heap, empty.scheduled)
                kept = tuple(len(part) for part in parts)
            sizes.append(max(kept))
    # One address a second, forgotten 60 s after its failure (lateness 5 s, steps 10 s).
    assert max(sizes[100:]) <= 80
    assert len(spray._addresses[TENANT]) >= 60  # the window's addresses are kept


def test_an_alert_brings_the_time_an_address_is_forgotten_forward() -> None:
    """After an alert its failures are gone: the address is empty at the end of the
    alerted window, before the time its newest failure alone would have kept it."""
    spray = SprayDetector(
        lambda _: SprayPolicy(distinct_users=2, window_seconds=60), allowed_lateness_seconds=0.0
    )
    spray.observe(failure(0, "alice"))
    spray.observe(failure(10, "alice"))
    spray.advance(TENANT, ORIGIN + 15 * SECOND)  # kept until 70 s by its newest failure
    assert len(spray.observe(failure(20, "bob"))) == 1  # alerted window 0 to 60 s
    spray.advance(TENANT, ORIGIN + 25 * SECOND)
    spray.advance(TENANT, ORIGIN + 59 * SECOND)
    assert IP in spray.to_state()["addresses"][TENANT]
    spray.advance(TENANT, ORIGIN + 60 * SECOND)
    assert spray.to_state()["addresses"][TENANT] == {}
