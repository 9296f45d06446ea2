"""Bad configuration gets one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from authtrail.broker import free_loopback_port
from authtrail.keys import write_key_pair

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, *arguments: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(tmp_path / "data"), *arguments],
        capture_output=True, text=True, timeout=90,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    return result.returncode, result.stderr


def _one_clear_line(stderr: str, *words: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("authtrail: "), stderr
    for word in words:
        assert word in lines[0], stderr


@pytest.fixture
def closed_port() -> str:
    return f"127.0.0.1:{free_loopback_port()}"


def test_unreachable_broker(tmp_path: Path, closed_port: str) -> None:
    write_key_pair(tmp_path / "data" / "keys", "authtrail")
    code, stderr = _run(tmp_path, "worker", "--bootstrap-servers", closed_port)
    assert code == 2
    _one_clear_line(stderr, closed_port)


def test_missing_signing_key(tmp_path: Path, closed_port: str) -> None:
    code, stderr = _run(tmp_path, "worker", "--bootstrap-servers", closed_port)
    assert code == 2
    _one_clear_line(stderr, "authtrail.key")


def test_signing_key_readable_by_others(tmp_path: Path, closed_port: str) -> None:
    key, _ = write_key_pair(tmp_path / "data" / "keys", "authtrail")
    key.chmod(0o644)
    code, stderr = _run(tmp_path, "worker", "--bootstrap-servers", closed_port)
    assert code == 2
    _one_clear_line(stderr, "chmod 600")


def test_corrupt_signing_key(tmp_path: Path, closed_port: str) -> None:
    key, _ = write_key_pair(tmp_path / "data" / "keys", "authtrail")
    key.write_text("PRIVATE+KEY+authtrail+00000000+not-base64!\n")
    code, stderr = _run(tmp_path, "worker", "--bootstrap-servers", closed_port)
    assert code == 2
    _one_clear_line(stderr)
    assert "not-base64" not in stderr  # never echo secret material


def test_wrong_clickhouse_url(tmp_path: Path, closed_port: str) -> None:
    _, public = write_key_pair(tmp_path / "data" / "keys", "authtrail")
    url = f"http://user:s3cret@{closed_port}/authtrail"
    code, stderr = _run(tmp_path, "verify", "--key", str(public), "--clickhouse-url", url)
    assert code == 2
    _one_clear_line(stderr)
    assert "s3cret" not in stderr


def test_missing_verifier_key(tmp_path: Path) -> None:
    code, stderr = _run(tmp_path, "verify")
    assert code == 2
    _one_clear_line(stderr, "authtrail.pub", "--key")
    code, stderr = _run(tmp_path, "verify", "--key", str(tmp_path / "given.pub"))
    assert code == 2
    _one_clear_line(stderr, "given.pub")


def test_bad_setting_in_environment(tmp_path: Path) -> None:
    code, stderr = _run(tmp_path, "status", env={"AUTHTRAIL_PARTITIONS": "many"})
    assert code == 2
    _one_clear_line(stderr, "AUTHTRAIL_PARTITIONS")


def test_sql_error_is_one_line(tmp_path: Path) -> None:
    code, stderr = _run(tmp_path, "sql", "SELECT no_such_column FROM system.one")
    assert code == 2
    _one_clear_line(stderr)


def test_usage_error_exits_2(tmp_path: Path) -> None:
    code, _ = _run(tmp_path, "verify", "--no-such-flag")
    assert code == 2
