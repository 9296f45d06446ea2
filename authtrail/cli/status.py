"""``authtrail status``: what the store holds and how far the pipeline is behind.

Per chained log (the ``chain_status`` view): records, how far it is signed, the unsigned
tail and the newest checkpoint's age; rejected input by kind; and per consumer-group
partition the lag (authtrail/lag.py). What the store and Kafka say, not what verify
proved. Kafka is optional: without a known broker, or when it does not answer, the lag
is reported unavailable (``lag_error``) and the rest is shown (exit 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pyarrow as pa

from authtrail.errors import ConfigurationError
from authtrail.settings import Settings

_REJECTED = """
SELECT error_kind, count() AS rejected, max(rejected_at) AS last_rejected_at
FROM rejected GROUP BY error_kind ORDER BY rejected DESC"""


def _chains_sql() -> str:
    # The chain_status view's own SELECT, not its name: works on a store whose views the
    # sink has not created yet, and a redefined view cannot change what status shows.
    from authtrail.sinks.views import CHAIN_STATUS, view_select

    return f"""
SELECT c.*, ifNull(l.lockout_decisions, 0) AS lockout_decisions,
    if(c.newest_checkpoint IS NULL, NULL,
       round((toUnixTimestamp64Micro(now64(6)) - toUnixTimestamp64Micro(c.newest_checkpoint))
             / 1e6, 1)) AS checkpoint_age_seconds
FROM ({view_select(CHAIN_STATUS)}) AS c
LEFT JOIN (SELECT tenant_id, count() AS lockout_decisions FROM events
           WHERE service = 'authtrail-lockout' GROUP BY tenant_id) AS l
    ON c.tenant_id = l.tenant_id
ORDER BY c.tenant_id"""


def read_lag(settings: Settings) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Each pipeline group's lag per partition, or (None, why it is unavailable)."""
    from authtrail.lag import consumer_lags, pipeline_groups
    from authtrail.sinks.service import running_broker

    servers = settings.bootstrap_servers or running_broker(settings)
    if not servers:
        return None, (
            "no Kafka known: give --bootstrap-servers (AUTHTRAIL_BOOTSTRAP_SERVERS) or run "
            "`authtrail up` on this data dir"
        )
    try:
        lags = consumer_lags(servers, pipeline_groups(settings))
    except ConfigurationError as exc:
        return None, str(exc)
    return [lag.as_dict() for lag in lags], None


def _read_store(settings: Settings) -> tuple[pa.Table, pa.Table]:
    from authtrail.sinks.service import open_backend

    backend = open_backend(settings, read_only=True)
    try:
        return backend.query_arrow(_chains_sql()), backend.query_arrow(_REJECTED)
    finally:
        backend.close()


def status_report(
    settings: Settings, store: tuple[pa.Table, pa.Table] | None = None
) -> dict[str, Any]:
    """The whole report as JSON-ready data (``store``: what :func:`_read_store` read).
    Raises StoreError / ConfigurationError when the store cannot be read."""
    from authtrail.cli.output import rows

    tenant_table, rejected_table = store or _read_store(settings)
    tenants, rejected = rows(tenant_table), rows(rejected_table)
    lag, lag_error = read_lag(settings)
    ages = [t["checkpoint_age_seconds"] for t in tenants if t["checkpoint_age_seconds"] is not None]
    summary: dict[str, Any] = {
        "unsigned_records": sum(max(t["unsigned_tail"] or 0, 0) for t in tenants),
        "rejected": sum(int(r["rejected"]) for r in rejected),
        "newest_checkpoint_age_seconds": min(ages) if ages else None,
        "lag": None,
    }
    if lag is not None:
        summary["lag"] = {}
        for item in lag:
            summary["lag"][item["group"]] = summary["lag"].get(item["group"], 0) + item["lag"]
    return {"summary": summary, "tenants": tenants, "rejected": rejected, "lag": lag,
            "lag_error": lag_error}  # fmt: skip


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.cli.output import write_table

    store = _read_store(settings)
    report = status_report(settings, store)
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    summary = report["summary"]
    age = summary["newest_checkpoint_age_seconds"]
    print(f"unsigned records: {summary['unsigned_records']}; rejected input: "
          f"{summary['rejected']}; newest checkpoint: "
          + (f"{age} s ago" if age is not None else "none"))  # fmt: skip
    print("\nchained logs (tenants and rejection logs):")
    write_table(store[0], "table", sys.stdout)
    print("\nrejected input (dead letters), by kind:")
    write_table(store[1], "table", sys.stdout)
    print("\nconsumer lag (records waiting), per partition:")
    if report["lag"] is None:
        print(f"unavailable: {report['lag_error']}")
    else:
        columns = ("group", "topic", "partition", "committed", "end_offset", "lag")
        table = pa.table({name: [item[name] for item in report["lag"]] for name in columns})
        write_table(table, "table", sys.stdout)
    return 0
