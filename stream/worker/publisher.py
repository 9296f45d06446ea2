"""The worker's output producer: enqueue a whole batch, then wait once for its deliveries.

:class:`~authtrail.stream.worker.sequencing.SequencerWorker` publishes up to a few thousand records
per input batch. Sending them through Faust (one ``Topic.send`` awaited per record) cost ~750 µs of
CPU per event in the worker and, because every await let aiokafka send what it had, about
one produce request per record, which cost the broker ~150-190 µs each
(docs/PERFORMANCE.md). Here records are handed to librdkafka without waiting; it batches
them per partition (``linger.ms``) and :meth:`KafkaPublisher.flush` waits once, off the
event loop, until every one is acknowledged.

The producer is idempotent with ``acks=all``: librdkafka's retries can neither duplicate
nor reorder records within a partition, which the chains (seq order) rely on. Delivery
reports of the roles in ``tracked`` give the offsets acknowledged (where a snapshot
stands, :mod:`authtrail.stream.worker.snapshotter`); the others are reported on failure only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from authtrail.errors import AuthtrailError

_LOG = logging.getLogger(__name__)

#: librdkafka settings every output producer has; callers may add to them, not weaken them.
BASE_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,  # implies acks=all and at most 5 requests in flight
    "acks": "all",
    # A whole agent batch (2 000 inputs, up to 3 outputs each) must fit without waiting.
    "queue.buffering.max.messages": 1_000_000,
    "batch.size": 1_000_000,
    # Outputs are read by the sink on the same machine or network; CPU is the scarce part.
    "compression.type": "none",
}


class PublishError(AuthtrailError):
    """A record could not be enqueued or was not acknowledged; nothing after it is safe."""


class KafkaPublisher:
    """Publishes to the topics of ``topics`` (role -> topic name) with one librdkafka producer.

    ``linger_ms``: how long librdkafka may hold records to fill a request while a batch is
    being produced; :meth:`flush` sends at once whatever the linger (measured: one record
    flushed in ~0.5 ms with linger 1 to 200 ms). ``config``: further librdkafka settings
    (e.g. short timeouts in tests). Not thread-safe: one event loop uses it, and the
    worker's lock keeps publishing and flushing apart.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Mapping[str, str],
        *,
        linger_ms: float = 20.0,
        config: Mapping[str, Any] | None = None,
        tracked: Iterable[str] = (),
    ) -> None:
        self._topics = dict(topics)
        self._tracked = {self._topics[role]: role for role in tracked}
        # (role, partition) -> (first, last) offset acknowledged since take_acknowledged()
        self._acknowledged: dict[tuple[str, int], tuple[int, int]] = {}
        self._failures: list[str] = []
        self._reports_lock = threading.Lock()  # delivery callbacks run in the flushing thread
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "linger.ms": linger_ms,
                **(config or {}),
                **BASE_CONFIG,
                "on_delivery": self._on_delivery,
                "error_cb": self._on_error,
            }
        )
        self._closed = False

    def publish(self, role: str, key: bytes | None, value: bytes, partition: int) -> None:
        """Enqueue one record for topic ``role`` and ``partition``; never waits for the broker.

        Requires ``role`` to be one of the configured roles. A record that cannot be
        enqueued (e.g. larger than ``message.max.bytes``) is recorded as a failure that
        the next :meth:`flush` raises, so callers handle every failure in one place.
        """
        topic = self._topics[role]
        while True:
            try:
                self._producer.produce(topic, value, key, partition=partition)
                return
            except BufferError:
                # The local queue is full: let librdkafka deliver some (serves callbacks).
                self._producer.poll(0.05)
            except (KafkaException, TypeError, ValueError) as exc:
                self._record(f"{topic}[{partition}]: cannot enqueue: {exc}")
                return

    async def flush(self) -> None:
        """Wait until every record enqueued so far is acknowledged by the broker.

        Raises :class:`PublishError` naming the first failure when any record since the
        previous flush was not delivered (librdkafka gave up after ``message.timeout.ms``
        or the error is not retriable), or a fatal producer error occurred.
        """
        remaining = 0
        if len(self._producer):  # records or delivery reports still queued
            # flush() blocks (it also serves the delivery callbacks): keep the loop running.
            remaining = await asyncio.get_running_loop().run_in_executor(None, self._producer.flush)
        with self._reports_lock:
            failures, self._failures = self._failures, []
        if remaining:
            failures.append(f"{remaining} records still undelivered after flush")
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise PublishError(f"publish failed: {failures[0]}{more}")

    def close(self) -> None:
        """Deliver what is queued (up to 30 s) and release the producer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        remaining = self._producer.flush(30)
        if remaining:
            _LOG.error("closing the output producer with %d records undelivered", remaining)
        self._producer.close()

    def take_acknowledged(self) -> dict[tuple[str, int], tuple[int, int]]:
        """``(role, partition) -> (first, last)`` offsets of the tracked roles acknowledged
        since the previous call (complete for everything enqueued before the last flush)."""
        with self._reports_lock:
            acknowledged, self._acknowledged = self._acknowledged, {}
        return acknowledged

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            where = f"{message.topic()}[{message.partition()}]"
            self._record(f"{where}: {error.str()}")
            return
        role = self._tracked.get(message.topic() or "")
        partition, offset = message.partition(), message.offset()
        if role is None or partition is None or offset is None:
            return
        key = (role, partition)
        with self._reports_lock:
            first, last = self._acknowledged.get(key, (offset, offset))
            self._acknowledged[key] = (min(first, offset), max(last, offset))

    def _on_error(self, error: KafkaError) -> None:
        # Connection trouble is retried by librdkafka and surfaces, if it lasts, as failed
        # deliveries; a fatal error (e.g. the idempotent producer was fenced) never heals.
        if error.fatal():
            self._record(f"fatal producer error: {error.str()}")
        else:
            _LOG.warning("output producer: %s", error.str())

    def _record(self, failure: str) -> None:
        with self._reports_lock:
            self._failures.append(failure)
