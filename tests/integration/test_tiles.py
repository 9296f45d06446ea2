"""Stored tlog-tiles in the real engine (chdb): built by the sink's builder, read by the
prover, exported as a static directory and read back by an independent tile client.

One tenant holds 66 000 records: three tile levels (65 536 leaves complete a level-2
entry). The independent client below reads the exported files with its own code and
checks proofs with the RFC 9162 algorithms transcribed in tests/unit/merkle_reference.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authtrail.cli import main as cli
from authtrail.errors import ChainError, ConfigurationError, VerificationError
from authtrail.keys import load_keyring, load_signer, write_key_pair
from authtrail.sinks.backend import EmbeddedBackend, ServerBackend
from authtrail.sinks.http_front import HttpFront
from authtrail.sinks.proofs import LevelsInSql, TilesOrLeaves, prove_consistency, prove_inclusion
from authtrail.sinks.rows import (
    CHECKPOINTS_SCHEMA,
    EVENTS_SCHEMA,
    chained_row,
    checkpoint_row,
    to_arrow,
)
from authtrail.sinks.tables import create_statements
from authtrail.sinks.tile_builder import TENANTS_PER_ROUND, TileBuilder
from authtrail.sinks.tile_export import ExportConflict, export_tiles
from authtrail.sinks.tile_store import StoredTiles, read_entries
from authtrail.stream.core.bundle import (
    BundleProofError,
    verify_consistency_bundle,
    verify_inclusion_bundle,
)
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.checkpoint import open_checkpoint
from authtrail.stream.core.merkle import root_from_leaf_hashes
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.tree_proofs import consistency_ranges, inclusion_ranges, nodes_of_ranges
from authtrail.stream.worker.sequencing import _checkpoint_record
from tests.unit import merkle_reference as ref

pytestmark = pytest.mark.integration

ORIGIN = "authtrail.test"
BIG, SMALL = "bigcorp", "tiny"
BIG_RECORDS, SMALL_RECORDS = 66_000, 300
BATCH = 6_000  # checkpoints of bigcorp at 6000, 12000, … 66000


def _event(tenant: str, n: int, rng: random.Random) -> dict:
    return {
        "event_id": f"{tenant}-{n}", "tenant_id": tenant, "event_type": "LOGIN",
        "outcome": rng.choice(["SUCCESS", "FAILURE"]), "occurred_at": 1_700_000_000_000_000 + n,
        "user_name": f"user{rng.randrange(50)}", "attributes": {"n": str(n)} if n % 2 else {},
    }  # fmt: skip


@contextlib.contextmanager
def _empty_store(path: Path) -> Iterator[EmbeddedBackend]:
    """An embedded store under ``path`` with authtrail's tables, all empty."""
    with EmbeddedBackend(path / "clickhouse") as backend:
        for statement in create_statements():
            backend.command(statement)
        yield backend


def _build(root: Path) -> dict[str, Path]:
    key_path, pub_path = write_key_pair(root / "keys", "tiles-test")
    backend = EmbeddedBackend(root / "data" / "clickhouse")
    try:
        for statement in create_statements():
            backend.command(statement)
        sequencer = Sequencer(load_signer(key_path), ORIGIN, batch_size=BATCH, batch_interval=3600)
        rng = random.Random(11)
        rows, checkpoints = [], []
        plan = [(BIG, n) for n in range(BIG_RECORDS)] + [(SMALL, n) for n in range(SMALL_RECORDS)]
        for offset, (tenant, n) in enumerate(plan):
            event = _event(tenant, n, rng)
            link = sequencer.offer(tenant, event["event_id"], canonical_leaf(event), offset).link
            assert link is not None
            record = {"event": event, "seq": link.seq, "prev_hash": link.prev_hash,
                      "hash": link.hash, "leaf_hash": link.leaf_hash}  # fmt: skip
            rows.append(chained_row(record, "test", 0, offset))
            for due in sequencer.full_batches():
                signed = sequencer.close_batch(due)
                checkpoints.append(checkpoint_row(_checkpoint_record(signed), "test", 0, offset))
        for due in sequencer.open_batches():
            signed = sequencer.close_batch(due)
            checkpoints.append(checkpoint_row(_checkpoint_record(signed), "test", 0, len(plan)))
        backend.insert_arrow("events", to_arrow(rows, EVENTS_SCHEMA))
        backend.insert_arrow("checkpoints", to_arrow(checkpoints, CHECKPOINTS_SCHEMA))
        # As the sink does after its flushes: first part of the log, then the rest.
        builder = TileBuilder(backend)
        assert builder.extend({BIG: 300}) == 1
        assert builder.extend({BIG: BIG_RECORDS, SMALL: SMALL_RECORDS}) == 257 - 1 + 1 + 1
    finally:
        backend.close()
    return {"data": root / "data", "pub": pub_path, "root": root}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _build(tmp_path_factory.mktemp("tiles"))


@pytest.fixture
def store(built: dict[str, Path]) -> Iterator[EmbeddedBackend]:
    backend = EmbeddedBackend(built["data"] / "clickhouse")
    yield backend
    backend.close()


@pytest.fixture
def damaged(built: dict[str, Path], tmp_path: Path) -> Iterator[EmbeddedBackend]:
    """A copy of the store, for tests that tamper with it."""
    shutil.copytree(built["data"] / "clickhouse", tmp_path / "clickhouse", symlinks=True)
    backend = EmbeddedBackend(tmp_path / "clickhouse")
    yield backend
    backend.close()


def _leaf_hashes(store: EmbeddedBackend, tenant: str) -> list[bytes]:
    sql = f"SELECT leaf_hash FROM events WHERE tenant_id = '{tenant}' ORDER BY seq"
    return store.query_arrow(sql).column(0).to_pylist()


def _independent_mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes, written out again (no authtrail code)."""
    if len(hashes) == 1:
        return hashes[0]
    k = ref.largest_power_of_two_below(len(hashes))
    return hashlib.sha256(
        b"\x01" + _independent_mth(hashes[:k]) + _independent_mth(hashes[k:])
    ).digest()


def test_stored_entries_are_the_roots_of_full_tiles(store: EmbeddedBackend) -> None:
    leaves = _leaf_hashes(store, BIG)
    rows = store.query_arrow(
        "SELECT level, entry_index, hash FROM tiles WHERE tenant_id = 'bigcorp' "
        "ORDER BY level, entry_index"
    ).to_pylist()
    level_one = [row["hash"] for row in rows if row["level"] == 1]
    assert level_one == [_independent_mth(leaves[i * 256 : (i + 1) * 256]) for i in range(257)]
    assert [row["hash"] for row in rows if row["level"] == 2] == [_independent_mth(leaves[:65536])]
    assert {row["level"] for row in rows} == {1, 2}
    assert (
        store.query_arrow("SELECT count() FROM tiles WHERE tenant_id = 'tiny'").column(0)[0].as_py()
        == 1
    )  # 300 leaves: one full level-0 tile
    # Again, and after a restart: nothing more to write, nothing written twice.
    assert TileBuilder(store).catch_up() == 0
    assert store.query_arrow("SELECT count() FROM tiles").column(0)[0].as_py() == 259


def test_nodes_from_tiles_equal_nodes_hashed_from_every_leaf(store: EmbeddedBackend) -> None:
    for size in (6_000, 65_536, 66_000):
        for index in (0, 255, 256, 5_999, size - 1):
            wanted = nodes_of_ranges(inclusion_ranges(index, size))
            assert StoredTiles(store).nodes(BIG, size, wanted) == LevelsInSql(store).nodes(
                BIG, size, wanted
            )
        wanted = nodes_of_ranges(consistency_ranges(5_999 if size > 6_000 else 1, size))
        assert StoredTiles(store).nodes(BIG, size, wanted) == LevelsInSql(store).nodes(
            BIG, size, wanted
        )


def test_ranges_read_together_give_exactly_the_entries_asked_for(store: EmbeddedBackend) -> None:
    # A proof skips its own leaf; the two ranges beside it are read as one query range.
    asked = [(0, 0, 10), (0, 11, 20), (1, 3, 5), (1, 7, 9)]
    found = read_entries(store, BIG, asked)
    expected = {(level, i) for level, start, end in asked for i in range(start, end)}
    assert set(found) == expected
    leaves = _leaf_hashes(store, BIG)
    assert [found[0, i] for i in range(11, 20)] == leaves[11:20]


def test_witness_proofs_read_the_tiles_and_fall_back_to_the_leaves_only_where_missing(
    damaged: EmbeddedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    wanted = nodes_of_ranges(consistency_ranges(6_000, 66_000))
    expected = LevelsInSql(damaged).nodes(BIG, 66_000, wanted)
    with caplog.at_level(logging.INFO, logger="authtrail.sinks.proofs"):
        assert TilesOrLeaves(damaged).nodes(BIG, 66_000, wanted) == expected
        assert "hashed from the leaves" not in caplog.text
        damaged.command("ALTER TABLE tiles DELETE WHERE level = 1", {"mutations_sync": 2})
        assert TilesOrLeaves(damaged).nodes(BIG, 66_000, wanted) == expected
        assert "hashed from the leaves" in caplog.text


def test_proofs_from_tiles_verify(store: EmbeddedBackend, built: dict[str, Path]) -> None:
    keyring = load_keyring([built["pub"]])
    for seq in (1, 256, 257, 65_536, 65_537, 66_000):
        bundle = prove_inclusion(store, ORIGIN, BIG, seq, nodes=StoredTiles(store))
        assert bundle["tree_size"] == 66_000
        verify_inclusion_bundle(bundle, keyring, log_origin=ORIGIN)
    bundle = prove_consistency(store, ORIGIN, BIG, 6_000, 66_000, nodes=StoredTiles(store))
    verify_consistency_bundle(bundle, keyring)


def test_a_tampered_tile_never_makes_a_bad_proof_pass(
    damaged: EmbeddedBackend, built: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    keyring = load_keyring([built["pub"]])
    # Entry 0 of level 2 is a sibling on the path of every leaf past 65 536.
    damaged.command(
        "ALTER TABLE tiles UPDATE hash = unhex(repeat('ab', 32)) "
        "WHERE tenant_id = 'bigcorp' AND level = 2 AND entry_index = 0",
        {"mutations_sync": 2},
    )
    bundle = prove_inclusion(damaged, ORIGIN, BIG, 65_999, nodes=StoredTiles(damaged))
    with pytest.raises(BundleProofError, match="seq 65999"):
        verify_inclusion_bundle(bundle, keyring)
    # Entry 240 of level 1 (leaves 61 440..61 695) is in the subtree [61 440, 65 536) that
    # the consistency proof from 60 000 to 66 000 holds.
    damaged.command(
        "ALTER TABLE tiles UPDATE hash = unhex(repeat('ab', 32)) "
        "WHERE tenant_id = 'bigcorp' AND level = 1 AND entry_index = 240",
        {"mutations_sync": 2},
    )
    bundle = prove_consistency(damaged, ORIGIN, BIG, 60_000, 66_000, nodes=StoredTiles(damaged))
    with pytest.raises(BundleProofError):
        verify_consistency_bundle(bundle, keyring)
    # The prover's default checks the tiles' proof against the stored checkpoint first,
    # and recomputes from the leaves: the bundle is right, the damage named.
    with caplog.at_level(logging.WARNING, logger="authtrail.sinks.proofs"):
        verify_inclusion_bundle(prove_inclusion(damaged, ORIGIN, BIG, 65_999), keyring)
    assert "does not lead to the stored checkpoint of size 66000" in caplog.text
    # A tile entry not built yet (deleted here): recomputed, quietly.
    damaged.command("ALTER TABLE tiles DELETE WHERE level = 2", {"mutations_sync": 2})
    verify_consistency_bundle(prove_consistency(damaged, ORIGIN, BIG, 6_000, 66_000), keyring)


# --- export --------------------------------------------------------------------------


def _read_tile(directory: Path, level: int, index: int, width: int) -> list[bytes]:
    """The client side: tile path and contents from the spec, written out again."""
    digits = f"{index:d}"
    digits = digits.zfill((len(digits) + 2) // 3 * 3)
    parts = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    name = "/".join([*(f"x{part}" for part in parts[:-1]), parts[-1]])
    path = directory / "tile" / str(level) / (name if width == 256 else f"{name}.p/{width}")
    data = path.read_bytes()
    assert len(data) == 32 * width
    return [data[i : i + 32] for i in range(0, len(data), 32)]


def _client_node(directory: Path, size: int, height: int, index: int) -> bytes:
    """Node (height, index) of the tree of ``size`` from the tiles a client fetches."""
    level, shift = divmod(height, 8)
    first = index << shift
    tile, count = first // 256, size >> (8 * level)
    width = min(256, count - tile * 256)
    entries = _read_tile(directory, level, tile, width)
    start = first - tile * 256
    return _independent_mth(entries[start : start + (1 << shift)])


def _client_inclusion_path(directory: Path, size: int, index: int) -> list[bytes]:
    """PATH(index, D[size]) (RFC 6962 §2.1.1) from tiles: the recursion, with each sibling
    subtree folded from perfect nodes read out of the tiles."""

    def subtree(start: int, end: int) -> bytes:
        if end - start & (end - start - 1) == 0:  # perfect: one node
            height = (end - start).bit_length() - 1
            return _client_node(directory, size, height, start >> height)
        k = ref.largest_power_of_two_below(end - start)
        left, right = subtree(start, start + k), subtree(start + k, end)
        return hashlib.sha256(b"\x01" + left + right).digest()

    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = ref.largest_power_of_two_below(end - start)
        if index < start + k:
            path.insert(0, subtree(start + k, end))
            end = start + k
        else:
            path.insert(0, subtree(start, start + k))
            start += k
    return path


def test_export_serves_proofs_to_an_independent_client(
    store: EmbeddedBackend, built: dict[str, Path], tmp_path: Path
) -> None:
    keyring = load_keyring([built["pub"]])
    directory = tmp_path / "bigcorp"
    summary = export_tiles(store, BIG, directory)
    assert (summary.size, summary.tiles, summary.entry_bundles) == (66_000, 258 + 2 + 1, 258)
    assert not summary.tile_mismatches
    note = (directory / "checkpoint").read_bytes()
    checkpoint = open_checkpoint(note, keyring, f"{ORIGIN}/{BIG}")
    size, root = checkpoint.size, checkpoint.root
    assert sorted(p.name for p in (directory / "tile" / "2").rglob("*")) == ["000.p", "1"]
    assert (directory / "tile" / "0" / "257.p" / "208").is_file()  # 66 000 = 257 * 256 + 208
    # Entries hash to the level-0 tiles, and are the canonical leaves.
    bundle = (directory / "tile" / "entries" / "257.p" / "208").read_bytes()
    entries, position = [], 0
    while position < len(bundle):
        length = int.from_bytes(bundle[position : position + 2], "big")
        entries.append(bundle[position + 2 : position + 2 + length])
        position += 2 + length
    assert [hashlib.sha256(b"\x00" + e).digest() for e in entries] == _read_tile(
        directory, 0, 257, 208
    )
    assert entries[-1] == canonical_leaf(_event(BIG, BIG_RECORDS - 1, _rng_at(BIG_RECORDS - 1)))
    # Proofs from the files alone, checked with the RFC 9162 algorithm.
    for index in (0, 255, 4_097, 65_535, 65_536, size - 1):
        leaf = _client_node(directory, size, 0, index)
        path = _client_inclusion_path(directory, size, index)
        assert ref.rfc9162_root_from_inclusion(leaf, index, size, path) == root
    # Again: nothing changes; an older size into it would roll the checkpoint back.
    again = export_tiles(store, BIG, directory)  # continues from its last full tile
    assert (again.resumed_from, again.written, again.unchanged) == (65_792, 0, 4 + 1)
    full = export_tiles(store, BIG, directory, full=True)
    assert full.resumed_from == 0 and full.written == 0 and full.unchanged == summary.written
    with pytest.raises(ConfigurationError, match="would roll it back"):
        export_tiles(store, BIG, directory, tree_size=60_000)


def _rng_at(n: int) -> random.Random:
    """The generator state _build had when it made bigcorp's event ``n``."""
    rng = random.Random(11)
    for earlier in range(n):
        _event(BIG, earlier, rng)
    return rng


def test_an_older_export_grows_and_a_changed_tile_is_refused(
    store: EmbeddedBackend, tmp_path: Path
) -> None:
    directory = tmp_path / "grow"
    first = export_tiles(store, BIG, directory, tree_size=6_000, entries=False)
    assert (first.size, first.entry_bundles) == (6_000, 0)
    assert (directory / "tile" / "0" / "023.p" / "112").is_file()  # 6000 = 23 * 256 + 112
    grown = export_tiles(store, BIG, directory, entries=False)
    assert grown.resumed_from == 23 * 256  # the 23 full level-0 tiles were there already
    assert not (directory / "tile" / "entries").exists()
    forged = directory / "tile" / "0" / "000"
    forged.write_bytes(b"\x00" * 8192)
    with pytest.raises(VerificationError, match="000 does not hash to entry 0 of level 1"):
        export_tiles(store, BIG, directory, entries=False)
    with pytest.raises(ExportConflict, match="never changes"):
        export_tiles(store, BIG, directory, entries=False, full=True)


def test_an_export_continues_from_the_directory_and_refuses_changed_files(
    store: EmbeddedBackend, built: dict[str, Path], tmp_path: Path
) -> None:
    directory = tmp_path / "resume"
    first = export_tiles(store, BIG, directory, tree_size=60_000)
    grown = export_tiles(store, BIG, directory)
    assert (grown.size, grown.resumed_from) == (66_000, 60_000 - 60_000 % 256)
    fresh = export_tiles(store, BIG, tmp_path / "fresh")
    files = {p.relative_to(tmp_path / "fresh") for p in (tmp_path / "fresh").rglob("*")}
    resumed = {p.relative_to(directory) for p in directory.rglob("*")}
    assert files <= resumed  # the same tiles and bundles, the older partial ones besides
    for name in files:
        if (tmp_path / "fresh" / name).is_file():
            assert (tmp_path / "fresh" / name).read_bytes() == (directory / name).read_bytes()
    assert first.size == 60_000 and fresh.resumed_from == 0
    # A changed level-1 entry: its level-0 tile no longer hashes to it; changed with the
    # level-0 tile, the root catches it, before anything above level 0 is written.
    level_one, level_zero = directory / "tile" / "1" / "000", directory / "tile" / "0" / "002"
    good, good_zero = level_one.read_bytes(), level_zero.read_bytes()
    level_one.write_bytes(good[:64] + bytes(32) + good[96:])
    with pytest.raises(VerificationError, match="002 does not hash to entry 2 of level 1"):
        export_tiles(store, BIG, directory)
    forged_zero = bytes(32) + good_zero[32:]
    forged_entry = root_from_leaf_hashes(
        [forged_zero[i : i + 32] for i in range(0, len(forged_zero), 32)]
    )
    level_zero.write_bytes(forged_zero)
    level_one.write_bytes(good[:64] + forged_entry + good[96:])
    with pytest.raises(VerificationError, match="already served below them hash to root"):
        export_tiles(store, BIG, directory)
    level_one.write_bytes(good)
    level_zero.write_bytes(good_zero)
    # A checkpoint of another tree: refused, whatever the tiles say.
    shutil.copy(tmp_path / "fresh" / "checkpoint", tmp_path / "fresh.checkpoint")
    small = export_tiles(store, SMALL, tmp_path / "small")
    shutil.copy(tmp_path / "small" / "checkpoint", directory / "checkpoint")
    with pytest.raises(
        VerificationError, match="not the stored checkpoint of that size of tenant 'bigcorp'"
    ):
        export_tiles(store, BIG, directory)
    assert small.size == SMALL_RECORDS
    # A missing tile it needs is named; --full rebuilds it from the leaves.
    shutil.copy(tmp_path / "fresh.checkpoint", directory / "checkpoint")
    (directory / "tile" / "0" / "100").unlink()
    with pytest.raises(VerificationError, match="tile/0/100 is missing; nothing exported"):
        export_tiles(store, BIG, directory)
    repaired = export_tiles(store, BIG, directory, full=True)
    assert repaired.written == 1 and (directory / "tile" / "0" / "100").is_file()


def test_export_of_a_damaged_store(damaged: EmbeddedBackend, tmp_path: Path) -> None:
    damaged.command(
        "ALTER TABLE tiles UPDATE hash = unhex(repeat('cd', 32)) "
        "WHERE tenant_id = 'bigcorp' AND level = 1 AND entry_index = 7",
        {"mutations_sync": 2},
    )
    summary = export_tiles(damaged, BIG, tmp_path / "a", entries=False)
    assert summary.tile_mismatches == [(1, 7)]  # reported; the files come from the leaves
    damaged.command(
        "ALTER TABLE events UPDATE user_name = 'mallory' WHERE tenant_id = 'bigcorp' AND seq = 9",
        {"mutations_sync": 2},
    )
    with pytest.raises(ChainError, match="seq 9: modified"):
        export_tiles(damaged, BIG, tmp_path / "b")
    assert not (tmp_path / "b" / "checkpoint").exists()


def test_export_tiles_command(built: dict[str, Path], tmp_path: Path) -> None:
    def authtrail(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "authtrail.cli", "--data-dir", str(built["data"]),
            *arguments], capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    done = authtrail("export-tiles", "--tenant", SMALL, str(tmp_path / "tiny"))
    assert done.returncode == 0, done.stderr
    assert "tenant 'tiny': tree of size 300" in done.stderr
    assert (tmp_path / "tiny" / "tile" / "entries" / "001.p" / "44").is_file()
    missing = authtrail("export-tiles", "--tenant", "nobody", str(tmp_path / "x"))
    assert missing.returncode == 2 and "not signed yet" in missing.stderr
    usage = authtrail("export-tiles", str(tmp_path / "x"))
    assert usage.returncode == 2


def _verify(data: Path, pub: Path) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["--data-dir", str(data), "verify", "--json", "--key", str(pub)])
    return code, json.loads(out.getvalue())


def test_verify_names_a_tile_that_disagrees_with_its_leaves(
    built: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHTRAIL_LOG_ORIGIN", ORIGIN)
    code, report = _verify(built["data"], built["pub"])
    assert code == 0, report
    data = tmp_path / "data"
    shutil.copytree(built["data"], data, symlinks=True)
    store = EmbeddedBackend(data / "clickhouse")
    try:
        store.command(
            "ALTER TABLE tiles UPDATE hash = unhex(repeat('cd', 32)) "
            "WHERE tenant_id = 'bigcorp' AND level = 1 AND entry_index = 7",
            {"mutations_sync": 2},
        )
    finally:
        store.close()
    code, report = _verify(data, built["pub"])
    assert code == 1
    results = {result["tenant_id"]: result for result in report["tenants"]}
    assert (results[BIG]["damage"], results[BIG]["seq"]) == ("tile mismatch", 7 * 256 + 1)
    assert "stored tile entry 7 of level 1 (leaves 1793..2048)" in results[BIG]["detail"]
    assert results[SMALL]["damage"] is None


def test_proofs_from_tiles_through_the_analysts_front(
    store: EmbeddedBackend, built: dict[str, Path]
) -> None:
    """`authtrail prove` beside a running `up` reads the tiles over the read-only front."""
    keyring = load_keyring([built["pub"]])
    with HttpFront(store) as front, ServerBackend(front.analyst_url, read_only=True) as server:
        bundle = prove_inclusion(server, ORIGIN, BIG, 65_999, nodes=StoredTiles(server))
        verify_inclusion_bundle(bundle, keyring)
        verify_consistency_bundle(prove_consistency(server, ORIGIN, BIG, 6_000, 66_000), keyring)


def test_entries_lost_after_their_insert_was_recorded_are_built_again(tmp_path: Path) -> None:
    """A builder in a new process builds entries whose earlier insert the engine recorded
    (its dedup token) but whose rows are gone, as after a kill between the two: it must not
    be dropped as a duplicate and leave a hole in the entries."""
    with _empty_store(tmp_path) as backend:
        backend.command(
            "INSERT INTO events (tenant_id, seq, leaf_hash, occurred_at) "
            "SELECT 'acme', number + 1, SHA256(toString(number)), now64(6) FROM numbers(512)"
        )
        assert TileBuilder(backend).extend({"acme": 512}) == 2
        # The rows go; the engine's deduplication log keeps the insert's token.
        backend.command("ALTER TABLE tiles DELETE WHERE 1", {"mutations_sync": 2})
        assert TileBuilder(backend).extend({"acme": 512}) == 2  # the same insert again
        entries = backend.query_arrow(
            "SELECT entry_index, hash FROM tiles WHERE tenant_id = 'acme' ORDER BY entry_index"
        ).to_pylist()
        leaves = _leaf_hashes(backend, "acme")
        assert entries == [
            {"entry_index": i, "hash": _independent_mth(leaves[i * 256 : (i + 1) * 256])}
            for i in range(2)
        ]


def test_many_tenants_are_built_in_rounds_and_a_damaged_one_stops_only_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """More tenants than one round takes, each with one full tile and a partial one; one
    tenant misses a seq: its entries stay unbuilt (with a warning), the others' are the
    RFC 6962 roots of their leaves."""
    tenants = [f"t{n:03d}" for n in range(TENANTS_PER_ROUND + 31)]
    with _empty_store(tmp_path) as backend:
        backend.command(
            "INSERT INTO events (tenant_id, seq, leaf_hash, occurred_at) "
            "SELECT concat('t', leftPad(toString(intDiv(number, 300)), 3, '0')), "
            "number % 300 + 1, SHA256(toString(number)), now64(6) "
            f"FROM numbers({300 * len(tenants)}) WHERE NOT (intDiv(number, 300) = 7 "
            "AND number % 300 = 99)"  # t007 misses seq 100
        )
        builder = TileBuilder(backend)
        with caplog.at_level(logging.WARNING):
            assert builder.extend(dict.fromkeys(tenants, 300)) == len(tenants) - 1
        assert builder.catch_up() == 0  # nothing left: the damaged tenant stays unbuilt
        stored = backend.query_arrow(
            "SELECT tenant_id, level, entry_index, hash FROM tiles ORDER BY tenant_id"
        ).to_pylist()
        assert [row["tenant_id"] for row in stored] == [t for t in tenants if t != "t007"]
        assert {(row["level"], row["entry_index"]) for row in stored} == {(1, 0)}
        for row in stored[:3] + stored[-3:]:
            assert row["hash"] == _independent_mth(_leaf_hashes(backend, row["tenant_id"])[:256])
    assert "tiles of tenant 't007' not extended: seq 100 is not stored" in caplog.text


def test_repeated_hashes_below_a_tile_stop_it_unless_they_are_equal_entries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The builder takes a tenant's hashes as read when they are one per index; otherwise
    it looks at them one by one: a seq stored twice stops its tenant, so does a level-1
    entry stored twice with different hashes, while one stored twice with the same hash
    (two builders wrote the same entry) still makes the entry above it. One tenant has as
    many rows as seqs asked, one of them twice and one missing."""
    with _empty_store(tmp_path) as backend:
        backend.command(
            "INSERT INTO events (tenant_id, seq, leaf_hash, occurred_at) "
            "SELECT 'twice', number % 256 + 1, SHA256(toString(number % 256)), now64(6) "
            "FROM numbers(257)"  # seq 1 stored twice (the same row)
        )
        backend.command(
            "INSERT INTO events (tenant_id, seq, leaf_hash, occurred_at) "
            "SELECT 'swap', if(number = 5, 5, number + 1), SHA256(toString(number)), now64(6) "
            "FROM numbers(256)"  # seq 5 twice, seq 6 missing: 256 rows all the same
        )
        # Level-1 entries of two tenants, as if their 65 536 records' tiles were built.
        for tenant, extra in (("same", "SHA256(toString(17))"), ("differ", "SHA256('x')")):
            backend.command(
                "INSERT INTO tiles (tenant_id, level, entry_index, hash) "
                f"SELECT '{tenant}', 1, number, SHA256(toString(number)) FROM numbers(256) "
                f"UNION ALL SELECT '{tenant}', 1, {17 if tenant == 'same' else 30}, {extra}"
            )
        builder = TileBuilder(backend)
        with caplog.at_level(logging.WARNING):
            assert builder.extend({"twice": 256, "swap": 256, "same": 65_536,
                                   "differ": 65_536}) == 1  # fmt: skip
        built = backend.query_arrow(
            "SELECT tenant_id, level, entry_index, hash FROM tiles WHERE level = 2"
        ).to_pylist()
    entries = [hashlib.sha256(str(n).encode()).digest() for n in range(256)]
    assert built == [
        {"tenant_id": "same", "level": 2, "entry_index": 0, "hash": _independent_mth(entries)}
    ]
    assert "tiles of tenant 'twice' not extended: seq 1 is stored twice" in caplog.text
    assert "tiles of tenant 'swap' not extended: seq 5 is stored twice" in caplog.text
    assert (
        "tiles of tenant 'differ' not extended: entry 30 of level 1 is stored twice with "
        "different hashes" in caplog.text
    )
