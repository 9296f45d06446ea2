"""Read the rejection logs (stream/core/rejection.py) back from the ``rejected`` table for verify.

Rejections are few next to events (a flood of bad input is the exception), so their
canonical leaves are rebuilt here in Python from the stored columns, and each log is
checked row by row (:func:`authtrail.stream.core.chain.verify_chain`). Every text and byte column is
read as hex: the table may hold any bytes an attacker wrote, and Arrow strings must be UTF-8.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from authtrail.errors import ChainError, InvalidArgumentError
from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.tables import REJECTED_TABLE
from authtrail.stream.core.chain import ChainLink, StoredLink, verify_chain
from authtrail.stream.core.merkle import leaf_hash
from authtrail.stream.core.rejection import FIELD_TYPES, rejection_leaf
from authtrail.stream.core.retention import RETENTION_REJECTION_KIND

_TEXT = tuple(name for name, kind in FIELD_TYPES.items() if kind in (b"s", b"b"))
_TIMES = ("source_timestamp", "rejected_at")
_INTEGERS = ("source_partition", "source_offset", "source_index")


@dataclass(frozen=True)
class RejectionLog:
    """One rejection log as stored: its rows in seq order, when each was stored (seq ->
    µs) and the retention statements among them (``(seq, note)``, unverified). Without
    statements the rows were checked as a chain from genesis; ``error`` is then the first
    damage in it. With statements, the rows may start after a cut and are checked
    against it (sinks/verify_retention.py)."""

    rows: list[StoredLink]
    stored_at: dict[int, int]
    notes: list[tuple[int, str]] = field(default_factory=list)
    error: ChainError | None = None

    @property
    def links(self) -> list[ChainLink]:
        return [row.link for row in self.rows]


def _sql(tenant_id: str | None) -> str:
    columns = [f"hex({name}) AS {name}" for name in _TEXT]
    columns += [f"toUnixTimestamp64Micro({name}) AS {name}" for name in _TIMES]
    where = "AND chain_tenant_id = {tenant:String}" if tenant_id is not None else ""
    return f"""SELECT assumeNotNull(chain_tenant_id) AS log, assumeNotNull(seq) AS seq,
                   assumeNotNull(prev_hash) AS prev_hash, assumeNotNull(leaf_hash) AS leaf_hash,
                   assumeNotNull(hash) AS hash, {", ".join(columns)}, {", ".join(_INTEGERS)},
                   toUnixTimestamp64Micro(stored_at) AS stored_at
               FROM {REJECTED_TABLE} WHERE chain_tenant_id IS NOT NULL {where}
               ORDER BY log, seq"""


def _content_leaf_hash(row: dict[str, Any]) -> bytes:
    """The leaf hash of what the row says now; b"" when no rejection can say it."""
    fields: dict[str, Any] = {name: row[name] for name in (*_TIMES, *_INTEGERS)}
    try:
        for name in _TEXT:
            raw = None if row[name] is None else bytes.fromhex(row[name])
            is_text = FIELD_TYPES[name] == b"s"
            fields[name] = raw.decode("utf-8") if raw is not None and is_text else raw
        return leaf_hash(rejection_leaf(fields))
    except (InvalidArgumentError, UnicodeDecodeError):
        return b""


def read_rejection_logs(
    backend: ClickHouseBackend, tenant_id: str | None = None
) -> dict[str, RejectionLog]:
    """Every rejection log in the store (or the one named ``tenant_id``), checked as a chain."""
    parameters = {"tenant": tenant_id} if tenant_id is not None else None
    logs: dict[str, RejectionLog] = {}
    for row in backend.query_arrow(_sql(tenant_id), parameters).to_pylist():
        link = ChainLink(row["seq"], row["prev_hash"], row["leaf_hash"], row["hash"])
        log = logs.setdefault(row["log"], RejectionLog([], {}))
        log.rows.append(StoredLink(link, _content_leaf_hash(row)))
        log.stored_at[row["seq"]] = row["stored_at"]
        if _is_statement(row):
            log.notes.append((row["seq"], bytes.fromhex(row["reason"]).decode("utf-8", "replace")))
    for name, log in logs.items():
        if not log.notes:
            try:
                verify_chain(name, log.rows)
            except ChainError as exc:
                logs[name] = RejectionLog(log.rows, log.stored_at, error=exc)
    return logs


def _is_statement(row: dict[str, Any]) -> bool:
    """Whether the row claims to be a retention statement (the worker writes this kind
    only after checking one; verify checks it again)."""
    kind = row["error_kind"]
    return kind is not None and bytes.fromhex(kind) == RETENTION_REJECTION_KIND.encode()
