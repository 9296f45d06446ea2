"""End to end on the real local broker and the real ClickHouse engine.

Producer SDK → authtrail.events → ``authtrail worker`` (Faust, a subprocess) → chained
records and checkpoints → sink (chdb, in this process) → ``authtrail verify``.
Checks: every produced event is stored exactly once, each tenant's seq is 1..n without
gaps, verify exits 0; tampering makes verify exit 1 naming tenant and seq; a worker
SIGKILLed mid-stream and restarted leaves no gap, duplicate or fork.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from authtrail.broker import LocalBroker, free_loopback_port
from authtrail.cli.main import main as authtrail
from authtrail.errors import StoreError
from authtrail.keys import load_signer, write_key_pair
from authtrail.producers.sdk import AuditProducer, new_event
from authtrail.schemas import AUTH_EVENT, CHAINED_BATCH
from authtrail.settings import Settings
from authtrail.sinks.backend import ClickHouseBackend, EmbeddedBackend, ServerBackend
from authtrail.sinks.clickhouse_sql import ACCESS_DENIED
from authtrail.sinks.http_front import HttpFront
from authtrail.sinks.rows import CHECKPOINTS_SCHEMA, checkpoint_row, to_arrow
from authtrail.sinks.schema_setup import ensure_schema
from authtrail.sinks.service import build_sink
from authtrail.stream.core.checkpoint import Checkpoint
from authtrail.stream.core.sequencer import SignedCheckpoint
from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout_policy import PolicySet
from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG, codec, topic_specs
from authtrail.stream.worker.chained_batch import decode_batch, is_batch
from authtrail.stream.worker.recovery import read_messages, read_partition
from authtrail.stream.worker.sequencing import _checkpoint_record
from authtrail.topics import ensure_topics
from tests.integration.broker_fixtures import (
    log_tail,
    running_broker,
    start_python_module,
    stop_process_group,
    wait_for_log_text,
)

pytestmark = pytest.mark.integration

TENANTS = ["acme", "globex", "initech", "umbrella", "hooli"]
SERVICES = ["sso", "vpn", "admin-portal", "api-gateway"]
WORKER_READY = "[^Worker]: Ready"
SNAPSHOT_EVERY = 100  # records between a partition's snapshots in these pipelines


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


@dataclass
class Pipeline:
    settings: Settings
    environment: dict[str, str]
    tmp_path: Path
    workers: list[Popen[bytes]]

    def start_worker(self) -> Popen[bytes]:
        log = self.tmp_path / f"worker-{len(self.workers)}.log"
        process = start_python_module(
            "authtrail.cli", ["worker", "--short-timeouts"], log, self.environment
        )
        self.workers.append(process)
        wait_for_log_text(log, WORKER_READY, process, timeout=90)
        return process

    def produce(self, count: int, seed: int) -> list[str]:
        rng = random.Random(seed)
        event_ids = []
        with AuditProducer(self.settings.bootstrap_servers or "", self.settings.events_topic) as p:
            for _ in range(count):
                failed = rng.random() < 0.2
                event = new_event(
                    rng.choice(TENANTS),
                    "LOGIN_FAILED" if failed else rng.choice(["LOGIN", "LOGOUT", "TOKEN_ISSUED"]),
                    service=rng.choice(SERVICES),
                    user_name=f"user{rng.randrange(30)}",
                    client_ip=f"198.51.100.{rng.randrange(1, 255)}",
                    failure_reason="invalid_credentials" if failed else None,
                    attributes={"request_id": uuid.uuid4().hex},
                )
                p.send(event)
                event_ids.append(event["event_id"])
        return event_ids


@pytest.fixture
def pipeline(broker: LocalBroker, tmp_path: Path) -> Iterator[Pipeline]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    environment = {
        **os.environ,
        "AUTHTRAIL_DATA_DIR": str(tmp_path / "data"),
        "AUTHTRAIL_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "AUTHTRAIL_EVENTS_TOPIC": f"{prefix}.events",
        "AUTHTRAIL_CHAINED_TOPIC": f"{prefix}.chained",
        "AUTHTRAIL_CHECKPOINTS_TOPIC": f"{prefix}.checkpoints",
        "AUTHTRAIL_DEAD_LETTER_TOPIC": f"{prefix}.dead-letter",
        "AUTHTRAIL_CONSUMER_GROUP": prefix,
        "AUTHTRAIL_PARTITIONS": "3",
        "AUTHTRAIL_BATCH_SIZE": "50",
        "AUTHTRAIL_BATCH_INTERVAL_MS": "300",
        "AUTHTRAIL_SNAPSHOT_EVERY": str(SNAPSHOT_EVERY),  # restarts here recover from snapshots
    }
    settings = Settings.from_env(environment)
    write_key_pair(settings.keys_dir, "authtrail")
    ensure_topics(broker.bootstrap_servers, topic_specs(settings))
    state = Pipeline(settings, environment, tmp_path, [])
    yield state
    for process in state.workers:
        stop_process_group(process, signal.SIGKILL)


class Store:
    """The ClickHouse side, embedded (chdb in this process) or server (clickhouse-connect
    over real HTTP to the front of that chdb store, as against a ClickHouse server).

    The embedded variant closes its directory between uses, so ``authtrail verify`` can
    open it like a user would; the server variant keeps it open behind the front.
    """

    def __init__(self, kind: str, path: Path) -> None:
        self.kind, self.path = kind, path
        self.front: HttpFront | None = None
        self._owner: EmbeddedBackend | None = None
        self._token, self._writer_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self._auditor_token = secrets.token_urlsafe(16)
        if kind == "server":
            self._owner = EmbeddedBackend(path)
            ensure_schema(self._owner)  # what `authtrail init-db` does: the writer cannot
            self.start_front()

    def start_front(self, port: int = 0) -> None:
        """Serve the store (again), with the same analyst and writer tokens."""
        assert self._owner is not None
        self.front = HttpFront(
            self._owner, port=port, token=self._token, writer_token=self._writer_token,
            auditor_token=self._auditor_token,
        ).start()  # fmt: skip

    def open(self) -> ClickHouseBackend:
        """A backend that may write: the sink's (INSERT and SELECT only through the front)."""
        if self.front is not None:
            return ServerBackend(self.front.writer_url)
        return EmbeddedBackend(self.path)

    def tamper(self, sql: str) -> None:
        """Run ``sql`` as an insider with full access to the database would."""
        if self._owner is not None:
            self._owner.command(sql)
            return
        with EmbeddedBackend(self.path) as backend:
            backend.command(sql)

    def verify_arguments(self) -> list[str]:
        """verify reads with the auditor's credential, which may read only its tables."""
        return ["--clickhouse-url", self.front.auditor_url] if self.front is not None else []

    def close(self) -> None:
        if self.front is not None:
            self.front.stop()
        if self._owner is not None:
            self._owner.close()


@pytest.fixture(params=["embedded", "server"])
def store(request: pytest.FixtureRequest, pipeline: Pipeline) -> Iterator[Store]:
    opened = Store(request.param, pipeline.settings.data_dir / "clickhouse")
    yield opened
    opened.close()


def _store(
    pipeline: Pipeline, store: Store, expected: int, timeout: float = 120,
    until: Callable[[ClickHouseBackend], bool] | None = None,
) -> None:  # fmt: skip
    """Run the sink until ``expected`` records are stored, every tenant is signed and
    ``until(backend)`` (if given) holds."""
    backend = store.open()
    sink = build_sink(pipeline.settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if (
                _stored_count(backend) >= expected
                and _all_signed(backend)
                and (until is None or until(backend))
            ):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)
        backend.close()
    logs = "\n".join(log_tail(p) for p in pipeline.tmp_path.glob("worker-*.log"))
    stored = sum(len(rows) for rows in _stored(store).values())
    assert stored >= expected, f"stored {stored}: {sink.counters}\n{logs}"


def _stored_count(backend: ClickHouseBackend) -> int:
    return int(backend.query_arrow("SELECT count() FROM events").column(0)[0].as_py())


def _all_signed(backend: ClickHouseBackend) -> bool:
    table = backend.query_arrow(
        "SELECT e.tenant_id, e.n, c.signed FROM "
        "(SELECT tenant_id, max(seq) AS n FROM events GROUP BY tenant_id) AS e "
        "LEFT JOIN (SELECT tenant_id, max(size) AS signed FROM checkpoints GROUP BY tenant_id) "
        "AS c USING tenant_id"
    )
    rows = table.to_pylist()
    return bool(rows) and all(row["n"] == row["signed"] for row in rows)


def _stored(store: Store) -> dict[str, list[tuple[int, str]]]:
    backend = store.open()
    try:
        rows = backend.query_arrow(
            "SELECT tenant_id, seq, event_id FROM events ORDER BY tenant_id, seq"
        ).to_pylist()
    finally:
        backend.close()
    by_tenant: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        by_tenant.setdefault(row["tenant_id"], []).append((row["seq"], row["event_id"]))
    return by_tenant


def _assert_exactly_once_and_gapless(store: Store, event_ids: list[str]) -> None:
    stored = _stored(store)
    stored_ids = [
        event_id
        for rows in stored.values()
        for _, event_id in rows
        # the pipeline's own events: lockout decisions and key hand-overs
        if not event_id.startswith(("authtrail-lockout:", "authtrail-keys:"))
    ]
    assert sorted(stored_ids) == sorted(event_ids)  # every event once, none extra
    for tenant, rows in stored.items():
        assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1)), tenant


def _count(settings: Settings, topic: str) -> int:
    servers = settings.bootstrap_servers or ""
    return sum(
        1
        for partition in range(settings.partitions)
        for _ in read_partition(servers, topic, partition)
    )


def _verify(pipeline: Pipeline, store: Store) -> int:
    argv = ["--data-dir", str(pipeline.settings.data_dir), "verify", *store.verify_arguments()]
    return authtrail(argv)


def test_events_are_chained_stored_and_verified(
    pipeline: Pipeline, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline.start_worker()
    event_ids = pipeline.produce(1500, seed=1)
    _store(pipeline, store, len(event_ids))
    _assert_exactly_once_and_gapless(store, event_ids)
    assert _verify(pipeline, store) == 0
    assert "0 damaged" in capsys.readouterr().err
    # On the local broker every fetch waits its maximum (stream/worker/app.py): kept short.
    worker_log = (pipeline.tmp_path / "worker-0.log").read_text()
    assert "consumer fetch wait shortened to 100 ms" in worker_log
    # pyproject installs uvloop (not on Windows) and the worker runs Faust on it.
    assert "event loop: uvloop.Loop" in worker_log

    tampering = (
        "ALTER TABLE events UPDATE user_name = 'mallory' WHERE tenant_id = 'globex' AND seq = 42 "
        "SETTINGS mutations_sync = 2"
    )
    if store.front is not None:  # the sink's own credential cannot do it
        with store.open() as writer, pytest.raises(StoreError) as refused:
            writer.command(tampering)
        assert refused.value.code == ACCESS_DENIED
        assert _verify(pipeline, store) == 0
    store.tamper(tampering)  # an insider with full access to the database can
    assert _verify(pipeline, store) == 1
    output = capsys.readouterr().out
    assert "globex: DAMAGED at seq 42: modified" in output
    assert "acme: ok" in output


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
def test_worker_killed_mid_stream_leaves_no_gap_duplicate_or_fork(
    pipeline: Pipeline, store: Store
) -> None:
    first_ids = pipeline.produce(3000, seed=2)
    worker = pipeline.start_worker()
    log = pipeline.tmp_path / "worker-0.log"
    wait_for_log_text(log, "recovered", worker, timeout=30)  # the first batch is in
    time.sleep(0.2)
    stop_process_group(worker, signal.SIGKILL)
    chained = _count(pipeline.settings, pipeline.settings.chained_topic)
    print(f"killed after {chained} of {len(first_ids)} events were chained")
    assert 0 < chained < len(first_ids), "the kill must land mid-stream"
    second_ids = pipeline.produce(1000, seed=3)
    pipeline.start_worker()
    third_ids = pipeline.produce(500, seed=4)
    event_ids = first_ids + second_ids + third_ids
    _store(pipeline, store, len(event_ids), timeout=180)
    _assert_exactly_once_and_gapless(store, event_ids)
    assert _verify(pipeline, store) == 0


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
def test_restart_replays_only_what_follows_the_newest_snapshot(
    pipeline: Pipeline, store: Store
) -> None:
    first_ids = pipeline.produce(1500, seed=5)
    worker = pipeline.start_worker()
    deadline = time.monotonic() + 120
    while _chained_events(pipeline.settings) < len(first_ids) and time.monotonic() < deadline:
        time.sleep(0.5)
    # Snapshots are encoded beside the worker (stream/worker/forked.py) and published
    # one at a time after the step that made them due: wait for every partition's.
    while not _every_chained_partition_snapshotted(pipeline.settings):
        assert time.monotonic() < deadline, "no snapshot of some partition within 120 s"
        time.sleep(0.5)
    stop_process_group(worker, signal.SIGKILL)
    chained = {
        p: _chained_events(pipeline.settings, [p]) for p in range(pipeline.settings.partitions)
    }
    second_ids = pipeline.produce(500, seed=6)
    pipeline.start_worker()
    log = pipeline.tmp_path / "worker-1.log"
    wait_for_log_text(log, "recovered", pipeline.workers[-1], timeout=60)
    third_ids = pipeline.produce(300, seed=7)
    event_ids = first_ids + second_ids + third_ids
    _store(pipeline, store, len(event_ids), timeout=180)
    _assert_exactly_once_and_gapless(store, event_ids)
    assert _verify(pipeline, store) == 0
    # ~500 events per partition, a snapshot every 100 records (at the end of the batch
    # that reached it): each partition's recovery began at one, and replayed a fraction.
    pattern = r"partition \d+: recovered (\d+) records .*, (after a snapshot|from the start)"
    recoveries = re.findall(pattern, log.read_text())
    sizes = re.findall(r"after a snapshot of \d+ records \((\d+) bytes\)", log.read_text())
    assert all(int(size) > 0 for size in sizes), sizes  # what spaces the next snapshot
    used = re.findall(pattern, (pipeline.tmp_path / "worker-0.log").read_text())
    assert len(recoveries) == len(used) > 0  # every assigned partition, at assignment
    # Those the tenants map to began at a snapshot; any other holds nothing to replay.
    assert "after a snapshot" in {how for _, how in recoveries}, recoveries
    assert all(how == "after a snapshot" or n == "0" for n, how in recoveries), recoveries
    # Exactly what follows the newest snapshot was replayed, and a snapshot was worth it.
    # (Where it stands depends on the worker's steps: snapshots are spaced by their size.)
    started = re.findall(r"partition (\d+): recovered (\d+) records .*, after a snapshot of "
                         r"(\d+) records", log.read_text())  # fmt: skip
    for partition, replayed, covered in started:
        assert int(replayed) + int(covered) == chained[int(partition)], started
        assert int(replayed) < chained[int(partition)], started


def _every_chained_partition_snapshotted(settings: Settings) -> bool:
    """Whether each partition with a snapshot's worth of chained events (SNAPSHOT_EVERY)
    has a snapshot part published."""
    servers = settings.bootstrap_servers or ""
    for partition in range(settings.partitions):
        if _chained_events(settings, [partition]) < SNAPSHOT_EVERY:
            continue
        keys = [key for _, key, _, _ in read_messages(
            servers, settings.snapshots_topic_name, partition)]  # fmt: skip
        if not any(key is not None and key.startswith(b"part-") for key in keys):
            return False
    return True


def _chained_events(settings: Settings, partitions: list[int] | None = None) -> int:
    servers, batches = settings.bootstrap_servers or "", codec(CHAINED_BATCH)
    return sum(
        len(decode_batch(value, batches)["records"])
        for partition in (range(settings.partitions) if partitions is None else partitions)
        for _, value in read_partition(servers, settings.chained_topic, partition)
        if is_batch(value, batches)
    )


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
def test_sink_killed_mid_stream_adds_no_duplicate_rows(pipeline: Pipeline, store: Store) -> None:
    # Small chained batches (~20 records), so the sink stores many messages one by one.
    pipeline.environment["AUTHTRAIL_CHAINED_BATCH_BYTES"] = "8192"
    pipeline.start_worker()
    event_ids = pipeline.produce(6000, seed=5)
    log = pipeline.tmp_path / "sink.log"
    metrics_port = free_loopback_port()
    environment = {**pipeline.environment, "AUTHTRAIL_SINK_BATCH_ROWS": "300",
                   "AUTHTRAIL_SINK_METRICS_PORT": str(metrics_port)}  # fmt: skip
    sink = start_python_module("authtrail.cli", ["sink", "--short-timeouts"], log, environment)
    try:
        wait_for_log_text(log, "records, ", sink, timeout=60)  # a first batch is stored
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            scraped = response.read().decode()
        samples = _samples(scraped)
        stored = samples[("authtrail_sink_stored_records_total", ())]
        assert stored > 0, scraped
        # Latency is observed per chained batch stored (each holds records; the scrape
        # reads the counter first, and the sink keeps storing); its group lag was readable.
        assert 0 < samples[("authtrail_sink_event_to_stored_seconds_count", ())] <= stored
        assert samples[("authtrail_sink_insert_rows_count", (("table", "events"),))] > 0
        assert samples[("authtrail_consumer_lag_up", ())] == 1
    finally:
        stop_process_group(sink, signal.SIGKILL)
    partial = sum(len(rows) for rows in _stored(store).values())
    print(f"sink killed after storing {partial} of {len(event_ids)} records")
    assert 0 < partial < len(event_ids), "the kill must land mid-stream"
    _store(pipeline, store, len(event_ids))
    _assert_exactly_once_and_gapless(store, event_ids)
    assert _verify(pipeline, store) == 0  # which also compares every tile entry with its leaves
    # The restarted sink continued the stored tiles: every full tile's entry, each once.
    backend = store.open()
    try:
        entries = backend.query_arrow(
            "SELECT tenant_id, count(), uniqExact(entry_index), max(entry_index) + 1 "
            "FROM tiles WHERE level = 1 GROUP BY tenant_id"
        ).to_pylist()
    finally:
        backend.close()
    records = {tenant: len(rows) for tenant, rows in _stored(store).items()}
    assert max(records.values()) >= 256  # tenants with full tiles
    assert {row["tenant_id"]: tuple(row.values())[1:] for row in entries} == {
        tenant: (count // 256,) * 3 for tenant, count in records.items() if count >= 256
    }


def test_undecodable_input_is_rejected_and_stored_with_its_bytes(
    pipeline: Pipeline, store: Store
) -> None:
    metrics_port = free_loopback_port()
    pipeline.environment["AUTHTRAIL_WORKER_METRICS_PORT"] = str(metrics_port)
    pipeline.start_worker()
    garbage = [b"\x00not avro", b"\xc3\x01" + bytes(8) + b"unknown schema", b""]
    producer = Producer({"bootstrap.servers": pipeline.settings.bootstrap_servers})
    for value in garbage:
        producer.produce(pipeline.settings.events_topic, value, b"acme")
    assert producer.flush(10) == 0
    event_ids = pipeline.produce(300, seed=6)
    _store(pipeline, store, len(event_ids))
    _assert_exactly_once_and_gapless(store, event_ids)
    backend = store.open()
    try:
        rejected = backend.query_arrow(
            "SELECT hex(original) AS original, error_kind, reason, chain_tenant_id, seq, "
            "source_partition "
            "FROM rejected ORDER BY source_offset"
        ).to_pylist()
    finally:
        backend.close()
    assert [bytes.fromhex(row["original"]) for row in rejected] == garbage
    assert [row["error_kind"] for row in rejected] == [
        "undecodable",
        "unknown_schema",
        "undecodable",
    ]
    assert all(row["reason"] for row in rejected)
    # Chained in the rejection log of the partition they arrived in, and verified with it.
    log = f"authtrail-rejected-{rejected[0]['source_partition']}"
    assert [(row["chain_tenant_id"], row["seq"]) for row in rejected] == [
        (log, 1), (log, 2), (log, 3),
    ]  # fmt: skip
    assert _verify(pipeline, store) == 0
    # The same counts, live, for a Prometheus scrape of the worker.
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        scraped = response.read().decode()
    samples = _samples(scraped)
    assert samples[("authtrail_worker_rejected_total", (("kind", "undecodable"),))] == 2
    assert samples[("authtrail_worker_rejected_total", (("kind", "unknown_schema"),))] == 1
    sequenced = samples[("authtrail_worker_sequenced_total", ())]
    assert sequenced >= len(event_ids)
    assert samples[("authtrail_worker_event_to_sequenced_seconds_count", ())] == sequenced
    assert samples[("authtrail_worker_checkpoint_batch_events_count", ())] > 0
    assert samples[("authtrail_consumer_lag_up", ())] == 1
    lagging = {labels for name, labels in samples if name == "authtrail_consumer_lag"}
    group = f"{pipeline.settings.consumer_group}-sequencer"
    assert {(dict(labels)["group"], dict(labels)["topic"]) for labels in lagging} == {
        (group, pipeline.settings.events_topic)
    }


@pytest.mark.parametrize("store", ["server"], indirect=True)
def test_clickhouse_outage_delays_rows_and_loses_none(pipeline: Pipeline, store: Store) -> None:
    """The sink writes over HTTP; the server goes away mid-stream and comes back."""
    assert store.front is not None and store._owner is not None
    pipeline.start_worker()
    backend = store.open()
    sink = build_sink(pipeline.settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    try:
        first = pipeline.produce(1000, seed=7)
        deadline = time.monotonic() + 60
        while sink.counters.stored_records == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        port = store.front.port
        store.front.stop()  # outage
        second = pipeline.produce(1000, seed=8)
        time.sleep(3)
        stored_during_outage = sink.counters.stored_records
        store.start_front(port)  # back
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if _stored_count(store._owner) >= 2000 and _all_signed(store._owner):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(60)
        backend.close()
    assert stored_during_outage < 2000
    _assert_exactly_once_and_gapless(store, first + second)
    assert _verify(pipeline, store) == 0


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
def test_brute_force_is_locked_and_the_lockout_is_itself_audited(
    pipeline: Pipeline, store: Store
) -> None:
    """35 quick failures for one account and a spray across 12 accounts from one address,
    with Keycloak's default policy: the lock and the spray alert come back through the
    sequencer (chained, signed, stored) and show in the `lockouts` view."""
    worker = pipeline.start_worker()
    start = 1_767_225_600_000_000
    events = [
        new_event("acme", "LOGIN_FAILED", event_id=f"bf-{n}", occurred_at=start + n * 2_000_000,
                  user_name="alice", client_ip="198.51.100.66", service="sso",
                  failure_reason="invalid_credentials")
        for n in range(35)
    ] + [
        new_event("acme", "LOGIN_FAILED", event_id=f"spray-{n}",
                  occurred_at=start + 200_000_000 + n * 1_000_000, user_name=f"victim{n}",
                  client_ip="203.0.113.99", service="vpn", failure_reason="invalid_credentials")
        for n in range(12)
    ] + [  # later traffic moves event time past the allowed lateness
        new_event("acme", "LOGIN", event_id="later", occurred_at=start + 400_000_000,
                  user_name="bob", client_ip="192.0.2.1", service="sso")
    ]  # fmt: skip
    with AuditProducer(
        pipeline.settings.bootstrap_servers or "", pipeline.settings.events_topic
    ) as p:
        for event in events:
            p.send(event)
    _store(pipeline, store, len(events) + 2)
    backend = store.open()
    try:
        lockouts = backend.query_arrow(
            "SELECT event_type, user_name, client_ip, reason, failure_count, distinct_users "
            "FROM lockouts ORDER BY seq"
        ).to_pylist()
    finally:
        backend.close()
    kinds = [(row["event_type"], row["user_name"] or row["client_ip"]) for row in lockouts]
    assert ("ACCOUNT_LOCKED", "alice") in kinds
    assert ("BRUTE_FORCE_SUSPECTED", "203.0.113.99") in kinds
    assert len(kinds) == len(set(kinds)), kinds  # each decision recorded once
    assert _verify(pipeline, store) == 0
    # Input after the decisions read back: no copy of them can come any more, so the
    # worker stops keeping their ids beyond its window (stream/worker/decision_copies.py).
    with AuditProducer(
        pipeline.settings.bootstrap_servers or "", pipeline.settings.events_topic
    ) as p:
        p.send(new_event("acme", "LOGIN", event_id="after", occurred_at=start + 500_000_000))
    log = pipeline.tmp_path / "worker-0.log"
    wait_for_log_text(log, "read past every copy of its decisions", worker, timeout=30)
    forgotten = re.findall(r"forgot (\d+) kept decision ids", log.read_text())
    assert forgotten and sum(map(int, forgotten)) >= 2  # the lock and the spray alert


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
def test_forged_decisions_are_rejected_and_cannot_suppress_a_lockout(
    pipeline: Pipeline, store: Store
) -> None:
    """A producer sends a fake ACCOUNT_LOCKED (service authtrail-lockout) and, ahead of a
    brute force, an event with the id the real lock will get (the rule is public: the
    pure guard predicts it here). Both land in `rejected`; the real lock is chained."""
    pipeline.start_worker()
    start = 1_767_225_600_000_000
    burst = [
        new_event("acme", "LOGIN_FAILED", event_id=f"bf-{n}", occurred_at=start + n * 2_000_000,
                  user_name="alice", client_ip="198.51.100.66", service="sso")
        for n in range(35)
    ] + [  # later traffic moves event time on, so the lock's expiry is decided too
        new_event("acme", "LOGIN", event_id="later", occurred_at=start + 400_000_000,
                  user_name="bob", client_ip="192.0.2.1", service="sso")
    ]  # fmt: skip
    predicting = Guard(PolicySet())  # the worker's policy: Keycloak's defaults
    decided = [d for event in burst for d in predicting.observe(event)]
    (locked_id,) = [d["event_id"] for d in decided if d["event_type"] == "ACCOUNT_LOCKED"]
    forged = [
        new_event("acme", "ACCOUNT_LOCKED", event_id="fake-lock", occurred_at=start,
                  user_name="mallory", service="authtrail-lockout"),
        new_event("acme", "LOGIN", event_id=locked_id, occurred_at=start, user_name="carol",
                  service="sso"),
    ]  # fmt: skip
    with AuditProducer(
        pipeline.settings.bootstrap_servers or "", pipeline.settings.events_topic
    ) as p:
        for event in forged + burst:
            p.send(event)
    _store(pipeline, store, len(burst) + len(decided))
    backend = store.open()
    try:
        rejected = backend.query_arrow(
            "SELECT hex(original) AS original, error_kind FROM rejected ORDER BY source_offset"
        ).to_pylist()
        lockouts = backend.query_arrow(
            "SELECT event_type, user_name, triggering_event_id FROM lockouts ORDER BY seq"
        ).to_pylist()
        chained_lock = backend.query_arrow(
            f"SELECT service, event_type, user_name FROM events WHERE event_id = '{locked_id}'"
        ).to_pylist()
    finally:
        backend.close()
    events = codec(AUTH_EVENT)
    assert [
        (events.decode(bytes.fromhex(row["original"]))["event_id"], row["error_kind"])
        for row in rejected
    ] == [("fake-lock", "reserved_identity"), (locked_id, "reserved_identity")]
    assert chained_lock == [
        {"service": "authtrail-lockout", "event_type": "ACCOUNT_LOCKED", "user_name": "alice"}
    ]
    assert [(row["event_type"], row["user_name"]) for row in lockouts] == [
        (d["event_type"], d["user_name"]) for d in decided
    ]
    assert _verify(pipeline, store) == 0


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
def test_real_openssh_attack_log_through_ingest_and_the_pipeline(
    pipeline: Pipeline,
    store: Store,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """loghub's OpenSSH_2k.log (a real server under attack) via `authtrail ingest sshd`.

    Expected, from the raw lines (see tests/integration/test_sshd_realdata.py for the
    independent counts): the accounts `root` and `admin` get locked (quick repeated
    failures / 30 failures, Keycloak defaults), and the addresses that fail 10 distinct
    accounts within 10 minutes are flagged for spraying.
    """
    from tests.integration.test_sshd_realdata import OPENSSH

    if not OPENSSH.exists():
        pytest.skip(f"real data not present at {OPENSSH}")
    pipeline.start_worker()
    for name, value in pipeline.environment.items():
        if name.startswith("AUTHTRAIL_"):
            monkeypatch.setenv(name, value)
    argv = ["--data-dir", str(pipeline.settings.data_dir), "ingest", "sshd", str(OPENSSH),
            "--tenant", "labsz", "--year", "2015", "--json"]  # fmt: skip
    assert authtrail(argv) == 0
    ingested = json.loads(capsys.readouterr().out)
    assert ingested["acknowledged"] == ingested["events"] > 1900
    _store(pipeline, store, ingested["events"], timeout=180)
    backend = store.open()
    try:
        rows = backend.query_arrow(
            "SELECT event_type, user_name, client_ip FROM lockouts ORDER BY seq"
        ).to_pylist()
    finally:
        backend.close()
    locked = {row["user_name"] for row in rows if row["event_type"] == "ACCOUNT_LOCKED"}
    sprayers = {row["client_ip"] for row in rows if row["event_type"] == "BRUTE_FORCE_SUSPECTED"}
    assert {"root", "admin"} <= locked
    assert {"103.99.0.122", "183.62.140.253", "187.141.143.180"} <= sprayers
    assert _verify(pipeline, store) == 0


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
def test_two_workers_share_partitions_and_survive_losing_one(
    pipeline: Pipeline, store: Store
) -> None:
    """Two workers in one group split the partitions; one is SIGKILLed mid-stream; its
    partitions move to the other, which continues every chain."""
    first = pipeline.start_worker()
    second = pipeline.start_worker()
    ids = pipeline.produce(2000, seed=11)
    time.sleep(2)  # both working
    stop_process_group(first, signal.SIGKILL)
    ids += pipeline.produce(2000, seed=12)
    _store(pipeline, store, len(ids), timeout=180)
    assert second.poll() is None  # the survivor took over, it did not die

    def recovered(log: str) -> set[int]:
        text = (pipeline.tmp_path / log).read_text(errors="replace")
        return {int(n) for n in re.findall(r"partition (\d+): recovered", text)}

    lost = recovered("worker-0.log")
    assert lost, "the killed worker must have owned partitions with traffic"
    assert lost <= recovered("worker-1.log")  # the survivor took over what was lost
    _assert_exactly_once_and_gapless(store, ids)
    assert _verify(pipeline, store) == 0


def _rotate(pipeline: Pipeline) -> tuple[str, str]:
    """`authtrail keys rotate`, then the next worker's settings as it prints them; returns
    the old and the new key's labels."""
    data_dir, keys = str(pipeline.settings.data_dir), pipeline.settings.keys_dir
    assert authtrail(["--data-dir", data_dir, "keys", "rotate"]) == 0
    old, new = (load_signer(keys / name).verifier_key().label
                for name in ("authtrail.key", "authtrail-2.key"))  # fmt: skip
    pipeline.environment["AUTHTRAIL_SIGNING_KEY"] = str(keys / "authtrail-2.key")
    pipeline.environment["AUTHTRAIL_HANDOVER_KEY"] = str(keys / "authtrail.key")
    return old, new


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
def test_key_rotation_through_the_real_worker(
    pipeline: Pipeline, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/INTEGRITY.md "Key rotation", step by step, with the real worker and sink."""
    worker = pipeline.start_worker()
    first_ids = pipeline.produce(400, seed=21)
    _store(pipeline, store, len(first_ids))
    stop_process_group(worker, signal.SIGKILL)  # everything it chained is signed and stored
    data_dir, keys = str(pipeline.settings.data_dir), pipeline.settings.keys_dir
    old, new = _rotate(pipeline)
    worker = pipeline.start_worker()  # recovers history the old key signed (the keyring)
    second_ids = pipeline.produce(400, seed=22)
    _store(pipeline, store, len(first_ids) + len(second_ids))
    _assert_exactly_once_and_gapless(store, first_ids + second_ids)
    assert authtrail(["--data-dir", data_dir, "keys", "retire", old]) == 0
    capsys.readouterr()
    keyring = ["--key", str(keys / "authtrail.keyring")]
    assert authtrail(["--data-dir", data_dir, "verify", "--json", *keyring]) == 0
    report = json.loads(capsys.readouterr().out)
    for tenant in report["tenants"]:
        ranges = tenant["signed_ranges"]
        assert [r["signed_by"] for r in ranges[:2]] == [[old], sorted([old, new])], tenant
        assert [r["signed_by"] for r in ranges[2:]] in ([], [[new]]), tenant
        assert ranges[1]["hand_over"] and ranges[1]["checkpoints"] == 1
    # A worker still configured with the old key alone refuses to continue: it stops
    # after recovering, before it sequences anything.
    stop_process_group(worker, signal.SIGKILL)
    pipeline.environment["AUTHTRAIL_SIGNING_KEY"] = str(keys / "authtrail.key")
    del pipeline.environment["AUTHTRAIL_HANDOVER_KEY"]
    log = pipeline.tmp_path / f"worker-{len(pipeline.workers)}.log"
    stale = start_python_module(
        "authtrail.cli", ["worker", "--short-timeouts"], log, pipeline.environment
    )
    pipeline.workers.append(stale)
    pipeline.produce(20, seed=23)
    wait_for_log_text(log, "not by this worker's key", stale, timeout=90)
    assert stale.wait(timeout=30) == 78


def _newest_notes(backend: ClickHouseBackend) -> dict[str, str]:
    rows = backend.query_arrow(
        "SELECT tenant_id, argMax(note, size) AS note FROM checkpoints GROUP BY tenant_id"
    ).to_pylist()
    return {row["tenant_id"]: row["note"] for row in rows}


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
def test_idle_logs_are_handed_over_without_new_traffic(
    pipeline: Pipeline, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/INTEGRITY.md §11: a worker started with a new key hands every log it owns
    over at once, tenants and rejection logs, with no new input; then the old private
    key can go and the workers sign on without it."""
    worker = pipeline.start_worker()
    producer = Producer({"bootstrap.servers": pipeline.settings.bootstrap_servers})
    producer.produce(pipeline.settings.events_topic, b"\x00not avro", b"acme")
    assert producer.flush(10) == 0
    first_ids = pipeline.produce(200, seed=31)

    def rejection_signed(backend: ClickHouseBackend) -> bool:
        return any(t.startswith("authtrail-rejected-") for t in _newest_notes(backend))

    _store(pipeline, store, len(first_ids), until=rejection_signed)
    stop_process_group(worker, signal.SIGKILL)
    backend = store.open()
    try:
        logs = sorted(_newest_notes(backend))
    finally:
        backend.close()
    tenants = [log for log in logs if not log.startswith("authtrail-rejected-")]
    assert len(tenants) > 1 and len(logs) == len(tenants) + 1

    data_dir, keys = str(pipeline.settings.data_dir), pipeline.settings.keys_dir
    old, new = _rotate(pipeline)
    pipeline.settings = Settings.from_env(pipeline.environment)  # the sink signs with it too
    worker = pipeline.start_worker()  # and nothing is produced

    def all_handed_over(backend: ClickHouseBackend) -> bool:
        notes = _newest_notes(backend)
        return sorted(notes) == logs and all("\u2014 authtrail-2 " in n for n in notes.values())

    _store(pipeline, store, len(first_ids) + len(tenants), until=all_handed_over)
    backend = store.open()
    try:
        assert all_handed_over(backend), _newest_notes(backend)
    finally:
        backend.close()
    worker_log = (pipeline.tmp_path / f"worker-{len(pipeline.workers) - 1}.log").read_text()
    for log in logs:
        assert f"{log} handed over to {new} without new input" in worker_log, log
    stop_process_group(worker, signal.SIGKILL)
    backend = store.open()
    try:
        handovers = backend.query_arrow(
            "SELECT tenant_id, seq, attributes['from_keys'] AS from_keys, "
            "attributes['to_key'] AS to_key FROM events "
            "WHERE event_type_other = 'AUTHTRAIL_KEY_HANDOVER' ORDER BY tenant_id"
        ).to_pylist()
        rejected = backend.query_arrow(
            "SELECT error_kind, length(original) AS n FROM rejected ORDER BY seq"
        ).to_pylist()
    finally:
        backend.close()
    assert [(row["tenant_id"], row["from_keys"], row["to_key"]) for row in handovers] == [
        (tenant, old, new) for tenant in tenants
    ]
    assert rejected[-1] == {"error_kind": "key_handover", "n": 0}

    # The old private key goes; a worker with the new key alone signs on.
    (keys / "authtrail.key").unlink()
    del pipeline.environment["AUTHTRAIL_HANDOVER_KEY"]
    pipeline.start_worker()
    more_ids = pipeline.produce(150, seed=32)
    _store(pipeline, store, len(first_ids) + len(tenants) + len(more_ids))
    capsys.readouterr()
    keyring = ["--key", str(keys / "authtrail.keyring")]
    assert authtrail(["--data-dir", data_dir, "verify", "--json", *keyring]) == 0
    report = json.loads(capsys.readouterr().out)
    reported = {tenant["tenant_id"]: tenant for tenant in report["tenants"]}
    assert sorted(reported) == logs
    for log in logs:
        ranges = reported[log]["signed_ranges"]
        assert [r["signed_by"] for r in ranges[:2]] == [[old], sorted([old, new])], log
        assert ranges[1]["hand_over"] and ranges[1]["first_seq"] == ranges[1]["last_seq"], log
        assert [r["signed_by"] for r in ranges[2:]] in ([], [[new]]), log

    # Tampered: one hand-over stripped of the old key's signature is no hand-over.
    tenant, size = tenants[0], reported[tenants[0]]["signed_ranges"][1]["last_seq"]
    backend = store.open()
    try:
        note = backend.query_arrow(
            "SELECT note FROM checkpoints WHERE tenant_id = {t:String} AND size = {s:UInt64}",
            {"t": tenant, "s": size},
        ).to_pylist()[0]["note"]
        stripped = "".join(
            line for line in note.splitlines(keepends=True)
            if not line.startswith("\u2014 authtrail ")
        )  # fmt: skip
        assert stripped != note
        # What an attacker with write access does: the row out, another one in.
        forged = SignedCheckpoint(
            tenant, Checkpoint.parse(stripped.encode().rpartition(b"\n\n")[0] + b"\n"),
            stripped.encode(),
        )  # fmt: skip
        backend.command(
            f"ALTER TABLE checkpoints DELETE WHERE tenant_id = '{tenant}' AND size = {size}",
            {"mutations_sync": 2},
        )
        row = checkpoint_row(_checkpoint_record(forged), "tamper", 0, 0)
        backend.insert_arrow("checkpoints", to_arrow([row], CHECKPOINTS_SCHEMA))
    finally:
        backend.close()
    capsys.readouterr()
    assert authtrail(["--data-dir", data_dir, "verify", *keyring]) == 1
    assert re.search(rf"{tenant}\b.*seq {size}\b.*missing hand-over", capsys.readouterr().out)


def _samples(scraped: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus scrape as (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }
