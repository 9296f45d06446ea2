"""The sink's tile writer: appends the tile entries (sinks/tile_store.py) that became complete.

It reads only what is stored (the leaves of ``events`` and of the rejection logs in
``rejected``, the entries of ``tiles``) and writes
only entries past the stored ones, level by level, so a crash at any point leaves a prefix
that the next call continues. Work is done for many tenants at once: one query reads the
hashes under the new entries of up to :data:`TENANTS_PER_ROUND` tenants, and one insert
writes their entries (a query costs the embedded engine milliseconds whatever it reads;
per tenant, tiles cost the sink more than storing the records did).

A tenant whose stored records are not one per seq is skipped, with one warning (``authtrail
verify`` names the damage); the others go on.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from typing import cast

import pyarrow as pa

from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.clickhouse_sql import in_key_ranges
from authtrail.sinks.tables import EVENTS_TABLE, REJECTED_TABLE, TILES_TABLE
from authtrail.sinks.tile_store import TILES_SCHEMA
from authtrail.stream.core.merkle import HASH_SIZE
from authtrail.stream.core.native_hashes import tile_roots as native_tile_roots
from authtrail.stream.core.rejection import is_rejection_tenant
from authtrail.stream.core.tiles import TILE_HEIGHT, TILE_WIDTH, group_roots

_LOG = logging.getLogger(__name__)

#: Hashes of one level read per round while catching up (2**20: 32 MiB).
CATCH_UP_ENTRIES = 1 << 20
#: Tenants per round: their conditions must stay far below ClickHouse's max_query_size.
TENANTS_PER_ROUND = 200

_Job = tuple[str, int, int]  # tenant, first entry to build, entries to build

# Where each log's leaves are stored: the tenants' in ``events``, the rejection logs' in
# ``rejected`` (their level-1 entries stand in for pruned rejections as for pruned
# records). Each table is asked with its own conditions, so that ``events`` is read
# through its primary key: one query over both tables filtered outside read all of it.
_LEAF_TABLES = (
    (EVENTS_TABLE, "tenant_id", "seq", "leaf_hash", False),
    (REJECTED_TABLE, "assumeNotNull(chain_tenant_id)", "assumeNotNull(seq)",
     "assumeNotNull(leaf_hash)", True),
)  # fmt: skip
_LAST_LEAVES = f"""SELECT tenant_id, max(seq) FROM {EVENTS_TABLE} GROUP BY tenant_id
    UNION ALL SELECT assumeNotNull(chain_tenant_id), max(assumeNotNull(seq)) FROM {REJECTED_TABLE}
              WHERE chain_tenant_id IS NOT NULL GROUP BY chain_tenant_id"""


class TileBuilder:
    """Appends the tile entries of each tenant's tree that became complete."""

    def __init__(self, backend: ClickHouseBackend) -> None:
        self._backend = backend
        # Insert tokens are this builder's own. An engine killed between recording a
        # token and committing its part keeps the token without the rows; a later process
        # building the same entries under the same token would be dropped as a duplicate
        # (seen in CI: a level-1 entry missing after a sink was SIGKILLed). A retry of one
        # insert by this builder keeps its token, so only that stays deduplicated.
        self._token_prefix = f"{TILES_TABLE}:{secrets.token_hex(8)}"
        self._stored: dict[str, dict[int, int]] | None = None  # tenant -> level -> entries
        self._stuck: dict[str, str] = {}

    def catch_up(self) -> int:
        """Build every tenant's missing entries from the store; return entries written."""
        table = self._backend.query_arrow(_LAST_LEAVES)
        names, seqs = table.column(0).to_pylist(), table.column(1).to_pylist()
        return self.extend(dict(zip(names, seqs, strict=True)))

    def extend(self, leaves: Mapping[str, int]) -> int:
        """Build the entries complete once each tenant has ``leaves[tenant]`` leaves stored
        (seq 1..n); return the number of entries written."""
        stored = self._stored_entries()
        written, level, below = 0, 1, dict(leaves)
        while below:
            jobs: list[_Job] = []
            for tenant, count in below.items():
                have = stored.setdefault(tenant, {}).get(level, 0)
                if have < count // TILE_WIDTH:
                    jobs.append((tenant, have, count // TILE_WIDTH - have))
            for round_jobs in _rounds(jobs):
                written += self._build(level, round_jobs, stored, below)
            # The next level's leaves are this level's entries (of tenants not stuck).
            below = {tenant: count // TILE_WIDTH for tenant, count in below.items()
                     if count // TILE_WIDTH >= TILE_WIDTH}  # fmt: skip
            level += 1
        return written

    def _build(
        self, level: int, jobs: list[_Job], stored: dict[str, dict[int, int]],
        below: dict[str, int],
    ) -> int:  # fmt: skip
        """Build the entries of ``jobs`` at ``level`` with one read and one insert; a tenant
        whose hashes below are missing or repeated is dropped from ``below``."""
        found = self._read(level - 1, jobs)
        rows: dict[str, list[object]] = {"tenant_id": [], "level": [], "entry_index": [],
                                         "hash": []}  # fmt: skip
        for tenant, first, count in jobs:
            if tenant not in below:  # stuck in an earlier round: entries must stay a prefix
                continue
            start, end = first * TILE_WIDTH, (first + count) * TILE_WIDTH
            roots = found.roots(tenant, start, end)
            if roots is None:  # not one hash per index: equal repeats, or damage
                hashes = found.by_index(tenant)
                problem = _problem(hashes, level - 1, start, end)
                if problem is not None:
                    self._warn_once(tenant, problem)
                    below.pop(tenant, None)
                    continue
                below_hashes = [h for i in range(start, end) if (h := hashes[i]) is not None]
                roots = group_roots(below_hashes, TILE_HEIGHT)
            rows["tenant_id"] += [tenant] * count
            rows["level"] += [level] * count
            rows["entry_index"] += range(first, first + count)
            rows["hash"] += roots
        if not rows["hash"]:
            return 0
        # Names exactly this content, so only a retry of this very insert is dropped.
        what = ",".join(f"{tenant}@{first}+{count}" for tenant, first, count in jobs)
        token = f"{self._token_prefix}:{level}:{hashlib.sha256(what.encode()).hexdigest()}"
        data = pa.table(rows, schema=TILES_SCHEMA)
        self._backend.insert_arrow(TILES_TABLE, data, dedup_token=token)
        built = 0
        for tenant, first, count in jobs:
            if tenant in below:
                stored[tenant][level] = first + count
                built += count
        return built

    def _read(self, level: int, jobs: list[_Job]) -> _Found:
        """The stored hashes at ``level`` under the jobs' entries, ordered by tenant and
        index."""
        if level == 0:
            selects = []
            for table_name, log, seq, leaf, rejections in _LEAF_TABLES:
                ranges = [
                    (tenant, first * TILE_WIDTH + 1, (first + count) * TILE_WIDTH)
                    for tenant, first, count in jobs
                    if is_rejection_tenant(tenant) == rejections
                ]
                if ranges:
                    keys, where = in_key_ranges(log, seq, ranges)
                    selects.append(f"WITH {keys} SELECT {log} AS at_log, {seq} - 1 AS at_index, "
                                   f"{leaf} FROM {table_name} WHERE {where}")  # fmt: skip
            sql = f"SELECT * FROM ({' UNION ALL '.join(selects)}) ORDER BY at_log, at_index"
        else:
            ranges = [(tenant, first * TILE_WIDTH, (first + count) * TILE_WIDTH - 1)
                      for tenant, first, count in jobs]  # fmt: skip
            keys, where = in_key_ranges("tenant_id", "entry_index", ranges)
            sql = (f"WITH {keys} SELECT tenant_id, entry_index, hash FROM {TILES_TABLE} "
                   f"WHERE level = {level} AND {where} "
                   "ORDER BY tenant_id, entry_index")  # fmt: skip
        return _Found(self._backend.query_arrow(sql), level)

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

    def _warn_once(self, tenant_id: str, reason: str) -> None:
        if self._stuck.get(tenant_id) != reason:
            self._stuck[tenant_id] = reason
            _LOG.warning("tiles of tenant %r not extended: %s; proofs recompute from the "
                         "leaves; run `authtrail verify --tenant %s`", tenant_id, reason,
                         tenant_id)  # fmt: skip


class _Found:
    """Hashes read for a round, in (tenant, index) order: a tenant's run is hashed into
    tiles as it is when it holds exactly one hash per index asked (the usual case), else
    looked at hash by hash."""

    def __init__(self, table: pa.Table, level: int) -> None:
        # Tenants are sorted, so each tenant's hashes are one run, found by bisection
        # (ClickHouse orders strings by their UTF-8 bytes, Python by code point: the same
        # order).
        self._tenants = table.column(0).to_pylist()
        self._indexes = table.column(1).to_pylist()
        self._column = table.column(2).combine_chunks()
        self._level = level
        # 32-byte hashes (FixedString(32)) are one buffer, hashed into tiles from it in C
        # (or sliced into bytes: ~3 times faster than to_pylist(), which cost more than
        # hashing the tiles).
        column = self._column
        self._packed: bytes | None = None
        if (
            pa.types.is_fixed_size_binary(column.type)
            and column.type.byte_width == HASH_SIZE
            and column.null_count == 0
        ):
            start = column.offset * HASH_SIZE
            self._packed = column.buffers()[1][start : start + len(column) * HASH_SIZE].to_pybytes()

    def _run(self, tenant: str) -> tuple[int, int]:
        return bisect_left(self._tenants, tenant), bisect_right(self._tenants, tenant)

    def _slice(self, low: int, high: int) -> list[bytes | None]:
        packed = self._packed
        if packed is None:
            hashes: list[bytes | None] = self._column[low:high].to_pylist()
            return hashes
        return [packed[at : at + HASH_SIZE] for at in range(low * HASH_SIZE, high * HASH_SIZE,
                                                              HASH_SIZE)]  # fmt: skip

    def roots(self, tenant: str, start: int, end: int) -> list[bytes] | None:
        """The roots of the tiles over the tenant's hashes ``start..end`` (a whole number
        of tiles), if exactly those indexes are there once each and none is NULL; else
        None."""
        low, high = self._run(tenant)
        if high - low != end - start or self._indexes[low:high] != list(range(start, end)):
            return None
        if self._packed is not None:  # hashed in C straight from the buffer
            joined = native_tile_roots(self._packed[low * HASH_SIZE : high * HASH_SIZE],
                                       TILE_WIDTH)  # fmt: skip
            if joined is not None:
                return [joined[at : at + HASH_SIZE] for at in range(0, len(joined), HASH_SIZE)]
        hashes = self._slice(low, high)
        return None if None in hashes else group_roots(cast(list[bytes], hashes), TILE_HEIGHT)

    def by_index(self, tenant: str) -> dict[int, bytes | None]:
        """The tenant's hashes by index; None for an index stored twice with different
        hashes (or a seq stored twice at all)."""
        low, high = self._run(tenant)
        hashes: dict[int, bytes | None] = {}
        for index, hashed in zip(self._indexes[low:high], self._slice(low, high), strict=True):
            if index in hashes and (self._level == 0 or hashes[index] != hashed):
                hashes[index] = None  # no tree: verify names the damage
            else:
                hashes.setdefault(index, hashed)
        return hashes


def _rounds(jobs: list[_Job]) -> Iterator[list[_Job]]:
    """``jobs`` cut into rounds of at most :data:`TENANTS_PER_ROUND` tenants and
    :data:`CATCH_UP_ENTRIES` hashes read; a long catch-up is split into several jobs."""
    per_job = CATCH_UP_ENTRIES // TILE_WIDTH
    pieces = [
        (tenant, start, min(per_job, first + count - start))
        for tenant, first, count in jobs
        for start in range(first, first + count, per_job)
    ]
    current: list[_Job] = []
    entries = 0
    for piece in pieces:
        if current and (len(current) >= TENANTS_PER_ROUND or entries + piece[2] > per_job):
            yield current
            current, entries = [], 0
        current.append(piece)
        entries += piece[2]
    if current:
        yield current


def _problem(hashes: Mapping[int, bytes | None], level: int, start: int, end: int) -> str | None:
    """Why the hashes ``start..end`` of ``level`` cannot make entries, or None."""
    for index in range(start, end):
        if index not in hashes:
            what = f"seq {index + 1}" if level == 0 else f"entry {index} of level {level}"
            return f"{what} is not stored"
        if hashes[index] is None:
            what = f"seq {index + 1}" if level == 0 else f"entry {index} of level {level}"
            return f"{what} is stored twice" + ("" if level == 0 else " with different hashes")
    return None
