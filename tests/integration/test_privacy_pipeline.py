"""Erasure in a running pipeline: real broker, worker subprocess, sink into chdb.

acme has a privacy policy; globex has none. After `authtrail erase`, bob's sealed fields
and sealed attributes (the syslog line in `raw`) read [erased] in the store and hold only
ciphertext in the chained topic, `verify` exits 0, a proof of his event still verifies,
and the lockout his failures caused (counted by pseudonym, not by name) is still in the
log. The input topic still holds his clear text
until its retention: the documented limit of sealing in the worker (docs/PRIVACY.md).
Before the real erasure, a plain producer forges erasure records: they end in the
rejection log, never in acme's chain.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authtrail.cli.main import main as authtrail
from authtrail.privacy import reveal_table
from authtrail.privacy_keys import DirectoryKeyStore
from authtrail.producers.sdk import AuditProducer, new_event
from authtrail.producers.sdk.sealed_values import sealed_key_id
from authtrail.schemas import CHAINED_BATCH
from authtrail.sinks.backend import ClickHouseBackend
from authtrail.stream.core.canonical import is_sealed
from authtrail.stream.worker.app import codec
from authtrail.stream.worker.chained_batch import is_batch
from authtrail.stream.worker.recovery import read_partition
from authtrail.stream.worker.shredding import ERASED, erasure_event
from tests.integration.test_pipeline import Pipeline, Store, _store, _verify
from tests.integration.test_pipeline import broker as broker
from tests.integration.test_pipeline import pipeline as pipeline

pytestmark = pytest.mark.integration

BASE = 1_700_000_000_000_000
BOB_LINE = "Failed password for bob.secret@example.com from 198.51.100.66 port 22 ssh2"


@pytest.fixture
def store(pipeline: Pipeline) -> Iterator[Store]:
    opened = Store("embedded", pipeline.settings.data_dir / "clickhouse")
    yield opened
    opened.close()


def _configure(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = pipeline.tmp_path / "privacy.json"
    policy.write_text(json.dumps({"tenants": {"acme": {}}}))
    lockout = pipeline.tmp_path / "lockout.json"
    lockout.write_text(json.dumps({"lockout": {"max_login_failures": 3,
                                               "quick_login_check_milliseconds": 0}}))  # fmt: skip
    pipeline.environment["AUTHTRAIL_PRIVACY_POLICY_FILE"] = str(policy)
    pipeline.environment["AUTHTRAIL_LOCKOUT_POLICY_FILE"] = str(lockout)
    for name in ("DATA_DIR", "BOOTSTRAP_SERVERS", "EVENTS_TOPIC", "DEAD_LETTER_TOPIC",
                 "PARTITIONS"):  # fmt: skip
        monkeypatch.setenv(f"AUTHTRAIL_{name}", pipeline.environment[f"AUTHTRAIL_{name}"])


def _produce(pipeline: Pipeline) -> None:
    events = (
        [
            new_event(
                "acme",
                "LOGIN_FAILED",
                event_id=f"bob-{n}",
                occurred_at=BASE + n * 10**7,
                user_name="bob.secret@example.com",
                client_ip="198.51.100.66",
                user_agent="BobAgent/1.0",
                # the line, as the sshd adapter keeps it: an attribute sealed by default
                attributes={"raw": BOB_LINE, "program": "sshd"},
            )
            for n in range(4)
        ]
        + [
            new_event(
                "acme",
                "LOGIN",
                event_id=f"alice-{n}",
                occurred_at=BASE + n * 10**7,
                user_id="u-alice",
                user_name="alice.secret@example.com",
                client_ip="198.51.100.7",
            )
            for n in range(3)
        ]
        + [
            new_event(
                "globex",
                "LOGIN",
                event_id=f"carol-{n}",
                occurred_at=BASE + n * 10**7,
                user_name="carol@example.com",
            )
            for n in range(2)
        ]
    )
    servers = pipeline.settings.bootstrap_servers or ""
    with AuditProducer(servers, pipeline.settings.events_topic) as producer:
        for event in events:
            producer.send(event)


def _has(sql: str) -> object:
    return lambda backend: backend.query_arrow(sql).num_rows > 0


def _chained_bytes(pipeline: Pipeline) -> list[bytes]:
    servers, batches = pipeline.settings.bootstrap_servers or "", codec(CHAINED_BATCH)
    return [
        value
        for partition in range(pipeline.settings.partitions)
        for _, value in read_partition(servers, pipeline.settings.chained_topic, partition)
        if is_batch(value, batches)
    ]


def _read(store: Store, sql: str, reveal_with: Path) -> list[dict]:
    backend: ClickHouseBackend = store.open()
    try:
        return reveal_table(backend.query_arrow(sql), DirectoryKeyStore(reveal_with)).to_pylist()
    finally:
        backend.close()


def _proved_sealed(pipeline: Pipeline, event_id: str) -> None:
    """`prove EVENT_ID` writes a bundle whose event holds the sealed text, and
    `verify-proof` accepts it with the log's public key."""
    data, out = pipeline.settings.data_dir, pipeline.tmp_path / f"{event_id}.json"
    run = [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data)]
    proved = subprocess.run([*run, "prove", event_id, "--out", str(out)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proved.returncode == 0, proved.stderr
    assert is_sealed(json.loads(out.read_text())["event"]["user_name"])
    pub = str(pipeline.settings.keys_dir / "authtrail.pub")
    checked = subprocess.run([*run, "verify-proof", str(out), "--key", pub],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_erase_a_subject_in_a_running_pipeline(
    pipeline: Pipeline,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _configure(pipeline, monkeypatch)
    pipeline.start_worker()
    _produce(pipeline)
    locked = "SELECT 1 FROM lockouts WHERE event_type = 'ACCOUNT_LOCKED'"
    _store(pipeline, store, 10, until=_has(locked))  # 9 events and bob's lockout
    privacy = pipeline.settings.privacy_dir
    sql = ("SELECT tenant_id, event_id, user_name, client_ip, user_agent FROM events "
           "WHERE event_id LIKE 'bob-%' OR event_id LIKE 'alice-%' ORDER BY event_id")  # fmt: skip
    before = _read(store, sql, privacy)
    assert {row["user_name"] for row in before} == {
        "alice.secret@example.com", "bob.secret@example.com"
    }  # fmt: skip
    raw_sql = ("SELECT tenant_id, event_id, attributes, attributes['raw'] AS `attributes.raw` "
               "FROM events WHERE event_id LIKE 'bob-%' ORDER BY event_id")  # fmt: skip
    for row in _read(store, raw_sql, privacy):
        assert "bob.secret@example.com from 198.51.100.66" in row["attributes.raw"]
        assert dict(row["attributes"])["raw"] == row["attributes.raw"]
        assert dict(row["attributes"])["program"] == "sshd"
    # The lockout was decided on the pseudonym: the detector never saw bob's name.
    lockouts = _read(store, "SELECT event_type, failure_count FROM lockouts", privacy)
    assert [tuple(row.values()) for row in lockouts] == [("ACCOUNT_LOCKED", 3)]
    # The worker sealed before chaining: the chained topic holds no clear personal field.
    chained = b"".join(_chained_bytes(pipeline))
    assert b"bob.secret" not in chained and b"BobAgent" not in chained
    assert b"198.51.100.66" not in chained and b"carol@example.com" in chained

    # Anyone who may produce to the events topic claims bob was erased: his key is live,
    # so the worker refuses the claim, as it does a look-alike service name.
    backend = store.open()
    try:
        sealed = backend.query_arrow("SELECT user_name FROM events WHERE event_id = 'bob-0'")
    finally:
        backend.close()
    bob_key = sealed_key_id(sealed.column(0)[0].as_py())
    forged = [
        erasure_event("acme", "ab" * 32, [bob_key], BASE + 10**9),
        new_event("acme", "OTHER", event_id="forged-1", occurred_at=BASE + 10**9,
                  service="Authtrail-Privacy ", event_type_other="AUTHTRAIL_SUBJECT_ERASED"),
    ]  # fmt: skip
    with AuditProducer(pipeline.settings.bootstrap_servers or "",
                       pipeline.settings.events_topic) as producer:  # fmt: skip
        for event in forged:
            producer.send(event)
    refused = ("SELECT count() FROM rejected WHERE tenant_id = 'acme' "
               "AND error_kind = 'reserved_identity'")  # fmt: skip
    _store(pipeline, store, 10, until=lambda b: b.query_arrow(refused).column(0)[0].as_py() >= 2)
    backend = store.open()
    try:
        rejected = backend.query_arrow(
            "SELECT reason, chain_tenant_id FROM rejected WHERE tenant_id = 'acme' "
            "ORDER BY source_offset"
        ).to_pylist()
        privacy_rows = (
            backend.query_arrow("SELECT count() FROM events WHERE service ILIKE '%privacy%'")
            .column(0)[0]
            .as_py()
        )
    finally:
        backend.close()
    assert privacy_rows == 0  # nothing of the forgeries joined acme's chain
    reasons = sorted(row["reason"] for row in rejected)
    assert any(f"has not destroyed key {bob_key}" in reason for reason in reasons), reasons
    assert any("not a well-formed erasure record" in reason for reason in reasons), reasons
    assert all(row["chain_tenant_id"].startswith("authtrail-rejected-") for row in rejected)
    # The forgery dropped nothing: bob's key still opens his fields.
    assert {row["user_name"] for row in _read(store, sql, privacy)} == {
        "alice.secret@example.com", "bob.secret@example.com"
    }  # fmt: skip

    assert authtrail(["erase", "--tenant", "acme", "--subject", "name:bob.secret@example.com"]) == 0
    said = capsys.readouterr().out
    assert "destroyed key" in said
    # How long the clear text sent before sealing stays in the topics: 7 days + a segment.
    topics = f"{pipeline.settings.events_topic} and {pipeline.settings.dead_letter_topic}"
    assert f"remains in clear text in {topics} for up to 8 days after it was sent" in said
    assert authtrail(["erase", "--tenant", "acme", "--subject",
                      "name:bob.secret@example.com", "--json"]) == 0  # fmt: skip
    again = json.loads(capsys.readouterr().out)
    assert again["destroyed"] == [] and len(again["already_erased"]) == 1
    assert again["clear_text_in_topics"] == {
        "topics": [pipeline.settings.events_topic, pipeline.settings.dead_letter_topic],
        "retention_ms": 7 * 86_400_000, "at_most_ms": 8 * 86_400_000,
    }  # fmt: skip

    erased = "SELECT 1 FROM events WHERE service = 'authtrail-privacy'"
    _store(pipeline, store, 11, until=_has(erased))
    after = _read(store, sql, privacy)
    for row in after:
        if row["event_id"].startswith("bob-"):
            assert row["user_name"] == row["client_ip"] == row["user_agent"] == ERASED
        else:
            assert row["user_name"] == "alice.secret@example.com"
    for row in _read(store, raw_sql, privacy):
        assert row["attributes.raw"] == dict(row["attributes"])["raw"] == ERASED
    record = _read(store, "SELECT tenant_id, event_id, attributes FROM events "
                          "WHERE service = 'authtrail-privacy'", privacy)  # fmt: skip
    assert len(record) == 1  # the re-sent record was a duplicate
    assert dict(record[0]["attributes"])["key_ids"] == again["already_erased"][0]
    assert "bob" not in json.dumps(record)  # the record names a pseudonym, not the subject
    # Still stored, still counted: the lockout history outlives the name (the erasure
    # record moved acme's event time on, so the lock has expired since).
    lockouts = _read(store, "SELECT event_type, failure_count FROM lockouts", privacy)
    assert ("ACCOUNT_LOCKED", 3) in [tuple(row.values()) for row in lockouts]

    assert _verify(pipeline, store) == 0
    _proved_sealed(pipeline, "bob-1")

    # What erasure does not reach: the input topic, until its retention (docs/PRIVACY.md).
    servers = pipeline.settings.bootstrap_servers or ""
    raw = b"".join(
        value
        for partition in range(pipeline.settings.partitions)
        for _, value in read_partition(servers, pipeline.settings.events_topic, partition)
    )
    assert b"bob.secret@example.com" in raw


def test_hash_gives_the_stored_pseudonym(
    pipeline: Pipeline,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _configure(pipeline, monkeypatch)
    pipeline.start_worker()
    _produce(pipeline)
    _store(pipeline, store, 9)
    assert authtrail(["hash", "--tenant", "acme", "198.51.100.66"]) == 0
    hashed = capsys.readouterr().out.strip()
    where = f"attributes['pseudonym.client_ip'] = '{hashed}'"
    rows = _read(store, f"SELECT tenant_id, event_id FROM events WHERE {where}",
                 pipeline.settings.privacy_dir)  # fmt: skip
    assert sorted(row["event_id"] for row in rows) == [f"bob-{n}" for n in range(4)]
    assert authtrail(["hash", "--tenant", "globex", "x"]) == 2  # no policy, no key
    assert "has no pseudonym key" in capsys.readouterr().err


def test_unknown_subject_form_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert authtrail(["erase", "--tenant", "acme", "--subject", "bob"]) == 2
    assert "must be id:<user_id>, name:<user_name> or unattributed" in capsys.readouterr().err
