"""One pipeline under test on this machine: broker, store host, workers, a loader.

``authtrail`` mode: events → ``authtrail worker`` process(es) → chained records and
checkpoints → the authtrail sink (in :mod:`benchmarks.store_host`) → chdb.
``plain`` mode: events → the plain consumer (same store host) → chdb.

Every stack has a fresh in-memory broker and fresh data directory, so runs do not see
each other's data. Every process is in its own process group and is stopped on exit.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from authtrail.broker import LocalBroker
from authtrail.keys import write_key_pair
from authtrail.producers.sdk.envelope import DEFAULT_ENVELOPE_BYTES
from authtrail.settings import Settings
from authtrail.sinks.server import ServerBackend
from authtrail.stream.worker.app import topic_specs
from authtrail.topics import ensure_topics
from benchmarks.plain import PLAIN_TABLE
from benchmarks.procs import (
    Usage,
    group_usage,
    json_result,
    peak_rss_bytes,
    start_python,
    stop_group,
    tail,
    wait_for_text,
)

WORKER_READY = "[^Worker]: Ready"
AUTHTRAIL, PLAIN = "authtrail", "plain"


@dataclass(frozen=True)
class StackConfig:
    """What is deployed: ``mode`` (authtrail or plain), tenants and the pipeline knobs."""

    mode: str
    tenants: int
    workers: int = 1
    partitions: int = 4
    batch_size: int = 1000
    batch_interval_ms: int = 250  # the product's default (authtrail/settings.py)
    # Below the product's 100 000: throughput is the slope of stored rows over time
    # (benchmarks/pipeline.py), which needs many inserts inside its 10-90 % window; with
    # 100 000-row inserts a 300 000-event drain is three steps and the slope meaningless.
    # The store's CPU per row at the product's batch size is benchmarks/store_path.py's.
    sink_batch_rows: int = 20_000
    sink_batch_ms: int = 250
    # Extra environment for the workers, to try a setting without editing the product
    # (e.g. AUTHTRAIL_PRODUCER_LINGER_MS); ``label`` names such a variant.
    worker_environment: tuple[tuple[str, str], ...] = ()
    label: str = ""
    # The loader's AuditProducer(envelope_bytes=...): the SDK's default; 0 sends bare events.
    envelope_bytes: int = DEFAULT_ENVELOPE_BYTES

    @property
    def name(self) -> str:
        workers = f"-{self.workers}w" if self.mode == AUTHTRAIL else ""
        label = f"-{self.label}" if self.label else ""
        return f"{self.mode}-{self.tenants}t{workers}{label}"


class Stack:
    """Start with ``with Stack(config, directory) as stack:``; everything stops at exit."""

    def __init__(self, config: StackConfig, directory: Path) -> None:
        self.config = config
        self.directory = directory
        self.logs = directory / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.broker: LocalBroker | None = None
        self.settings = Settings()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.store_process: subprocess.Popen[bytes] | None = None
        self.loader: subprocess.Popen[bytes] | None = None
        self.store: ServerBackend | None = None
        self._loader_runs = 0

    @property
    def table(self) -> str:
        return "events" if self.config.mode == AUTHTRAIL else PLAIN_TABLE

    def __enter__(self) -> Stack:
        try:
            self.broker = LocalBroker(log_dir=self.logs).start()
            config = self.config
            self.settings = Settings(
                data_dir=self.directory / "data",
                bootstrap_servers=self.broker.bootstrap_servers,
                partitions=config.partitions,
                batch_size=config.batch_size,
                batch_interval_ms=config.batch_interval_ms,
                sink_batch_rows=config.sink_batch_rows,
                sink_batch_ms=config.sink_batch_ms,
                consumer_group="bench",
            )
            write_key_pair(self.settings.keys_dir, "authtrail")
            ensure_topics(self.broker.bootstrap_servers, topic_specs(self.settings))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- processes ---------------------------------------------------------------------

    def start_loader(
        self, *, count: int = 0, rate: float = 0.0, seconds: float = 0.0, seed: int = 1
    ) -> Path:
        """Start the producer process (see :mod:`benchmarks.loader`); returns its result path."""
        self._loader_runs += 1
        out = self.directory / f"loader-{self._loader_runs}.json"
        arguments = [
            "-m",
            "benchmarks.loader",
            "--bootstrap-servers",
            self.settings.bootstrap_servers or "",
            "--topic",
            self.settings.events_topic,
            "--tenants",
            str(self.config.tenants),
            "--count",
            str(count),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--seed",
            str(seed + self._loader_runs),
            "--out",
            str(out),
            "--envelope-bytes",
            str(self.config.envelope_bytes),
        ]
        self.loader = start_python(arguments, self.logs / f"loader-{self._loader_runs}.log")
        return out

    def finish_loader(self, out: Path, timeout: float) -> dict[str, Any]:
        """Wait for the loader started by :meth:`start_loader`; return its JSON result."""
        assert self.loader is not None
        log = self.logs / f"loader-{self._loader_runs}.log"
        try:
            return json_result(self.loader, out, log, timeout, "loader")
        finally:
            self.loader = None

    def start_consumers(self) -> None:
        """Start the store host and (authtrail) the workers; return when they are ready."""
        environment = self.settings.to_env()
        endpoint = self.directory / "store.endpoint"
        log = self.logs / "store.log"
        self.store_process = start_python(
            [
                "-m",
                "benchmarks.store_host",
                "--mode",
                self.config.mode,
                "--endpoint-file",
                str(endpoint),
            ],
            log,
            environment,
        )
        if self.config.mode == AUTHTRAIL:
            for index in range(self.config.workers):
                self.workers.append(self._start_worker(self.logs / f"worker-{index}.log"))
        deadline = time.monotonic() + 90
        while not endpoint.exists():
            if self.store_process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"store host did not start:\n{tail(log)}")
            time.sleep(0.05)
        self.store = ServerBackend(json.loads(endpoint.read_text())["url"])
        for index, worker in enumerate(self.workers):
            wait_for_text(self.logs / f"worker-{index}.log", WORKER_READY, worker, timeout=90)

    def _start_worker(self, log: Path) -> subprocess.Popen[bytes]:
        environment = {**self.settings.to_env(), **dict(self.config.worker_environment)}
        return start_python(["-m", "authtrail.cli", "worker", "--short-timeouts"], log, environment)

    def kill_and_restart_worker(self, index: int) -> Path:
        """SIGKILL worker ``index`` (no clean shutdown: what a crash leaves) and start a
        new one in its place; return the new one's log."""
        stop_group(self.workers[index], signal.SIGKILL)
        restarts = len(list(self.logs.glob(f"worker-{index}-restart-*.log")))
        log = self.logs / f"worker-{index}-restart-{restarts + 1}.log"
        self.workers[index] = self._start_worker(log)
        return log

    def close(self) -> None:
        """Stop loader, workers (they sign open batches), store host (it drains), broker."""
        if self.loader is not None:
            stop_group(self.loader, signal.SIGKILL)
            self.loader = None
        for worker in self.workers:
            stop_group(worker, grace=15)
        self.workers = []
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.store_process is not None:
            stop_group(self.store_process, grace=60)
            self.store_process = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    # -- observations ------------------------------------------------------------------

    def stored(self) -> int:
        """Rows in the stack's table (events, or the plain table)."""
        assert self.store is not None
        result = self.store.query_arrow(f"SELECT count() FROM {self.table}")
        return int(result.column(0)[0].as_py())

    def checkpoints(self) -> int:
        """Signed checkpoints stored (0 in plain mode)."""
        if self.config.mode != AUTHTRAIL:
            return 0
        assert self.store is not None
        result = self.store.query_arrow("SELECT count() FROM checkpoints")
        return int(result.column(0)[0].as_py())

    def unsigned_tenants(self) -> int:
        """Tenants whose newest stored record is not yet covered by a stored checkpoint."""
        if self.config.mode != AUTHTRAIL:
            return 0
        assert self.store is not None
        result = self.store.query_arrow(
            "SELECT countIf(c.signed < e.n) FROM "
            "(SELECT tenant_id, max(seq) AS n FROM events GROUP BY tenant_id) AS e "
            "LEFT JOIN (SELECT tenant_id, max(size) AS signed FROM checkpoints "
            "GROUP BY tenant_id) AS c USING tenant_id"
        )
        return int(result.column(0)[0].as_py())

    def roles(self) -> dict[str, list[int]]:
        """Process-group ids by role: broker, worker, store, loader (when running)."""
        groups: dict[str, list[int]] = {}
        if self.broker is not None and self.broker.pid is not None:
            groups["broker"] = [self.broker.pid]
        live_workers = [w.pid for w in self.workers if w.poll() is None]
        if live_workers:
            groups["worker"] = live_workers
        if self.store_process is not None:
            groups["store"] = [self.store_process.pid]
        if self.loader is not None and self.loader.poll() is None:
            groups["loader"] = [self.loader.pid]
        return groups

    def usage(self) -> dict[str, Usage]:
        """CPU seconds and RSS of each role now (workers summed)."""
        usage = {}
        for role, groups in self.roles().items():
            parts = [group_usage(group) for group in groups]
            usage[role] = Usage(
                sum(part.cpu_seconds for part in parts), sum(part.rss_bytes for part in parts)
            )
        return usage

    def peak_rss(self) -> dict[str, int | None]:
        """High-water RSS (VmHWM) of each role's main process (largest worker)."""
        peaks: dict[str, int | None] = {}
        for role, groups in self.roles().items():
            values = [value for value in map(peak_rss_bytes, groups) if value is not None]
            peaks[role] = max(values) if values else None
        return peaks
