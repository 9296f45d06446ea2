"""``authtrail export-tiles``: one tenant's log as a static C2SP tlog-tiles directory.

The directory holds what https://c2sp.org/tlog-tiles serves under a log's prefix:
``checkpoint`` (the stored signed note, verbatim), ``tile/<L>/<N>[.p/<W>]`` for every
full tile and the partial tile of each level of that checkpoint's tree, and
``tile/entries/<N>[.p/<W>]`` entry bundles: the canonical leaves (docs/INTEGRITY.md §2),
each behind a big-endian uint16 length. Any web server can serve it as files; any
tlog-tiles client computes proofs from it.

Everything is rebuilt from the stored leaves, in order, in chunks (the stored tile
entries are compared, not copied), except below the cut of a tenant pruned under a
retention statement (docs/INTEGRITY.md §14): there the leaves are gone, so the stored
level-1 entries that stand for them are taken as they are, no level-0 tile or entry
bundle below the cut is written, and the levels above are built from both. Either way
each row's canonical leaf is rebuilt in ClickHouse and must hash to its stored leaf
hash, and the tree's root must equal the stored checkpoint's before the ``checkpoint``
file is replaced, so an export never publishes a tree its checkpoint does not sign.
Tiles and bundles are immutable: an existing file is left as it is when identical, and
an export that would change one is refused (the log would have forked). The checkpoint
is written last, by rename, so a reader never sees a checkpoint whose tiles are not
there yet.
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
from authtrail.sinks.retention_store import claimed_cut
from authtrail.sinks.tables import EVENTS_TABLE, TILES_TABLE, canonical_leaf_sql
from authtrail.sinks.tile_store import TilesUnavailable, read_entries
from authtrail.stream.core.chain import DELETED, INSERTED, MODIFIED
from authtrail.stream.core.checkpoint import Checkpoint
from authtrail.stream.core.merkle import root_from_leaf_hashes
from authtrail.stream.core.tiles import (
    MAX_ENTRY_BYTES,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    encode_entry_bundle,
    entry_ranges,
    group_roots,
    nodes_from_entries,
    tiles_of_tree,
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
    # Records 1..pruned_size were pruned (docs/INTEGRITY.md §14): no level-0 tiles or
    # entry bundles below it, its level-1 entries taken from the store.
    pruned_size: int = 0
    # Leaves 1..resumed_from were not read again: the directory served them already.
    resumed_from: int = 0


def export_tiles(
    backend: ClickHouseBackend,
    tenant_id: str,
    directory: Path,
    *,
    tree_size: int | None = None,
    entries: bool = True,
    full: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExportSummary:
    """Write ``tenant_id``'s tree of its newest stored checkpoint (or of ``tree_size``)
    to ``directory`` as tlog-tiles; return what was written.

    When ``directory`` already serves a checkpoint of this tenant (the stored one of its
    size), the export continues from it unless ``full``: see :func:`_resume`.

    Raises:
        ProofUnavailableError: no stored checkpoint (of that size).
        ChainError: seq 1..size (cut + 1..size for a pruned tenant) is not one record
            each, or a record's content does not hash to its stored leaf hash.
        VerificationError: the leaves' root is not the stored checkpoint's root, or the
            stored note does not parse; ExportConflict: a file there differs.
        ConfigurationError: the directory holds a larger checkpoint, is not writable, an
            entry is longer than an entry bundle allows (export with ``entries=False``),
            or ``tree_size`` ends inside a pruned range.
    """
    size = tree_size if tree_size is not None else newest_size(backend, tenant_id, 1)
    note = stored_note(backend, tenant_id, size)
    signed = stored_checkpoint(note)
    if signed is None:
        raise VerificationError(
            f"tenant {tenant_id!r}: the stored checkpoint note of size {size} does not parse"
        )
    _refuse_rollback(directory, size)
    cut = _pruned_cut(backend, tenant_id, size)
    summary = ExportSummary(tenant_id, size, pruned_size=cut)
    writer = _Writer(directory, summary)
    # The root's perfect subtrees, collected as their entries stream past.
    root_nodes = range_nodes(0, size)
    needed = {(level, j) for level, start, end in entry_ranges(root_nodes)
              for j in range(start, end)}  # fmt: skip
    kept: dict[tuple[int, int], bytes] = {}
    # Level 1, then each level above, in memory: below ``start`` level 1 is the stored
    # entries of a retention cut, or the entries the directory already serves.
    start, level_entries = _resume(backend, signed, directory, cut, not full, entries)
    summary.resumed_from = start if start > cut else 0
    for first in range(start, size, CHUNK_LEAVES):  # start is a tile boundary
        last = min(size, first + CHUNK_LEAVES)
        leaf_hashes, leaves = _read_leaves(backend, tenant_id, first, last, entries)
        here = [j for level, j in needed if level == 0 and first <= j < last]
        kept.update({(0, j): leaf_hashes[j - first] for j in here})
        _write_level(writer, 0, first, leaf_hashes, size, leaves)
        level_entries += group_roots(leaf_hashes)
        if progress is not None:
            progress(last, size)
    levels = []
    while level_entries:
        levels.append(level_entries)
        level_entries = group_roots(level_entries)
    for level, hashes in enumerate(levels, 1):
        kept.update(((level, j), h) for j, h in enumerate(hashes) if (level, j) in needed)
    calculated = proof_from_nodes([(0, size)], nodes_from_entries(root_nodes, kept))[0]
    if calculated != signed.root:  # before any tile of level 1 or up is written
        below = (
            f" and the level-1 entries {directory} already served below them"
            if summary.resumed_from
            else " and the stored level-1 entries below them"
            if cut
            else ""
        )
        raise VerificationError(
            f"tenant {tenant_id!r}: the stored leaves {start + 1}..{size}{below} hash to root "
            f"{calculated.hex()}, the stored checkpoint of size {size} states "
            f"{signed.root.hex()}; nothing exported but level-0 tiles; run `authtrail verify`"
            + (" (or export with --full)" if summary.resumed_from else "")
        )
    for level, hashes in enumerate(levels, 1):
        _write_level(writer, level, 0, hashes, size, None)
        summary.tile_mismatches += _compare_stored(backend, tenant_id, level, hashes)
    writer.replace("checkpoint", note.encode("utf-8"))
    return summary


def _pruned_cut(backend: ClickHouseBackend, tenant_id: str, size: int) -> int:
    """Records ``1..cut`` pruned under a stored retention statement, when the tenant's
    stored records start right after its cut (else 0: the leaves are read from seq 1, and
    missing ones are ``deleted`` damage). The statement's signature is not judged here
    (``verify`` does); the tree is still checked against the checkpoint's root.

    Raises ConfigurationError when the tree of ``size`` ends inside the pruned range.
    """
    sql = f"SELECT min(seq) FROM {EVENTS_TABLE} PREWHERE tenant_id = {{tenant:String}}"
    first = backend.query_arrow(sql, {"tenant": tenant_id}).column(0)[0].as_py() or 0
    if first <= 1:
        return 0
    cut = claimed_cut(backend, tenant_id)
    if not cut or first != cut + 1 or cut % TILE_WIDTH:
        return 0
    if size < cut:
        raise ConfigurationError(
            f"tenant {tenant_id!r}: records 1..{cut} were pruned under a retention statement; "
            f"the tree of size {size} can no longer be exported (export a size from {cut} on)"
        )
    return cut


def _resume(
    backend: ClickHouseBackend,
    exported: Checkpoint,
    directory: Path,
    cut: int,
    resume: bool,
    entries: bool,
) -> tuple[int, list[bytes]]:
    """Where the export starts reading leaves (a tile boundary) and the level-1 entries
    below that point.

    From scratch: the retention ``cut`` (0 if none) and the stored entries below it.
    When ``directory`` already serves a checkpoint, which must be the stored one of its
    size (the same body), the export continues at its last full level-0 tile: the
    level-1 entries below come from the directory's level-1 tiles, and each level-0 tile
    below (those below a retention cut may be gone) must hash to its level-1 entry, so
    a changed tile is refused here, and a changed level-1 entry by the final root check.
    Entry bundles already there are not read again. It starts afresh unless ``resume``,
    and when this export writes entry bundles (``entries``) and the directory has none.

    Raises VerificationError for a directory that serves another tree or whose tiles
    disagree, TilesDirectoryError (one) for a missing or cut file it needs.
    """
    from authtrail.sinks.proofs import ProofUnavailableError
    from authtrail.tile_proofs import TileDirectory  # reads files only

    tenant_id = exported.origin.rpartition("/")[2]

    def fresh() -> tuple[int, list[bytes]]:
        return cut, _stored_level_one(backend, tenant_id, cut)

    if not resume or not (directory / "checkpoint").is_file():
        return fresh()
    if entries and not (directory / "tile" / "entries").is_dir():
        return fresh()
    served = TileDirectory(directory, refusal="nothing exported")
    try:
        same_log = served.checkpoint.origin == exported.origin
        stored = (
            stored_checkpoint(stored_note(backend, tenant_id, served.size)) if same_log else None
        )
    except ProofUnavailableError:
        stored = None
    if stored != served.checkpoint:
        raise VerificationError(
            f"{directory}/checkpoint (size {served.size}, {served.checkpoint.origin}) is not "
            f"the stored checkpoint of that size of tenant {tenant_id!r}: the directory serves "
            "another tree; export into an empty directory"
        )
    base = served.size - served.size % TILE_WIDTH
    if base <= cut:
        return fresh()
    level_one = [
        entry for tile in tiles_of_tree(served.size) if tile.level == 1
        for entry in served.tile(tile)
    ]  # fmt: skip
    for index in range(cut // TILE_WIDTH, base // TILE_WIDTH):
        tile = Tile(0, index, TILE_WIDTH)
        if root_from_leaf_hashes(served.tile(tile, keep=False)) != level_one[index]:
            raise VerificationError(
                f"{directory / tile.path()} does not hash to entry {index} of level 1 that "
                "the directory serves: a served tile was changed; export into an empty "
                "directory"
            )
    return base, level_one


def _stored_level_one(backend: ClickHouseBackend, tenant_id: str, cut: int) -> list[bytes]:
    """The stored level-1 entries ``0 .. cut / 256 - 1``: the roots of pruned leaves."""
    count = cut // TILE_WIDTH
    if not count:
        return []
    try:
        found = read_entries(backend, tenant_id, [(1, 0, count)])
    except TilesUnavailable as exc:
        raise VerificationError(str(exc)) from None
    missing = [index for index in range(count) if (1, index) not in found]
    if missing:
        raise VerificationError(
            f"tenant {tenant_id!r}: records 1..{cut} were pruned, and {len(missing)} of the "
            f"stored level-1 tile entries that stand for them are missing (first: entry "
            f"{missing[0]}); nothing exported; run `authtrail verify`"
        )
    return [found[1, index] for index in range(count)]


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
