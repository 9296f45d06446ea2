"""``authtrail prove --tiles DIR``: an inclusion bundle from a static tlog-tiles directory.

``authtrail export-tiles`` (:mod:`authtrail.sinks.tile_export`, docs/INTEGRITY.md §10.6)
writes everything a proof needs as files: the signed ``checkpoint``, the tiles
``tile/<L>/<N>[.p/<W>]`` and the entry bundles ``tile/entries/<N>[.p/<W>]`` holding
each record's canonical leaf. This adapter reads the O(log n) files one proof needs —
the entry bundle and level-0 tile of the record, and the tiles holding the proof's
perfect subtrees (planned by :mod:`authtrail.stream.core.tree_proofs` and
:mod:`authtrail.stream.core.tiles`) — and lets the pure core decode the leaf
(:mod:`authtrail.stream.core.leaf_decode`) and assemble the bundle. No store, no key.

The proof leads to the directory's checkpoint, the only one it serves. As the store
prover does, it checks the proof against the root the checkpoint's body states
(signature unchecked: ``verify-proof`` checks it) and refuses to write a bundle when a
file is missing, cut short or does not hash to that root (:class:`TilesDirectoryError`,
exit 1). The bundle has no ``chain`` member: the directory holds no chain links.

Imports no ClickHouse or Arrow client: proving from a directory needs neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from authtrail.errors import (
    CheckpointError,
    ConfigurationError,
    FormatError,
    VerificationError,
)
from authtrail.stream.core.bundle import make_inclusion_bundle
from authtrail.stream.core.canonical import length_prefixed
from authtrail.stream.core.checkpoint import Checkpoint
from authtrail.stream.core.leaf_decode import decode_canonical_leaf
from authtrail.stream.core.merkle import leaf_hash, root_from_inclusion_proof
from authtrail.stream.core.tenant_directory import is_valid_tenant_id
from authtrail.stream.core.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    decode_entry_bundle,
    decode_tile,
    entry_ranges,
    nodes_from_entries,
    tile_holding,
    tiles_of_tree,
)
from authtrail.stream.core.tree_proofs import inclusion_ranges, nodes_of_ranges, proof_from_nodes

__all__ = ["TileDirectory", "TilesDirectoryError", "prove_from_tiles"]

_MAX_NOTE_BYTES = 1 << 20  # a checkpoint with many cosignatures, never more
_MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + 0xFFFF)
_CANDIDATES_SHOWN = 5


class TilesDirectoryError(VerificationError):
    """A tlog-tiles directory whose files do not give a proof of its own checkpoint:
    a file missing, cut short, not decodable, or not hashing to the checkpoint's root."""


class TileDirectory:
    """One tenant's static tlog-tiles directory, as ``export-tiles`` wrote it.

    Opening reads and parses ``checkpoint`` (body only). Raises
    :class:`ConfigurationError` when there is no ``checkpoint`` file to read,
    :class:`TilesDirectoryError` when it is not a checkpoint note of a tenant's log.
    """

    def __init__(self, directory: Path, refusal: str = "no proof written") -> None:
        self.directory, self.refusal = directory, refusal
        data = self._read("checkpoint", _MAX_NOTE_BYTES, missing_is_damage=False)
        try:
            self.note = data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.damaged("checkpoint", "is not UTF-8 text") from None
        body, blank, _ = self.note.rpartition("\n\n")
        try:
            if not blank:
                raise CheckpointError("no blank line before the signatures")
            self.checkpoint = Checkpoint.parse((body + "\n").encode("utf-8"))
        except CheckpointError as exc:
            raise self.damaged("checkpoint", f"is not a checkpoint note: {exc}") from None
        self.log_origin, _, self.tenant_id = self.checkpoint.origin.rpartition("/")
        if not self.log_origin or not is_valid_tenant_id(self.tenant_id):
            raise self.damaged(
                "checkpoint", f"names the log {self.checkpoint.origin!r}, not <log>/<tenant>"
            )
        self.size = self.checkpoint.size
        self._tiles: dict[Tile, list[bytes]] = {}

    def tile(self, tile: Tile, *, keep: bool = True) -> list[bytes]:
        """The hashes of ``tile`` (read once if ``keep``); TilesDirectoryError if missing
        or cut."""
        if tile in self._tiles:
            return self._tiles[tile]
        data = self._read(tile.path(), tile.width * 32 + 1)
        try:
            hashes = decode_tile(data, tile.width)
        except FormatError as exc:
            raise self.damaged(tile.path(), str(exc)) from None
        if keep:
            self._tiles[tile] = hashes
        return hashes

    def entry_bundle(self, tile: Tile) -> bytes:
        """The bytes of level-0 ``tile``'s entry bundle.

        Raises ConfigurationError when the directory has no entry bundles at all
        (exported with ``--no-entries``), TilesDirectoryError when this one is missing.
        """
        if not (self.directory / "tile" / "entries").is_dir():
            raise ConfigurationError(
                f"{self.directory} has no entry bundles (tile/entries/): it was exported with "
                "--no-entries; export it again without it to prove from it"
            )
        try:
            return self._read(tile.entries_path(), _MAX_BUNDLE_BYTES)
        except TilesDirectoryError as exc:
            if (self.directory / tile.path()).is_file():
                raise
            # Neither bundle nor tile: a tenant pruned before the export has none below
            # its cut (docs/INTEGRITY.md §10.6); still no proof, still named.
            raise self.damaged(
                tile.entries_path(),
                f"and {tile.path()} are missing (records pruned before the export have none)",
            ) from exc

    def entries(self, tile: Tile, data: bytes | None = None) -> list[bytes]:
        """The canonical leaves of level-0 ``tile``'s entry bundle (``data``, if read).

        Raises as :meth:`entry_bundle`, and TilesDirectoryError when the bundle is cut
        short or holds another number of entries than the tile's width.
        """
        path = tile.entries_path()
        try:
            leaves = decode_entry_bundle(self.entry_bundle(tile) if data is None else data)
        except FormatError as exc:
            raise self.damaged(path, str(exc)) from None
        if len(leaves) != tile.width:
            raise self.damaged(path, f"holds {len(leaves)} entries, not {tile.width}")
        return leaves

    def level0_tiles(self) -> Iterator[Tile]:
        """The level-0 tiles of the checkpoint's tree, left to right."""
        for tile in tiles_of_tree(self.size):
            if tile.level:
                return
            yield tile

    def _read(self, name: str, limit: int, *, missing_is_damage: bool = True) -> bytes:
        path = self.directory / name
        try:
            with open(path, "rb") as file:
                data = file.read(limit + 1)
        except FileNotFoundError:
            if missing_is_damage:
                raise self.damaged(name, "is missing") from None
            raise ConfigurationError(
                f"{path} does not exist: not a tlog-tiles directory (authtrail export-tiles)"
            ) from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
        if len(data) > limit:
            raise self.damaged(name, f"is larger than {limit} bytes")
        return data

    def damaged(self, name: str, what: str) -> TilesDirectoryError:
        """The error for file ``name`` of the directory, which ``what`` says is wrong."""
        return TilesDirectoryError(f"{self.directory / name} {what}; {self.refusal}")


def prove_from_tiles(
    directory: Path, seq: int | None = None, *, event_id: str | None = None,
    tenant_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The inclusion bundle (docs/INTEGRITY.md §10.2, no ``chain``) of record ``seq``
    (or of the one record whose ``event_id`` it is) in the tree of ``directory``'s
    checkpoint, from the directory's files alone.

    Raises:
        ConfigurationError: no checkpoint file or no entry bundles; ``seq`` not in the
            checkpoint's tree; no record or several with ``event_id``; ``tenant_id``
            given and the directory is another tenant's log.
        TilesDirectoryError: a file the proof needs is missing, cut short or not
            decodable, the record's entry does not hash to its level-0 tile, or the
            proof does not lead to the checkpoint's root.
    """
    tiles = TileDirectory(directory)
    if tenant_id is not None and tenant_id != tiles.tenant_id:
        raise ConfigurationError(
            f"{directory} holds the log of tenant {tiles.tenant_id!r}, not {tenant_id!r}"
        )
    if (seq is None) == (event_id is None):
        raise ConfigurationError("prove from tiles: give a seq or an event id, not both")
    if seq is None:
        assert event_id is not None
        seq = find_seq(tiles, event_id)
    if not 1 <= seq <= tiles.size:
        raise ConfigurationError(
            f"seq {seq} is not in the tree of {directory}/checkpoint (size {tiles.size})"
        )
    index = seq - 1
    leaf_tile = tile_holding(0, index, tiles.size)
    leaf = tiles.entries(leaf_tile)[index % TILE_WIDTH]
    hashed = leaf_hash(leaf)
    tiled = tiles.tile(leaf_tile)[index % TILE_WIDTH]
    if hashed != tiled:
        raise tiles.damaged(
            leaf_tile.entries_path(),
            f"holds an entry for seq {seq} that hashes to {hashed.hex()}, "
            f"{leaf_tile.path()} states {tiled.hex()}",
        )
    try:
        event = decode_canonical_leaf(leaf)
    except FormatError as exc:
        raise tiles.damaged(leaf_tile.entries_path(), f"seq {seq}: {exc}") from None
    if event.get("tenant_id") != tiles.tenant_id:
        raise tiles.damaged(
            leaf_tile.entries_path(),
            f"seq {seq} is an event of tenant {event.get('tenant_id')!r}, in the log of "
            f"{tiles.tenant_id!r}",
        )
    ranges = inclusion_ranges(index, tiles.size)
    wanted = nodes_of_ranges(ranges)
    entries: dict[tuple[int, int], bytes] = {}
    for level, start, end in entry_ranges(wanted):
        for first in range(start - start % TILE_WIDTH, end, TILE_WIDTH):
            hashes = tiles.tile(tile_holding(level, first, tiles.size))
            entries.update(
                ((level, j), hashes[j - first])
                for j in range(max(start, first), min(end, first + len(hashes)))
            )
    proof = proof_from_nodes(ranges, nodes_from_entries(wanted, entries, TILE_HEIGHT))
    root = root_from_inclusion_proof(hashed, index, tiles.size, proof)
    if root != tiles.checkpoint.root:
        raise TilesDirectoryError(
            f"{directory}: the tiles lead seq {seq} to root {root.hex()}, the checkpoint of "
            f"size {tiles.size} states {tiles.checkpoint.root.hex()} (a damaged tile, or a "
            "checkpoint that is not this directory's); no proof written"
        )
    return make_inclusion_bundle(
        log_origin=tiles.log_origin, tenant_id=tiles.tenant_id, seq=seq, event=event,
        tree_size=tiles.size, inclusion_proof=proof, checkpoint_note=tiles.note,
        stored_leaf_hash=hashed,
    )  # fmt: skip


def find_seq(tiles: TileDirectory, event_id: str) -> int:
    """The seq of the one record of ``tiles`` whose ``event_id`` it is: a scan of every
    entry bundle (O(n) bytes; only bundles holding the id's encoded bytes are decoded).

    Raises ConfigurationError when no record or several have it, TilesDirectoryError as
    :meth:`TileDirectory.entries` does.
    """
    needle = length_prefixed(b"event_id") + b"s" + length_prefixed(event_id.encode("utf-8"))
    found: list[int] = []
    for tile in tiles.level0_tiles():
        data = tiles.entry_bundle(tile)
        if needle not in data:
            continue
        for position, leaf in enumerate(tiles.entries(tile, data)):
            if needle in leaf:
                try:
                    decoded = decode_canonical_leaf(leaf)
                except FormatError as exc:
                    raise tiles.damaged(tile.entries_path(), str(exc)) from None
                if decoded.get("event_id") == event_id:
                    found.append(tile.index * TILE_WIDTH + position + 1)
    if len(found) != 1:
        shown = ", ".join(f"seq {seq}" for seq in found[:_CANDIDATES_SHOWN])
        raise ConfigurationError(
            f"no record of {tiles.directory} has event_id {event_id!r}"
            if not found
            else f"event_id {event_id!r} is {len(found)} records of {tiles.directory} "
            f"({shown}): choose one with --seq N"
        )
    return found[0]
