"""The pipeline a fault scenario runs against: every part real, every process ours.

One :class:`Pipeline` is one fresh deployment: its own tansu broker, topics, signing key
and ClickHouse store; ``authtrail worker`` and ``authtrail sink`` as supervised
subprocesses (:class:`~tests.faults.service.Service`). Every wait goes through
:meth:`Pipeline.sleep`, which restarts a process that exited on its own.

The store is one of two kinds:

* ``front``: chdb owned by this process, served by :class:`~authtrail.sinks.http_front.HttpFront` to
  the sink (as its writer, ``AUTHTRAIL_CLICKHOUSE_URL`` in the sink's environment) and to
  ``authtrail verify`` (as analyst); a ClickHouse outage is the front going away. The
  suite reads the store directly while the sink writes.
* ``embedded``: chdb in the data directory, owned by the sink process (as in a one-machine
  install). The final drain runs the product's sink in this process, then
  ``authtrail verify`` opens the directory itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from authtrail.broker import LocalBroker
from authtrail.keys import write_key_pair
from authtrail.settings import Settings
from authtrail.sinks.backend import ClickHouseBackend, EmbeddedBackend
from authtrail.sinks.http_front import HttpFront
from authtrail.sinks.schema_setup import ensure_schema
from authtrail.sinks.service import build_sink
from authtrail.stream.detection.decisions import LOCKOUT_SERVICE
from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG, topic_specs
from authtrail.topics import ensure_topics
from tests.faults.load import Load
from tests.faults.service import Service
from tests.faults.tally import Position, StoredRecord
from tests.integration.broker_fixtures import log_tail, start_python_module, stop_process_group

_LOG = logging.getLogger(__name__)

WORKER_READY = "[^Worker]: Ready"
SINK_STORING = "records, "  # the sink's progress line after its first insert
StoreKind = Literal["front", "embedded"]


class Pipeline:
    """A fresh broker, topics, key and store under ``root``; services not yet started."""

    def __init__(
        self, root: Path, *, store: StoreKind, name: str, partitions: int = 3, seed: int = 0
    ) -> None:
        self.root = root
        self.store = store
        self.seed = seed
        root.mkdir(parents=True, exist_ok=True)
        self.broker = LocalBroker(log_dir=root / "broker").start()
        self._owner: EmbeddedBackend | None = None
        self.front: HttpFront | None = None
        self._front_port = 0
        # Kept across restarts of the front, like a server's credentials.
        self._analyst_token, self._writer_token = (
            secrets.token_urlsafe(16),
            secrets.token_urlsafe(16),
        )
        try:
            self.environment = {
                **os.environ,
                "AUTHTRAIL_DATA_DIR": str(root / "data"),
                "AUTHTRAIL_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
                "AUTHTRAIL_EVENTS_TOPIC": f"{name}.events",
                "AUTHTRAIL_CHAINED_TOPIC": f"{name}.chained",
                "AUTHTRAIL_CHECKPOINTS_TOPIC": f"{name}.checkpoints",
                "AUTHTRAIL_DEAD_LETTER_TOPIC": f"{name}.dead-letter",
                "AUTHTRAIL_LOCKOUTS_TOPIC": f"{name}.lockouts",
                "AUTHTRAIL_CONSUMER_GROUP": name,
                "AUTHTRAIL_PARTITIONS": str(partitions),
                "AUTHTRAIL_BATCH_SIZE": "50",
                "AUTHTRAIL_BATCH_INTERVAL_MS": "300",
                "AUTHTRAIL_SINK_BATCH_ROWS": "300",
                "AUTHTRAIL_SINK_BATCH_MS": "300",
            }
            self.environment.pop("AUTHTRAIL_CLICKHOUSE_URL", None)
            self.settings = Settings.from_env(self.environment)
            write_key_pair(self.settings.keys_dir, "authtrail")
            ensure_topics(self.broker.bootstrap_servers, topic_specs(self.settings))
            sink_environment = dict(self.environment)
            if store == "front":
                self._owner = EmbeddedBackend(root / "clickhouse")
                ensure_schema(self._owner)  # `authtrail init-db`: the sink's writer cannot
                self.start_front()
                # In the environment, not the command line: `ps` would show the token.
                sink_environment["AUTHTRAIL_CLICKHOUSE_URL"] = self.writer_url
            self.worker = Service("worker", ["worker", "--short-timeouts"], self.environment, root)
            self.sink = Service("sink", ["sink", "--short-timeouts"], sink_environment, root)
            # A second worker (own Faust data dir, same signing key), started only by
            # scenarios that need two: it joins the same consumer group.
            (root / "data-spare").mkdir()  # Faust creates only the last level of its datadir
            spare_environment = {
                **self.environment,
                "AUTHTRAIL_DATA_DIR": str(root / "data-spare"),
                "AUTHTRAIL_SIGNING_KEY": str(self.settings.signing_key_path),
            }
            self.spare_worker = Service(
                "worker-spare", ["worker", "--short-timeouts"], spare_environment, root
            )
        except BaseException:
            self.close()
            raise

    @property
    def services(self) -> list[Service]:
        """Every product process this pipeline may run."""
        return [self.worker, self.spare_worker, self.sink]

    # -- the store ----------------------------------------------------------------------

    @property
    def store_url(self) -> str:
        """The front's URL for analysts (``front`` stores), token included; the same across
        restarts of the front."""
        return f"http://analyst:{self._analyst_token}@127.0.0.1:{self._front_port}/"

    @property
    def writer_url(self) -> str:
        """The front's URL for the sink, which writes (``front`` stores)."""
        return f"http://writer:{self._writer_token}@127.0.0.1:{self._front_port}/"

    def start_front(self) -> None:
        """Serve the store on the front's port (the same port and tokens on every restart)."""
        assert self._owner is not None, "only a front store has a front"
        self.front = HttpFront(
            self._owner, port=self._front_port,
            token=self._analyst_token, writer_token=self._writer_token,
        ).start()  # fmt: skip
        self._front_port = self.front.port

    def stop_front(self) -> None:
        """Take the front down: the sink's ClickHouse is unreachable until start_front."""
        if self.front is not None:
            self.front.stop()
            self.front = None

    @contextlib.contextmanager
    def reader(self) -> Iterator[ClickHouseBackend]:
        """The store for the suite's own queries (embedded: only while no sink runs)."""
        if self._owner is not None:
            yield self._owner
            return
        backend = EmbeddedBackend(self.settings.data_dir / "clickhouse")
        try:
            yield backend
        finally:
            backend.close()

    # -- load and time ------------------------------------------------------------------

    def load(
        self, rate: float, *, tenants: int, bad_share: float = 0.0, envelope_bytes: int = 0
    ) -> Load:
        """Seeded traffic of ``tenants`` tenants into the events topic (started); with
        ``envelope_bytes`` the good events travel in envelopes (bad ones stay bare)."""
        return Load(
            self.broker.bootstrap_servers,
            self.settings.events_topic,
            seed=self.seed,
            rate=rate,
            partitions=self.settings.partitions,
            tenants=tenants,
            bad_share=bad_share,
            envelope_bytes=envelope_bytes,
        ).start()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` while supervising the services."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for service in self.services:
                service.supervise()
            time.sleep(min(0.1, left))

    def wait_for(self, service: Service, text: str, timeout: float = 90.0) -> None:
        """Wait (supervising) until ``service``'s current process logs ``text``.

        Raises TimeoutError with the log's tail when it does not within ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if service.logged_since_start(text):
                return
            self.sleep(0.2)
        raise TimeoutError(
            f"{service.name} did not log {text!r} within {timeout:g} s:\n"
            f"{log_tail(service.log_path)}"
        )

    def wait_caught_up(self, load: Load, timeout: float = 240.0) -> bool:
        """Wait (supervising) until the store holds about everything sent so far — all but
        the last 2 s of traffic — or ``timeout`` s pass; True if it caught up.

        Only for ``front`` stores (the suite reads them while the sink writes).
        """
        assert self.store == "front", "an embedded store is the sink's while it runs"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.reader() as backend:
                events, _, rejected = _progress(backend)
            if events + rejected >= load.sent - 2 * load.rate:
                return True
            self.sleep(1.0)
        _LOG.warning("the pipeline did not catch up within %.0f s", timeout)
        return False

    # -- the end of a scenario ----------------------------------------------------------

    def drain(
        self, expected_ids: set[str], expected_bad: int, timeout: float, stall: float
    ) -> str | None:
        """Let the pipeline finish storing; None once every expected id and bad message is
        stored and every tenant is signed up to its last seq, else why it gave up: after
        ``timeout`` s, or ``stall`` s in which nothing new was stored (a wedged pipeline
        need not cost the whole timeout).

        Embedded stores: the sink process is stopped and the product's sink runs here.
        """
        if self.store == "embedded":
            self.sink.stop(signal.SIGTERM)
            return self._drain_in_process(expected_ids, expected_bad, timeout, stall)
        if not self.sink.running():
            self.sink.start()
        with self.reader() as backend:
            return self._wait_until_stored(
                backend, expected_ids, expected_bad, timeout, stall, lambda: True
            )

    def _drain_in_process(
        self, expected_ids: set[str], expected_bad: int, timeout: float, stall: float
    ) -> str | None:
        backend = EmbeddedBackend(self.settings.data_dir / "clickhouse")
        stop = threading.Event()
        try:
            sink = build_sink(self.settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
            thread = threading.Thread(target=sink.run, args=(stop,), name="drain", daemon=True)
            thread.start()
            why = self._wait_until_stored(
                backend, expected_ids, expected_bad, timeout, stall, thread.is_alive
            )
            stop.set()
            thread.join(60)
            return why
        finally:
            stop.set()
            backend.close()

    def _wait_until_stored(
        self,
        backend: ClickHouseBackend,
        expected_ids: set[str],
        expected_bad: int,
        timeout: float,
        stall: float,
        sink_alive: Callable[[], bool],
    ) -> str | None:
        started = last_change = time.monotonic()
        last: tuple[int, ...] = ()
        while True:
            progress = _progress(backend)
            if _complete(backend, progress, expected_ids, expected_bad):
                return None
            now = time.monotonic()
            if progress != last:
                last, last_change = progress, now
            if now - started >= timeout:
                return f"not all stored and signed within {timeout:.0f} s"
            if now - last_change >= stall:
                return (
                    f"nothing more was stored for {stall:.0f} s (stored, signed, rejected: {last})"
                )
            if not sink_alive():
                return "the sink stopped"
            self.sleep(1.0)

    def stored(self) -> tuple[list[StoredRecord], list[Position]]:
        """Every ``events`` row (tenant, seq, hash, event id) and every rejected position."""
        with self.reader() as backend:
            rows = backend.query_arrow(
                "SELECT tenant_id, seq, hash, event_id, service = {derived:String} AS derived "
                "FROM events",
                {"derived": LOCKOUT_SERVICE},
            )
            rejected = backend.query_arrow("SELECT source_partition, source_offset FROM rejected")
        records = [
            StoredRecord(
                row["tenant_id"], row["seq"], row["hash"], row["event_id"], bool(row["derived"])
            )
            for row in rows.to_pylist()
        ]
        positions = [
            (row["source_partition"], row["source_offset"]) for row in rejected.to_pylist()
        ]
        return records, positions

    def verify(self) -> tuple[int, str]:
        """Run ``authtrail verify`` as a user would; return its exit code and output."""
        arguments = ["--data-dir", str(self.settings.data_dir), "verify"]
        environment = dict(self.environment)
        if self.store == "front":
            environment["AUTHTRAIL_CLICKHOUSE_URL"] = self.store_url
        log = self.root / "verify.log"
        process = start_python_module("authtrail.cli", arguments, log, environment)
        try:
            code = process.wait(timeout=300)
        finally:
            stop_process_group(process, signal.SIGKILL)
        return code, log.read_text(errors="replace")[-2000:]

    def close(self) -> None:
        """Stop everything this pipeline started (SIGKILL where needed); idempotent."""
        for name in ("worker", "spare_worker", "sink"):
            service = getattr(self, name, None)
            if service is not None:
                with contextlib.suppress(Exception):
                    service.stop(signal.SIGKILL)
        self.stop_front()
        if self._owner is not None:
            self._owner.close()
            self._owner = None
        with contextlib.suppress(Exception):
            self.broker.resume()
        self.broker.stop()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _progress(backend: ClickHouseBackend) -> tuple[int, int, int]:
    """Rows stored so far: events, checkpoints, rejected."""
    row = backend.query_arrow(
        "SELECT (SELECT count() FROM events), (SELECT count() FROM checkpoints), "
        "(SELECT count() FROM rejected)"
    ).to_pylist()[0]
    events, checkpoints, rejected = row.values()
    return int(events), int(checkpoints), int(rejected)


def _complete(
    backend: ClickHouseBackend,
    progress: tuple[int, int, int],
    expected_ids: set[str],
    expected_bad: int,
) -> bool:
    """Every expected id stored, every bad message rejected, every tenant signed to its end."""
    events, _, rejected = progress
    if events < len(expected_ids) or rejected < expected_bad:
        return False
    stored = set(backend.query_arrow("SELECT event_id FROM events").column(0).to_pylist())
    if not expected_ids <= stored:
        return False
    unsigned = backend.query_arrow(
        "SELECT count() FROM "
        "(SELECT tenant_id, max(seq) AS n FROM events GROUP BY tenant_id) AS e "
        "LEFT JOIN (SELECT tenant_id, max(size) AS signed FROM checkpoints GROUP BY tenant_id) "
        "AS c USING tenant_id WHERE c.signed != e.n"
    )
    return int(unsigned.column(0)[0].as_py()) == 0
