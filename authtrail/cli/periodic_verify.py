"""``authtrail up`` verifies its own store now and then, so the console shows a verdict.

Each run is ``authtrail verify`` in a child process, exactly as a person would run it from
another terminal: it reads the store through the read-only HTTP front (the endpoint file),
checks the publication directory, keeps an auditor state file (so a truncated, rolled-back
or forked store fails the next run) and writes the JSON report the console's Integrity
page reads. This is the operator checking the demo, not an audit: the verifier key comes
from the data dir being verified, which whoever can edit that dir may have replaced. An
auditor pins the key they were given (README, "Try to cheat").

A run reads the whole store, so the next one waits at least ``interval`` seconds and at
least four times as long as the last one took: on a large store verification never takes
more than a fifth of the time.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from authtrail.settings import Settings

#: How much longer than a run the verifier rests before the next one.
_REST_FACTOR = 4.0
_VERDICTS = {0: "intact", 1: "DAMAGE FOUND"}


def verify_command(settings: Settings, report: Path, state: Path) -> list[str]:
    """The ``authtrail verify`` invocation of one periodic run."""
    command = [sys.executable, "-m", "authtrail.cli", "--data-dir", str(settings.data_dir),
               "verify", "--report-json", str(report), "--state", str(state)]  # fmt: skip
    for key in settings.verifier_key_paths:
        command += ["--key", str(key)]
    if settings.publication_dir is not None:
        command += ["--published", str(settings.publication_dir)]
    return command


class PeriodicVerifier:
    """Runs :func:`verify_command` every ``interval`` seconds (and rests in proportion to a
    run's length) until :meth:`stop`; says when the verdict changes."""

    def __init__(
        self, settings: Settings, interval: float, log_path: Path, say: Callable[[str], None]
    ) -> None:
        data_dir = settings.data_dir
        self.report = data_dir / "verify-report.json"
        self._command = verify_command(settings, self.report, data_dir / "verify-state.json")
        self._interval = interval
        self._log_path = log_path
        self._say = say
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="verify", daemon=True)
        self.last_exit: int | None = None

    def start(self) -> PeriodicVerifier:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            started = time.monotonic()
            exit_code = self._verify_once()
            if exit_code is None:
                return  # stopped meanwhile
            if exit_code != self.last_exit:
                verdict = _VERDICTS.get(exit_code, f"not verified (exit {exit_code})")
                self._say(f"verify: {verdict} (report {self.report}, log {self._log_path})")
                self.last_exit = exit_code
            rest = (time.monotonic() - started) * _REST_FACTOR - self._interval
            if rest > 0 and self._stop.wait(rest):
                return

    def _verify_once(self) -> int | None:
        with self._log_path.open("ab") as log, self._lock:
            if self._stop.is_set():
                return None
            self._process = subprocess.Popen(
                self._command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        exit_code = self._process.wait()
        return None if self._stop.is_set() else exit_code
