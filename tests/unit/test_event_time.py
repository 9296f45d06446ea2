"""The reorder buffer's release: what a call that releases nothing still does."""

from __future__ import annotations

from authtrail.stream.detection.event_time import ACCEPTED, DUPLICATE, LATE, ReorderBuffer

LATENESS = 10


def test_a_release_of_nothing_still_forgets_ids_behind_the_cutoff() -> None:
    buffer = ReorderBuffer()
    assert buffer.offer(100, "a", {}, LATENESS, None) == ACCEPTED
    assert buffer.release(LATENESS, None) == []  # cutoff 90: "a" waits
    assert buffer.release(LATENESS, 111) == [(100, "a", {})]  # cutoff 101
    assert buffer.offer(200, "b", {}, LATENESS, None) == ACCEPTED
    assert buffer.offer(200, "b", {}, LATENESS, None) == DUPLICATE
    # Nothing is ready at cutoff 190, but "a" (at 100) is forgotten: late, not a duplicate.
    assert buffer.release(LATENESS, None) == []
    assert buffer.recent_ids == {"b": 200}
    assert buffer.offer(100, "a", {}, LATENESS, None) == LATE


def test_release_returns_the_ready_prefix_in_order_and_moves_the_frontier() -> None:
    buffer, lateness = ReorderBuffer(), 100
    for at, event_id in [(30, "c"), (10, "a"), (20, "b"), (50, "d")]:
        assert buffer.offer(at, event_id, {}, lateness, None) == ACCEPTED
    assert [item[:2] for item in buffer.release(lateness, 125)] == [(10, "a"), (20, "b")]
    assert buffer.frontier == (20, "b")
    assert buffer.offer(15, "e", {}, lateness, None) == LATE  # before the frontier
    assert [item[:2] for item in buffer.release(lateness, 160)] == [(30, "c"), (50, "d")]
    assert buffer.release(lateness, 160) == []
