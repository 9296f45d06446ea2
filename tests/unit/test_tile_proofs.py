"""``prove --tiles`` on a tlog-tiles directory written here by hand (no store): event ids,
and random damage that must never yield a bundle ``verify_inclusion_bundle`` refuses."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from authtrail.errors import ConfigurationError, VerificationError
from authtrail.keys import load_keyring, load_signer, write_key_pair
from authtrail.stream.core.bundle import verify_inclusion_bundle
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.checkpoint import GENESIS_PREV_DIGEST, Checkpoint, sign
from authtrail.stream.core.merkle import leaf_hash, root_from_leaf_hashes
from authtrail.stream.core.tiles import encode_entry_bundle, group_roots, tiles_of_tree
from authtrail.tile_proofs import TilesDirectoryError, prove_from_tiles

SIZE = 300  # level 0: 000 and 001.p/44; level 1: 000.p/1


def _event(n: int) -> dict:
    return {"event_id": "twice" if n in (5, 6) else f"ev-{n}", "tenant_id": "acme",
            "occurred_at": 1_700_000_000_000_000 + n, "attributes": {"n": str(n)}}  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("served")
    key, pub = write_key_pair(root / "keys", "tiles-unit")
    leaves = [canonical_leaf(_event(n)) for n in range(SIZE)]
    levels = [[leaf_hash(leaf) for leaf in leaves]]
    while len(levels[-1]) >= 256:
        levels.append(group_roots(levels[-1]))
    directory = root / "acme"
    for tile in tiles_of_tree(SIZE):
        first = tile.index * 256
        path = directory / tile.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(levels[tile.level][first : first + tile.width]))
        if tile.level == 0:
            entries = directory / tile.entries_path()
            entries.parent.mkdir(parents=True, exist_ok=True)
            entries.write_bytes(encode_entry_bundle(leaves[first : first + tile.width]))
    root_hash = root_from_leaf_hashes(levels[0])
    checkpoint = Checkpoint(
        origin="authtrail.test/acme", size=SIZE, root=root_hash, batch_first_seq=1,
        batch_last_seq=SIZE, batch_root=root_hash, chain_hash=bytes(range(32)),
        prev_digest=GENESIS_PREV_DIGEST, time_micros=1,
    )  # fmt: skip
    (directory / "checkpoint").write_bytes(sign(checkpoint, load_signer(key)))
    return {"directory": directory, "keyring": load_keyring([pub])}


def test_every_record_proves_and_verifies(served: dict) -> None:
    for seq in (1, 2, 255, 256, 257, 299, 300):
        bundle = prove_from_tiles(served["directory"], seq)
        verdict = verify_inclusion_bundle(bundle, served["keyring"])
        assert (verdict.seq, verdict.event_id, verdict.chain_checked) == (
            seq, _event(seq - 1)["event_id"], False
        )  # fmt: skip


def test_event_ids(served: dict) -> None:
    assert prove_from_tiles(served["directory"], event_id="ev-280")["seq"] == 281
    with pytest.raises(ConfigurationError, match=r"is 2 records .*\(seq 6, seq 7\)"):
        prove_from_tiles(served["directory"], event_id="twice")
    with pytest.raises(ConfigurationError, match="no record"):
        prove_from_tiles(served["directory"], event_id="ev-")  # a prefix of many is none


@pytest.mark.parametrize("trial", range(40))
def test_random_damage_is_refused_or_harmless(served: dict, tmp_path: Path, trial: int) -> None:
    """Flip, cut or extend a random file; the prover refuses, or its bundle still verifies
    (the damage was off this proof's path)."""
    rng = random.Random(trial)
    directory = tmp_path / "acme"
    files = sorted(p for p in served["directory"].rglob("*") if p.is_file())
    for source in files:
        target = directory / source.relative_to(served["directory"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    victim = directory / rng.choice(files).relative_to(served["directory"])
    data = bytearray(victim.read_bytes())
    action = rng.choice(["flip", "cut", "extend"])
    if action == "flip":
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif action == "cut":
        del data[rng.randrange(len(data)) :]
    else:
        data += b"\x00"
    victim.write_bytes(bytes(data))
    seq = rng.choice([1, 100, 256, 257, 300])
    try:
        bundle = prove_from_tiles(directory, seq)
    except (TilesDirectoryError, ConfigurationError):
        return
    try:
        verify_inclusion_bundle(bundle, served["keyring"])
    except VerificationError:
        assert victim.name == "checkpoint", "the prover wrote a bundle that does not verify"
