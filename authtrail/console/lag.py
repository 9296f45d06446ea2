"""Pipeline lag for the web console: produced vs sequenced vs stored, sampled over time.

* produced: messages on the events topic (sum of its partitions' high watermarks; an
  envelope counts once, however many events it packs);
* sequenced: messages on the chained topic (a chained batch of many records counts once,
  as does each rejection);
* stored: rows in ``events`` plus ``rejected``.

The three count different things, so they need not meet; what the chart shows is whether
the later stages keep up with the first. The high watermark is read from a Fetch
response (a consumer assigned at the end), not from ListOffsets, which the local broker
answers too low (authtrail/topics.py). Read-only: the consumer commits nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

_LOG = logging.getLogger(__name__)
_KEPT = 120


@dataclass(frozen=True)
class LagSample:
    at: float  # seconds since the epoch
    produced: int | None
    sequenced: int | None
    stored: int | None


def high_watermarks(bootstrap_servers: str, topic: str, timeout: float = 5.0) -> int:
    """The sum of ``topic``'s partitions' high watermarks (0 for a missing topic).

    Raises RuntimeError when the broker does not tell within ``timeout`` seconds.
    """
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    from authtrail.topics import partition_counts

    partitions = partition_counts(bootstrap_servers, timeout).get(topic, 0)
    if not partitions:
        return 0
    consumer = Consumer({
        "bootstrap.servers": bootstrap_servers, "group.id": "authtrail-console",
        "enable.auto.commit": False, "fetch.wait.max.ms": 20, "log_level": 0,
    })  # fmt: skip
    try:
        wanted = [TopicPartition(topic, index) for index in range(partitions)]
        consumer.assign([TopicPartition(topic, index, OFFSET_END) for index in range(partitions)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            consumer.poll(0.05)
            marks = [consumer.get_watermark_offsets(part, cached=True)[1] for part in wanted]
            if all(mark >= 0 for mark in marks):
                return sum(marks)
        raise RuntimeError(f"no high watermark of {topic} within {timeout:g} s")
    finally:
        consumer.close()


class LagSampler:
    """Samples the three counts every ``interval`` seconds on a daemon thread and keeps
    the last 120. ``produced``/``sequenced`` are None without Kafka (``bootstrap_servers``
    None) or when the broker did not answer; ``stored`` None when the store did not."""

    def __init__(
        self,
        bootstrap_servers: str | None,
        events_topic: str,
        chained_topic: str,
        stored: Callable[[], int],
        interval: float = 5.0,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topics = (events_topic, chained_topic)
        self._stored = stored
        self._interval = interval
        self._samples: deque[LagSample] = deque(maxlen=_KEPT)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error = ""

    @property
    def kafka(self) -> bool:
        return self._bootstrap_servers is not None

    def samples(self) -> list[LagSample]:
        with self._lock:
            return list(self._samples)

    def sample(self) -> LagSample:
        """Take one sample now and keep it."""
        produced = sequenced = stored = None
        errors = []
        if self._bootstrap_servers is not None:
            try:
                produced, sequenced = (
                    high_watermarks(self._bootstrap_servers, topic) for topic in self._topics
                )
            except Exception as exc:  # the broker may be gone; the chart says so
                errors.append(f"Kafka: {exc}")
        try:
            stored = self._stored()
        except Exception as exc:
            errors.append(f"store: {exc}")
        taken = LagSample(time.time(), produced, sequenced, stored)
        with self._lock:
            self._samples.append(taken)
            self.last_error = "; ".join(errors)
        return taken

    def start(self) -> LagSampler:
        self._thread = threading.Thread(target=self._run, name="console-lag", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)
