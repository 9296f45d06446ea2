"""Which inserts the sink counts after inserting (sinks/sink.py, Sink._counted): all but
those of records no earlier process can have inserted under the same token."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from authtrail.sinks.sink import Sink


class _Consumer:
    """Answers get_watermark_offsets with ``(0, end)``, or raises ``error``."""

    def __init__(self, end: int = 0, error: KafkaException | None = None) -> None:
        self.end, self.error = end, error

    def get_watermark_offsets(self, partition: TopicPartition, **_: Any) -> tuple[int, int]:
        if self.error is not None:
            raise self.error
        return 0, self.end


def _sink(**state: Any) -> Any:
    return SimpleNamespace(**({"_fresh_from": {}, "_insert_failed": False} | state))


def _note(sink: Any, consumer: _Consumer, stored: int | None) -> None:
    Sink._note_fresh_from(sink, consumer, "chained", 0, stored)  # type: ignore[arg-type]


def _counted(sink: Any, *positions: tuple[int, int]) -> bool:
    return Sink._counted(sink, "chained", positions)


def test_records_from_the_end_offset_at_assignment_on_are_not_counted() -> None:
    sink = _sink()
    _note(sink, _Consumer(end=100), stored=41)
    assert sink._fresh_from == {("chained", 0): 100}
    assert not _counted(sink, (0, 100), (0, 250))
    assert _counted(sink, (0, 99))  # in Kafka before: an earlier process may have read it
    assert _counted(sink, (0, 120), (0, 99))  # one such record is enough
    assert _counted(sink, (1, 500))  # a partition without an end offset
    assert _counted(_sink(_fresh_from={("events", 0): 0}), (0, 5))  # another topic's


def test_every_insert_is_counted_once_one_failed() -> None:
    sink = _sink(_fresh_from={("chained", 0): 100})
    assert not _counted(sink, (0, 150))
    sink._insert_failed = True
    assert _counted(sink, (0, 150))


def test_no_end_offset_is_kept_when_the_store_is_ahead_of_the_topic_or_the_broker_fails() -> None:
    for consumer, stored in [
        (_Consumer(end=100), 100),  # the store holds offset 100 of a partition ending there
        (_Consumer(end=5), 41),  # recreated or truncated
        (_Consumer(error=KafkaException(KafkaError(KafkaError._TIMED_OUT))), None),
    ]:
        sink = _sink(_fresh_from={("chained", 0): 7})  # an older assignment's: replaced
        _note(sink, consumer, stored)
        assert sink._fresh_from == {}
        assert _counted(sink, (0, 10**9))
    sink = _sink()
    _note(sink, _Consumer(end=0), stored=None)  # an empty partition, nothing stored
    assert not _counted(sink, (0, 0))
