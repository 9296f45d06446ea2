"""The layout of README's "Layout" table holds: one import name, the SDK stands alone.

The folders at the top of the repository (stream/, sinks/, producers/, schemas/) are
reached as ``authtrail.<folder>`` through the symlinks in authtrail/; a module importing
one of them by its bare name would load a second copy of it under another name.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_FOLDERS = ("stream", "sinks", "producers", "schemas")
SOURCE_FOLDERS = ("authtrail", *TOP_FOLDERS, "tests", "benchmarks")


def python_files() -> list[Path]:
    """Every Python file once: authtrail/'s symlinks lead back to the top folders."""
    links = [ROOT / "authtrail" / folder for folder in TOP_FOLDERS]
    return [
        path
        for folder in SOURCE_FOLDERS
        for path in sorted((ROOT / folder).rglob("*.py"))
        if not any(link in path.parents for link in links)
    ]


def bare_imports(source: str) -> list[str]:
    """Modules imported by a bare top-folder name (``import stream``, ``from sinks.x``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [name for name in names if name.split(".")[0] in TOP_FOLDERS]
    return found


def test_the_scan_finds_a_bare_import() -> None:
    assert bare_imports(
        "import stream\nfrom sinks.tables import x\nfrom authtrail import sinks"
    ) == [
        "stream",
        "sinks.tables",
    ]


def test_no_module_imports_a_top_folder_by_its_bare_name() -> None:
    files = python_files()
    assert len(files) > 200, "the scan found too few files to mean anything"
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in files
        if (found := bare_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


@pytest.mark.parametrize("folder", TOP_FOLDERS)
def test_each_top_folder_is_a_package_of_authtrail(folder: str) -> None:
    link = ROOT / "authtrail" / folder
    assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve()
    assert (ROOT / folder / "__init__.py").is_file()


def test_the_sdk_loads_nothing_of_the_pipeline() -> None:
    """Importing and using the SDK loads only what authtrail-producer ships (its wheel holds
    authtrail/errors.py, authtrail/schemas/ and authtrail/producers/sdk/, nothing else)."""
    probe = (
        "import json, sys\n"
        "from authtrail.producers.sdk import AuditProducer, new_event\n"
        "from authtrail.schemas.codec import SingleObjectCodec\n"
        "new_event('acme', 'LOGIN_SUCCESS', user_id='u1')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('authtrail', 'faust', 'chdb', 'pyarrow', 'clickhouse_connect', 'aiokafka'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    shipped = ("authtrail.errors", "authtrail.schemas", "authtrail.producers.sdk")
    outside = [
        name
        for name in loaded
        # authtrail._speedups: the full distribution's C reader, which the schemas use
        # when it is installed (test_distributions shows the SDK works without it).
        if name not in ("authtrail", "authtrail.producers", "authtrail._speedups")
        and not any(name == s or name.startswith(s + ".") for s in shipped)
    ]
    assert "authtrail.producers.sdk.producer" in loaded  # the probe did load the SDK
    assert outside == []
