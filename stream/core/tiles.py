"""C2SP tlog-tiles (https://c2sp.org/tlog-tiles): the tree's stored hashes, tile by tile.

A tile at *level* ``L`` holds up to 256 consecutive *entries*: the hashes of the perfect
subtrees of height ``8 * L`` (level 0: the leaf hashes). Entry ``j`` of level ``L`` is
node ``(8 * L, j)`` in :mod:`authtrail.stream.core.tree_proofs` terms; tile ``N`` of level ``L``
holds entries ``[256 * N, 256 * N + 256)``. A tree of ``size`` leaves has ``size >> 8L`` entries
at level ``L``; the last tile of each level is *partial* when that count is not a
multiple of 256 (``tile/<L>/<N>.p/<W>``).

Entries never change once they exist (a perfect subtree's leaves are fixed), so a store
that keeps the entries of a larger tree serves every smaller one. Any perfect subtree
``(h, i)`` lies inside one tile: its ``2 ** (h - 8L)`` entries at level ``L = h // 8``,
hashed pairwise; a proof needs O(log n) such subtrees (:func:`entry_ranges`,
:func:`nodes_from_entries`).

Pure: no I/O. ``tile_height`` is 8 in tlog-tiles and everywhere authtrail stores or
exports tiles; it is a parameter only so that tests can reach several levels with
small trees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from authtrail.errors import FormatError, InvalidArgumentError
from authtrail.stream.core.merkle import HASH_SIZE, root_from_leaf_hashes
from authtrail.stream.core.tree_proofs import NodeId

__all__ = [
    "MAX_ENTRY_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "EntryRange",
    "Tile",
    "decode_entry_bundle",
    "decode_tile",
    "encode_entry_bundle",
    "entry_ranges",
    "first_entry_mismatch",
    "group_roots",
    "nodes_from_entries",
    "tile_holding",
    "tile_index_path",
    "tiles_of_tree",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_ENTRY_BYTES = 0xFFFF  # entry bundles prefix each entry with a big-endian uint16 length
_MAX_LEVEL = 63

EntryRange = tuple[int, int, int]
"""Entries ``[start, end)`` of one level: ``(level, start, end)``."""


def tile_index_path(index: int) -> str:
    """``<N>`` of a tile path: zero-padded 3-digit elements, all but the last prefixed
    with ``x`` (1234067 → ``x001/x234/067``).

    Raises InvalidArgumentError for a negative index.
    """
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise InvalidArgumentError(f"tile index must be a non-negative integer, got {index!r}")
    elements = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        elements.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(elements))


@dataclass(frozen=True)
class Tile:
    """Tile ``index`` of ``level`` holding ``width`` hashes (``TILE_WIDTH``: a full tile).

    Requires ``0 <= level <= 63``, ``index >= 0``, ``1 <= width <= TILE_WIDTH``.
    """

    level: int
    index: int
    width: int

    def __post_init__(self) -> None:
        if not 0 <= self.level <= _MAX_LEVEL:
            raise InvalidArgumentError(f"tile level must be in 0..{_MAX_LEVEL}, got {self.level}")
        if not 1 <= self.width <= TILE_WIDTH or self.index < 0:
            raise InvalidArgumentError(f"no tile of index {self.index} and width {self.width}")

    @property
    def partial(self) -> bool:
        return self.width < TILE_WIDTH

    def _suffix(self) -> str:
        return f".p/{self.width}" if self.partial else ""

    def path(self) -> str:
        """``tile/<L>/<N>[.p/<W>]``."""
        return f"tile/{self.level}/{tile_index_path(self.index)}{self._suffix()}"

    def entries_path(self) -> str:
        """``tile/entries/<N>[.p/<W>]``: the entry bundle of a level-0 tile."""
        if self.level:
            raise InvalidArgumentError(f"a level-{self.level} tile has no entry bundle")
        return f"tile/entries/{tile_index_path(self.index)}{self._suffix()}"


def tiles_of_tree(size: int) -> Iterator[Tile]:
    """Every tile a tree of ``size`` leaves is served as, level by level, left to right:
    the full tiles, then the partial one when the level's entry count ``size >> 8L`` is
    not a multiple of 256. A tree of size 0 has none.
    """
    _require_size(size)
    level = 0
    while entries := size >> (TILE_HEIGHT * level):
        for index in range(entries // TILE_WIDTH):
            yield Tile(level, index, TILE_WIDTH)
        if entries % TILE_WIDTH:
            yield Tile(level, entries // TILE_WIDTH, entries % TILE_WIDTH)
        level += 1


def tile_holding(level: int, index: int, size: int) -> Tile:
    """The tile of the tree of ``size`` leaves that serves entry ``index`` of ``level``:
    tile ``index // 256``, partial when it is the level's last and the level's entry
    count ``size >> 8L`` is not a multiple of 256.

    Raises InvalidArgumentError unless ``0 <= index < size >> 8L``.
    """
    _require_size(size)
    count = size >> (TILE_HEIGHT * level) if 0 <= level <= _MAX_LEVEL else 0
    if not isinstance(index, int) or not 0 <= index < count:
        raise InvalidArgumentError(
            f"entry {index} of level {level} is not in a tree of size {size} ({count} entries)"
        )
    tile = index // TILE_WIDTH
    return Tile(level, tile, min(TILE_WIDTH, count - tile * TILE_WIDTH))


def entry_ranges(wanted: Sequence[NodeId], tile_height: int = TILE_HEIGHT) -> list[EntryRange]:
    """The entries, per level, that the perfect subtrees ``wanted`` are hashed from:
    node ``(h, i)`` needs entries ``[i << s, (i + 1) << s)`` of level ``h // tile_height``,
    ``s = h % tile_height``. Overlapping and adjacent ranges of a level are merged.
    """
    per_level: dict[int, list[tuple[int, int]]] = {}
    for height, index in wanted:
        level, shift = divmod(height, tile_height)
        per_level.setdefault(level, []).append((index << shift, (index + 1) << shift))
    merged: list[EntryRange] = []
    for level in sorted(per_level):
        spans = sorted(per_level[level])
        start, end = spans[0]
        for next_start, next_end in spans[1:]:
            if next_start <= end:
                end = max(end, next_end)
            else:
                merged.append((level, start, end))
                start, end = next_start, next_end
        merged.append((level, start, end))
    return merged


def nodes_from_entries(
    wanted: Sequence[NodeId],
    entries: Mapping[tuple[int, int], bytes],
    tile_height: int = TILE_HEIGHT,
) -> dict[NodeId, bytes]:
    """The hashes of the perfect subtrees ``wanted``, from tile ``entries``
    (``(level, index) -> hash``, every entry :func:`entry_ranges` names).

    Raises InvalidArgumentError when an entry is missing or not 32 bytes.
    """
    found: dict[NodeId, bytes] = {}
    for height, index in wanted:
        level, shift = divmod(height, tile_height)
        first = index << shift
        try:
            hashes = [entries[level, first + offset] for offset in range(1 << shift)]
        except KeyError:
            raise InvalidArgumentError(
                f"node ({height}, {index}) needs entries {first}..{first + (1 << shift) - 1} "
                f"of level {level}, not all supplied"
            ) from None
        found[height, index] = hashes[0] if shift == 0 else root_from_leaf_hashes(hashes)
        if len(found[height, index]) != HASH_SIZE:
            raise InvalidArgumentError(f"entry ({level}, {first}) is not {HASH_SIZE} bytes")
    return found


def group_roots(entries: Sequence[bytes], tile_height: int = TILE_HEIGHT) -> list[bytes]:
    """The next level's entries from consecutive entries of one level starting at a
    tile boundary: the root of each full group of ``2 ** tile_height`` (a partial group
    at the end is left out; tlog-tiles never hashes a partial tile upwards).

    Raises InvalidArgumentError when an entry is not 32 bytes.
    """
    width = 1 << tile_height
    return [
        root_from_leaf_hashes(entries[start : start + width])
        for start in range(0, len(entries) - width + 1, width)
    ]


def first_entry_mismatch(
    node: Callable[[int, int], bytes],
    size: int,
    stored: Iterable[tuple[int, int, bytes]],
    tile_height: int = TILE_HEIGHT,
) -> tuple[int, int, bytes] | None:
    """The first stored entry ``(level, index, hash)`` (by level, then index) that is not
    node ``(level * tile_height, index)`` of the tree of ``size`` leaves, whose perfect
    subtrees ``node(height, index)`` gives (e.g. ``MerkleLevels.node``); None if all agree.

    Entries past the tree (``index >= size >> (level * tile_height)``) are not judged: a
    log that grew since ``size`` was read has them rightly.
    """
    for level, index, hashed in sorted(stored):
        if index < size >> (level * tile_height) and node(level * tile_height, index) != hashed:
            return level, index, hashed
    return None


def decode_tile(data: bytes, width: int) -> list[bytes]:
    """The ``width`` hashes of a tile's bytes. Raises FormatError for another length."""
    if len(data) != width * HASH_SIZE:
        raise FormatError(f"a tile of width {width} has {width * HASH_SIZE} bytes, got {len(data)}")
    return [data[start : start + HASH_SIZE] for start in range(0, len(data), HASH_SIZE)]


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle: each entry prefixed with its length as a big-endian uint16.

    Raises InvalidArgumentError for an entry longer than :data:`MAX_ENTRY_BYTES`.
    """
    parts = []
    for position, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY_BYTES:
            raise InvalidArgumentError(
                f"entry {position} is {len(entry)} bytes; an entry bundle holds at most "
                f"{MAX_ENTRY_BYTES}"
            )
        parts += [len(entry).to_bytes(2, "big"), entry]
    return b"".join(parts)


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """The entries of an entry bundle. Raises FormatError for a cut-short one."""
    entries, position = [], 0
    while position < len(data):
        if position + 2 > len(data):
            raise FormatError(f"entry bundle ends inside a length prefix at byte {position}")
        length = int.from_bytes(data[position : position + 2], "big")
        position += 2
        if position + length > len(data):
            raise FormatError(f"entry bundle ends inside an entry of {length} bytes")
        entries.append(data[position : position + length])
        position += length
    return entries


def _require_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgumentError(f"tree size must be a non-negative integer, got {size!r}")
