"""``authtrail verify`` of a tenant whose log carries retention statements
(stream/core/retention.py).

Such a tenant is read row by row (its retained records, not the whole table): the
statements' signatures first, then the rows. Records missing below the newest
statement's cut are not damage: they were pruned, and the chain is checked from the
anchor the statement signed. The dropped leaves are replaced by the stored tile entries
of level 1 that cover them, whose root the statement signed too, so every checkpoint
root that needs no dropped leaf is still recomputed (:func:`authtrail.stream.core.audit.provable`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.tables import EVENTS_TABLE, REJECTED_TABLE, leaf_hash_sql
from authtrail.stream.core.audit import MerkleLevels
from authtrail.stream.core.chain import ChainHead, ChainLink, StoredLink, verify_chain
from authtrail.stream.core.note import Keyring
from authtrail.stream.core.rejection import is_rejection_tenant
from authtrail.stream.core.retention import (
    NOTE_ATTRIBUTE,
    RETENTION_EVENT_TYPE,
    RETENTION_INCOMPLETE,
    RETENTION_MISMATCH,
    RETENTION_REJECTION_KIND,
    RETENTION_SERVICE,
    RetentionDamage,
    RetentionStatement,
    open_retention,
    pruned_levels,
)
from authtrail.stream.core.tiles import TILE_HEIGHT

RetentionNotes = dict[str, list[tuple[int, str]]]


def read_retention_notes(backend: ClickHouseBackend, tenant_id: str | None) -> RetentionNotes:
    """tenant -> (seq, note) of each stored record claiming to be a retention statement
    (of every tenant, or of ``tenant_id``, which may name a rejection log)."""
    if tenant_id is not None and is_rejection_tenant(tenant_id):
        return _rejection_log_notes(backend, tenant_id)
    where = "AND tenant_id = {tenant:String}" if tenant_id is not None else ""
    sql = f"""SELECT tenant_id, seq, attributes[{{note:String}}] FROM {EVENTS_TABLE}
              WHERE service = {{service:String}} AND event_type_other = {{kind:String}} {where}
              ORDER BY tenant_id, seq"""
    parameters = {"note": NOTE_ATTRIBUTE, "service": RETENTION_SERVICE,
                  "kind": RETENTION_EVENT_TYPE, "tenant": tenant_id}  # fmt: skip
    if tenant_id is None:
        del parameters["tenant"]
    table = backend.query_arrow(sql, parameters)
    notes: RetentionNotes = {}
    for name, seq, note in zip(*(table.column(i).to_pylist() for i in range(3)), strict=True):
        notes.setdefault(name, []).append((seq, note))
    return notes


def _rejection_log_notes(backend: ClickHouseBackend, tenant_id: str) -> RetentionNotes:
    sql = f"""SELECT seq, hex(reason) FROM {REJECTED_TABLE}
              WHERE chain_tenant_id = {{tenant:String}} AND error_kind = {{kind:String}}
              ORDER BY seq"""
    parameters = {"tenant": tenant_id, "kind": RETENTION_REJECTION_KIND}
    rows = backend.query_arrow(sql, parameters).to_pylist()
    notes = [(row["seq"], bytes.fromhex(row["hex(reason)"]).decode("utf-8", "replace"))
             for row in rows]  # fmt: skip
    return {tenant_id: notes} if notes else {}


@dataclass(frozen=True)
class RetainedLog:
    """A tenant's log as far as its store still proves it.

    ``tree`` covers seq ``1..tree.size``; ``pruned_size`` leaves of it are gone (0: none,
    though ``cut`` may already be signed: the deletion is pending).
    """

    tree: MerkleLevels
    chain_head: Callable[[int], bytes]
    pruned_size: int
    cut: int
    stored: int


def read_retained_log(
    backend: ClickHouseBackend,
    tenant_id: str,
    notes: Sequence[tuple[int, str]],
    keyring: Keyring,
    log_origin: str,
    tiles: Sequence[tuple[int, int, bytes]],
    *,
    contents_checked: bool = False,
) -> RetainedLog:
    """Check ``tenant_id``'s retention statements and stored records against each other.

    ``contents_checked``: the caller found every row's leaf and chain hash to be its
    content's in SQL already, so the rows are read without recomputing their leaves.

    Raises RetentionDamage: a statement no trusted key signed (``forged retention``);
    records below the cut partly deleted (``retention incomplete``); the retained chain
    not starting at the signed anchor, a level-1 tile entry under the cut missing, or a
    signed root the kept nodes do not give (``retention mismatch``). Raises ChainError for
    damage of the retained records themselves (a record missing after the cut is
    ``deleted``, an edited retention record ``modified``).
    """
    statements = open_statements(tenant_id, notes, keyring, log_origin)
    governing = max(statements, key=lambda pair: pair[1].pruned_size)[1]
    cut = governing.pruned_size
    if contents_checked:
        linked = _linked_after(backend, tenant_id, cut, governing.chain_hash)
        if linked is not None:  # pruned, and the retained rows chain from the anchor
            leaves, hashes = linked
            tree = pruned_levels(cut, _level_one(tenant_id, cut, tiles), leaves)
            for seq, statement in statements:
                anchor = governing.chain_hash if statement is governing else None
                _check_statement(tenant_id, seq, statement, tree, anchor)
            return RetainedLog(tree, _head(cut, governing.chain_hash, hashes), cut, cut,
                               len(leaves))  # fmt: skip
    # Row by row, to name the damage exactly (or while a deletion is pending).
    rows = _stored_links(backend, tenant_id, recompute=not contents_checked)
    return retained_from_rows(tenant_id, statements, rows, tiles)


def open_statements(
    tenant_id: str, notes: Sequence[tuple[int, str]], keyring: Keyring, log_origin: str
) -> list[tuple[int, RetentionStatement]]:
    """``(seq, statement)`` of each stored note; RetentionDamage for one no trusted key
    signed for this log."""
    return [(seq, open_retention(tenant_id, seq, note, keyring, log_origin)) for seq, note in notes]


def retained_from_rows(
    tenant_id: str,
    statements: Sequence[tuple[int, RetentionStatement]],
    rows: Sequence[StoredLink],
    tiles: Sequence[tuple[int, int, bytes]],
) -> RetainedLog:
    """:func:`read_retained_log` over ``rows``, the log's stored links in seq order (the
    tenants' from ``events``, a rejection log's from ``rejected``)."""
    seq_of, governing = max(statements, key=lambda pair: pair[1].pruned_size)
    cut = governing.pruned_size
    below = [row for row in rows if row.link.seq <= cut]
    if below and len({row.link.seq for row in below}) < cut:
        raise RetentionDamage(
            tenant_id, below[0].link.seq, RETENTION_INCOMPLETE,
            f"the retention statement of seq {seq_of} deletes records 1..{cut}, but "
            f"{len(below)} of them are still stored: run `authtrail retain --tenant "
            f"{tenant_id}` again to finish, or find who put them back",
        )  # fmt: skip
    if below:  # the deletion is pending: everything is still there, verified from genesis
        verify_chain(tenant_id, rows)
        links = [row.link for row in rows]
        tree = MerkleLevels.from_leaf_hashes([link.leaf_hash for link in links])
        for seq, statement in statements:
            _check_statement(tenant_id, seq, statement, tree, links[statement.pruned_size - 1].hash)
        return RetainedLog(tree, lambda size: links[size - 1].hash, 0, cut, len(rows))
    if rows and rows[0].link.seq == cut + 1 and rows[0].link.prev_hash != governing.chain_hash:
        raise RetentionDamage(
            tenant_id, cut + 1, RETENTION_MISMATCH,
            f"the retention statement of seq {seq_of} anchors the chain at "
            f"{governing.chain_hash.hex()}, record {cut + 1} links to "
            f"{rows[0].link.prev_hash.hex()}",
        )  # fmt: skip
    verify_chain(tenant_id, rows, start=ChainHead(tenant_id, cut, governing.chain_hash))
    links = [row.link for row in rows]
    tree = pruned_levels(cut, _level_one(tenant_id, cut, tiles), [link.leaf_hash for link in links])
    for seq, statement in statements:
        anchor = governing.chain_hash if statement is governing else None
        _check_statement(tenant_id, seq, statement, tree, anchor)
    hashes = [link.hash for link in links]
    return RetainedLog(tree, _head(cut, governing.chain_hash, hashes), cut, cut, len(rows))


def _head(cut: int, anchor: bytes, hashes: list[bytes]) -> Callable[[int], bytes]:
    def head(size: int) -> bytes:
        return anchor if size == cut else hashes[size - cut - 1]

    return head


def _linked_after(
    backend: ClickHouseBackend, tenant_id: str, cut: int, anchor: bytes
) -> tuple[list[bytes], list[bytes]] | None:
    """The leaf and chain hashes of seq ``cut + 1 ..`` when no record of ``1..cut`` is
    stored and the others run on from ``cut + 1`` linking back to ``anchor``, checked in
    SQL; None otherwise (the caller then reads row by row to name what differs)."""
    sql = f"""SELECT below, linked, arrayMap(row -> row.4, rows), arrayMap(row -> row.3, rows)
        FROM (SELECT below, rows,
                arrayAll((row, index) -> row.1 = index + {{cut:UInt64}}, rows, arrayEnumerate(rows))
                AND arrayAll((row, previous) -> row.2 = previous, rows,
                    arrayPushFront(arrayPopBack(arrayMap(row -> row.3, rows)),
                                   {{anchor:FixedString(32)}})) AS linked
              FROM (SELECT countIf(seq <= {{cut:UInt64}}) AS below,
                      arraySort(row -> row.1, groupArrayIf((seq, prev_hash, hash, leaf_hash),
                                                           seq > {{cut:UInt64}})) AS rows
                    FROM {EVENTS_TABLE} WHERE tenant_id = {{tenant:String}}))"""
    table = backend.query_arrow(sql, {"tenant": tenant_id, "cut": cut, "anchor": anchor})
    below, linked, leaves, hashes = (table.column(i)[0].as_py() for i in range(4))
    if below or not linked:
        return None
    return leaves, hashes


def _check_statement(
    tenant_id: str, seq: int, statement: RetentionStatement, tree: MerkleLevels,
    chain_hash: bytes | None,
) -> None:  # fmt: skip
    """The statement's root (and chain hash, when known) against the log's."""
    size = statement.pruned_size
    if chain_hash is not None and chain_hash != statement.chain_hash:
        raise RetentionDamage(
            tenant_id, seq, RETENTION_MISMATCH,
            f"the statement signs chain hash {statement.chain_hash.hex()} for record {size}, "
            f"the record's is {chain_hash.hex()}",
        )  # fmt: skip
    root = tree.root(size)
    if root != statement.root:
        raise RetentionDamage(
            tenant_id, seq, RETENTION_MISMATCH,
            f"the statement signs root {statement.root.hex()} for size {size}, the stored "
            f"records and tile entries give {root.hex()}",
        )  # fmt: skip


def _level_one(tenant_id: str, cut: int, tiles: Sequence[tuple[int, int, bytes]]) -> list[bytes]:
    """The level-1 tile entries covering the pruned leaves 1..cut, in order."""
    stored: dict[int, set[bytes]] = {}
    for level, index, hashed in tiles:
        if level == 1 and index < cut >> TILE_HEIGHT:
            stored.setdefault(index, set()).add(hashed)
    entries = []
    for index in range(cut >> TILE_HEIGHT):
        found = stored.get(index, set())
        if len(found) != 1:
            what = "is not stored" if not found else "is stored with different hashes"
            raise RetentionDamage(
                tenant_id, (index << TILE_HEIGHT) + 1, RETENTION_MISMATCH,
                f"tile entry {index} of level 1 (pruned leaves {(index << TILE_HEIGHT) + 1}.."
                f"{(index + 1) << TILE_HEIGHT}) {what}: the pruned range can no longer be proven",
            )  # fmt: skip
        entries.append(next(iter(found)))
    return entries


def _stored_links(
    backend: ClickHouseBackend, tenant_id: str, *, recompute: bool
) -> list[StoredLink]:
    content = leaf_hash_sql() if recompute else "leaf_hash"
    sql = f"""SELECT seq, prev_hash, leaf_hash, hash, {content} AS content_leaf_hash
              FROM {EVENTS_TABLE} WHERE tenant_id = {{tenant:String}} ORDER BY seq"""
    table = backend.query_arrow(sql, {"tenant": tenant_id})
    columns = [table.column(i).to_pylist() for i in range(5)]
    return [
        StoredLink(ChainLink(seq, prev, leaf, hashed), content)
        for seq, prev, leaf, hashed, content in zip(*columns, strict=True)
    ]
