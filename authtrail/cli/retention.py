"""``authtrail retain``: delete a tenant's records past retention, recorded in its own log.

docs/PRIVACY.md ("Retention") explains the operation; :mod:`authtrail.retention` does it.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from authtrail.errors import ConfigurationError
from authtrail.settings import Settings

EXIT_OK, EXIT_DAMAGE, EXIT_USAGE = 0, 1, 2
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def add_retention_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``retain`` to ``commands`` (subparsers)."""
    retain = commands.add_parser(
        "retain",
        help="delete a tenant's oldest records under a signed retention statement",
        description="Sign a retention statement (TENANT's records before SEQ, or older than "
        "DAYS, may go; the cut is rounded down to a multiple of 256 so that stored tiles stand "
        "in for them), send it to the events topic for the worker to chain, then delete those "
        "records from the store. Checkpoints and tiles stay: retained records and checkpoints "
        "keep verifying and proving, and `verify` reports the range as pruned. Repeat the "
        "same command to finish an interrupted run. TENANT may name a rejection log, "
        "authtrail-rejected-<partition> (refused input as sent, dated by when it was "
        "rejected): its statement goes to that partition and its rows from rejected. --all "
        "does this for every tenant and rejection log with retention_days in the privacy "
        "policy file (and finishes deletions left pending); "
        "with --every it keeps doing so, a service whose failed runs are reported and "
        "retried, never fatal. `authtrail up` runs this itself on its own store "
        "(--retention-every); a retain from another terminal records the statement and "
        "leaves the deletion to it. Exit 0 when done or waiting for a next run, 1 when a "
        "tenant does not verify (it is not pruned), 2 on usage or store errors or another "
        "failure. Needs the signing key, and for the deletion a store connection that may "
        "mutate events and rejected: the retention user init-db creates, or an "
        "administrator (not the writer, analyst or auditor). See docs/PRIVACY.md.",
    )
    whom = retain.add_mutually_exclusive_group(required=True)
    whom.add_argument("--tenant", help="the tenant id, or a rejection log's name")
    whom.add_argument(
        "--all", action="store_true",
        help="every tenant of the store whose retention_days (privacy policy file) is set",
    )  # fmt: skip
    which = retain.add_mutually_exclusive_group()
    which.add_argument("--before", type=int, metavar="SEQ", help="delete records before SEQ")
    which.add_argument(
        "--older-than", type=int, metavar="DAYS",
        help="delete the records before the first one that occurred within DAYS days "
        "(default: the tenant's retention_days in the privacy policy file)",
    )  # fmt: skip
    retain.add_argument(
        "--every", type=parse_duration, metavar="DURATION",
        help="run again every DURATION (e.g. 3600, 90s, 30m, 1h, 1d) until SIGTERM or "
        "Ctrl-C, which end it with exit 0; a failed run is reported and retried next time",
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
    from authtrail.retention import cut_older_than, retention_days
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
    backend = open_backend(settings, read_only=True)
    try:
        return cut_older_than(backend, args.tenant, days, time.time_ns() // 1000)
    finally:
        backend.close()


def retain_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.all and (args.before is not None or args.older_than is not None):
        raise ConfigurationError(
            "--all takes each tenant's retention_days from the privacy policy file "
            "(AUTHTRAIL_PRIVACY_POLICY_FILE); --before and --older-than go with --tenant"
        )
    if args.every is None:
        return _retain_once(args, settings, lambda: False)
    from authtrail.sinks.service import running_endpoint

    if not settings.clickhouse_url and running_endpoint(settings):
        raise ConfigurationError(
            f"`authtrail up` owns the store in {settings.data_dir} and prunes it itself "
            "(up --retention-every); --every is for a ClickHouse server (--clickhouse-url)"
        )
    return _repeat(args, settings)


def _repeat(args: argparse.Namespace, settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; a run that fails is said on stderr and retried."""
    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    while not stop.is_set():
        try:
            _retain_once(args, settings, stop.is_set)
        except Exception as exc:  # the store, the broker, a key: said, retried next time
            print(f"authtrail retain: FAILED, retried in {args.every:g} s: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)  # fmt: skip
        stop.wait(args.every)
    return EXIT_OK


def _retain_once(args: argparse.Namespace, settings: Settings, stop: Callable[[], bool]) -> int:
    if args.all:
        return _retain_all(args, settings, stop)
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
        print(json.dumps(outcome.report()), flush=True)
        return EXIT_OK
    where = f"tenant {args.tenant}: retention of records 1..{cut}"
    if outcome.statement_seq is None:
        print(f"{where} sent, not chained and stored within {args.wait:.0f} s (is the worker "
              "and sink running?); nothing deleted: run the same command again")  # fmt: skip
    elif outcome.deleted is None:
        print(f"{where} recorded at seq {outcome.statement_seq}; `authtrail up` owns the "
              "store and deletes on its next retention run (up --retention-every)")  # fmt: skip
    else:
        print(f"{where} recorded at seq {outcome.statement_seq}; {outcome.deleted} records "
              f"deleted (checkpoints and tiles kept)")  # fmt: skip
    return EXIT_OK


def _retain_all(args: argparse.Namespace, settings: Settings, stop: Callable[[], bool]) -> int:
    """Every tenant with a retention period: exit 1 when one does not verify, 2 when
    another failed, else 0."""
    from authtrail.cli.verify import _trusted_keys
    from authtrail.retention import RetentionOutcome, retain_in_store
    from authtrail.retention_schedule import retention_pass
    from authtrail.sinks.service import open_backend, running_endpoint

    keyring, _ = _trusted_keys(settings)
    # While `up` owns the embedded store, this records statements and `up` deletes.
    delete = bool(settings.clickhouse_url) or not running_endpoint(settings)
    backend = open_backend(settings, read_only=not delete)

    def prune(tenant_id: str, cut: int) -> RetentionOutcome:
        return retain_in_store(settings, backend, tenant_id, cut, keyring,
                               wait_seconds=args.wait, stop=stop, delete=delete)  # fmt: skip

    try:
        results = retention_pass(settings, backend, prune, stop=stop)
    finally:
        backend.close()
    if args.json:
        print(json.dumps({"tenants": [result.report() for result in results]}), flush=True)
    elif not results:
        print("no tenant of the store has retention_days in the privacy policy file "
              f"({settings.privacy_policy_file}); nothing to do", flush=True)  # fmt: skip
    for result in results if not args.json else ():
        print(result.line(), flush=True)
    if any(result.damaged for result in results):
        return EXIT_DAMAGE
    return EXIT_USAGE if any(result.error for result in results) else EXIT_OK


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``1.5h`` or ``1d`` (more than 0)."""
    match = re.fullmatch(r"(\d+(?:\.\d*)?)([smhd]?)", text)
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]] if match else 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a positive number of seconds, or with s, m, h or d"
        )
    return seconds
