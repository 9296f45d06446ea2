"""What a benchmark run measures and how much: the full run and the CI smoke run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from benchmarks.stack import AUTHTRAIL, PLAIN, StackConfig


@dataclass(frozen=True)
class StackPlan:
    """One stack and its phases: drain; live runs at fractions of the drain rate; soak;
    restart (benchmarks/pipeline.py).

    ``live_rates_from`` names an earlier stack whose drain rate the fractions apply to as
    well (so the plain baseline is also measured at authtrail's absolute rates).
    """

    stack: StackConfig
    drain_events: int
    live_fractions: tuple[float, ...] = ()
    live_seconds: float = 0.0
    live_rates_from: str | None = None
    soak_seconds: float = 0.0
    restart: bool = False  # after the soak: kill the worker, time the recovery (authtrail)
    profile: bool = False  # py-spy on worker and store during the drain (not timed runs)


@dataclass(frozen=True)
class FloodPlan:
    """Good-event throughput with and without bad input (:mod:`benchmarks.flood`)."""

    tenants: int
    good_events: int
    bad_per_good: float  # bad messages mixed in after each good event, on average
    batch_interval_ms: int = 250  # the product's default (authtrail/settings.py)
    sink_batch_ms: int = 250
    timeout: float = 600.0  # per drain
    # After each drain, live phases: good events at each share of the clean drain's rate
    # (plus the flood's bad messages in the flood variant) for ``live_seconds`` each.
    live_shares: tuple[float, ...] = (0.25, 0.5)
    live_seconds: float = 60.0


@dataclass(frozen=True)
class RunConfig:
    """Every parameter of one run; recorded in the results."""

    name: str
    sha256_count: int
    avro_count: int
    clickhouse_rows: int
    clickhouse_batch_rows: int
    kafka_messages: int
    signatures: int
    batch_size_events: int
    batch_sizes: tuple[int, ...]
    core_events: int
    core_tenants: tuple[int, ...]
    verify_rows: tuple[int, ...]
    verify_tenants: int
    verify_batch_size: int
    verify_profile: bool
    stacks: tuple[StackPlan, ...] = field(default_factory=tuple)
    drain_timeout: float = 900.0
    flood: FloodPlan | None = None
    # One-tenant store sizes for `authtrail prove` (benchmarks/proofs_bench.py).
    proof_rows: tuple[int, ...] = ()
    # Events through the worker core and the two store paths (benchmarks/store_path.py).
    store_path_events: int = 0
    # The worker's RSS over this much event time at this rate, no broker
    # (benchmarks/worker_memory.py): past the detectors' 10-minute windows. 0: not run.
    memory_minutes: float = 0.0
    memory_rate: float = 3000.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def full() -> RunConfig:
    """The full run (about 38 minutes on the 2-core reference machine)."""
    # 300 000 for authtrail: at 20 000-30 000 events/s, 60 000 were a 2-3 s drain whose
    # 10-90 % window held mostly start-up (new tenants and accounts, the first inserts).
    # Plain drains 150 000-270 000 events/s: 300 000 left it a window of about a second
    # and a rate that moved ±30 % between runs, more than the ratio moved for anything
    # authtrail did; five times as many give it a window of several seconds.
    authtrail_events, plain_events = 300_000, 1_500_000
    latency = (0.5, 0.8)

    def at(mode: str, tenants: int, **extra: Any) -> StackPlan:
        events = authtrail_events if mode == AUTHTRAIL else plain_events
        stack = {key: extra.pop(key) for key in ("workers", "worker_environment", "label")
                 if key in extra}  # fmt: skip
        return StackPlan(StackConfig(mode, tenants, **stack), events, **extra)

    return RunConfig(
        name="full",
        sha256_count=300_000,
        avro_count=20_000,
        clickhouse_rows=500_000,
        clickhouse_batch_rows=100_000,
        kafka_messages=200_000,
        signatures=5_000,
        batch_size_events=50_000,
        batch_sizes=(1, 10, 100, 1000, 10_000),
        core_events=20_000,
        core_tenants=(1, 10_000),
        verify_rows=(100_000, 1_000_000),
        verify_tenants=100,
        verify_batch_size=1000,
        verify_profile=True,
        stacks=(
            at(AUTHTRAIL, 1),
            at(PLAIN, 1),
            at(
                AUTHTRAIL,
                100,
                live_fractions=latency,
                live_seconds=30,
                soak_seconds=600,
                restart=True,
            ),
            at(
                PLAIN,
                100,
                live_fractions=latency,
                live_seconds=30,
                live_rates_from="authtrail-100t-1w",
            ),
            at(AUTHTRAIL, 10_000),
            at(PLAIN, 10_000),
            at(AUTHTRAIL, 100, workers=2),
            at(AUTHTRAIL, 100, workers=4),  # scaling: 1, 2, 4 workers on 4 partitions
            at(AUTHTRAIL, 100, profile=True),
        ),
        flood=FloodPlan(tenants=100, good_events=200_000, bad_per_good=1.0),
        proof_rows=(1_000_000, 10_000_000),
        store_path_events=200_000,
        memory_minutes=20,
    )


def smoke() -> RunConfig:
    """A tiny run that exercises every code path in well under a minute; numbers mean little."""
    return RunConfig(
        name="smoke",
        sha256_count=2_000,
        avro_count=300,
        clickhouse_rows=2_000,
        clickhouse_batch_rows=1_000,
        kafka_messages=1_000,
        signatures=50,
        batch_size_events=500,
        batch_sizes=(1, 100),
        core_events=300,
        core_tenants=(1,),
        verify_rows=(1_000,),
        verify_tenants=5,
        verify_batch_size=100,
        verify_profile=False,
        stacks=(
            StackPlan(
                StackConfig(AUTHTRAIL, 3, batch_interval_ms=300, sink_batch_ms=300),
                600,
                soak_seconds=1,  # a soak is a live phase too: one covers both code paths
                restart=True,
            ),
            StackPlan(
                StackConfig(PLAIN, 3, sink_batch_ms=300),
                600,
                live_fractions=(0.5,),
                live_seconds=1,
                live_rates_from="authtrail-3t-1w",
            ),
        ),
        drain_timeout=60.0,
        flood=FloodPlan(
            3,
            300,
            1.0,
            batch_interval_ms=300,
            sink_batch_ms=300,
            timeout=60.0,
            live_shares=(0.5,),
            live_seconds=2.0,
        ),
        proof_rows=(3_000,),
        store_path_events=3_000,
        memory_minutes=1.0,
        memory_rate=200.0,
    )


def with_overrides(config: RunConfig, **overrides: Any) -> RunConfig:
    """A copy with the given fields replaced (None values ignored)."""
    return replace(
        config, **{name: value for name, value in overrides.items() if value is not None}
    )
