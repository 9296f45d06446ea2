"""``authtrail verify`` against a ClickHouse store: SQL finds damage, the pure core names it.

Per-row work runs inside ClickHouse: rebuilding every canonical leaf and chain hash and
checking each ``prev_hash`` link and the gapless ``seq`` with window functions. Only the
tenants it flags are read back row by row, to classify the first damage exactly
(:func:`stream.chain.verify_chain`). For every tenant the leaf hashes (32 bytes a row)
and signed notes are read in Arrow and checked against the checkpoints in Python
(:func:`stream.audit.verify_checkpoints`), because Merkle roots and signatures are not SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from authtrail.errors import ChainError
from sinks.backend import ClickHouseBackend
from sinks.tables import CHECKPOINTS_TABLE, EVENTS_TABLE, chain_hash_sql, leaf_hash_sql
from stream.audit import CheckpointDamage, verify_checkpoints
from stream.chain import ChainLink, StoredLink, verify_chain
from stream.note import Keyring

_GENESIS_SQL = "toFixedString(unhex(repeat('00', 32)), 32)"


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


def _where(tenant_id: str | None) -> str:
    return "WHERE tenant_id = {tenant:String}" if tenant_id is not None else ""


def _flagged_tenants(
    backend: ClickHouseBackend, tenant_id: str | None
) -> dict[str, tuple[int, int]]:
    """tenant -> (records, rows failing a per-row check), computed in ClickHouse."""
    sql = f"""
        SELECT tenant_id, count() AS records, countIf(NOT ok) AS bad FROM (
            SELECT tenant_id,
                leaf_hash = {leaf_hash_sql()}
                AND hash = {chain_hash_sql()}
                AND prev_hash = lagInFrame(hash, 1, {_GENESIS_SQL}) OVER w
                AND seq = row_number() OVER w AS ok
            FROM {EVENTS_TABLE} {_where(tenant_id)}
            WINDOW w AS (PARTITION BY tenant_id ORDER BY seq
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
        ) GROUP BY tenant_id"""
    table = backend.query_arrow(sql, _parameters(tenant_id))
    names, records, bad = (table.column(i).to_pylist() for i in range(3))
    return {
        name: (count, failures) for name, count, failures in zip(names, records, bad, strict=True)
    }


def _parameters(tenant_id: str | None) -> dict[str, Any] | None:
    return {"tenant": tenant_id} if tenant_id is not None else None


def _classify(backend: ClickHouseBackend, tenant_id: str) -> ChainError | None:
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
        return exc
    return None


def _checkpoint_tenants(backend: ClickHouseBackend, tenant_id: str | None) -> set[str]:
    sql = f"SELECT DISTINCT tenant_id FROM {CHECKPOINTS_TABLE} {_where(tenant_id)}"
    return set(backend.query_arrow(sql, _parameters(tenant_id)).column(0).to_pylist())


def _check_tenant(
    backend: ClickHouseBackend, tenant_id: str, keyring: Keyring, log_origin: str
) -> TenantResult:
    where = "WHERE tenant_id = {tenant:String}"
    # Checkpoints first: the sink stores records before the checkpoints covering them,
    # so records read afterwards cover every checkpoint read, even while the sink runs.
    notes = (
        backend.query_arrow(
            f"SELECT note FROM {CHECKPOINTS_TABLE} {where} ORDER BY size", {"tenant": tenant_id}
        )
        .column(0)
        .to_pylist()
    )
    records = backend.query_arrow(
        f"SELECT leaf_hash, hash FROM {EVENTS_TABLE} {where} ORDER BY seq", {"tenant": tenant_id}
    )
    leaf_hashes = records.column(0).to_pylist()
    try:
        summary = verify_checkpoints(
            tenant_id, leaf_hashes, records.column(1).to_pylist(),
            [note.encode() if isinstance(note, str) else note for note in notes],
            keyring, log_origin,
        )  # fmt: skip
    except CheckpointDamage as exc:
        return TenantResult(
            tenant_id, len(leaf_hashes), len(notes), 0, exc.damage, exc.seq, exc.detail
        )
    return TenantResult(tenant_id, summary.records, summary.checkpoints, summary.signed_size)


def verify_store(
    backend: ClickHouseBackend,
    keyring: Keyring,
    log_origin: str,
    *,
    tenant_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[TenantResult]:
    """Verify every tenant (or one) in the store; yield one result per tenant, sorted."""
    flagged = _flagged_tenants(backend, tenant_id)
    tenants = sorted(set(flagged) | _checkpoint_tenants(backend, tenant_id))
    for done, name in enumerate(tenants, 1):
        records, bad = flagged.get(name, (0, 0))
        error = _classify(backend, name) if bad else None
        if error is not None:
            yield TenantResult(name, records, 0, 0, error.damage, error.seq, error.detail)
        else:
            yield _check_tenant(backend, name, keyring, log_origin)
        if progress is not None:
            progress(done, len(tenants))
