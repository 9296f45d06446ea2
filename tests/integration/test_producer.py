"""AuditProducer and ``run_loadgen`` against the real local broker (tansu).

What is checked by reading the topic back, not by trusting the producer's counters:
every event arrives exactly once, in send order per tenant, in the partition Kafka's Java
partitioner (murmur2, implemented here independently) assigns to its tenant, and
decodes with the codec. Refusals (full queue, invalid events, unreachable broker) must
surface as exceptions naming the events, with counters that add up.
"""

from __future__ import annotations

import io
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from authtrail import schemas
from authtrail.broker import LocalBroker, free_loopback_port
from authtrail.errors import (
    ConfigurationError,
    DeliveryError,
    InvalidArgumentError,
    ProducerQueueFullError,
)
from authtrail.producers.loadgen import run_loadgen
from authtrail.producers.sdk import AuditProducer, new_event
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.topics import TopicSpec, ensure_topics
from tests.integration.broker_fixtures import running_broker, unpack_events

pytestmark = pytest.mark.integration

PARTITIONS = 4
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli", "soylent", "wonka")
CODEC = SingleObjectCodec(schemas.load_schema(schemas.AUTH_EVENT))


# -- Kafka's partitioner, written from the Java source, as an independent check ------------


def murmur2(data: bytes) -> int:
    """org.apache.kafka.common.utils.Utils.murmur2, as a signed 32-bit int like Java's."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) // 4 * 4
    for index in range(0, whole, 4):
        k = int.from_bytes(data[index : index + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: bytes, partitions: int) -> int:
    """Utils.toPositive(Utils.murmur2(key)) % partitions: the Java DefaultPartitioner."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_murmur2_matches_kafkas_own_test_vectors() -> None:
    # clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {key: murmur2(key) for key in vectors} == vectors


def test_tenants_tell_murmur2_from_librdkafkas_default_crc32() -> None:
    # Precondition of the partition check below: with these tenants the two
    # partitioners disagree, so a producer on the wrong one fails the test.
    keys = [tenant.encode() for tenant in TENANTS]
    murmur = [java_partition(key, PARTITIONS) for key in keys]
    crc32 = [zlib.crc32(key) % PARTITIONS for key in keys]
    assert murmur != crc32
    assert len(set(murmur)) > 1


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


def new_topic(broker: LocalBroker, partitions: int = PARTITIONS) -> str:
    name = f"events-{uuid.uuid4().hex[:10]}"
    ensure_topics(broker.bootstrap_servers, [TopicSpec(name, partitions)])
    return name


def read_all(bootstrap_servers: str, topic: str, partitions: int = PARTITIONS) -> list[Any]:
    """Every message in ``topic``, each partition read from its start to its end.

    The end is librdkafka's partition-EOF event, not the high watermark: tansu 0.6 (memory
    storage) reports the watermark of a ListOffsets request as the last *batch's* base
    offset + 1, so reading "to the high watermark" would stop early.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "test-producer-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign(
            [TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(partitions)]
        )
        messages: list[Any] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + 30.0
        while len(at_end) < partitions and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    partition = message.partition()
                    assert partition is not None
                    at_end.add(partition)
                    continue
                assert error is None, error
                messages.append(message)
        assert len(at_end) == partitions, f"only partitions {sorted(at_end)} read to the end"
        # Offsets are dense from 0: a gap or a repeat would show here.
        by_partition: dict[int, list[int]] = defaultdict(list)
        for message in messages:
            by_partition[message.partition()].append(message.offset())
        for offsets in by_partition.values():
            assert offsets == list(range(len(offsets)))
        return messages
    finally:
        consumer.close()


def event_ids(messages: list[Any]) -> list[str]:
    """Event ids of bare messages and of envelopes' events, in order."""
    return [event["event_id"] for m in messages for event in unpack_events(m.value())]


# -- delivery: exactly once, ordered, partitioned by tenant --------------------------------


def test_events_arrive_once_in_order_in_their_tenants_partition(broker: LocalBroker) -> None:
    topic = new_topic(broker)
    sent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    # Bare messages: each one's key and partition is checked against Kafka's partitioner.
    producer = AuditProducer(broker.bootstrap_servers, topic, envelope_bytes=0)
    for index in range(5000):
        tenant = TENANTS[(index * 5 + index // 7) % len(TENANTS)]
        event = new_event(tenant, "LOGIN", user_id=f"user-{index % 97}", service="sso",
                          attributes={"index": str(index)})  # fmt: skip
        producer.send(event)
        sent[tenant].append(event)
    producer.close(timeout=30)
    assert (producer.sent, producer.acknowledged, producer.failed, producer.pending) == (
        5000, 5000, 0, 0,
    )  # fmt: skip

    messages = read_all(broker.bootstrap_servers, topic)
    assert len(messages) == 5000
    received: dict[str, list[dict[str, Any]]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for message in messages:  # consume() keeps each partition's order
        event = CODEC.decode(message.value())
        assert message.key() == event["tenant_id"].encode()
        received[event["tenant_id"]].append(event)
        partitions[event["tenant_id"]].add(message.partition())
    for tenant in TENANTS:
        assert partitions[tenant] == {java_partition(tenant.encode(), PARTITIONS)}, tenant
        expected = [CODEC.decode(CODEC.encode(event)) for event in sent[tenant]]
        assert received[tenant] == expected, f"{tenant}: lost, duplicated or reordered"


def test_envelopes_carry_each_partitions_events_once_in_order(broker: LocalBroker) -> None:
    """envelope_bytes: few messages, each all of one partition, every tenant in order."""
    envelopes = SingleObjectCodec(schemas.load_schema(schemas.EVENT_ENVELOPE))
    topic = new_topic(broker)
    sent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    producer = AuditProducer(broker.bootstrap_servers, topic, envelope_bytes=4096)
    for index in range(3000):
        tenant = TENANTS[(index * 5 + index // 7) % len(TENANTS)]
        event = new_event(tenant, "LOGIN", user_id=f"user-{index % 97}", service="sso")
        producer.send(event)
        sent[tenant].append(event)
    producer.close(timeout=30)
    assert (producer.sent, producer.acknowledged, producer.failed, producer.pending) == (
        3000, 3000, 0, 0,
    )  # fmt: skip
    messages = read_all(broker.bootstrap_servers, topic)
    assert len(messages) < 3000 / 10  # packed
    received: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        value = message.value()
        assert len(value) <= 4096
        values = envelopes.decode(value)["events"] if value[2:10] == envelopes.reader_fingerprint \
            else [value]  # fmt: skip
        for item in values:
            event = CODEC.decode(item)
            assert java_partition(event["tenant_id"].encode(), PARTITIONS) == message.partition()
            received[event["tenant_id"]].append(event)
    for tenant in TENANTS:
        expected = [CODEC.decode(CODEC.encode(event)) for event in sent[tenant]]
        assert received[tenant] == expected, f"{tenant}: lost, duplicated or reordered"


def test_an_envelope_lingers_only_briefly(broker: LocalBroker) -> None:
    topic = new_topic(broker)
    with AuditProducer(broker.bootstrap_servers, topic, envelope_bytes=1 << 18,
                       envelope_linger_ms=5) as producer:  # fmt: skip
        producer.send(new_event("acme", "LOGOUT", user_id="u1"))
        deadline = time.monotonic() + 10
        while producer.acknowledged < 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # no flush, no further send: the linger thread sends it
        assert producer.acknowledged == 1
    (message,) = read_all(broker.bootstrap_servers, topic)
    assert CODEC.decode(message.value())["tenant_id"] == "acme"  # one event: sent bare


def test_envelopes_need_an_existing_topic_and_no_spool(broker: LocalBroker, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="spool"):
        AuditProducer(broker.bootstrap_servers, "t", envelope_bytes=4096, spool_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"message\.max\.bytes"):
        AuditProducer(broker.bootstrap_servers, "t", envelope_bytes=1_000_000)
    with AuditProducer(broker.bootstrap_servers, f"missing-{uuid.uuid4().hex[:8]}",
                       envelope_bytes=4096) as producer:  # fmt: skip
        with pytest.raises(ConfigurationError, match="does not exist"):
            producer.send(new_event("acme", "LOGOUT"))
        assert producer.pending == 0


def test_envelopes_by_default_or_bare_when_the_topic_is_unknown(broker: LocalBroker) -> None:
    """The default packs events; unable to read the partition count at the first event,
    a producer sends bare messages for good (a topic created on first use still works)."""
    topic, missing = new_topic(broker), f"missing-{uuid.uuid4().hex[:8]}"
    events = [new_event("acme", "LOGOUT") for _ in range(20)]
    for name in (topic, missing):
        with AuditProducer(broker.bootstrap_servers, name) as producer:
            for event in events:
                producer.send(event)
        messages = read_all(broker.bootstrap_servers, name)
        assert event_ids(messages) == [event["event_id"] for event in events]
        assert len(messages) == (1 if name == topic else 20), name


def test_context_manager_closes_and_delivers(broker: LocalBroker) -> None:
    topic = new_topic(broker)
    with AuditProducer(broker.bootstrap_servers, topic) as producer:
        events = [new_event("acme", "LOGOUT", user_id="u1") for _ in range(50)]
        for event in events:
            producer.send(event)
    assert producer.acknowledged == producer.sent == 50
    assert event_ids(read_all(broker.bootstrap_servers, topic)) == [e["event_id"] for e in events]
    with pytest.raises(InvalidArgumentError, match="closed"):
        producer.send(new_event("acme", "LOGOUT"))


# -- backpressure ---------------------------------------------------------------------------


def test_full_queue_raises_and_nothing_is_dropped_silently(broker: LocalBroker) -> None:
    topic = new_topic(broker)
    producer = AuditProducer(
        broker.bootstrap_servers,
        topic,
        on_full="raise",
        config={"queue.buffering.max.messages": 5, "linger.ms": 100},
        envelope_bytes=0,  # bare: an envelope waits for room instead of raising
    )
    accepted: list[str] = []
    refused: list[ProducerQueueFullError] = []
    for _ in range(300):
        event = new_event("globex", "TOKEN_ISSUED")
        try:
            producer.send(event)
            accepted.append(event["event_id"])
        except ProducerQueueFullError as exc:
            assert exc.event_id == event["event_id"]
            assert 1 <= exc.pending <= 5 and exc.waited == 0
            refused.append(exc)
    assert refused, "a 5-message queue filled within 100 ms of linger must refuse events"
    assert len(accepted) + len(refused) == 300
    producer.close(timeout=30)
    assert producer.sent == producer.acknowledged == len(accepted)
    assert producer.failed == producer.pending == 0
    assert event_ids(read_all(broker.bootstrap_servers, topic)) == accepted


def test_full_queue_blocks_until_room(broker: LocalBroker) -> None:
    topic = new_topic(broker)
    config = {"queue.buffering.max.messages": 5, "linger.ms": 5}
    with AuditProducer(broker.bootstrap_servers, topic, config=config,
                       envelope_bytes=0) as producer:  # fmt: skip
        for _ in range(400):
            producer.send(new_event("initech", "LOGIN"))
    assert producer.acknowledged == 400
    assert len(read_all(broker.bootstrap_servers, topic)) == 400


def test_blocking_gives_up_after_queue_timeout_without_a_broker() -> None:
    producer = AuditProducer(
        f"127.0.0.1:{free_loopback_port()}",
        "events",
        queue_timeout=0.5,
        config={"queue.buffering.max.messages": 3},
        envelope_bytes=0,
    )
    queued = [new_event("acme", "LOGIN") for _ in range(3)]
    for event in queued:
        producer.send(event)
    started = time.monotonic()
    with pytest.raises(ProducerQueueFullError) as refused:
        producer.send(new_event("acme", "LOGIN"))
    assert 0.5 <= time.monotonic() - started < 3.0
    assert refused.value.pending == 3 and refused.value.waited >= 0.5
    with pytest.raises(DeliveryError) as undelivered:
        producer.close(timeout=0.2)
    assert set(undelivered.value.undelivered) == {event["event_id"] for event in queued}


# -- failures name the events ---------------------------------------------------------------


def test_unreachable_broker_close_names_the_undelivered_events() -> None:
    producer = AuditProducer(
        f"127.0.0.1:{free_loopback_port()}", "events", config={"message.timeout.ms": 800}
    )
    events = [new_event("hooli", "LOGIN_FAILED", user_id="u7") for _ in range(12)]
    for event in events:
        producer.send(event)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as undelivered:
        producer.close(timeout=10)
    assert time.monotonic() - started < 5.0, "message.timeout.ms should end the wait"
    assert sorted(undelivered.value.undelivered) == sorted(e["event_id"] for e in events)
    assert "timed out" in str(undelivered.value).lower()
    assert events[0]["event_id"] in str(undelivered.value)
    assert (producer.sent, producer.acknowledged, producer.failed, producer.pending) == (
        12, 0, 12, 0,
    )  # fmt: skip
    assert {failure.tenant_id for failure in producer.failures} == {"hooli"}
    producer.close()  # a second close is a no-op, not a second error


def test_close_timeout_purges_and_reports_what_was_left() -> None:
    producer = AuditProducer(f"127.0.0.1:{free_loopback_port()}", "events")
    events = [new_event("wonka", "LOGOUT") for _ in range(4)]
    for event in events:
        producer.send(event)
    with pytest.raises(DeliveryError, match="purged") as undelivered:
        producer.close(timeout=0.3)
    assert set(undelivered.value.undelivered) == {event["event_id"] for event in events}
    assert producer.failed == producer.sent == 4 and producer.pending == 0


def test_taken_failures_are_not_reported_again() -> None:
    producer = AuditProducer(
        f"127.0.0.1:{free_loopback_port()}", "events", config={"message.timeout.ms": 300}
    )
    producer.send(new_event("acme", "LOGIN"))
    assert producer.flush(timeout=5) == 0
    assert [failure.event_id for failure in producer.take_failures()] != []
    producer.close(timeout=1)  # the caller owns that failure now: no error


# -- validation happens before anything is queued -------------------------------------------


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"event_id": None}, "event_id"),
        ({"event_id": ""}, "event_id"),
        ({"tenant_id": "bad tenant"}, "tenant_id"),
        ({"tenant_id": "-leading-dash"}, "tenant_id"),
        ({"tenant_id": "x" * 129}, "tenant_id"),
        ({"event_type": "LOGIN_FAILED", "outcome": "SUCCESS"}, "LOGIN_FAILED"),
        ({"event_type_other": "UPDATE_TOTP"}, "event_type_other"),
        ({"event_type": "NOT_A_TYPE"}, "event_type"),
        ({"occurred_at": "2026-01-01"}, "occurred_at"),
        ({"no_such_field": "x"}, "no_such_field"),
    ],
)
def test_invalid_events_raise_before_queueing(
    broker: LocalBroker, change: dict[str, Any], complaint: str
) -> None:
    producer = AuditProducer(broker.bootstrap_servers, "never-written")
    event = {**new_event("acme", "LOGIN"), **change}
    with pytest.raises(InvalidArgumentError, match=complaint):
        producer.send(event)
    assert producer.sent == producer.pending == 0
    producer.close(timeout=1)


def test_new_event_fills_id_time_and_outcome() -> None:
    before = time.time_ns() // 1000
    login = new_event("acme", "LOGIN", user_id="u1")
    failed = new_event("acme", "LOGIN_FAILED")
    assert uuid.UUID(login["event_id"]).version == 4
    assert login["event_id"] != new_event("acme", "LOGIN")["event_id"]
    assert before <= login["occurred_at"] <= time.time_ns() // 1000
    assert (login["outcome"], failed["outcome"]) == ("SUCCESS", "FAILURE")
    assert new_event("acme", "LOGIN", event_id="okta:1")["event_id"] == "okta:1"
    CODEC.encode(login)
    with pytest.raises(InvalidArgumentError, match="tenant_id"):
        new_event("not a tenant", "LOGIN")


def test_configuration_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="error_cb"):
        AuditProducer("127.0.0.1:1", "events", config={"error_cb": print})
    with pytest.raises(InvalidArgumentError, match="on_full"):
        AuditProducer("127.0.0.1:1", "events", on_full="drop")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="invalid producer configuration"):
        AuditProducer("127.0.0.1:1", "events", config={"linger.ms": "soon"})


# -- loadgen --------------------------------------------------------------------------------


def test_run_loadgen_smoke(broker: LocalBroker, tmp_path: Path) -> None:
    topic = f"loadgen-{uuid.uuid4().hex[:10]}"
    progress = io.StringIO()
    summary = run_loadgen(
        broker.bootstrap_servers, topic, rate=0, count=2000, tenants=7, users=20,
        burst_every=200, seed=3, partitions=PARTITIONS, stream=progress,
    )  # fmt: skip
    assert (summary.sent, summary.acknowledged, summary.failed) == (2000, 2000, 0)
    assert summary.error is None and not summary.interrupted
    assert summary.rate == pytest.approx(2000 / summary.seconds)
    assert "2000/2000 sent" in progress.getvalue()
    messages = read_all(broker.bootstrap_servers, topic)
    ids = event_ids(messages)
    assert len(ids) == len(set(ids)) == 2000
    tenants = {
        event["tenant_id"] for message in messages for event in unpack_events(message.value())
    }
    assert len(tenants) == 7


def test_run_loadgen_keeps_to_the_rate(broker: LocalBroker) -> None:
    topic = new_topic(broker)
    summary = run_loadgen(broker.bootstrap_servers, topic, rate=300, count=150, progress=False)
    assert summary.acknowledged == 150
    # 150 events at 300/s, less the bucket's 50 ms of initial slack: at least 0.45 s.
    assert 0.45 <= summary.seconds < 3.0


def test_run_loadgen_without_a_broker_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no Kafka broker"):
        run_loadgen(f"127.0.0.1:{free_loopback_port()}", "events", rate=0, count=1)


def test_run_loadgen_stops_after_duration(broker: LocalBroker) -> None:
    topic = new_topic(broker)
    summary = run_loadgen(broker.bootstrap_servers, topic, rate=200, duration=0.5, progress=False)
    assert 0.5 <= summary.seconds < 3.0
    assert 80 <= summary.sent <= 120 and summary.acknowledged == summary.sent


def test_fatal_client_error_stops_sending_and_fails_close() -> None:
    producer = AuditProducer(f"127.0.0.1:{free_loopback_port()}", "events")
    queued = new_event("acme", "LOGIN")
    producer.send(queued)
    # What librdkafka's error_cb delivers when e.g. the idempotent producer loses its
    # guarantees; no broker here can be made to do that on demand.
    producer._on_error(KafkaError(KafkaError._FATAL, "producer fenced", fatal=True))
    with pytest.raises(DeliveryError, match="producer fenced"):
        producer.send(new_event("acme", "LOGIN"))
    with pytest.raises(DeliveryError, match="fatal producer error") as undelivered:
        producer.close(timeout=0.2)
    assert queued["event_id"] in undelivered.value.undelivered


def test_default_compression_is_readable_by_the_stream_processor(broker: LocalBroker) -> None:
    """Faust reads with aiokafka, which decodes lz4/zstd only with cramjam installed."""
    import asyncio
    import importlib.util

    from aiokafka import AIOKafkaConsumer

    topic = new_topic(broker, partitions=1)
    # Bare: 100 compressed messages, each read back as one event.
    with AuditProducer(broker.bootstrap_servers, topic, envelope_bytes=0) as producer:
        events = [new_event("acme", "LOGIN") for _ in range(100)]
        for event in events:
            producer.send(event)
    if importlib.util.find_spec("cramjam") is None:
        assert producer.compression == "gzip"

    async def consume() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            values: list[bytes] = []
            while len(values) < len(events):
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 20)
                values += [record.value for records in batches.values() for record in records]
            return values
        finally:
            await consumer.stop()

    values = asyncio.run(consume())
    assert [CODEC.decode(value)["event_id"] for value in values] == [
        event["event_id"] for event in events
    ]
