"""Stored tlog-tiles (:mod:`stream.tiles`): the sink writes them, proofs read O(log n) of them.

Level 0 of every tenant's tree is the ``events`` table itself (``leaf_hash`` by ``seq``,
its sort key). Levels 1 and up live in the ``tiles`` table, one row per entry
``(tenant_id, level, entry_index, hash)``: entry ``j`` of level ``L`` is the root of the
``j``-th full tile of level ``L - 1``. Only entries of full tiles exist, and they never
change, so the rows are append-only like every table here, and the entries of a larger
tree serve every smaller one: a partial tile of a checkpoint's tree is a prefix of the
stored entries of its level.

:class:`TileBuilder` appends the entries that became complete, reading only what is
stored (so it is correct after any restart, duplicate delivery or crash between two
inserts: it continues from the stored entries). :class:`StoredTiles` is the proof node
source: one query for the entries a proof needs, at most a few hundred rows.

Tiles are derived data, never evidence: a proof built from them is checked against the
signed checkpoint by whoever verifies it, and ``authtrail prove`` checks it against the
stored checkpoint's root first and recomputes from the leaves when they disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pyarrow as pa

from authtrail.errors import AuthtrailError, ChainError
from sinks.backend import ClickHouseBackend
from sinks.tables import EVENTS_TABLE, TILES_TABLE
from stream.chain import DELETED, INSERTED
from stream.tiles import TILE_HEIGHT, TILE_WIDTH, entry_ranges, group_roots, nodes_from_entries
from stream.tree_proofs import NodeId

_LOG = logging.getLogger(__name__)

#: Entries of one level read and hashed per step while catching up (2**20 leaves: 32 MiB).
CATCH_UP_ENTRIES = 1 << 20

TILES_SCHEMA = pa.schema(
    [
        pa.field("tenant_id", pa.string()),
        pa.field("level", pa.uint8()),
        pa.field("entry_index", pa.uint64()),
        pa.field("hash", pa.binary(32)),
    ]
)


class TilesUnavailable(AuthtrailError):
    """The stored tiles cannot give a node: entries not built yet, or stored twice with
    different hashes (damage ``authtrail verify`` reports)."""


def _advice(tenant_id: str) -> str:
    return f"run `authtrail verify --tenant {tenant_id}`"


def _entries_sql(ranges: Sequence[tuple[int, int, int]]) -> str:
    """At most two subqueries (leaves, tile entries) whatever the ranges: a chdb query
    costs milliseconds, its conditions microseconds. Ranges of a level less than a tile
    apart are read as one (a proof skips its own leaf and a few entries beside its path:
    the same granule, fewer conditions to analyse); the caller ignores the extra rows."""
    leaves = [f"seq BETWEEN {start + 1} AND {end}" for level, start, end in _coalesced(ranges)
              if not level]  # fmt: skip
    entries = [
        f"(level = {level} AND entry_index BETWEEN {start} AND {end - 1})"
        for level, start, end in _coalesced(ranges)
        if level
    ]
    parts = []
    # PREWHERE on the sort key: the key columns are read first, the hashes only of the
    # rows that match (measured ~15 % less per query than WHERE on chdb).
    if leaves:
        parts.append(
            f"SELECT toUInt8(0) AS level, seq - 1 AS entry_index, leaf_hash AS hash "
            f"FROM {EVENTS_TABLE} PREWHERE tenant_id = {{tenant:String}} AND "
            f"({' OR '.join(leaves)})"
        )
    if entries:
        parts.append(
            f"SELECT level, entry_index, hash FROM {TILES_TABLE} "
            f"PREWHERE tenant_id = {{tenant:String}} AND ({' OR '.join(entries)})"
        )
    # A few hundred rows: one thread answers sooner than a pool.
    return " UNION ALL ".join(parts) + " SETTINGS max_threads = 1"


def _coalesced(ranges: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """``ranges`` with the ranges of one level less than :data:`TILE_WIDTH` apart joined."""
    joined: list[tuple[int, int, int]] = []
    for level, start, end in sorted(ranges):
        if joined and joined[-1][0] == level and start - joined[-1][2] < TILE_WIDTH:
            joined[-1] = (level, joined[-1][1], max(end, joined[-1][2]))
        else:
            joined.append((level, start, end))
    return joined


def read_entries(
    backend: ClickHouseBackend, tenant_id: str, ranges: Sequence[tuple[int, int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored entries ``(level, start, end)`` of ``tenant_id``, in one query.

    Entries not stored are absent from the result. Raises ChainError when a seq of a
    level-0 range is stored twice (its leaves are no tree) and TilesUnavailable when a
    tile entry is stored twice with different hashes.
    """
    if not ranges:
        return {}
    table = backend.query_arrow(_entries_sql(ranges), {"tenant": tenant_id})
    levels, indexes, hashes = (table.column(i).to_pylist() for i in range(3))
    found: dict[tuple[int, int], bytes] = {}
    for level, index, hashed in zip(levels, indexes, hashes, strict=True):
        if not any(lv == level and start <= index < end for lv, start, end in ranges):
            continue  # read along with a neighbouring range (_coalesced), not asked for
        if (level, index) not in found:
            found[level, index] = hashed
        elif level == 0:  # even an identical copy: verify calls that damage, so no tree
            detail = f"seq stored twice: no proof can be built; {_advice(tenant_id)}"
            raise ChainError(tenant_id, index + 1, INSERTED, detail)
        elif found[level, index] != hashed:
            raise TilesUnavailable(
                f"tenant {tenant_id!r}: tile entry {index} of level {level} is stored with "
                f"two different hashes; {_advice(tenant_id)}"
            )
    return found


class StoredTiles:
    """Proof nodes from the stored tiles: O(log n) rows per proof (a :class:`TreeNodes`)."""

    def __init__(self, backend: ClickHouseBackend) -> None:
        self.backend = backend

    def nodes(self, tenant_id: str, size: int, wanted: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        """Every node of ``wanted`` (perfect subtrees of the tree of ``size``).

        Raises ChainError when a needed seq is missing or stored twice, TilesUnavailable
        when a needed tile entry is not built (yet) or stored with two hashes.
        """
        ranges = entry_ranges(wanted)
        found = read_entries(self.backend, tenant_id, ranges)
        for level, start, end in ranges:
            missing = next((i for i in range(start, end) if (level, i) not in found), None)
            if missing is None:
                continue
            if level == 0:
                detail = f"seq missing: no proof can be built; {_advice(tenant_id)}"
                raise ChainError(tenant_id, missing + 1, DELETED, detail)
            raise TilesUnavailable(
                f"tenant {tenant_id!r}: tile entry {missing} of level {level} is not stored "
                f"(the tree of size {size} needs it)"
            )
        return nodes_from_entries(wanted, found)


class TileBuilder:
    """Appends the tile entries of each tenant's tree that became complete.

    Reads what is stored (the leaves of ``events``, the entries of ``tiles``) and writes
    only entries past the stored ones, in order, level by level, so a crash at any point
    leaves a prefix that the next call continues. A tenant whose stored records are not
    one per seq is skipped, with one warning (``authtrail verify`` names the damage).
    """

    def __init__(self, backend: ClickHouseBackend) -> None:
        self._backend = backend
        self._stored: dict[str, dict[int, int]] | None = None  # tenant -> level -> entries
        self._stuck: dict[str, str] = {}

    def _stored_entries(self) -> dict[str, dict[int, int]]:
        if self._stored is None:
            table = self._backend.query_arrow(
                f"SELECT tenant_id, level, max(entry_index) + 1 FROM {TILES_TABLE} "
                "GROUP BY tenant_id, level"
            )
            stored: dict[str, dict[int, int]] = {}
            columns = [table.column(i).to_pylist() for i in range(3)]
            for tenant, level, count in zip(*columns, strict=True):
                stored.setdefault(tenant, {})[level] = count
            self._stored = stored
        return self._stored

    def catch_up(self) -> int:
        """Build every tenant's missing entries from the store; return entries written."""
        table = self._backend.query_arrow(
            f"SELECT tenant_id, max(seq) FROM {EVENTS_TABLE} GROUP BY tenant_id"
        )
        names, seqs = table.column(0).to_pylist(), table.column(1).to_pylist()
        return self.extend(dict(zip(names, seqs, strict=True)))

    def extend(self, leaves: Mapping[str, int]) -> int:
        """Build the entries complete once ``tenant_id`` has ``leaves[tenant_id]`` leaves
        stored (seq 1..n); return the number of entries written."""
        written = 0
        for tenant_id, count in leaves.items():
            written += self._extend(tenant_id, count)
        return written

    def _extend(self, tenant_id: str, leaves: int) -> int:
        stored = self._stored_entries().setdefault(tenant_id, {})
        below, level, written = leaves, 1, 0
        while below >= TILE_WIDTH:
            complete = below // TILE_WIDTH
            have = stored.get(level, 0)
            while have < complete:
                step = min(complete - have, CATCH_UP_ENTRIES // TILE_WIDTH)
                start, end = have * TILE_WIDTH, (have + step) * TILE_WIDTH
                roots = self._roots(tenant_id, level - 1, start, end)
                if roots is None:
                    return written
                self._insert(tenant_id, level, have, roots)
                have += step
                stored[level] = have
                written += step
            below, level = complete, level + 1
        return written

    def _roots(self, tenant_id: str, level: int, start: int, end: int) -> list[bytes] | None:
        try:
            found = read_entries(self._backend, tenant_id, [(level, start, end)])
        except (ChainError, TilesUnavailable) as exc:
            self._warn_once(tenant_id, str(exc))
            return None
        missing = next((i for i in range(start, end) if (level, i) not in found), None)
        if missing is not None:
            what = f"seq {missing + 1}" if level == 0 else f"entry {missing} of level {level}"
            self._warn_once(tenant_id, f"{what} is not stored")
            return None
        return group_roots([found[level, index] for index in range(start, end)], TILE_HEIGHT)

    def _insert(self, tenant_id: str, level: int, first: int, roots: list[bytes]) -> None:
        data = pa.table(
            {
                "tenant_id": pa.array([tenant_id] * len(roots), pa.string()),
                "level": pa.array([level] * len(roots), pa.uint8()),
                "entry_index": pa.array(range(first, first + len(roots)), pa.uint64()),
                "hash": pa.array(roots, pa.binary(32)),
            },
            schema=TILES_SCHEMA,
        )
        token = f"{TILES_TABLE}:{tenant_id}:{level}:{first}:{len(roots)}"
        self._backend.insert_arrow(TILES_TABLE, data, dedup_token=token)

    def _warn_once(self, tenant_id: str, reason: str) -> None:
        if self._stuck.get(tenant_id) != reason:
            self._stuck[tenant_id] = reason
            _LOG.warning("tiles of tenant %r not extended: %s; proofs recompute from the "
                         "leaves; %s", tenant_id, reason, _advice(tenant_id))  # fmt: skip
