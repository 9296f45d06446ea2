"""The integrity core stays pure: importing it loads no Kafka, Faust or ClickHouse client.

Each module is imported in a fresh interpreter, so one module's imports cannot hide
another's (sigstore-python does the same after a hashing module pulled in a network client).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Folders that are pure as a whole (stream/__init__.py says what each holds): every module
# in them is probed, so a new module cannot join them with an adapter import unnoticed.
PURE_FOLDERS = {"authtrail.stream.core": ROOT / "stream" / "core",
                "authtrail.stream.detection": ROOT / "stream" / "detection"}  # fmt: skip
# Pure modules that live beside adapters, in the worker's folder, the SDK and producers/.
PURE_ELSEWHERE = [
    "authtrail.errors",
    "authtrail.stream",
    "authtrail.stream.worker.admission",
    "authtrail.stream.worker.fencing",
    "authtrail.stream.worker.snapshot",
    "authtrail.stream.worker.shredding",
    "authtrail.stream.worker.log_limit",
    "authtrail.producers.sdk.partitioning",
    "authtrail.producers.sdk.spool_format",
    "authtrail.producers.sdk.envelope",
    "authtrail.producers.sdk.events",
    "authtrail.producers.sdk.sealed_values",
    "authtrail.producers.sdk.sealing",
    "authtrail.producers.sdk",
    "authtrail.producers.traffic",
]
CORE_MODULES = [
    *(
        f"{package}.{path.stem}" if path.stem != "__init__" else package
        for package, folder in PURE_FOLDERS.items()
        for path in sorted(folder.glob("*.py"))
    ),
    *PURE_ELSEWHERE,
]
FORBIDDEN = ["confluent_kafka", "faust", "aiokafka", "clickhouse_connect", "chdb", "pyarrow"]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_adapter_package(module: str) -> None:
    probe = (
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == [], f"{module} pulled in {result.stdout.strip()}"


def test_the_probe_can_see_a_forbidden_import() -> None:
    """Guard the guard: the same probe does report a module that imports an adapter."""
    probe = "import json, sys, fastavro, chdb; print(json.dumps('chdb' in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) is True
