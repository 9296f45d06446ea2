"""benchmarks.workload: the events the benchmarks send are unique, UUID-shaped and
reproducible per seed."""

from __future__ import annotations

import uuid

from benchmarks.workload import EventFactory


def test_event_ids_are_unique_uuid4_shaped_and_reproducible() -> None:
    factory = EventFactory(10, seed=3)
    ids = [factory.make()["event_id"] for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(event_id).version == 4 and len(event_id) == 36 for event_id in ids)
    assert [EventFactory(10, seed=3).make()["event_id"] for _ in range(1)] == ids[:1]
    others = {EventFactory(10, seed=seed).make()["event_id"] for seed in range(4, 50)}
    assert len(others) == 46 and not others & set(ids)


def test_a_backlog_is_stamped_apart_and_ends_now() -> None:
    events = EventFactory(3, seed=1).batch(5)
    times = [event["occurred_at"] for event in events]
    assert times == sorted(times) and len(set(times)) == 5
    assert {event["tenant_id"] for event in events} <= {"tenant-00000", "tenant-00001",
                                                        "tenant-00002"}  # fmt: skip
