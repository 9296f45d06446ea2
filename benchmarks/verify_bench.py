"""``authtrail verify`` over a generated store: rows verified per second.

The store is built by the real integrity core (:class:`authtrail.stream.core.sequencer.Sequencer`,
:func:`authtrail.stream.core.canonical.canonical_leaf`, signed checkpoints every ``batch_size``
events) and written in the exact row shapes the sink writes (:mod:`authtrail.sinks.rows`), so
``verify`` does all its work: SQL recomputation of every leaf and chain hash, Merkle roots and
signature checks. Then the real command runs, as a user would:
``python -m authtrail.cli --data-dir D verify --json``. Its wall time over the rows is
the result; it must exit 0 (an intact store), else the measurement is void.

Issue 12's target is relative: verify at ≥ 0.8 x this machine's SHA-256 limit for rows of
its shape (:mod:`benchmarks.verify_limit`), measured in the same run, just after verify,
from the store's own average leaf and tenant lengths. Both ratios are reported: wall
(rows/s over the limit) and CPU (rows per CPU second on every core over the limit),
the steadier on a shared machine; and the ceiling: the CPU ratio a verify that only read
its columns from the store (measured next) and hashed at the limit would reach.

Runs in a fresh interpreter (:mod:`benchmarks.isolated`): chdb holds one data directory
per process.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from authtrail.keys import load_signer, write_key_pair
from authtrail.settings import Settings
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.rows import CHECKPOINTS_SCHEMA, EVENTS_SCHEMA, chained_row, checkpoint_row
from authtrail.sinks.tables import (
    CHECKPOINTS_TABLE,
    EVENTS_TABLE,
    canonical_leaf_sql,
    create_statements,
)
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.sequencer import Sequencer, SignedCheckpoint
from benchmarks import profiling
from benchmarks.isolated import run_isolated
from benchmarks.procs import REPOSITORY_ROOT, child_environment, system_busy_seconds
from benchmarks.verify_limit import ceiling
from benchmarks.workload import EventFactory

CHUNK = 100_000
_CLUSTER = "bench"


def _columns(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    # Column by column: about twice as fast as pa.Table.from_pylist on these rows.
    return pa.table(
        {
            field.name: pa.array([row.get(field.name) for row in rows], field.type)
            for field in schema
        },
        schema=schema,
    )


def _checkpoint_row(signed: SignedCheckpoint, offset: int) -> dict[str, Any]:
    """The ``checkpoints`` row the sink stores for ``signed`` (fields as the worker sends)."""
    checkpoint = signed.checkpoint
    record = {
        "tenant_id": signed.tenant_id,
        "size": checkpoint.size,
        "batch_first_seq": checkpoint.batch_first_seq,
        "batch_last_seq": checkpoint.batch_last_seq,
        "root": checkpoint.root,
        "batch_root": checkpoint.batch_root,
        "chain_head": checkpoint.chain_hash,
        "prev_digest": checkpoint.prev_digest,
        "time_micros": checkpoint.time_micros,
        "note": signed.note.decode("utf-8"),
    }
    return checkpoint_row(record, _CLUSTER, 0, offset)


def generate_store(data_dir: Path, rows: int, tenants: int, batch_size: int) -> dict[str, Any]:
    """Write ``rows`` chained events of ``tenants`` tenants and their checkpoints."""
    settings = Settings(data_dir=data_dir)
    write_key_pair(settings.keys_dir, "authtrail")
    signer = load_signer(settings.signing_key_path)
    sequencer = Sequencer(
        signer, settings.log_origin, batch_size=batch_size, batch_interval=1e9, dedup_window=0
    )
    factory = EventFactory(tenants, seed=23)
    started = time.perf_counter()
    checkpoints = 0
    with EmbeddedBackend(data_dir / "clickhouse") as backend:
        for statement in create_statements():
            backend.command(statement)
        for first in range(0, rows, CHUNK):
            event_rows, checkpoint_rows = [], []
            for offset in range(first, min(rows, first + CHUNK)):
                event = factory.make(occurred_at=1_767_225_600_000_000 + offset)
                offer = sequencer.offer(
                    event["tenant_id"], event["event_id"], canonical_leaf(event), offset
                )
                link = offer.link
                assert link is not None
                record = {
                    "event": event,
                    "seq": link.seq,
                    "prev_hash": link.prev_hash,
                    "hash": link.hash,
                    "leaf_hash": link.leaf_hash,
                }
                event_rows.append(chained_row(record, _CLUSTER, 0, offset))
                for tenant in sequencer.full_batches():
                    checkpoint_rows.append(_checkpoint_row(sequencer.close_batch(tenant), offset))
            if first + CHUNK >= rows:  # the tail: sign every open batch, as a clean stop does
                for tenant in sequencer.open_batches():
                    checkpoint_rows.append(_checkpoint_row(sequencer.close_batch(tenant), rows))
            backend.insert_arrow(EVENTS_TABLE, _columns(event_rows, EVENTS_SCHEMA))
            if checkpoint_rows:
                backend.insert_arrow(
                    CHECKPOINTS_TABLE, _columns(checkpoint_rows, CHECKPOINTS_SCHEMA)
                )
            checkpoints += len(checkpoint_rows)
        backend.command(f"OPTIMIZE TABLE {EVENTS_TABLE} FINAL")
        shape = backend.query_arrow(
            f"SELECT avg(length({canonical_leaf_sql()})), avg(length(tenant_id)) "
            f"FROM {EVENTS_TABLE}"
        )
    return {
        "rows": rows,
        "tenants": tenants,
        "batch_size": batch_size,
        "checkpoints": checkpoints,
        "generate_seconds": round(time.perf_counter() - started, 2),
        "leaf_bytes": round(shape.column(0)[0].as_py(), 1),
        "tenant_bytes": round(shape.column(1)[0].as_py(), 1),
    }


def run_verify(data_dir: Path) -> dict[str, Any]:
    """Time ``authtrail verify --json`` on ``data_dir`` in a child process (wall and CPU)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = system_busy_seconds()
    started = time.perf_counter()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "authtrail.cli.main",
            "--data-dir",
            str(data_dir),
            "verify",
            "--json",
        ],
        cwd=REPOSITORY_ROOT,
        env=child_environment(),
        capture_output=True,
        timeout=3600,
        check=False,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # Cores something else used meanwhile: wall is low by about that share of the machine.
    others = (system_busy_seconds() - busy - cpu) / seconds if seconds else 0.0
    try:
        tenants = json.loads(completed.stdout)["tenants"]
    except (ValueError, KeyError, TypeError):
        tenants = []
    return {
        "exit_code": completed.returncode,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "peak_rss_bytes": after.ru_maxrss * 1024,
        "other_cores_busy": round(max(others, 0.0), 2),
        "tenants_reported": len(tenants),
        "tenants_damaged": sum(1 for tenant in tenants if tenant.get("damage")),
        "stderr_tail": completed.stderr.decode(errors="replace")[-500:],
    }


def profile_verify(data_dir: Path) -> dict[str, Any]:
    """A second, untimed verify under py-spy: where its time goes."""
    executable = profiling.py_spy()
    if executable is None:
        return {"error": "py-spy is not installed"}
    out = data_dir.parent / f"profile-{data_dir.name}.txt"
    subprocess.run(
        [
            executable,
            "record",
            "--rate",
            "100",
            "--format",
            "raw",
            "--output",
            str(out),
            "--",
            sys.executable,
            "-m",
            "authtrail.cli.main",
            "--data-dir",
            str(data_dir),
            "verify",
            "--json",
        ],
        cwd=REPOSITORY_ROOT,
        env=child_environment(),
        capture_output=True,
        timeout=3600,
        check=False,
    )
    return profiling.summarise(out)


def verify_rows(
    rows: int, tenants: int, batch_size: int, directory: str, profile: bool = False
) -> dict[str, Any]:
    """Generate a store of ``rows`` events and measure ``authtrail verify`` on it."""
    data_dir = Path(directory) / f"verify-{rows}"
    generated = generate_store(data_dir, rows, tenants, batch_size)
    verified = run_verify(data_dir)
    # After verify: its peak RSS (the children's maximum) is then verify's own.
    limit = run_isolated(
        "benchmarks.verify_limit:sha256_limit",
        {"leaf_bytes": generated["leaf_bytes"], "tenant_bytes": generated["tenant_bytes"],
         "rows": min(rows, 1_000_000)},
        data_dir.parent, timeout=600,
    )  # fmt: skip
    floor = run_isolated(
        "benchmarks.verify_limit:read_floor", {"store": str(data_dir / "clickhouse")},
        data_dir.parent, timeout=600,
    )  # fmt: skip
    seconds = verified["seconds"]
    rate = round(rows / seconds, 1) if seconds and verified["exit_code"] == 0 else None
    result = {**generated, "verify": verified, "rows_per_s": rate, "sha256_limit": limit,
              "read_floor": floor}  # fmt: skip
    if rate is not None:
        on_cores = limit["cores"] * rows / verified["cpu_seconds"]
        result["vs_limit"] = {
            "wall": round(rate / limit["limit_rows_per_s"], 3),
            "cpu": round(on_cores / limit["limit_rows_per_s"], 3),
            "ceiling": ceiling(limit, floor["cpu_seconds"], rows),
        }
    if profile:
        result["profile"] = profile_verify(data_dir)
    return result
