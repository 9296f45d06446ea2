"""The worker's Faust consumer hands records over in runs; acking a run acks each record."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from authtrail.stream.worker.record_runs import (
    MAX_RUN,
    RecordRun,
    RunConsumer,
    run_records,
    use_record_runs,
)

EVENTS, OTHER = "events", "other"


def _records(tp: TP, first: int, end: int) -> list[Any]:
    # The fields of aiokafka's ConsumerRecord that Faust and the worker read.
    return [
        SimpleNamespace(
            topic=tp.topic, partition=tp.partition, offset=offset, timestamp_type=0,
            timestamp=1_700_000_000_000 + offset, key=b"tenant", value=b"event %d" % offset,
        )
        for offset in range(first, end)
    ]  # fmt: skip


@pytest.fixture
def consumer() -> Iterator[RunConsumer]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = faust.App(
            "record-runs-test", broker="kafka://127.0.0.1:9", store="memory://",
            web_enabled=False, autodiscover=False,
        )  # fmt: skip
        app.topic(EVENTS, key_serializer="raw", value_serializer="raw")
        use_record_runs(app, [EVENTS])
        built = app.consumer
        assert isinstance(built, RunConsumer)
        app.topics._acking_topics.add(EVENTS)  # as the conductor does for an agent's topic
        yield built
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_runs_keep_each_partitions_order_and_take_turns(consumer: RunConsumer) -> None:
    p0, p1, other = TP(EVENTS, 0), TP(EVENTS, 1), TP(OTHER, 0)
    fetched = {
        p0: _records(p0, 0, 2 * MAX_RUN + 7),
        p1: _records(p1, 40, 43),
        other: _records(other, 0, 2),
    }
    runs = list(consumer._runs(fetched, None))
    assert [(tp, run[0].offset, len(run)) for tp, run in runs] == [
        (p0, 0, MAX_RUN), (p1, 40, 3), (other, 0, 1),
        (p0, MAX_RUN, MAX_RUN), (other, 1, 1),
        (p0, 2 * MAX_RUN, 7),
    ]  # fmt: skip
    for tp in fetched:  # every record once, in offset order
        assert [r.offset for t, run in runs if t == tp for r in run] == [
            r.offset for r in fetched[tp]
        ]


def test_runs_skip_partitions_not_active(consumer: RunConsumer) -> None:
    p0, p1 = TP(EVENTS, 0), TP(EVENTS, 1)
    fetched = {p0: _records(p0, 0, 3), p1: _records(p1, 0, 3)}
    assert [tp for tp, _ in consumer._runs(fetched, {p1})] == [p1]
    consumer._buffered_partitions.add(p0)  # paused for a full buffer: what was fetched is kept
    assert [tp for tp, _ in consumer._runs(fetched, {p1})] == [p0, p1]


def test_a_run_stands_for_its_records() -> None:
    tp = TP(EVENTS, 3)
    records = _records(tp, 10, 15)
    run = RecordRun(tp, records, generation_id=4)
    assert (run.tp, run.first_offset, run.offset, run.generation_id) == (tp, 10, 14, 4)
    assert run.timestamp == records[-1].timestamp / 1000
    assert run_records(run) is records
    with pytest.raises(TypeError, match="not a run"):
        run_records(SimpleNamespace(offset=1))


def test_acking_a_run_acks_every_offset_it_covers(consumer: RunConsumer) -> None:
    tp = TP(EVENTS, 0)
    consumer._committed_offset[tp] = None
    first, second, third = (
        RecordRun(tp, _records(tp, start, start + MAX_RUN), 1) for start in (0, 500, 1000)
    )
    assert consumer.ack(first)
    assert consumer._new_offset(tp) == MAX_RUN  # the next offset to read: all of it done
    consumer._committed_offset[tp] = MAX_RUN  # as a commit of that offset records it
    assert not consumer.ack(first)  # once
    assert consumer.ack(third)
    assert consumer._new_offset(tp) is None  # the second run is not done: no commit past it
    assert consumer.ack(second)
    assert consumer._new_offset(tp) == 3 * MAX_RUN
    assert consumer._n_acked == 3 * MAX_RUN


def test_a_run_does_not_ack_below_the_committed_offset(consumer: RunConsumer) -> None:
    tp = TP(EVENTS, 1)
    consumer._committed_offset[tp] = 300  # a seek back redelivered records already committed
    assert consumer.ack(RecordRun(tp, _records(tp, 0, MAX_RUN), 1))
    assert sorted(consumer._acked[tp]) == list(range(300, MAX_RUN))
