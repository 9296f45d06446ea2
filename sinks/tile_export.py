"""``authtrail export-tiles``: one tenant's log as a static C2SP tlog-tiles directory.

The directory holds what https://c2sp.org/tlog-tiles serves under a log's prefix:
``checkpoint`` (the stored signed note, verbatim), ``tile/<L>/<N>[.p/<W>]`` for every
full tile and the partial tile of each level of that checkpoint's tree, and
``tile/entries/<N>[.p/<W>]`` entry bundles: the canonical leaves (docs/INTEGRITY.md §2),
each behind a big-endian uint16 length. Any web server can serve it as files; any
tlog-tiles client computes proofs from it.

Everything is rebuilt from the stored leaves, in order, in chunks (the stored tile
entries are compared, not copied): each row's canonical leaf is rebuilt in ClickHouse and
must hash to its stored leaf hash, and the tree's root must equal the stored checkpoint's
before the ``checkpoint`` file is replaced, so an export never publishes a tree its
checkpoint does not sign. Tiles and bundles are immutable: an existing file is left as
it is when identical, and an export that would change one is refused (the log would have
forked). The checkpoint is written last, by rename, so a reader never sees a checkpoint
whose tiles are not there yet.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from authtrail.errors import ChainError, ConfigurationError, VerificationError
from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.proofs import newest_size, stored_checkpoint, stored_note
from authtrail.sinks.tables import EVENTS_TABLE, TILES_TABLE, canonical_leaf_sql
from authtrail.stream.core.chain import DELETED, INSERTED, MODIFIED
from authtrail.stream.core.tiles import (
    MAX_ENTRY_BYTES,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    encode_entry_bundle,
    entry_ranges,
    group_roots,
    nodes_from_entries,
)
from authtrail.stream.core.tree_proofs import proof_from_nodes, range_nodes

#: Leaves read per query: 256 full tiles.
CHUNK_LEAVES = TILE_WIDTH * TILE_WIDTH


class ExportConflict(VerificationError):
    """A tile or entry bundle already in the directory differs from the one exported."""


@dataclass
class ExportSummary:
    """What an export wrote: ``written`` new files, ``unchanged`` identical ones."""

    tenant_id: str
    size: int
    tiles: int = 0
    entry_bundles: int = 0
    written: int = 0
    unchanged: int = 0
    # Stored tile entries (level, index) that differ from the ones rebuilt from the leaves.
    tile_mismatches: list[tuple[int, int]] = field(default_factory=list)


def export_tiles(
    backend: ClickHouseBackend,
    tenant_id: str,
    directory: Path,
    *,
    tree_size: int | None = None,
    entries: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> ExportSummary:
    """Write ``tenant_id``'s tree of its newest stored checkpoint (or of ``tree_size``)
    to ``directory`` as tlog-tiles; return what was written.

    Raises:
        ProofUnavailableError: no stored checkpoint (of that size).
        ChainError: seq 1..size is not one record each, or a record's content does not
            hash to its stored leaf hash.
        VerificationError: the leaves' root is not the stored checkpoint's root, or the
            stored note does not parse; ExportConflict: a file there differs.
        ConfigurationError: the directory holds a larger checkpoint, is not writable, or
            an entry is longer than an entry bundle allows (export with ``entries=False``).
    """
    size = tree_size if tree_size is not None else newest_size(backend, tenant_id, 1)
    note = stored_note(backend, tenant_id, size)
    signed = stored_checkpoint(note)
    if signed is None:
        raise VerificationError(
            f"tenant {tenant_id!r}: the stored checkpoint note of size {size} does not parse"
        )
    _refuse_rollback(directory, size)
    summary = ExportSummary(tenant_id, size)
    writer = _Writer(directory, summary)
    # The root's perfect subtrees, collected as their entries stream past.
    root_nodes = range_nodes(0, size)
    needed = {(level, j) for level, start, end in entry_ranges(root_nodes)
              for j in range(start, end)}  # fmt: skip
    kept: dict[tuple[int, int], bytes] = {}
    level_entries: list[bytes] = []  # level 1, then each level above, in memory
    for first in range(0, size, CHUNK_LEAVES):
        last = min(size, first + CHUNK_LEAVES)
        leaf_hashes, leaves = _read_leaves(backend, tenant_id, first, last, entries)
        here = [j for level, j in needed if level == 0 and first <= j < last]
        kept.update({(0, j): leaf_hashes[j - first] for j in here})
        _write_level(writer, 0, first, leaf_hashes, size, leaves)
        level_entries += group_roots(leaf_hashes)
        if progress is not None:
            progress(last, size)
    level = 1
    while level_entries:
        kept.update(((level, j), h) for j, h in enumerate(level_entries) if (level, j) in needed)
        _write_level(writer, level, 0, level_entries, size, None)
        summary.tile_mismatches += _compare_stored(backend, tenant_id, level, level_entries)
        level_entries, level = group_roots(level_entries), level + 1
    calculated = proof_from_nodes([(0, size)], nodes_from_entries(root_nodes, kept))[0]
    if calculated != signed.root:
        raise VerificationError(
            f"tenant {tenant_id!r}: the stored leaves 1..{size} hash to root "
            f"{calculated.hex()}, the stored checkpoint of size {size} states "
            f"{signed.root.hex()}; nothing exported but tiles; run `authtrail verify`"
        )
    writer.replace("checkpoint", note.encode("utf-8"))
    return summary


def _refuse_rollback(directory: Path, size: int) -> None:
    try:
        existing = (directory / "checkpoint").read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigurationError(f"cannot read {directory}/checkpoint: {exc.strerror}") from None
    previous = stored_checkpoint(existing.decode("utf-8", "replace"))
    if previous is not None and previous.size > size:
        raise ConfigurationError(
            f"{directory} already serves a checkpoint of size {previous.size}; exporting size "
            f"{size} would roll it back (export into an empty directory instead)"
        )


def _read_leaves(
    backend: ClickHouseBackend, tenant_id: str, first: int, last: int, entries: bool
) -> tuple[list[bytes], list[bytes] | None]:
    """Leaf hashes (and canonical leaves) of indexes first..last-1, checked."""
    leaf = canonical_leaf_sql()
    sql = f"""SELECT seq, leaf_hash, {leaf if entries else "''"} AS leaf,
                     leaf_hash = SHA256(concat(unhex('00'), {leaf})) AS intact
              FROM {EVENTS_TABLE} WHERE tenant_id = {{tenant:String}}
                AND seq BETWEEN {first + 1} AND {last} ORDER BY seq"""
    table = backend.query_arrow(sql, {"tenant": tenant_id})
    seqs, hashes, leaves, intact = (table.column(i).to_pylist() for i in range(4))
    for position, seq in enumerate(seqs):
        expected = first + 1 + position
        if seq != expected:
            damage = INSERTED if seq < expected else DELETED
            raise ChainError(tenant_id, min(seq, expected), damage, _not_one_per_seq(last))
        if not intact[position]:
            detail = "the record does not hash to its stored leaf hash; run `authtrail verify`"
            raise ChainError(tenant_id, seq, MODIFIED, detail)
    if len(seqs) != last - first:
        raise ChainError(tenant_id, first + 1 + len(seqs), DELETED, _not_one_per_seq(last))
    if not entries:
        return hashes, None
    encoded = [value if isinstance(value, bytes) else value.encode("utf-8") for value in leaves]
    for seq, value in zip(seqs, encoded, strict=True):
        if len(value) > MAX_ENTRY_BYTES:
            raise ConfigurationError(
                f"tenant {tenant_id!r} seq {seq}: its canonical leaf is {len(value)} bytes, an "
                f"entry bundle holds at most {MAX_ENTRY_BYTES}; export with --no-entries"
            )
    return hashes, encoded


def _not_one_per_seq(last: int) -> str:
    return f"records 1..{last} are not one per seq; run `authtrail verify`"


def _write_level(
    writer: _Writer,
    level: int,
    first: int,
    hashes: list[bytes],
    size: int,
    leaves: list[bytes] | None,
) -> None:
    """Write the tiles (and bundles) of ``hashes``, entries ``first..`` of ``level``,
    which start at a tile boundary; the last may be the level's partial tile."""
    count = size >> (TILE_HEIGHT * level)  # entries of this level in the tree
    for start in range(0, len(hashes), TILE_WIDTH):
        index = (first + start) // TILE_WIDTH
        width = min(TILE_WIDTH, count - index * TILE_WIDTH)
        tile = Tile(level, index, width)
        writer.create(tile.path(), b"".join(hashes[start : start + width]))
        writer.summary.tiles += 1
        if leaves is not None:
            writer.create(tile.entries_path(), encode_entry_bundle(leaves[start : start + width]))
            writer.summary.entry_bundles += 1


def _compare_stored(
    backend: ClickHouseBackend, tenant_id: str, level: int, rebuilt: list[bytes]
) -> list[tuple[int, int]]:
    sql = f"""SELECT entry_index, hash FROM {TILES_TABLE} WHERE tenant_id = {{tenant:String}}
              AND level = {level} AND entry_index < {len(rebuilt)}"""
    table = backend.query_arrow(sql, {"tenant": tenant_id})
    indexes, hashes = table.column(0).to_pylist(), table.column(1).to_pylist()
    return sorted({(level, i) for i, h in zip(indexes, hashes, strict=True) if rebuilt[i] != h})


class _Writer:
    def __init__(self, directory: Path, summary: ExportSummary) -> None:
        self.directory, self.summary = directory, summary

    def create(self, name: str, data: bytes) -> None:
        """Create ``name`` holding ``data`` unless it holds exactly that already."""
        path = self.directory / name
        try:
            existing = path.read_bytes()
        except FileNotFoundError:
            self.replace(name, data)
            self.summary.written += 1
            return
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
        if existing != data:
            raise ExportConflict(
                f"{path} holds {len(existing)} other bytes than the export's {len(data)}: a "
                "served tile never changes (did the log fork, or another log use this directory?)"
            )
        self.summary.unchanged += 1

    def replace(self, name: str, data: bytes) -> None:
        path = self.directory / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".export-")
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.chmod(temporary, 0o644)  # served as static files: readable by the web server
            os.replace(temporary, path)
        except OSError as exc:
            raise ConfigurationError(f"cannot write {path}: {exc.strerror}") from None
