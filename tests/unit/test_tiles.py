"""authtrail.stream.core.tiles: C2SP tlog-tiles paths and layout, and proofs from tile entries.

Known answers from the spec's text (c2sp.org/tlog-tiles); tile contents and proofs
checked against the naive RFC 6962 transcription in merkle_reference, which shares no
code with authtrail.stream.core.merkle.
"""

from __future__ import annotations

from collections import Counter

import pytest

from authtrail.errors import FormatError, InvalidArgumentError, RootMismatchError
from authtrail.stream.core.merkle import leaf_hash, verify_consistency, verify_inclusion_leaf_hash
from authtrail.stream.core.tiles import (
    MAX_ENTRY_BYTES,
    TILE_WIDTH,
    Tile,
    decode_entry_bundle,
    decode_tile,
    encode_entry_bundle,
    entry_ranges,
    first_entry_mismatch,
    group_roots,
    nodes_from_entries,
    tile_holding,
    tile_index_path,
    tiles_of_tree,
)
from authtrail.stream.core.tree_proofs import (
    consistency_ranges,
    inclusion_ranges,
    nodes_of_ranges,
    proof_from_nodes,
)
from tests.unit import merkle_reference as ref

ENTRIES = [f"entry {n}".encode() for n in range(70)]
SMALL_HEIGHT = 2  # tiles of 4 hashes: levels 0..3 within 70 leaves


def _levels(leaf_hashes: list[bytes], tile_height: int) -> dict[tuple[int, int], bytes]:
    """Every entry of every level, built with group_roots."""
    entries: dict[tuple[int, int], bytes] = {}
    level, current = 0, leaf_hashes
    while current:
        entries.update(((level, index), value) for index, value in enumerate(current))
        current, level = group_roots(current, tile_height), level + 1
    return entries


def test_tile_index_paths_as_the_spec_spells_them() -> None:
    assert tile_index_path(0) == "000"
    assert tile_index_path(67) == "067"
    assert tile_index_path(999) == "999"
    assert tile_index_path(1000) == "x001/000"
    assert tile_index_path(1234067) == "x001/x234/067"
    with pytest.raises(InvalidArgumentError):
        tile_index_path(-1)


def test_tile_and_entry_bundle_paths() -> None:
    assert Tile(0, 1234067, 256).path() == "tile/0/x001/x234/067"
    assert Tile(2, 5, 17).path() == "tile/2/005.p/17"
    assert Tile(0, 1000, 112).entries_path() == "tile/entries/x001/000.p/112"
    assert Tile(0, 3, 256).entries_path() == "tile/entries/003"
    with pytest.raises(InvalidArgumentError, match="no entry bundle"):
        Tile(1, 0, 256).entries_path()
    for level, index, width in ((64, 0, 1), (0, 0, 0), (0, 0, 257), (0, -1, 1)):
        with pytest.raises(InvalidArgumentError):
            Tile(level, index, width)


def test_tree_of_70000_is_the_spec_example() -> None:
    """ "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial
    level 0 tile of width 112, one full level 1 tile, one partial level 1 tile of width 17,
    and one partial level 2 tile of width 1"."""
    tiles = list(tiles_of_tree(70_000))
    shapes = Counter((tile.level, tile.width) for tile in tiles)
    assert shapes == {(0, 256): 273, (0, 112): 1, (1, 256): 1, (1, 17): 1, (2, 1): 1}
    assert tiles[273] == Tile(0, 273, 112) and tiles[-1] == Tile(2, 0, 1)
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
    # tile of width 1"
    assert list(tiles_of_tree(256)) == [Tile(0, 0, 256), Tile(1, 0, 1)]
    assert list(tiles_of_tree(0)) == []


def test_tile_entries_are_the_spec_formula() -> None:
    """Entry i of tile n at level l is MTH(D[(n*256+i)*256**l : (n*256+i+1)*256**l])."""
    entries = [f"leaf {n}".encode() for n in range(3 * TILE_WIDTH + 5)]
    level_one = group_roots([leaf_hash(entry) for entry in entries])
    assert level_one == [ref.mth(entries[i * 256 : (i + 1) * 256]) for i in range(3)]
    # Small tiles, several levels: entry j of level l is MTH of 4**l leaves.
    built = _levels([leaf_hash(entry) for entry in ENTRIES], SMALL_HEIGHT)
    for (level, index), value in built.items():
        span = 4**level
        assert value == ref.mth(ENTRIES[index * span : (index + 1) * span])
    assert max(level for level, _ in built) == 3  # 70 // 64 = 1 entry at level 3


def _entries_of_tree(size: int) -> dict[tuple[int, int], bytes]:
    """Only the entries a tree of ``size`` has: a partial tile is a prefix, nothing more."""
    every = _levels([leaf_hash(entry) for entry in ENTRIES], SMALL_HEIGHT)
    return {(level, j): v for (level, j), v in every.items() if (j + 1) * 4**level <= size}


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 15, 16, 17, 63, 64, 65, 70])
def test_proofs_from_tile_entries_equal_the_rfc(size: int) -> None:
    entries = _entries_of_tree(size)
    for index in range(size):
        ranges = inclusion_ranges(index, size)
        wanted = nodes_of_ranges(ranges)
        needed = {key: entries[key] for level, start, end in entry_ranges(wanted, SMALL_HEIGHT)
                  for key in ((level, j) for j in range(start, end))}  # fmt: skip
        proof = proof_from_nodes(ranges, nodes_from_entries(wanted, needed, SMALL_HEIGHT))
        assert proof == ref.path(index, ENTRIES[:size])
    for old_size in range(1, size + 1):
        ranges = consistency_ranges(old_size, size)
        wanted = nodes_of_ranges(ranges)
        proof = proof_from_nodes(ranges, nodes_from_entries(wanted, entries, SMALL_HEIGHT))
        assert proof == ref.proof(old_size, ENTRIES[:size])


def test_entry_ranges_merge_per_level() -> None:
    # (3, 0) at height 2: level 1 entries [0, 2); (2, 1): level 1 [1, 2); (0, 7): level 0.
    assert entry_ranges([(3, 0), (2, 1), (0, 7), (1, 2)], SMALL_HEIGHT) == [
        (0, 4, 6), (0, 7, 8), (1, 0, 2),
    ]  # fmt: skip
    assert entry_ranges([(16, 3)]) == [(2, 3, 4)]  # height 16 = level 2 of 8-bit tiles


def test_a_tampered_or_missing_entry_never_yields_a_proof_that_verifies() -> None:
    size, index = 70, 37
    entries = _entries_of_tree(size)
    root = ref.mth(ENTRIES)
    ranges = inclusion_ranges(index, size)
    wanted = nodes_of_ranges(ranges)
    used = sorted({(level, j) for level, start, end in entry_ranges(wanted, SMALL_HEIGHT)
                   for j in range(start, end)} - {(0, index)})  # fmt: skip
    assert len(used) > 5
    for key in used:
        tampered = dict(entries)
        tampered[key] = bytes([tampered[key][0] ^ 1]) + tampered[key][1:]
        proof = proof_from_nodes(ranges, nodes_from_entries(wanted, tampered, SMALL_HEIGHT))
        with pytest.raises(RootMismatchError):
            verify_inclusion_leaf_hash(leaf_hash(ENTRIES[index]), index, size, proof, root)
        consistency = proof_from_nodes(
            consistency_ranges(index + 1, size),
            nodes_from_entries(nodes_of_ranges(consistency_ranges(index + 1, size)), tampered,
                               SMALL_HEIGHT),
        )  # fmt: skip
        old_root = ref.mth(ENTRIES[: index + 1])
        if consistency != ref.proof(index + 1, ENTRIES):
            with pytest.raises(RootMismatchError):
                verify_consistency(index + 1, size, consistency, old_root, root)
    del entries[used[0]]
    with pytest.raises(InvalidArgumentError, match="not all supplied"):
        nodes_from_entries(wanted, entries, SMALL_HEIGHT)


def test_entry_bundles_and_tiles_encode_as_specified() -> None:
    assert encode_entry_bundle([b"ab", b"", b"xyz"]) == b"\x00\x02ab\x00\x00\x00\x03xyz"
    assert decode_entry_bundle(b"\x00\x02ab\x00\x00\x00\x03xyz") == [b"ab", b"", b"xyz"]
    big = b"x" * MAX_ENTRY_BYTES
    assert decode_entry_bundle(encode_entry_bundle([big])) == [big]
    with pytest.raises(InvalidArgumentError, match="at most 65535"):
        encode_entry_bundle([big + b"x"])
    for cut in (b"\x00", b"\x00\x05abc"):
        with pytest.raises(FormatError):
            decode_entry_bundle(cut)
    hashes = [leaf_hash(entry) for entry in ENTRIES[:3]]
    assert decode_tile(b"".join(hashes), 3) == hashes
    with pytest.raises(FormatError, match="width 3"):
        decode_tile(b"".join(hashes)[:-1], 3)


def test_the_first_stored_entry_that_is_not_its_leaves_hash_is_named() -> None:
    from authtrail.stream.core.audit import MerkleLevels

    leaf_hashes = [leaf_hash(entry) for entry in ENTRIES]
    tree = MerkleLevels.from_leaf_hashes(leaf_hashes)
    built = _levels(leaf_hashes, SMALL_HEIGHT)
    stored = [(level, index, value) for (level, index), value in built.items() if level]
    assert first_entry_mismatch(tree.node, 70, stored, SMALL_HEIGHT) is None
    forged = [(2, 1, b"\x00" * 32), (1, 9, b"\x01" * 32), *stored]
    assert first_entry_mismatch(tree.node, 70, forged, SMALL_HEIGHT) == (1, 9, b"\x01" * 32)
    # Entries past a smaller tree are not judged (the log grew since it was read).
    assert first_entry_mismatch(tree.node, 35, [(1, 9, b"\x01" * 32)], SMALL_HEIGHT) is None


def test_tile_holding_names_partial_tiles() -> None:
    assert tile_holding(0, 699, 700) == Tile(0, 2, 188)
    assert tile_holding(1, 1, 700) == Tile(1, 0, 2)
    with pytest.raises(InvalidArgumentError, match="not in a tree"):
        tile_holding(1, 2, 700)
