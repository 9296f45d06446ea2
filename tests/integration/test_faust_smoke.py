"""Faust on the local tansu broker: agent, table, changelog recovery after SIGKILL.

The worker runs ``tests/integration/faust_smoke_app.py`` in a subprocess with its own
process group. Timings are printed (run with ``-s`` to see them) because the sequencer's
test budgets are built from them.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authtrail.broker import LocalBroker
from authtrail.topics import ensure_topics, partition_counts
from tests.integration.broker_fixtures import (
    log_tail,
    process_exists,
    read_topic,
    running_broker,
    start_python_module,
    stop_process_group,
)
from tests.integration.faust_smoke_app import SmokeSettings, topic_specs

pytestmark = pytest.mark.integration

PARTITIONS = 4
TENANTS = [f"tenant-{index}" for index in range(8)]
WORKER_MODULE = "tests.integration.faust_smoke_app"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


def _worker_arguments(settings: SmokeSettings) -> list[str]:
    return [
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--app-id",
        settings.app_id,
        "--partitions",
        str(settings.partitions),
        "--datadir",
        str(settings.datadir),
    ]


def _produce(bootstrap_servers: str, topic: str, numbers: range) -> Counter[str]:
    """Produce one JSON event per number, keyed round-robin by tenant; return per-key counts."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "acks": "all"}
    )
    produced: Counter[str] = Counter()
    for number in numbers:
        tenant = TENANTS[number % len(TENANTS)]
        producer.produce(topic, key=tenant.encode(), value=json.dumps({"number": number}).encode())
        produced[tenant] += 1
    assert producer.flush(30) == 0, "producer did not deliver every event"
    return produced


def _outputs_by_tenant(messages: list[Any]) -> dict[str, list[dict[str, Any]]]:
    outputs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        output = json.loads(message.value())
        assert message.key().decode() == output["key"]
        outputs[output["key"]].append(output)
    return outputs


def _wait_for_outputs(
    broker: LocalBroker, settings: SmokeSettings, numbers: range, worker_log: Path, timeout: float
) -> list[Any]:
    """Read the output topic from the start until one output per input number arrived."""
    messages = read_topic(
        broker.bootstrap_servers, settings.output_topic, PARTITIONS, len(numbers), timeout=timeout
    )
    if len(messages) != len(numbers):
        seen = {json.loads(message.value())["number"] for message in messages}
        missing = sorted(set(numbers) - seen)
        inputs = read_topic(
            broker.bootstrap_servers, settings.input_topic, PARTITIONS, len(numbers)
        )
        where = {
            json.loads(message.value())["number"]: (message.partition(), message.offset())
            for message in inputs
        }
        pytest.fail(
            f"expected {len(numbers)} outputs, got {len(messages)}; missing numbers "
            f"{missing[:40]} at (partition, offset) {[where.get(n) for n in missing[:40]]}; "
            f"worker log:\n{log_tail(worker_log)}"
        )
    return messages


def _end_offsets(bootstrap_servers: str, topic: str, expected_count: int) -> list[int]:
    """Each partition's end offset, found by reading the topic.

    Not ListOffsets: tansu 0.6.0 reports the high watermark as (base offset of the last
    record batch + 1), too low whenever the last batch holds several records.
    """
    ends = [0] * PARTITIONS
    for message in read_topic(bootstrap_servers, topic, PARTITIONS, expected_count):
        ends[message.partition()] = max(ends[message.partition()], message.offset() + 1)
    assert sum(ends) == expected_count, f"{topic}: found {sum(ends)} of {expected_count}"
    return ends


def _wait_until_committed(
    bootstrap_servers: str, group_id: str, topic: str, ends: list[int], timeout: float = 20.0
) -> float:
    """Wait until ``group_id`` has committed ``ends`` on every partition of ``topic``.

    Without this, SIGKILL would leave uncommitted input that at-least-once processing
    counts twice after restart, and the exact-count assertions would be flaky.
    """
    from confluent_kafka import Consumer, TopicPartition

    # A consumer that never subscribes only fetches offsets; it does not join the group.
    reader = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group_id})
    started = time.monotonic()
    committed: list[int] = []
    try:
        partitions = [TopicPartition(topic, partition) for partition in range(PARTITIONS)]
        while time.monotonic() - started < timeout:
            committed = [tp.offset for tp in reader.committed(partitions, timeout=5)]
            if committed == ends:
                return time.monotonic() - started
            time.sleep(0.2)
        pytest.fail(f"group {group_id} committed {committed}, end offsets are {ends}")
    finally:
        reader.close()


def test_table_counts_survive_a_killed_worker(broker: LocalBroker, tmp_path: Path) -> None:
    settings = SmokeSettings(
        bootstrap_servers=broker.bootstrap_servers,
        app_id=f"smoke-{uuid.uuid4().hex[:8]}",
        partitions=PARTITIONS,
        datadir=tmp_path / "faust-data",
    )
    ensure_topics(broker.bootstrap_servers, topic_specs(settings))
    first_batch, second_batch = range(0, 400), range(400, 600)
    worker_log = tmp_path / "worker.log"

    # Run 1: fresh group, empty table.
    started = time.monotonic()
    worker = start_python_module(WORKER_MODULE, _worker_arguments(settings), worker_log)
    try:
        produced_first = _produce(broker.bootstrap_servers, settings.input_topic, first_batch)
        first_outputs = _wait_for_outputs(broker, settings, first_batch, worker_log, timeout=90)
        first_run_seconds = time.monotonic() - started
        commit_wait_seconds = _wait_until_committed(
            broker.bootstrap_servers,
            settings.app_id,
            settings.input_topic,
            _end_offsets(broker.bootstrap_servers, settings.input_topic, len(first_batch)),
        )
    finally:
        kill_seconds = stop_process_group(worker, first_signal=signal.SIGKILL)
    assert not process_exists(worker.pid)

    outputs = _outputs_by_tenant(first_outputs)
    for tenant in TENANTS:
        # Per-key order is kept end to end, and each event was counted exactly once.
        assert [output["count"] for output in outputs[tenant]] == list(
            range(1, produced_first[tenant] + 1)
        ), tenant
        numbers = [output["number"] for output in outputs[tenant]]
        assert numbers == sorted(numbers), f"{tenant} outputs out of order"

    # Run 2: same app id; the memory store must rebuild the table from the changelog.
    restarted = time.monotonic()
    worker = start_python_module(WORKER_MODULE, _worker_arguments(settings), worker_log)
    try:
        produced_second = _produce(broker.bootstrap_servers, settings.input_topic, second_batch)
        all_outputs = _wait_for_outputs(
            broker, settings, range(first_batch.start, second_batch.stop), worker_log, timeout=90
        )
        recovery_seconds = time.monotonic() - restarted
    finally:
        stop_seconds = stop_process_group(worker)
    assert not process_exists(worker.pid)

    outputs = _outputs_by_tenant(all_outputs)
    for tenant in TENANTS:
        second_run_counts = [
            output["count"] for output in outputs[tenant] if output["number"] >= second_batch.start
        ]
        # The counter continues where run 1 stopped: recovered, not restarted at 1.
        total = produced_first[tenant] + produced_second[tenant]
        assert second_run_counts == list(range(produced_first[tenant] + 1, total + 1)), tenant

    # Faust must not have grown or auto-created a topic with another partition count.
    counts = partition_counts(broker.bootstrap_servers)
    for spec in topic_specs(settings):
        assert counts[spec.name] == PARTITIONS, spec.name

    print(
        f"\nfaust on tansu: first run start→{len(first_batch)} outputs {first_run_seconds:.1f}s, "
        f"offsets committed after {commit_wait_seconds:.1f}s more, SIGKILL {kill_seconds:.2f}s; "
        f"restart→recovered and {len(second_batch)} more outputs {recovery_seconds:.1f}s; "
        f"SIGTERM stop {stop_seconds:.1f}s"
    )
