"""``authtrail retain --all [--every DURATION]``: every tenant with a retention period.

On the stores of test_retention_store.py (real chdb; acme 701 records, its statement for
records 1..512 chained as record 701 in ``signed``; none in ``none``; globex 120
records), as an operator runs it: a subprocess reading the privacy policy file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from authtrail.sinks.backend import EmbeddedBackend
from authtrail.sinks.retention_store import stored_below
from tests.integration.test_retention_store import CUT, RETENTION_SEQ, _mutate
from tests.integration.test_retention_store import built as built
from tests.integration.test_retention_store import copy as copy

pytestmark = pytest.mark.integration

RETENTION_STATEMENTS = "SELECT count() FROM events WHERE service = 'authtrail-retention'"


def _policy(root: Path, periods: str) -> dict[str, str]:
    path = root / "privacy.json"
    path.write_text(f'{{"retention_days": {periods}}}')
    return {**os.environ, "AUTHTRAIL_PRIVACY_POLICY_FILE": str(path)}


def _retain(data: Path, env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data), "retain", "--all",
         *arguments],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def _count(data: Path, sql: str) -> int:
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        return int(backend.query_arrow(sql).column(0)[0].as_py())


def test_all_prunes_each_tenant_by_its_period(copy: dict[str, Path]) -> None:
    data, pub = copy["signed"], str(copy["pub"])
    # acme: 1 day (every record is from 2023); globex: kept forever despite the default.
    env = _policy(copy["root"], '{"default": 1, "tenants": {"globex": null}}')
    done = _retain(data, env, "--key", pub, "--json")
    assert done.returncode == 0, done.stderr
    (acme,) = json.loads(done.stdout)["tenants"]
    assert (acme["tenant_id"], acme["days"], acme["cut"], acme["error"]) == ("acme", 1, CUT, None)
    assert acme["outcome"] == {"tenant_id": "acme", "cut": CUT, "statement_seq": RETENTION_SEQ,
                               "sent": False, "deleted": CUT}  # fmt: skip
    assert _count(data, "SELECT count() FROM events WHERE tenant_id = 'globex'") == 120
    # Again: nothing to prune, nothing sent (no broker is configured: a send would fail).
    again = _retain(data, env, "--key", pub)
    assert again.returncode == 0, again.stderr
    assert "tenant acme (retention 1 days): records 1..512 already pruned" in again.stdout
    assert _count(data, RETENTION_STATEMENTS) == 1
    verified = subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data), "verify", "--key", pub],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_all_finishes_a_deletion_left_pending_without_a_period(copy: dict[str, Path]) -> None:
    """A `retain --tenant` that could only record (while `up` owned the store) leaves the
    deletion to the schedule, also for a tenant with no period of its own."""
    data, pub = copy["signed"], str(copy["pub"])
    env = _policy(copy["root"], '{"tenants": {"globex": 30}}')  # acme: none
    done = _retain(data, env, "--key", pub)
    assert done.returncode == 0, done.stderr
    assert ("tenant acme (retention no period): retention of records 1..512 already recorded "
            "at seq 701; 512 records deleted") in done.stdout  # fmt: skip
    again = _retain(data, env, "--key", pub, "--json")
    assert [t["tenant_id"] for t in json.loads(again.stdout)["tenants"]] == ["globex"]
    assert _count(data, RETENTION_STATEMENTS) == 1


def test_all_isolates_a_failing_tenant_and_says_why(copy: dict[str, Path]) -> None:
    data, pub = copy["none"], str(copy["pub"])
    env = _policy(copy["root"], '{"default": 1}') | {"AUTHTRAIL_SIGNING_KEY": str(copy["key"])}
    # acme needs a statement sent, and no broker is configured: acme fails, globex
    # (120 records, under 256 past retention) is still looked at; exit 2.
    failed = _retain(data, env, "--key", pub)
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "tenant acme (retention 1 days): FAILED, retried on the next run: retain needs " \
        "--bootstrap-servers" in failed.stdout  # fmt: skip
    assert "tenant globex (retention 1 days): fewer than 256 records" in failed.stdout
    # A damaged tenant is never pruned: exit 1.
    _mutate(data, "ALTER TABLE events UPDATE user_name = 'x' WHERE tenant_id = 'acme' AND seq = 5")
    damaged = _retain(data, env, "--key", pub, "--json")
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    report = {t["tenant_id"]: t for t in json.loads(damaged.stdout)["tenants"]}
    assert report["acme"]["damaged"] and "modified at seq 5" in report["acme"]["error"]
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        assert stored_below(backend, "acme", CUT) == CUT


def test_every_keeps_running_through_failures_until_sigterm(copy: dict[str, Path]) -> None:
    data, pub = copy["none"], str(copy["pub"])
    env = _policy(copy["root"], '{"tenants": {"acme": 1}}')
    log = copy["root"] / "retain.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data), "retain", "--all",
             "--every", "1s", "--key", pub],
            stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while log.read_text().count("FAILED, retried on the next run") < 2:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    with EmbeddedBackend(data / "clickhouse", read_only=True) as backend:
        assert stored_below(backend, "acme", CUT) == CUT


def test_all_refuses_a_single_tenant_cut(copy: dict[str, Path]) -> None:
    env = _policy(copy["root"], '{"default": 1}')
    refused = _retain(copy["signed"], env, "--before", "600")
    assert refused.returncode == 2
    assert "--before and --older-than go with --tenant" in refused.stderr
    bad = _retain(copy["signed"], env, "--every", "soon")
    assert bad.returncode == 2 and "'soon' is not a duration" in bad.stderr
