"""verify against the real ClickHouse engine (chdb): intact store passes, tampering is named.

Rows are produced by the real sequencer and stored through the sink's row and Arrow path,
so the SQL canonical leaf and chain hash are checked against the Python ones end to end.
Tampering uses ClickHouse mutations directly, as an attacker with database access would;
the product itself offers no update or delete path.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from authtrail.sinks import verify_store as verify_store_module
from authtrail.sinks.backend import EmbeddedBackend
from authtrail.sinks.rows import (
    CHECKPOINTS_SCHEMA,
    EVENTS_SCHEMA,
    chained_row,
    checkpoint_row,
    to_arrow,
)
from authtrail.sinks.tables import create_statements
from authtrail.sinks.verify_store import _merkle_levels, verify_store
from authtrail.stream.core.audit import MerkleLevels
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.note import Signer, generate_key_strings, make_keyring
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.worker.sequencing import _checkpoint_record

SIGNER = Signer.parse(generate_key_strings("verify-test")[0])
KEYRING = make_keyring([SIGNER.verifier_key()])
ORIGIN = "authtrail.test"
TENANTS = ("acme", "globex", "initech")


def _event(n: int, rng: random.Random) -> dict:
    return {
        "event_id": f"ev-{n}",
        "tenant_id": rng.choice(TENANTS),
        "event_type": rng.choice(["LOGIN", "LOGIN_FAILED", "LOGOUT", "TOKEN_ISSUED"]),
        "outcome": "SUCCESS",
        "occurred_at": 1_700_000_000_000_000 + n * 1000,
        "user_name": f"user{rng.randrange(20)}",
        "client_ip": f"203.0.113.{rng.randrange(255)}",
        "user_agent": 'Mozilla/5.0 "quoted" \\ é',
        "attributes": {"k": str(n), "z": "last"} if n % 3 else {},
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedBackend]:
    backend = EmbeddedBackend(tmp_path / "clickhouse")
    for statement in create_statements():
        backend.command(statement)
    sequencer = Sequencer(SIGNER, ORIGIN, batch_size=25, batch_interval=3600)
    rng = random.Random(3)
    rows, checkpoints = [], []
    for offset in range(300):
        event = _event(offset, rng)
        link = sequencer.offer(
            event["tenant_id"], event["event_id"], canonical_leaf(event), offset
        ).link
        assert link is not None
        record = {"event": event, "seq": link.seq, "prev_hash": link.prev_hash,
                  "hash": link.hash, "leaf_hash": link.leaf_hash}  # fmt: skip
        rows.append(chained_row(record, "test", 0, offset))
        for tenant in sequencer.due_batches():
            signed = sequencer.close_batch(tenant)
            checkpoints.append(
                checkpoint_row(_checkpoint_record(signed), "test", 0, len(checkpoints))
            )
    backend.insert_arrow("events", to_arrow(rows, EVENTS_SCHEMA))
    backend.insert_arrow("checkpoints", to_arrow(checkpoints, CHECKPOINTS_SCHEMA))
    yield backend
    backend.close()


def _verdicts(backend: EmbeddedBackend) -> dict[str, tuple]:
    return {r.tenant_id: (r.damage, r.seq) for r in verify_store(backend, KEYRING, ORIGIN)}


def _mutate(backend: EmbeddedBackend, sql: str) -> None:
    backend.command(sql + " SETTINGS mutations_sync = 2")


def test_intact_store_verifies(store: EmbeddedBackend) -> None:
    results = list(verify_store(store, KEYRING, ORIGIN))
    assert [r.tenant_id for r in results] == sorted(TENANTS)
    assert all(r.damage is None for r in results)
    assert sum(r.records for r in results) == 300
    assert all(r.checkpoints >= 3 and r.signed_size > 0 for r in results)


def test_changed_field_is_modified(store: EmbeddedBackend) -> None:
    _mutate(
        store,
        "ALTER TABLE events UPDATE user_name = 'mallory' WHERE tenant_id = 'acme' AND seq = 7",
    )
    assert _verdicts(store)["acme"] == ("modified", 7)
    assert _verdicts(store)["globex"] == (None, None)


def test_changed_attribute_map_is_modified(store: EmbeddedBackend) -> None:
    _mutate(
        store,
        "ALTER TABLE events UPDATE attributes = map('k', 'x') "
        "WHERE tenant_id = 'globex' AND seq = 2",
    )
    assert _verdicts(store)["globex"] == ("modified", 2)


def test_deleted_row_is_named(store: EmbeddedBackend) -> None:
    _mutate(store, "ALTER TABLE events DELETE WHERE tenant_id = 'initech' AND seq = 11")
    assert _verdicts(store)["initech"] == ("deleted", 11)


def test_forged_row_is_inserted(store: EmbeddedBackend) -> None:
    store.command(
        "INSERT INTO events SELECT * REPLACE ('forged' AS event_id) "
        "FROM (SELECT * FROM events WHERE tenant_id = 'acme' AND seq = 5)"
    )
    assert _verdicts(store)["acme"][1] == 5
    assert _verdicts(store)["acme"][0] in ("inserted", "duplicated")


def test_swapped_rows_are_reordered(store: EmbeddedBackend) -> None:
    # seq is a sorting key and cannot be UPDATEd: re-insert both rows renumbered, drop originals.
    store.command(
        "INSERT INTO events SELECT * REPLACE (if(seq = 3, 4, 3) AS seq, kafka_offset + 1000000 "
        "AS kafka_offset) FROM (SELECT * FROM events WHERE tenant_id = 'acme' AND seq IN (3, 4))"
    )
    _mutate(
        store,
        "ALTER TABLE events DELETE WHERE tenant_id = 'acme' AND seq IN (3, 4) "
        "AND kafka_offset < 1000000",
    )
    assert _verdicts(store)["acme"] == ("reordered", 3)


def test_dropped_checkpoint_is_missing(store: EmbeddedBackend) -> None:
    _mutate(
        store, "ALTER TABLE checkpoints DELETE WHERE tenant_id = 'globex' AND batch_first_seq = 26"
    )
    assert _verdicts(store)["globex"] == ("missing checkpoint", 50)


def test_truncated_tail_is_caught_by_the_checkpoint(store: EmbeddedBackend) -> None:
    _mutate(store, "ALTER TABLE events DELETE WHERE tenant_id = 'initech' AND seq > 40")
    assert _verdicts(store)["initech"][0] == "checkpoint mismatch"


def test_rewritten_chain_is_caught_by_signatures(store: EmbeddedBackend) -> None:
    """An attacker who edits a row and recomputes every hash still fails the checkpoints."""
    _mutate(
        store,
        "ALTER TABLE events UPDATE user_name = 'mallory' WHERE tenant_id = 'acme' AND seq = 2",
    )
    from authtrail.sinks.tables import leaf_hash_sql

    _mutate(
        store,
        f"ALTER TABLE events UPDATE leaf_hash = {leaf_hash_sql()} "
        "WHERE tenant_id = 'acme' AND seq = 2",
    )
    damage, seq = _verdicts(store)["acme"]
    assert seq == 2 or damage == "checkpoint mismatch"
    assert damage is not None


def test_one_tenant_only(store: EmbeddedBackend) -> None:
    results = list(verify_store(store, KEYRING, ORIGIN, tenant_id="globex"))
    assert [r.tenant_id for r in results] == ["globex"]


def test_levels_hashed_in_sql_equal_levels_hashed_in_python(store: EmbeddedBackend) -> None:
    for tenant in TENANTS:
        leaf_hashes = (
            store.query_arrow(
                "SELECT leaf_hash FROM events WHERE tenant_id = {t:String} ORDER BY seq",
                {"t": tenant},
            )
            .column(0)
            .to_pylist()
        )
        expected = MerkleLevels.from_leaf_hashes(leaf_hashes)
        heights = len(leaf_hashes).bit_length()
        calculated = _merkle_levels(store, tenant, tenant, heights)[tenant]
        assert calculated.size == expected.size == len(leaf_hashes)
        assert [calculated.level(h) for h in range(heights)] == [
            expected.level(h) for h in range(heights)
        ]


def test_small_chunks_give_the_same_verdicts(
    store: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mutate(store, "ALTER TABLE events DELETE WHERE tenant_id = 'initech' AND seq > 40")
    whole = list(verify_store(store, KEYRING, ORIGIN))
    monkeypatch.setattr(verify_store_module, "CHUNK_RECORDS", 1)  # one tenant a query
    assert list(verify_store(store, KEYRING, ORIGIN)) == whole
    assert [r.damage for r in whole] == [None, None, "checkpoint mismatch"]


@pytest.mark.parametrize("chunk_records", [1, 150, 10**6])
def test_content_and_chain_hashes_are_checked_in_every_chunk(
    store: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch, chunk_records: int
) -> None:
    """The leaf and chain hash query runs per range of tenants, beside the Merkle levels:
    damage in the first, a middle and the last range is named, whatever the ranges."""
    monkeypatch.setattr(verify_store_module, "CHUNK_RECORDS", chunk_records)
    _mutate(store, "ALTER TABLE events UPDATE client_ip = '198.51.100.7' "
                   "WHERE tenant_id = 'acme' AND seq = 9")  # fmt: skip
    _mutate(store, "ALTER TABLE events UPDATE attributes = map('k', 'forged') "
                   "WHERE tenant_id = 'globex' AND seq = 3")  # fmt: skip
    # A chain hash rewritten, its content and leaf hash left as stored.
    _mutate(store, "ALTER TABLE events UPDATE hash = prev_hash "
                   "WHERE tenant_id = 'initech' AND seq = 12")  # fmt: skip
    verdicts = _verdicts(store)
    assert verdicts["acme"] == ("modified", 9)
    assert verdicts["globex"] == ("modified", 3)
    assert verdicts["initech"][1] == 12 and verdicts["initech"][0] is not None


@pytest.mark.parametrize(
    ("column", "change"),
    [("size", "size + 1000"), ("root", "batch_root"), ("batch_root", "root"),
     ("chain_head", "prev_digest"), ("batch_first_seq", "batch_first_seq + 1"),
     ("batch_last_seq", "batch_last_seq - 1"), ("prev_digest", "chain_head"),
     ("time_micros", "time_micros + 1")],
)  # fmt: skip
def test_a_checkpoint_column_that_differs_from_its_signed_note_is_named(
    store: EmbeddedBackend, column: str, change: str
) -> None:
    """Analysts and status read the columns: each must say what the signed note says."""
    size = (
        store.query_arrow(
            "SELECT size FROM checkpoints WHERE tenant_id = 'acme' ORDER BY size LIMIT 1 OFFSET 1"
        )
        .column(0)[0]
        .as_py()
    )
    # Insert the changed copy (key columns cannot be UPDATEd), then drop the original.
    marker = 10**9
    store.command(
        f"INSERT INTO checkpoints SELECT * REPLACE ({change} AS {column}, "
        f"kafka_offset + {marker} AS kafka_offset) "
        f"FROM (SELECT * FROM checkpoints WHERE tenant_id = 'acme' AND size = {size})"
    )
    _mutate(
        store,
        "ALTER TABLE checkpoints DELETE WHERE tenant_id = 'acme' "
        f"AND batch_last_seq = {size} AND kafka_offset < {marker}",
    )
    results = {r.tenant_id: r for r in verify_store(store, KEYRING, ORIGIN)}
    assert (results["acme"].damage, results["acme"].seq) == ("modified checkpoint", size)
    assert f"stored column {column} " in (results["acme"].detail or "")
    assert results["acme"].checkpoints > 0 and results["acme"].signed_size > size


def test_a_tenant_flagged_but_intact_when_reread_is_checked_from_the_reread_rows(
    store: EmbeddedBackend,
) -> None:
    """Rows that change between the two reads (a flag, then an intact chain) still verify."""
    checkpoints = verify_store_module._checkpoints(store, None)
    for tenant, unlinked in zip(TENANTS, (True, False, True), strict=True):
        levels = {} if unlinked else verify_store_module._merkle_levels(store, tenant, tenant, 8)
        verdict = verify_store_module._Verdict(store, tenant, KEYRING, ORIGIN)
        result = verdict.judge(
            (100, 1), checkpoints[tenant], None if unlinked else levels[tenant], {}, [], None
        )  # as if every row check had failed
        assert result.damage is None and result.signed_size > 0, result


def test_levels_of_a_log_taller_than_asked_cover_the_prefix_asked_for(
    store: EmbeddedBackend,
) -> None:
    """A tenant grown past the heights asked for is verified up to what they can hold."""
    full = _merkle_levels(store, "acme", "acme", 10)["acme"]
    assert full is not None and full.size > 63
    clipped = _merkle_levels(store, "acme", "acme", 6)["acme"]
    assert clipped is not None and clipped.size == 63
    assert clipped.root(63) == full.root(63)
    assert clipped.range_root(50, 63) == full.range_root(50, 63)
