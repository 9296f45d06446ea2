"""Rejected input goes after its retention too: a rejection log pruned under a signed
statement chained into the log itself.

The real thing end to end: ``authtrail up`` (local tansu broker, worker subprocess, sink
and chdb in process). 300 messages that are not events reach input partition 0, so its
rejection log ``authtrail-rejected-0`` holds 300 rejections, each with the raw bytes as
sent (clear text, had they held a name). ``retain --tenant authtrail-rejected-0 --before
290`` from a second terminal signs a statement for records 1..256 and sends it to
partition 0; the worker checks it and chains it into the log; ``up``'s retention pass
deletes the rows below the cut. ``verify`` then reports the range pruned (exit 0). A
statement signed by a key nobody trusts is refused into the log as ordinary rejected
input, and prunes nothing.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from authtrail.schemas import AUTH_EVENT, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.stream.core.note import Signer
from authtrail.stream.core.retention import (
    RetentionStatement,
    retention_event,
    sign_retention,
)
from tests.integration.broker_fixtures import log_tail, wait_for_log_text
from tests.integration.test_retention_schedule import _sql
from tests.integration.test_up import _cli, _stop, _up

pytestmark = pytest.mark.integration

LOG = "authtrail-rejected-0"
DELETED = (
    f"retention: tenant {LOG} (retention no period): retention of records 1..256 already "
    "recorded at seq 301; 256 records deleted"
)


def _rejected(data_dir: Path, where: str) -> int:
    rows = _sql(data_dir, f"SELECT count() AS n FROM rejected WHERE chain_tenant_id = '{LOG}' "
                          f"AND {where}")  # fmt: skip
    return int(rows[0]["n"])  # type: ignore[call-overload]


def _retain(data_dir: Path) -> str:
    """``retain`` once the sink has stored, signed and tiled the rejections (it says
    what is missing until then)."""
    deadline = time.monotonic() + 120
    while True:
        result = _cli(data_dir, "retain", "--tenant", LOG, "--before", "290")
        if result.returncode == 0 or time.monotonic() > deadline:
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout
        time.sleep(2)


def test_a_rejection_log_is_pruned_under_a_signed_statement(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "up.log"
    process = _up(data_dir, log, "--verify-every", "0", "--retention-every", "2")
    try:
        wait_for_log_text(log, "retention runs every 2 s", process, 90)
        servers = re.search(r"broker \(in memory\) on (\S+)", log.read_text()).group(1)  # type: ignore[union-attr]
        producer = Producer({"bootstrap.servers": servers})
        for n in range(300):
            producer.produce("authtrail.events", b"not an event: user bob %d" % n, partition=0)
        assert producer.flush(30) == 0

        recorded = _retain(data_dir)
        assert f"tenant {LOG}: retention of records 1..256 recorded at seq 301" in recorded
        wait_for_log_text(log, DELETED, process, 60)
        assert _rejected(data_dir, "seq <= 256") == 0, log_tail(log)
        assert _rejected(data_dir, "seq > 256") == 301 - 256
        statement = _sql(data_dir, f"SELECT seq, reason FROM rejected WHERE chain_tenant_id = "
                                   f"'{LOG}' AND error_kind = 'retention'")  # fmt: skip
        assert [row["seq"] for row in statement] == [301]
        assert "authtrail-retention-v1\n256\n" in str(statement[0]["reason"])

        verified = _cli(data_dir, "verify", "--json")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        report = {t["tenant_id"]: t for t in json.loads(verified.stdout)["tenants"]}
        assert (report[LOG]["pruned_size"], report[LOG]["damage"]) == (256, None)

        # A statement no trusted key signed: refused into the log, nothing pruned.
        stranger = Signer("stranger", bytes(range(32)))
        forged = RetentionStatement(f"authtrail.local/{LOG}", 512, bytes(32), bytes(32), 1)
        event = retention_event(LOG, sign_retention(forged, stranger), forged)
        value = SingleObjectCodec(load_schema(AUTH_EVENT)).encode(event)
        producer.produce("authtrail.events", value, LOG.encode(), partition=0)
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 60
        while _rejected(data_dir, "error_kind = 'forged_retention'") == 0:
            assert time.monotonic() < deadline, log_tail(log)
            time.sleep(1)
        assert _rejected(data_dir, "error_kind = 'retention'") == 1
        assert _rejected(data_dir, "seq > 256") == 301 - 256 + 1
        assert _cli(data_dir, "verify").returncode == 0
    finally:
        _stop(process, log)
