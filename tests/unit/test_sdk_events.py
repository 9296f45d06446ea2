"""The producer SDK's checks of what the Avro schema cannot express (producers/sdk/events.py)."""

from __future__ import annotations

import pytest

from authtrail.errors import InvalidArgumentError
from authtrail.producers.sdk import events
from authtrail.producers.sdk.events import event_ids, new_event


@pytest.mark.parametrize("tenant", ["", "-acme", "a b", "acme!", "x" * 129, "ümlaut", None, 7])
def test_a_tenant_id_outside_the_pattern_is_refused_every_time(tenant: object) -> None:
    for _ in range(2):  # a refusal is not remembered as a pass
        with pytest.raises(InvalidArgumentError, match="tenant_id"):
            event_ids({**new_event("acme", "LOGIN"), "tenant_id": tenant})


def test_a_str_subclass_is_checked_for_what_it_holds_not_what_it_claims() -> None:
    """Tenant ids that passed are remembered; an object that hashes and compares like one
    of them must still be checked itself."""

    class Impostor(str):
        def __hash__(self) -> int:
            return hash("acme")

        def __eq__(self, other: object) -> bool:
            return other == "acme"

    assert event_ids(new_event("acme", "LOGIN"))[1] == "acme"
    assert "acme" in events._VALID_TENANT_IDS
    with pytest.raises(InvalidArgumentError, match="tenant_id"):
        event_ids({**new_event("acme", "LOGIN"), "tenant_id": Impostor("a b")})


def test_remembered_tenant_ids_are_bounded() -> None:
    saved = set(events._VALID_TENANT_IDS)
    try:
        for number in range(events._MAX_VALID_TENANT_IDS + 10):
            event_ids(new_event(f"tenant-{number}", "LOGIN"))
        assert len(events._VALID_TENANT_IDS) <= events._MAX_VALID_TENANT_IDS
    finally:
        events._VALID_TENANT_IDS.clear()
        events._VALID_TENANT_IDS.update(saved)
