"""The sink publishes every checkpoint it stores, and signed tenant directories, outside
the store; on the real local broker and the embedded ClickHouse engine.

The records and checkpoints are made by the real sequencer core (stream/core/sequencer.py) and
written to Kafka by hand, as a worker would (no Faust start-up, so the test stays short).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from authtrail.broker import LocalBroker
from authtrail.keys import load_keyring, load_signer, write_key_pair
from authtrail.schemas import CHAINED_RECORD, CHECKPOINT
from authtrail.settings import Settings
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.publication import all_checkpoints, newest_checkpoints, newest_tenant_directory
from authtrail.sinks.service import build_sink
from authtrail.sinks.sink import Sink
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.checkpoint import Checkpoint
from authtrail.stream.core.note import open_note
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.tenant_directory import open_directory
from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG, codec, topic_specs
from authtrail.topics import ensure_topics
from tests.integration.broker_fixtures import running_broker

pytestmark = pytest.mark.integration

TENANTS = ["acme", "globex", "initech"]
START_MICROS = 1_767_225_600_000_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


@pytest.fixture
def settings(broker: LocalBroker, tmp_path: Path) -> Settings:
    return publication_settings(broker, tmp_path)


def publication_settings(broker: LocalBroker, tmp_path: Path, partitions: int = 1) -> Settings:
    """Settings on fresh topics of ``broker`` (of ``partitions`` each), a signing key and a
    publication in ``tmp_path``."""
    prefix = f"p{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path, bootstrap_servers=broker.bootstrap_servers, partitions=partitions,
        events_topic=f"{prefix}.events", chained_topic=f"{prefix}.chained",
        checkpoints_topic=f"{prefix}.checkpoints", dead_letter_topic=f"{prefix}.dead",
        lockouts_topic=f"{prefix}.lockouts", consumer_group=prefix,
        publication_dir=tmp_path / "published", publication_interval_ms=200,
    )  # fmt: skip
    ensure_topics(broker.bootstrap_servers, topic_specs(settings))
    write_key_pair(settings.keys_dir, "authtrail")
    return settings


class Worker:
    """The worker's output side, by hand: sequences events of every tenant in turn, in
    batches of 7, and writes records and checkpoints to partition 0 as the worker does."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sequencer = Sequencer(load_signer(settings.signing_key_path), settings.log_origin,
                                   batch_size=7, batch_interval=3600)  # fmt: skip
        self.producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
        self.offset = 0

    def write(self, events_per_tenant: int) -> int:
        """Write that many events per tenant and close every batch; return the checkpoints."""
        chained, checkpoints = codec(CHAINED_RECORD), 0
        for _ in range(events_per_tenant * len(TENANTS)):
            tenant_id, offset = TENANTS[self.offset % len(TENANTS)], self.offset
            self.offset += 1
            event = {"event_id": f"e{offset}", "tenant_id": tenant_id, "event_type": "LOGIN",
                     "outcome": "SUCCESS", "occurred_at": START_MICROS + offset}  # fmt: skip
            link = self.sequencer.offer(tenant_id, event["event_id"], canonical_leaf(event),
                                        offset).link  # fmt: skip
            assert link is not None
            value = chained.encode(
                {"event": event, "seq": link.seq, "prev_hash": link.prev_hash, "hash": link.hash,
                 "leaf_hash": link.leaf_hash, "source_partition": 0, "source_offset": offset,
                 "epoch": 0}
            )  # fmt: skip
            self.producer.produce(self.settings.chained_topic, value, tenant_id.encode(), 0)
            checkpoints += self._close(self.sequencer.full_batches())
        checkpoints += self._close(self.sequencer.open_batches())
        assert self.producer.flush(10) == 0
        return checkpoints

    def _close(self, tenants: list[str]) -> int:
        for tenant_id in tenants:
            signed = self.sequencer.close_batch(tenant_id)
            point = signed.checkpoint
            record = {"tenant_id": tenant_id, "size": point.size, "note": signed.note.decode(),
                      "root": point.root, "batch_first_seq": point.batch_first_seq,
                      "batch_last_seq": point.batch_last_seq, "batch_root": point.batch_root,
                      "chain_head": point.chain_hash, "prev_digest": point.prev_digest,
                      "time_micros": point.time_micros, "epoch": 0}  # fmt: skip
            value = codec(CHECKPOINT).encode(record)
            self.producer.produce(self.settings.checkpoints_topic, value, tenant_id.encode(), 0)
        return len(tenants)


def _stored_checkpoints(settings: Settings) -> list[tuple[str, int, bytes]]:
    with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
        rows = backend.query_arrow(
            "SELECT tenant_id, size, note FROM checkpoints ORDER BY tenant_id, size"
        ).to_pylist()
    return [(row["tenant_id"], row["size"], row["note"].encode()) for row in rows]


def _run_sink(settings: Settings, until_checkpoints: int | None) -> Sink:
    """Run a sink on the test's store until it stored that many checkpoints (None: stop
    right after its start-up: backfill, directory, then the final flush)."""
    with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
        sink = build_sink(settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
        stop = threading.Event()
        if until_checkpoints is None:
            stop.set()
        thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 25
        while until_checkpoints is not None and time.monotonic() < deadline:
            if sink.counters.stored_checkpoints >= until_checkpoints:
                break
            time.sleep(0.1)
        stop.set()
        thread.join(20)
        assert not thread.is_alive()
    return sink


def test_every_stored_checkpoint_is_published_with_a_signed_directory_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    expected = Worker(settings).write(events_per_tenant=30)  # 5 batches per tenant
    sink = _run_sink(settings, until_checkpoints=expected)
    stored = _stored_checkpoints(settings)
    assert len(stored) == expected == sink.counters.stored_checkpoints == 15
    assert sink.counters.published_checkpoints == expected
    assert sink.counters.publication_conflicts == 0
    published_dir = settings.publication_dir
    assert published_dir is not None
    published = [
        (tenant_id, size, note)
        for tenant_id in TENANTS
        for size, note in all_checkpoints(published_dir, tenant_id)
    ]
    assert sorted(published) == sorted(stored)  # every stored note, byte for byte

    keyring = load_keyring(list(settings.verifier_key_paths))
    directory_note = newest_tenant_directory(published_dir)
    assert directory_note is not None
    directory = open_directory(directory_note, keyring, settings.log_origin)
    newest = {tenant_id: (size, note) for tenant_id, size, note in stored}  # ascending sizes
    assert dict(directory.entries) == {
        tenant_id: (size, Checkpoint.parse(open_note(note, keyring).text).root)
        for tenant_id, (size, note) in newest.items()
    }
    assert newest_checkpoints(published_dir) == newest
    directories = sorted((published_dir / "tenants").iterdir())

    # A restart on the same store publishes nothing new and finds no conflict.
    with caplog.at_level(logging.ERROR):
        again = _run_sink(settings, until_checkpoints=None)
    assert again.counters.published_checkpoints == 0
    assert again.counters.published_directories == 0
    assert again.counters.publication_conflicts == 0
    assert sorted((published_dir / "tenants").iterdir()) == directories
    assert not [r for r in caplog.records if r.name.startswith("sinks.")], caplog.text


def test_backfill_publishes_an_existing_store_then_conflicts_are_reported(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store filled without a publication is published when one is configured (trusted
    once); a file already at a new checkpoint's place with other bytes is a logged,
    counted conflict that stops nothing."""
    worker = Worker(settings)
    before = worker.write(events_per_tenant=14)  # sizes 7 and 14 of each tenant
    _run_sink(dataclasses.replace(settings, publication_dir=None), until_checkpoints=before)
    assert len(_stored_checkpoints(settings)) == before == 6

    after = worker.write(events_per_tenant=7)  # size 21 of each tenant
    late = tmp_path / "late-publication"
    squatted = late / "checkpoints" / "globex" / f"{21:020d}.note"
    squatted.parent.mkdir(parents=True)
    squatted.write_bytes(b"not the stored checkpoint")
    with caplog.at_level(logging.ERROR, logger="authtrail.sinks.publishing"):
        sink = _run_sink(dataclasses.replace(settings, publication_dir=late), after)
    assert sink.counters.stored_checkpoints == after == 3
    assert sink.counters.published_checkpoints == before + after - 1
    assert sink.counters.publication_conflicts == 1
    assert "tenant 'globex' size 21" in caplog.text and str(squatted) in caplog.text
    assert squatted.read_bytes() == b"not the stored checkpoint"
    published = [
        (tenant_id, size, note)
        for tenant_id in TENANTS
        for size, note in all_checkpoints(late, tenant_id)
        if (tenant_id, size) != ("globex", 21)
    ]
    stored = _stored_checkpoints(settings)
    assert sorted(published) == sorted(row for row in stored if row[:2] != ("globex", 21))
    assert newest_tenant_directory(late) is not None


def test_an_unavailable_publication_holds_the_sink_back_until_it_returns(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """An unmounted publication (here: moved away) is retried like a store outage; once
    back, every checkpoint stored meanwhile is published, none lost."""
    published_dir = settings.publication_dir
    assert published_dir is not None
    away = published_dir.with_name("unmounted")
    worker = Worker(settings)
    with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
        sink = build_sink(settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
        stop = threading.Event()
        thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
        try:
            with caplog.at_level(logging.WARNING, logger="authtrail.sinks.sink"):
                thread.start()
                _wait(lambda: sink.counters.published_directories == 1)  # started
                published_dir.rename(away)
                expected = worker.write(events_per_tenant=7)
                _wait(lambda: "cannot store or publish" in caplog.text)
                stored_during_outage = sink.counters.stored_checkpoints
                assert sink.counters.published_checkpoints == 0
                away.rename(published_dir)
                _wait(lambda: sink.counters.published_checkpoints == expected)
        finally:
            stop.set()
            thread.join(20)
    assert stored_during_outage == expected == 3
    assert sink.counters.publication_conflicts == 0
    assert sorted(newest_checkpoints(published_dir).items()) == [
        (tenant_id, (size, note)) for tenant_id, size, note in _stored_checkpoints(settings)
    ]


def _wait(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
