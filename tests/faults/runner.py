"""Run fault scenarios end to end and judge them; the entry point of ``python -m tests.faults``.

For each scenario: a fresh :class:`~tests.faults.harness.Pipeline`; worker, sink and
seeded load started; the scenario's faults injected; the load stopped (every delivery
report in); the pipeline drained until everything acknowledged is stored and signed (or
a timeout); then the checks of :mod:`tests.faults.tally` and ``authtrail verify``.

Exit status of the command: 0 when every scenario passed (or failed only as a listed
known issue), 1 when any other scenario lost, duplicated or forked events, verify did
not exit 0, or the harness itself failed; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.faults.harness import Pipeline
from tests.faults.scenarios import SCENARIOS, Fault, Scenario, scenario_named
from tests.faults.tally import Tally, tally

_LOG = logging.getLogger(__name__)

DRAIN_TIMEOUT = 300.0  # seconds for the pipeline to store everything after the faults
DRAIN_STALL = 45.0  # ... unless nothing at all was stored for this long (a wedged pipeline)


@dataclass
class ScenarioResult:
    """One scenario's run: what was injected, what the store holds, what verify said."""

    scenario: str
    iterations: int
    seed: int
    faults: list[Fault] = field(default_factory=list)
    tally: Tally | None = None
    verify_exit: int | None = None
    verify_output: str = ""
    restarts: dict[str, list[int]] = field(default_factory=dict)  # service -> exit codes
    bad_kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    known_issue: str | None = None
    envelopes: int = 0  # envelopes of several events the load sent

    @property
    def passed(self) -> bool:
        """Stored exactly once, gapless, no fork, verify exit 0, harness without error."""
        return (
            self.error is None
            and self.tally is not None
            and self.tally.clean
            and self.verify_exit == 0
        )

    def failure(self) -> str:
        """Why it did not pass ('' when it did), for assertion messages."""
        reasons = list(self.tally.problems()) if self.tally is not None else []
        if self.verify_exit not in (0, None):
            reasons.append(f"verify exited {self.verify_exit}: {self.verify_output.strip()}")
        if self.error:
            reasons.append(self.error)
        return "; ".join(reasons)


def run_scenario(
    scenario: Scenario,
    iterations: int,
    seed: int,
    work_dir: Path,
    *,
    before_checks: Callable[[Pipeline], None] | None = None,
    stall: float = DRAIN_STALL,
) -> ScenarioResult:
    """Run ``scenario`` with ``iterations`` faults on a fresh pipeline under ``work_dir``.

    ``before_checks(pipeline)`` runs after the drain, before counting and verify (the
    suite's own test uses it to damage the store and see the checks fail). ``stall``: the
    drain gives up after this many seconds without a new stored row. Never raises
    for a failure of the system under test or of the harness: the result says what
    happened (its ``error`` holds a harness traceback).
    """
    result = ScenarioResult(scenario.name, iterations, seed, known_issue=scenario.known_issue)
    rng = random.Random(f"{seed}/{scenario.name}")
    started = time.monotonic()
    root = work_dir / scenario.name
    try:
        with Pipeline(
            root, store=scenario.store, name=f"faults-{scenario.name}", seed=seed
        ) as pipeline:
            _run_in(pipeline, scenario, iterations, rng, result, before_checks, stall)
    except Exception:
        result.error = f"harness failed (logs in {root}): {traceback.format_exc(limit=8)}"
    result.seconds = time.monotonic() - started
    return result


def _run_in(
    pipeline: Pipeline,
    scenario: Scenario,
    iterations: int,
    rng: random.Random,
    result: ScenarioResult,
    before_checks: Callable[[Pipeline], None] | None,
    stall: float,
) -> None:
    clock = _Clock(scenario.name)
    pipeline.worker.start()
    pipeline.sink.start()
    load = pipeline.load(scenario.rate, tenants=scenario.tenants, bad_share=scenario.bad_share,
                         envelope_bytes=scenario.envelope_bytes)  # fmt: skip
    try:
        result.faults = scenario.inject(pipeline, load, rng, iterations)
    finally:
        summary = load.stop()
    clock.lap(f"{len(result.faults)} faults injected, {summary.sent:,} events sent")
    result.bad_kinds = {kind: count for kind, count in load.bad_kinds.items() if count}
    result.envelopes = summary.envelopes
    errors = [f"load: {summary.error}"] if summary.error else []
    # Mis-keyed events may be chained or rejected; the drain waits for the rest.
    expected = set(summary.acknowledged_ids)
    why = pipeline.drain(expected, len(summary.acknowledged_bad), DRAIN_TIMEOUT, stall)
    if why is not None:
        errors.append(f"drain: {why} (logs in {pipeline.root})")
    clock.lap("drained" if why is None else f"drain gave up: {why}")
    # Stopped before counting, so nothing arrives between the count and verify; a kill
    # is enough (everything is stored) and spares the graceful stop's seconds.
    for service in pipeline.services:
        service.stop(signal.SIGKILL)
    result.restarts = {service.name: service.exits for service in pipeline.services}
    if before_checks is not None:
        before_checks(pipeline)
    records, rejected = pipeline.stored()
    result.tally = tally(
        summary.acknowledged_ids,
        records,
        acknowledged_bad=summary.acknowledged_bad,
        rejected=rejected,
        acknowledged_either=summary.acknowledged_miskeyed,
    )
    result.verify_exit, result.verify_output = pipeline.verify()
    clock.lap(f"counted and verified (exit {result.verify_exit})")
    result.error = "; ".join(errors) or None


class _Clock:
    """Logs how long each phase of a scenario took (where the suite's minutes go)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._last = time.monotonic()

    def lap(self, what: str) -> None:
        now = time.monotonic()
        _LOG.info("%s: %s in %.1f s", self._name, what, now - self._last)
        self._last = now


def run_suite(
    scenarios: Sequence[Scenario], iterations: int, seed: int, work_dir: Path
) -> list[ScenarioResult]:
    """Run ``scenarios`` one after another (each on its own pipeline)."""
    results = []
    for scenario in scenarios:
        _LOG.info("scenario %s: %d iterations, seed %d", scenario.name, iterations, seed)
        result = run_scenario(scenario, iterations, seed, work_dir)
        verdict = "passed" if result.passed else f"FAILED: {result.failure()}"
        _LOG.info("scenario %s %s in %.0f s", scenario.name, verdict, result.seconds)
        results.append(result)
    return results


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults",
        description="Inject faults into the real pipeline (local broker, worker and sink "
        "processes, ClickHouse engine) under seeded load; check that every acknowledged "
        "event is stored exactly once, every tenant's seq is gapless and `authtrail verify` "
        "exits 0. Exit 0 when all scenarios pass, 1 otherwise.",
    )
    parser.add_argument("--iterations", type=int, default=3, help="faults per scenario")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[scenario.name for scenario in SCENARIOS],
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--report", type=Path, help="rewrite the generated section of this Markdown file"
    )
    parser.add_argument("--json", type=Path, help="also write every result as JSON here")
    parser.add_argument(
        "--work-dir", type=Path, help="keep logs and stores here (default: a temporary dir)"
    )
    arguments = parser.parse_args(argv)
    if arguments.iterations < 1:
        parser.error("--iterations must be >= 1")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    from tests.faults.report import render_section, rewrite_report, source_commit

    arguments = _arguments(argv)

    def interrupted(signal_number: int, frame: object) -> None:
        raise KeyboardInterrupt  # so every pipeline is closed on the way out

    signal.signal(signal.SIGTERM, interrupted)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    scenarios = [scenario_named(name) for name in arguments.scenario or []] or list(SCENARIOS)
    started, commit = time.monotonic(), source_commit()
    with tempfile.TemporaryDirectory(prefix="authtrail-faults-") as temporary:
        work_dir = arguments.work_dir or Path(temporary)
        results = run_suite(scenarios, arguments.iterations, arguments.seed, work_dir)
    # What reproduces the run (not where its logs went).
    command = f"python -m tests.faults --iterations {arguments.iterations} --seed {arguments.seed}"
    command += "".join(f" --scenario {name}" for name in arguments.scenario or [])
    section = render_section(
        results, command=command, seconds=time.monotonic() - started, commit=commit
    )
    print(section)
    if arguments.report:
        rewrite_report(arguments.report, section)
    if arguments.json:
        arguments.json.write_text(json.dumps([asdict(result) for result in results], indent=2))
    unexpected = [result for result in results if not result.passed and not result.known_issue]
    return 1 if unexpected else 0
