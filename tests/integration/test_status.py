"""``authtrail status``: consumer lag per partition against the real local broker.

Offsets are committed by hand for the pipeline's own group names, so every lag is known:
end offset (records produced) minus committed offset.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from authtrail.broker import LocalBroker, free_loopback_port
from authtrail.cli import main as cli
from authtrail.lag import consumer_lags
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.tables import create_statements
from authtrail.topics import TopicSpec, ensure_topics
from tests.integration.broker_fixtures import running_broker

pytestmark = pytest.mark.integration

TOPICS = ("authtrail.events", "authtrail.chained", "authtrail.checkpoints")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


@pytest.fixture(scope="module")
def data_dir(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    servers = broker.bootstrap_servers
    ensure_topics(servers, [TopicSpec(name, 2) for name in TOPICS])
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 50})
    # events: 30 records in partition 0, 5 in 1; chained: 7 in partition 0. Many records
    # per batch: tansu's ListOffsets would report 1 for such a partition (authtrail/lag.py).
    for partition, count in ((0, 30), (1, 5)):
        for _ in range(count):
            producer.produce("authtrail.events", b"x", partition=partition)
    for _ in range(7):
        producer.produce("authtrail.chained", b"y", partition=0)
    assert producer.flush(10) == 0
    for group, topic, offset in (("authtrail-sequencer", "authtrail.events", 12),
                                 ("authtrail-sink", "authtrail.chained", 7)):  # fmt: skip
        consumer = Consumer({"bootstrap.servers": servers, "group.id": group})
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
        consumer.close()
    directory = tmp_path_factory.mktemp("data")
    with EmbeddedBackend(directory / "clickhouse") as store:
        for statement in create_statements():
            store.command(statement)
    return directory


EXPECTED_LAG = [
    # group, topic, partition, committed, end offset, lag
    ("authtrail-sequencer", "authtrail.events", 0, 12, 30, 18),
    ("authtrail-sequencer", "authtrail.events", 1, None, 5, 5),
    ("authtrail-sink", "authtrail.chained", 0, 7, 7, 0),
    ("authtrail-sink", "authtrail.chained", 1, None, 0, 0),
    ("authtrail-sink", "authtrail.checkpoints", 0, None, 0, 0),
    ("authtrail-sink", "authtrail.checkpoints", 1, None, 0, 0),
]


def _status(data_dir: Path, *arguments: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["--data-dir", str(data_dir), "status", *arguments])
    return code, out.getvalue()


def test_status_json_shows_lag_per_partition(broker: LocalBroker, data_dir: Path) -> None:
    code, out = _status(data_dir, "--json", "--bootstrap-servers", broker.bootstrap_servers)
    report = json.loads(out)
    assert code == 0 and report["lag_error"] is None
    assert [tuple(item.values()) for item in report["lag"]] == EXPECTED_LAG
    assert report["summary"]["lag"] == {"authtrail-sequencer": 23, "authtrail-sink": 0}
    assert report["tenants"] == [] and report["summary"]["unsigned_records"] == 0


def test_status_table_shows_lag(broker: LocalBroker, data_dir: Path) -> None:
    code, out = _status(data_dir, "--bootstrap-servers", broker.bootstrap_servers)
    assert code == 0
    lines = out.split("consumer lag (records waiting), per partition:\n")[1].splitlines()
    assert lines[2].split() == ["authtrail-sequencer", "authtrail.events", "0", "12", "30", "18"]
    assert lines[3].split() == ["authtrail-sequencer", "authtrail.events", "1", "NULL", "5", "5"]


def test_lag_api_names_a_missing_topic(broker: LocalBroker, data_dir: Path) -> None:
    with pytest.raises(Exception, match="'nope' does not exist"):
        consumer_lags(broker.bootstrap_servers, {"g": ["nope"]})


def test_status_without_kafka_reports_lag_unavailable(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTHTRAIL_BOOTSTRAP_SERVERS", raising=False)  # and no `up` runs
    code, out = _status(data_dir, "--json")
    report = json.loads(out)
    assert code == 0 and report["lag"] is None
    assert "no Kafka known" in report["lag_error"]
    port = free_loopback_port()  # nothing listens there
    code, out = _status(data_dir, "--json", "--bootstrap-servers", f"127.0.0.1:{port}")
    assert code == 0 and "cannot reach Kafka" in json.loads(out)["lag_error"]
