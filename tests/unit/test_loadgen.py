"""The traffic model of ``authtrail loadgen``: deterministic, schema-valid, shaped as configured.

Nothing runs here: the generator is pure and the codec is the real one.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter, defaultdict
from typing import Any

import pytest

from authtrail import schemas
from authtrail.errors import InvalidArgumentError
from authtrail.producers.loadgen import TokenBucket
from authtrail.producers.traffic import (
    BRUTE_FORCE,
    SERVICES,
    TrafficConfig,
    generate_events,
    tenant_ids,
)
from authtrail.schemas.codec import SingleObjectCodec

SAMPLE = 10_000
USER_RANGES = (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("198.51.100.0/24"))
ATTACKER_RANGE = ipaddress.ip_network("203.0.113.0/24")
EVENT_MIX = {
    "LOGIN", "LOGIN_FAILED", "LOGOUT", "SESSION_EXPIRED", "MFA_CHALLENGE", "MFA_SUCCESS",
    "MFA_FAILURE", "TOKEN_ISSUED", "TOKEN_REFRESHED", "TOKEN_REVOKED", "PASSWORD_CHANGED",
    "PASSWORD_RESET_REQUESTED", "PASSWORD_RESET_COMPLETED",
}  # fmt: skip


def take(config: TrafficConfig, seed: int, count: int = SAMPLE) -> list[dict[str, Any]]:
    return list(itertools.islice(generate_events(config, seed), count))


def is_burst(event: dict[str, Any]) -> bool:
    scenario: str | None = event.get("attributes", {}).get("loadgen.scenario")
    return scenario == BRUTE_FORCE


@pytest.fixture(scope="module")
def codec() -> SingleObjectCodec:
    return SingleObjectCodec(schemas.load_schema(schemas.AUTH_EVENT))


@pytest.fixture(scope="module")
def bursty() -> list[dict[str, Any]]:
    """10k events of the default mix with a burst after every 1000 ordinary events."""
    return take(TrafficConfig(burst_every=1000), seed=7)


# -- determinism ----------------------------------------------------------------------------


def test_same_seed_same_events() -> None:
    config = TrafficConfig(burst_every=300)
    assert take(config, 11, 3000) == take(config, 11, 3000)


def test_other_seed_or_start_other_events() -> None:
    config = TrafficConfig()
    first = take(config, 11, 200)
    assert first != take(config, 12, 200)
    shifted = take(TrafficConfig(start_us=config.start_us + 1), 11, 200)
    assert [event["event_id"] for event in shifted] == [event["event_id"] for event in first]
    assert [event["occurred_at"] - 1 for event in shifted] == [e["occurred_at"] for e in first]


# -- schema validity ------------------------------------------------------------------------


def test_every_event_encodes_and_round_trips(
    bursty: list[dict[str, Any]], codec: SingleObjectCodec
) -> None:
    for event in bursty:
        decoded = codec.decode(codec.encode(event))
        assert {name: decoded[name] for name in event} == event


def test_event_ids_unique_and_time_never_goes_back(bursty: list[dict[str, Any]]) -> None:
    assert len({event["event_id"] for event in bursty}) == len(bursty)
    times = [event["occurred_at"] for event in bursty]
    assert times == sorted(times)
    assert times[0] > TrafficConfig().start_us


def test_login_failed_is_always_a_failure(bursty: list[dict[str, Any]]) -> None:
    outcomes = {e["outcome"] for e in bursty if e["event_type"] == "LOGIN_FAILED"}
    assert outcomes == {"FAILURE"}


# -- shape ----------------------------------------------------------------------------------


def test_tenants_users_services_within_bounds(bursty: list[dict[str, Any]]) -> None:
    config = TrafficConfig()
    tenants = Counter(event["tenant_id"] for event in bursty)
    assert set(tenants) == set(tenant_ids(config.tenants))
    # Zipf-like sizes: the first tenant is the largest, the last still gets real traffic.
    assert tenants.most_common(1)[0][0] == tenant_ids(1)[0]
    assert min(tenants.values()) > SAMPLE / 20

    users: dict[str, set[str]] = defaultdict(set)
    for event in bursty:
        if "user_id" in event:
            users[event["tenant_id"]].add(event["user_id"])
    assert all(1 <= len(ids) <= config.users for ids in users.values())
    assert len(users[tenant_ids(1)[0]]) == config.users  # the big tenant: everyone shows up
    tenants_of_user = Counter(uid for ids in users.values() for uid in ids)
    assert max(tenants_of_user.values()) == 1, "a user id appears in two tenants"

    services = Counter(event["service"] for event in bursty)
    assert set(services) == set(SERVICES)
    assert {event["event_type"] for event in bursty} >= EVENT_MIX


def test_custom_services_and_sizes_are_respected() -> None:
    config = TrafficConfig(tenants=13, users=3, services=("billing", "sso"), burst_every=50)
    events = take(config, 3, 5000)
    assert {event["service"] for event in events} == {"billing", "sso"}
    assert {event["tenant_id"] for event in events} <= set(tenant_ids(13))
    assert "acme-1" in tenant_ids(13)
    per_tenant: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if "user_id" in event:
            per_tenant[event["tenant_id"]].add(event["user_id"])
    assert max(len(ids) for ids in per_tenant.values()) <= 3


def test_addresses_are_documentation_ranges(bursty: list[dict[str, Any]]) -> None:
    for event in bursty:
        address = ipaddress.ip_address(event["client_ip"])
        if is_burst(event):
            assert address in ATTACKER_RANGE
        else:
            assert any(address in network for network in USER_RANGES), event


@pytest.mark.parametrize("share", [0.0, 0.05, 0.3, 1.0])
def test_failure_share_of_ordinary_events(share: float) -> None:
    events = take(TrafficConfig(failure_share=share), 5)
    failures = sum(event["outcome"] == "FAILURE" for event in events)
    assert abs(failures / len(events) - share) <= 0.015, failures


def test_failure_share_holds_with_bursts(bursty: list[dict[str, Any]]) -> None:
    ordinary = [event for event in bursty if not is_burst(event)]
    share = sum(event["outcome"] == "FAILURE" for event in ordinary) / len(ordinary)
    assert abs(share - TrafficConfig().failure_share) <= 0.015


# -- brute-force bursts ---------------------------------------------------------------------


def test_no_bursts_unless_configured() -> None:
    assert not any(is_burst(event) for event in take(TrafficConfig(), 7))


def test_bursts_hammer_one_user_from_one_ip_at_the_configured_rate(
    bursty: list[dict[str, Any]],
) -> None:
    config = TrafficConfig(burst_every=1000)
    bursts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in bursty:
        if is_burst(event):
            bursts[event["attributes"]["loadgen.burst"]].append(event)
    ordinary = len(bursty) - sum(len(events) for events in bursts.values())
    assert len(bursts) == ordinary // config.burst_every
    gap_us = round(1e6 / config.burst_rate)
    complete = 0
    for events in bursts.values():
        assert len({(e["tenant_id"], e["user_id"], e["client_ip"]) for e in events}) == 1
        assert {(e["event_type"], e["outcome"]) for e in events} == {("LOGIN_FAILED", "FAILURE")}
        times = [event["occurred_at"] for event in events]
        assert {b - a for a, b in itertools.pairwise(times)} <= {gap_us}
        complete += len(events) == config.burst_size
    assert complete >= len(bursts) - 1  # only the last may be cut off by the sample's end


def test_bursts_interleave_with_ordinary_traffic(bursty: list[dict[str, Any]]) -> None:
    positions = [index for index, event in enumerate(bursty) if is_burst(event)]
    first_burst = [i for i in positions if bursty[i]["attributes"]["loadgen.burst"] == "1"]
    between = range(first_burst[0], first_burst[-1])
    assert any(not is_burst(bursty[index]) for index in between)


# -- configuration errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"tenants": 0},
        {"users": 0},
        {"failure_share": -0.1},
        {"failure_share": 1.5},
        {"burst_every": -1},
        {"burst_size": 0},
        {"burst_rate": 0.0},
        {"events_per_second": 0.0},
        {"services": ()},
    ],
)
def test_out_of_range_config_raises(override: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError, match=next(iter(override))):
        TrafficConfig(**override)


# -- pacing ---------------------------------------------------------------------------------


def test_token_bucket_spaces_tokens_at_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, capacity=1.0, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_token_bucket_refills_up_to_capacity_only() -> None:
    bucket = TokenBucket(rate=100.0, capacity=5.0, now=0.0)
    waits = [bucket.reserve(1000.0) for _ in range(7)]  # a long idle spell banks 5, not 100k
    assert waits[:5] == [0.0] * 5
    assert waits[5:] == pytest.approx([0.01, 0.02])


def test_token_bucket_long_run_rate_is_exact() -> None:
    bucket = TokenBucket(rate=250.0, now=0.0)
    now = 0.0
    for _ in range(5000):
        now += bucket.reserve(now)  # a caller that sleeps exactly as told
    # 5000 tokens at 250/s: 20 s, minus the initial burst allowance (capacity 12.5).
    assert now == pytest.approx((5000 - 12.5) / 250.0, abs=0.01)


@pytest.mark.parametrize(("rate", "capacity"), [(0.0, None), (-1.0, None), (10.0, 0.5)])
def test_token_bucket_rejects_bad_parameters(rate: float, capacity: float | None) -> None:
    with pytest.raises(InvalidArgumentError):
        TokenBucket(rate, capacity)
