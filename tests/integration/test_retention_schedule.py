"""Retention that runs on its own: ``authtrail up`` prunes its tenants on a schedule.

The real thing end to end: ``up`` (local tansu broker, worker subprocess, sink and chdb in
process) with a privacy policy file giving ``acme`` a retention of 30 days and ``globex``
none. Old events of both arrive; ``up``'s schedule (every 2 s here; a pass that comes
before they are signed and tiled is said and retried) records one signed retention
statement for acme and deletes acme's records below the cut in its own store. Later
passes find nothing to do and chain nothing; ``verify`` from a second process reports
the range pruned (exit 0), and globex is untouched. Then ``retain --tenant globex`` from
a second terminal can only record its statement (``up`` owns the store); ``up``'s next
pass deletes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from authtrail.producers.sdk import AuditProducer, new_event
from tests.integration.broker_fixtures import log_tail, wait_for_log_text
from tests.integration.test_up import _cli, _stop, _up

pytestmark = pytest.mark.integration

BASE = 1_700_000_000_000_000  # November 2023: far past 30 days
PRUNED = "retention: tenant acme (retention 30 days): retention of records 1..256 recorded at seq"


def _sql(data_dir: Path, query: str) -> list[dict[str, object]]:
    result = _cli(data_dir, "sql", "--format", "json", query)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]  # one object a line


def _count(data_dir: Path, where: str) -> int:
    return int(_sql(data_dir, f"SELECT count() AS n FROM events WHERE {where}")[0]["n"])  # type: ignore[call-overload]


def test_up_prunes_tenants_past_their_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "up.log"
    policy = tmp_path / "privacy.json"
    policy.write_text('{"retention_days": {"tenants": {"acme": 30}}}')
    monkeypatch.setenv("AUTHTRAIL_PRIVACY_POLICY_FILE", str(policy))
    process = _up(data_dir, log, "--verify-every", "0", "--retention-every", "2")
    try:
        wait_for_log_text(
            log, "retention runs every 2 s for tenants with retention_days", process, 90
        )
        servers = re.search(r"broker \(in memory\) on (\S+)", log.read_text()).group(1)  # type: ignore[union-attr]
        with AuditProducer(servers, "authtrail.events") as producer:
            for n in range(300):
                for tenant in ("acme", "globex"):
                    at = BASE + n * 10**6
                    event = new_event(tenant, "LOGIN", event_id=f"{tenant}-{n}", occurred_at=at,
                                      user_name=f"user{n}")  # fmt: skip
                    producer.send(event)
        wait_for_log_text(log, PRUNED, process, 180)
        text = log.read_text()
        line = next(line for line in text.splitlines() if PRUNED in line)
        assert line.endswith("; 256 records deleted"), line
        # Later passes find the cut recorded and nothing left below it: they chain nothing.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _count(data_dir, "tenant_id = 'acme'") != 301 - 256:
            time.sleep(1)
        time.sleep(6)  # three more passes
        assert log.read_text().count(PRUNED) == 1, log_tail(log)
        statements = "service = 'authtrail-retention'"
        assert _count(data_dir, f"tenant_id = 'acme' AND {statements}") == 1
        assert _count(data_dir, "tenant_id = 'acme'") == 301 - 256
        assert _count(data_dir, "tenant_id = 'acme' AND seq <= 256") == 0
        assert _count(data_dir, "tenant_id = 'globex'") == 300  # no retention_days: untouched
        assert _count(data_dir, f"tenant_id = 'globex' AND {statements}") == 0

        verified = _cli(data_dir, "verify", "--json")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        report = {t["tenant_id"]: t for t in json.loads(verified.stdout)["tenants"]}
        assert (report["acme"]["pruned_size"], report["acme"]["damage"]) == (256, None)
        assert report["acme"]["signed_size"] >= 301
        assert (report["globex"]["pruned_size"], report["globex"]["damage"]) == (0, None)
        text = _cli(data_dir, "verify", "--tenant", "acme").stdout
        assert "records 1..256 pruned under a signed retention" in text, text

        # A second terminal records globex's retention; up, which owns the store, deletes.
        recorded = _cli(data_dir, "retain", "--tenant", "globex", "--before", "290")
        assert recorded.returncode == 0, recorded.stdout + recorded.stderr
        assert "recorded at seq 301; `authtrail up` owns the store and deletes on its next " \
            "retention run" in recorded.stdout  # fmt: skip
        wait_for_log_text(log, "retention: tenant globex (retention no period): retention of "
                          "records 1..256 already recorded at seq 301; 256 records deleted",
                          process, 60)  # fmt: skip
        assert _count(data_dir, "tenant_id = 'globex'") == 301 - 256
        assert _cli(data_dir, "verify").returncode == 0
    finally:
        _stop(process, log)


def test_retention_every_rejects_a_bad_value(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(tmp_path), "up",
         "--retention-every", "-1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--retention-every must be >= 0" in result.stderr
