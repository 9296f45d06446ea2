"""The wall under one event's proof on chdb: what a point read of one ``events`` row costs.

``python -m benchmarks.point_read [--rows N]``. One tenant of ``rows`` records in the real
``events`` DDL (:func:`authtrail.sinks.tables.create_statements`, 40 columns), generated in
SQL, merged into one part; then, alternating per round on random seqs, the median wall of:
``SELECT 1``; the row's sort key alone; five columns; every column (what ``prove`` reads);
and every column from copies of the table that differ only in a storage setting (smaller
granules, smaller compression blocks, one-file "compact" parts). docs/PERFORMANCE.md
(§ Proofs) has the results and what they mean for the 10 ms proof target.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

import chdb.session

from authtrail.sinks.tables import EVENTS_TABLE, create_statements

# Storage settings tried on copies of the table (appended to its SETTINGS clause).
VARIANTS = {
    "every column": "",
    "every column, granules of 1024": ", index_granularity = 1024",
    "every column, 4-16 KiB blocks": (
        ", min_compress_block_size = 4096, max_compress_block_size = 16384"
    ),
    "every column, compact part": ", min_bytes_for_wide_part = 10000000000",
}
ROUNDS = 30


def build(session: chdb.session.Session, table: str, settings: str, rows: int) -> None:
    ddl = create_statements()[0].replace(
        f"CREATE TABLE IF NOT EXISTS {EVENTS_TABLE}", f"CREATE TABLE {table}"
    )
    session.query(
        ddl.replace("deduplication_window = 1000", f"deduplication_window = 1000{settings}")
    )
    session.query(
        f"INSERT INTO {table} (tenant_id, seq, event_id, event_type, outcome, occurred_at, "
        "user_name, client_ip, user_agent, service, prev_hash, leaf_hash, hash, epoch, "
        "kafka_cluster, kafka_partition, kafka_offset) "
        "SELECT 'acme', number + 1, toString(generateUUIDv4()), 'LOGIN_FAILED', 'FAILURE', "
        "toDateTime64('2026-01-01 00:00:00', 6, 'UTC') + number / 100, "
        "concat('user', toString(number % 1000)), IPv4NumToString(toUInt32(rand())), "
        "'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0', 'sso', SHA256(toString(number)), "
        "SHA256(toString(number + 1)), SHA256(toString(number + 2)), 1, 'c', 0, number "
        f"FROM numbers({rows})"
    )
    session.query(f"OPTIMIZE TABLE {table} FINAL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory() as directory:
        session = chdb.session.Session(directory)
        session.query("CREATE DATABASE bench ENGINE = Atomic")
        tables = {label: f"bench.t{n}" for n, label in enumerate(VARIANTS)}
        for label, table in tables.items():
            build(session, table, VARIANTS[label], rows)
        base = tables["every column"]
        point = "PREWHERE tenant_id = 'acme' AND seq = {seq} SETTINGS max_threads = 1"
        queries = {
            "SELECT 1": "SELECT 1",
            "sort key only": f"SELECT seq FROM {base} {point}",
            "five columns": f"SELECT seq, event_id, user_name, client_ip, hash FROM {base} {point}",
            **{label: f"SELECT * FROM {table} {point}" for label, table in tables.items()},
        }
        walls: dict[str, list[float]] = {label: [] for label in queries}
        for _ in range(ROUNDS):
            seq = random.randint(1, rows)
            for label, sql in queries.items():
                started = time.perf_counter()
                session.query(sql.format(seq=seq), "Arrow")
                walls[label].append((time.perf_counter() - started) * 1000)
        print(f"one row of {rows:,} records, median of {ROUNDS} rounds (ms):")
        for label, values in walls.items():
            print(f"  {label:34s} {statistics.median(values):6.2f}")


if __name__ == "__main__":
    main()
