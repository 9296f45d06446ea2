"""Retention in the store: what a cut would sign, which statements are stored, the deletion.

The statement (stream/core/retention.py) is built from what the store holds: the chain hash
of the last pruned record and the root of the pruned leaves, computed from the stored
level-1 tile entries that will stand in for them (checked against the leaves first, so
a statement never signs entries that disagree with the records).

The deletion is the one statement in authtrail that removes rows, and it takes a
deliberate path: ``ALTER TABLE events DELETE WHERE tenant_id = … AND seq <= cut``, run
only when a statement with that cut, signed by a trusted key, is stored in the tenant's
own log. It needs a connection allowed to mutate ``events``: the embedded store opened
by its only owner, or a ClickHouse server user with ``ALTER DELETE`` on ``events`` (an
administrator; the ``writer`` role the sink holds cannot, and the HTTP front refuses
DELETE and ALTER for its writer, analyst and auditor users: sinks/access.py).

A mutation, not a lightweight ``DELETE FROM``: a lightweight delete only masks rows, and
the personal data stays in the parts until a merge happens to rewrite them (it is still
readable with ``apply_deleted_mask = 0``); the mutation rewrites the parts holding the
tenant's rows now. ``events`` is partitioned by month of ``occurred_at`` for all tenants
together, so a per-tenant cut can never be a ``DROP PARTITION``; on a server, when every
tenant of a month is past its cut, dropping that partition is the cheap equivalent
(docs/PRIVACY.md, "Retention").

A rejection log (stream/core/rejection.py) is pruned the same way, in ``rejected``: its
rows are named by ``chain_tenant_id``, dated by ``rejected_at``, and its statements are
the records of kind ``retention`` the worker chained (:data:`LOG_ROWS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from authtrail.errors import AuthtrailError, CheckpointError
from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.clickhouse_sql import quote_string_literal
from authtrail.sinks.tables import EVENTS_TABLE, REJECTED_TABLE, TILES_TABLE
from authtrail.sinks.verify_retention import read_retention_notes
from authtrail.stream.core.checkpoint import checkpoint_origin
from authtrail.stream.core.merkle import root_from_leaf_hashes
from authtrail.stream.core.note import Keyring
from authtrail.stream.core.rejection import is_rejection_tenant
from authtrail.stream.core.retention import RetentionDamage, RetentionStatement, open_retention
from authtrail.stream.core.tiles import TILE_HEIGHT, TILE_WIDTH


class LogRows(NamedTuple):
    """Where a log's records are stored: the table, the column naming the log, the one
    dating a record."""

    table: str
    log: str
    time: str


LOG_ROWS = {
    False: LogRows(EVENTS_TABLE, "tenant_id", "occurred_at"),
    True: LogRows(REJECTED_TABLE, "chain_tenant_id", "rejected_at"),
}


def log_rows(tenant_id: str) -> LogRows:
    """Where the records of ``tenant_id`` (a tenant or a rejection log) are stored."""
    return LOG_ROWS[is_rejection_tenant(tenant_id)]


class RetentionUnavailable(AuthtrailError):
    """Nothing can be pruned as asked: the cut is beyond the signed log, or the tiles
    that would stand in for the pruned leaves are not built yet."""


@dataclass(frozen=True)
class StoredStatement:
    """A verified retention statement stored in record ``seq`` of its tenant's log."""

    seq: int
    statement: RetentionStatement


def stored_statements(
    backend: ClickHouseBackend, tenant_id: str, keyring: Keyring, log_origin: str
) -> list[StoredStatement]:
    """The tenant's stored retention statements, each verified. Raises RetentionDamage
    for one no trusted key signed."""
    notes = read_retention_notes(backend, tenant_id).get(tenant_id, [])
    return [
        StoredStatement(seq, open_retention(tenant_id, seq, note, keyring, log_origin))
        for seq, note in notes
    ]


def statement_for_cut(
    backend: ClickHouseBackend, tenant_id: str, cut: int, log_origin: str, time_micros: int
) -> RetentionStatement:
    """The statement that records ``1..cut`` may go, from the store (unsigned).

    Requires ``cut`` a positive multiple of 256. Raises RetentionUnavailable when record
    ``cut`` is not stored or no stored checkpoint covers it yet, or the level-1 tile
    entries under the cut are not all built; RetentionDamage when they disagree with
    the leaves they stand in for.
    """
    rows = log_rows(tenant_id)
    sql = f"""SELECT hash FROM {rows.table}
              WHERE {rows.log} = {{tenant:String}} AND seq = {{seq:UInt64}}"""
    hashes = backend.query_arrow(sql, {"tenant": tenant_id, "seq": cut}).column(0).to_pylist()
    signed = backend.query_arrow(
        "SELECT max(size) FROM checkpoints WHERE tenant_id = {tenant:String}", {"tenant": tenant_id}
    ).column(0)[0].as_py()  # fmt: skip
    if len(hashes) != 1 or not signed or signed < cut:
        raise RetentionUnavailable(
            f"tenant {tenant_id!r}: records up to {cut} are not all stored and signed yet "
            f"(newest checkpoint: {signed or 'none'}); prune less"
        )
    entries = _level_one(backend, tenant_id, cut)
    _check_entries(backend, tenant_id, cut, entries)
    return RetentionStatement(
        checkpoint_origin(log_origin, tenant_id), cut, root_from_leaf_hashes(entries),
        hashes[0], time_micros,
    )  # fmt: skip


def _level_one(backend: ClickHouseBackend, tenant_id: str, cut: int) -> list[bytes]:
    sql = f"""SELECT DISTINCT entry_index, hash FROM {TILES_TABLE}
              WHERE tenant_id = {{tenant:String}} AND level = 1 AND entry_index < {{count:UInt64}}
              ORDER BY entry_index"""
    count = cut >> TILE_HEIGHT
    rows = backend.query_arrow(sql, {"tenant": tenant_id, "count": count}).to_pylist()
    if [row["entry_index"] for row in rows] != list(range(count)):
        raise RetentionUnavailable(
            f"tenant {tenant_id!r}: the tile entries that stand in for records 1..{cut} are "
            "not all built (or one is stored twice with different hashes); the sink builds "
            "them every few seconds: run this again later, or `authtrail verify`"
        )
    return [row["hash"] for row in rows]


def _check_entries(
    backend: ClickHouseBackend, tenant_id: str, cut: int, entries: list[bytes]
) -> None:
    """Each level-1 entry under the cut whose leaves are stored must be their root, and
    the leaves must be all of ``first..cut`` for some tile boundary ``first``: below it, an
    earlier retention pruned them (``verify`` checked those entries against its signed
    root, which is why retain verifies the tenant first)."""
    table, log, _ = log_rows(tenant_id)
    sql = f"""SELECT intDiv(seq - 1, {TILE_WIDTH}) AS tile,
                  arrayMap(row -> row.2, arraySort(groupArray((seq, leaf_hash)))) AS leaves
              FROM {table} WHERE {log} = {{tenant:String}} AND seq <= {{cut:UInt64}}
              GROUP BY tile ORDER BY tile"""
    rows = backend.query_arrow(sql, {"tenant": tenant_id, "cut": cut}).to_pylist()
    first = rows[0]["tile"] if rows else len(entries)
    if [row["tile"] for row in rows] != list(range(first, len(entries))):
        raise RetentionUnavailable(
            f"tenant {tenant_id!r}: records of 1..{cut} are missing in the middle; run "
            "`authtrail verify`"
        )
    for row in rows:
        index, leaves = row["tile"], row["leaves"]
        if len(leaves) != TILE_WIDTH or root_from_leaf_hashes(leaves) != entries[index]:
            raise RetentionDamage(
                tenant_id, index * TILE_WIDTH + 1, "tile mismatch",
                f"tile entry {index} of level 1 is not the root of the stored records "
                f"{index * TILE_WIDTH + 1}..{(index + 1) * TILE_WIDTH}: run `authtrail verify`",
            )  # fmt: skip


def stored_below(backend: ClickHouseBackend, tenant_id: str, cut: int) -> int:
    """How many records ``1..cut`` of the tenant are still stored."""
    table, log, _ = log_rows(tenant_id)
    sql = f"""SELECT count() FROM {table}
              WHERE {log} = {{tenant:String}} AND seq <= {{cut:UInt64}}"""
    return int(backend.query_arrow(sql, {"tenant": tenant_id, "cut": cut}).column(0)[0].as_py())


def delete_pruned(
    backend: ClickHouseBackend, tenant_id: str, cut: int, keyring: Keyring, log_origin: str
) -> tuple[int, int]:
    """Delete the tenant's records below its newest stored retention statement's cut,
    which must reach at least ``cut``; return that cut and how many records were stored.

    Refuses (RetentionUnavailable) unless a statement with a cut of at least ``cut``,
    signed by a key of ``keyring``, is stored in the tenant's log: a deletion the log
    does not record is exactly what ``verify`` reports as damage. Deleting to the newest
    cut, not to ``cut``, because ``verify`` holds the store to the newest statement.
    Raises StoreError when the connection may not mutate ``events`` (the writer,
    analyst and auditor may not).
    """
    statements = stored_statements(backend, tenant_id, keyring, log_origin)
    newest = max((stored.statement.pruned_size for stored in statements), default=0)
    if newest < cut:
        raise RetentionUnavailable(
            f"tenant {tenant_id!r}: no signed retention statement for records 1..{cut} is "
            "stored in its log yet; nothing was deleted"
        )
    present = stored_below(backend, tenant_id, newest)
    if present:
        table, log, _ = log_rows(tenant_id)
        backend.command(
            f"ALTER TABLE {table} DELETE WHERE {log} = "
            f"{quote_string_literal(tenant_id)} AND seq <= {int(newest)}",
            {"mutations_sync": 2},
        )
    return newest, present


def first_seq_since(backend: ClickHouseBackend, tenant_id: str, since_micros: int) -> int:
    """The first seq of ``tenant_id`` whose event occurred at or after ``since_micros``
    (one past the last record when none did): every record before it is older."""
    table, log, time = log_rows(tenant_id)
    since = "fromUnixTimestamp64Micro({since:Int64}, 'UTC')"
    sql = f"""SELECT minIf(seq, {time} >= {since}), countIf({time} >= {since}), max(seq)
              FROM {table} WHERE {log} = {{tenant:String}}"""
    row = backend.query_arrow(sql, {"tenant": tenant_id, "since": since_micros}).to_pylist()[0]
    first, newer, last = row.values()
    return int(first) if newer else int(last or 0) + 1


def claimed_cut(backend: ClickHouseBackend, tenant_id: str) -> int:
    """The largest cut the tenant's stored retention statements state, signatures
    unchecked: only to explain why a proof cannot be built (``verify`` judges them)."""
    cuts = [0]
    for _, note in read_retention_notes(backend, tenant_id).get(tenant_id, []):
        body = note.rpartition("\n\n")[0]
        try:
            cuts.append(RetentionStatement.parse((body + "\n").encode()).pruned_size)
        except CheckpointError:
            continue
    return max(cuts)
