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

CORE_MODULES = [
    "authtrail.errors",
    "stream",
    "stream.canonical",
    "stream.chain",
    "stream.merkle",
    "stream.compact",
    "stream.note",
    "stream.rotation",
    "stream.checkpoint",
    "stream.tenant_directory",
    "stream.sequencer",
    "stream.id_window",
    "stream.snapshot",
    "stream.audit",
    "stream.monitor",
    "stream.auditor_state",
    "stream.cosignature",
    "stream.witness_state",
    "stream.bundle",
    "stream.bundle_format",
    "stream.tree_proofs",
    "stream.tiles",
    "stream.admission",
    "stream.guard",
    "stream.fencing",
    "stream.partitioning",
    "stream.lockout",
    "stream.spray",
    "stream.lockout_policy",
    "stream.decisions",
    "stream.handover",
    "stream.event_time",
    "stream.shredding",
    "stream.retention",
    "producers.spool_format",
    "producers.traffic",
    "producers.envelope",
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
