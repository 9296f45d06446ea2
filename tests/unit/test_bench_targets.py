"""The summary's targets table: issue 12's targets, and the wall each unmet one meets."""

from __future__ import annotations

from typing import Any

from benchmarks.analysis import targets


def _stack(mode: str, rate: float, worker_us: float | None = None) -> dict[str, Any]:
    roles = {"store": {"cpu_us_per_event": 4.0, "cores_used": 0.3}}
    if worker_us is not None:
        roles["worker"] = {"cpu_us_per_event": worker_us, "cores_used": 0.95}
    return {
        "config": {"mode": mode, "tenants": 100, "workers": 1},
        "drain": {
            "sustained_events_per_s": rate,
            "whole_drain_events_per_s": rate,
            "whole_drain": {"roles": roles},
        },
    }


def test_the_ratio_row_names_what_the_limiting_component_would_need() -> None:
    results = {
        "stacks": {
            "authtrail-100t-1w": _stack("authtrail", 50_000, worker_us=20.0),
            "plain-100t": _stack("plain", 200_000),
        }
    }
    rows = {row["what"]: row for row in targets(results)}
    rate = rows["end to end, 100 tenants (whole drain)"]
    assert (rate["target"], rate["met"]) == ("≥ 25,000 events/s", True)
    assert "≤ 50,000/s per core (2.0x the target)" in rate["note"]
    ratio = rows["authtrail ÷ plain, 100 tenants"]
    assert (ratio["target"], ratio["measured"], ratio["met"]) == ("≥ 0.5", 0.25, False)
    # Half of plain's 200 000/s is 100 000/s: 10 µs an event on one core, against 20 now.
    assert ratio["note"] == (
        "wall: 0.5 x plain's 200,000/s = 100,000/s needs the worker at ≤ 10.00 CPU µs/event "
        "on its one core (now 20.0)"
    )


def test_a_rate_short_of_the_target_says_by_how_much() -> None:
    results = {"stacks": {"authtrail-100t-1w": _stack("authtrail", 20_000, worker_us=50.0)}}
    (row,) = targets(results)
    assert row["met"] is False
    assert "≤ 20,000/s per core (1.2x short)" in row["note"]
