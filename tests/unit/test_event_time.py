"""The reorder buffer: its release, and how it forgets the ids a cutoff passed; and the
same buffer in C (authtrail/_speedups.c), which the detectors use, against it."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail.stream.detection import event_time
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


class _ScanEveryId(ReorderBuffer):
    """The reference: forgets by a pass over every remembered id (the buffer before its
    expiry heap)."""

    def _forget_before(self, cutoff: int) -> None:
        self.recent_ids = {key: at for key, at in self.recent_ids.items() if at >= cutoff}
        # The ids left, sorted (a valid heap), for what the buffer reads off its top.
        self._expiry = sorted((at, key) for key, at in self.recent_ids.items())


@settings(max_examples=400, derandomize=True, database=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["offer", "offer", "offer", "release", "forget", "reload"]),
            st.integers(0, 60),  # event time, or the floor of a release or forget
            st.integers(0, 12),  # event id: repeats are duplicates or late copies
        ),
        max_size=120,
    ),
    lateness=st.sampled_from([0, 5, 20]),
)
def test_the_expiry_heap_forgets_what_a_pass_over_every_id_forgets(
    steps: list[tuple[str, int, int]], lateness: int
) -> None:
    buffer, reference = ReorderBuffer(), _ScanEveryId()
    for action, at, number in steps:
        floor = at if at % 3 else None
        if action == "offer":
            event = (at, f"e{number}", {"n": number})
            assert buffer.offer(*event, lateness, floor) == reference.offer(*event, lateness, floor)
        elif action == "release":
            assert buffer.release(lateness, floor) == reference.release(lateness, floor)
        elif action == "forget":
            buffer.forget(lateness, floor)
            reference.forget(lateness, floor)
        else:  # a snapshot and back: the heap is rebuilt from the remembered ids
            buffer = ReorderBuffer.from_state(buffer.to_state())
        assert buffer.to_state() == reference.to_state()
        assert list(buffer.recent_ids.items()) == list(reference.recent_ids.items())
        assert buffer.due() == reference.due()


def test_a_busy_key_forgets_its_oldest_ids_first() -> None:
    buffer, times = ReorderBuffer(), [n if n % 10 else n - 5 for n in range(1000)]
    for n, at in enumerate(times):  # one account's flood of events, a few out of order
        assert buffer.offer(at, f"e{n}", {}, 1000, None) == ACCEPTED
    buffer.forget(499, None)  # cutoff 999 - 499: ids before 500 go, the rest stay in order
    assert list(buffer.recent_ids) == [f"e{n}" for n, at in enumerate(times) if at >= 500]
    assert buffer.due() == -5  # nothing released: the oldest pending event's time


def test_a_reloaded_buffer_forgets_as_the_original_would() -> None:
    buffer = ReorderBuffer()
    for at, event_id in [(50, "a"), (10, "b"), (40, "c"), (20, "d"), (30, "e")]:
        assert buffer.offer(at, event_id, {}, 100, None) == ACCEPTED
    reloaded = ReorderBuffer.from_state(buffer.to_state())
    for either in (buffer, reloaded):
        either.forget(100, 125)  # cutoff 25
        assert either.recent_ids == {"a": 50, "c": 40, "e": 30}
        assert either.due() == 10  # the oldest pending event, still held


# ------------------------------------------------------------------ the buffer in C

try:
    from authtrail._speedups import ReorderBuffer as CReorderBuffer
except ImportError as exc:  # pragma: no cover - tests/unit/test_speedups.py says why
    pytest.fail(f"authtrail._speedups is not built ({exc})", pytrace=False)


def test_the_detectors_use_the_buffer_in_c() -> None:
    assert type(event_time.new_order()) is CReorderBuffer
    assert type(event_time.order_from_state(ReorderBuffer().to_state())) is CReorderBuffer


@settings(max_examples=600, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["offer", "offer", "offer", "release", "forget", "reload"]),
            st.integers(-5, 60),  # event time, or the floor of a release or forget
            st.integers(0, 12),  # event id: repeats are duplicates or late copies
        ),
        max_size=150,
    ),
    lateness=st.sampled_from([0, 5, 20, 2**70]),  # an int beyond 64 bits too
    # Times within 64 bits (compared in C), across its edge, and beyond (compared by Python).
    offset=st.sampled_from([0, 2**63 - 30, -(2**63) - 30, 2**64]),
)
def test_the_buffer_in_c_is_the_python_buffer(
    steps: list[tuple[str, int, int]], lateness: int, offset: int
) -> None:
    native, reference = event_time.new_order(), ReorderBuffer()
    for action, time, number in steps:
        at = time + offset
        floor = at if time % 3 else None
        if action == "offer":
            event = (at, f"e{number}", {"n": number})
            assert native.offer(*event, lateness, floor) == reference.offer(*event, lateness, floor)
        elif action == "release":
            assert native.release(lateness, floor) == reference.release(lateness, floor)
        elif action == "forget":
            native.forget(lateness, floor)
            reference.forget(lateness, floor)
        else:  # a snapshot and back
            native = event_time.order_from_state(native.to_state())
            reference = ReorderBuffer.from_state(reference.to_state())
        assert native.to_state() == reference.to_state()
        assert list(native.recent_ids.items()) == list(reference.recent_ids.items())
        assert (native.due(), native.oldest(), native.watermark) == (
            reference.due(), reference.oldest(), reference.watermark
        )  # fmt: skip
        assert native.cutoff(lateness, floor) == reference.cutoff(lateness, floor)


def test_a_flooded_buffer_in_c_releases_one_event_a_time_in_order() -> None:
    """A busy key holds its whole lateness window: each event releases about one."""
    native, reference = event_time.new_order(), ReorderBuffer()
    for n in range(20_000):
        at = n if n % 7 else n - 3  # a few out of order
        for buffer in (native, reference):
            assert buffer.offer(at, f"e{n}", {}, 1_000, None) == ACCEPTED
        assert native.release(1_000, None) == reference.release(1_000, None)
    assert native.to_state() == reference.to_state()


def test_the_buffer_in_c_keeps_no_memory_per_call() -> None:
    buffer = event_time.new_order()
    for n in range(200):
        buffer.offer(n, f"e{n}", {}, 10, None)
        buffer.release(10, None)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(200, 20_200):
        buffer.offer(n, f"e{n}", {}, 10, None)
        buffer.release(10, None)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 64_000, grown  # a lateness window's events and ids, not 20 000
