"""``authtrail prove``: proof bundles (docs/INTEGRITY.md, "Proof bundles") from the store.

The adapter reads the event row and the stored checkpoint notes, asks a
:class:`TreeNodes` for the few perfect-subtree hashes the proof needs
(:mod:`authtrail.stream.core.tree_proofs` plans which), and lets the pure core assemble the bundle.
It needs no key and judges nothing it does not have to: a stored note goes into the bundle
verbatim, and ``authtrail verify-proof`` decides whether it verifies.

Node sources: :class:`authtrail.sinks.tile_store.StoredTiles` reads the O(log n) stored tile
entries a proof needs (the default); :class:`LevelsInSql` hashes the tenant's whole tree
up to the checkpoint's size inside ClickHouse (``size - 1`` SHA-256 calls, the way
``authtrail verify`` does): O(n) per proof. By default a proof from the tiles is checked
against the root of the stored checkpoint it leads to, and recomputed from the leaves
when the tiles are not built that far, or when they disagree (tiles are derived data: a
damaged tile must cost time, never a correct bundle).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from authtrail.errors import AuthtrailError, ChainError, CheckpointError, VerificationError
from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.tables import CHECKPOINTS_TABLE, EVENTS_TABLE, event_columns
from authtrail.sinks.tile_store import StoredTiles, TilesUnavailable
from authtrail.sinks.verify_store import _pair_up_sql  # the one SQL spelling of a Merkle level step
from authtrail.stream.core.audit import FORKED_CHECKPOINT, CheckpointDamage
from authtrail.stream.core.bundle import make_consistency_bundle, make_inclusion_bundle
from authtrail.stream.core.chain import DELETED, DUPLICATED, INSERTED
from authtrail.stream.core.checkpoint import Checkpoint
from authtrail.stream.core.merkle import root_from_inclusion_proof, verify_consistency
from authtrail.stream.core.tree_proofs import (
    LeafRange,
    NodeId,
    consistency_ranges,
    inclusion_ranges,
    nodes_of_ranges,
    proof_from_nodes,
)

_CANDIDATES_SHOWN = 20
_LOG = logging.getLogger(__name__)


class ProofUnavailableError(AuthtrailError):
    """Nothing to prove from: no such event, an ambiguous event id, a seq no stored
    checkpoint covers yet, or no stored checkpoint of the size asked for."""


class TreeNodes(Protocol):
    """Perfect-subtree hashes ``(height, index)`` of a tenant's tree of ``size`` leaves."""

    def nodes(self, tenant_id: str, size: int, wanted: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        """Return every node of ``wanted``. Raises ChainError when the stored records
        of seq 1..size are not exactly one per seq (no tree to take nodes from)."""


class LevelsInSql:
    """Nodes hashed in ClickHouse from the stored leaf hashes, level by level: O(size)."""

    def __init__(self, backend: ClickHouseBackend) -> None:
        self.backend = backend

    def nodes(self, tenant_id: str, size: int, wanted: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        if not wanted:
            return {}
        heights = max(height for height, _ in wanted) + 1
        table = self.backend.query_arrow(
            _nodes_sql(heights, wanted), {"tenant": tenant_id, "size": size}
        )
        records, irregular, irregular_seq, hashes = (table.column(i)[0].as_py() for i in range(4))
        if irregular or records != size:
            raise _not_one_per_seq(tenant_id, size, records, irregular, irregular_seq)
        return dict(zip(wanted, hashes, strict=True))


class TilesOrLeaves:
    """Nodes from the stored tiles (O(log n) rows), or hashed from the leaves
    (:class:`LevelsInSql`, O(n)) when the tiles are not built that far. Unchecked: for
    callers whose proofs someone else checks against the signed roots (a witness)."""

    def __init__(self, backend: ClickHouseBackend) -> None:
        self.tiles, self.leaves = StoredTiles(backend), LevelsInSql(backend)

    def nodes(self, tenant_id: str, size: int, wanted: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        try:
            return self.tiles.nodes(tenant_id, size, wanted)
        except TilesUnavailable as exc:
            _LOG.info("%s; nodes hashed from the leaves", exc)
            return self.leaves.nodes(tenant_id, size, wanted)


def _nodes_sql(heights: int, wanted: Sequence[NodeId]) -> str:
    rows = (
        "SELECT arraySort(row -> row.1, groupArray((seq, leaf_hash))) AS rows "
        f"FROM {EVENTS_TABLE} WHERE tenant_id = {{tenant:String}} AND seq BETWEEN 1 AND "
        "{size:UInt64}"
    )
    query = (
        "SELECT length(rows) AS records, "
        "arrayFirstIndex((row, position) -> row.1 != position, rows, arrayEnumerate(rows)) "
        "AS irregular, if(irregular = 0, toUInt64(0), rows[irregular].1) AS irregular_seq, "
        f"arrayMap(row -> row.2, rows) AS h0 FROM ({rows})"
    )
    for height in range(1, heights):
        query = f"SELECT *, {_pair_up_sql(f'h{height - 1}')} AS h{height} FROM ({query})"
    picked = ", ".join(f"h{height}[{index + 1}]" for height, index in wanted)
    return f"SELECT records, irregular, irregular_seq, [{picked}] AS nodes FROM ({query})"


def _not_one_per_seq(
    tenant_id: str, size: int, records: int, irregular: int, irregular_seq: int
) -> ChainError:
    advice = f"no proof can be built; run `authtrail verify --tenant {tenant_id}`"
    if irregular and irregular_seq < irregular:
        return ChainError(tenant_id, irregular_seq, INSERTED, f"seq stored twice: {advice}")
    missing = irregular if irregular else records + 1
    detail = f"seq missing ({records} records for seq 1..{size}): {advice}"
    return ChainError(tenant_id, missing, DELETED, detail)


def find_event(
    backend: ClickHouseBackend, event_id: str, tenant_id: str | None = None
) -> tuple[str, int]:
    """Return ``(tenant_id, seq)`` of the stored event ``event_id`` (in ``tenant_id`` if given).

    Raises :class:`ProofUnavailableError` when no record has that id, or several do (the
    message lists them: pick one with a tenant, or prove by tenant and seq).
    """
    where = "event_id = {event_id:String}"
    parameters: dict[str, Any] = {"event_id": event_id}
    if tenant_id is not None:
        where += " AND tenant_id = {tenant:String}"
        parameters["tenant"] = tenant_id
    sql = f"""SELECT tenant_id, seq FROM {EVENTS_TABLE} WHERE {where}
              ORDER BY tenant_id, seq LIMIT {_CANDIDATES_SHOWN + 1}"""
    table = backend.query_arrow(sql, parameters)
    hits = list(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
    scope = f" of tenant {tenant_id!r}" if tenant_id is not None else ""
    if not hits:
        raise ProofUnavailableError(f"no stored event{scope} has event_id {event_id!r}")
    if len(hits) > 1:
        shown = ", ".join(f"tenant {t!r} seq {s}" for t, s in hits[:_CANDIDATES_SHOWN])
        more = " and more" if len(hits) > _CANDIDATES_SHOWN else ""
        hint = "--tenant T" if tenant_id is None else "--tenant T --seq N"
        raise ProofUnavailableError(
            f"event_id {event_id!r}{scope} is stored more than once ({shown}{more}): "
            f"choose one with {hint}"
        )
    return hits[0]


def prove_inclusion(
    backend: ClickHouseBackend,
    log_origin: str,
    tenant_id: str,
    seq: int,
    *,
    tree_size: int | None = None,
    nodes: TreeNodes | None = None,
) -> dict[str, Any]:
    """Return the inclusion bundle of record ``seq`` of ``tenant_id``.

    The proof leads to the newest stored checkpoint covering ``seq`` (size >= seq), or to
    the stored checkpoint of size ``tree_size`` when given. The bundle's log origin is
    the one that note names; ``log_origin`` only when the note names none for the tenant.

    Raises:
        ProofUnavailableError: no record ``seq``; no stored checkpoint covers it yet (or
            none of size ``tree_size``, or ``tree_size < seq``).
        ChainError: several records claim ``seq``, or seq 1..size is not one record each.
        CheckpointDamage: two different checkpoint notes are stored for that size.
    """
    # The event row is the dearest read (every column of a granule): it runs on a second
    # connection while the note and the tile entries are read (docs/PERFORMANCE.md).
    with ThreadPoolExecutor(max_workers=1) as pool:
        record = pool.submit(_record, backend, tenant_id, seq)
        try:
            tree_size, note, proof = _note_and_proof(backend, tenant_id, seq, tree_size, nodes,
                                                     record)  # fmt: skip
        except AuthtrailError:
            _raise_record_error(record)  # as before: a missing or doubled record first
            raise
    event, (prev_hash, stored_leaf_hash, hashed) = record.result()
    return make_inclusion_bundle(
        log_origin=_log_origin(note, tenant_id, log_origin), tenant_id=tenant_id, seq=seq,
        event=event, tree_size=tree_size, inclusion_proof=proof,
        checkpoint_note=note, stored_leaf_hash=stored_leaf_hash, chain=(prev_hash, hashed),
    )  # fmt: skip


_Record = tuple[dict[str, Any], tuple[bytes, bytes, bytes]]


def _raise_record_error(record: Future[_Record]) -> None:
    error = record.exception()
    if error is not None:
        raise error


def _note_and_proof(
    backend: ClickHouseBackend,
    tenant_id: str,
    seq: int,
    tree_size: int | None,
    nodes: TreeNodes | None,
    record: Future[_Record],
) -> tuple[int, str, list[bytes]]:
    """The size and note of the checkpoint the proof of ``seq`` leads to, and the proof."""
    if tree_size is None:
        tree_size, note = newest_note(backend, tenant_id, seq)
    elif tree_size < seq:
        raise ProofUnavailableError(f"a tree of size {tree_size} does not contain seq {seq}")
    else:
        note = stored_note(backend, tenant_id, tree_size)
    signed = stored_checkpoint(note)
    size = tree_size

    def leads_to_root(proof: list[bytes]) -> None:
        stored_leaf_hash = record.result()[1][1]
        if (
            signed is not None
            and root_from_inclusion_proof(stored_leaf_hash, seq - 1, size, proof) != signed.root
        ):
            raise VerificationError(f"the proof of seq {seq} leads to another root")

    ranges = inclusion_ranges(seq - 1, tree_size)
    return tree_size, note, _proof(backend, tenant_id, tree_size, ranges, nodes, leads_to_root)


def prove_consistency(
    backend: ClickHouseBackend,
    log_origin: str,
    tenant_id: str,
    old_size: int,
    new_size: int,
    *,
    nodes: TreeNodes | None = None,
) -> dict[str, Any]:
    """Return the consistency bundle between the stored checkpoints of ``old_size`` and
    ``new_size`` of ``tenant_id``.

    Raises:
        ProofUnavailableError: ``old_size > new_size``, or no checkpoint of either size
            is stored (the message lists stored sizes nearby).
        ChainError: seq 1..new_size is not one record each.
        CheckpointDamage: two different checkpoint notes are stored for one of the sizes.
    """
    if not 1 <= old_size <= new_size:
        raise ProofUnavailableError(
            f"sizes must satisfy 1 <= OLD <= NEW, got {old_size} {new_size}"
        )
    old_note = stored_note(backend, tenant_id, old_size)
    new_note = stored_note(backend, tenant_id, new_size)
    old, new = stored_checkpoint(old_note), stored_checkpoint(new_note)

    def leads_to_root(proof: list[bytes]) -> None:
        if old is not None and new is not None:
            verify_consistency(old_size, new_size, proof, old.root, new.root)

    proof = _proof(backend, tenant_id, new_size, consistency_ranges(old_size, new_size), nodes,
                   leads_to_root)  # fmt: skip
    return make_consistency_bundle(
        log_origin=_log_origin(new_note, tenant_id, log_origin), tenant_id=tenant_id,
        old_note=old_note, new_note=new_note, consistency_proof=proof,
    )  # fmt: skip


def _proof(
    backend: ClickHouseBackend,
    tenant_id: str,
    size: int,
    ranges: Sequence[LeafRange],
    nodes: TreeNodes | None,
    check: Callable[[list[bytes]], None],
) -> list[bytes]:
    """The proof of ``ranges`` from ``nodes``; by default from the stored tiles, checked
    by ``check`` (raises VerificationError: not the stored checkpoint's root) and
    recomputed from the leaves when the tiles cannot give it or it fails the check."""
    wanted = nodes_of_ranges(ranges)
    if nodes is not None:
        return proof_from_nodes(ranges, nodes.nodes(tenant_id, size, wanted))
    try:
        proof = proof_from_nodes(ranges, StoredTiles(backend).nodes(tenant_id, size, wanted))
        check(proof)
        return proof
    except ChainError as exc:
        _raise_if_pruned(backend, tenant_id, exc)
        raise  # the leaves themselves are no tree: recomputing would say the same
    except TilesUnavailable as exc:
        _LOG.info("%s; proof nodes recomputed from the leaves", exc)
    except VerificationError as exc:
        _LOG.warning(
            "tenant %r: the proof from the stored tiles does not lead to the stored checkpoint "
            "of size %d (%s); recomputed from the leaves; run `authtrail verify --tenant %s`",
            tenant_id, size, exc, tenant_id,
        )  # fmt: skip
    return proof_from_nodes(ranges, LevelsInSql(backend).nodes(tenant_id, size, wanted))


def _raise_if_pruned(backend: ClickHouseBackend, tenant_id: str, error: ChainError) -> None:
    """ProofUnavailableError when the missing leaf was pruned under a retention statement
    (docs/INTEGRITY.md, "What a pruned log proves"): not damage, just no longer provable."""
    from authtrail.sinks.retention_store import claimed_cut

    cut = claimed_cut(backend, tenant_id)
    if error.damage == DELETED and error.seq <= cut:
        raise ProofUnavailableError(
            f"tenant {tenant_id!r}: records 1..{cut} were pruned under a retention statement; "
            f"this proof needs record {error.seq} (only sizes from {cut} on, or on a "
            "256-record tile boundary, can still be proven)"
        ) from error


def stored_checkpoint(note: str) -> Checkpoint | None:
    """The checkpoint a stored note states, signatures unchecked (None if it does not
    parse): only to catch damaged derived data; verify-proof judges the note itself."""
    body, separator, _ = note.rpartition("\n\n")
    try:
        return Checkpoint.parse((body + "\n").encode()) if separator else None
    except CheckpointError:
        return None


def _record(
    backend: ClickHouseBackend, tenant_id: str, seq: int
) -> tuple[dict[str, Any], tuple[bytes, bytes, bytes]]:
    """The stored event fields of record ``seq`` and its (prev_hash, leaf_hash, hash)."""
    sql = record_sql()
    rows = backend.query_arrow(sql, {"tenant": tenant_id, "seq": seq}).to_pylist()
    if not rows:
        raise ProofUnavailableError(f"tenant {tenant_id!r} has no stored record of seq {seq}")
    if len(rows) > 1:
        damage = DUPLICATED if all(row == rows[0] for row in rows) else INSERTED
        detail = f"{len(rows)} records have this seq; run `authtrail verify --tenant {tenant_id}`"
        raise ChainError(tenant_id, seq, damage, detail)
    row = rows[0]
    event = {column.name: row[column.name] for column in event_columns()}
    for column in event_columns():
        if column.kind == "m":  # Arrow maps arrive as [(key, value), ...]
            event[column.name] = dict(event[column.name] or [])
    return event, (row["prev_hash"], row["leaf_hash"], row["hash"])


def record_sql() -> str:
    """The query for one stored record (``{tenant:String}``, ``{seq:UInt64}``): every event
    column, timestamps as microseconds, then prev_hash, leaf_hash, hash."""
    columns = [
        f"toUnixTimestamp64Micro(`{c.name}`) AS `{c.name}`" if c.kind == "t" else f"`{c.name}`"
        for c in event_columns()
    ]
    # PREWHERE: the sort key is read first, the other columns of the one matching row.
    return f"""SELECT {", ".join(columns)}, prev_hash, leaf_hash, hash FROM {EVENTS_TABLE}
               PREWHERE tenant_id = {{tenant:String}} AND seq = {{seq:UInt64}}
               SETTINGS max_threads = 1"""


def newest_size(backend: ClickHouseBackend, tenant_id: str, seq: int) -> int:
    """The size of the newest stored checkpoint covering ``seq``; ProofUnavailableError
    when none does."""
    sql = f"""SELECT max(size), count() FROM {CHECKPOINTS_TABLE}
              WHERE tenant_id = {{tenant:String}} AND size >= {{seq:UInt64}}"""
    table = backend.query_arrow(sql, {"tenant": tenant_id, "seq": seq})
    if not table.column(1)[0].as_py():
        signed = _sizes_near(backend, tenant_id, seq)
        raise ProofUnavailableError(
            f"tenant {tenant_id!r} seq {seq} is not signed yet (stored checkpoints: {signed}); "
            "it will be once the sequencer closes its batch"
        )
    return int(table.column(0)[0].as_py())


def newest_note(backend: ClickHouseBackend, tenant_id: str, seq: int) -> tuple[int, str]:
    """The size and note of the newest stored checkpoint covering ``seq``, in one query.

    Raises ProofUnavailableError when none covers it, CheckpointDamage when two
    different notes are stored for that size.
    """
    sql = f"""SELECT DISTINCT size, note FROM {CHECKPOINTS_TABLE}
              PREWHERE tenant_id = {{tenant:String}} AND size >= {{seq:UInt64}}
              ORDER BY size DESC LIMIT 2 SETTINGS max_threads = 1"""
    rows = backend.query_arrow(sql, {"tenant": tenant_id, "seq": seq}).to_pylist()
    if not rows:  # raises, naming the stored sizes (unless one was stored meanwhile)
        size = newest_size(backend, tenant_id, seq)
        return size, stored_note(backend, tenant_id, size)
    if len(rows) > 1 and rows[1]["size"] == rows[0]["size"]:
        size = rows[0]["size"]
        raise CheckpointDamage(tenant_id, size, FORKED_CHECKPOINT,
                               f"different notes stored for size {size}")  # fmt: skip
    return rows[0]["size"], _text(rows[0]["note"])


def stored_note(backend: ClickHouseBackend, tenant_id: str, size: int) -> str:
    """The checkpoint note stored for ``size`` (identical copies count once)."""
    sql = f"""SELECT DISTINCT note FROM {CHECKPOINTS_TABLE}
              PREWHERE tenant_id = {{tenant:String}} AND size = {{size:UInt64}}"""
    notes = backend.query_arrow(sql, {"tenant": tenant_id, "size": size}).column(0).to_pylist()
    if not notes:
        raise ProofUnavailableError(
            f"tenant {tenant_id!r} has no stored checkpoint of size {size} (stored sizes near "
            f"it: {_sizes_near(backend, tenant_id, size)})"
        )
    if len(notes) > 1:
        raise CheckpointDamage(tenant_id, size, FORKED_CHECKPOINT,
                               f"{len(notes)} different notes stored for size {size}")  # fmt: skip
    return _text(notes[0])


def _text(note: bytes | str) -> str:
    # A note that is not UTF-8 is damaged; carried with U+FFFD it fails verify-proof's
    # signature check, which names it, instead of stopping the prover.
    return note.decode("utf-8", "replace") if isinstance(note, bytes) else str(note)


def _log_origin(note: str, tenant_id: str, default: str) -> str:
    """The log origin the note's origin line names (``<log_origin>/<tenant_id>``), else
    ``default``: a bundle names the log its checkpoint says it is of, whatever this
    prover's settings say; verify-proof checks the claim against the signature."""
    origin_line = note.split("\n", 1)[0]
    log_origin, slash, tenant = origin_line.rpartition("/")
    return log_origin if slash and log_origin and tenant == tenant_id else default


def _sizes_near(backend: ClickHouseBackend, tenant_id: str, size: int) -> str:
    sql = f"""SELECT size FROM {CHECKPOINTS_TABLE} WHERE tenant_id = {{tenant:String}}
              ORDER BY abs(toInt64(size) - {{size:Int64}}), size LIMIT 5"""
    sizes = backend.query_arrow(sql, {"tenant": tenant_id, "size": size}).column(0).to_pylist()
    return ", ".join(map(str, sorted(set(sizes)))) or "none"
