"""Run one benchmark function in a fresh interpreter: ``python -m benchmarks.isolated``.

Each micro-benchmark gets a process of its own, so one's memory, threads, JIT-less
warm-up or chdb data directory (one per process) cannot skew another's.
``python -m benchmarks.isolated MODULE:FUNCTION KWARGS_JSON OUT_JSON`` calls the function
with the keyword arguments and writes its JSON-serialisable result to ``OUT_JSON``.
"""

from __future__ import annotations

import importlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from benchmarks.procs import json_result, start_python, stop_group


def run_isolated(
    function: str, kwargs: dict[str, Any], work_dir: Path, timeout: float
) -> dict[str, Any]:
    """Call ``module:function(**kwargs)`` in a child process; return its result.

    Raises RuntimeError (with the child's log) when it fails or exceeds ``timeout`` s.
    """
    name = function.replace(":", ".").rsplit(".", 1)[-1]
    out = work_dir / f"{name}.json"
    log = work_dir / f"{name}.log"
    process = start_python(
        ["-m", "benchmarks.isolated", function, json.dumps(kwargs), str(out)], log
    )
    try:
        return json_result(process, out, log, timeout, function)
    finally:
        stop_group(process, signal.SIGKILL)  # grandchildren too, whatever happened


def main(argv: list[str]) -> int:
    target, kwargs_json, out = argv
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(**json.loads(kwargs_json))
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
