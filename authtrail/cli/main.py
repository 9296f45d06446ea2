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
from authtrail.cli import commands as handlers
from authtrail.cli.commands import EXIT_DAMAGE, EXIT_USAGE
from authtrail.errors import AuthtrailError, VerificationError
from authtrail.producers.sdk.envelope import DEFAULT_ENVELOPE_BYTES
from authtrail.settings import Settings

Command = Callable[[argparse.Namespace, Settings], int]


def _add_store_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clickhouse-url", help="http://user:pass@host:8123/db (AUTHTRAIL_CLICKHOUSE_URL)"
    )


def _add_service_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers (AUTHTRAIL_BOOTSTRAP_SERVERS)"
    )
    parser.add_argument(
        "--short-timeouts",
        action="store_true",
        help="short consumer-group timeouts (for the local test broker; not for production)",
    )


def _add_witness_submission_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cosigning-witness", dest="cosigning_witnesses", action="append",
        metavar="URL=KEYFILE",
        help="a C2SP tlog-witness asked to cosign each tenant's newest checkpoint before it "
        "is published; KEYFILE holds its verifier key (repeatable; "
        "AUTHTRAIL_COSIGNING_WITNESSES, comma-separated)",
    )  # fmt: skip


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
    keygen.set_defaults(handler=handlers.keygen)

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
    up.add_argument(
        "--front-host", default="127.0.0.1",
        help="address the read-only HTTP front listens on (default 127.0.0.1; it speaks "
        "plain HTTP: keep it on loopback or a trusted network)",
    )  # fmt: skip
    _add_witness_submission_flag(up)
    up.add_argument(
        "--ingest-listen", metavar="HOST:PORT",
        help="where ingest-http listens when a token file exists (default 127.0.0.1:7381; "
        "AUTHTRAIL_INGEST_LISTEN)",
    )  # fmt: skip
    up.add_argument(
        "--console-listen", metavar="HOST:PORT",
        help="where the web console listens (default 127.0.0.1:8125, port 0: any free "
        "port; AUTHTRAIL_CONSOLE_LISTEN); log in as analyst with the printed token",
    )  # fmt: skip
    up.add_argument(
        "--verify-every", type=float, default=60.0, metavar="SECONDS",
        help="run `authtrail verify` on the store this often (longer on a large store), "
        "writing DATA_DIR/verify-report.json for the console's Integrity page (default 60; "
        "0: off)",
    )  # fmt: skip
    up.add_argument(
        "--retention-every", type=float, metavar="SECONDS",
        help="prune the tenants past their retention_days (privacy policy file) this often: "
        "a signed retention statement, then the deletion (default 3600, the first run after "
        "at most 60 s; 0: off; AUTHTRAIL_RETENTION_EVERY)",
    )  # fmt: skip
    up.set_defaults(handler=handlers.up)

    worker = commands.add_parser(
        "worker",
        help="run the Faust sequencer (chains, Merkle batches, signed checkpoints)",
        description="Run one sequencer worker. Start more for more throughput: they share "
        "the events topic's partitions in one consumer group and continue each other's "
        "chains after a crash or rebalance.",
    )
    _add_service_flags(worker)
    worker.set_defaults(handler=handlers.worker)

    sink = commands.add_parser(
        "sink",
        help="store chained records, checkpoints and rejects in ClickHouse",
        description="Consume the sequencer's output topics into append-only ClickHouse "
        "tables (embedded chdb in DATA_DIR by default, or --clickhouse-url).",
    )
    _add_service_flags(sink)
    _add_store_flag(sink)
    _add_witness_submission_flag(sink)
    sink.set_defaults(handler=handlers.sink)

    loadgen = commands.add_parser(
        "loadgen",
        help="send realistic multi-tenant auth traffic (with brute-force bursts) to Kafka",
        description="Generate logins, failures, MFA, token and password events for several "
        "tenants and services, paced at --rate, until --count events or --duration seconds "
        "(or Ctrl-C). Prints sent / acknowledged / failed and the rate.",
    )
    loadgen.add_argument("--bootstrap-servers", help="Kafka (AUTHTRAIL_BOOTSTRAP_SERVERS)")
    loadgen.add_argument("--rate", type=float, default=1000.0, help="events/s (0: unpaced)")
    loadgen.add_argument(
        "--envelope-bytes", type=int, default=DEFAULT_ENVELOPE_BYTES,
        help="pack events of one partition into messages of up to N bytes (0: one each)",
    )  # fmt: skip
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
    loadgen.set_defaults(handler=handlers.loadgen)

    ingest = commands.add_parser(
        "ingest",
        help="turn existing logs into auth events: sshd, keycloak, okta, auth0, cloudtrail",
        description="Read a log or an export and send one auth event per authentication "
        "record. sshd: OpenSSH / Linux auth logs (syslog lines; the line is kept in "
        "attributes['raw']). keycloak, okta, auth0, cloudtrail: JSON lines, JSON arrays or "
        "concatenated JSON, gzip too (Keycloak event / JSON log records, Okta System Log "
        "events or event hook deliveries, Auth0 tenant logs, CloudTrail log files with "
        "Records). Re-ingesting the same input produces the same event ids. Events the "
        "worker will refuse are announced on stderr before sending.",
    )
    ingest.add_argument(
        "source", choices=("sshd", "keycloak", "okta", "auth0", "cloudtrail"), help="format"
    )
    ingest.add_argument("path", help="log file, or - for standard input")
    ingest.add_argument("--tenant", required=True, help="tenant the events belong to")
    ingest.add_argument(
        "--follow", action="store_true",
        help="keep reading as the file grows (JSON sources: one value per line; not cloudtrail)",
    )  # fmt: skip
    ingest.add_argument(
        "--year", type=int,
        help="year of the first line (syslog has none; default: the latest year that puts "
        "no line after the file's last write or now)",
    )  # fmt: skip
    ingest.add_argument(
        "--tz", help="zone of syslog times without an offset, e.g. Europe/Berlin (default UTC)"
    )
    ingest.add_argument("--bootstrap-servers", help="Kafka (AUTHTRAIL_BOOTSTRAP_SERVERS)")
    ingest.add_argument(
        "--seal", action="store_true",
        help="seal the privacy policy's fields before sending (AUTHTRAIL_PRIVACY_POLICY_FILE "
        "and the worker's key store DATA_DIR/privacy; docs/PRIVACY.md)",
    )  # fmt: skip
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON")
    ingest.set_defaults(handler=handlers.ingest)

    ingest_http = commands.add_parser(
        "ingest-http",
        help="receive auth events and provider webhooks over HTTP (token per source)",
        description="Serve POST /v1/ingest/{events,keycloak,okta,auth0,cloudtrail} "
        "(Authorization: Bearer TOKEN from the token file), GET /v1/ingest/okta for Okta's "
        "verification, GET /openapi.json. 202 only after Kafka acknowledged (or the spool "
        "took the events); 400 with the reason; 413/429 with limits. Plain HTTP on "
        "127.0.0.1:7381 by default: use a TLS proxy for anything else.",
    )
    ingest_http.add_argument(
        "--tokens", type=Path, metavar="FILE",
        help="token file (AUTHTRAIL_INGEST_TOKENS; default DATA_DIR/ingest-tokens)",
    )  # fmt: skip
    ingest_http.add_argument(
        "--listen", metavar="HOST:PORT", help="default 127.0.0.1:7381 (AUTHTRAIL_INGEST_LISTEN)"
    )
    ingest_http.add_argument("--bootstrap-servers", help="Kafka (AUTHTRAIL_BOOTSTRAP_SERVERS)")
    ingest_http.add_argument(
        "--spool-dir", type=Path, metavar="DIR",
        help="durable spool: 202 once events are on disk there, delivered when Kafka is back",
    )  # fmt: skip
    ingest_http.add_argument(
        "--seal", action="store_true",
        help="seal the privacy policy's fields before sending (AUTHTRAIL_PRIVACY_POLICY_FILE "
        "and the worker's key store DATA_DIR/privacy; docs/PRIVACY.md)",
    )  # fmt: skip
    ingest_http.add_argument("--max-body-bytes", type=int, default=1 << 20)
    ingest_http.add_argument("--rate", type=float, default=1000.0, help="events/s per token")
    ingest_http.add_argument("--burst", type=int, default=5000, help="events at once per token")
    ingest_http.add_argument(
        "--openapi", action="store_true", help="print the OpenAPI 3.1 description and exit"
    )
    ingest_http.set_defaults(handler=handlers.ingest_http)

    ingest_token = commands.add_parser(
        "ingest-token",
        help="create a token for ingest-http: prints it once, stores only its SHA-256",
        description="Append 'NAME TENANT SOURCES SHA256' to the token file (mode 0600) and "
        "print the new token. The token writes TENANT's events only, through SOURCES.",
    )
    ingest_token.add_argument("name", help="who uses it, e.g. okta-prod (one word)")
    ingest_token.add_argument("--tenant", required=True)
    ingest_token.add_argument(
        "--sources", default="*",
        help="comma-separated: events,keycloak,okta,auth0,cloudtrail (default * = all)",
    )  # fmt: skip
    ingest_token.add_argument("--tokens", type=Path, metavar="FILE", help="as for ingest-http")
    ingest_token.set_defaults(handler=handlers.ingest_token)

    status = commands.add_parser(
        "status",
        help="pipeline status: per chained log the unsigned tail and checkpoint age; "
        "rejected input by kind; consumer lag per partition",
        description="Summarise the store and the pipeline: per chained log (each tenant and "
        "each partition's rejection log; the chain_status view of docs/QUERIES.md) the "
        "records, last seq, checkpoints, how far it is signed, the newest checkpoint and its "
        "age, the unsigned tail and since when it waits, and lockout decisions; rejected "
        "input (dead letters) counted by kind; and the lag of the worker's and the sink's "
        "consumer groups per partition (end offset - committed offset), when Kafka is known "
        "(--bootstrap-servers, or the broker of a running `authtrail up`). What the store "
        "and Kafka say, not what verify proved. Exit 0 (lag unavailable is reported, not "
        "an error), 2 when the store cannot be read.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--bootstrap-servers", help="Kafka, for the lag (AUTHTRAIL_BOOTSTRAP_SERVERS)"
    )
    _add_store_flag(status)
    status.set_defaults(handler=handlers.status)

    init_db = commands.add_parser(
        "init-db",
        help="create the database, tables, views and the writer/analyst/auditor roles and users",
        description="With --clickhouse-url (an administrator's credential): create the "
        "database, every missing table and view, the roles authtrail_writer (INSERT and "
        "SELECT on the tables, nothing else), authtrail_analyst (SELECT on the database) and "
        "authtrail_auditor (SELECT on the tables verify reads), and the users writer, "
        "analyst, auditor whose password is set in AUTHTRAIL_WRITER_PASSWORD, "
        "AUTHTRAIL_ANALYST_PASSWORD, AUTHTRAIL_AUDITOR_PASSWORD (only a salted hash is "
        "sent). Idempotent: run it again to reset the grants or change a password. "
        "Without a URL: the embedded store's tables and views (chdb has no users).",
    )
    init_db.add_argument(
        "--print-sql", action="store_true",
        help="print the statements for a server instead of running them (connects nowhere)",
    )  # fmt: skip
    _add_store_flag(init_db)
    init_db.set_defaults(handler=handlers.init_db)

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
        "--reveal", action="store_true",
        help="open sealed personal fields with the key store DATA_DIR/privacy (select "
        "tenant_id, event_id and the fields by name; erased subjects read [erased])",
    )  # fmt: skip
    _add_store_flag(sql)
    sql.set_defaults(handler=handlers.sql)

    verify = commands.add_parser(
        "verify",
        help="prove the stored log intact: chains, Merkle roots, checkpoint signatures",
        description="Recompute every chain and batch root from what is stored in ClickHouse "
        "and check every checkpoint signature with the verifier keys. Exit 0 when intact, "
        "1 when damage is found (the first bad seq per tenant is named), 2 on usage errors.",
    )
    verify.add_argument("--tenant", help="verify only this tenant")
    verify.add_argument(
        "--key", dest="verifier_keys", action="append", type=Path, metavar="FILE",
        help="trusted verifier key or keyring file (repeatable; after a rotation the keyring "
        "with old and new keys; AUTHTRAIL_VERIFIER_KEYS). Without it the data dir's own "
        "keyring or .pub is used, with a warning",
    )  # fmt: skip
    verify.add_argument(
        "--state", type=Path, metavar="FILE",
        help="auditor state: remembers the newest verified checkpoint of every tenant; the "
        "next run fails if the store was truncated, rolled back, forked or lost a tenant",
    )  # fmt: skip
    verify.add_argument(
        "--published", type=Path, metavar="DIR",
        help="the publication directory the sink writes checkpoints to (outside the store): "
        "the store must still hold every tenant and size published there",
    )  # fmt: skip
    from authtrail.cli.witness_flags import add_witness_flags

    add_witness_flags(verify, "each tenant's newest checkpoint published in --published DIR")
    verify.add_argument(
        "--unsigned-grace", type=float, default=300.0, metavar="SECONDS",
        help="records the sequencer has not signed this long after they were stored (plus "
        "one batch interval) are damage, not a pending tail (default 300)",
    )  # fmt: skip
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.add_argument(
        "--report-json", type=Path, metavar="FILE",
        help="also write the report (as --json prints it, plus verified_at and exit_code) "
        "to FILE; the web console shows it (`up` and `console` read DATA_DIR/"
        "verify-report.json)",
    )  # fmt: skip
    _add_store_flag(verify)
    verify.set_defaults(handler=handlers.verify)

    witness = commands.add_parser(
        "witness",
        help="run a C2SP tlog-witness: cosign checkpoints only if consistent with those seen",
        description="Serve POST /add-checkpoint (c2sp.org/tlog-witness). A checkpoint signed "
        "by a trusted log key is cosigned (c2sp.org/tlog-cosignature) only if a consistency "
        "proof shows it extends the newest one this witness cosigned for its origin; "
        "rollbacks and forks are refused. Prints its URL and its verifier key, then runs "
        "until Ctrl-C. Options fall back to AUTHTRAIL_WITNESS_KEY, _STATE_DIR, _LOG_KEYS "
        "(comma-separated), _LISTEN.",
    )
    witness.add_argument(
        "--key", type=Path, metavar="FILE",
        help="the witness's signer key (authtrail keygen --name WITNESS_NAME)",
    )  # fmt: skip
    witness.add_argument(
        "--state-dir", type=Path, metavar="DIR",
        help="where the newest cosigned checkpoint of every origin is kept",
    )  # fmt: skip
    witness.add_argument(
        "--log-key", dest="log_keys", action="append", metavar="ORIGIN_OR_PREFIX=PUBFILE",
        help="trust the log key(s) in PUBFILE for ORIGIN; a prefix ending in '/' "
        "(authtrail.local/) covers each tenant origin below it; repeatable",
    )  # fmt: skip
    witness.add_argument(
        "--listen", metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:7380; port 0: any free port)",
    )  # fmt: skip
    witness.set_defaults(handler=handlers.witness)

    console = commands.add_parser(
        "console",
        help="serve the read-only web console: search, events and proofs, lockouts, charts",
        description="Serve the web console against a ClickHouse server (--clickhouse-url, "
        "a read-only user) or a running `authtrail up` of DATA_DIR. Browsers log in with "
        "the user and password of that URL (HTTP basic). Reads only; GET only.",
    )
    console.add_argument(
        "--listen", metavar="HOST:PORT",
        help="default 127.0.0.1:8125 (AUTHTRAIL_CONSOLE_LISTEN); plain HTTP: a TLS proxy in "
        "front for anything but loopback",
    )  # fmt: skip
    console.add_argument(
        "--verify-report", type=Path, metavar="FILE",
        help="the report `verify --report-json FILE` wrote (default DATA_DIR/verify-report.json)",
    )  # fmt: skip
    console.add_argument(
        "--bootstrap-servers", help="Kafka, for the lag chart (AUTHTRAIL_BOOTSTRAP_SERVERS)"
    )
    _add_store_flag(console)
    console.set_defaults(handler=_run_console)

    from authtrail.cli.prove import add_proof_parsers  # prove, verify-proof

    add_proof_parsers(commands)
    from authtrail.cli.tiles import add_tiles_parser  # export-tiles

    add_tiles_parser(commands)
    from authtrail.cli.keys import add_keys_parsers  # keys rotate, keys retire

    add_keys_parsers(commands)
    from authtrail.cli.privacy import add_privacy_parsers  # erase, hash

    add_privacy_parsers(commands)
    from authtrail.cli.retention import add_retention_parser  # retain

    add_retention_parser(commands)
    return parser


def _run_console(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.console.server import run_console

    return run_console(args, settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # clickhouse-connect logs its own copy of an error we report in one line already.
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
    try:
        overrides = {
            name: getattr(args, name, None)
            for name in (
                "data_dir",
                "bootstrap_servers",
                "clickhouse_url",
                "verifier_keys",
                "cosigning_witnesses",
            )
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
