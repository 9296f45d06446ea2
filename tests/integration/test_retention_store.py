"""Retention in the real ClickHouse engine (chdb): a tenant pruned under a signed statement.

The store is built as in test_tiles.py (the real Sequencer chains and signs, rows go
through the sink's row and Arrow path, the sink's TileBuilder writes the tiles). acme
has 700 records in batches of 50; its oldest 512 are pruned under a retention statement
chained as record 701. globex is never pruned. ``verify``, ``prove`` and ``verify-proof``
run as subprocesses where the exit code is what is tested, as an operator would run them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authtrail.cli import main as cli
from authtrail.keys import load_keyring, load_signer, write_key_pair
from authtrail.sinks.backend import EmbeddedBackend
from authtrail.sinks.http_front import HttpFront
from authtrail.sinks.proofs import ProofUnavailableError, prove_inclusion
from authtrail.sinks.retention_store import (
    RetentionUnavailable,
    delete_pruned,
    statement_for_cut,
    stored_below,
)
from authtrail.sinks.rows import (
    CHECKPOINTS_SCHEMA,
    EVENTS_SCHEMA,
    chained_row,
    checkpoint_row,
    to_arrow,
)
from authtrail.sinks.tables import create_statements
from authtrail.sinks.tile_builder import TileBuilder
from authtrail.sinks.verify_retention import read_retained_log, read_retention_notes
from authtrail.sinks.verify_store import TenantResult, verify_store
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.merkle import root_from_leaf_hashes
from authtrail.stream.core.note import Signer
from authtrail.stream.core.retention import RetentionStatement, retention_event, sign_retention
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.worker.sequencing import _checkpoint_record

pytestmark = pytest.mark.integration

ORIGIN = "authtrail.local"  # what verify expects by default
ACME_RECORDS = 700
CUT = 512
RETENTION_SEQ = ACME_RECORDS + 1
TIME = 1_700_100_000_000_000


def _event(tenant: str, n: int) -> dict:
    return {
        "event_id": f"{tenant}-{n}",
        "tenant_id": tenant,
        "event_type": "LOGIN_FAILED" if n % 3 else "LOGIN",
        "outcome": "FAILURE" if n % 3 else "SUCCESS",
        "occurred_at": 1_700_000_000_000_000 + n * 1000,
        "user_id": f"u{n % 5}",
        "user_name": f"user{n % 5}@example.com",
        "client_ip": f"203.0.113.{n % 7}",
    }


class _Log:
    """The sequencer and the store it writes to: records, checkpoints, tiles."""

    def __init__(self, backend: EmbeddedBackend, signer: Signer) -> None:
        self.backend = backend
        self.sequencer = Sequencer(signer, ORIGIN, batch_size=50, batch_interval=3600)
        self.offset = 0

    def append(self, events: list[dict]) -> None:
        rows, checkpoints = [], []
        for event in events:
            self.offset += 1
            link = self.sequencer.offer(
                event["tenant_id"], event["event_id"], canonical_leaf(event), self.offset
            ).link
            assert link is not None
            record = {"event": event, "seq": link.seq, "prev_hash": link.prev_hash,
                      "hash": link.hash, "leaf_hash": link.leaf_hash}  # fmt: skip
            rows.append(chained_row(record, "test", 0, self.offset))
            for due in self.sequencer.full_batches():
                signed = self.sequencer.close_batch(due)
                checkpoints.append(checkpoint_row(_checkpoint_record(signed), "test", 0, 0))
        for due in self.sequencer.open_batches():
            signed = self.sequencer.close_batch(due)
            checkpoints.append(checkpoint_row(_checkpoint_record(signed), "test", 0, 0))
        self.backend.insert_arrow("events", to_arrow(rows, EVENTS_SCHEMA))
        self.backend.insert_arrow("checkpoints", to_arrow(checkpoints, CHECKPOINTS_SCHEMA))
        TileBuilder(self.backend).catch_up()


def _build(root: Path) -> dict[str, Path]:
    key_path, pub_path = write_key_pair(root / "keys", "retention-test")
    other_key, _ = write_key_pair(root / "other", "someone-else")
    stores = {"twice": _build_twice(root / "twice", key_path, pub_path)}
    for variant in ("signed", "forged", "none"):
        data = root / variant
        backend = EmbeddedBackend(data / "clickhouse")
        try:
            for statement in create_statements():
                backend.command(statement)
            log = _Log(backend, load_signer(key_path))
            log.append([_event("acme", n) for n in range(ACME_RECORDS)]
                       + [_event("globex", n) for n in range(120)])  # fmt: skip
            if variant != "none":
                statement = statement_for_cut(backend, "acme", CUT, ORIGIN, TIME)
                signer = load_signer(key_path if variant == "signed" else other_key)
                note = sign_retention(statement, signer)
                log.append([retention_event("acme", note, statement)])
        finally:
            backend.close()
        stores[variant] = data
    return {"pub": pub_path, "key": key_path, **stores}


def _build_twice(data: Path, key_path: Path, pub_path: Path) -> Path:
    """acme pruned to 256 under a statement at seq 701, grown by 100 records after the
    deletion, then pruned to 512 under a second statement at seq 802 (the first stays)."""
    backend = EmbeddedBackend(data / "clickhouse")
    keyring = load_keyring([pub_path])
    try:
        for statement in create_statements():
            backend.command(statement)
        log = _Log(backend, load_signer(key_path))
        log.append([_event("acme", n) for n in range(ACME_RECORDS)])
        for cut, more in ((256, 100), (512, 0)):
            statement = statement_for_cut(backend, "acme", cut, ORIGIN, TIME + cut)
            note = sign_retention(statement, load_signer(key_path))
            log.append([retention_event("acme", note, statement)])
            delete_pruned(backend, "acme", cut, keyring, ORIGIN)
            log.append([_event("acme", n) for n in range(ACME_RECORDS, ACME_RECORDS + more)])
    finally:
        backend.close()
    return data


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _build(tmp_path_factory.mktemp("retention"))


@pytest.fixture
def copy(built: dict[str, Path], tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Copies of the built stores, for tests that change them."""
    copies = {}
    for variant in ("signed", "forged", "none"):
        shutil.copytree(built[variant], tmp_path / variant, symlinks=True)
        copies[variant] = tmp_path / variant
    yield copies | {"pub": built["pub"], "key": built["key"], "root": tmp_path}


def _verdicts(data: Path, pub: Path) -> dict[str, TenantResult]:
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        results = verify_store(backend, load_keyring([pub]), ORIGIN)
        return {result.tenant_id: result for result in results}


def _mutate(data: Path, sql: str) -> None:
    with EmbeddedBackend(data / "clickhouse") as backend:
        backend.command(sql, {"mutations_sync": 2})


def _prune(data: Path, pub: Path, cut: int = CUT) -> int:
    with EmbeddedBackend(data / "clickhouse") as backend:
        return delete_pruned(backend, "acme", cut, load_keyring([pub]), ORIGIN)[1]


def _authtrail(data: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data), *arguments],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_pruned_tenant_verifies_and_reports_the_pruned_range(copy: dict[str, Path]) -> None:
    data, pub = copy["signed"], copy["pub"]
    assert _prune(data, pub) == CUT
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        assert stored_below(backend, "acme", CUT) == 0
        seqs = backend.query_arrow(
            "SELECT min(seq), count() FROM events WHERE tenant_id = 'acme'"
        ).to_pylist()
        assert list(seqs[0].values()) == [CUT + 1, RETENTION_SEQ - CUT]
        # Checkpoints and tiles stay: they are what the pruned log still proves with.
        assert backend.query_arrow(
            "SELECT count() FROM checkpoints WHERE tenant_id = 'acme'"
        ).column(0)[0].as_py() == 15  # fmt: skip
    checked = _authtrail(data, "verify", "--key", str(pub), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = {tenant["tenant_id"]: tenant for tenant in json.loads(checked.stdout)["tenants"]}
    assert report["acme"]["damage"] is None
    assert (report["acme"]["pruned_size"], report["acme"]["retention_cut"]) == (CUT, CUT)
    assert (report["acme"]["records"], report["acme"]["signed_size"]) == (701, 701)
    assert report["globex"]["damage"] is None and report["globex"]["pruned_size"] == 0
    text = _authtrail(data, "verify", "--key", str(pub))
    assert text.returncode == 0
    assert "records 1..512 pruned under a signed retention (retained from seq 513)" in text.stdout


def test_proofs_of_retained_records_still_verify(copy: dict[str, Path]) -> None:
    data, pub, root = copy["signed"], str(copy["pub"]), copy["root"]
    _prune(data, copy["pub"])
    for arguments in (
        ["--tenant", "acme", "--seq", "513"],
        ["--tenant", "acme", "--seq", "600", "--tree-size", "650"],
        ["acme-699"],
        ["--tenant", "acme", "--consistency", "550", "701"],  # from the batch across the cut
        ["--tenant", "acme", "--consistency", "600", "650"],
    ):
        out = root / "proof.json"
        proved = _authtrail(data, "prove", *arguments, "--out", str(out))
        assert proved.returncode == 0, (arguments, proved.stderr)
        checked = _authtrail(data, "verify-proof", str(out), "--key", pub)
        assert checked.returncode == 0, (arguments, checked.stdout + checked.stderr)


def test_pruned_records_have_no_proofs_any_more(copy: dict[str, Path]) -> None:
    data = copy["signed"]
    _prune(data, copy["pub"])
    with (
        EmbeddedBackend(data / "clickhouse", read_only=True) as backend,
        pytest.raises(ProofUnavailableError, match="no stored record of seq 100"),
    ):
        prove_inclusion(backend, ORIGIN, "acme", 100)
    # From a checkpoint inside the pruned range, off a tile boundary: its leaves are gone.
    refused = _authtrail(data, "prove", "--tenant", "acme", "--consistency", "500", "701")
    assert refused.returncode == 2, refused.stderr
    assert "records 1..512 were pruned under a retention statement" in refused.stderr


def test_pending_deletion_verifies_and_says_so(built: dict[str, Path]) -> None:
    verdict = _verdicts(built["signed"], built["pub"])["acme"]
    assert verdict.damage is None, verdict.detail
    assert (verdict.pruned_size, verdict.retention_cut, verdict.records) == (0, CUT, 701)


def test_rows_deleted_without_a_retention_statement_are_damage(copy: dict[str, Path]) -> None:
    data = copy["none"]
    with EmbeddedBackend(data / "clickhouse") as backend, pytest.raises(RetentionUnavailable):
        delete_pruned(backend, "acme", CUT, load_keyring([copy["pub"]]), ORIGIN)
    _mutate(data, f"ALTER TABLE events DELETE WHERE tenant_id = 'acme' AND seq <= {CUT}")
    checked = _authtrail(data, "verify", "--key", str(copy["pub"]), "--json")
    assert checked.returncode == 1
    report = {tenant["tenant_id"]: tenant for tenant in json.loads(checked.stdout)["tenants"]}
    assert (report["acme"]["damage"], report["acme"]["seq"]) == ("deleted", 1)
    assert report["globex"]["damage"] is None


def test_rows_deleted_above_the_cut_are_damage(copy: dict[str, Path]) -> None:
    data = copy["signed"]
    _prune(data, copy["pub"])
    _mutate(data, "ALTER TABLE events DELETE WHERE tenant_id = 'acme' AND seq BETWEEN 513 AND 520")
    verdict = _verdicts(data, copy["pub"])["acme"]
    assert (verdict.damage, verdict.seq) == ("deleted", 513)


def test_retention_signed_by_an_untrusted_key_is_forged(copy: dict[str, Path]) -> None:
    data = copy["forged"]
    verdict = _verdicts(data, copy["pub"])["acme"]
    assert (verdict.damage, verdict.seq) == ("forged retention", RETENTION_SEQ)
    assert "no signature by a trusted key" in (verdict.detail or "")
    with EmbeddedBackend(data / "clickhouse") as backend, pytest.raises(Exception, match="forged"):
        delete_pruned(backend, "acme", CUT, load_keyring([copy["pub"]]), ORIGIN)
    assert _verdicts(data, copy["pub"])["globex"].damage is None


def test_unsigned_retention_note_is_forged(copy: dict[str, Path]) -> None:
    data = copy["signed"]
    _prune(data, copy["pub"])
    _mutate(
        data,
        "ALTER TABLE events UPDATE attributes = mapUpdate(attributes, map('retention_note', "
        "splitByString('\\n\\n', attributes['retention_note'])[1] || '\\n')) "
        f"WHERE tenant_id = 'acme' AND seq = {RETENTION_SEQ}",
    )
    verdict = _verdicts(data, copy["pub"])["acme"]
    assert (verdict.damage, verdict.seq) == ("forged retention", RETENTION_SEQ)


def test_retention_edited_after_the_fact_is_named(copy: dict[str, Path]) -> None:
    data = copy["signed"]
    _prune(data, copy["pub"])
    # Claiming more than was signed: the signature no longer covers the text.
    _mutate(
        data,
        "ALTER TABLE events UPDATE attributes = mapUpdate(attributes, map('retention_note', "
        "replaceOne(attributes['retention_note'], '\\n512\\n', '\\n768\\n'))) "
        f"WHERE tenant_id = 'acme' AND seq = {RETENTION_SEQ}",
    )
    verdict = _verdicts(data, copy["pub"])["acme"]
    assert (verdict.damage, verdict.seq) == ("forged retention", RETENTION_SEQ)


def test_validly_signed_note_swapped_in_is_a_modified_record(copy: dict[str, Path]) -> None:
    data, pub = copy["signed"], copy["pub"]
    _prune(data, pub)
    # Another genuine statement (other time stamp) put into the stored record: signed,
    # but not what the chain committed to.
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        anchor = backend.query_arrow(
            f"SELECT prev_hash FROM events WHERE tenant_id = 'acme' AND seq = {CUT + 1}"
        ).column(0)[0].as_py()  # fmt: skip
        entries = backend.query_arrow(
            "SELECT hash FROM tiles WHERE tenant_id = 'acme' AND level = 1 AND entry_index < 2 "
            "ORDER BY entry_index"
        ).column(0).to_pylist()  # fmt: skip
    later = RetentionStatement(f"{ORIGIN}/acme", CUT, root_from_leaf_hashes(entries), anchor,
                               TIME + 1)  # fmt: skip
    note = sign_retention(later, load_signer(copy["key"])).decode()
    _mutate(
        data,
        f"ALTER TABLE events UPDATE attributes = map('retention_note', '{_sql(note)}') "
        f"WHERE tenant_id = 'acme' AND seq = {RETENTION_SEQ}",
    )
    verdict = _verdicts(data, pub)["acme"]
    assert (verdict.damage, verdict.seq) == ("modified", RETENTION_SEQ)


def _sql(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def test_partly_deleted_range_is_incomplete(copy: dict[str, Path]) -> None:
    data = copy["signed"]
    _mutate(data, "ALTER TABLE events DELETE WHERE tenant_id = 'acme' AND seq <= 100")
    verdict = _verdicts(data, copy["pub"])["acme"]
    assert (verdict.damage, verdict.seq) == ("retention incomplete", 101)
    assert _prune(data, copy["pub"]) == CUT - 100  # running it again finishes the job
    verdict = _verdicts(data, copy["pub"])["acme"]
    assert verdict.damage is None and verdict.pruned_size == CUT


def test_tile_entry_under_the_cut_lost_is_a_retention_mismatch(copy: dict[str, Path]) -> None:
    data = copy["signed"]
    _prune(data, copy["pub"])
    _mutate(data, "ALTER TABLE tiles DELETE WHERE tenant_id = 'acme' AND level = 1 "
                  "AND entry_index = 1")  # fmt: skip
    verdict = _verdicts(data, copy["pub"])["acme"]
    assert (verdict.damage, verdict.seq) == ("retention mismatch", 257)


def test_tile_entry_under_the_cut_changed_is_a_retention_mismatch(copy: dict[str, Path]) -> None:
    data = copy["signed"]
    _prune(data, copy["pub"])
    _mutate(data, "ALTER TABLE tiles UPDATE hash = unhex(repeat('ab', 32)) "
                  "WHERE tenant_id = 'acme' AND level = 1 AND entry_index = 0")  # fmt: skip
    verdict = _verdicts(data, copy["pub"])["acme"]
    assert (verdict.damage, verdict.seq) == ("retention mismatch", RETENTION_SEQ)


def test_a_cut_beyond_the_signed_log_is_refused(built: dict[str, Path]) -> None:
    with (
        EmbeddedBackend(built["none"] / "clickhouse", read_only=True) as backend,
        pytest.raises(RetentionUnavailable, match="not all stored and signed"),
    ):
        statement_for_cut(backend, "acme", 768, ORIGIN, TIME)


def test_retain_command_deletes_once_the_statement_is_in_the_log(copy: dict[str, Path]) -> None:
    data, pub = copy["signed"], str(copy["pub"])
    # Every event occurred in 2023: all 701 are older than a day; the cut rounds to 512.
    done = _authtrail(data, "retain", "--tenant", "acme", "--older-than", "1", "--key", pub,
                      "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "tenant_id": "acme", "cut": CUT, "statement_seq": RETENTION_SEQ, "sent": False,
        "deleted": CUT,
    }  # fmt: skip
    again = _authtrail(data, "retain", "--tenant", "acme", "--before", "600", "--key", pub)
    assert again.returncode == 0, again.stderr
    assert "recorded at seq 701; 0 records deleted" in again.stdout
    assert _authtrail(data, "verify", "--key", pub).returncode == 0
    small = _authtrail(data, "retain", "--tenant", "globex", "--before", "200", "--key", pub)
    assert small.returncode == 0 and "nothing to do" in small.stdout


def test_retain_refuses_a_damaged_tenant_and_deletes_nothing(copy: dict[str, Path]) -> None:
    data, pub = copy["none"], str(copy["pub"])
    _mutate(data, "ALTER TABLE events UPDATE user_name = 'x' WHERE tenant_id = 'acme' AND seq = 5")
    refused = _authtrail(data, "retain", "--tenant", "acme", "--before", "600", "--key", pub)
    assert refused.returncode == 1, refused.stderr
    assert "does not verify (modified at seq 5" in refused.stderr
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        assert stored_below(backend, "acme", CUT) == CUT


def test_retain_without_a_statement_needs_the_worker_and_deletes_nothing(
    copy: dict[str, Path],
) -> None:
    data, pub = copy["none"], str(copy["pub"])
    env_key = {"AUTHTRAIL_SIGNING_KEY": str(copy["key"])}
    refused = subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data), "retain", "--tenant",
         "acme", "--before", "600", "--key", pub],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env_key},
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "retain needs --bootstrap-servers" in refused.stderr
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        assert stored_below(backend, "acme", CUT) == CUT


def test_a_second_retention_extends_the_first(built: dict[str, Path]) -> None:
    verdict = _verdicts(built["twice"], built["pub"])["acme"]
    assert verdict.damage is None, verdict.detail
    assert (verdict.pruned_size, verdict.retention_cut, verdict.records) == (512, 512, 802)
    with EmbeddedBackend(built["twice"] / "clickhouse", read_only=True) as backend:
        services = backend.query_arrow(
            "SELECT seq FROM events WHERE service = 'authtrail-retention' ORDER BY seq"
        ).column(0).to_pylist()  # fmt: skip
    assert services == [701, 802]  # both statements kept: both are above the newest cut


def test_retain_deletes_to_the_newest_signed_cut(copy: dict[str, Path], tmp_path: Path) -> None:
    data, pub = tmp_path / "twice-copy", str(copy["pub"])
    shutil.copytree(copy["root"] / "signed", data, symlinks=True)
    # Asking for less than the stored statement prunes: deleting less would leave the
    # store short of what its log says, which verify calls incomplete.
    done = _authtrail(data, "retain", "--tenant", "acme", "--before", "300", "--key", pub,
                      "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"] == CUT and json.loads(done.stdout)["cut"] == CUT
    assert _verdicts(data, copy["pub"])["acme"].pruned_size == CUT


def test_row_by_row_and_sql_paths_agree_on_a_pruned_log(copy: dict[str, Path]) -> None:
    data = copy["signed"]
    _prune(data, copy["pub"])
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        notes = read_retention_notes(backend, "acme")["acme"]
        tiles = backend.query_arrow(
            "SELECT level, entry_index, hash FROM tiles WHERE tenant_id = 'acme'"
        ).to_pylist()  # fmt: skip
        entries = [(row["level"], row["entry_index"], row["hash"]) for row in tiles]
        logs = [
            read_retained_log(
                backend,
                "acme",
                notes,
                load_keyring([copy["pub"]]),
                ORIGIN,
                entries,
                contents_checked=checked,
            )
            for checked in (True, False)
        ]
    fast, slow = logs
    assert (fast.pruned_size, fast.cut, fast.stored) == (slow.pruned_size, slow.cut, slow.stored)
    assert (fast.pruned_size, fast.stored) == (CUT, RETENTION_SEQ - CUT)
    assert [fast.tree.root(size) for size in (512, 600, 701)] == [
        slow.tree.root(size) for size in (512, 600, 701)
    ]
    assert [fast.chain_head(size) for size in (512, 513, 701)] == [
        slow.chain_head(size) for size in (512, 513, 701)
    ]


def test_only_a_connection_that_may_mutate_events_deletes(copy: dict[str, Path]) -> None:
    """Through the embedded store's HTTP front, as against a ClickHouse server with the
    roles of sinks/access.py: the sink's writer (and the analyst, the auditor) may not
    delete; an administrator may."""
    data, pub = copy["signed"], str(copy["pub"])
    owner = EmbeddedBackend(data / "clickhouse")
    tokens = [secrets.token_urlsafe(16) for _ in range(4)]
    try:
        with HttpFront(owner, token=tokens[0], auditor_token=tokens[1], writer_token=tokens[2],
                       admin_token=tokens[3]) as front:  # fmt: skip
            retain = ["--data-dir", str(data), "retain", "--tenant", "acme", "--before", "600",
                      "--key", pub, "--clickhouse-url"]  # fmt: skip
            for url in (front.writer_url, front.auditor_url, front.analyst_url):
                with contextlib.redirect_stderr(io.StringIO()) as err:
                    code = cli.main([*retain, url])
                # 497 access denied (writer), 164 read-only or 497 for its settings (others)
                assert code == 2 and re.search(r"Code: (497|164)", err.getvalue()), err.getvalue()
                assert stored_below(owner, "acme", CUT) == CUT
            with contextlib.redirect_stdout(io.StringIO()) as out:
                code = cli.main(["--data-dir", str(data), "retain", "--tenant", "acme",
                                 "--before", "600", "--key", pub, "--json",
                                 "--clickhouse-url", front.admin_url])  # fmt: skip
            assert code == 0 and json.loads(out.getvalue())["deleted"] == CUT
            assert stored_below(owner, "acme", CUT) == 0
    finally:
        owner.close()


def test_an_auditor_state_from_before_the_pruning_still_holds(copy: dict[str, Path]) -> None:
    data, pub, state = copy["signed"], str(copy["pub"]), str(copy["root"] / "state.json")
    assert _authtrail(data, "verify", "--key", pub, "--state", state).returncode == 0
    _prune(data, copy["pub"])
    after = _authtrail(data, "verify", "--key", pub, "--state", state, "--json")
    assert after.returncode == 0, after.stdout + after.stderr
    # Cutting the tail off with its checkpoints takes the statement with it: the pruned
    # range then reads as deleted (the state would catch the truncation too).
    _mutate(data, "ALTER TABLE events DELETE WHERE tenant_id = 'acme' AND seq > 650")
    _mutate(data, "ALTER TABLE checkpoints DELETE WHERE tenant_id = 'acme' AND size > 650")
    truncated = _authtrail(data, "verify", "--key", pub, "--state", state, "--json")
    report = {t["tenant_id"]: t for t in json.loads(truncated.stdout)["tenants"]}
    assert truncated.returncode == 1
    assert (report["acme"]["damage"], report["acme"]["seq"]) == ("deleted", 1)


def test_a_pruned_tenant_still_exports_its_tiles(copy: dict[str, Path]) -> None:
    data, pub, root = copy["signed"], str(copy["pub"]), copy["root"]

    def files(directory: Path) -> dict[str, bytes]:
        found = directory.rglob("*")
        return {str(p.relative_to(directory)): p.read_bytes() for p in found if p.is_file()}

    before = root / "before"
    assert _authtrail(data, "export-tiles", "--tenant", "acme", str(before)).returncode == 0
    _prune(data, copy["pub"])
    after = root / "after"
    exported = _authtrail(data, "export-tiles", "--tenant", "acme", str(after))
    assert exported.returncode == 0, exported.stderr
    assert "records 1..512 were pruned under a retention statement" in exported.stderr
    # The same files as before pruning, but the level-0 tiles and bundles of the cut.
    old, new = files(before), files(after)
    assert set(old) - set(new) == {"tile/0/000", "tile/0/001", "tile/entries/000",
                                   "tile/entries/001"}  # fmt: skip
    assert set(new) <= set(old) and all(new[name] == old[name] for name in new)
    again = _authtrail(data, "export-tiles", "--tenant", "acme", str(before))
    assert again.returncode == 0 and "0 files written" in again.stderr
    # Retained records prove from it; pruned ones have no entry bundle any more.
    out = root / "proof.json"
    proved = _authtrail(data, "prove", "--tiles", str(after), "--seq", "600", "--out", str(out))
    assert proved.returncode == 0, proved.stderr
    checked = _authtrail(data, "verify-proof", str(out), "--key", pub)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    gone = _authtrail(data, "prove", "--tiles", str(after), "--seq", "100")
    assert gone.returncode == 1 and "records pruned before the export have none" in gone.stderr
    # A tree that ends inside the pruned range has lost leaves no entry stands for.
    inside = _authtrail(data, "export-tiles", "--tenant", "acme", "--tree-size", "500",
                        str(root / "inside"))  # fmt: skip
    assert inside.returncode == 2 and "can no longer be exported" in inside.stderr
    # The stored entries below the cut are checked with the root, not trusted.
    _mutate(data, "ALTER TABLE tiles UPDATE hash = unhex(repeat('cd', 32)) "
                  "WHERE tenant_id = 'acme' AND level = 1 AND entry_index = 0")  # fmt: skip
    damaged = _authtrail(data, "export-tiles", "--tenant", "acme", str(root / "damaged"))
    assert damaged.returncode == 1
    assert "the stored level-1 entries below them hash to root" in damaged.stderr
    assert not (root / "damaged" / "checkpoint").exists()
