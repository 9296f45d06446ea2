"""The checkpoint signing budget (stream/core/signing_budget.py): a token bucket."""

from __future__ import annotations

import pytest

from authtrail.errors import InvalidArgumentError
from authtrail.stream.core.signing_budget import SigningBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_cap_is_none_and_spending_changes_nothing() -> None:
    budget = SigningBudget(0)
    budget.spend(10**6)
    assert budget.available() is None


def test_a_second_of_burst_then_the_rate() -> None:
    clock = Clock()
    budget = SigningBudget(100, clock)
    assert budget.available() == 100  # a full second's worth at the start
    budget.spend(100)
    assert budget.available() == 0
    clock.now += 0.25
    assert budget.available() == 25
    budget.spend(25)
    clock.now += 60  # an idle minute still holds one second's worth only
    assert budget.available() == 100


def test_full_batches_may_overspend_and_the_debt_is_paid_first() -> None:
    clock = Clock()
    budget = SigningBudget(10, clock)
    budget.spend(30)  # full batches are never deferred
    assert budget.available() == 0
    clock.now += 2.0
    assert budget.available() == 0  # -20 + 20
    clock.now += 0.5
    assert budget.available() == 5


def test_a_negative_rate_is_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        SigningBudget(-1)
