"""Guard.observe's glue in C (authtrail._speedups.GuardCore) against its Python: the same
decisions, owed events, counters and errors, for usual and unusual events alike."""

from __future__ import annotations

import random
from collections import UserDict
from typing import Any

import pytest

from authtrail.errors import InvalidArgumentError
from authtrail.stream.core.handover import KEYS_SERVICE
from authtrail.stream.detection import guard as guard_module
from authtrail.stream.detection.decisions import LOCKOUT_SERVICE
from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout_policy import LockoutPolicy, PolicySet, SprayPolicy

pytestmark = pytest.mark.skipif(guard_module.GuardCore is None, reason="no C extension")

POLICIES = PolicySet(
    lockout=LockoutPolicy(max_login_failures=3, quick_login_check_milliseconds=0),
    spray=SprayPolicy(distinct_users=4, window_seconds=600),
    allowed_lateness_seconds=1.0,
)
START = 1_767_225_600_000_000
END_OF_9999 = 253_402_300_800_000_000


class Text(str):
    """A str subclass: the C glue leaves it to the Python."""


def _python_guard(monkeypatch: pytest.MonkeyPatch) -> Guard:
    with monkeypatch.context() as patched:
        patched.setattr(guard_module, "GuardCore", None)
        guard = Guard(POLICIES)
    assert "observe" not in vars(guard)  # the method's Python
    return guard


def _odd(rng: random.Random, event: dict[str, Any]) -> Any:
    """``event`` made unusual one way or another (or left as it is)."""
    choice = rng.randrange(20)
    if choice == 0:
        return {**event, "service": KEYS_SERVICE}
    if choice == 1:
        forged = f"{LOCKOUT_SERVICE}:x{rng.random()}"
        return {**event, "service": LOCKOUT_SERVICE, "event_id": forged}
    if choice == 2:
        return {**event, "occurred_at": rng.choice([-1, END_OF_9999, END_OF_9999 - 1, 2**70])}
    if choice == 3:
        return {**event, "tenant_id": Text(event["tenant_id"])}
    if choice == 4:
        return {**event, "service": Text("sso")}
    if choice == 5:
        return UserDict(event)
    if choice == 6:
        return {**event, "service": None}
    if choice == 7:
        return {key: value for key, value in event.items() if key != "service"}
    return event


def _traffic(seed: int, count: int) -> list[Any]:
    rng = random.Random(seed)
    events, at = [], START
    for n in range(count):
        failed = rng.random() < 0.6
        at += rng.choice([1, 1, 300_000, 500_000, 1_000_000, 2_000_000])
        event = {
            "event_id": f"e{n}",
            "tenant_id": rng.choice(["acme", "globex", "initech"]),
            "event_type": "LOGIN_FAILED" if failed else "LOGIN",
            "outcome": "FAILURE" if failed else "SUCCESS",
            "occurred_at": at,
            "user_name": f"user{rng.randrange(4)}",
            "client_ip": f"203.0.113.{rng.randrange(3)}",
            "service": "sso",
        }
        events.append(_odd(rng, event))
    return events


def _outcome(guard: Guard, event: Any) -> Any:
    try:
        return guard.observe(event)
    except InvalidArgumentError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize("seed", range(30))
def test_the_c_glue_decides_what_the_python_decides(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    native, python = Guard(POLICIES), _python_guard(monkeypatch)
    assert "observe" in vars(native)
    decided = 0
    for event in _traffic(seed, 600):
        outcome = _outcome(native, event)
        assert outcome == _outcome(python, event)
        decided += len(outcome) if isinstance(outcome, list) else 0
    assert decided > 0  # the traffic makes decisions: the decided path ran
    assert native.to_state() == python.to_state()
    assert native.counters == python.counters


REFUSED_IDENTITIES = [{"tenant_id": ""}, {"event_id": ""}, {"event_id": None},
                      {"occurred_at": True}, {"occurred_at": 1.5}, {"tenant_id": 7}]  # fmt: skip


@pytest.mark.parametrize("change", REFUSED_IDENTITIES)
def test_an_identity_the_detectors_refuse_raises_the_pythons_error(
    change: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    event = {"event_id": "e1", "tenant_id": "acme", "event_type": "LOGIN_FAILED",
             "outcome": "FAILURE", "occurred_at": START, "user_name": "bob"}  # fmt: skip
    with pytest.raises(InvalidArgumentError) as native:
        Guard(POLICIES).observe({**event, **change})
    with pytest.raises(InvalidArgumentError) as python:
        _python_guard(monkeypatch).observe({**event, **change})
    assert str(native.value) == str(python.value)


def test_a_loaded_state_is_observed_through_the_new_detectors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = _traffic(7, 800)
    first, reference = Guard(POLICIES), _python_guard(monkeypatch)
    for event in events[:400]:
        assert _outcome(first, event) == _outcome(reference, event)
    restored = Guard(POLICIES)
    restored.load_state(first.to_state())
    for event in events[400:]:
        assert _outcome(restored, event) == _outcome(reference, event)
    assert restored.to_state() == reference.to_state()


def test_an_advance_is_due_after_a_step_of_event_time_from_any_int(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The step test in C holds for an advanced time far below the event's (no overflow)."""
    state = Guard(POLICIES).to_state()
    state["advanced"] = {"acme": -(2**63)}
    native, python = Guard(POLICIES), _python_guard(monkeypatch)
    native.load_state(state)
    python.load_state(state)
    event = {"event_id": "e1", "tenant_id": "acme", "event_type": "LOGIN",
             "outcome": "SUCCESS", "occurred_at": START, "user_name": "bob"}  # fmt: skip
    assert native.observe(event) == python.observe(event)
    assert native.to_state()["advanced"] == python.to_state()["advanced"] == {"acme": START}
