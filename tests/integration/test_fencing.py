"""A worker that lost its partition but keeps writing (a "zombie") is fenced off.

Played out on the real broker with the real recovery and sink code: owner A claims the
partition and writes; B takes over (recovers, claims a higher epoch); A, unaware, writes
seq 4 again with other content; B writes its own seq 4. A third recovery and the sink
must both follow B and ignore A's late write — no fork reaches a chain or the store.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from authtrail.broker import LocalBroker
from authtrail.settings import Settings
from authtrail.topics import ensure_topics
from schemas import CHAINED_RECORD, CHECKPOINT, CLAIM
from sinks.embedded import EmbeddedBackend
from sinks.service import build_sink
from stream.app import SHORT_CONSUMER_CONFIG, codec, topic_specs
from stream.canonical import canonical_leaf
from stream.note import Signer, generate_key_strings, make_keyring
from stream.recovery import recover
from stream.sequencer import Sequencer
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

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings, self.name = settings, name
        self.sequencer = Sequencer(SIGNER, settings.log_origin, batch_size=1000,
                                   batch_interval=3600)  # fmt: skip
        self.producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
        self.epoch = 0

    def take_over(self) -> None:
        result = recover(
            self.sequencer, bootstrap_servers=self.settings.bootstrap_servers or "",
            partition=0, chained_topic=self.settings.chained_topic,
            checkpoints_topic=self.settings.checkpoints_topic,
            chained_codec=codec(CHAINED_RECORD), checkpoint_codec=codec(CHECKPOINT),
            claim_codec=codec(CLAIM), keyring=KEYRING, log_origin=self.settings.log_origin,
            writer=self.name,
        )  # fmt: skip
        self.epoch = result.epoch

    def write(self, event: dict, source_offset: int) -> None:
        link = self.sequencer.offer("acme", event["event_id"], canonical_leaf(event),
                                    source_offset).link  # fmt: skip
        assert link is not None
        value = codec(CHAINED_RECORD).encode(
            {"event": event, "seq": link.seq, "prev_hash": link.prev_hash, "hash": link.hash,
             "leaf_hash": link.leaf_hash, "source_partition": 0,
             "source_offset": source_offset, "epoch": self.epoch}
        )  # fmt: skip
        self.producer.produce(self.settings.chained_topic, value, b"acme", partition=0)
        assert self.producer.flush(10) == 0


def test_a_zombie_write_after_a_takeover_is_ignored(broker: LocalBroker, tmp_path: Path) -> None:
    prefix = f"f{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path, bootstrap_servers=broker.bootstrap_servers, partitions=1,
        events_topic=f"{prefix}.events", chained_topic=f"{prefix}.chained",
        checkpoints_topic=f"{prefix}.checkpoints", dead_letter_topic=f"{prefix}.dead",
        lockouts_topic=f"{prefix}.lockouts", consumer_group=prefix,
    )  # fmt: skip
    ensure_topics(broker.bootstrap_servers, topic_specs(settings))

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
