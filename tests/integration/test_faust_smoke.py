"""Faust on the local tansu broker: agent, table, changelog recovery after SIGKILL.

The worker runs ``tests/integration/faust_smoke_app.py`` in a subprocess with its own
process group. Timings are printed (run with ``-s`` to see them) because the sequencer's
test budgets are built from them.

Measured here (faust-streaming 0.15.3, aiokafka 0.14, tansu 0.6.0), 8 tenants, 4 partitions:

* first start → 400 outputs: ~5 s (group join ~3 s); restart after SIGKILL → Ready:
  ~12 s (the dead member must time out first); SIGTERM stop: ~1.2 s.
* With ``producer_max_batch_size=1`` (see ``tansu_faust_settings``) the table recovered
  from its changelog every time. Without it, tansu's wrong end offsets made recovery stop
  early and counters went back (50 → 48) in about 1 run in 5.
* Input that is already waiting when the restarted worker recovers is *not* processed
  reliably: in about 2 runs in 5, 2-4 records per partition were never processed and the
  last record was processed twice — see :func:`test_backlog_at_restart_is_processed`.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authtrail.broker import LocalBroker
from authtrail.topics import ensure_topics, partition_counts
from tests.integration.broker_fixtures import (
    process_exists,
    read_topic,
    running_broker,
    start_python_module,
    stop_process_group,
    wait_for_log_text,
)
from tests.integration.faust_smoke_app import SmokeSettings, topic_specs

pytestmark = pytest.mark.integration

PARTITIONS = 4
TENANTS = [f"tenant-{index}" for index in range(8)]
WORKER_MODULE = "tests.integration.faust_smoke_app"
WORKER_READY = "[^Worker]: Ready"
FIRST_BATCH = range(0, 400)
SECOND_BATCH = range(400, 600)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


@dataclass
class Timings:
    first_ready: float = 0.0
    first_outputs: float = 0.0
    commit_wait: float = 0.0
    kill: float = 0.0
    restart_ready: float = 0.0
    second_outputs: float = 0.0
    stop: float = 0.0


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


def _read_outputs(settings: SmokeSettings, count: int, timeout: float) -> list[dict[str, Any]]:
    """Read the output topic from the start until ``count`` outputs arrived (or timeout)."""
    messages = read_topic(
        settings.bootstrap_servers, settings.output_topic, PARTITIONS, count, timeout=timeout
    )
    outputs = []
    for message in messages:
        output = json.loads(message.value())
        assert message.key().decode() == output["key"]
        outputs.append(output)
    return outputs


def _describe_processing_errors(outputs: list[dict[str, Any]], numbers: range) -> list[str]:
    """Input records never processed or processed twice, by input (partition, offset)."""
    processed = Counter(output["number"] for output in outputs)
    where = {output["number"]: (output["partition"], output["offset"]) for output in outputs}
    problems = [
        f"number {n} processed {processed[n]} times at {where[n]}"
        for n in numbers
        if processed[n] > 1
    ]
    missing = [n for n in numbers if processed[n] == 0]
    if missing:
        problems.append(f"{len(missing)} numbers never processed: {missing[:20]}")
    return problems


def _end_offsets(bootstrap_servers: str, topic: str, expected_count: int) -> list[int]:
    """Each partition's end offset, found by reading the topic.

    Not ListOffsets: tansu 0.6.0 reports the end offset as (base offset of the last record
    batch + 1), too low whenever the last batch holds several records.
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


def _kill_and_restart(
    broker: LocalBroker, tmp_path: Path, backlog_at_restart: bool
) -> tuple[list[dict[str, Any]], Counter[str], Counter[str], Timings]:
    """Count FIRST_BATCH, SIGKILL the worker, restart it, count SECOND_BATCH.

    ``backlog_at_restart``: produce SECOND_BATCH before the restarted worker is Ready
    (it then recovers with input waiting) instead of after.
    """
    settings = SmokeSettings(
        bootstrap_servers=broker.bootstrap_servers,
        app_id=f"smoke-{uuid.uuid4().hex[:8]}",
        partitions=PARTITIONS,
        datadir=tmp_path / "faust-data",
    )
    ensure_topics(broker.bootstrap_servers, topic_specs(settings))
    timings = Timings()

    # Run 1: fresh group, empty table.
    first_log = tmp_path / "worker-1.log"
    started = time.monotonic()
    worker = start_python_module(WORKER_MODULE, _worker_arguments(settings), first_log)
    try:
        timings.first_ready = wait_for_log_text(first_log, WORKER_READY, worker, timeout=60)
        produced_first = _produce(broker.bootstrap_servers, settings.input_topic, FIRST_BATCH)
        outputs = _read_outputs(settings, len(FIRST_BATCH), timeout=60)
        timings.first_outputs = time.monotonic() - started
        assert len(outputs) == len(FIRST_BATCH), _describe_processing_errors(outputs, FIRST_BATCH)
        timings.commit_wait = _wait_until_committed(
            broker.bootstrap_servers,
            settings.app_id,
            settings.input_topic,
            _end_offsets(broker.bootstrap_servers, settings.input_topic, len(FIRST_BATCH)),
        )
    finally:
        timings.kill = stop_process_group(worker, first_signal=signal.SIGKILL)
    assert not process_exists(worker.pid)

    # Run 2: same app id and group; the memory store must rebuild the table from the
    # changelog, and the group must first expire the killed member.
    second_log = tmp_path / "worker-2.log"
    restarted = time.monotonic()
    worker = start_python_module(WORKER_MODULE, _worker_arguments(settings), second_log)
    try:
        if backlog_at_restart:
            produced_second = _produce(broker.bootstrap_servers, settings.input_topic, SECOND_BATCH)
        timings.restart_ready = wait_for_log_text(second_log, WORKER_READY, worker, timeout=90)
        if not backlog_at_restart:
            produced_second = _produce(broker.bootstrap_servers, settings.input_topic, SECOND_BATCH)
        total = len(FIRST_BATCH) + len(SECOND_BATCH)
        outputs = _read_outputs(settings, total, timeout=30)
        timings.second_outputs = time.monotonic() - restarted
    finally:
        timings.stop = stop_process_group(worker)
    assert not process_exists(worker.pid)

    # Faust must not have grown or auto-created a topic with another partition count.
    counts = partition_counts(broker.bootstrap_servers)
    for spec in topic_specs(settings):
        assert counts[spec.name] == PARTITIONS, spec.name
    return outputs, produced_first, produced_second, timings


def _assert_counted_exactly_once(
    outputs: list[dict[str, Any]], produced_first: Counter[str], produced_second: Counter[str]
) -> None:
    problems = _describe_processing_errors(outputs, range(FIRST_BATCH.start, SECOND_BATCH.stop))
    assert not problems, problems
    by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for output in outputs:
        by_tenant[output["key"]].append(output)
    for tenant in TENANTS:
        # Outputs of one key share a partition, so their order is processing order: the
        # counter must run 1..n without a reset at the restart (recovered, not restarted)
        # and without going back (a changelog read only partly).
        total = produced_first[tenant] + produced_second[tenant]
        assert [output["count"] for output in by_tenant[tenant]] == list(range(1, total + 1)), (
            tenant
        )
        numbers = [output["number"] for output in by_tenant[tenant]]
        assert numbers == sorted(numbers), f"{tenant}: outputs out of input order"


def test_table_counts_survive_a_killed_worker(broker: LocalBroker, tmp_path: Path) -> None:
    outputs, produced_first, produced_second, timings = _kill_and_restart(
        broker, tmp_path, backlog_at_restart=False
    )
    print(
        f"\nfaust on tansu: start→Ready {timings.first_ready:.1f}s, "
        f"start→{len(FIRST_BATCH)} outputs {timings.first_outputs:.1f}s, offsets committed "
        f"{timings.commit_wait:.1f}s later, SIGKILL {timings.kill:.2f}s; restart→Ready "
        f"(join + recovery) {timings.restart_ready:.1f}s, restart→all outputs "
        f"{timings.second_outputs:.1f}s; SIGTERM stop {timings.stop:.1f}s"
    )
    _assert_counted_exactly_once(outputs, produced_first, produced_second)


@pytest.mark.xfail(
    strict=False,
    reason=(
        "faust-streaming 0.15.3 recovery race (cf. faust-streaming/faust#596): input waiting "
        "while a SIGKILLed worker's successor recovers is sometimes skipped (2-4 records per "
        "partition) and the last record processed twice; ~2 runs in 5 here"
    ),
)
def test_backlog_at_restart_is_processed(broker: LocalBroker, tmp_path: Path) -> None:
    """The at-least-once contract the sequencer needs: every waiting event gets processed."""
    outputs, produced_first, produced_second, timings = _kill_and_restart(
        broker, tmp_path, backlog_at_restart=True
    )
    print(f"\nbacklog restart: restart→Ready {timings.restart_ready:.1f}s")
    _assert_counted_exactly_once(outputs, produced_first, produced_second)
