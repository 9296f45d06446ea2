"""Sealed fields in the real ClickHouse engine (chdb): leaf v2 in SQL, erasure, proofs.

The store is built as in test_proofs.py (the real Sequencer chains and signs, rows go
through the sink's row and Arrow path), with acme's events sealed by the worker's
:class:`Sealer` from its 60th event on: a mixed store of v1 and v2 leaves, next to
globex, which has no policy. ``verify``, ``prove`` and ``verify-proof`` run as
subprocesses, as an operator and an auditor would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from authtrail.errors import ConfigurationError
from authtrail.keys import load_signer, write_key_pair
from authtrail.privacy import reveal_table
from authtrail.privacy_keys import DirectoryKeyStore
from authtrail.producers.sdk.sealing import PrivacyPolicies, PrivacyPolicy
from authtrail.sinks.backend import EmbeddedBackend
from authtrail.sinks.rows import (
    CHECKPOINTS_SCHEMA,
    EVENTS_SCHEMA,
    chained_row,
    checkpoint_row,
    to_arrow,
)
from authtrail.sinks.tables import create_statements
from authtrail.stream.core.canonical import MAGIC_V2, canonical_leaf, is_sealed
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.worker.sequencing import _checkpoint_record
from authtrail.stream.worker.shredding import ERASED, UNREADABLE, Sealer

pytestmark = pytest.mark.integration

ORIGIN = "authtrail.local"  # what verify expects by default
SEALED_FROM = 60  # acme's policy starts here: its log holds v1 and v2 leaves


def _event(n: int) -> dict:
    return {
        "event_id": f"ev-{n}",
        "tenant_id": "acme" if n % 2 else "globex",
        "event_type": "LOGIN_FAILED" if n % 3 else "LOGIN",
        "outcome": "FAILURE" if n % 3 else "SUCCESS",
        "occurred_at": 1_700_000_000_000_000 + n * 1000,
        "user_id": f"u{n % 5}" if n % 4 else None,
        "user_name": f"user{n % 5}@example.com",
        "client_ip": f"203.0.113.{n % 7}",
        "user_agent": 'Mozilla/5.0 "quoted" \\ é',
        "attributes": {"k": str(n)} if n % 3 else {},
    }


def _build(root: Path) -> dict[str, Path]:
    key_path, pub_path = write_key_pair(root / "keys", "privacy-test")
    data = root / "data"
    keys = DirectoryKeyStore(data / "privacy")
    sealer = Sealer(PrivacyPolicies(tenants={"acme": PrivacyPolicy()}), keys)
    backend = EmbeddedBackend(data / "clickhouse")
    try:
        for statement in create_statements():
            backend.command(statement)
        sequencer = Sequencer(load_signer(key_path), ORIGIN, batch_size=10, batch_interval=3600)
        rows, checkpoints = [], []
        for offset in range(200):
            event = _event(offset)
            event = sealer.seal(event) if offset >= SEALED_FROM else event
            link = sequencer.offer(
                event["tenant_id"], event["event_id"], canonical_leaf(event), offset
            ).link
            assert link is not None
            record = {"event": event, "seq": link.seq, "prev_hash": link.prev_hash,
                      "hash": link.hash, "leaf_hash": link.leaf_hash}  # fmt: skip
            rows.append(chained_row(record, "test", 0, offset))
        for tenant in ("acme", "globex"):
            signed = sequencer.close_batch(tenant)
            checkpoints.append(checkpoint_row(_checkpoint_record(signed), "test", 0, 0))
        backend.insert_arrow("events", to_arrow(rows, EVENTS_SCHEMA))
        backend.insert_arrow("checkpoints", to_arrow(checkpoints, CHECKPOINTS_SCHEMA))
    finally:
        backend.close()
    return {"data": data, "pub": pub_path, "root": root}


@pytest.fixture
def built(tmp_path: Path) -> dict[str, Path]:
    return _build(tmp_path)


def _authtrail(data: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data), *arguments],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _verify(built: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    return _authtrail(built["data"], "verify", "--key", str(built["pub"]), "--json")


def _rows(data: Path, sql: str) -> list[dict]:
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        table = backend.query_arrow(sql)
        return reveal_table(table, DirectoryKeyStore(data / "privacy")).to_pylist()


def _mutate(data: Path, sql: str) -> None:
    with EmbeddedBackend(data / "clickhouse") as backend:
        backend.command(sql + " SETTINGS mutations_sync = 2")


def test_mixed_store_of_v1_and_v2_leaves_verifies(built: dict[str, Path]) -> None:
    with EmbeddedBackend(built["data"] / "clickhouse", read_only=True) as backend:
        stored = backend.query_arrow(
            "SELECT tenant_id, event_id, user_name, client_ip, user_agent, attributes "
            "FROM events ORDER BY tenant_id, seq"
        ).to_pylist()
    acme = [row for row in stored if row["tenant_id"] == "acme"]
    sealed = [row for row in acme if is_sealed(row["user_name"])]
    assert len(sealed) == len([n for n in range(SEALED_FROM, 200) if n % 2])
    assert all(is_sealed(row["client_ip"]) and is_sealed(row["user_agent"]) for row in sealed)
    assert all("@" not in row["user_name"] for row in sealed)  # no clear text stored
    assert all(len(dict(row["attributes"])["pseudonym.user_name"]) == 64 for row in sealed)
    assert not any(is_sealed(row["user_name"]) for row in stored if row["tenant_id"] == "globex")
    checked = _verify(built)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = {tenant["tenant_id"]: tenant for tenant in json.loads(checked.stdout)["tenants"]}
    assert report["acme"]["damage"] is None and report["acme"]["records"] == 100


def test_reveal_opens_sealed_fields_and_erasure_reads_as_a_marker(built: dict[str, Path]) -> None:
    data = built["data"]
    sql = ("SELECT tenant_id, event_id, user_id, user_name, client_ip FROM events "
           "WHERE tenant_id = 'acme' ORDER BY seq")  # fmt: skip
    before = _rows(data, sql)
    assert all("@example.com" in row["user_name"] for row in before)  # v1 and v2 alike
    erasure = DirectoryKeyStore(data / "privacy").erase("acme", "id:u1")
    assert len(erasure.destroyed) == 1
    again = DirectoryKeyStore(data / "privacy").erase("acme", "id:u1")  # idempotent
    assert again.destroyed == () and again.already == erasure.destroyed

    after = _rows(data, sql)
    for old, new in zip(before, after, strict=True):
        n = int(old["event_id"][3:])
        if n >= SEALED_FROM and old["user_id"] == "u1":
            assert new["user_name"] == ERASED and new["client_ip"] == ERASED
        else:  # other subjects, and u1's events from before the policy, stay as they were
            assert new == old
    checked = _verify(built)  # the erasure changed no stored byte
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_proof_of_an_erased_subjects_event_still_verifies(built: dict[str, Path]) -> None:
    data, pub, out = built["data"], str(built["pub"]), built["root"] / "proof.json"
    DirectoryKeyStore(data / "privacy").erase("acme", "id:u1")
    event_id = next(  # a sealed event of u1 (n % 5 == 1, n % 4 != 0, odd, >= SEALED_FROM)
        f"ev-{n}" for n in range(SEALED_FROM, 200) if n % 2 and n % 5 == 1 and n % 4
    )
    proved = _authtrail(data, "prove", event_id, "--out", str(out))
    assert proved.returncode == 0, proved.stderr
    bundle = json.loads(out.read_text())
    assert is_sealed(bundle["event"]["user_name"])
    assert canonical_leaf(bundle["event"]).startswith(MAGIC_V2)
    checked = _authtrail(data, "verify-proof", str(out), "--key", pub)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_sealed_value_moved_between_events_is_caught_twice(built: dict[str, Path]) -> None:
    """Copying one event's ciphertext onto another: the leaf changes (verify names the
    row) and the value no longer opens (AEAD bound to the event)."""
    data = built["data"]
    _mutate(
        data,
        "ALTER TABLE events UPDATE user_name = (SELECT user_name FROM events WHERE "
        "tenant_id = 'acme' AND seq = 40) WHERE tenant_id = 'acme' AND seq = 41",
    )
    checked = _verify(built)
    assert checked.returncode == 1
    report = {tenant["tenant_id"]: tenant for tenant in json.loads(checked.stdout)["tenants"]}
    assert (report["acme"]["damage"], report["acme"]["seq"]) == ("modified", 41)
    assert report["globex"]["damage"] is None
    rows = _rows(data, "SELECT tenant_id, event_id, user_name FROM events "
                       "WHERE tenant_id = 'acme' AND seq IN (40, 41) ORDER BY seq")  # fmt: skip
    assert "@example.com" in rows[0]["user_name"] and rows[1]["user_name"] == UNREADABLE


def test_sealed_value_moved_between_fields_is_caught(built: dict[str, Path]) -> None:
    data = built["data"]
    _mutate(data, "ALTER TABLE events UPDATE client_ip = user_agent "
                  "WHERE tenant_id = 'acme' AND seq = 50")  # fmt: skip
    report = json.loads(_verify(built).stdout)["tenants"]
    assert [(t["damage"], t["seq"]) for t in report if t["tenant_id"] == "acme"] == [
        ("modified", 50)
    ]
    rows = _rows(data, "SELECT tenant_id, event_id, client_ip FROM events "
                       "WHERE tenant_id = 'acme' AND seq = 50")  # fmt: skip
    assert rows[0]["client_ip"] == UNREADABLE


def test_lost_or_corrupt_key_store_is_a_clear_error(built: dict[str, Path]) -> None:
    data = built["data"]
    sql = "SELECT tenant_id, event_id, user_name FROM events WHERE tenant_id = 'acme'"
    keys = sorted((data / "privacy" / "acme" / "keys").iterdir())
    keys[0].write_text("not a key\n")
    with pytest.raises(ConfigurationError, match="corrupt"):
        _rows(data, sql)
    keys[0].unlink()  # gone, and no erasure destroyed it
    with pytest.raises(ConfigurationError, match="no erasure destroyed it"):
        _rows(data, sql)
    (data / "privacy").rename(data / "privacy-elsewhere")
    with pytest.raises(ConfigurationError, match="no privacy key store for tenant 'acme'"):
        _rows(data, sql)


def test_sealed_value_moved_to_another_tenant_is_caught(built: dict[str, Path]) -> None:
    data = built["data"]
    _mutate(
        data,
        "ALTER TABLE events UPDATE user_name = (SELECT user_name FROM events WHERE "
        "tenant_id = 'acme' AND seq = 60) WHERE tenant_id = 'globex' AND seq = 80",
    )
    report = {t["tenant_id"]: t for t in json.loads(_verify(built).stdout)["tenants"]}
    assert (report["globex"]["damage"], report["globex"]["seq"]) == ("modified", 80)
    assert report["acme"]["damage"] is None
    # globex has no key store: a reader cannot tell this from lost keys, and says both.
    with pytest.raises(
        ConfigurationError, match=r"or a stored value was changed \(run `authtrail verify`\)"
    ):
        _rows(data, "SELECT tenant_id, event_id, user_name FROM events WHERE tenant_id = 'globex'")


def test_sql_reveal_opens_only_with_the_flag(built: dict[str, Path]) -> None:
    query = (
        "SELECT tenant_id, event_id, user_name FROM events WHERE tenant_id = 'acme' AND seq = 45"
    )
    plain = _authtrail(built["data"], "sql", query, "--format", "csv")
    revealed = _authtrail(built["data"], "sql", "--reveal", query, "--format", "csv")
    assert plain.returncode == revealed.returncode == 0, plain.stderr + revealed.stderr
    assert "authtrail-sealed-v1:" in plain.stdout and "@example.com" not in plain.stdout
    assert "@example.com" in revealed.stdout and "authtrail-sealed-v1:" not in revealed.stdout
    unbound = _authtrail(built["data"], "sql", "--reveal", "SELECT user_name FROM events "
                         "WHERE tenant_id = 'acme' AND seq = 45")  # fmt: skip
    assert unbound.returncode == 2
    assert "needs the tenant_id and event_id columns" in unbound.stderr
