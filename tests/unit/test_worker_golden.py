"""Known answers for the worker's whole output on generated traffic: every chained byte, and
the detectors' decisions and state.

Speed-ups of the hot path (docs/PERFORMANCE.md § Worker CPU per event) must not change a
byte a store holds or a decision a replay makes. The digests below were computed by commit
2f439e6, before those speed-ups, on the same generated input (the traffic model's fixed
seed and start). A change that breaks one changed the output: find out why before
touching the digest. Only a deliberate change of the traffic model (producers/traffic.py)
or of the output formats may renew them, computed on a commit whose output is trusted.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import pytest

from authtrail.producers.traffic import TrafficConfig, generate_events
from authtrail.stream.detection import event_time
from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout_policy import PolicySet
from benchmarks.worker_core import run, workload

# SHA-256 of every chained message (partition, length, value) the worker published for
# 3 000 events of 20 tenants in envelopes of 100, 4 partitions, sealer and retention on.
CHAINED_DIGEST = "821670b928b3218c82dfaf12a7b681f7671954105750f3a749bffd6d4518bb0f"
# SHA-256 of the decisions and counters of the three runs below.
DECISIONS_DIGEST = "8740760d2c10e045a03642f8c403f5352482536f8a05f1538dd6348fb90fc9d3"
# SHA-256 of their Guard.to_state() at the end. Renewed when the guard began to prune
# settled accounts after 60 s of event time instead of 600 s (fewer accounts kept):
# DECISIONS_DIGEST stayed what the commit before computed, and pruning is shown to change
# no decision (tests/unit/test_lockout.py).
STATE_DIGEST = "a0fd60c277bb9cb3911a55e9f479598ada431938490ddd8df02102c1cd984ba6"


def test_the_worker_chains_exactly_the_known_bytes() -> None:
    assert run(workload(3000, 20, 100))["chained_sha256"] == CHAINED_DIGEST


def _traffic(events: int) -> list[dict[str, Any]]:
    """Generated events, an address failing for 12 accounts every 300 events (spraying),
    some arrivals swapped (late events) and 100 ids sent again (duplicates)."""
    config = TrafficConfig(tenants=3, users=20, start_us=1_700_000_000_000_000,
                           events_per_second=200.0)  # fmt: skip
    traffic: list[dict[str, Any]] = []
    for index, event in enumerate(itertools.islice(generate_events(config, 7), events)):
        traffic.append(event)
        if index % 300 == 0:
            traffic += [{**event, "event_id": f"spray-{index}-{k}", "event_type": "LOGIN_FAILED",
                         "outcome": "FAILURE", "client_ip": f"203.0.113.{index % 5}",
                         "user_name": f"victim{k}", "user_id": None,
                         "occurred_at": event["occurred_at"] + k * 1000}
                        for k in range(12)]  # fmt: skip
    for first in range(0, len(traffic) - 50, 97):
        traffic[first], traffic[first + 37] = traffic[first + 37], traffic[first]
    return traffic + traffic[500:600]


@pytest.mark.parametrize("buffer", ["c", "python"])
def test_the_detectors_decide_exactly_the_known_decisions(
    buffer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if buffer == "python":  # the reorder buffers of a build without the C code
        monkeypatch.setattr(event_time, "_NativeReorderBuffer", None)
    decided, state, kinds = hashlib.sha256(), hashlib.sha256(), dict[str, int]()
    traffic = _traffic(15_000)
    for lateness in (0, 30, None):  # None: the default
        guard = Guard(
            PolicySet() if lateness is None else PolicySet(allowed_lateness_seconds=lateness)
        )
        for event in traffic:
            for decision in guard.observe(event):
                kinds[decision["event_type"]] = kinds.get(decision["event_type"], 0) + 1
                decided.update(json.dumps(decision, sort_keys=True).encode())
        state.update(json.dumps(guard.to_state(), default=str).encode())
        decided.update(json.dumps(guard.counters, sort_keys=True).encode())
    # Every kind of decision is exercised, so the digest covers them all.
    assert kinds == {"BRUTE_FORCE_SUSPECTED": 9, "ACCOUNT_LOCKED": 130, "ACCOUNT_UNLOCKED": 34}
    assert decided.hexdigest() == DECISIONS_DIGEST
    assert state.hexdigest() == STATE_DIGEST
