"""What the analyst views of docs/QUERIES.md cost when they are not materialized.

``python -m benchmarks.views_bench [ROWS]`` (default 2 000 000): a fresh embedded store
with authtrail's tables and views, ``ROWS`` synthetic events generated inside ClickHouse
(10 tenants, 500 users, one event every 1.3 s from 2026-01-01, a fifth of them
LOGIN_FAILED; no chain: only the views' reading is measured), then each question's best
of three wall times in milliseconds. Not part of ``make bench``: run it alone.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.tables import create_statements

_DAY = "tenant_id = 't3' AND {column} >= '2026-01-10 00:00:00' AND {column} < '2026-01-11 00:00:00'"
QUESTIONS = {
    "one tenant, one day, failed logins per user (events)": (
        "SELECT user_name, count() FROM events WHERE event_type = 'LOGIN_FAILED' AND "
        + _DAY.format(column="occurred_at")
        + " GROUP BY user_name"
    ),
    "one tenant, one day, failed logins per user (failed_logins_hourly)": (
        "SELECT user_name, sum(failures) FROM failed_logins_hourly WHERE "
        + _DAY.format(column="hour")
        + " GROUP BY user_name"
    ),
    "top addresses, whole store (failed_logins_hourly)": (
        "SELECT client_ip, sum(failures) AS f FROM failed_logins_hourly "
        "GROUP BY client_ip ORDER BY f DESC LIMIT 10"
    ),
    "volume per tenant, whole store (tenant_volume_hourly)": (
        "SELECT tenant_id, sum(events) FROM tenant_volume_hourly GROUP BY tenant_id"
    ),
    "chain_status": "SELECT * FROM chain_status",
    "lockout_failures of one tenant": "SELECT count() FROM lockout_failures WHERE tenant_id = 't3'",
}


def _fill(store: EmbeddedBackend, rows: int) -> None:
    store.command(f"""INSERT INTO events (event_id, tenant_id, event_type, outcome, occurred_at,
        user_name, client_ip, service, client_id, mfa_factor, attributes, seq)
    SELECT toString(number), concat('t', toString(number % 10)),
        ['LOGIN', 'LOGIN_FAILED', 'TOKEN_ISSUED', 'MFA_FAILURE', 'LOGOUT'][number % 5 + 1],
        if(number % 5 IN (1, 3), 'FAILURE', 'SUCCESS'),
        toDateTime64('2026-01-01 00:00:00', 6, 'UTC') + toIntervalMillisecond(number * 1300),
        concat('u', toString(number % 500)), concat('203.0.113.', toString(number % 250)),
        ['sso', 'vpn', 'sshd'][number % 3 + 1], 'portal', 'totp', map(), intDiv(number, 10) + 1
    FROM numbers({rows})""")


def measure(rows: int) -> dict[str, float]:
    """Best of three wall times, in ms, of each of :data:`QUESTIONS` over ``rows`` events."""
    with tempfile.TemporaryDirectory() as directory:
        store = EmbeddedBackend(Path(directory) / "clickhouse")
        try:
            for statement in create_statements():
                store.command(statement)
            _fill(store, rows)
            times = {}
            for name, sql in QUESTIONS.items():
                best = float("inf")
                for _ in range(3):
                    started = time.perf_counter()
                    store.query_arrow(sql)
                    best = min(best, time.perf_counter() - started)
                times[name] = best * 1000
            return times
        finally:
            store.close()


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    for question, milliseconds in measure(count).items():
        print(f"{milliseconds:8.0f} ms  {question}")
