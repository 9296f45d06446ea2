"""Sealing at the source in a running pipeline: real broker, worker subprocess, sink into
chdb (docs/PRIVACY.md, "Sealing at the source").

A sealing producer (the SDK with ``sealing=``, the worker's key store and policy file)
sends bob's failed logins and alice's logins; a plain producer sends dave's in clear to
the same tenant (mixed input) and a sealed value moved to another event (refused). After
`authtrail erase` of bob, the raw bytes of the input topic, the chained topic and every
table of the store hold none of bob's clear-text values, `verify` exits 0, a proof of one
of his events verifies, and his failed logins still made the lockout.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from authtrail.cli.main import main as authtrail
from authtrail.producers.sdk import AuditProducer, SourceSealing, new_event
from authtrail.stream.core.canonical import is_sealed
from authtrail.stream.worker.recovery import read_partition
from authtrail.stream.worker.shredding import ERASED
from tests.integration.broker_fixtures import read_events
from tests.integration.test_pipeline import Pipeline, Store, _store, _verify
from tests.integration.test_pipeline import broker as broker
from tests.integration.test_pipeline import pipeline as pipeline
from tests.integration.test_privacy_pipeline import _configure, _has, _proved_sealed, _read

pytestmark = pytest.mark.integration

BASE = 1_700_000_000_000_000
BOB = (b"bob.secret@example.com", b"198.51.100.66", b"BobAgent/1.0")


@pytest.fixture
def store(pipeline: Pipeline) -> Iterator[Store]:
    opened = Store("embedded", pipeline.settings.data_dir / "clickhouse")
    yield opened
    opened.close()


def _event(who: str, n: int, event_type: str = "LOGIN_FAILED", **fields: str) -> dict:
    return new_event("acme", event_type, event_id=f"{who}-{n}",
                     occurred_at=BASE + n * 10**7, **fields)  # fmt: skip


def _topic_bytes(pipeline: Pipeline, topic: str) -> bytes:
    servers = pipeline.settings.bootstrap_servers or ""
    return b"".join(
        value
        for partition in range(pipeline.settings.partitions)
        for _, value in read_partition(servers, topic, partition)
    )


def _store_bytes(store: Store) -> bytes:
    """Every row of every table of the store, raw (Arrow IPC: values as stored, unencoded)."""
    backend = store.open()
    try:
        names = (
            backend.query_arrow(
                "SELECT name FROM system.tables WHERE database = currentDatabase() "
                "AND engine NOT LIKE '%View%'"
            )
            .column(0)
            .to_pylist()
        )
        tables = [backend.query_arrow(f"SELECT * FROM `{name}`") for name in names]
    finally:
        backend.close()
    assert {"events", "rejected", "checkpoints"} <= set(names)  # views read these
    out = pa.BufferOutputStream()
    for table in tables:
        with pa.ipc.new_stream(out, table.schema) as writer:
            writer.write_table(table)
    return bytes(out.getvalue().to_pybytes())


def test_a_sealing_producers_subject_is_unreadable_everywhere_after_erasure(
    pipeline: Pipeline,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _configure(pipeline, monkeypatch)  # acme has the default policy, lockout after 3
    pipeline.start_worker()
    servers, topic = pipeline.settings.bootstrap_servers or "", pipeline.settings.events_topic
    sealing = SourceSealing.from_files(
        pipeline.settings.privacy_dir, pipeline.environment["AUTHTRAIL_PRIVACY_POLICY_FILE"]
    )
    bob = [_event("bob", n, user_name=BOB[0].decode(), client_ip=BOB[1].decode(),
                  user_agent=BOB[2].decode()) for n in range(4)]  # fmt: skip
    alice = [_event("alice", n, "LOGIN", user_id="u-alice", user_name="alice@example.com",
                    client_ip="198.51.100.7") for n in range(2)]  # fmt: skip
    with AuditProducer(servers, topic, sealing=sealing) as producer:
        for event in bob + alice:
            producer.send(event)
    moved = sealing.seal(bob[0]) | {"event_id": "bob-moved"}  # bob-0's values, another id
    dave = [_event("dave", n, "LOGIN", user_name="dave@example.com") for n in range(2)]
    with AuditProducer(servers, topic) as producer:  # a producer that does not seal
        for event in [*dave, moved]:
            producer.send(event)

    locked = "SELECT 1 FROM lockouts WHERE event_type = 'ACCOUNT_LOCKED'"
    refused = "SELECT 1 FROM rejected WHERE error_kind = 'invalid_event'"
    _store(pipeline, store, 9, until=lambda b: _has(locked)(b) and _has(refused)(b))
    privacy = pipeline.settings.privacy_dir
    sql = ("SELECT tenant_id, event_id, user_name, client_ip, attributes FROM events "
           "WHERE service IS NULL ORDER BY event_id")  # fmt: skip
    rows = {row["event_id"]: row for row in _read(store, sql, privacy)}
    assert sorted(rows) == ["alice-0", "alice-1", "bob-0", "bob-1", "bob-2", "bob-3",
                            "dave-0", "dave-1"]  # fmt: skip
    assert rows["bob-0"]["user_name"] == "bob.secret@example.com"  # opens with the key store
    assert rows["dave-0"]["user_name"] == "dave@example.com"  # sealed by the worker
    pseudonyms = {dict(row["attributes"])["pseudonym.user_name"] for row in rows.values()}
    assert len(pseudonyms) == 3  # computed from the opened text: one per person
    lockouts = _read(store, "SELECT event_type, failure_count FROM lockouts", privacy)
    assert [tuple(row.values()) for row in lockouts] == [("ACCOUNT_LOCKED", 3)]
    backend = store.open()
    try:
        rejected = backend.query_arrow(
            "SELECT error_kind, reason FROM rejected WHERE tenant_id = 'acme'"
        ).to_pylist()
    finally:
        backend.close()
    assert [row["error_kind"] for row in rejected] == ["invalid_event"]
    assert "does not open" in rejected[0]["reason"]
    raw_input = _topic_bytes(pipeline, topic)
    assert b"dave@example.com" in raw_input  # the plain producer's: clear until retention
    assert b"alice@example.com" not in raw_input  # a sealing producer's never is

    assert authtrail(["erase", "--tenant", "acme", "--subject", "name:bob.secret@example.com"]) == 0
    assert "destroyed key" in capsys.readouterr().out
    erased = "SELECT 1 FROM events WHERE service = 'authtrail-privacy'"
    _store(pipeline, store, 10, until=_has(erased))
    for event_id, row in {r["event_id"]: r for r in _read(store, sql, privacy)}.items():
        if event_id.startswith("bob-"):
            assert row["user_name"] == row["client_ip"] == ERASED

    places = {
        "input topic": _topic_bytes(pipeline, topic),
        "chained topic": _topic_bytes(pipeline, pipeline.settings.chained_topic),
        "dead-letter topic": _topic_bytes(pipeline, pipeline.settings.dead_letter_topic),
        "store": _store_bytes(store),
    }
    for place, data in places.items():
        assert data, place
        assert [value for value in BOB if value in data] == [], place
    lockouts = _read(store, "SELECT event_type, failure_count FROM lockouts", privacy)
    assert ("ACCOUNT_LOCKED", 3) in [tuple(row.values()) for row in lockouts]

    assert _verify(pipeline, store) == 0
    _proved_sealed(pipeline, "bob-2")


def test_ingest_seal_sends_no_clear_text_and_the_worker_chains_it(
    pipeline: Pipeline, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`authtrail ingest sshd --seal`: the CLI seals the policy's fields with the worker's
    policy and key store before sending; the worker accepts the sealed values (not
    `invalid_event`) and they open with the key store."""
    _configure(pipeline, monkeypatch)
    monkeypatch.setenv(
        "AUTHTRAIL_PRIVACY_POLICY_FILE", pipeline.environment["AUTHTRAIL_PRIVACY_POLICY_FILE"]
    )
    pipeline.start_worker()
    log = pipeline.tmp_path / "auth.log"
    log.write_text(
        "Dec  3 10:00:01 bastion sshd[4242]: Failed password for carol.secret from "
        "203.0.113.77 port 50022 ssh2\n"
        "Dec  3 10:00:05 bastion sshd[4242]: Accepted password for carol.secret from "
        "203.0.113.77 port 50022 ssh2\n",
        encoding="utf-8",
    )
    command = ["ingest", "sshd", str(log), "--tenant", "acme", "--year", "2025", "--seal"]
    assert authtrail(command) == 0

    stored = "SELECT 1 FROM events WHERE service = 'sshd' HAVING count() = 2"
    _store(pipeline, store, 2, until=_has(stored))
    sent = read_events(pipeline.settings.bootstrap_servers or "",
                       pipeline.settings.events_topic, pipeline.settings.partitions, 2)  # fmt: skip
    assert len(sent) == 2
    for _, event in sent:  # the policy's fields left the CLI sealed
        assert is_sealed(event["user_name"]) and is_sealed(event["client_ip"]), event
    sql = ("SELECT tenant_id, event_id, user_name, client_ip FROM events "
           "WHERE service = 'sshd' ORDER BY seq")  # fmt: skip
    rows = _read(store, sql, pipeline.settings.privacy_dir)
    assert [(row["user_name"], row["client_ip"]) for row in rows] == [
        ("carol.secret", "203.0.113.77")
    ] * 2
    backend = store.open()
    try:
        sealed = backend.query_arrow("SELECT user_name FROM events WHERE service = 'sshd'")
        refused = backend.query_arrow("SELECT count() FROM rejected").column(0)[0].as_py()
    finally:
        backend.close()
    assert all(is_sealed(value) for value in sealed.column(0).to_pylist())
    assert refused == 0


def test_ingest_seal_without_a_policy_is_refused_before_sending(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("DATA_DIR", "BOOTSTRAP_SERVERS", "EVENTS_TOPIC", "PARTITIONS"):
        monkeypatch.setenv(f"AUTHTRAIL_{name}", pipeline.environment[f"AUTHTRAIL_{name}"])
    monkeypatch.delenv("AUTHTRAIL_PRIVACY_POLICY_FILE", raising=False)
    log = pipeline.tmp_path / "auth.log"
    log.write_text("Dec  3 10:00:01 h sshd[1]: Failed password for x from 192.0.2.1 port 1 ssh2\n")
    assert authtrail(["ingest", "sshd", str(log), "--tenant", "acme", "--seal"]) == 2
    assert "AUTHTRAIL_PRIVACY_POLICY_FILE" in capsys.readouterr().err
    assert _topic_bytes(pipeline, pipeline.settings.events_topic) == b""
