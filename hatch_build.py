"""Build hook: compiles authtrail/_speedups.c, the worker's per-event decode and leaf in C.

The extension only speeds things up (authtrail/_speedups.c says what it replaces), so a
machine without a C compiler still gets a working install, pure Python at ~1.5x the
worker's CPU per event, with a warning. ``AUTHTRAIL_REQUIRE_SPEEDUPS=1`` makes a
failed compile fail the build instead (the Docker image sets it). An editable install
builds the module next to its source, where the repository's ``authtrail`` package finds
it; a wheel carries it as an artifact.
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

SOURCE = Path("authtrail") / "_speedups.c"


def compile_speedups(root: Path, target: Path) -> None:
    """Compile ``root/SOURCE`` into the shared library ``target``; CalledProcessError or
    OSError when it cannot be."""
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    command = [
        *compiler,
        "-shared",
        "-fPIC",
        "-O2",
        "-std=c11",
        "-Wall",
        f"-I{sysconfig.get_paths()['include']}",
        str(root / SOURCE),
        "-o",
        str(target),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        name = "_speedups" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")
        in_place = root / "authtrail" / name
        target = in_place if version == "editable" else Path(tempfile.mkdtemp()) / name
        try:
            compile_speedups(root, target)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            message = f"authtrail: C speedups not built, the worker runs pure Python: {detail}"
            if os.environ.get("AUTHTRAIL_REQUIRE_SPEEDUPS") == "1":
                raise RuntimeError(message) from exc
            print(message, file=sys.stderr)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(target)] = f"authtrail/{name}"
