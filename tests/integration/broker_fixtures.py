"""Helpers for integration tests that need the local broker or a worker subprocess.

Plain functions, not pytest fixtures: a test module wraps the ones it needs in a fixture
of the scope it wants, so no fixture appears by import magic::

    @pytest.fixture(scope="module")
    def broker(tmp_path_factory):
        yield from running_broker(tmp_path_factory.mktemp("broker"))
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from authtrail.broker import LocalBroker

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

# librdkafka consumer settings measured to join a group in ~3 s on tansu (~23 s with
# Kafka's defaults). Production keeps the defaults.
TANSU_CONSUMER_SETTINGS: Mapping[str, Any] = {
    "session.timeout.ms": 6000,
    "max.poll.interval.ms": 7000,
    "heartbeat.interval.ms": 1000,
}

_LOG = logging.getLogger(__name__)


def running_broker(log_dir: Path) -> Iterator[LocalBroker]:
    """Yield a started :class:`LocalBroker`; stop it (and check it is gone) afterwards."""
    broker = LocalBroker(log_dir=log_dir).start()
    try:
        yield broker
    finally:
        broker.stop()


def start_python_module(
    module: str,
    arguments: Sequence[str],
    log_path: Path,
    environment: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Run ``python -m module arguments`` in its own process group, output to ``log_path``.

    Its own group lets :func:`stop_process_group` reach every process it spawns, and keeps
    a Ctrl-C in the terminal from reaching it behind the test's back.
    """
    child_environment = dict(os.environ if environment is None else environment)
    python_path = child_environment.get("PYTHONPATH", "")
    child_environment["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(REPOSITORY_ROOT), python_path) if part
    )
    child_environment["PYTHONUNBUFFERED"] = "1"
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", module, *arguments],
            cwd=REPOSITORY_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=child_environment,
            start_new_session=True,
        )


def stop_process_group(
    process: subprocess.Popen[bytes],
    first_signal: signal.Signals = signal.SIGTERM,
    timeout: float = 10.0,
) -> float:
    """Signal ``process``'s group, SIGKILL it if still alive after ``timeout``; reap it.

    Returns the seconds the process took to exit. A Faust worker once ignored SIGTERM
    here, hence the fallback.
    """
    started = time.monotonic()
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, first_signal)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _LOG.warning("pid %d ignored %s; sending SIGKILL", process.pid, first_signal.name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
    return time.monotonic() - started


def process_exists(pid: int) -> bool:
    """True if ``pid`` names a live, non-zombie process."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state letter follows the parenthesised command name; Z = zombie.
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for_log_text(
    path: Path, text: str, process: subprocess.Popen[bytes], timeout: float
) -> float:
    """Wait until ``text`` appears in the log at ``path``; return the seconds waited.

    Raises AssertionError (with the log tail) if the process exits or time runs out.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if path.exists() and text in path.read_text(errors="replace"):
            return time.monotonic() - started
        if process.poll() is not None:
            raise AssertionError(
                f"pid {process.pid} exited with {process.returncode} before logging {text!r}:"
                f"\n{log_tail(path)}"
            )
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged within {timeout:g}s:\n{log_tail(path)}")


def log_tail(path: Path, size: int = 4000) -> str:
    """The last ``size`` bytes of a log file, for assertion messages."""
    if not path.exists():
        return "(no log)"
    data = path.read_bytes()
    return data[-size:].decode("utf-8", errors="replace")


def read_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    expected_count: int,
    timeout: float = 30.0,
) -> list[Any]:
    """Read ``expected_count`` messages from every partition of ``topic`` from the start.

    Assigns partitions directly (no consumer group, so no join delay). Returns the
    confluent-kafka ``Message`` objects in arrival order; stops early at ``timeout``
    seconds, so the caller's count assertion says how many were missing.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "authtrail-test-reader",
            "enable.auto.commit": False,
            "logger": _LOG,
        }
    )
    try:
        consumer.assign(
            [TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(partitions)]
        )
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(messages) < expected_count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                if message.error() is None:
                    messages.append(message)
        return messages
    finally:
        consumer.close()


def unpack_events(value: bytes) -> list[dict[str, Any]]:
    """The auth events of one events-topic message: itself, or its envelope's events."""
    from authtrail.schemas import AUTH_EVENT, EVENT_ENVELOPE
    from authtrail.stream.worker.app import codec

    envelopes, events = codec(EVENT_ENVELOPE), codec(AUTH_EVENT)
    if value[2:10] == envelopes.reader_fingerprint:
        return [events.decode(item) for item in envelopes.decode(value)["events"]]
    return [events.decode(value)]


def read_events(
    bootstrap_servers: str, topic: str, partitions: int, expected_events: int,
    timeout: float = 30.0,
) -> list[tuple[bytes | None, dict[str, Any]]]:  # fmt: skip
    """``(message key, event)`` of the events in ``topic``, bare or in envelopes, in arrival
    order: at least ``expected_events``, or what arrived within ``timeout`` seconds."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap_servers,
                         "group.id": "authtrail-test-reader", "enable.auto.commit": False,
                         "logger": _LOG})  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        found: list[tuple[bytes | None, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        while len(found) < expected_events and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                if message.error() is None:
                    found += [(message.key(), e) for e in unpack_events(message.value() or b"")]
        return found
    finally:
        consumer.close()
