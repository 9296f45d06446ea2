"""Which partitions a sink reads: on the embedded store, which only one process can write,
every partition of its topics, whoever else is in its consumer group; the group's offsets
still follow what is stored, for lag tools.

On the real broker and the embedded engine; records from the real sequencer, written to
Kafka by hand (no worker start-up).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from authtrail.errors import ConfigurationError
from authtrail.settings import Settings
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.service import build_sink
from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG
from tests.integration.test_chained_batches_store import _batch, _records, _store_all
from tests.integration.test_publication import broker, publication_settings

__all__ = ["broker"]  # the module-scoped broker fixture

pytestmark = pytest.mark.integration

PARTITIONS = 3


def _settings(broker: Any, tmp_path: Path) -> Settings:
    """Fresh topics of three partitions; acme's records on partition 0, globex's on 2."""
    settings = dataclasses.replace(
        publication_settings(broker, tmp_path, partitions=PARTITIONS), publication_dir=None
    )
    records = _records(settings)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    acme = [r for r in records if r["event"]["tenant_id"] == "acme"]
    globex = [r for r in records if r["event"]["tenant_id"] == "globex"]
    # acme's 10th is of the next month: a batch of its own.
    for partition, batch in ((0, acme[:4]), (0, acme[4:9]), (0, acme[9:]), (2, globex)):
        producer.produce(settings.chained_topic, _batch(batch), None, partition)
    assert producer.flush(10) == 0
    return settings


@pytest.fixture
def stray() -> Iterator[list[Consumer]]:
    """Consumers to close after the test."""
    consumers: list[Consumer] = []
    yield consumers
    for consumer in consumers:
        consumer.close()


def test_the_embedded_sink_reads_every_partition_whoever_else_is_in_its_group(
    broker: Any, tmp_path: Path, stray: list[Consumer]
) -> None:
    """A leftover consumer in the sink's group (a console consumer run with its id, a sink
    of another store) would take partitions from a subscribing sink, and their records would
    never reach the store. The embedded sink, the store's only writer, takes them all."""
    settings = _settings(broker, tmp_path)
    other = Consumer({
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": f"{settings.consumer_group}-sink",
        "partition.assignment.strategy": "cooperative-sticky",
        **SHORT_CONSUMER_CONFIG,
    })  # fmt: skip
    stray.append(other)
    assigned: list[TopicPartition] = []

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned.extend(partitions)
        consumer.incremental_assign(partitions)

    other.subscribe([settings.chained_topic], on_assign=on_assign)
    deadline = time.monotonic() + 30
    while len(assigned) < PARTITIONS and time.monotonic() < deadline:
        other.poll(0.1)
    assert len(assigned) == PARTITIONS  # it holds every partition of the chained topic
    stop_polling = threading.Event()
    polling = threading.Thread(target=_poll_until, args=(other, stop_polling), daemon=True)
    polling.start()  # a live member: it keeps its partitions through any rebalance
    try:
        sink = _store_all(settings, records=13, checkpoints=0)
        with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
            stored = backend.query_arrow(
                "SELECT tenant_id, kafka_partition, groupArray(seq) AS seqs FROM "
                "(SELECT * FROM events ORDER BY seq) GROUP BY tenant_id, kafka_partition "
                "ORDER BY tenant_id"
            ).to_pylist()
    finally:
        stop_polling.set()
        polling.join(10)

    assert sink.counters.stored_records == 13
    assert stored == [
        {"tenant_id": "acme", "kafka_partition": 0, "seqs": list(range(1, 11))},
        {"tenant_id": "globex", "kafka_partition": 2, "seqs": [1, 2, 3]},
    ]


def _poll_until(consumer: Consumer, stop: threading.Event) -> None:
    while not stop.is_set():
        consumer.poll(0.1)


def test_the_embedded_sinks_offsets_are_committed_for_lag_tools(
    broker: Any, tmp_path: Path
) -> None:
    """Without joining the group, the sink still commits, under the group's id, the offset
    after the last record it stored on each partition (none where it read nothing)."""
    settings = _settings(broker, tmp_path)
    sink = _store_all(settings, records=13, checkpoints=0)
    assert sink.counters.stored_records == 13

    reader = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                       "group.id": f"{settings.consumer_group}-sink"})  # fmt: skip
    try:
        partitions = [TopicPartition(settings.chained_topic, n) for n in range(PARTITIONS)]
        committed = {tp.partition: tp.offset for tp in reader.committed(partitions, timeout=10)}
    finally:
        reader.close()
    assert (committed[0], committed[2]) == (3, 1)  # past the last batch stored
    assert committed[1] < 0  # nothing read there: no offset committed


def test_the_embedded_sink_names_a_topic_it_cannot_read(broker: Any, tmp_path: Path) -> None:
    """Topics are created before the sink starts (``ensure_topics``); one that is missing
    stops it with the topic's name, instead of a sink that waits for records forever."""
    settings = _settings(broker, tmp_path)
    missing = dataclasses.replace(settings, checkpoints_topic=f"{settings.checkpoints_topic}-gone")
    failures: list[BaseException] = []
    stop = threading.Event()

    def run() -> None:
        try:
            build_sink(missing, backend, consumer_config=SHORT_CONSUMER_CONFIG).run(stop)
        except BaseException as exc:
            failures.append(exc)

    with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(20)
        stop.set()
        thread.join(20)
    assert [type(exc) for exc in failures] == [ConfigurationError]
    assert f"cannot read topic {missing.checkpoints_topic!r}" in str(failures[0])
