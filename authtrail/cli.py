"""The ``authtrail`` command: one entry point, subcommands, reliable exit codes.

Exit codes: 0 ok, 1 integrity damage found, 2 usage or configuration error.
Every flag falls back to its ``AUTHTRAIL_*`` environment variable (see settings.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from authtrail import __version__
from authtrail.errors import AuthtrailError, ConfigurationError, VerificationError
from authtrail.settings import Settings

EXIT_OK = 0
EXIT_DAMAGE = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace, Settings], int]


def _cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.keys import write_key_pair

    directory = args.dir or settings.keys_dir
    private_path, public_path = write_key_pair(directory, args.name)
    print(f"signing key (keep secret, mode 0600): {private_path}")
    print(f"verifier key (share with auditors):   {public_path}")
    return EXIT_OK


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.keys import load_signer
    from authtrail.policy_file import load_policy_file
    from authtrail.topics import check_reachable, ensure_topics
    from stream.app import run_worker, topic_specs

    if not settings.bootstrap_servers:
        raise ConfigurationError("worker needs --bootstrap-servers (AUTHTRAIL_BOOTSTRAP_SERVERS)")
    signer = load_signer(settings.signing_key_path)
    policies = (
        load_policy_file(settings.lockout_policy_file) if settings.lockout_policy_file else None
    )
    check_reachable(settings.bootstrap_servers)
    ensure_topics(settings.bootstrap_servers, topic_specs(settings))
    run_worker(settings, signer, short_timeouts=args.short_timeouts, policies=policies)
    return EXIT_OK


def _cmd_sink(args: argparse.Namespace, settings: Settings) -> int:
    import logging
    import signal
    import threading

    from authtrail.topics import check_reachable, ensure_topics
    from sinks.service import build_sink, open_backend
    from stream.app import SHORT_CONSUMER_CONFIG, topic_specs

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
    try:
        config = SHORT_CONSUMER_CONFIG if args.short_timeouts else None
        build_sink(settings, backend, consumer_config=config).run(stop)
    finally:
        backend.close()
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from authtrail.keys import load_keyring
    from authtrail.progress import Progress
    from sinks.service import open_backend
    from sinks.verify_store import verify_store

    keyring = load_keyring(list(settings.verifier_key_paths))
    backend = open_backend(settings, read_only=True)
    progress = Progress("verifying tenants", enabled=False if args.json else None)
    try:
        results = list(
            verify_store(
                backend, keyring, settings.log_origin, tenant_id=args.tenant,
                progress=progress.update,
            )
        )  # fmt: skip
    finally:
        progress.close()
        backend.close()
    damaged = [result for result in results if result.damage]
    if args.json:
        print(json.dumps([result.__dict__ for result in results], indent=2))
    else:
        for result in results:
            verdict = (
                f"DAMAGED at seq {result.seq}: {result.damage}: {result.detail}"
                if result.damage
                else f"ok: {result.records} records, {result.checkpoints} checkpoints, "
                f"signed up to seq {result.signed_size}"
            )
            print(f"{result.tenant_id}: {verdict}")
        print(f"{len(results)} tenants verified, {len(damaged)} damaged", file=sys.stderr)
    return EXIT_DAMAGE if damaged else EXIT_OK


def _cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.output import write_table
    from sinks.service import open_backend

    backend = open_backend(settings, read_only=True)
    try:
        table = backend.query_arrow(args.query)
    finally:
        backend.close()
    write_table(table, args.format, sys.stdout)
    return EXIT_OK


def _cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.up import run_up

    return run_up(settings, demo=args.demo, demo_rate=args.rate, front_port=args.front_port)


def _cmd_loadgen(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from producers.loadgen import run_loadgen

    settings = _resolve_broker(settings, "loadgen")
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


def _resolve_broker(settings: Settings, command: str) -> Settings:
    """Kafka from the settings, else the broker of a running ``authtrail up``."""
    from sinks.service import running_broker

    if not settings.bootstrap_servers and (servers := running_broker(settings)):
        settings = settings.with_overrides({"bootstrap_servers": servers})
    if not settings.bootstrap_servers:
        raise ConfigurationError(
            f"{command} needs --bootstrap-servers or a running `authtrail up` on this data "
            "dir (a broker started just for it would lose everything when it exits)"
        )
    return settings


def _cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    import json
    import signal
    import threading

    from producers.sshd import run_ingest

    settings = _resolve_broker(settings, "ingest")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    summary = run_ingest(
        args.path,
        bootstrap_servers=settings.bootstrap_servers or "",
        topic=settings.events_topic,
        tenant_id=args.tenant,
        follow=args.follow,
        year=args.year,
        stop=stop.is_set,
    )
    counters = summary.counters
    report = {
        "path": summary.path,
        "lines": counters.lines,
        "events": counters.events,
        "parsed": dict(counters.parsed),
        "skipped": dict(counters.skipped),
        "sent": summary.sent,
        "acknowledged": summary.acknowledged,
        "failed": summary.failed,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{counters.lines} lines -> {counters.events} events; sent {summary.sent}, "
              f"acknowledged {summary.acknowledged}, failed {summary.failed}")  # fmt: skip
        for kind, count in sorted(counters.parsed.items()):
            print(f"  parsed  {kind}: {count}")
        for reason, count in sorted(counters.skipped.items()):
            print(f"  skipped {reason}: {count}")
    return EXIT_USAGE if summary.failed else EXIT_OK


_STATUS_TENANTS = """
SELECT e.tenant_id AS tenant_id, e.records AS records, e.last_seq AS last_seq,
       c.signed_size AS signed_up_to, c.last_checkpoint AS last_checkpoint,
       e.lockout_decisions AS lockout_decisions
FROM (SELECT tenant_id, count() AS records, max(seq) AS last_seq,
             countIf(service = 'authtrail-lockout') AS lockout_decisions
      FROM events GROUP BY tenant_id) AS e
LEFT JOIN (SELECT tenant_id, max(size) AS signed_size, max(time_micros) AS last_checkpoint
           FROM checkpoints GROUP BY tenant_id) AS c USING tenant_id
ORDER BY tenant_id"""
_STATUS_REJECTED = """
SELECT error_kind, count() AS rejected, max(rejected_at) AS last_rejected_at
FROM rejected GROUP BY error_kind ORDER BY rejected DESC"""


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from authtrail.output import rows, write_table
    from sinks.service import open_backend

    backend = open_backend(settings, read_only=True)
    try:
        tenants = backend.query_arrow(_STATUS_TENANTS)
        rejected = backend.query_arrow(_STATUS_REJECTED)
    finally:
        backend.close()
    if args.json:
        print(json.dumps({"tenants": rows(tenants), "rejected": rows(rejected)}, default=str))
        return EXIT_OK
    print("tenants:")
    write_table(tenants, "table", sys.stdout)
    print("\nrejected input (dead letters), by kind:")
    write_table(rejected, "table", sys.stdout)
    return EXIT_OK


def _add_service_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers (AUTHTRAIL_BOOTSTRAP_SERVERS)"
    )
    parser.add_argument(
        "--short-timeouts",
        action="store_true",
        help="short consumer-group timeouts (for the local test broker; not for production)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authtrail",
        description="Tamper-evident audit pipeline for authentication events.",
        epilog="Exit codes: 0 ok, 1 integrity damage found, 2 usage or configuration error. "
        "Every option can also be set as AUTHTRAIL_<OPTION> in the environment.",
    )
    parser.add_argument("--version", action="version", version=f"authtrail {__version__}")
    parser.add_argument(
        "--data-dir", type=Path, help="where embedded data and keys live (AUTHTRAIL_DATA_DIR)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    keygen = commands.add_parser(
        "keygen",
        help="create an Ed25519 checkpoint signing key and its verifier key",
        description="Write NAME.key (signer, mode 0600, never overwritten) and NAME.pub "
        "(verifier key in C2SP signed-note format) into DIR.",
    )
    keygen.add_argument("--name", default="authtrail", help="key name (default: authtrail)")
    keygen.add_argument("--dir", type=Path, help="output directory (default: DATA_DIR/keys)")
    keygen.set_defaults(handler=_cmd_keygen)

    up = commands.add_parser(
        "up",
        help="run everything on this machine: broker, worker, sink, store (+ demo traffic)",
        description="Start the local broker (unless --bootstrap-servers), the embedded "
        "ClickHouse store with an HTTP front for queries, a sequencer worker and the sink. "
        "Ctrl-C stops everything cleanly. Data lives in DATA_DIR.",
    )
    up.add_argument("--bootstrap-servers", help="use this Kafka instead of a local broker")
    up.add_argument("--demo", action="store_true", help="send demo traffic")
    up.add_argument("--rate", type=float, default=200.0, help="demo events per second")
    up.add_argument(
        "--front-port", type=int, default=8124, help="HTTP front port (0: any free port)"
    )
    up.set_defaults(handler=_cmd_up)

    worker = commands.add_parser(
        "worker",
        help="run the Faust sequencer (chains, Merkle batches, signed checkpoints)",
        description="Run one sequencer worker. Start more for more throughput: they share "
        "the events topic's partitions in one consumer group and continue each other's "
        "chains after a crash or rebalance.",
    )
    _add_service_flags(worker)
    worker.set_defaults(handler=_cmd_worker)

    sink = commands.add_parser(
        "sink",
        help="store chained records, checkpoints and rejects in ClickHouse",
        description="Consume the sequencer's output topics into append-only ClickHouse "
        "tables (embedded chdb in DATA_DIR by default, or --clickhouse-url).",
    )
    _add_service_flags(sink)
    sink.add_argument(
        "--clickhouse-url", help="http://user:pass@host:8123/db (AUTHTRAIL_CLICKHOUSE_URL)"
    )
    sink.set_defaults(handler=_cmd_sink)

    loadgen = commands.add_parser(
        "loadgen",
        help="send realistic multi-tenant auth traffic (with brute-force bursts) to Kafka",
        description="Generate logins, failures, MFA, token and password events for several "
        "tenants and services, paced at --rate, until --count events or --duration seconds "
        "(or Ctrl-C). Prints sent / acknowledged / failed and the rate.",
    )
    loadgen.add_argument("--bootstrap-servers", help="Kafka (AUTHTRAIL_BOOTSTRAP_SERVERS)")
    loadgen.add_argument("--rate", type=float, default=1000.0, help="events/s (0: unpaced)")
    loadgen.add_argument("--count", type=int, help="stop after this many events")
    loadgen.add_argument("--duration", type=float, help="stop after this many seconds")
    loadgen.add_argument("--tenants", type=int, default=5)
    loadgen.add_argument("--users", type=int, default=50, help="users per tenant")
    loadgen.add_argument("--failure-share", type=float, default=0.1)
    loadgen.add_argument(
        "--burst-every", type=int, default=1000, help="a brute-force burst every N events (0: off)"
    )
    loadgen.add_argument("--seed", type=int, default=0)
    loadgen.add_argument("--json", action="store_true", help="print the summary as JSON")
    loadgen.set_defaults(handler=_cmd_loadgen)

    ingest = commands.add_parser(
        "ingest",
        help="turn an existing log into auth events (sshd: OpenSSH / Linux auth logs)",
        description="Read an OpenSSH or Linux auth log (syslog lines) and send one auth "
        "event per authentication-relevant line: failed/accepted password or publickey, "
        "invalid user, disconnects, PAM failures. The original line is kept in "
        "attributes['raw']. Re-ingesting a file produces the same event ids.",
    )
    ingest.add_argument("source", choices=("sshd",), help="log format")
    ingest.add_argument("path", help="log file")
    ingest.add_argument("--tenant", required=True, help="tenant the events belong to")
    ingest.add_argument("--follow", action="store_true", help="keep reading as the file grows")
    ingest.add_argument(
        "--year", type=int, help="year of the first line (syslog has none; default: from mtime)"
    )
    ingest.add_argument("--bootstrap-servers", help="Kafka (AUTHTRAIL_BOOTSTRAP_SERVERS)")
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON")
    ingest.set_defaults(handler=_cmd_ingest)

    status = commands.add_parser(
        "status",
        help="what is stored: per tenant records, signed size, lockouts; rejected input by kind",
        description="Summarise the store: per tenant the records, last seq, how far it is "
        "signed, the newest checkpoint and lockout decisions; and rejected input (dead "
        "letters) counted by kind.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--clickhouse-url", help="http://user:pass@host:8123/db (AUTHTRAIL_CLICKHOUSE_URL)"
    )
    status.set_defaults(handler=_cmd_status)

    sql = commands.add_parser(
        "sql",
        help="run a read-only SQL query against the store",
        description="Run one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN). "
        "While `authtrail up` runs, this goes through its HTTP front. Tables: events, "
        "checkpoints, rejected. Binary hashes are printed as hex.",
    )
    sql.add_argument("query", help='e.g. "SELECT tenant_id, count() FROM events GROUP BY 1"')
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument(
        "--clickhouse-url", help="http://user:pass@host:8123/db (AUTHTRAIL_CLICKHOUSE_URL)"
    )
    sql.set_defaults(handler=_cmd_sql)

    verify = commands.add_parser(
        "verify",
        help="prove the stored log intact: chains, Merkle roots, checkpoint signatures",
        description="Recompute every chain and batch root from what is stored in ClickHouse "
        "and check every checkpoint signature with the verifier keys. Exit 0 when intact, "
        "1 when damage is found (the first bad seq per tenant is named), 2 on usage errors.",
    )
    verify.add_argument("--tenant", help="verify only this tenant")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.add_argument(
        "--clickhouse-url", help="http://user:pass@host:8123/db (AUTHTRAIL_CLICKHOUSE_URL)"
    )
    verify.set_defaults(handler=_cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # clickhouse-connect logs its own copy of an error we report in one line already.
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
    try:
        overrides = {
            name: getattr(args, name, None)
            for name in ("data_dir", "bootstrap_servers", "clickhouse_url")
        }
        settings = Settings.from_env().with_overrides(overrides)
        handler: Command = args.handler
        return handler(args, settings)
    except VerificationError as exc:
        print(f"authtrail: integrity failure: {exc}", file=sys.stderr)
        return EXIT_DAMAGE
    except AuthtrailError as exc:
        print(f"authtrail: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
