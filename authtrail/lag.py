"""How far each consumer group is behind, per partition: committed offset vs end offset.

The worker's group (``<consumer_group>-sequencer``, Faust's app id) reads the events
topic; the sink's (``<consumer_group>-sink``) reads the chained and checkpoints topics.
Both commit after their output is safe, so ``end offset - committed offset`` is the work
still waiting. ``authtrail status`` shows it and the processes export it as the gauge
``authtrail_consumer_lag`` (authtrail/metrics.py).

Committed offsets come from the admin API (OffsetFetch, no group is joined). End offsets
come from a fetch, not from ListOffsets: the local tansu broker answers ListOffsets with
the base offset of the newest record batch + 1 (authtrail/topics.py), too low whenever
that batch holds several records, while the high watermark of a fetch response is right
on tansu and on Kafka alike. So the newest batch of each partition is fetched once.

This is an adapter (network I/O).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authtrail.errors import ConfigurationError
from authtrail.settings import Settings

__all__ = ["PartitionLag", "consumer_lags", "pipeline_groups"]


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a topic a group reads. ``committed`` None: the group committed
    nothing there yet, so everything from ``start`` on is waiting."""

    group: str
    topic: str
    partition: int
    committed: int | None
    start: int
    end: int

    @property
    def lag(self) -> int:
        """Records at or after the committed offset (from ``start`` when none), never < 0."""
        position = self.start if self.committed is None else max(self.committed, self.start)
        return max(self.end - position, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group, "topic": self.topic, "partition": self.partition,
            "committed": self.committed, "end_offset": self.end, "lag": self.lag,
        }  # fmt: skip


def pipeline_groups(settings: Settings) -> dict[str, tuple[str, ...]]:
    """The pipeline's consumer groups and the topics each reads."""
    return {
        f"{settings.consumer_group}-sequencer": (settings.events_topic,),
        f"{settings.consumer_group}-sink": (settings.chained_topic, settings.checkpoints_topic),
    }


def consumer_lags(
    bootstrap_servers: str,
    groups: Mapping[str, Sequence[str]],
    *,
    timeout: float = 10.0,
    config: Mapping[str, Any] | None = None,
) -> list[PartitionLag]:
    """The lag of every partition of every topic in ``groups`` (group -> topics), sorted.

    Raises :class:`ConfigurationError` when the broker does not answer within ``timeout``
    seconds or a topic does not exist.
    """
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    # librdkafka's own log lines (each failed connect) would only repeat the error raised.
    common = {"bootstrap.servers": bootstrap_servers, "log_level": 0, **(config or {})}
    admin = AdminClient(common)
    topics = sorted({topic for names in groups.values() for topic in names})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception as exc:
        raise ConfigurationError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc
    partitions: dict[str, list[int]] = {}
    for topic in topics:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise ConfigurationError(f"Kafka topic {topic!r} does not exist")
        partitions[topic] = sorted(found.partitions)
    ends = _offset_ranges(common, partitions, timeout)
    lags = []
    for group, names in groups.items():
        futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
        try:
            listed = futures[group].result(timeout=timeout).topic_partitions or []
        except Exception as exc:
            raise ConfigurationError(f"cannot read the offsets of group {group}: {exc}") from exc
        committed = {(tp.topic, tp.partition): tp.offset for tp in listed if tp.offset >= 0}
        for topic in names:
            for number in partitions[topic]:
                start, end = ends[(topic, number)]
                lags.append(PartitionLag(group, topic, number, committed.get((topic, number)),
                                         start, end))  # fmt: skip
    return sorted(lags, key=lambda item: (item.group, item.topic, item.partition))


def _offset_ranges(
    common: Mapping[str, Any], partitions: Mapping[str, Iterable[int]], timeout: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (start, end) offsets, the end from a fetch (module docstring)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            **common,
            # Never commits or subscribes: the id only satisfies the client.
            "group.id": f"authtrail-lag-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
        }
    )
    try:
        listed = {}
        for topic, numbers in partitions.items():
            for number in numbers:
                start, end = consumer.get_watermark_offsets(
                    TopicPartition(topic, number), timeout=timeout, cached=False
                )
                listed[(topic, number)] = (start, end)
        wanted = [TopicPartition(t, p, end - 1) for (t, p), (start, end) in listed.items()
                  if end > start]  # fmt: skip
        fetched: set[tuple[str | None, int | None]] = set()
        if wanted:
            consumer.assign(wanted)
            deadline = time.monotonic() + timeout
            while len(fetched) < len(wanted) and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is not None and message.topic() is not None:
                    fetched.add((message.topic(), message.partition()))
        result = {}
        for key, (start, end) in listed.items():
            if key in fetched:
                _, end = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
            result[key] = (start, end)
        return result
    finally:
        consumer.close()
