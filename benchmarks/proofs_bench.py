"""``authtrail prove`` at scale: one event's inclusion proof from stored tiles vs from the leaves.

One tenant of ``rows`` records, one signed checkpoint over all of them. The store is
generated inside ClickHouse (``INSERT … SELECT … FROM numbers(rows)``) because the real
sequencer would take most of an hour at 10 M records: each row's leaf hash is its
canonical leaf hashed by :func:`authtrail.sinks.tables.leaf_hash_sql` (the expression ``verify``
trusts), its chain hash :func:`authtrail.sinks.tables.chain_hash_sql` over a stored ``prev_hash``
that is *not* the previous row's hash. So every bundle checks in full (leaf, Merkle
proof, signature, chain link at the checkpoint's head) while ``authtrail verify`` would
call the chain broken: this measures proofs, nothing else. The checkpoint's root is
computed from the leaves by :class:`authtrail.sinks.proofs.LevelsInSql`, independently of the
tiles, and the tiles are built by the sink's own :class:`authtrail.sinks.tile_builder.TileBuilder`.

Measured per event (median over the seqs in :data:`SEQS` and :data:`ROUNDS`, each
bundle checked with ``verify_inclusion_bundle``, else the run is void), in one process
on one read-only store, as ``authtrail prove`` opens it: ``prove_inclusion`` with the
stored tiles (``StoredTiles``), with the tiles and the check against the stored root
(the command's default), and recomputed from the leaves (``LevelsInSql``); and the node
fetch alone (``nodes``), the only step the two sources differ in. Then the walls, in
the same process on the same store: the CPU time of the default proof (every thread of
the process), an empty ``SELECT 1`` through the backend (with the
read-only guard) and straight on a chdb session (without), and the event-row query alone
without the guard. Then the whole ``authtrail prove`` command once, as a user runs it.

Beside the store, in the same run: the tenant exported as a static tlog-tiles directory
(``export_tiles`` on the read-only store, timed: wall and CPU), and one event's proof from
that directory alone (:func:`authtrail.tile_proofs.prove_from_tiles`, ``prove --tiles``)
(and the export again into it, which continues from its checkpoint):
median, max and CPU over the same seqs and rounds, every bundle verified; and the whole
``authtrail prove --tiles`` command once.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from authtrail.keys import load_keyring, load_signer, write_key_pair
from authtrail.settings import Settings
from authtrail.sinks.backend import EmbeddedBackend
from authtrail.sinks.clickhouse_sql import format_parameter
from authtrail.sinks.proofs import LevelsInSql, TreeNodes, prove_inclusion, record_sql
from authtrail.sinks.rows import CHECKPOINTS_SCHEMA, checkpoint_row, to_arrow
from authtrail.sinks.tables import (
    EVENTS_TABLE,
    chain_hash_sql,
    create_statements,
    event_columns,
    leaf_hash_sql,
)
from authtrail.sinks.tile_builder import TileBuilder
from authtrail.sinks.tile_export import export_tiles
from authtrail.sinks.tile_store import StoredTiles
from authtrail.stream.core.bundle import verify_inclusion_bundle
from authtrail.stream.core.checkpoint import (
    GENESIS_PREV_DIGEST,
    Checkpoint,
    checkpoint_origin,
    sign,
)
from authtrail.stream.core.tree_proofs import (
    inclusion_ranges,
    nodes_of_ranges,
    proof_from_nodes,
    range_nodes,
)
from authtrail.tile_proofs import prove_from_tiles
from benchmarks.procs import REPOSITORY_ROOT, child_environment

TENANT = "bench"
SEQS = (1, 2, 4_097)  # and, added per size: the middle, size - 1, size
ROUNDS = 3  # timings per seq and node source; the median is reported
_INSERT_CHUNK = 2_000_000


def _insert_sql(first: int, count: int) -> str:
    values = {
        "event_id": "concat('ev-', toString(seq))",
        "tenant_id": f"'{TENANT}'",
        "event_type": "'LOGIN'",
        "outcome": "if(seq % 7 = 0, 'FAILURE', 'SUCCESS')",
        "occurred_at": "fromUnixTimestamp64Micro(toInt64(1767225600000000 + seq), 'UTC')",
        "user_name": "concat('user', toString(seq % 1000))",
        "client_ip": "concat('203.0.113.', toString(seq % 250))",
    }
    for column in event_columns():  # the rest: null, or an empty map
        if column.name not in values:
            if not (column.nullable or column.kind == "m"):
                raise RuntimeError(f"the bench store needs a value for {column.name}")
            empty = "map()" if column.kind == "m" else "NULL"
            quoted = column.clickhouse_type.replace("'", "\\'")
            values[column.name] = f"CAST({empty}, '{quoted}')"
    columns = ", ".join(f"{expression} AS `{name}`" for name, expression in values.items())
    rows = (
        f"SELECT number + {first + 1} AS seq, {columns}, "
        "if(seq = 1, toFixedString(unhex(repeat('00', 32)), 32), "
        "toFixedString(SHA256(toString(seq - 1)), 32)) AS prev_hash "
        f"FROM numbers({count})"
    )
    hashed = f"SELECT *, toFixedString({leaf_hash_sql()}, 32) AS leaf_hash FROM ({rows})"
    names = [*values, "seq", "prev_hash", "leaf_hash"]
    return (
        f"INSERT INTO {EVENTS_TABLE} ({', '.join(f'`{n}`' for n in names)}, hash, epoch, "
        "kafka_cluster, kafka_partition, kafka_offset) "
        f"SELECT {', '.join(f'`{n}`' for n in names)}, toFixedString({chain_hash_sql()}, 32), "
        f"0, 'bench', 0, seq FROM ({hashed})"
    )


def generate_store(data_dir: Path, rows: int) -> dict[str, Any]:
    """One tenant of ``rows`` records, its tiles, and one signed checkpoint over them."""
    settings = Settings(data_dir=data_dir)
    write_key_pair(settings.keys_dir, "authtrail")
    signer = load_signer(settings.signing_key_path)
    timings: dict[str, Any] = {"rows": rows}
    with EmbeddedBackend(data_dir / "clickhouse") as backend:
        for statement in create_statements():
            backend.command(statement)
        started = time.perf_counter()
        for first in range(0, rows, _INSERT_CHUNK):
            backend.command(_insert_sql(first, min(_INSERT_CHUNK, rows - first)))
        backend.command(f"OPTIMIZE TABLE {EVENTS_TABLE} FINAL")
        timings["insert_seconds"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        nodes = range_nodes(0, rows)
        root = proof_from_nodes([(0, rows)], LevelsInSql(backend).nodes(TENANT, rows, nodes))[0]
        timings["root_from_leaves_seconds"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        timings["tile_entries"] = TileBuilder(backend).catch_up()
        timings["tile_build_seconds"] = round(time.perf_counter() - started, 2)
        tiles_root = proof_from_nodes([(0, rows)], StoredTiles(backend).nodes(TENANT, rows, nodes))
        if tiles_root[0] != root:
            raise RuntimeError("the stored tiles do not give the root of the leaves")
        head = (
            backend.query_arrow(
                f"SELECT hash FROM {EVENTS_TABLE} WHERE tenant_id = '{TENANT}' AND seq = {rows}"
            )
            .column(0)[0]
            .as_py()
        )
        checkpoint = Checkpoint(
            origin=checkpoint_origin(settings.log_origin, TENANT), size=rows, root=root,
            batch_first_seq=1, batch_last_seq=rows, batch_root=root, chain_hash=head,
            prev_digest=GENESIS_PREV_DIGEST, time_micros=1_767_225_600_000_000 + rows,
        )  # fmt: skip
        record = {
            "tenant_id": TENANT, "size": rows, "batch_first_seq": 1, "batch_last_seq": rows,
            "root": root, "batch_root": root, "chain_head": head,
            "prev_digest": GENESIS_PREV_DIGEST, "time_micros": checkpoint.time_micros,
            "note": sign(checkpoint, signer).decode("utf-8"), "epoch": 0,
        }  # fmt: skip
        row = checkpoint_row(record, "bench", 0, 0)
        backend.insert_arrow("checkpoints", to_arrow([row], CHECKPOINTS_SCHEMA))
    return timings


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def measure(data_dir: Path, rows: int) -> dict[str, Any]:
    """Time one event's proof by each node source, in process, on one open store."""
    settings = Settings(data_dir=data_dir)
    keyring = load_keyring([settings.keys_dir / "authtrail.pub"])
    seqs = sorted({*SEQS, rows // 2, rows - 1, rows} & set(range(1, rows + 1)))
    sources: dict[str, list[float]] = {
        name: []
        for name in (
            "tiles",
            "tiles_checked",
            "tiles_checked_cpu",
            "leaves",
            "nodes_tiles",
            "nodes_leaves",
            "tiles_dir",
            "tiles_dir_cpu",
        )
    }
    with EmbeddedBackend(data_dir / "clickhouse", read_only=True) as backend:
        tiles, leaves = StoredTiles(backend), LevelsInSql(backend)
        choices: dict[str, TreeNodes | None] = {
            "tiles": tiles, "tiles_checked": None, "leaves": leaves
        }  # fmt: skip
        for _ in range(ROUNDS):
            for seq in seqs:
                for name, nodes in choices.items():
                    cpu, started = time.process_time(), time.perf_counter()
                    bundle = prove_inclusion(backend, settings.log_origin, TENANT, seq, nodes=nodes)
                    sources[name].append(time.perf_counter() - started)
                    if nodes is None:  # all threads of this process, chdb's included
                        sources["tiles_checked_cpu"].append(time.process_time() - cpu)
                    verify_inclusion_bundle(bundle, keyring)  # a bundle that fails voids the run
                cpu, started = time.process_time(), time.perf_counter()
                bundle = prove_from_tiles(_tiles_dir(data_dir), seq)
                sources["tiles_dir"].append(time.perf_counter() - started)
                sources["tiles_dir_cpu"].append(time.process_time() - cpu)
                verify_inclusion_bundle(bundle, keyring)
                wanted = nodes_of_ranges(inclusion_ranges(seq - 1, rows))
                for name, source in (("nodes_tiles", tiles), ("nodes_leaves", leaves)):
                    started = time.perf_counter()
                    source.nodes(TENANT, rows, wanted)
                    sources[name].append(time.perf_counter() - started)
    medians = {f"{name}_ms": _median_ms(values) for name, values in sources.items()}
    medians.update(_walls(data_dir, seqs))
    return {
        "seqs": seqs,
        "rounds": ROUNDS,
        **medians,
        "tiles_max_ms": round(max(sources["tiles"]) * 1000, 2),
        "tiles_checked_max_ms": round(max(sources["tiles_checked"]) * 1000, 2),
        "tiles_dir_max_ms": round(max(sources["tiles_dir"]) * 1000, 2),
        "leaves_over_tiles": round(medians["leaves_ms"] / medians["tiles_ms"], 1),
        "nodes_leaves_over_tiles": round(
            medians["nodes_leaves_ms"] / max(medians["nodes_tiles_ms"], 0.01), 1
        ),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _walls(data_dir: Path, seqs: list[int]) -> dict[str, float]:
    """What any proof pays on this store whatever the prover does: an empty query with
    and without the read-only guard, and the event-row read alone (no guard), ms."""
    import chdb.session  # the benchmark's own unguarded session, beside the backend's

    path = (data_dir / "clickhouse").resolve()
    names = ("select_1", "select_1_unguarded", "row_unguarded")
    timings: dict[str, list[float]] = {name: [] for name in names}
    with EmbeddedBackend(path, read_only=True) as backend:
        session: Any = chdb.session.Session(f"file:{path}?readonly=2")  # type: ignore[no-untyped-call]
        try:
            for _ in range(ROUNDS):
                for seq in seqs:
                    params = {"tenant": format_parameter(TENANT), "seq": format_parameter(seq)}
                    runs: tuple[Callable[[], object], ...] = (
                        lambda: backend.query_arrow("SELECT 1"),
                        lambda: session.query("SELECT 1", "Arrow"),
                        partial(session.query, record_sql(), "Arrow", params=params),
                    )
                    for name, run in zip(names, runs, strict=True):
                        started = time.perf_counter()
                        run()
                        timings[name].append(time.perf_counter() - started)
        finally:
            session.close()
    return {f"{name}_ms": _median_ms(values) for name, values in timings.items()}


def _tiles_dir(data_dir: Path) -> Path:
    return data_dir / "tiles"


def export_directory(data_dir: Path) -> dict[str, Any]:
    """Export the tenant as a tlog-tiles directory from the read-only store, then again
    into it (nothing new: it continues from the directory's checkpoint); both timed."""
    timings: dict[str, Any] = {}
    with EmbeddedBackend(data_dir / "clickhouse", read_only=True) as backend:
        for name in ("export", "export_again"):
            cpu, started = time.process_time(), time.perf_counter()
            summary = export_tiles(backend, TENANT, _tiles_dir(data_dir))
            timings[f"{name}_seconds"] = round(time.perf_counter() - started, 2)
            timings[f"{name}_cpu_seconds"] = round(time.process_time() - cpu, 2)
            timings.setdefault("export_files", summary.written)
    return timings


def run_command(data_dir: Path, seq: int, *, tiles: bool = False) -> dict[str, Any]:
    """``authtrail prove --tenant bench --seq N`` (or ``prove --tiles DIR --seq N``)
    once, as a user runs it (wall time)."""
    source = ["--tiles", str(_tiles_dir(data_dir))] if tiles else ["--tenant", TENANT]
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data_dir), "prove",
         *source, "--seq", str(seq), "--out", str(data_dir / "bundle.json")],
        cwd=REPOSITORY_ROOT, env=child_environment(), capture_output=True, timeout=600,
        check=False,
    )  # fmt: skip
    return {
        "exit_code": completed.returncode,
        "seconds": round(time.perf_counter() - started, 3),
        "stderr_tail": completed.stderr.decode(errors="replace")[-300:],
    }


def proof_times(rows: int, directory: str) -> dict[str, Any]:
    """Generate a one-tenant store of ``rows`` records and time proofs on it."""
    data_dir = Path(directory) / f"proofs-{rows}"
    shutil.rmtree(data_dir, ignore_errors=True)  # a run before this one's store and key
    generated = generate_store(data_dir, rows)
    exported = export_directory(data_dir)
    return {
        **generated, **exported, **measure(data_dir, rows),
        "command": run_command(data_dir, rows // 2),
        "command_tiles_dir": run_command(data_dir, rows // 2, tiles=True),
    }  # fmt: skip
