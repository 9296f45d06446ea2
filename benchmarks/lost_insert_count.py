"""The sink's count after an insert against the month's size:
``python -m benchmarks.lost_insert_count``.

On a ClickHouse server every insert of the sink is followed by a count of its keys
(sinks/lost_inserts.py), about four times a second, so its cost must not grow with the
month. One run builds the embedded store's ``events`` table at each of ``--rows`` (a month
of ``--tenants`` tenants, their seqs interleaved as a live month's are), written by each of
``--inserts`` inserts (one part, or as many as merges leave of them). Then each of
``--rounds`` rounds inserts what a flush holds (the next ``--per-tenant`` records of every
tenant) and counts them in two ways, alternated:

* ``sink``: the count the sink runs (:func:`authtrail.sinks.lost_inserts.stored_counter`):
  the parts made since the block number read before the insert;
* ``month`` (the baseline): the same keys in the whole month, the count the sink ran
  until 2026-12-06 (and still runs when the first finds fewer than it sent), which the
  primary key narrows by tenant only.

It reports CPU ms per count (``time.process_time``: this process, every thread, so chdb's
threads count), best and median, and the ratio month ÷ sink. Both must find every record
of the flush, else the run fails. JSON to ``--out`` (default
``benchmarks/results/lost_insert_count.json``).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.lost_inserts import count_stored, newest_block
from authtrail.sinks.tables import create_statements

MONTH = 202601


def _cpu_ms(count: Callable[[], int], expected: int) -> float:
    started = time.process_time()
    counted = count()
    spent = (time.process_time() - started) * 1000
    if counted != expected:
        raise SystemExit(f"a count found {counted} rows of {expected}")
    return spent


def _insert_month(backend: EmbeddedBackend, first: int, count: int, tenants: int) -> None:
    """Rows ``first``..``first + count - 1`` of the month: row n is record n // tenants + 1 of
    tenant n % tenants."""
    backend.command(
        "INSERT INTO events (tenant_id, seq, occurred_at, event_id) SELECT "
        f"concat('tenant-', toString(number % {tenants})), intDiv(number, {tenants}) + 1, "
        "toDateTime64('2026-01-02 00:00:00', 6) + number / 1000, toString(number) "
        f"FROM numbers({first}, {count})"
    )


def measure(rows: int, tenants: int, per_tenant: int, rounds: int, inserts: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as directory,
        EmbeddedBackend(Path(directory) / "clickhouse") as backend,
    ):
        for statement in create_statements():
            backend.command(statement)
        step = rows // inserts // tenants * tenants
        for start in range(0, step * inserts, step):  # the month's parts, as inserts make them
            _insert_month(backend, start, step, tenants)
        parts = (
            backend.query_arrow(
                "SELECT count() FROM system.parts WHERE table = 'events' AND active"
            )
            .column(0)[0]
            .as_py()
        )
        samples: dict[str, list[float]] = {"sink": [], "month": []}
        written = step * inserts
        for round_ in range(rounds):
            newest = newest_block(backend, "events", MONTH)
            _insert_month(backend, written, tenants * per_tenant, tenants)  # a flush
            first = written // tenants + 1
            written += tenants * per_tenant
            ranges = {f"tenant-{n}": (first, first + per_tenant - 1) for n in range(tenants)}
            ways: dict[str, Callable[[], int]] = {
                "sink": functools.partial(
                    count_stored, backend, "events", MONTH, ranges, after_block=newest
                ),
                "month": functools.partial(count_stored, backend, "events", MONTH, ranges),
            }
            for name in sorted(ways, reverse=round_ % 2 == 1):  # alternate the order
                samples[name].append(_cpu_ms(ways[name], tenants * per_tenant))
    result: dict[str, Any] = {
        "rows": step * inserts, "inserts": inserts, "active_parts": parts, "tenants": tenants,
        "per_tenant": per_tenant,
    }  # fmt: skip
    for name, values in samples.items():
        result[name] = {
            "cpu_ms_best": round(min(values), 1),
            "cpu_ms_median": round(statistics.median(values), 1),
        }
    result["ratio_median"] = round(
        result["month"]["cpu_ms_median"] / result["sink"]["cpu_ms_median"], 2
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000000,10000000", help="month sizes, comma-separated")
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--per-tenant", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--inserts", default="1,20", help="inserts the month is written by, comma-separated"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/lost_insert_count.json")
    )
    args = parser.parse_args()
    results = []
    print(
        "month rows, inserts (active parts) | sink: CPU ms best / median | "
        "month: same | month ÷ sink"
    )
    for rows, inserts in itertools.product(
        (int(value) for value in args.rows.split(",")),
        [int(value) for value in args.inserts.split(",")],
    ):
        result = measure(rows, args.tenants, args.per_tenant, args.rounds, inserts)
        results.append(result)
        sink, month = result["sink"], result["month"]
        print(
            f"{rows:>10}, {inserts} ({result['active_parts']}) | "
            f"{sink['cpu_ms_best']} / {sink['cpu_ms_median']} | "
            f"{month['cpu_ms_best']} / {month['cpu_ms_median']} | "
            f"{result['ratio_median']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
