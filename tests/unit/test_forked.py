"""stream/worker/forked.py: a value worked out in a forked child, as the state was at the fork.

Real forks, real pipes: what the parent gets must be exactly what the child computed, a
child that fails or dies must be reported (never a partial result taken for a whole one),
and a parent that stops waiting must not leave the child running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from authtrail.stream.worker import forked
from authtrail.stream.worker.forked import ChildFailed, ForkedJob

pytestmark = pytest.mark.skipif(not forked.can_fork(), reason="this platform does not fork")


def test_the_parts_come_back_whole_larger_than_a_pipe_holds() -> None:
    parts = [b"", b"x", os.urandom(3 << 20), bytes(70_000)]
    assert asyncio.run(ForkedJob(lambda: parts).result()) == parts
    assert asyncio.run(ForkedJob(lambda: []).result()) == []


def test_the_child_sees_the_state_as_it_was_at_the_fork() -> None:
    state = {"records": [1, 2, 3]}

    async def scenario() -> list[bytes]:
        job = ForkedJob(lambda: [repr(state).encode()])
        state["records"].append(4)  # the parent goes on at once
        return await job.result()

    assert asyncio.run(scenario()) == [b"{'records': [1, 2, 3]}"]
    assert state == {"records": [1, 2, 3, 4]}


def test_a_failing_child_is_reported_with_its_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    def fails() -> list[bytes]:
        raise ValueError("state that cannot be encoded")

    with pytest.raises(ChildFailed, match="exit code 1"):
        asyncio.run(ForkedJob(fails).result())
    assert "ValueError: state that cannot be encoded" in capfd.readouterr().err


def test_a_child_killed_midway_is_no_result() -> None:
    def dies() -> list[bytes]:
        os.kill(os.getpid(), signal.SIGKILL)
        return [b"never"]

    with pytest.raises(ChildFailed, match="killed by signal 9"):
        asyncio.run(ForkedJob(dies).result())


def test_a_parent_that_stops_waiting_kills_and_reaps_the_child() -> None:
    async def scenario() -> int:
        job = ForkedJob(lambda: [time.sleep(60) or b"late"])
        waiting = asyncio.create_task(job.result())
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return job.pid

    started = time.monotonic()
    pid = asyncio.run(scenario())
    assert time.monotonic() - started < 10
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(pid, os.WNOHANG)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing written
        (3).to_bytes(8, "big") + b"ab",  # a part cut short
        (2).to_bytes(8, "big") + b"ab",  # no end mark
        (2).to_bytes(8, "big") + b"ab" + ((1 << 64) - 1).to_bytes(8, "big") + b"!",  # trailing
        b"\x00" * 7,
    ],
)
def test_only_a_framing_that_ends_with_the_end_mark_is_a_result(data: bytes) -> None:
    assert forked._parse(data) is None


def test_the_framing_round_trips() -> None:
    end = ((1 << 64) - 1).to_bytes(8, "big")
    assert forked._parse((2).to_bytes(8, "big") + b"ab" + (0).to_bytes(8, "big") + end) == [
        b"ab",
        b"",
    ]


def test_a_fork_that_fails_is_reported_and_leaks_no_descriptor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(ChildFailed, match="cannot fork"):
        ForkedJob(lambda: [b"x"])
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.skipif(not os.path.exists("/proc/self/oom_score_adj"), reason="no oom_score_adj")
def test_the_child_is_the_one_the_kernel_kills_when_memory_runs_out() -> None:
    def score() -> list[bytes]:
        with open("/proc/self/oom_score_adj", "rb") as adj:
            return [adj.read().strip()]

    assert asyncio.run(ForkedJob(score).result()) == [b"1000"]
    with open("/proc/self/oom_score_adj", "rb") as adj:
        assert adj.read().strip() != b"1000"  # the parent's is untouched


def test_a_signal_to_the_child_ends_the_child_not_the_worker() -> None:
    """The worker's handlers, and the loop's wakeup descriptor they write to, are not the
    child's: SIGTERM sent to it ends it, and the parent hears nothing of it."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda number, frame: received.append(number))
    try:

        def report() -> list[bytes]:
            dispositions = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
            assert dispositions == [signal.SIG_DFL, signal.SIG_DFL], dispositions
            os.kill(os.getpid(), signal.SIGTERM)
            return [b"not reached"]

        with pytest.raises(ChildFailed, match=f"killed by signal {int(signal.SIGTERM)}"):
            asyncio.run(ForkedJob(report).result())
        assert received == []
    finally:
        signal.signal(signal.SIGTERM, previous)
