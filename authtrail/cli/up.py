"""``authtrail up``: the whole pipeline on one machine, in one command.

Starts, in order: the local broker (unless Kafka is configured), the topics, the embedded
ClickHouse store and its HTTP front (so ``authtrail sql`` / ``verify`` work from another
terminal), a sequencer worker process, the sink, and optionally demo traffic. Ctrl-C
stops everything in reverse order; the sink stores what it holds before it exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from authtrail.background_http import own_host_names
from authtrail.broker import LocalBroker
from authtrail.cli.periodic_verify import PeriodicVerifier
from authtrail.cli.reseed import reseed, stored_records
from authtrail.errors import ConfigurationError
from authtrail.keys import write_key_pair
from authtrail.producers.sdk import AuditProducer
from authtrail.producers.traffic import TrafficConfig, generate_events
from authtrail.settings import Settings
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.http_front import HttpFront
from authtrail.sinks.service import announce_endpoint, build_sink, endpoint_path
from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG, topic_specs
from authtrail.topics import ensure_topics

_STATUS_SECONDS = 5.0


class _Worker:
    """The sequencer in its own process group, restarted if it exits on its own.

    A worker exits by design when a publish fails (its memory may be ahead of Kafka);
    a restart recovers from Kafka.
    """

    def __init__(self, settings: Settings, local: bool, log_path: Path) -> None:
        self._command = [sys.executable, "-m", "authtrail.cli", "worker"]
        if local:
            self._command.append("--short-timeouts")
        self._environment = {**os.environ, **settings.to_env()}
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command, stdout=log, stderr=subprocess.STDOUT,
                env=self._environment, start_new_session=True,
            )  # fmt: skip

    def keep_alive(self, say: Callable[[str], None]) -> None:
        if self._process is not None and self._process.poll() is not None:
            say(f"worker exited with {self._process.returncode}; restarting (see {self._log_path})")
            self.restarts += 1
            self.start()

    def stop(self, grace: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:  # Faust once ignored SIGTERM here (ENVIRONMENT.md)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _demo_traffic(settings: Settings, rate: float, stop: threading.Event) -> None:
    """Send generated multi-tenant traffic, with brute-force bursts, until ``stop``."""
    config = TrafficConfig(tenants=5, users=40, failure_share=0.1, burst_every=500)
    interval = 1.0 / rate
    next_send = time.monotonic()
    with AuditProducer(settings.bootstrap_servers or "", settings.events_topic) as producer:
        for event in generate_events(config, seed=int(time.time())):
            if stop.is_set():
                break
            producer.send(event)
            next_send += interval
            delay = next_send - time.monotonic()
            if delay > 0:
                stop.wait(delay)


def run_up(
    settings: Settings,
    *,
    demo: bool,
    demo_rate: float,
    front_port: int,
    front_host: str = "127.0.0.1",
    out: TextIO = sys.stdout,
    ingest_listen: str | None = None,
    console_listen: str | None = None,
    verify_every: float = 0.0,
    retention_every: float = 0.0,
) -> int:
    """Run the pipeline until SIGINT/SIGTERM. Returns the exit code.

    The store's HTTP front listens on ``front_host``:``front_port``, read-only, for the
    analyst token it prints (fresh on every start) and announces in the endpoint file.
    With a token file, ``authtrail ingest-http`` runs too, on ``ingest_listen``. The web
    console listens on ``console_listen`` and reads through the front as the analyst.
    Every ``verify_every`` seconds (0: never) ``authtrail verify`` checks the store and
    writes the report the console shows (:mod:`authtrail.cli.periodic_verify`). Every
    ``retention_every`` seconds (0: never) the tenants with ``retention_days`` in the
    privacy policy file are pruned (:mod:`authtrail.retention_schedule`): ``up`` owns the
    store, so it alone can delete from it.
    """

    def say(text: str) -> None:
        print(f"authtrail up: {text}", file=out, flush=True)

    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    data_dir = settings.data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    settings = replace(settings, data_dir=data_dir)
    if settings.publication_dir is None:  # checkpoints leave the store (DEPLOYMENT.md)
        settings = replace(settings, publication_dir=data_dir / "published")
    if not settings.signing_key_path.exists():
        key_path, public_path = write_key_pair(settings.signing_key_path.parent, "authtrail")
        say(f"created signing key {key_path} and verifier key {public_path}")

    broker = None
    if not settings.bootstrap_servers:
        broker = LocalBroker(log_dir=logs).start()
        settings = replace(settings, bootstrap_servers=broker.bootstrap_servers)
        say(f"local Kafka-protocol broker (in memory) on {broker.bootstrap_servers}")
    cleanup: list[Callable[[], Any]] = [broker.stop] if broker else []
    try:
        ensure_topics(settings.bootstrap_servers or "", topic_specs(settings))
        backend = EmbeddedBackend(data_dir / "clickhouse")
        cleanup.append(backend.close)
        sink = build_sink(
            settings, backend, consumer_config=SHORT_CONSUMER_CONFIG if broker else None
        )
        if broker is not None and stored_records(backend):
            count = reseed(backend, settings, settings.bootstrap_servers or "")
            say(f"the new in-memory broker was given the {count} stored records to continue from")
        try:
            own_names = own_host_names(front_host, front_port)
            front = HttpFront(backend, front_host, front_port, allowed_hosts=own_names).start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve the query front on {front_host}:{front_port}: {exc.strerror} "
                "(another `authtrail up`? use --front-port 0 for any free port)"
            ) from exc
        cleanup.append(front.stop)
        try:
            announce_endpoint(settings, front.analyst_url)  # holds the token: mode 0600
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write {endpoint_path(settings)}: {exc.strerror}"
            ) from exc
        cleanup.append(lambda: endpoint_path(settings).unlink(missing_ok=True))
        from authtrail.console.server import DEFAULT_LISTEN, open_console

        console, stop_console = open_console(
            settings, front.analyst_url,
            console_listen or os.environ.get("AUTHTRAIL_CONSOLE_LISTEN") or DEFAULT_LISTEN,
        )  # fmt: skip
        cleanup.append(stop_console)

        # Stop order (cleanup runs backwards): demo traffic, then the worker (which signs
        # its open batches as it stops), then the sink once it has stored all of that.
        sink_stop, draining = threading.Event(), threading.Event()
        idle_polls = [0]

        def stop_when_drained() -> None:  # called after each empty 0.2 s poll
            idle_polls[0] = idle_polls[0] + 1 if draining.is_set() else 0
            if idle_polls[0] >= 5:
                sink_stop.set()

        sink_thread = threading.Thread(
            target=sink.run, args=(sink_stop, stop_when_drained), name="sink", daemon=True
        )
        sink_thread.start()

        def stop_sink() -> None:
            draining.set()
            sink_thread.join(60)

        cleanup.append(stop_sink)
        worker = _Worker(settings, broker is not None, logs / "worker.log")
        worker.start()
        cleanup.append(worker.stop)
        if demo:
            demo_thread = threading.Thread(
                target=_demo_traffic, args=(settings, demo_rate, stop), name="demo", daemon=True
            )
            demo_thread.start()
            cleanup.append(lambda: demo_thread.join(30))
        from authtrail.ingest_http import serve_for_up

        ingest = serve_for_up(settings, ingest_listen)  # stopped before the worker
        if ingest is not None:
            cleanup.append(ingest[1])
        _banner(settings, front, console.url, demo, demo_rate, say)
        if verify_every > 0:
            verifier = PeriodicVerifier(settings, verify_every, logs / "verify.log", say)
            cleanup.append(verifier.start().stop)
            say(
                f"verify runs every {verify_every:g} s or more (the console's Integrity page "
                f"shows its report; log: {logs / 'verify.log'}; --verify-every 0: off)"
            )
        if retention_every > 0:
            _start_retention(settings, backend, retention_every, say, cleanup)
        if ingest is None:
            say("ingest-http: off (no token file; `authtrail ingest-token NAME --tenant T` "
                "creates one)")  # fmt: skip
        else:
            say(f"ingest-http (bearer tokens of the token file): {ingest[0].url}/v1/ingest/"
                "{events,keycloak,okta,auth0,cloudtrail}")  # fmt: skip
        last_status = time.monotonic()
        while not stop.wait(0.5):
            worker.keep_alive(say)
            if time.monotonic() - last_status >= _STATUS_SECONDS:
                last_status = time.monotonic()
                counters = sink.counters
                say(f"stored {counters.stored_records} records, {counters.stored_checkpoints} "
                    f"checkpoints, {counters.stored_rejected} rejected")  # fmt: skip
        say("stopping")
        return 0
    finally:
        stop.set()
        for step in reversed(cleanup):
            step()


def _start_retention(
    settings: Settings, backend: EmbeddedBackend, interval: float,
    say: Callable[[str], None], cleanup: list[Callable[[], Any]],
) -> None:  # fmt: skip
    """Prune tenants past their retention every ``interval`` seconds, in this process
    (stopped before the worker and the sink, which chain and store its statements)."""
    from authtrail.retention_schedule import RetentionSchedule, store_pass

    schedule = RetentionSchedule(store_pass(settings, backend), interval, say)
    cleanup.append(schedule.start().stop)
    policy = settings.privacy_policy_file
    which = (f"tenants with retention_days in {policy}" if policy is not None
             else "deletions `retain` recorded only (no AUTHTRAIL_PRIVACY_POLICY_FILE with "
             "retention_days)")  # fmt: skip
    say(f"retention runs every {interval:g} s for {which} (--retention-every 0: off)")


def _banner(
    settings: Settings,
    front: HttpFront,
    console_url: str,
    demo: bool,
    rate: float,
    say: Callable[[str], None],
) -> None:
    data_dir = settings.data_dir
    say(f"data in {data_dir} (ClickHouse: {data_dir / 'clickhouse'}, logs: {data_dir / 'logs'})")
    say(f"signed checkpoints published (append-only) to {settings.publication_dir}")
    say(f"ClickHouse HTTP front for analysts (read-only, user analyst): {front.url}")
    say(f"analyst token: {front.token}")
    say(f"  (new on every start; `authtrail sql`/`verify`/`status` read it from "
        f"{endpoint_path(settings)}, mode 0600)")  # fmt: skip
    say(f"  curl -u analyst:{front.token} '{front.url}?query=SELECT+count()+FROM+events'")
    say(f"  clickhouse_connect.get_client(host='{front.host}', port={front.port}, "
        f"username='analyst', password='{front.token}', compress=False)")  # fmt: skip
    say(f"web console (read-only): {console_url} — user analyst, password: the analyst token")
    say(f"send events to topic {settings.events_topic} at {settings.bootstrap_servers}")
    if demo:
        say(f"demo traffic: {rate:g} events/s over 5 tenants")
    say("in another terminal, from this directory:")
    say(f'  authtrail --data-dir {data_dir} sql "SELECT tenant_id, count() FROM events GROUP BY 1"')
    say(
        f"  authtrail --data-dir {data_dir} verify --published {settings.publication_dir} "
        f"--report-json {data_dir / 'verify-report.json'}   # the console shows the report"
    )
    if settings.cosigning_witnesses:
        from authtrail.witness_client import parse_cosigning_witness

        witnesses = [parse_cosigning_witness(item) for item in settings.cosigning_witnesses]
        say(f"checkpoints are cosigned by {len(witnesses)} witness(es) before publication: "
            + ", ".join(url for url, _ in witnesses))  # fmt: skip
        key_flags = " ".join(f"--witness-key {key_file}" for _, key_file in witnesses)
        say(f"  authtrail --data-dir {data_dir} verify --published {settings.publication_dir} "
            f"{key_flags} --witnesses {len(witnesses)}")  # fmt: skip
    say("  (an auditor pins the verifier key with --key and keeps --state FILE: README, "
        "Try to cheat)")  # fmt: skip
    say("Ctrl-C stops everything")
