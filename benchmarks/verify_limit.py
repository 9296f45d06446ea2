"""This machine's SHA-256 limit for rows of ``authtrail verify``'s shape, measured in the run.

``verify`` hashes, per stored row: the RFC 6962 leaf (``0x00`` + canonical leaf, ~11
compression blocks), the chain hash (~2) and about one Merkle node (65 B, 2 blocks): a
tree of ``n`` leaves has ``n - 1`` nodes. The limit is that hashing alone, on every core:

* ``hashlib``: one process per core, each hashing messages of exactly those lengths, one
  call per message (what per-message hashing costs with the least around it), and a
  large buffer (the raw block rate, no per-message cost at all);
* ``chdb``: ClickHouse's ``SHA256`` over the same messages, ``numbers_mt`` on every core.

Each reports CPU seconds (every thread and process) and wall; rows/s on all cores is
taken from CPU (``cores x rows / CPU s``), steady on a shared machine where wall is not.

:func:`read_floor` measures what no ``verify`` can avoid besides hashing: ClickHouse reading
the stored columns a leaf and its chain hash are rebuilt from. Reading plus hashing at the
limit bounds the ratio any verify of this store can reach (:func:`ceiling`).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import resource
import time
from typing import Any

BLOCK = 64
_NODE = 65  # 0x01 + two 32-byte children


def blocks(length: int) -> int:
    """SHA-256 compression blocks for a message of ``length`` bytes (padding included)."""
    return (length + 8) // BLOCK + 1


def row_shape(leaf_bytes: float, tenant_bytes: float) -> dict[str, Any]:
    """The messages one row costs: leaf, chain and one Merkle node, and their blocks."""
    leaf = 1 + round(leaf_bytes)  # 0x00 + canonical leaf
    chain = len(b"authtrail-chain-v1\n") + 4 + round(tenant_bytes) + 8 + 3 * 32
    lengths = {"leaf": leaf, "chain": chain, "node": _NODE}
    return {
        "message_bytes": lengths,
        "blocks_per_row": sum(blocks(length) for length in lengths.values()),
    }


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _hash_rows(arguments: tuple[int, tuple[int, ...]]) -> float:
    """CPU seconds to hash ``rows`` rows of messages of ``lengths`` bytes, one call each."""
    rows, lengths = arguments
    messages = [os.urandom(length) for length in lengths]
    digest = hashlib.sha256
    started = time.process_time()
    for _ in range(rows):
        for message in messages:
            digest(message).digest()
    return time.process_time() - started


def _hash_buffer(size: int) -> float:
    """CPU seconds to hash ``size`` bytes in one message (the raw block rate)."""
    data = os.urandom(size)
    started = time.process_time()
    hashlib.sha256(data).digest()
    return time.process_time() - started


def hashlib_limit(rows: int, lengths: tuple[int, ...], cores: int) -> dict[str, Any]:
    """hashlib on ``cores`` processes: ``rows`` rows of ``lengths`` messages in all."""
    per_process = rows // cores
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        cpu = sum(pool.map(_hash_rows, [(per_process, lengths)] * cores))
        wall = time.perf_counter() - started
        buffer_bytes = 64 << 20
        buffer_cpu = sum(pool.map(_hash_buffer, [buffer_bytes] * cores))
    total_blocks = per_process * cores * sum(blocks(length) for length in lengths)
    per_row_blocks = sum(blocks(length) for length in lengths)
    raw_blocks_per_cpu_s = cores * (buffer_bytes // BLOCK) / buffer_cpu
    return {
        "rows": per_process * cores,
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),  # includes starting the processes
        "rows_per_s": round(cores * per_process * cores / cpu, 1),
        "blocks_per_cpu_s": round(total_blocks / cpu, 1),
        "raw_blocks_per_cpu_s": round(raw_blocks_per_cpu_s, 1),
        "raw_rows_per_s": round(cores * raw_blocks_per_cpu_s / per_row_blocks, 1),
    }


def chdb_limit(rows: int, lengths: tuple[int, ...], cores: int) -> dict[str, Any]:
    """ClickHouse's ``SHA256`` in chdb over ``rows`` rows of ``lengths`` messages, every
    core. Each message is distinct (the row number padded to its length): nothing folds."""
    import chdb

    hashes = " + ".join(
        f"reinterpretAsUInt64(SHA256(leftPad(toString(number), {length}, 'x')))"
        for length in lengths
    )
    sql = f"SELECT groupBitXor({hashes}) FROM numbers_mt({rows}) SETTINGS max_threads = {cores}"
    chdb.query("SELECT 1")  # start the engine outside the measurement
    overhead_sql = (
        f"SELECT groupBitXor(length(leftPad(toString(number), {max(lengths)}, 'x'))) "
        f"FROM numbers_mt({rows}) SETTINGS max_threads = {cores}"
    )
    before = _cpu_self()
    chdb.query(overhead_sql)
    overhead = _cpu_self() - before
    before, started = _cpu_self(), time.perf_counter()
    chdb.query(sql)
    wall = time.perf_counter() - started
    cpu = _cpu_self() - before
    return {
        "rows": rows,
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "rows_per_s": round(cores * rows / cpu, 1),
        # What making the messages costs on its own (for one length): the limit above is
        # conservative by about this much.
        "message_cpu_seconds": round(overhead, 3),
    }


def read_floor(store: str, repeats: int = 3) -> dict[str, Any]:
    """CPU seconds (median of ``repeats``) for ClickHouse, on every core, to read the
    ``events`` columns of the store at ``store`` that a leaf and its chain hash are rebuilt
    from, and discard them (``FORMAT Null``): the part of verify no hashing speed removes."""
    import chdb.session

    from authtrail.sinks.tables import EVENTS_TABLE, event_columns

    names = dict.fromkeys([column.name for column in event_columns()]
                          + ["tenant_id", "seq", "prev_hash", "leaf_hash", "hash"])  # fmt: skip
    sql = f"SELECT {', '.join(f'`{name}`' for name in names)} FROM {EVENTS_TABLE}"
    session = chdb.session.Session(f"file:{store}?readonly=2")
    rows = int(str(session.query(f"SELECT count() FROM {EVENTS_TABLE}", "CSV")).strip())
    runs = []
    for _ in range(repeats):
        before = _cpu_self()
        session.query(sql, "Null")
        runs.append(_cpu_self() - before)
    median = sorted(runs)[len(runs) // 2]
    return {"rows": rows, "columns": len(names), "cpu_seconds": round(median, 3)}


def ceiling(limit: dict[str, Any], read_cpu_seconds: float, rows: int) -> float:
    """The best ratio to the limit (by CPU) a verify of ``rows`` rows could reach if it did
    nothing but read its columns (``read_cpu_seconds``) and hash at the limit: hashing's
    share of those two."""
    hashing = float(limit["cores"] * rows / limit["limit_rows_per_s"])
    return round(hashing / (hashing + read_cpu_seconds), 3)


def sha256_limit(leaf_bytes: float, tenant_bytes: float, rows: int) -> dict[str, Any]:
    """Both limits for rows of this shape; ``limit_rows_per_s`` is the faster of the two
    per-message rates (what verify's hashing could reach on every core)."""
    cores = os.cpu_count() or 1
    shape = row_shape(leaf_bytes, tenant_bytes)
    lengths = tuple(shape["message_bytes"].values())
    python = hashlib_limit(rows, lengths, cores)
    engine = chdb_limit(rows, lengths, cores)
    limit = max(python["rows_per_s"], engine["rows_per_s"])
    return {
        **shape,
        "cores": cores,
        "hashlib": python,
        "chdb": engine,
        "limit_rows_per_s": limit,
    }
