"""The worker's output producer against the real local broker: batches, order, failures.

What the worker's correctness rests on (stream/worker/sequencing.py, rule 2): a flush returns only
when every record enqueued before it is stored, each partition keeps the order records
were enqueued in, each record is stored once, and any record that was not stored makes
the flush raise.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from authtrail.broker import LocalBroker, free_loopback_port
from authtrail.stream.worker.publisher import KafkaPublisher, PublishError
from authtrail.topics import TopicSpec, ensure_topics
from tests.integration.broker_fixtures import running_broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


def _topics(broker: LocalBroker, partitions: int = 2) -> dict[str, str]:
    names = {role: f"{role}-{uuid.uuid4().hex[:8]}" for role in ("chained", "checkpoints")}
    ensure_topics(
        broker.bootstrap_servers, [TopicSpec(name, partitions, 1) for name in names.values()]
    )
    return names


def _read(broker: LocalBroker, topic: str, partition: int) -> list[bytes]:
    """Every value in ``topic[partition]`` up to its end, in offset order."""
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap_servers, "group.id": "unused",
         "enable.auto.commit": False, "enable.partition.eof": True}
    )  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        values: list[bytes] = []
        while True:
            message = consumer.poll(10)
            assert message is not None, f"no end of {topic}[{partition}] within 10 s"
            if message.error():
                assert message.error().code() == -191, message.error()  # _PARTITION_EOF
                return values
            values.append(message.value())
    finally:
        consumer.close()


def test_a_batch_is_stored_in_order_once_when_flush_returns(broker: LocalBroker) -> None:
    topics = _topics(broker)
    publisher = KafkaPublisher(broker.bootstrap_servers, topics, linger_ms=5)
    try:
        for index in range(3000):  # an agent batch of 2 000 inputs and more
            publisher.publish("chained", b"acme", b"r%d" % index, index % 2)
        publisher.publish("checkpoints", b"acme", b"c0", 1)
        asyncio.run(publisher.flush())
        for partition in (0, 1):
            expected = [b"r%d" % index for index in range(partition, 3000, 2)]
            assert _read(broker, topics["chained"], partition) == expected
        assert _read(broker, topics["checkpoints"], 1) == [b"c0"]
        asyncio.run(publisher.flush())  # nothing pending: returns at once, no error
    finally:
        publisher.close()
    publisher.close()  # idempotent


def test_a_record_that_cannot_be_stored_fails_the_flush(broker: LocalBroker) -> None:
    topics = _topics(broker)
    publisher = KafkaPublisher(broker.bootstrap_servers, topics,
                               config={"message.timeout.ms": 3000})  # fmt: skip
    try:
        publisher.publish("chained", b"acme", b"fine", 0)
        publisher.publish("chained", b"acme", b"lost", 7)  # the topic has 2 partitions
        with pytest.raises(PublishError, match=rf"{topics['chained']}\[7\]"):
            asyncio.run(publisher.flush())
        # The failure was reported once; later batches are judged on their own.
        publisher.publish("chained", b"acme", b"next", 0)
        asyncio.run(publisher.flush())
        assert _read(broker, topics["chained"], 0) == [b"fine", b"next"]
    finally:
        publisher.close()


def test_an_unreachable_broker_fails_the_flush_after_the_delivery_timeout(
    tmp_path: Path,
) -> None:
    nowhere = f"127.0.0.1:{free_loopback_port()}"
    publisher = KafkaPublisher(nowhere, {"chained": "t"}, config={"message.timeout.ms": 1000})
    try:
        publisher.publish("chained", None, b"x", 0)
        with pytest.raises(PublishError, match="publish failed"):
            asyncio.run(publisher.flush())
    finally:
        publisher.close()


def test_acknowledged_offsets_of_tracked_roles_are_reported_once(broker: LocalBroker) -> None:
    """Where a snapshot stands (stream/worker/snapshotter.py): the first and last offset stored
    per tracked role and partition since the previous report."""
    topics = _topics(broker)
    publisher = KafkaPublisher(broker.bootstrap_servers, topics, tracked=("chained",))
    try:
        for index in range(10):
            publisher.publish("chained", b"acme", b"r%d" % index, index % 2)
        publisher.publish("checkpoints", b"acme", b"c0", 0)  # not tracked
        asyncio.run(publisher.flush())
        assert publisher.take_acknowledged() == {("chained", 0): (0, 4), ("chained", 1): (0, 4)}
        assert publisher.take_acknowledged() == {}
        publisher.publish("chained", b"acme", b"r10", 1)
        asyncio.run(publisher.flush())
        assert publisher.take_acknowledged() == {("chained", 1): (5, 5)}
    finally:
        publisher.close()
