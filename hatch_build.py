"""Build hook: compiles the C extensions: the worker's per-event decode, leaf and hashes,
and the sink's rewriting of chained records as ClickHouse Native blocks.

They only speed things up (their C files say what they replace), so a machine that cannot
build them still gets a working install with a warning: without a C compiler, pure
Python at ~1.5x the worker's CPU per event and Avro containers for the store (~2 µs a
row more); without OpenSSL's headers (libssl-dev), only ``_hashing`` is missing and
hashlib hashes (~10 % more CPU per event).
``AUTHTRAIL_REQUIRE_SPEEDUPS=1`` makes a failed compile fail the build instead (the Docker
image sets it). An editable install builds the modules next to their sources, where the
repository's ``authtrail`` package finds them; a wheel carries them as artifacts.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# Module name -> what its compile links besides Python.
EXTENSIONS = {"_speedups": (), "_hashing": ("-lcrypto",), "_native_rows": ()}


def compile_extension(root: Path, name: str, target: Path) -> None:
    """Compile ``authtrail/<name>.c`` under ``root`` into the shared library ``target``;
    CalledProcessError or OSError when it cannot be."""
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    command = [
        *compiler,
        "-shared",
        "-fPIC",
        "-O2",
        "-std=c11",
        "-Wall",
        f"-I{sysconfig.get_paths()['include']}",
        str(root / "authtrail" / f"{name}.c"),
        "-o",
        str(target),
        *EXTENSIONS[name],
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        for name in EXTENSIONS:
            file_name = name + suffix
            in_place = root / "authtrail" / file_name
            target = in_place if version == "editable" else Path(tempfile.mkdtemp()) / file_name
            try:
                compile_extension(root, name, target)
            except (OSError, subprocess.CalledProcessError) as exc:
                detail = getattr(exc, "stderr", "") or str(exc)
                message = f"authtrail: C extension {name} not built, Python stands in: {detail}"
                if os.environ.get("AUTHTRAIL_REQUIRE_SPEEDUPS") == "1":
                    raise RuntimeError(message) from exc
                print(message, file=sys.stderr)
                continue
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
            if version != "editable":
                build_data["force_include"][str(target)] = f"authtrail/{file_name}"
