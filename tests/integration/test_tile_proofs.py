"""``authtrail prove --tiles DIR``: proofs from an exported tlog-tiles directory alone.

A real store (the real Sequencer chains and signs; rows through the sink's row and Arrow
path) is exported with the real ``export-tiles`` command; ``prove --tiles`` and
``verify-proof`` run as subprocesses, as an auditor would run them. The bundles must be
the store prover's (same leaf hash and proof), and every tampered directory must be
refused, by the prover or by ``verify-proof``.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from authtrail.errors import ConfigurationError
from authtrail.keys import load_signer, write_key_pair
from authtrail.sinks.backend import EmbeddedBackend
from authtrail.sinks.proofs import prove_inclusion
from authtrail.sinks.rows import (
    CHECKPOINTS_SCHEMA,
    EVENTS_SCHEMA,
    chained_row,
    checkpoint_row,
    to_arrow,
)
from authtrail.sinks.tables import create_statements
from authtrail.stream.core.canonical import SEALED_PREFIX, canonical_leaf
from authtrail.stream.core.merkle import leaf_hash
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.tiles import Tile
from authtrail.stream.worker.sequencing import _checkpoint_record
from authtrail.tile_proofs import TilesDirectoryError, prove_from_tiles
from tests.unit.test_core_imports import FORBIDDEN

pytestmark = pytest.mark.integration

ORIGIN = "authtrail.test"
ACME, GLOBEX = "acme", "globex"
RECORDS = {ACME: 700, GLOBEX: 40}  # acme: level-0 tiles 000, 001, 002.p/188; level 1 .p/2
SEALED_SEQ = 300  # acme's record 300 has a sealed user name: a version-2 leaf


def _event(tenant: str, n: int, rng: random.Random) -> dict:
    sealed = tenant == ACME and n + 1 == SEALED_SEQ
    return {
        "event_id": f"{tenant}-{n}",
        "tenant_id": tenant,
        "event_type": rng.choice(["LOGIN", "LOGIN_FAILED", "LOGOUT"]),
        "outcome": "SUCCESS",
        "occurred_at": 1_700_000_000_000_000 + n * 1000,
        "received_at": 1_700_000_000_000_500 + n * 1000 if n % 4 else None,
        "user_name": f"{SEALED_PREFIX}00112233445566778899aabbccddeeff:bm9uY2U=:Y3Q="
        if sealed
        else f"user{rng.randrange(20)}",
        "user_agent": 'Mozilla/5.0 "quoted" \\ é',
        "attributes": {"k": str(n), "z": "last"} if n % 3 else {},
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tile-proofs")
    key_path, pub_path = write_key_pair(root / "keys", "tile-proof-test")
    backend = EmbeddedBackend(root / "data" / "clickhouse")
    try:
        for statement in create_statements():
            backend.command(statement)
        sequencer = Sequencer(load_signer(key_path), ORIGIN, batch_size=100, batch_interval=3600)
        rng = random.Random(7)
        rows, checkpoints = [], []
        plan = [(t, n) for t in (ACME, GLOBEX) for n in range(RECORDS[t])]
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
    finally:
        backend.close()
    built = {"data": root / "data", "pub": pub_path, "root": root}
    for tenant in (ACME, GLOBEX):
        done = _cli(built, "export-tiles", "--tenant", tenant, str(root / tenant))
        assert done.returncode == 0, done.stderr
    done = _cli(built, "export-tiles", "--tenant", ACME, "--no-entries", str(root / "bare"))
    assert done.returncode == 0, done.stderr
    return built


def _cli(built: dict[str, Path], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(built["data"]), *arguments],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _prove_and_verify(built: dict[str, Path], directory: Path, *target: str) -> tuple[int, dict]:
    out = built["root"] / "bundle.json"
    out.unlink(missing_ok=True)
    proved = _cli(built, "prove", "--tiles", str(directory), *target, "--out", str(out))
    assert proved.returncode == 0, proved.stderr
    verified = _cli(built, "verify-proof", "--key", str(built["pub"]), "--json", str(out))
    return verified.returncode, json.loads(out.read_text())


def _copy(built: dict[str, Path], tmp_path: Path, tenant: str = ACME) -> Path:
    return Path(shutil.copytree(built["root"] / tenant, tmp_path / tenant))


def _flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("seq", [1, 256, 257, SEALED_SEQ, 513, 700])
def test_the_tiles_give_the_store_provers_bundle_and_it_verifies(
    built: dict[str, Path], seq: int
) -> None:
    directory = built["root"] / ACME
    code, bundle = _prove_and_verify(built, directory, "--seq", str(seq))
    assert code == 0
    assert "chain" not in bundle and bundle["tree_size"] == 700
    assert bundle["checkpoint"] == (directory / "checkpoint").read_text()
    with EmbeddedBackend(built["data"] / "clickhouse", read_only=True) as backend:
        stored = prove_inclusion(backend, ORIGIN, ACME, seq, tree_size=700)
    for member in ("log_origin", "tenant_id", "seq", "canonical_leaf", "leaf_hash",
                   "inclusion_proof", "checkpoint"):  # fmt: skip
        assert bundle[member] == stored[member], member
    # The event, null fields and empty maps left out (docs/INTEGRITY.md §10.2).
    assert bundle["event"] == {k: v for k, v in stored["event"].items() if v not in (None, {})}
    if seq == SEALED_SEQ:
        assert base64.b64decode(bundle["canonical_leaf"]).startswith(b"authtrail-event-v2\n")


def test_by_event_id(built: dict[str, Path]) -> None:
    directory = built["root"] / ACME
    code, bundle = _prove_and_verify(built, directory, "acme-641")
    assert code == 0 and bundle["seq"] == 642
    unknown = _cli(built, "prove", "--tiles", str(directory), "nobody")
    assert unknown.returncode == 2 and "no record" in unknown.stderr


def test_usage_errors(built: dict[str, Path]) -> None:
    directory = built["root"] / ACME
    with pytest.raises(ConfigurationError, match="not in the tree"):
        prove_from_tiles(directory, 701)
    with pytest.raises(ConfigurationError, match="tenant 'acme', not 'globex'"):
        prove_from_tiles(directory, 1, tenant_id=GLOBEX)
    with pytest.raises(ConfigurationError, match="--no-entries"):
        prove_from_tiles(built["root"] / "bare", 1)
    with pytest.raises(ConfigurationError, match="not a tlog-tiles directory"):
        prove_from_tiles(built["root"] / "nothing", 1)
    for arguments in (["--consistency", "1", "2"], ["--tree-size", "600", "--seq", "1"]):
        done = _cli(built, "prove", "--tiles", str(directory), *arguments)
        assert done.returncode == 2, done.stderr


# --- tampered directories -------------------------------------------------------------
# acme seq 1 (index 0) in a tree of 700: its proof needs level-0 entries 1, 2..3, …,
# 128..255 (tile 000), the level-1 entry 1 (tile 1/000.p/2) and 512..699 (tiles 002.p/188).


def test_a_flipped_tile_byte_on_the_path_is_refused(built: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(built, tmp_path)
    _flip(directory / "tile" / "1" / "000.p" / "2", 32 + 5)  # level-1 entry 1
    with pytest.raises(TilesDirectoryError, match=r"lead seq 1 to root .* states"):
        prove_from_tiles(directory, 1)
    refused = _cli(built, "prove", "--tiles", str(directory), "--seq", "1")
    assert refused.returncode == 1 and "no proof written" in refused.stderr
    _flip(directory / "tile" / "1" / "000.p" / "2", 32 + 5)
    _flip(directory / "tile" / "0" / "002.p" / "188", 32 * 100)
    with pytest.raises(TilesDirectoryError, match="lead seq 1 to root"):
        prove_from_tiles(directory, 1)


def test_a_flipped_entry_byte_is_refused(built: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(built, tmp_path)
    bundle = directory / "tile" / "entries" / "000"
    _flip(bundle, 2 + 40)  # inside the first entry's leaf
    with pytest.raises(TilesDirectoryError, match=r"seq 1 that hashes to .* states"):
        prove_from_tiles(directory, 1)


def test_a_forged_entry_with_its_level0_tile_entry_rehashed_is_refused(
    built: dict[str, Path], tmp_path: Path
) -> None:
    directory = _copy(built, tmp_path)
    bundle_path, tile_path = (directory / Tile(0, 0, 256).entries_path(),
                              directory / Tile(0, 0, 256).path())  # fmt: skip
    data = bundle_path.read_bytes()
    length = int.from_bytes(data[:2], "big")
    leaf = data[2 : 2 + length]
    forged = (
        leaf.replace(b"LOGIN", b"LOGXN", 1)
        if b"LOGIN" in leaf
        else leaf.replace(b"LOGOUT", b"LOGOFF")
    )
    assert forged != leaf and len(forged) == length
    bundle_path.write_bytes(data[:2] + forged + data[2 + length :])
    tile_path.write_bytes(leaf_hash(forged) + tile_path.read_bytes()[32:])
    with pytest.raises(TilesDirectoryError, match="lead seq 1 to root"):
        prove_from_tiles(directory, 1)


@pytest.mark.parametrize("name", ["tile/0/000", "tile/1/000.p/2", "tile/entries/000"])
@pytest.mark.parametrize("damage", ["missing", "truncated", "extended"])
def test_missing_or_cut_files_are_refused(
    built: dict[str, Path], tmp_path: Path, name: str, damage: str
) -> None:
    directory = _copy(built, tmp_path)
    path = directory / name
    if damage == "missing":
        path.unlink()
    else:
        data = path.read_bytes()
        path.write_bytes(data[:-1] if damage == "truncated" else data + b"\x00")
    with pytest.raises(TilesDirectoryError, match=f"{name}.*no proof written"):
        prove_from_tiles(directory, 1)


def test_a_swapped_checkpoint_is_refused(built: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(built, tmp_path)
    shutil.copy(built["root"] / GLOBEX / "checkpoint", directory / "checkpoint")
    with pytest.raises(TilesDirectoryError, match="missing"):  # tile/0/000.p/40 is not there
        prove_from_tiles(directory, 1)
    # A checkpoint of this log with another root (signature left as it was).
    note = (built["root"] / ACME / "checkpoint").read_text()
    lines = note.split("\n")
    lines[2] = base64.b64encode(b"\x11" * 32).decode()
    (directory / "checkpoint").write_text("\n".join(lines))
    with pytest.raises(TilesDirectoryError, match=r"lead seq 1 to root .* states 1111"):
        prove_from_tiles(directory, 1)


def test_a_checkpoint_with_a_broken_signature_fails_verify_proof(
    built: dict[str, Path], tmp_path: Path
) -> None:
    directory = _copy(built, tmp_path)
    note = (directory / "checkpoint").read_text()
    body, _, signature = note.rpartition("\n\n")
    name, key = signature.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(key))
    raw[-1] ^= 0x01
    (directory / "checkpoint").write_text(f"{body}\n\n{name} {base64.b64encode(raw).decode()}\n")
    code, _ = _prove_and_verify(built, directory, "--seq", "5")  # the prover checks no key
    assert code == 1


def test_prove_from_tiles_loads_no_store_client(built: dict[str, Path]) -> None:
    """No store needed, none loaded: the command imports no ClickHouse, Arrow or Kafka code."""
    out = built["root"] / "fresh.json"
    argv = ["prove", "--tiles", str(built["root"] / ACME), "--seq", "3", "--out", str(out)]
    probe = (
        "import json, sys\nfrom authtrail.cli.main import main\n"
        f"code = main({argv!r})\n"
        f"loaded = sorted(m for m in {FORBIDDEN!r} if m in sys.modules)\n"
        "print('PROBE', json.dumps([code, loaded]))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    probe_line = result.stdout.strip().splitlines()[-1]
    assert json.loads(probe_line.removeprefix("PROBE ")) == [0, []], result.stderr
    assert json.loads(out.read_text())["seq"] == 3
