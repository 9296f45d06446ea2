"""A product process the fault suite starts, kills, freezes and restarts.

Each runs as ``python -m authtrail.cli ARGS`` in its own process group (so a signal
reaches everything it spawned), its output appended to one log per service. A process
that exits without being told to is restarted by :meth:`Service.supervise`, as a
supervisor (systemd ``Restart=always``, Kubernetes) would — the worker exits by design
when a publish fails — and its exit code is kept, so the report can say so.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.broker_fixtures import REPOSITORY_ROOT, stop_process_group

_LOG = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # seconds between a process's exit and its restart (a supervisor's)
_PR_SET_PDEATHSIG = 1


class Service:
    """One product process (``python -m authtrail.cli ARGS``) under a supervisor.

    :meth:`supervise` restarts it when it exited without being told to; :attr:`exits`
    records those exit codes. One log file per service, appended across restarts.
    """

    def __init__(
        self, name: str, arguments: list[str], environment: dict[str, str], log_dir: Path
    ) -> None:
        self.name = name
        self.arguments = arguments
        self.environment = environment
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exits: list[int] = []
        self._wanted = False
        self._started_at = 0.0
        self._log_offset = 0

    def start(self) -> None:
        """Start the process (it must not be running)."""
        assert self.process is None or self.process.poll() is not None, f"{self.name} runs"
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = _start(self.arguments, self.log_path, self.environment)
        self.starts += 1
        self._wanted = True
        self._started_at = time.monotonic()

    @property
    def age(self) -> float:
        """Seconds since the current process was started."""
        return time.monotonic() - self._started_at

    def running(self) -> bool:
        """True while the current process exists (running or frozen)."""
        return self.process is not None and self.process.poll() is None

    def logged_since_start(self, text: str) -> bool:
        """True if this incarnation of the process has logged ``text``."""
        if not self.log_path.exists():
            return False
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return text.encode() in log.read()

    def stop(self, first_signal: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> bool:
        """Stop on purpose with ``first_signal`` (SIGKILL after ``timeout``).

        Returns True if it exited within ``timeout`` (always, for SIGKILL).
        """
        self._wanted = False
        if self.process is None:
            return True
        taken = stop_process_group(self.process, first_signal, timeout)
        return first_signal == signal.SIGKILL or taken < timeout

    def freeze(self) -> None:
        """SIGSTOP the process group (a long GC pause, a suspended VM); see :meth:`thaw`."""
        if self.running():
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the process group."""
        if self.running():
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGCONT)

    def supervise(self) -> None:
        """Restart the process if it exited on its own (at most once per RESTART_DELAY)."""
        if not self._wanted or self.process is None or self.process.poll() is None:
            return
        if time.monotonic() - self._started_at < RESTART_DELAY:
            return
        self.exits.append(self.process.returncode)
        _LOG.warning("%s exited with %s; restarting", self.name, self.process.returncode)
        self.start()


def _start(
    arguments: list[str], log_path: Path, environment: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``python -m authtrail.cli ARGUMENTS`` in a new process group, output appended to
    ``log_path``, SIGKILLed by the kernel if the suite itself dies (so a killed run leaves
    no worker or sink behind; the suite starts services from its main thread, which is
    the thread PR_SET_PDEATHSIG watches)."""
    child_environment = dict(environment)
    python_path = child_environment.get("PYTHONPATH", "")
    child_environment["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(REPOSITORY_ROOT), python_path) if part
    )
    child_environment["PYTHONUNBUFFERED"] = "1"
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "authtrail.cli", *arguments],
            cwd=REPOSITORY_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=child_environment,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )


def _die_with_parent() -> None:
    """Runs in the child between fork and exec."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
