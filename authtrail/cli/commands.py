"""The CLI's subcommands: each turns parsed arguments and settings into an exit code.

Heavy imports (Faust, Kafka, ClickHouse) happen inside each command, so ``authtrail
--help`` and ``keygen`` start fast and need none of them.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import tzinfo
from typing import Any

from authtrail.errors import ConfigurationError
from authtrail.events_topic import resolve_broker
from authtrail.settings import Settings

EXIT_OK = 0
EXIT_DAMAGE = 1
EXIT_USAGE = 2


def keygen(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.keys import write_key_pair

    directory = args.dir or settings.keys_dir
    private_path, public_path = write_key_pair(directory, args.name)
    print(f"signing key (keep secret, mode 0600): {private_path}")
    print(f"verifier key (share with auditors):   {public_path}")
    return EXIT_OK


def worker(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.keys import load_keyring, load_signer
    from authtrail.policy_file import load_policy_file
    from authtrail.stream.worker.app import run_worker, topic_specs
    from authtrail.topics import check_reachable, ensure_topics

    if not settings.bootstrap_servers:
        raise ConfigurationError("worker needs --bootstrap-servers (AUTHTRAIL_BOOTSTRAP_SERVERS)")
    signer = load_signer(settings.signing_key_path)
    handover = load_signer(settings.handover_key) if settings.handover_key else None
    # Recovery re-opens checkpoints every earlier key signed: the keyring names them.
    keyring = settings.keyring_path
    trusted = list(load_keyring([keyring]).values()) if keyring.exists() else []
    policies = (
        load_policy_file(settings.lockout_policy_file) if settings.lockout_policy_file else None
    )
    check_reachable(settings.bootstrap_servers)
    ensure_topics(settings.bootstrap_servers, topic_specs(settings))
    run_worker(
        settings, signer, short_timeouts=args.short_timeouts, policies=policies,
        handover=handover, trusted=trusted,
    )  # fmt: skip
    return EXIT_OK


def sink(args: argparse.Namespace, settings: Settings) -> int:
    import logging
    import signal
    import threading

    from authtrail.lag import pipeline_groups
    from authtrail.metrics import (
        CountersCollector,
        LagCollector,
        MetricsServer,
        SinkMetrics,
        new_registry,
    )
    from authtrail.sinks.service import build_sink, open_backend
    from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG, topic_specs
    from authtrail.topics import check_reachable, ensure_topics

    if not settings.bootstrap_servers:
        raise ConfigurationError("sink needs --bootstrap-servers (AUTHTRAIL_BOOTSTRAP_SERVERS)")
    check_reachable(settings.bootstrap_servers)
    ensure_topics(settings.bootstrap_servers, topic_specs(settings))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    backend = open_backend(settings)
    metrics = None
    try:
        config = SHORT_CONSUMER_CONFIG if args.short_timeouts else None
        sink = build_sink(settings, backend, consumer_config=config)
        if settings.sink_metrics_port:
            group = f"{settings.consumer_group}-sink"
            registry = new_registry(
                CountersCollector("authtrail_sink", sink.counters),
                LagCollector(settings.bootstrap_servers, {group: pipeline_groups(settings)[group]}),
            )
            sink.observer = SinkMetrics(registry)
            metrics = MetricsServer(settings.sink_metrics_port, registry)
        sink.run(stop)
    finally:
        if metrics is not None:
            metrics.close()
        backend.close()
    return EXIT_OK


def verify(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.cli.verify import run_verify

    return run_verify(args, settings)


def sql(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.cli.output import write_table
    from authtrail.sinks.service import open_backend

    backend = open_backend(settings, read_only=True)
    try:
        table = backend.query_arrow(args.query)
    finally:
        backend.close()
    if args.reveal:
        from authtrail.privacy import reveal_table
        from authtrail.privacy_keys import DirectoryKeyStore

        table = reveal_table(table, DirectoryKeyStore(settings.privacy_dir))
    write_table(table, args.format, sys.stdout)
    return EXIT_OK


def up(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.cli.up import run_up

    return run_up(
        settings, demo=args.demo, demo_rate=args.rate, front_port=args.front_port,
        front_host=args.front_host, ingest_listen=args.ingest_listen,
        console_listen=args.console_listen, verify_every=args.verify_every,
        retention_every=_retention_every(args.retention_every),
    )  # fmt: skip


def _retention_every(flag: float | None) -> float:
    """``up --retention-every``, else AUTHTRAIL_RETENTION_EVERY, else an hour."""
    from authtrail.retention_schedule import DEFAULT_INTERVAL_SECONDS

    text = os.environ.get("AUTHTRAIL_RETENTION_EVERY")
    try:
        seconds = flag if flag is not None else float(text or DEFAULT_INTERVAL_SECONDS)
    except ValueError as exc:
        raise ConfigurationError(
            f"AUTHTRAIL_RETENTION_EVERY: not a number of seconds: {text!r}"
        ) from exc
    if seconds < 0:
        raise ConfigurationError(f"--retention-every must be >= 0 seconds, got {seconds:g}")
    return seconds


def loadgen(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from authtrail.producers.loadgen import run_loadgen

    settings = resolve_broker(settings, "loadgen")
    summary = run_loadgen(
        settings.bootstrap_servers or "",
        settings.events_topic,
        rate=args.rate,
        count=args.count,
        duration=args.duration,
        tenants=args.tenants,
        users=args.users,
        failure_share=args.failure_share,
        burst_every=args.burst_every,
        seed=args.seed,
        partitions=settings.partitions,
        progress=None if args.json else True,
        envelope_bytes=args.envelope_bytes,
    )
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(
            f"sent {summary.sent}, acknowledged {summary.acknowledged}, failed {summary.failed} "
            f"in {summary.seconds:.1f} s ({summary.rate:,.0f} events/s)"
            + (f"; {summary.error}" if summary.error else "")
        )
    return EXIT_USAGE if summary.failed or summary.error else EXIT_OK


def ingest(args: argparse.Namespace, settings: Settings) -> int:
    import json
    import signal
    import threading

    from authtrail.producers.idp_files import run_idp_ingest
    from authtrail.producers.sshd import run_ingest

    if args.source != "sshd" and (args.year is not None or args.tz):
        raise ConfigurationError("--year and --tz apply to sshd logs only")
    tz = _zone(args.tz)
    settings = resolve_broker(settings, "ingest")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    common: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers or "",
        "topic": settings.events_topic,
        "tenant_id": args.tenant,
        "follow": args.follow,
        "stop": stop.is_set,
        "warn": lambda text: print(text, file=sys.stderr, flush=True),
        "sealing": _sealing(args.seal, settings),
    }
    if args.source == "sshd":
        summary = run_ingest(args.path, year=args.year, tz=tz, **common)
    else:
        summary = run_idp_ingest(args.source, args.path, **common)
    report = summary.as_dict()
    if args.json:
        print(json.dumps(report))
    else:
        unit = "lines" if args.source == "sshd" else "records"
        print(f"{report['lines']} {unit} -> {report['events']} events; sent {summary.sent}, "
              f"acknowledged {summary.acknowledged}, failed {summary.failed}")  # fmt: skip
        for kind, count in sorted(summary.counters.parsed.items()):
            print(f"  parsed  {kind}: {count}")
        for reason, count in sorted(summary.counters.skipped.items()):
            cause = summary.first_errors.get(reason)
            print(f"  skipped {reason}: {count}" + (f" (first: {cause})" if cause else ""))
        for kind, count in sorted(summary.refused.items()):
            print(f"  refused by the worker ({kind}): {count}")
    return EXIT_USAGE if summary.failed else EXIT_OK


def _sealing(wanted: bool, settings: Settings) -> Any:
    """``--seal``: the worker's policy and key store (authtrail.privacy.source_sealing)."""
    if not wanted:
        return None
    from authtrail.privacy import source_sealing

    return source_sealing(settings)


def ingest_http(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.ingest_http import run_ingest_http

    if args.openapi:
        import json

        from authtrail.ingest_openapi import openapi_document

        print(json.dumps(openapi_document(), indent=2))
        return EXIT_OK
    return run_ingest_http(args, resolve_broker(settings, "ingest-http"))


def ingest_token(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.ingest_http import run_ingest_token

    return run_ingest_token(args, settings)


def _zone(name: str | None) -> tzinfo:
    """The zone named ``name`` (IANA, e.g. Europe/Berlin), UTC when None."""
    from datetime import UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"--tz {name!r} is not a known time zone") from exc


def init_db(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.cli.init_db import run_init_db

    return run_init_db(args, settings)


def status(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.cli.status import run_status

    return run_status(args, settings)


def witness(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.witness import run_witness

    return run_witness(args)
