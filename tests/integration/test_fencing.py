"""A worker that lost its partition but keeps writing (a "zombie") is fenced off.

Played out on the real broker with the real recovery and sink code: owner A claims the
partition and writes; B takes over (recovers, claims a higher epoch); A, unaware, writes
seq 4 again with other content; B writes its own seq 4. A third recovery and the sink
must both follow B and ignore A's late write — no fork reaches a chain or the store.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer

from authtrail.broker import LocalBroker
from authtrail.schemas import CHAINED_RECORD, CHECKPOINT, CLAIM, SNAPSHOT
from authtrail.settings import Settings
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.service import build_sink
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.note import Signer, generate_key_strings, make_keyring
from authtrail.stream.core.sequencer import DUPLICATE, Sequencer
from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG, codec, topic_specs
from authtrail.stream.worker.recovery import (
    Recovery,
    SnapshotPosition,
    Topics,
    recover,
    snapshot_messages,
    snapshot_part_key,
)
from authtrail.topics import ensure_topics
from tests.integration.broker_fixtures import running_broker

pytestmark = pytest.mark.integration

SIGNER = Signer.parse(generate_key_strings("fencing-test")[0])
KEYRING = make_keyring([SIGNER.verifier_key()])


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


def _event(n: int, variant: str = "") -> dict:
    return {"event_id": f"e{n}{variant}", "tenant_id": "acme", "event_type": "LOGIN",
            "outcome": "SUCCESS", "occurred_at": 1_767_225_600_000_000 + n,
            "user_name": f"user{n}{variant}"}  # fmt: skip


class Owner:
    """A worker's output side for partition 0, driven by hand."""

    def __init__(self, settings: Settings, name: str, *, snapshots: bool = True) -> None:
        self.settings, self.name = settings, name
        self.sequencer = Sequencer(SIGNER, settings.log_origin, batch_size=1000,
                                   batch_interval=3600)  # fmt: skip
        self.producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
        self.topics = Topics(
            chained=settings.chained_topic, checkpoints=settings.checkpoints_topic,
            snapshots=settings.snapshots_topic_name if snapshots else None,
            chained_codec=codec(CHAINED_RECORD), checkpoint_codec=codec(CHECKPOINT),
            claim_codec=codec(CLAIM), snapshot_codec=codec(SNAPSHOT),
        )  # fmt: skip
        self.epoch = 0
        self.recovery: Recovery | None = None
        self.chained_next = 0  # after the last record this owner wrote

    def take_over(self) -> None:
        self.recovery = recover(
            self.sequencer, bootstrap_servers=self.settings.bootstrap_servers or "",
            partition=0, topics=self.topics, keyring=KEYRING,
            log_origin=self.settings.log_origin, writer=self.name,
        )  # fmt: skip
        self.epoch = self.recovery.epoch

    def write(self, event: dict, source_offset: int) -> None:
        link = self.sequencer.offer("acme", event["event_id"], canonical_leaf(event),
                                    source_offset).link  # fmt: skip
        assert link is not None
        value = codec(CHAINED_RECORD).encode(
            {"event": event, "seq": link.seq, "prev_hash": link.prev_hash, "hash": link.hash,
             "leaf_hash": link.leaf_hash, "source_partition": 0,
             "source_offset": source_offset, "epoch": self.epoch}
        )  # fmt: skip
        self.chained_next = self._produce(self.settings.chained_topic, value) + 1

    def snapshot(self, state: bytes | None = None) -> SnapshotPosition:
        """Publish this owner's state as of its last write (``state``: other bytes)."""
        position = SnapshotPosition(self.chained_next, 1, self.chained_next)
        values = snapshot_messages(self.sequencer, None, partition=0, epoch=self.epoch,
                                   position=position, snapshot_codec=codec(SNAPSHOT))  # fmt: skip
        if state is not None:
            record = {**codec(SNAPSHOT).decode(values[0]), "state": state, "parts": 1}
            values = [codec(SNAPSHOT).encode(record)]
        for index, value in enumerate(values):
            self._produce(self.settings.snapshots_topic_name, value, snapshot_part_key(index))
        # A recovery that loads it reports the size of its state, joined from the parts.
        size = sum(len(codec(SNAPSHOT).decode(value)["state"]) for value in values)
        return dataclasses.replace(position, state_bytes=size)

    def _produce(self, topic: str, value: bytes, key: bytes = b"acme") -> int:
        offsets: list[int] = []

        def delivered(error: object, message: Message) -> None:
            offsets.append(message.offset())

        self.producer.produce(topic, value, key, partition=0, on_delivery=delivered)
        assert self.producer.flush(10) == 0 and offsets
        return offsets[0]


def _settings(broker: LocalBroker, tmp_path: Path) -> Settings:
    prefix = f"f{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path, bootstrap_servers=broker.bootstrap_servers, partitions=1,
        events_topic=f"{prefix}.events", chained_topic=f"{prefix}.chained",
        checkpoints_topic=f"{prefix}.checkpoints", dead_letter_topic=f"{prefix}.dead",
        lockouts_topic=f"{prefix}.lockouts", consumer_group=prefix,
    )  # fmt: skip
    ensure_topics(broker.bootstrap_servers, topic_specs(settings))
    return settings


def test_a_zombie_write_after_a_takeover_is_ignored(broker: LocalBroker, tmp_path: Path) -> None:
    settings = _settings(broker, tmp_path)
    a = Owner(settings, "worker-a")
    a.take_over()
    for n in range(3):
        a.write(_event(n), n)
    b = Owner(settings, "worker-b")
    b.take_over()
    assert (a.epoch, b.epoch) == (1, 2)
    assert b.sequencer.tenants["acme"].head.seq == 3
    a.write(_event(3, "-zombie"), 3)  # A never noticed it lost the partition
    b.write(_event(3), 3)

    c = Owner(settings, "worker-c")
    c.take_over()
    assert c.epoch == 3
    assert c.sequencer.tenants["acme"].head == b.sequencer.tenants["acme"].head

    backend = EmbeddedBackend(tmp_path / "clickhouse")
    sink = build_sink(settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while sink.counters.stored_records < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    stop.set()
    thread.join(30)
    rows = backend.query_arrow("SELECT seq, event_id, epoch FROM events ORDER BY seq").to_pylist()
    backend.close()
    assert [(r["seq"], r["event_id"], r["epoch"]) for r in rows] == [
        (1, "e0", 1),
        (2, "e1", 1),
        (3, "e2", 1),
        (4, "e3", 2),
    ]
    assert sink.counters.fenced == 1


def _head(owner: Owner) -> tuple:
    log = owner.sequencer.tenants["acme"]
    return log.head, log.tree.root(), owner.sequencer.source_offset


def test_recovery_starts_from_the_newest_snapshot_it_admits(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """A snapshot spares a restart the replay of everything before it; a zombie's snapshot
    taken after a takeover, and an unreadable one, are never used."""
    settings = _settings(broker, tmp_path)
    a = Owner(settings, "worker-a")
    a.take_over()
    assert a.recovery is not None and a.recovery.snapshot is None
    for n in range(10):
        a.write(_event(n), n)
    first = a.snapshot()
    for n in range(10, 15):
        a.write(_event(n), n)

    b = Owner(settings, "worker-b")
    b.take_over()
    assert b.recovery is not None
    assert (b.recovery.snapshot, b.recovery.replayed) == (first, 5)
    full = Owner(settings, "full-replay", snapshots=False)  # takes over from B
    full.take_over()
    assert full.recovery is not None and full.recovery.replayed == 15
    assert _head(b) == _head(full) == _head(a)
    # The duplicate window came with the snapshot.
    assert b.sequencer.offer("acme", "e3", canonical_leaf(_event(3)), 100).outcome == DUPLICATE

    a.write(_event(15, "-zombie"), 15)  # fenced: A lost the partition long ago
    a.snapshot()  # taken after later claims: must never be loaded
    full.write(_event(15), 15)
    c = Owner(settings, "worker-c")
    c.take_over()
    assert c.recovery is not None and c.recovery.snapshot == first
    assert _head(c) == _head(full)

    c.write(_event(16), 16)
    c.snapshot(state=b"damaged")  # admitted, unreadable: recovery replays everything
    d = Owner(settings, "worker-d")
    d.take_over()
    assert d.recovery is not None and d.recovery.snapshot is None
    assert d.recovery.replayed == 17
    assert _head(d) == _head(c)

    d.write(_event(17), 17)
    d.snapshot()
    e = Owner(settings, "worker-e")
    e.take_over()
    assert e.recovery is not None and e.recovery.snapshot is not None
    assert e.recovery.replayed == 0 and _head(e) == _head(d)
    # The window D rebuilt by a full replay came with its snapshot.
    assert e.sequencer.offer("acme", "e12", canonical_leaf(_event(12)), 200).outcome == DUPLICATE
    assert e.sequencer.offer("acme", "e3", canonical_leaf(_event(3)), 201).outcome == DUPLICATE
    assert e.sequencer.offer("acme", "new", canonical_leaf(_event(99)), 202).outcome != DUPLICATE
