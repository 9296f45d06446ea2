"""``authtrail retain``: delete a tenant's records past retention, recorded in its own log.

docs/PRIVACY.md ("Retention") explains the operation; :mod:`authtrail.retention` does it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from authtrail.errors import ConfigurationError
from authtrail.settings import Settings

EXIT_OK = 0
_DAY_MICROS = 86_400 * 1_000_000


def add_retention_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``retain`` to ``commands`` (subparsers)."""
    retain = commands.add_parser(
        "retain",
        help="delete a tenant's oldest records under a signed retention statement",
        description="Sign a retention statement (TENANT's records before SEQ, or older than "
        "DAYS, may go; the cut is rounded down to a multiple of 256 so that stored tiles stand "
        "in for them), send it to the events topic for the worker to chain, then delete those "
        "records from the store. Exit 0 when done or waiting for a next run, 1 when the tenant "
        "does not verify (nothing is pruned), 2 on usage or store errors. Checkpoints "
        "and tiles stay: retained records and checkpoints keep verifying and proving, and "
        "`verify` reports the range as pruned. Repeat the same command to finish an "
        "interrupted run; while `authtrail up` owns the embedded store, stop it and run again "
        "to delete. Needs the signing key, and for the deletion a store connection that may "
        "mutate events (not the writer, analyst or auditor role). See docs/PRIVACY.md.",
    )
    retain.add_argument("--tenant", required=True, help="the tenant id")
    which = retain.add_mutually_exclusive_group()
    which.add_argument("--before", type=int, metavar="SEQ", help="delete records before SEQ")
    which.add_argument(
        "--older-than", type=int, metavar="DAYS",
        help="delete the records before the first one that occurred within DAYS days "
        "(default: the tenant's retention_days in the privacy policy file)",
    )  # fmt: skip
    retain.add_argument(
        "--key", dest="verifier_keys", action="append", type=Path, metavar="FILE",
        help="trusted verifier key or keyring file (repeatable; AUTHTRAIL_VERIFIER_KEYS)",
    )  # fmt: skip
    retain.add_argument(
        "--wait", type=float, default=60.0, metavar="SECONDS",
        help="how long to wait for the worker to chain the statement (default 60)",
    )  # fmt: skip
    retain.add_argument("--json", action="store_true", help="machine-readable output")
    retain.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers (AUTHTRAIL_BOOTSTRAP_SERVERS)"
    )
    retain.add_argument(
        "--clickhouse-url", help="http://user:pass@host:8123/db (AUTHTRAIL_CLICKHOUSE_URL)"
    )
    retain.set_defaults(handler=retain_command)


def _cut(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.retention import retention_days
    from authtrail.sinks.retention_store import first_seq_since
    from authtrail.sinks.service import open_backend
    from authtrail.stream.core.retention import retention_cut

    if args.before is not None:
        return retention_cut(args.before)
    days = args.older_than
    if days is None:
        days = retention_days(settings.privacy_policy_file, args.tenant)
        if days is None:
            raise ConfigurationError(
                f"no --before or --older-than, and no retention_days for {args.tenant!r} in "
                "the privacy policy file (AUTHTRAIL_PRIVACY_POLICY_FILE)"
            )
    if days < 1:
        raise ConfigurationError(f"--older-than must be at least 1 day, got {days}")
    since = time.time_ns() // 1000 - days * _DAY_MICROS
    backend = open_backend(settings, read_only=True)
    try:
        return retention_cut(first_seq_since(backend, args.tenant, since))
    finally:
        backend.close()


def retain_command(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.cli.verify import _trusted_keys
    from authtrail.retention import retain

    cut = _cut(args, settings)
    if not cut:
        message = f"tenant {args.tenant}: fewer than 256 records are past retention; nothing to do"
        print(json.dumps({"tenant_id": args.tenant, "cut": 0}) if args.json else message)
        return EXIT_OK
    keyring, _ = _trusted_keys(settings)
    outcome = retain(settings, args.tenant, cut, keyring, wait_seconds=args.wait)
    if args.json:
        print(json.dumps(outcome.report()))
        return EXIT_OK
    where = f"tenant {args.tenant}: retention of records 1..{cut}"
    if outcome.statement_seq is None:
        print(f"{where} sent, not chained and stored within {args.wait:.0f} s (is the worker "
              "and sink running?); nothing deleted: run the same command again")  # fmt: skip
    elif outcome.deleted is None:
        print(f"{where} recorded at seq {outcome.statement_seq}; `authtrail up` owns the "
              "store read-only: stop it and run the same command again to delete")  # fmt: skip
    else:
        print(f"{where} recorded at seq {outcome.statement_seq}; {outcome.deleted} records "
              f"deleted (checkpoints and tiles kept)")  # fmt: skip
    return EXIT_OK
