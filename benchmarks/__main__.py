"""``python -m benchmarks [--smoke]``: run the benchmarks, write benchmarks/results/.

Exit status 0 when every section ran (whatever the numbers), 1 when a section failed
(its error is in results.json and summary.md), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import sys
import time
from pathlib import Path

from benchmarks import config as configs
from benchmarks import plots, report, runner

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
SECTIONS = ("limits", "costs", "pipeline", "flood", "verify", "proofs", "store_path")


def _interrupt(number: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {number}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark authtrail against a plain Kafka→ClickHouse pipeline on this "
        "machine; write results.json, summary.md and PNG plots.",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI (< 1 minute)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="scratch space, not an earlier run's (default: OUT/work, emptied first)",
    )
    parser.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--verify-rows", help="comma-separated store sizes for verify")
    parser.add_argument(
        "--proof-rows", help="comma-separated one-tenant store sizes for prove (proofs)"
    )
    parser.add_argument("--soak-seconds", type=float, help="override every stack's soak length")
    parser.add_argument(
        "--stacks", help="comma-separated stacks of the pipeline section to run (e.g. "
        "authtrail-100t-1w; default: all)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= set(SECTIONS):
        parser.error(f"--only takes {', '.join(SECTIONS)}")
    config = configs.smoke() if args.smoke else configs.full()
    if args.verify_rows:
        rows = tuple(int(value) for value in args.verify_rows.split(","))
        config = configs.with_overrides(config, verify_rows=rows)
    if args.proof_rows:
        sizes = tuple(int(value) for value in args.proof_rows.split(","))
        config = configs.with_overrides(config, proof_rows=sizes)
    if args.soak_seconds is not None:
        plans = tuple(
            dataclasses.replace(plan, soak_seconds=args.soak_seconds) if plan.soak_seconds else plan
            for plan in config.stacks
        )
        config = configs.with_overrides(config, stacks=plans)
    if args.stacks:
        names = set(args.stacks.split(","))
        known = {runner.stack_name(plan): plan for plan in config.stacks}
        if not names <= set(known):
            parser.error(f"--stacks takes {', '.join(sorted(known))}")
        chosen = tuple(plan for name, plan in known.items() if name in names)
        config = configs.with_overrides(config, stacks=chosen)
    work = args.work_dir or args.out / "work"
    if args.work_dir is None:
        # The default scratch is this run's alone: an earlier run's (its keys, stores and
        # topics' data) made every stack refuse to overwrite the keys it found there.
        shutil.rmtree(work, ignore_errors=True)
    # Stop like Ctrl-C on SIGTERM too (and on SIGINT even when started in the background,
    # where it is ignored): the stacks' finally blocks then stop every child process.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _interrupt)
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {text}", file=sys.stderr, flush=True)

    partial = args.out / "results.partial.json"
    args.out.mkdir(parents=True, exist_ok=True)

    def save(results: dict[str, object]) -> None:
        partial.write_text(json.dumps(results, indent=1, default=str) + "\n")

    results = runner.run(config, work, say, only, save)
    partial.unlink(missing_ok=True)
    pngs, note = plots.write_plots(results, args.out)
    results["plots_note"] = note
    for path in [*report.write(results, args.out), *pngs]:
        say(f"wrote {path}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
