"""AuditProducer with a spool while the real broker (tansu) is frozen, and across a SIGKILL.

The broker is frozen with SIGSTOP (:meth:`LocalBroker.pause`): connections stay open and
nothing answers, as when a broker hangs or a network drops packets. What is checked, by
reading the topic back: every event id sent arrives (at least once — a spool delivers
at-least-once), no other id arrives, and each tenant's events arrive in the order they
were sent once repeats are ignored, which is exactly what the sequencer makes of them.

Run as ``python -m tests.integration.test_producer_outage CHILD ...`` this module is also
the producer process that the SIGKILL test kills.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from authtrail import schemas
from authtrail.broker import LocalBroker, free_loopback_port
from authtrail.errors import (
    ConfigurationError,
    DeliveryError,
    InvalidArgumentError,
    ProducerQueueFullError,
)
from authtrail.producers.sdk import AuditProducer, new_event
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.topics import TopicSpec, ensure_topics
from tests.integration.broker_fixtures import (
    running_broker,
    start_python_module,
    stop_process_group,
    wait_for_log_text,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
CODEC = SingleObjectCodec(schemas.load_schema(schemas.AUTH_EVENT))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


@pytest.fixture
def paused(broker: LocalBroker) -> Iterator[LocalBroker]:
    """The broker, frozen; resumed afterwards even when the test fails."""
    broker.pause()
    try:
        yield broker
    finally:
        broker.resume()


def new_topic(broker: LocalBroker) -> str:
    name = f"outage-{uuid.uuid4().hex[:10]}"
    ensure_topics(broker.bootstrap_servers, [TopicSpec(name, PARTITIONS)])
    return name


def numbered_event(number: int, prefix: str = "event") -> dict[str, Any]:
    tenant = TENANTS[(number * 3 + number // 7) % len(TENANTS)]
    return new_event(tenant, "LOGIN", event_id=f"{prefix}-{number}", user_id=f"u{number % 13}")


def read_until_seen(
    bootstrap_servers: str, topic: str, expected: Iterable[str], timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Decoded events of ``topic`` in each partition's order, read until every id in
    ``expected`` was seen (or ``timeout``; the caller's assertions then say what is missing)."""
    wanted = set(expected)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap_servers, "group.id": "outage-reader",
         "enable.auto.commit": False}
    )  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while wanted and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                value = message.value()
                assert message.error() is None and value is not None, message.error()
                event = CODEC.decode(value)
                assert message.key() == event["tenant_id"].encode()
                events.append(event)
                wanted.discard(event["event_id"])
        return events
    finally:
        consumer.close()


def assert_delivered_in_tenant_order(
    received: list[dict[str, Any]], sent: list[dict[str, Any]]
) -> None:
    """Every sent id arrived, nothing else did, and per tenant the first arrivals keep
    the send order (a repeat of an id already seen is what the sequencer drops)."""
    sent_ids = [event["event_id"] for event in sent]
    received_ids = [event["event_id"] for event in received]
    missing = set(sent_ids) - set(received_ids)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    assert set(received_ids) == set(sent_ids), "events that were never sent arrived"
    expected_order: dict[str, list[str]] = defaultdict(list)
    for event in sent:
        expected_order[event["tenant_id"]].append(event["event_id"])
    first_arrivals: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for event in received:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            first_arrivals[event["tenant_id"]].append(event["event_id"])
    for tenant, order in expected_order.items():
        assert first_arrivals[tenant] == order, f"{tenant}: events reordered"


# -- (1) a frozen broker while producing -----------------------------------------------------


def test_frozen_broker_loses_nothing_and_keeps_tenant_order(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic = new_topic(broker)
    events = [numbered_event(n) for n in range(2000)]
    producer = AuditProducer(broker.bootstrap_servers, topic, spool_dir=tmp_path / "spool")
    for event in events[:400]:
        producer.send(event)
    assert producer.flush(20) == 0
    broker.pause()
    try:
        for event in events[400:]:
            producer.send(event)
        time.sleep(0.5)  # the drainer hands events to librdkafka; none can be acknowledged
        backlog = producer.backlog()
        assert backlog.events == producer.pending == 1600
        assert backlog.bytes > 1600 * 100 and backlog.spool_dir == tmp_path / "spool"
        assert backlog.oldest_age is not None and 0.4 < backlog.oldest_age < 30
    finally:
        broker.resume()
    assert producer.flush(30) == 0
    producer.close(timeout=10)
    assert (producer.sent, producer.acknowledged, producer.failed) == (2000, 2000, 0)
    assert producer.backlog().events == 0
    assert list((tmp_path / "spool").glob("*.seg")) == []  # delivered: nothing left on disk
    received = read_until_seen(broker.bootstrap_servers, topic, (e["event_id"] for e in events))
    assert_delivered_in_tenant_order(received, events)


# -- (2) the producing process is killed while events wait in the spool ----------------------


def test_events_spooled_by_a_killed_process_are_delivered_by_the_next(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic = new_topic(broker)
    spool_dir, marker, log = tmp_path / "spool", tmp_path / "paused", tmp_path / "child.log"
    child = start_python_module(
        "tests.integration.test_producer_outage",
        ["child", broker.bootstrap_servers, topic, str(spool_dir), str(marker)],
        log,
    )
    try:
        wait_for_log_text(log, "delivered 300", child, timeout=30)
        broker.pause()
        try:
            marker.touch()
            wait_for_log_text(log, "spooled 1000", child, timeout=30)
            stop_process_group(child, signal.SIGKILL)
            assert child.returncode == -signal.SIGKILL
        finally:
            broker.resume()
    finally:
        stop_process_group(child, signal.SIGKILL)
    # A new process (this one) on the same spool: the 700 spooled go first, then new ones.
    later = [numbered_event(n, prefix="later") for n in range(100)]
    with AuditProducer(broker.bootstrap_servers, topic, spool_dir=spool_dir) as producer:
        assert producer.pending >= 700
        for event in later:
            producer.send(event)
        assert producer.flush(30) == 0
    assert producer.acknowledged >= 800 and producer.failed == 0
    sent = [numbered_event(n, prefix="child") for n in range(1000)] + later
    received = read_until_seen(broker.bootstrap_servers, topic, (e["event_id"] for e in sent))
    assert_delivered_in_tenant_order(received, sent)


def child_main(bootstrap_servers: str, topic: str, spool_dir: str, marker: str) -> None:
    """The producer process that the test above freezes the broker under and kills."""
    logging.basicConfig(level=logging.WARNING)
    producer = AuditProducer(bootstrap_servers, topic, spool_dir=spool_dir)
    for number in range(300):
        producer.send(numbered_event(number, prefix="child"))
    if producer.flush(20):
        raise SystemExit(f"flush left {producer.pending} events with the broker up")
    print("delivered 300", flush=True)
    while not Path(marker).exists():
        time.sleep(0.02)
    for number in range(300, 1000):
        producer.send(numbered_event(number, prefix="child"))
    print("spooled 1000", flush=True)
    time.sleep(600)  # until killed: close() must never run


# -- (3) bounds: raise or block, never drop -------------------------------------------------


def test_full_spool_raises_and_the_counts_add_up(broker: LocalBroker, tmp_path: Path) -> None:
    topic = new_topic(broker)
    accepted: list[dict[str, Any]] = []
    refused: list[ProducerQueueFullError] = []
    producer = AuditProducer(
        broker.bootstrap_servers, topic, spool_dir=tmp_path, spool_max_events=50, on_full="raise"
    )
    broker.pause()
    try:
        for number in range(80):
            event = numbered_event(number)
            try:
                producer.send(event)
                accepted.append(event)
            except ProducerQueueFullError as exc:
                assert exc.event_id == event["event_id"]
                assert (exc.pending, exc.waited) == (50, 0)
                refused.append(exc)
        assert (len(accepted), len(refused)) == (50, 30)
        assert producer.pending == producer.backlog().events == 50
    finally:
        broker.resume()
    producer.close(timeout=30)
    assert (producer.sent, producer.acknowledged, producer.failed, producer.pending) == (
        50, 50, 0, 0,
    )  # fmt: skip
    ids = [event["event_id"] for event in accepted]
    assert_delivered_in_tenant_order(
        read_until_seen(broker.bootstrap_servers, topic, ids), accepted
    )


def test_full_spool_blocks_until_the_broker_is_back(broker: LocalBroker, tmp_path: Path) -> None:
    topic = new_topic(broker)
    events = [numbered_event(n) for n in range(60)]
    # A tenant of its own: its order relative to the others is not defined.
    first, second = (new_event("wonka", "LOGOUT", event_id=f"impatient-{n}") for n in range(2))
    impatient = AuditProducer(
        broker.bootstrap_servers, topic, spool_dir=tmp_path / "impatient",
        spool_max_events=1, queue_timeout=0.3,
    )  # fmt: skip
    patient = AuditProducer(
        broker.bootstrap_servers, topic, spool_dir=tmp_path / "patient",
        spool_max_events=20, queue_timeout=20,
    )  # fmt: skip
    broker.pause()
    resumer = threading.Timer(0.8, broker.resume)
    try:
        impatient.send(first)
        with pytest.raises(ProducerQueueFullError) as full:  # gives up: still frozen
            impatient.send(second)
        assert full.value.waited >= 0.3 and full.value.pending == 1
        for event in events[:20]:
            patient.send(event)
        resumer.start()
        started = time.monotonic()
        for event in events[20:]:  # waits until delivery makes room
            patient.send(event)
        assert 0.3 < time.monotonic() - started < 20
    finally:
        resumer.cancel()
        resumer.join()
        broker.resume()
    impatient.close(timeout=30)
    patient.close(timeout=30)
    assert (impatient.sent, impatient.acknowledged, patient.acknowledged) == (1, 1, 60)
    sent = [*events, first]
    ids = [event["event_id"] for event in sent]
    assert_delivered_in_tenant_order(read_until_seen(broker.bootstrap_servers, topic, ids), sent)


# -- close with events left, one producer per spool, refused settings ------------------------


def test_close_leaves_undelivered_events_for_the_next_producer(
    paused: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = paused
    topic = f"outage-{uuid.uuid4().hex[:10]}"  # created once the broker answers again
    events = [numbered_event(n) for n in range(100)]
    producer = AuditProducer(broker.bootstrap_servers, topic, spool_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="in use"):
        AuditProducer(broker.bootstrap_servers, topic, spool_dir=tmp_path)
    for event in events:
        producer.send(event)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="authtrail.producers.sdk.producer"):
        producer.close(timeout=0.5)  # not an error: the events are on disk
    assert time.monotonic() - started < 8
    assert "100 events" in caplog.text and str(tmp_path) in caplog.text
    assert producer.pending == producer.backlog().events == 100
    assert producer.backlog().spool_dir == tmp_path
    broker.resume()
    ensure_topics(broker.bootstrap_servers, [TopicSpec(topic, PARTITIONS)])
    with AuditProducer(broker.bootstrap_servers, topic, spool_dir=tmp_path) as successor:
        assert successor.flush(30) == 0
    assert successor.acknowledged >= 100
    ids = [event["event_id"] for event in events]
    assert_delivered_in_tenant_order(read_until_seen(broker.bootstrap_servers, topic, ids), events)


def test_an_event_the_producer_refuses_halts_delivery_and_stays_spooled(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """An event a later producer cannot send (here: larger than its message.max.bytes) is
    neither skipped nor overtaken: delivery stops, and a producer able to send it does."""
    nowhere = f"127.0.0.1:{free_loopback_port()}"
    topic = new_topic(broker)  # spooled events keep the topic they were sent for
    big = new_event("acme", "LOGIN", event_id="big", attributes={"blob": "x" * 3000})
    after = new_event("acme", "LOGOUT", event_id="after")
    with AuditProducer(nowhere, topic, spool_dir=tmp_path) as first:
        first.send(big)
        first.send(after)
        with pytest.raises(InvalidArgumentError, match="too large"):  # checked before spooling
            first.send(new_event("acme", "LOGIN", attributes={"blob": "x" * 2**20}))
        first.close(timeout=0)
    assert first.pending == 2
    limited = AuditProducer(nowhere, topic, spool_dir=tmp_path,
                            config={"message.max.bytes": 2000})  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            limited.send(new_event("acme", "LOGIN", event_id="refused"))
        except DeliveryError as halted:
            assert "halted" in str(halted) and "big" in str(halted)
            break
        time.sleep(0.05)
    else:
        pytest.fail("delivery did not halt on an event librdkafka refuses")
    with pytest.raises(DeliveryError, match="events stay in spool") as closing:
        limited.close(timeout=1)
    assert "big" in closing.value.undelivered
    assert limited.pending >= 2  # big and after (and refused, if it was spooled first)
    with AuditProducer(broker.bootstrap_servers, topic, spool_dir=tmp_path) as able:
        assert able.flush(30) == 0
    received = read_until_seen(broker.bootstrap_servers, topic, ["big", "after"])
    assert [event["event_id"] for event in received][:2] == ["big", "after"]


def test_a_message_timeout_with_a_spool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"message\.timeout\.ms"):
        AuditProducer("127.0.0.1:1", "events", spool_dir=tmp_path,
                      config={"message.timeout.ms": 5000})  # fmt: skip
    assert not list(tmp_path.iterdir())  # refused before the spool was touched


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "child":
        child_main(*sys.argv[2:])
    else:
        raise SystemExit(f"usage: {sys.argv[0]} child BOOTSTRAP TOPIC SPOOL_DIR MARKER")
