"""``authtrail verify`` against a ClickHouse store: SQL finds damage, the pure core names it.

Per-row work runs inside ClickHouse, in two queries per range of tenants (about
:data:`CHUNK_RECORDS` rows), side by side on two connections:

* one with no ordering, so it runs on all cores: rebuild each canonical leaf and chain
  hash and compare them with the stored ones;
* one with each tenant's rows sorted by ``seq`` into arrays, checking that ``seq`` runs
  1, 2, 3 … and every ``prev_hash`` is the previous row's ``hash``, and hashing every
  perfect subtree of the tenant's Merkle tree, level by level (``size - 1`` node hashes,
  the bulk of the tree work).

Only the tenants either flags are read back row by row, to classify the first damage
exactly (:func:`authtrail.stream.core.chain.verify_chain`). The rejection logs
(stream/core/rejection.py), small next to the events, are read row by row from ``rejected``
(:mod:`authtrail.sinks.verify_rejections`) and then judged like any tenant. For the others,
:class:`authtrail.stream.core.audit.MerkleLevels` derives the log root at every checkpoint and every
batch root with a few hashes each, and the pure core checks signatures, succession, roots and
chain heads (:func:`authtrail.stream.core.audit.verify_checkpoint_levels`) exactly as from leaf
hashes. That judging starts while the first query still runs, as if every row matched;
a verdict is kept only when the query then agrees (docs/PERFORMANCE.md, "Verify against
this machine's SHA-256 limit").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from authtrail.errors import AuthtrailError, ChainError, StoreError, VerificationError
from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.clickhouse_sql import UNKNOWN_TABLE
from authtrail.sinks.tables import (
    CHECKPOINTS_TABLE,
    EVENTS_TABLE,
    TILES_TABLE,
    chain_hash_sql,
    leaf_hash_sql,
)
from authtrail.sinks.verify_rejections import RejectionLog, read_rejection_logs
from authtrail.sinks.verify_retention import (
    RetainedLog,
    open_statements,
    read_retained_log,
    read_retention_notes,
    retained_from_rows,
)
from authtrail.stream.core.audit import (
    CHECKPOINT_COLUMNS,
    CheckpointDamage,
    MerkleLevels,
    StoredCheckpoint,
    TenantSummary,
    provable,
    signed_size,
    verify_checkpoint_levels,
)
from authtrail.stream.core.chain import ChainLink, StoredLink, verify_chain
from authtrail.stream.core.merkle import HASH_SIZE
from authtrail.stream.core.monitor import Anchor, check_anchor, missing_tenant
from authtrail.stream.core.note import Keyring
from authtrail.stream.core.rejection import is_rejection_tenant
from authtrail.stream.core.retention import RetentionDamage
from authtrail.stream.core.rotation import SignedRange
from authtrail.stream.core.tiles import TILE_HEIGHT, first_entry_mismatch

#: Records after the newest checkpoint that nobody signed within the grace period.
UNSIGNED_RECORD = "unsigned record"
#: Rows in ``rejected`` naming a chain that is not a rejection log, or ``events`` rows of one.
MISPLACED_RECORD = "misplaced record"
#: A stored tile entry (sinks/tile_store.py) that is not the hash of its leaves.
TILE_MISMATCH = "tile mismatch"

TileEntries = dict[str, list[tuple[int, int, bytes]]]


class TileDamage(VerificationError):
    """A stored tile entry disagrees with the leaves it is the hash of (derived data: no
    record is wrong, but someone changed the store)."""

    def __init__(self, tenant_id: str, seq: int, detail: str) -> None:
        self.tenant_id, self.seq, self.damage, self.detail = tenant_id, seq, TILE_MISMATCH, detail
        super().__init__(f"tenant {tenant_id!r} seq {seq}: {TILE_MISMATCH}: {detail}")


_GENESIS_SQL = "toFixedString(unhex(repeat('00', 32)), 32)"

#: Records whose Merkle levels one query returns: ~64 bytes of hashes a record in memory.
CHUNK_RECORDS = 1_000_000

_RANGE = "tenant_id BETWEEN {first:String} AND {last:String}"

# The Merkle levels come back as ~64 MB of hashes a million records: LZ4 (ClickHouse's
# default for Arrow output) cannot shrink them, and compressing and decompressing them
# cost 0.1-0.3 CPU s a million.
_UNCOMPRESSED = " SETTINGS output_format_arrow_compression_method = 'none'"


@dataclass(frozen=True)
class TenantResult:
    """The verdict on one tenant: ``damage`` is None when everything verified."""

    tenant_id: str
    records: int
    checkpoints: int
    signed_size: int
    damage: str | None = None
    seq: int | None = None
    detail: str | None = None
    signed_by: tuple[str, ...] = ()  # the keys whose signatures verified its checkpoints
    newest_note: bytes | None = None  # the newest verified checkpoint's note (intact only)
    signed_ranges: tuple[SignedRange, ...] = ()  # which keys signed which seqs (intact only)
    pruned_size: int = 0  # records 1..pruned_size deleted under a signed retention statement
    retention_cut: int = 0  # the newest signed cut (> pruned_size: deletion still pending)

    def report(self) -> dict[str, Any]:
        """The result as JSON-ready values (the note is left out)."""
        fields = ("tenant_id", "records", "checkpoints", "signed_size", "signed_by",
                  "damage", "seq", "detail", "pruned_size", "retention_cut")  # fmt: skip
        return {name: getattr(self, name) for name in fields} | {
            "signed_by": list(self.signed_by),
            "signed_ranges": [signed.report() for signed in self.signed_ranges],
        }


@dataclass(frozen=True)
class UnsignedPolicy:
    """Records after the newest checkpoint older than ``grace_micros`` at ``now_micros``
    (by their ``stored_at``) are damage, not a pending tail: the sequencer signs every
    batch within its batch interval, so a record nobody signed was forged, or the
    sequencer stopped before signing it."""

    now_micros: int
    grace_micros: int


def _where(tenant_id: str | None) -> str:
    return "WHERE tenant_id = {tenant:String}" if tenant_id is not None else ""


def _parameters(tenant_id: str | None) -> dict[str, Any] | None:
    return {"tenant": tenant_id} if tenant_id is not None else None


def _record_counts(backend: ClickHouseBackend, tenant_id: str | None) -> dict[str, int]:
    """tenant -> its stored records (the primary key alone: no hashing)."""
    sql = f"SELECT tenant_id, count() FROM {EVENTS_TABLE} {_where(tenant_id)} GROUP BY tenant_id"
    table = backend.query_arrow(sql, _parameters(tenant_id))
    return dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))


def _flagged_tenants(
    backend: ClickHouseBackend, first: str, last: str
) -> dict[str, tuple[int, int]]:
    """tenant -> (records, rows whose leaf or chain hash is not their content's), in SQL,
    for the tenants first..last."""
    sql = f"""
        SELECT tenant_id, count() AS records,
            countIf(NOT (leaf_hash = {leaf_hash_sql()} AND hash = {chain_hash_sql()})) AS bad
        FROM {EVENTS_TABLE} WHERE {_RANGE} GROUP BY tenant_id"""
    table = backend.query_arrow(sql, {"first": first, "last": last})
    names, records, bad = (table.column(i).to_pylist() for i in range(3))
    return {
        name: (count, failures) for name, count, failures in zip(names, records, bad, strict=True)
    }


def _read_chain(
    backend: ClickHouseBackend, tenant_id: str
) -> tuple[list[ChainLink], ChainError | None]:
    """A tenant's stored links in seq order, and the first damage :func:`verify_chain` names."""
    sql = f"""SELECT seq, prev_hash, leaf_hash, hash, {leaf_hash_sql()} AS content_leaf_hash
              FROM {EVENTS_TABLE} WHERE tenant_id = {{tenant:String}} ORDER BY seq"""
    table = backend.query_arrow(sql, {"tenant": tenant_id})
    columns = [table.column(i).to_pylist() for i in range(5)]
    stored = [
        StoredLink(ChainLink(seq, prev, leaf, hashed), content)
        for seq, prev, leaf, hashed, content in zip(*columns, strict=True)
    ]
    try:
        verify_chain(tenant_id, stored)
    except ChainError as exc:
        return [], exc
    return [row.link for row in stored], None


def _checkpoints(
    backend: ClickHouseBackend, tenant_id: str | None
) -> dict[str, list[StoredCheckpoint]]:
    """tenant -> its stored checkpoints: each signed note and the columns beside it."""
    columns = ", ".join(
        "toUnixTimestamp64Micro(time_micros)" if name == "time_micros" else name
        for name in CHECKPOINT_COLUMNS
    )
    sql = f"""SELECT tenant_id, note, {columns} FROM {CHECKPOINTS_TABLE} {_where(tenant_id)}
              ORDER BY tenant_id, size"""
    table = backend.query_arrow(sql, _parameters(tenant_id))
    values = [table.column(i).to_pylist() for i in range(table.num_columns)]
    checkpoints: dict[str, list[StoredCheckpoint]] = {}
    for name, note, *stored in zip(*values, strict=True):
        checkpoints.setdefault(name, []).append(
            StoredCheckpoint(
                note.encode() if isinstance(note, str) else note,
                dict(zip(CHECKPOINT_COLUMNS, stored, strict=True)),
            )
        )
    return checkpoints


def _pair_up_sql(level: str) -> str:
    # Odd and even positions apart, then one vectorised SHA-256 per pair; a last odd node
    # is dropped (it is not a perfect subtree). Lambdas capture nothing: a captured array
    # would be copied once per element.
    odd = f"arrayFilter((h, i) -> i % 2 = 1, {level}, arrayEnumerate({level}))"
    even = f"arrayFilter((h, i) -> i % 2 = 0, {level}, arrayEnumerate({level}))"
    return (
        f"arrayMap((l, r) -> SHA256(concat('\\x01', l, r)), "
        f"arraySlice({odd}, 1, intDiv(length({level}), 2)), {even})"
    )


def _levels_sql(heights: int) -> str:
    """Per tenant of a name range: ``linked`` (seq gapless from 1, every prev_hash the
    previous hash) and columns h0..h{heights-1}, the perfect subtrees by height."""
    rows = (
        "SELECT tenant_id, arraySort(row -> row.1, groupArray((seq, prev_hash, hash, leaf_hash)))"
        f" AS rows FROM {EVENTS_TABLE} WHERE {_RANGE} GROUP BY tenant_id"
    )
    previous = f"arrayPushFront(arrayPopBack(arrayMap(row -> row.3, rows)), {_GENESIS_SQL})"
    query = (
        "SELECT tenant_id, "
        "arrayAll((row, index) -> row.1 = index, rows, arrayEnumerate(rows)) "
        f"AND arrayAll((row, hash) -> row.2 = hash, rows, {previous}) AS linked, "
        f"arrayMap(row -> row.4, rows) AS h0 FROM ({rows})"
    )
    # One subquery per height: an alias used three times would be inlined three times.
    for height in range(1, heights):
        query = f"SELECT *, {_pair_up_sql(f'h{height - 1}')} AS h{height} FROM ({query})"
    return query


def _merkle_levels(
    backend: ClickHouseBackend, first: str, last: str, heights: int
) -> dict[str, MerkleLevels | None]:
    """tenant -> the Merkle levels of its stored leaf hashes (None: not a gapless chain),
    for the tenants first..last."""
    table = backend.query_arrow(
        _levels_sql(heights) + _UNCOMPRESSED, {"first": first, "last": last}
    )
    columns = [_ListColumn(table.column(f"h{height}")) for height in range(heights)]
    linked = table.column("linked").to_pylist()
    result: dict[str, MerkleLevels | None] = {}
    for row, name in enumerate(table.column("tenant_id").to_pylist()):
        # Rows the sink stored since the counts were taken may need more heights than the
        # query has: verify the prefix it covers (a prefix's levels are prefixes of levels).
        size = min(len(columns[0].row(row)) // HASH_SIZE, (1 << heights) - 1)
        prefix = [
            columns[height].row(row)[: HASH_SIZE * (size >> height)]
            for height in range(size.bit_length())
        ]
        result[name] = MerkleLevels(size, prefix) if linked[row] else None
    return result


class _ListColumn:
    """Rows of an Arrow ``list<fixed_size_binary[32]>`` column as zero-copy memoryviews."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        array = column.combine_chunks()
        values = array.values
        self._offsets = array.offsets.to_pylist()
        self._base = values.offset
        self._buffer = memoryview(values.buffers()[1]) if len(values) else memoryview(b"")

    def row(self, row: int) -> memoryview:
        start, end = self._offsets[row] + self._base, self._offsets[row + 1] + self._base
        return self._buffer[HASH_SIZE * start : HASH_SIZE * end]


def _chain_heads(backend: ClickHouseBackend, first: str, last: str) -> dict[tuple[str, int], bytes]:
    """(tenant, seq) -> stored chain hash, for every seq some stored checkpoint ends at."""
    sql = f"""SELECT tenant_id, seq, hash FROM {EVENTS_TABLE}
              WHERE {_RANGE} AND (tenant_id, seq) IN
                  (SELECT tenant_id, size FROM {CHECKPOINTS_TABLE} WHERE {_RANGE})"""
    table = backend.query_arrow(sql, {"first": first, "last": last})
    names, seqs, hashes = (table.column(i).to_pylist() for i in range(3))
    return {(name, seq): hashed for name, seq, hashed in zip(names, seqs, hashes, strict=True)}


def _chain_head(
    backend: ClickHouseBackend, tenant_id: str, heads: dict[tuple[str, int], bytes]
) -> Callable[[int], bytes]:
    def head(size: int) -> bytes:
        # A note whose size the checkpoints table spells differently was not prefetched.
        if (tenant_id, size) not in heads:
            sql = f"""SELECT hash FROM {EVENTS_TABLE}
                      WHERE tenant_id = {{tenant:String}} AND seq = {{seq:UInt64}} LIMIT 1"""
            found = backend.query_arrow(sql, {"tenant": tenant_id, "seq": size}).column(0)
            heads[tenant_id, size] = found[0].as_py() if len(found) else b""
        return heads[tenant_id, size]

    return head


def _tile_entries(backend: ClickHouseBackend, first: str, last: str) -> TileEntries:
    """tenant -> its stored tile entries (1/256 of its records), for tenants first..last."""
    sql = f"SELECT tenant_id, level, entry_index, hash FROM {TILES_TABLE} WHERE {_RANGE}"
    try:
        table = backend.query_arrow(sql, {"first": first, "last": last})
    except StoreError as exc:
        if exc.code == UNKNOWN_TABLE:  # a store from before stored tiles: nothing to check
            return {}
        raise
    entries: TileEntries = {}
    for name, level, index, hashed in zip(*(table.column(i).to_pylist() for i in range(4)),
                                          strict=True):  # fmt: skip
        entries.setdefault(name, []).append((level, index, hashed))
    return entries


def _check_tiles(
    tenant_id: str, tree: MerkleLevels, entries: Sequence[tuple[int, int, bytes]]
) -> None:
    found = first_entry_mismatch(tree.node, tree.size, entries)
    if found is not None:
        level, index, hashed = found
        height = level * TILE_HEIGHT
        raise TileDamage(
            tenant_id, (index << height) + 1,
            f"stored tile entry {index} of level {level} (leaves {(index << height) + 1}.."
            f"{(index + 1) << height}) is {hashed.hex()}, the leaves hash to "
            f"{tree.node(height, index).hex()}; tiles are derived data (proofs are checked "
            "against signed roots), but someone changed the store",
        )  # fmt: skip


def _chunks(tenants: list[str], records: dict[str, int]) -> Iterator[list[str]]:
    """Consecutive runs of ``tenants`` (sorted) of about CHUNK_RECORDS records each."""
    chunk: list[str] = []
    total = 0
    for name in tenants:
        chunk.append(name)
        total += records.get(name, 0)
        if total >= CHUNK_RECORDS:
            yield chunk
            chunk, total = [], 0
    if chunk:
        yield chunk


def _first_unsigned(
    backend: ClickHouseBackend, first: str, last: str
) -> dict[tuple[str, int], int]:
    """(tenant, seq) -> stored_at in µs of each tenant's first record after its newest
    checkpoint (by the size column, which verification holds equal to the note)."""
    sql = f"""SELECT tenant_id, seq, toUnixTimestamp64Micro(stored_at) FROM {EVENTS_TABLE}
              WHERE {_RANGE} AND (tenant_id, seq) IN (
                  SELECT tenant_id, max(next_seq) FROM (
                      SELECT tenant_id, size + 1 AS next_seq FROM {CHECKPOINTS_TABLE}
                      WHERE {_RANGE}
                      UNION ALL
                      SELECT tenant_id, toUInt64(1) FROM {EVENTS_TABLE}
                      WHERE {_RANGE} AND seq = 1)
                  GROUP BY tenant_id)"""
    table = backend.query_arrow(sql, {"first": first, "last": last})
    names, seqs, stored = (table.column(i).to_pylist() for i in range(3))
    return {(name, seq): at for name, seq, at in zip(names, seqs, stored, strict=True)}


def verify_store(
    backend: ClickHouseBackend,
    keyring: Keyring,
    log_origin: str,
    *,
    tenant_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    anchors: Mapping[str, Sequence[Anchor]] | None = None,
    unsigned: UnsignedPolicy | None = None,
) -> Iterator[TenantResult]:
    """Verify every tenant (or one) in the store; yield one result per tenant, sorted.

    ``anchors`` are what trusted views outside the store saw of each tenant (auditor
    state, publication): every one must still hold
    (:func:`authtrail.stream.core.monitor.check_anchor`), and a tenant they name must exist. With
    ``unsigned``, records nobody signed within its grace are damage.
    """
    anchored: dict[str, list[Anchor]] = {
        name: list(seen)
        for name, seen in (anchors or {}).items()
        if tenant_id is None or name == tenant_id
    }
    retention_notes = read_retention_notes(backend, tenant_id)
    rejection_logs = read_rejection_logs(backend, tenant_id)
    # Checkpoints before the records: the sink stores records before the checkpoints
    # covering them, so records read afterwards cover every checkpoint read, even while
    # the sink runs.
    checkpoints = _checkpoints(backend, tenant_id)
    records = _record_counts(backend, tenant_id)
    tenants = sorted(set(records) | set(rejection_logs) | set(checkpoints) | set(anchored))
    done = 0
    # The hashing query of a chunk runs on a connection of its own while the Merkle levels
    # and the small reads run on another: chdb releases the GIL, and the levels' array work
    # runs on one core, so the two overlap (docs/PERFORMANCE.md, "Verify").
    with ThreadPoolExecutor(max_workers=1) as pool:
        for chunk in _chunks(tenants, records):
            first, last = chunk[0], chunk[-1]
            hashed = pool.submit(_flagged_tenants, backend, first, last)
            # One height spare: a tenant may grow while verify runs (see _merkle_levels).
            heights = max(records.get(name, 0) for name in chunk).bit_length() + 1
            levels = _merkle_levels(backend, first, last, heights) if heights else {}
            heads = _chain_heads(backend, first, last)
            tails = _first_unsigned(backend, first, last) if unsigned else {}
            tiles = _tile_entries(backend, first, last)
            # While the hashes are checked, judge each ordinary tenant as if every row
            # matched; a verdict is kept only if they did (below), else judged again.
            ahead: dict[str, TenantResult | None] = {}
            for name in chunk:
                tree = levels.get(name, MerkleLevels(0, []))
                if name in rejection_logs or name in retention_notes or tree is None:
                    continue
                try:
                    ahead[name] = _Verdict(backend, name, keyring, log_origin).judge(
                        (records.get(name, 0), 0), checkpoints.get(name, []), tree, heads,
                        anchored.get(name, []), (unsigned, tails) if unsigned else None,
                        tiles.get(name, []),
                    )  # fmt: skip
                except AuthtrailError:
                    ahead[name] = None  # judged again below, where the error belongs
            flagged = hashed.result()
            for name in chunk:
                verdict = _Verdict(backend, name, keyring, log_origin)
                log = rejection_logs.get(name)
                if log is not None and (name in flagged or not is_rejection_tenant(name)):
                    events = flagged.get(name, (0, 0))[0]
                    yield verdict.misplaced(log, events, checkpoints.get(name, []))
                elif log is not None:
                    yield verdict.judge_rejections(
                        log, checkpoints.get(name, []), anchored.get(name, []), unsigned,
                        tiles.get(name, []),
                    )  # fmt: skip
                elif name in retention_notes:
                    yield verdict.judge_retained(
                        retention_notes[name], flagged.get(name, (0, 0)),
                        checkpoints.get(name, []), anchored.get(name, []),
                        (unsigned, tails) if unsigned else None, tiles.get(name, []),
                    )  # fmt: skip
                else:
                    # Judged ahead with the same arguments unless the counts differ or a
                    # row's hashes did not match.
                    counted = flagged.get(name, (0, 0))
                    result = ahead.get(name) if counted == (records.get(name, 0), 0) else None
                    yield result or verdict.judge(
                        counted, checkpoints.get(name, []),
                        levels.get(name, MerkleLevels(0, [])), heads, anchored.get(name, []),
                        (unsigned, tails) if unsigned else None, tiles.get(name, []),
                    )  # fmt: skip
                done += 1
                if progress is not None:
                    progress(done, len(tenants))


class _Verdict:
    """The verdict on one tenant: chain, then checkpoints, then anchors, then its tail."""

    def __init__(
        self, backend: ClickHouseBackend, tenant_id: str, keyring: Keyring, log_origin: str
    ) -> None:
        self.backend, self.tenant_id = backend, tenant_id
        self.keyring, self.log_origin = keyring, log_origin

    def judge(
        self,
        flagged: tuple[int, int],
        checkpoints: list[StoredCheckpoint],
        tree: MerkleLevels | None,
        heads: dict[tuple[str, int], bytes],
        anchors: list[Anchor],
        unsigned: tuple[UnsignedPolicy, dict[tuple[str, int], int]] | None,
        tiles: list[tuple[int, int, bytes]] | None = None,
    ) -> TenantResult:
        records, bad = flagged
        if not records and not checkpoints and anchors:
            return self._damaged(0, checkpoints, missing_tenant(self.tenant_id, anchors[0]))
        chain_head = _chain_head(self.backend, self.tenant_id, heads)
        if bad or tree is None:
            links, error = _read_chain(self.backend, self.tenant_id)
            if error is not None:
                return self._damaged(records, checkpoints, error)
            # Flagged, yet intact when read again (rows changed in between): check the
            # checkpoints against exactly the rows just proven to be an intact chain.
            tree = MerkleLevels.from_leaf_hashes([link.leaf_hash for link in links])
            chain_head = lambda size: links[size - 1].hash  # noqa: E731
        return self._checked(tree, chain_head, checkpoints, anchors, unsigned, tiles or [])

    def judge_rejections(
        self,
        log: RejectionLog,
        checkpoints: list[StoredCheckpoint],
        anchors: list[Anchor],
        unsigned: UnsignedPolicy | None,
        tiles: list[tuple[int, int, bytes]],
    ) -> TenantResult:
        """The verdict on a rejection log read row by row
        (:mod:`authtrail.sinks.verify_rejections`), pruned under its retention statements
        like a tenant's log (:meth:`judge_retained`)."""
        tails = {(self.tenant_id, seq): at for seq, at in log.stored_at.items()}
        policy = (unsigned, tails) if unsigned else None
        if log.notes:
            try:
                statements = open_statements(
                    self.tenant_id, log.notes, self.keyring, self.log_origin
                )
                retained = retained_from_rows(self.tenant_id, statements, log.rows, tiles)
            except (ChainError, RetentionDamage) as exc:
                return self._damaged(len(log.rows), checkpoints, exc)
            return self._judged_retained(retained, checkpoints, anchors, policy, tiles)
        if log.error is not None:
            return self._damaged(len(log.rows), checkpoints, log.error)
        links = log.links
        tree = MerkleLevels.from_leaf_hashes([link.leaf_hash for link in links])
        return self._checked(
            tree, lambda size: links[size - 1].hash if size <= len(links) else b"",
            checkpoints, anchors, policy, tiles,
        )  # fmt: skip

    def judge_retained(
        self,
        notes: list[tuple[int, str]],
        flagged: tuple[int, int],
        checkpoints: list[StoredCheckpoint],
        anchors: list[Anchor],
        unsigned: tuple[UnsignedPolicy, dict[tuple[str, int], int]] | None,
        tiles: list[tuple[int, int, bytes]],
    ) -> TenantResult:
        """The verdict on a tenant whose log holds retention statements
        (:mod:`authtrail.sinks.verify_retention`): pruned records are no damage."""
        try:
            log = read_retained_log(
                self.backend, self.tenant_id, notes, self.keyring, self.log_origin, tiles,
                contents_checked=not flagged[1],
            )  # fmt: skip
        except (ChainError, RetentionDamage) as exc:
            return self._damaged(flagged[0], checkpoints, exc)
        return self._judged_retained(log, checkpoints, anchors, unsigned, tiles)

    def _judged_retained(
        self,
        log: RetainedLog,
        checkpoints: list[StoredCheckpoint],
        anchors: list[Anchor],
        unsigned: tuple[UnsignedPolicy, dict[tuple[str, int], int]] | None,
        tiles: list[tuple[int, int, bytes]],
    ) -> TenantResult:
        # An anchor older than the cut, off a tile boundary, needs pruned leaves: its
        # root can no longer be recomputed (docs/INTEGRITY.md, "What a pruned log proves").
        kept = [anchor for anchor in anchors if provable(0, anchor.size, log.pruned_size)]
        result = self._checked(log.tree, log.chain_head, checkpoints, kept, unsigned, tiles,
                               pruned_size=log.pruned_size)  # fmt: skip
        return replace(result, pruned_size=log.pruned_size, retention_cut=log.cut)

    def misplaced(
        self, log: RejectionLog, events: int, checkpoints: list[StoredCheckpoint]
    ) -> TenantResult:
        """A chain with rows in both tables, or rejected rows claiming an ordinary tenant."""
        where = "events and rejected both hold rows" if events else "rejected holds rows"
        return self._damaged(
            events + len(log.links), checkpoints,
            CheckpointDamage(
                self.tenant_id, 1, MISPLACED_RECORD,
                f"{where} of this chain; only authtrail's rejection logs "
                "(authtrail-rejected-<partition>) live in rejected, and only there",
            ),
        )  # fmt: skip

    def _checked(
        self,
        tree: MerkleLevels,
        chain_head: Callable[[int], bytes],
        checkpoints: list[StoredCheckpoint],
        anchors: list[Anchor],
        unsigned: tuple[UnsignedPolicy, dict[tuple[str, int], int]] | None,
        tiles: Sequence[tuple[int, int, bytes]] = (),
        *,
        pruned_size: int = 0,
    ) -> TenantResult:
        """Checkpoints, anchors, the unsigned tail and stored tiles against a chain proven
        intact (from the retention anchor at ``pruned_size``)."""
        try:
            summary = verify_checkpoint_levels(
                self.tenant_id,
                tree,
                chain_head,
                checkpoints,
                self.keyring,
                self.log_origin,
                pruned_size=pruned_size,
            )
            for anchor in anchors:
                check_anchor(self.tenant_id, tree, summary.signed_size, anchor)
            if unsigned is not None:
                self._check_tail(summary, *unsigned)
            _check_tiles(self.tenant_id, tree, tiles)
        except (CheckpointDamage, TileDamage) as exc:
            return self._damaged(tree.size, checkpoints, exc)
        return TenantResult(
            self.tenant_id, summary.records, summary.checkpoints, summary.signed_size,
            signed_by=summary.signed_by, newest_note=summary.newest_note,
            signed_ranges=summary.signed_ranges,
        )  # fmt: skip

    def _check_tail(
        self, summary: TenantSummary, policy: UnsignedPolicy, tails: dict[tuple[str, int], int]
    ) -> None:
        if summary.records <= summary.signed_size:
            return
        seq = summary.signed_size + 1
        stored_at = tails.get((self.tenant_id, seq))
        if stored_at is None:  # the sink stored a checkpoint since the tails were read
            sql = f"""SELECT toUnixTimestamp64Micro(stored_at) FROM {EVENTS_TABLE}
                      WHERE tenant_id = {{tenant:String}} AND seq = {{seq:UInt64}} LIMIT 1"""
            found = self.backend.query_arrow(sql, {"tenant": self.tenant_id, "seq": seq})
            stored_at = found.column(0)[0].as_py() if found.num_rows else policy.now_micros
        age = policy.now_micros - stored_at
        if abs(age) > policy.grace_micros:
            when = f"{age / 1e6:.0f} s ago" if age > 0 else f"{-age / 1e6:.0f} s in the future"
            raise CheckpointDamage(
                self.tenant_id, seq, UNSIGNED_RECORD,
                f"{summary.records - summary.signed_size} records after the newest checkpoint "
                f"(size {summary.signed_size}), the first stored {when}, are signed by nobody "
                f"(allowed: {policy.grace_micros / 1e6:.0f} s): forged, or the sequencer "
                "stopped before signing them",
            )  # fmt: skip

    def _damaged(
        self,
        records: int,
        checkpoints: list[StoredCheckpoint],
        error: ChainError | CheckpointDamage | TileDamage | RetentionDamage,
    ) -> TenantResult:
        signed = signed_size(self.tenant_id, checkpoints, self.keyring, self.log_origin)
        return TenantResult(
            self.tenant_id, records, len(checkpoints), signed, error.damage, error.seq,
            error.detail,
        )  # fmt: skip
