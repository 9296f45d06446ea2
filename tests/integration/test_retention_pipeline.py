"""Retention in a running pipeline: real broker, worker subprocess, sink into chdb.

``authtrail retain`` signs the statement, the worker admits it (its note verifies with
the worker's own keys) and chains it, the sink stores it; a second ``retain`` deletes
the records below the cut, and ``verify`` reports them pruned (exit 0). A statement
signed by a stranger is refused by the worker and never reaches the log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from authtrail.cli.main import main as authtrail
from authtrail.producers.sdk import AuditProducer, new_event
from authtrail.stream.core.note import Signer, generate_key_strings
from authtrail.stream.core.retention import RetentionStatement, retention_event, sign_retention
from tests.integration.test_pipeline import Pipeline, Store, _store, _verify
from tests.integration.test_pipeline import broker as broker
from tests.integration.test_pipeline import pipeline as pipeline

pytestmark = pytest.mark.integration

BASE = 1_700_000_000_000_000


@pytest.fixture
def store(pipeline: Pipeline) -> Iterator[Store]:
    opened = Store("embedded", pipeline.settings.data_dir / "clickhouse")
    yield opened
    opened.close()


def _count(store: Store, sql: str) -> int:
    backend = store.open()
    try:
        return int(backend.query_arrow(sql).column(0)[0].as_py())
    finally:
        backend.close()


def test_retain_in_a_running_pipeline(
    pipeline: Pipeline, store: Store, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for name in ("DATA_DIR", "BOOTSTRAP_SERVERS", "EVENTS_TOPIC", "PARTITIONS"):
        monkeypatch.setenv(f"AUTHTRAIL_{name}", pipeline.environment[f"AUTHTRAIL_{name}"])
    pipeline.start_worker()
    servers = pipeline.settings.bootstrap_servers or ""
    with AuditProducer(servers, pipeline.settings.events_topic) as producer:
        for n in range(300):
            event = new_event("acme", "LOGIN", event_id=f"a-{n}", occurred_at=BASE + n * 10**6,
                              user_name=f"user{n}")  # fmt: skip
            producer.send(event)
        for n in range(20):
            producer.send(new_event("globex", "LOGIN", event_id=f"g-{n}", occurred_at=BASE))
        # A stranger's statement: refused at admission, never chained.
        stranger = Signer.parse(generate_key_strings("stranger")[0])
        statement = RetentionStatement("authtrail.local/acme", 256, bytes(32), bytes(32), BASE)
        producer.send(retention_event("acme", sign_retention(statement, stranger), statement))
    _store(pipeline, store, 320)  # the sink builds the tiles when it stops
    pub = str(pipeline.settings.keys_dir / "authtrail.pub")

    # The worker chains the statement; no sink is running, so the deletion waits.
    arguments = ["retain", "--tenant", "acme", "--before", "290", "--key", pub, "--json"]
    assert authtrail([*arguments, "--wait", "1"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["cut"], first["sent"], first["statement_seq"], first["deleted"]) == (
        256, True, None, None,
    )  # fmt: skip
    retention = "SELECT count() FROM events WHERE service = 'authtrail-retention'"
    _store(pipeline, store, 321, until=lambda backend: backend.query_arrow(retention)
           .column(0)[0].as_py() == 1)  # fmt: skip
    assert _verify(pipeline, store) == 0  # deletion pending: still intact
    assert "retention of records 1..256 signed, deletion pending" in capsys.readouterr().out

    assert authtrail(arguments) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["cut"], second["sent"], second["statement_seq"], second["deleted"]) == (
        256, False, 301, 256,
    )  # fmt: skip
    assert _count(store, "SELECT count() FROM events WHERE tenant_id = 'acme'") == 301 - 256
    assert _count(store, retention) == 1  # the stranger's never got in
    capsys.readouterr()
    assert authtrail(["verify", "--key", pub, "--json"]) == 0
    report = {t["tenant_id"]: t for t in json.loads(capsys.readouterr().out)["tenants"]}
    assert (report["acme"]["pruned_size"], report["acme"]["signed_size"]) == (256, 301)
    assert report["globex"]["damage"] is None and report["globex"]["pruned_size"] == 0
