"""The faults the suite injects, one function each, all driven by a seeded ``random.Random``.

Each ``inject`` function runs while seeded traffic flows (the runner starts the worker,
the sink and the load first, and stops the load, drains and checks afterwards). It makes
``iterations`` faults at random points drawn from ``rng``, and returns one
:class:`Fault` per fault for the report. The same seed gives the same plan (which fault,
when, for how long); what the processes were doing at that moment is the machine's, which
is the point — :attr:`Fault.phase` records it.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.faults.harness import SINK_STORING, WORKER_READY, Pipeline, StoreKind
from tests.faults.load import Load
from tests.faults.service import Service

WORKER_PROCESSING = "recovered"  # logged when a worker took over its first partition


@dataclass(frozen=True)
class Fault:
    """One injected fault: what, ``at`` seconds into its process's life (or the
    scenario's), lasting ``seconds`` (outages; 0 for a signal), what was going on
    (``phase``) and how the process took it (``outcome``)."""

    what: str
    at: float
    seconds: float = 0.0
    phase: str = ""
    outcome: str = ""


Inject = Callable[[Pipeline, Load, random.Random, int], list[Fault]]


@dataclass(frozen=True)
class Scenario:
    """A named fault, the store it runs on and its load (events/s, number of tenants).

    ``known_issue``: set while the scenario is known to fail because of a product bug not
    yet fixed; the report and the test then show it as expected-to-fail, not as a pass.
    """

    name: str
    store: StoreKind
    inject: Inject
    rate: float = 300.0
    tenants: int = 7
    bad_share: float = 0.0
    known_issue: str | None = None
    envelope_bytes: int = 0  # > 0: the SDK packs good events into envelopes of this size


def worker_sigkill(
    pipeline: Pipeline, load: Load, rng: random.Random, iterations: int
) -> list[Fault]:
    """SIGKILL the worker's process group at a random moment, restart it at once.

    A quarter of the kills land 0.5-5 s after start (start-up, group join, recovery), the
    rest 0-3 s after it began processing (mid-batch, mid-publish, mid-checkpoint).
    """
    faults = []
    for _ in range(iterations):
        phase = _random_moment(pipeline, pipeline.worker, WORKER_PROCESSING, "processing", rng)
        faults.append(Fault("SIGKILL worker", pipeline.worker.age, phase=phase))
        pipeline.worker.stop(signal.SIGKILL)
        pipeline.worker.start()
    _settle(pipeline, rng)
    return faults


def sink_sigkill(
    pipeline: Pipeline, load: Load, rng: random.Random, iterations: int
) -> list[Fault]:
    """SIGKILL ``authtrail sink`` (embedded store in its data directory) at a random moment,
    restart it at once: a quarter during start-up, the rest 0-3 s after its first insert
    (mid-insert included — after a restart it inserts a backlog in quick succession)."""
    faults = []
    for _ in range(iterations):
        phase = _random_moment(pipeline, pipeline.sink, SINK_STORING, "storing", rng)
        faults.append(Fault("SIGKILL sink", pipeline.sink.age, phase=phase))
        pipeline.sink.stop(signal.SIGKILL)
        pipeline.sink.start()
    pipeline.sleep(rng.uniform(2.0, 4.0))
    return faults


def _random_moment(
    pipeline: Pipeline, service: Service, busy_text: str, busy: str, rng: random.Random
) -> str:
    """Wait until a random moment of ``service``'s life; return its phase then."""
    if rng.random() < 0.25:
        pipeline.sleep(rng.uniform(0.5, 5.0))
    else:
        pipeline.wait_for(service, busy_text)
        pipeline.sleep(rng.uniform(0.0, 3.0))
    return busy if service.logged_since_start(busy_text) else "starting"


def worker_sigterm(
    pipeline: Pipeline, load: Load, rng: random.Random, iterations: int
) -> list[Fault]:
    """Graceful restart: SIGTERM the worker 0-3 s after it began processing, wait for it to
    exit (SIGKILL after 15 s, recorded), start a new one."""
    faults = []
    for _ in range(iterations):
        pipeline.wait_for(pipeline.worker, WORKER_PROCESSING)
        pipeline.sleep(rng.uniform(0.0, 3.0))
        phase, delay = _worker_phase(pipeline), pipeline.worker.age
        clean = pipeline.worker.stop(signal.SIGTERM, timeout=15.0)
        code = pipeline.worker.process.returncode if pipeline.worker.process else None
        outcome = f"exit {code}" if clean else "SIGKILLed after 15 s"
        faults.append(Fault("SIGTERM worker", delay, phase=phase, outcome=outcome))
        pipeline.worker.start()
    _settle(pipeline, rng)
    return faults


def broker_pause(
    pipeline: Pipeline, load: Load, rng: random.Random, iterations: int
) -> list[Fault]:
    """Freeze the broker (SIGSTOP) while events are produced and processed, for 1-10 s —
    past the 6 s consumer session timeout in some draws — then SIGCONT it."""
    _busy(pipeline)
    faults = []
    began = time.monotonic()
    for _ in range(iterations):
        pipeline.sleep(rng.uniform(1.0, 3.0))
        frozen = rng.uniform(1.0, 10.0)
        at = time.monotonic() - began
        pipeline.broker.pause()
        try:
            pipeline.sleep(frozen)
        finally:
            pipeline.broker.resume()
        faults.append(Fault("SIGSTOP broker", at, frozen, _worker_phase(pipeline)))
    _settle(pipeline, rng)
    return faults


def clickhouse_outage(
    pipeline: Pipeline, load: Load, rng: random.Random, iterations: int
) -> list[Fault]:
    """Take ClickHouse away from the sink for 2-8 s (its HTTP front stops; connection
    refused), then bring it back on the same port."""
    _busy(pipeline)
    faults = []
    began = time.monotonic()
    for _ in range(iterations):
        pipeline.sleep(rng.uniform(1.0, 3.0))
        down = rng.uniform(2.0, 8.0)
        at = time.monotonic() - began
        phase = "storing" if pipeline.sink.logged_since_start(SINK_STORING) else "starting"
        pipeline.stop_front()
        try:
            pipeline.sleep(down)
        finally:
            pipeline.start_front()
        faults.append(Fault("ClickHouse down", at, down, phase))
    _settle(pipeline, rng)
    return faults


def bad_input_flood(
    pipeline: Pipeline, load: Load, rng: random.Random, iterations: int
) -> list[Fault]:
    """Bursts of 2-5 s in which 80 % of the messages are undecodable or of an unknown
    schema (random bytes, empty, unknown fingerprint, truncated, Confluent-framed),
    interleaved with good events of the same tenants and partitions."""

    def share(value: float) -> None:
        load.bad_share = value

    return _bursts(pipeline, rng, iterations, "bad-input flood", share, 0.8,
                   pause=(0.5, 2.0), length=(2.0, 5.0))  # fmt: skip


def miskeyed_events(
    pipeline: Pipeline, load: Load, rng: random.Random, iterations: int
) -> list[Fault]:
    """Bursts of 1-3 s in which 5 % of the good events carry another tenant's id as Kafka
    key, one that maps to another partition (a producer not using the SDK). Each must end
    up chained once in its own tenant's chain, or in ``rejected``: never forked or lost."""

    def share(value: float) -> None:
        load.miskey_share = value

    return _bursts(pipeline, rng, iterations, "mis-keyed events", share, 0.05,
                   pause=(1.0, 3.0), length=(1.0, 3.0))  # fmt: skip


def _bursts(
    pipeline: Pipeline, rng: random.Random, iterations: int, label: str,
    set_share: Callable[[float], None], share: float, *, pause: tuple[float, float],
    length: tuple[float, float],
) -> list[Fault]:  # fmt: skip
    """``iterations`` bursts of ``length`` s (after ``pause`` s each) during which
    ``set_share(share)`` alters the running load; then the pipeline settles."""
    _busy(pipeline)
    faults = []
    began = time.monotonic()
    for _ in range(iterations):
        pipeline.sleep(rng.uniform(*pause))
        seconds = rng.uniform(*length)
        at = time.monotonic() - began
        set_share(share)
        try:
            pipeline.sleep(seconds)
        finally:
            set_share(0.0)
        faults.append(Fault(label, at, seconds, _worker_phase(pipeline)))
    _settle(pipeline, rng)
    return faults


def worker_freeze(
    pipeline: Pipeline, load: Load, rng: random.Random, iterations: int
) -> list[Fault]:
    """A zombie worker. Two workers share the partitions; SIGSTOP one for 6.5-10 s — past
    its 5 s group session timeout, so the other takes its partitions over and continues
    their chains — then SIGCONT it (a long GC pause, a suspended VM). The woken worker may
    still publish what it was sequencing for partitions it no longer owns; that must not
    reach the store. The frozen role alternates between the two workers."""
    pipeline.spare_worker.start()
    _busy(pipeline)
    pipeline.wait_for(pipeline.spare_worker, WORKER_PROCESSING)
    frozen_worker, other = pipeline.worker, pipeline.spare_worker
    faults = []
    for _ in range(iterations):
        pipeline.sleep(rng.uniform(0.5, 2.0))
        frozen = rng.uniform(6.5, 10.0)
        busy = frozen_worker.logged_since_start(WORKER_PROCESSING)
        at = frozen_worker.age
        frozen_worker.freeze()
        try:
            pipeline.sleep(frozen)
        finally:
            frozen_worker.thaw()
        phase = "processing" if busy else "starting"
        faults.append(Fault(f"SIGSTOP {frozen_worker.name}", at, frozen, phase))
        pipeline.sleep(rng.uniform(1.0, 3.0))
        frozen_worker, other = other, frozen_worker
    _settle(pipeline, rng)
    return faults


def decisions_behind_backlog(
    pipeline: Pipeline, load: Load, rng: random.Random, iterations: int
) -> list[Fault]:
    """A worker restart while its own lockout decisions wait behind a backlog. One tenant;
    a surge of 2.6-3.2 s at 5 000 events/s puts the worker far behind, so the decision
    events it publishes back into the events topic queue up behind the surge. It is
    SIGKILLed 0-1 s after the surge and restarted; recovery finds those decisions missing
    from the chain and publishes them again. Each decision must still be chained once.
    Every iteration starts from a pipeline that caught up with the previous one's
    backlog."""
    _busy(pipeline)
    base_rate = load.rate
    faults = []
    for _ in range(iterations):
        pipeline.wait_caught_up(load)
        pipeline.sleep(rng.uniform(0.5, 1.5))
        surge = rng.uniform(2.6, 3.2)
        load.rate = 5000.0
        try:
            pipeline.sleep(surge)
        finally:
            load.rate = base_rate
        pipeline.sleep(rng.uniform(0.0, 1.0))
        phase, at = _worker_phase(pipeline), pipeline.worker.age
        pipeline.worker.stop(signal.SIGKILL)
        faults.append(Fault("SIGKILL worker after a surge", at, surge, phase))
        pipeline.worker.start()
    _settle(pipeline, rng)
    return faults


def no_faults(pipeline: Pipeline, load: Load, rng: random.Random, iterations: int) -> list[Fault]:
    """Nothing injected: load flows for a few seconds (the baseline, and the control the
    suite's own test damages to see the checks fail)."""
    _settle(pipeline, rng)
    pipeline.sleep(rng.uniform(1.0, 3.0))
    return []


def _busy(pipeline: Pipeline) -> None:
    """Wait until the worker processes and the sink stores: faults should hit a busy
    pipeline, not one still starting."""
    pipeline.wait_for(pipeline.worker, WORKER_PROCESSING)
    pipeline.wait_for(pipeline.sink, SINK_STORING)


def _worker_phase(pipeline: Pipeline) -> str:
    return "processing" if pipeline.worker.logged_since_start(WORKER_PROCESSING) else "starting"


def _settle(pipeline: Pipeline, rng: random.Random) -> None:
    """Let the last restarted process get going before the load stops."""
    pipeline.wait_for(pipeline.worker, WORKER_READY)
    pipeline.sleep(rng.uniform(0.5, 1.5))


SCENARIOS: tuple[Scenario, ...] = (
    # Some bad input too: rejections must be chained exactly once across the kills.
    Scenario("worker_sigkill", "front", worker_sigkill, bad_share=0.02),
    # Kills land mid-envelope too: recovery must resume at (offset, index).
    Scenario(
        "worker_sigkill_envelopes",
        "front",
        worker_sigkill,
        bad_share=0.02,
        envelope_bytes=16 * 1024,
    ),
    Scenario("sink_sigkill", "embedded", sink_sigkill),
    Scenario("worker_sigterm", "front", worker_sigterm),
    Scenario("broker_pause", "front", broker_pause),
    Scenario("clickhouse_outage", "front", clickhouse_outage),
    Scenario("bad_input_flood", "front", bad_input_flood, rate=600.0),
    Scenario("miskeyed_events", "front", miskeyed_events),
    Scenario("worker_freeze", "front", worker_freeze),
    Scenario("decisions_behind_backlog", "front", decisions_behind_backlog, tenants=1),
)

BASELINE = Scenario("baseline", "front", no_faults)


def scenario_named(name: str) -> Scenario:
    """The scenario called ``name``; raises KeyError listing the known names."""
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(f"unknown scenario {name!r}; known: {', '.join(s.name for s in SCENARIOS)}")
