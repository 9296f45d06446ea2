"""A rejection log pruned under a signed statement, in the real ClickHouse engine (chdb).

Rejected input holds what was sent, clear text included, so it goes after its retention
like a tenant's records (docs/PRIVACY.md, "Retention"). The store is built as the worker
and sink would build it: the real Sequencer chains 300 rejections of input partition 0
into ``authtrail-rejected-0`` (batches of 50, signed), the sink's row path stores them in
``rejected``, its TileBuilder writes the log's tiles. Then a retention statement for
records 1..256 is chained into the log as the worker's own record of kind
``retention`` (seq 301), signed by the log's key ("signed") or by a key nobody trusts
("forged"). Every test edits its own copy as an insider with store access would, and
``verify`` must name the damage.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authtrail.keys import load_keyring, load_signer, write_key_pair
from authtrail.retention import RetentionOutcome, cut_older_than
from authtrail.retention_schedule import retention_pass, store_tenants
from authtrail.settings import Settings
from authtrail.sinks.backend import EmbeddedBackend
from authtrail.sinks.retention_store import RetentionUnavailable, delete_pruned, statement_for_cut
from authtrail.sinks.rows import (
    CHECKPOINTS_SCHEMA,
    REJECTED_SCHEMA,
    checkpoint_row,
    rejected_row,
    to_arrow,
)
from authtrail.sinks.tables import create_statements
from authtrail.sinks.tile_builder import TileBuilder
from authtrail.sinks.verify_store import TenantResult, verify_store
from authtrail.stream.core.note import Signer
from authtrail.stream.core.rejection import rejection_leaf, rejection_tenant
from authtrail.stream.core.retention import retention_event, retention_rejection, sign_retention
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.worker.sequencing import _checkpoint_record

pytestmark = pytest.mark.integration

ORIGIN = "authtrail.local"
LOG = rejection_tenant(0)
REJECTIONS = 300
CUT = 256
STATEMENT_SEQ = REJECTIONS + 1
DAY = 86_400_000_000
NOW = 1_700_000_000_000_000 + 40 * DAY


class _Log:
    """The worker's sequencer for input partition 0, and the store the sink writes to."""

    def __init__(self, backend: EmbeddedBackend, signer: Signer) -> None:
        self.backend = backend
        self.sequencer = Sequencer(signer, ORIGIN, batch_size=50, batch_interval=3600)
        self.offset = 0

    def chain(self, rejections: list[dict[str, Any]]) -> None:
        rows, checkpoints = [], []
        for rejection in rejections:
            link = self.sequencer.chain_rejection(LOG, rejection_leaf(rejection), self.offset)
            assert link is not None
            record = {"rejection": rejection, "chain_tenant_id": LOG, "seq": link.seq,
                      "prev_hash": link.prev_hash, "hash": link.hash,
                      "leaf_hash": link.leaf_hash, "epoch": 0}  # fmt: skip
            rows.append(rejected_row(record, "test", 0, self.offset))
            self.offset += 1
            for due in self.sequencer.full_batches():
                checkpoints.append(self._close(due))
        checkpoints += [self._close(due) for due in self.sequencer.open_batches()]
        self.backend.insert_arrow("rejected", to_arrow(rows, REJECTED_SCHEMA))
        self.backend.insert_arrow("checkpoints", to_arrow(checkpoints, CHECKPOINTS_SCHEMA))
        TileBuilder(self.backend).catch_up()

    def _close(self, tenant_id: str) -> dict[str, Any]:
        return checkpoint_row(_checkpoint_record(self.sequencer.close_batch(tenant_id)),
                              "test", 0, 0)  # fmt: skip

    def rejection(self, n: int) -> dict[str, Any]:
        """Bad input n: days old by its number (the oldest first), a name in its bytes."""
        return {
            "original": b"Failed password for bob from 198.51.100.9 #%d" % n,
            "original_key": None, "reason": "not Avro", "error_kind": "undecodable",
            "source_topic": "authtrail.events", "source_partition": 0,
            "source_offset": self.offset, "source_timestamp": None, "tenant_id": None,
            "rejected_at": NOW - (REJECTIONS - n) * DAY // 10, "source_index": None,
        }  # fmt: skip


def _build(root: Path) -> dict[str, Path]:
    key_path, pub_path = write_key_pair(root / "keys", "rejected-retention-test")
    other_key, _ = write_key_pair(root / "other", "someone-else")
    stores: dict[str, Path] = {"pub": pub_path, "key": key_path}
    for variant in ("signed", "forged", "none"):
        data = root / variant
        with EmbeddedBackend(data / "clickhouse") as backend:
            for statement in create_statements():
                backend.command(statement)
            log = _Log(backend, load_signer(key_path))
            log.chain([log.rejection(n) for n in range(REJECTIONS)])
            if variant != "none":
                statement = statement_for_cut(backend, LOG, CUT, ORIGIN, NOW)
                signer = load_signer(key_path if variant == "signed" else other_key)
                event = retention_event(LOG, sign_retention(statement, signer), statement)
                log.chain([retention_rejection(event, "authtrail.events", (0, log.offset, None),
                                               NOW)])  # fmt: skip
        stores[variant] = data
    return stores


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _build(tmp_path_factory.mktemp("rejected-retention"))


@pytest.fixture
def copy(built: dict[str, Path], tmp_path: Path) -> Iterator[dict[str, Path]]:
    copies = {}
    for variant in ("signed", "forged", "none"):
        shutil.copytree(built[variant], tmp_path / variant, symlinks=True)
        copies[variant] = tmp_path / variant
    yield copies | {"pub": built["pub"], "key": built["key"]}


def _verdict(data: Path, pub: Path) -> TenantResult:
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        (result,) = verify_store(backend, load_keyring([pub]), ORIGIN)
    assert result.tenant_id == LOG
    return result


def _mutate(data: Path, sql: str) -> None:
    with EmbeddedBackend(data / "clickhouse") as backend:
        backend.command(sql, {"mutations_sync": 2})


def _prune(data: Path, pub: Path) -> int:
    with EmbeddedBackend(data / "clickhouse") as backend:
        return delete_pruned(backend, LOG, CUT, load_keyring([pub]), ORIGIN)[1]


def _count(data: Path, where: str) -> int:
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        sql = f"SELECT count() FROM rejected WHERE chain_tenant_id = '{LOG}' AND {where}"
        return int(backend.query_arrow(sql).column(0)[0].as_py())


def test_the_rejection_log_has_tiles(built: dict[str, Path]) -> None:
    with EmbeddedBackend(built["none"] / "clickhouse", read_only=True) as backend:
        entries = backend.query_arrow(
            f"SELECT entry_index FROM tiles WHERE tenant_id = '{LOG}' AND level = 1"
        ).column(0).to_pylist()  # fmt: skip
    assert entries == [0]  # 300 leaves: one full tile of 256


def test_a_pruned_rejection_log_verifies_and_reports_the_pruned_range(
    copy: dict[str, Path],
) -> None:
    data, pub = copy["signed"], copy["pub"]
    pending = _verdict(data, pub)
    assert (pending.damage, pending.pruned_size, pending.retention_cut) == (None, 0, CUT)
    assert _prune(data, pub) == CUT
    assert _count(data, f"seq <= {CUT}") == 0
    assert _count(data, "position(original, 'bob') > 0") == REJECTIONS - CUT
    verdict = _verdict(data, pub)
    assert verdict.damage is None, verdict.detail
    assert (verdict.pruned_size, verdict.retention_cut) == (CUT, CUT)
    assert (verdict.records, verdict.signed_size) == (STATEMENT_SEQ, STATEMENT_SEQ)


def test_rejections_deleted_without_a_statement_are_damage(copy: dict[str, Path]) -> None:
    data = copy["none"]
    with EmbeddedBackend(data / "clickhouse") as backend, pytest.raises(RetentionUnavailable):
        delete_pruned(backend, LOG, CUT, load_keyring([copy["pub"]]), ORIGIN)
    _mutate(data, f"ALTER TABLE rejected DELETE WHERE chain_tenant_id = '{LOG}' AND seq <= {CUT}")
    verdict = _verdict(data, copy["pub"])
    assert (verdict.damage, verdict.seq) == ("deleted", 1)


def test_rejections_deleted_above_the_cut_are_damage(copy: dict[str, Path]) -> None:
    data = copy["signed"]
    _prune(data, copy["pub"])
    _mutate(data, f"ALTER TABLE rejected DELETE WHERE chain_tenant_id = '{LOG}' "
                  "AND seq BETWEEN 257 AND 260")  # fmt: skip
    verdict = _verdict(data, copy["pub"])
    assert (verdict.damage, verdict.seq) == ("deleted", 257)


def test_a_statement_no_trusted_key_signed_is_forged(copy: dict[str, Path]) -> None:
    data = copy["forged"]
    verdict = _verdict(data, copy["pub"])
    assert (verdict.damage, verdict.seq) == ("forged retention", STATEMENT_SEQ)
    with EmbeddedBackend(data / "clickhouse") as backend, pytest.raises(Exception, match="forged"):
        delete_pruned(backend, LOG, CUT, load_keyring([copy["pub"]]), ORIGIN)
    # And deleting by hand under it is still damage, named the same.
    _mutate(data, f"ALTER TABLE rejected DELETE WHERE chain_tenant_id = '{LOG}' AND seq <= {CUT}")
    assert _verdict(data, copy["pub"]).damage == "forged retention"


def test_a_statement_edited_to_claim_more_is_forged(copy: dict[str, Path]) -> None:
    data = copy["signed"]
    _prune(data, copy["pub"])
    where = f"chain_tenant_id = '{LOG}' AND seq = {STATEMENT_SEQ}"
    _mutate(data, "ALTER TABLE rejected UPDATE reason = replaceOne(reason, '\\n256\\n', "
                  f"'\\n512\\n') WHERE {where}")  # fmt: skip
    verdict = _verdict(data, copy["pub"])
    assert (verdict.damage, verdict.seq) == ("forged retention", STATEMENT_SEQ)


def test_a_partly_deleted_range_is_incomplete(copy: dict[str, Path]) -> None:
    data = copy["signed"]
    _mutate(data, f"ALTER TABLE rejected DELETE WHERE chain_tenant_id = '{LOG}' AND seq <= 100")
    verdict = _verdict(data, copy["pub"])
    assert (verdict.damage, verdict.seq) == ("retention incomplete", 101)
    assert _prune(data, copy["pub"]) == CUT - 100  # running it again finishes the job
    assert _verdict(data, copy["pub"]).damage is None


def test_a_tile_entry_under_the_cut_changed_is_a_retention_mismatch(
    copy: dict[str, Path],
) -> None:
    data = copy["signed"]
    _prune(data, copy["pub"])
    _mutate(data, "ALTER TABLE tiles UPDATE hash = unhex(repeat('ab', 32)) "
                  f"WHERE tenant_id = '{LOG}' AND level = 1 AND entry_index = 0")  # fmt: skip
    verdict = _verdict(data, copy["pub"])
    assert (verdict.damage, verdict.seq) == ("retention mismatch", STATEMENT_SEQ)


def test_the_schedule_cuts_a_rejection_log_by_when_input_was_rejected(
    copy: dict[str, Path], tmp_path: Path
) -> None:
    """Rejection n (seq n + 1) was rejected (300 - n) / 10 days before NOW: 10 days of
    retention leave 200 rejections past it (cut 0: less than 256), 4 days leave 260
    (cut 256)."""
    data = copy["none"]
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        assert cut_older_than(backend, LOG, 10, NOW) == 0
        assert cut_older_than(backend, LOG, 4, NOW) == CUT
        assert store_tenants(backend) == [LOG]
    policy = tmp_path / "privacy.json"
    policy.write_text('{"retention_days": {"default": null, "rejected": 4}}')
    settings = Settings(data_dir=data, privacy_policy_file=policy)
    asked: list[tuple[str, int]] = []

    def prune(tenant_id: str, cut: int) -> RetentionOutcome:
        asked.append((tenant_id, cut))
        return RetentionOutcome(tenant_id, cut, None, True, None)

    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        (result,) = retention_pass(settings, backend, prune, now_micros=NOW)
    assert asked == [(LOG, CUT)] and result.days == 4
