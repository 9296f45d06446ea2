"""The newcomer's path: ``authtrail up --demo``, then ``sql`` and ``verify`` from a second
process while it runs, Ctrl-C, and a second ``up`` that continues every chain although the
in-memory broker lost everything.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.broker_fixtures import log_tail, wait_for_log_text

pytestmark = pytest.mark.integration

STORED = re.compile(r"stored (\d+) records, (\d+) checkpoints")


def _up(data_dir: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data_dir), "up",
             "--front-port", "0", "--console-listen", "127.0.0.1:0", *extra],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _cli(data_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data_dir), *arguments],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _wait_stored(log: Path, process: subprocess.Popen[bytes], records: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = [tuple(map(int, m)) for m in STORED.findall(log.read_text(errors="replace"))]
        if counts and counts[-1][0] >= records and counts[-1][1] > 0:
            return
        assert process.poll() is None, log_tail(log)
        time.sleep(0.5)
    raise AssertionError(f"fewer than {records} records stored in time\n{log_tail(log)}")


def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
    try:
        assert process.wait(60) == 0, log_tail(log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def _children_gone(log: Path) -> None:
    port = re.search(r"broker \(in memory\) on 127\.0\.0\.1:(\d+)", log.read_text()).group(1)
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        assert f"127.0.0.1:{port}" not in command, f"broker left running: {command}"


def _front_needs_the_announced_token(data_dir: Path, log: Path) -> None:
    """The endpoint file (mode 0600) and the banner carry the analyst token; without it
    the front answers 403."""
    endpoint = data_dir / "clickhouse.endpoint"
    assert stat.S_IMODE(endpoint.stat().st_mode) == 0o600
    url = urlsplit(json.loads(endpoint.read_text())["url"])
    assert url.username == "analyst" and url.password
    assert f"analyst token: {url.password}" in log.read_text()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{url.port}/?query=SELECT+1", timeout=10)
    assert refused.value.code == 403


def _ingest_http_reaches_the_store(data_dir: Path, log: Path, token: str) -> None:
    """With a token file, `up` serves ingest-http: a posted event is stored."""
    found = re.search(r"ingest-http \(bearer tokens of the token file\): (\S+)/v1/ingest/",
                      log.read_text())  # fmt: skip
    assert found, log_tail(log)
    event = {"event_id": "http:1", "event_type": "LOGIN", "outcome": "SUCCESS",
             "occurred_at": time.time_ns() // 1000, "user_name": "alice"}  # fmt: skip
    request = urllib.request.Request(
        f"{found[1]}/v1/ingest/events", data=json.dumps(event).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
    query = "SELECT tenant_id, user_name FROM events WHERE event_id = 'http:1'"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = _cli(data_dir, "sql", "--format", "json", query).stdout.splitlines()
        if rows:
            assert json.loads(rows[0]) == {"tenant_id": "via-http", "user_name": "alice"}
            return
        time.sleep(1)
    raise AssertionError(f"the posted event was not stored\n{log_tail(log)}")


def test_up_demo_query_verify_stop_and_continue(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first_log = tmp_path / "up-1.log"
    created = _cli(data_dir, "ingest-token", "svc", "--tenant", "via-http", "--sources", "events")
    assert created.returncode == 0, created.stderr
    up = _up(data_dir, first_log, "--demo", "--rate", "400", "--ingest-listen", "127.0.0.1:0")
    try:
        wait_for_log_text(first_log, "Ctrl-C stops everything", up, timeout=60)
        _front_needs_the_announced_token(data_dir, first_log)
        _wait_stored(first_log, up, records=300, timeout=90)

        # A second process gets in through the running process's HTTP front.
        query = "SELECT tenant_id, count() AS n, max(seq) AS last FROM events GROUP BY 1"
        counts = _cli(data_dir, "sql", "--format", "json", query)
        assert counts.returncode == 0, counts.stderr
        rows = [json.loads(line) for line in counts.stdout.splitlines()]
        assert rows and all(int(row["n"]) == int(row["last"]) for row in rows)
        refused = _cli(data_dir, "sql", "DROP TABLE events")
        assert refused.returncode == 2 and "read-only" in refused.stderr
        verified = _cli(data_dir, "verify", "--json")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        report = json.loads(verified.stdout)
        assert report["tenants"] and report["store_damage"] == []
        assert all(result["damage"] is None for result in report["tenants"])
        status = _cli(data_dir, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert {row["tenant_id"] for row in json.loads(status.stdout)["tenants"]} >= {
            row["tenant_id"] for row in rows
        }
        # loadgen from a second terminal finds the running broker too.
        sent = _cli(data_dir, "loadgen", "--count", "300", "--rate", "0", "--json")
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["acknowledged"] == 300
        _ingest_http_reaches_the_store(data_dir, first_log, created.stdout.strip())
    finally:
        _stop(up, first_log)
    _children_gone(first_log)
    assert not (data_dir / "clickhouse.endpoint").exists()
    # A clean stop signs every open batch and stores the checkpoints before exiting.
    # An auditor with the key pinned, their own state and the publication `up` wrote.
    audit = ("--key", str(data_dir / "keys" / "authtrail.pub"), "--state",
             str(tmp_path / "audit.json"), "--published", str(data_dir / "published"))  # fmt: skip
    first_audit = _cli(data_dir, "verify", "--json", *audit)
    assert first_audit.returncode == 0, first_audit.stdout + first_audit.stderr
    report = json.loads(first_audit.stdout)
    results = report["tenants"]
    assert results and all(r["signed_size"] == r["records"] for r in results), results
    assert report["store_damage"] == [] and "warning" not in first_audit.stderr
    published = {path.name for path in (data_dir / "published" / "checkpoints").iterdir()}
    assert published == {r["tenant_id"] for r in results}

    # The broker kept everything in memory: a new `up` must continue the chains anyway.
    second_log = tmp_path / "up-2.log"
    up = _up(data_dir, second_log, "--demo", "--rate", "400")
    try:
        wait_for_log_text(second_log, "given the", up, timeout=60)
        _wait_stored(second_log, up, records=300, timeout=90)
    finally:
        _stop(up, second_log)
    gapless = _cli(data_dir, "sql", "--format", "json",
                   "SELECT count() = max(seq) AND uniqExact(seq) = count() AS ok "
                   "FROM events GROUP BY tenant_id")  # fmt: skip
    assert gapless.returncode == 0, gapless.stderr
    assert all(json.loads(line)["ok"] for line in gapless.stdout.splitlines())
    verified = _cli(data_dir, "verify", *audit)  # the log grew: the state's anchors hold
    assert verified.returncode == 0, verified.stdout + verified.stderr
