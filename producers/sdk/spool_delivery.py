"""Delivering a spool's records to Kafka: :class:`SpoolDrainer`, the thread behind
``AuditProducer(spool_dir=...)``.

The drainer hands records to librdkafka strictly in spool order and keeps at most
``window`` of them in librdkafka's hands at once, so memory stays bounded however long the
broker is away: the spool on disk is the buffer, not librdkafka's queue. It acknowledges a
record in the spool only when that record *and every record before it* were delivered
(the contiguous prefix), and commits the spool's cursor every ``commit_interval`` seconds
or ``commit_every`` acknowledgements, whichever comes first.

Order per tenant needs two more things from the producer configuration, which
:class:`~authtrail.producers.sdk.producer.AuditProducer` sets: ``enable.idempotence`` (librdkafka's
own retries keep order and do not duplicate) and ``message.timeout.ms=0`` (never give up on a record
while the broker is away — a timed-out record would let later ones overtake it).

Delivery is at-least-once into Kafka: records in flight when the process stops, or
delivered after the last cursor commit, are delivered again by the next drainer on the
spool: at most ``window + commit_every`` records (3 000 by default) per restart. Events
carry their ``event_id`` and the sequencer records a repeated id once — it remembers at
least the last 100 000 ids of the partition, which is why both numbers are kept well below
that — so the chain holds each event exactly once (docs/RELIABILITY.md).

A delivery report with an error other than our own purge is permanent here (librdkafka
retries everything retriable forever under these settings): the drainer *halts* — it sends
nothing more and leaves the failed record and everything after it in the spool — rather
than let later events overtake the failed one. The owner sees :attr:`SpoolDrainer.halt_reason`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from authtrail.producers.sdk.spool import Spool, SpooledRecord

__all__ = ["ReportCallback", "SpoolDrainer"]

_LOG = logging.getLogger(__name__)

#: Called once per delivery report that is not a purge: (event_id, key, error or None).
ReportCallback = Callable[[str, "bytes | None", "KafkaError | None"], None]

_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
_READ_BATCH = 1_000
_IDLE_WAIT = 0.1  # seconds between checks for new records (or for stop) when idle
_PURGE_REPORT_WAIT = 5.0


class SpoolDrainer:
    """Moves records from ``spool`` to Kafka through ``producer`` on a background thread.

    Args:
        spool: an open spool; the drainer reads, acknowledges and commits it, and is the
            only reader. The caller closes it after :meth:`stop`.
        producer: a confluent-kafka ``Producer``; after :meth:`start` only the drainer
            thread may poll it, until :meth:`stop` returns.
        report: told about every delivered or failed record, from the drainer thread.
        window: most records handed to librdkafka and not yet reported; at least 1.
        commit_interval: most seconds between cursor commits while delivering.
        commit_every: most acknowledgements between cursor commits.
    """

    def __init__(
        self,
        spool: Spool,
        producer: Any,
        report: ReportCallback,
        *,
        window: int = 2_000,
        commit_interval: float = 0.2,
        commit_every: int = 1_000,
    ) -> None:
        self._spool = spool
        self._producer = producer
        self._report = report
        self._window = window
        self._commit_interval = commit_interval
        self._commit_every = commit_every
        self._acknowledged_since_commit = 0
        self._lock = threading.Lock()
        self._in_flight: dict[int, str] = {}  # spool index -> event_id, until its report
        self._unproduced: collections.deque[SpooledRecord] = collections.deque()
        self._delivered: set[int] = set()  # reported delivered, not yet acknowledged
        self._next_acknowledgement: int | None = None
        self._halt_reason: str | None = None
        self._stop_at: float | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"authtrail-spool-drainer:{spool.directory}", daemon=True
        )

    @property
    def halt_reason(self) -> str | None:
        """Why the drainer stopped sending (a failed record, a fatal error), or None."""
        return self._halt_reason

    @property
    def in_flight(self) -> int:
        """Records handed to librdkafka without a delivery report yet."""
        return len(self._in_flight)

    def start(self) -> None:
        """Start the drainer thread."""
        self._thread.start()

    def halt(self, reason: str) -> None:
        """Stop handing out records; the first reason given is kept. Safe from any thread."""
        with self._lock:
            if self._halt_reason is not None:
                return
            self._halt_reason = reason
        _LOG.error(
            "delivery from spool %s halted: %s; %d events stay spooled",
            self._spool.directory, reason, self._spool.pending_events,
        )  # fmt: skip

    def stop(self, timeout: float) -> None:
        """Deliver for up to ``timeout`` seconds or until the spool is empty, then stop.

        Records still in flight are purged from librdkafka (they stay in the spool; one the
        broker had already written will be delivered again by the next drainer). The
        cursor is committed. Returns when the thread has ended.
        """
        self._stop_at = time.monotonic() + max(0.0, timeout)
        if self._thread.is_alive():
            self._thread.join(timeout + _PURGE_REPORT_WAIT + 10.0)
        if self._thread.is_alive():  # pragma: no cover - only if librdkafka hangs
            _LOG.error("spool drainer for %s did not stop", self._spool.directory)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        next_commit = time.monotonic() + self._commit_interval
        try:
            while True:
                self._produce()
                self._producer.poll(0.05 if self._in_flight else 0)
                self._acknowledge()
                self._spool.sync_if_due()
                now = time.monotonic()
                if now >= next_commit or self._acknowledged_since_commit >= self._commit_every:
                    self._spool.commit()
                    self._acknowledged_since_commit = 0
                    next_commit = now + self._commit_interval
                if self._stop_at is not None and (
                    self._halt_reason is not None
                    or self._spool.pending_events == 0
                    or now >= self._stop_at
                ):
                    return
                if not self._in_flight and not self._unproduced:
                    if self._halt_reason is None:
                        self._spool.wait_for_unread(_IDLE_WAIT)
                    else:
                        time.sleep(_IDLE_WAIT)
        except Exception as exc:  # the owner learns it through halt_reason, not a dead thread
            _LOG.exception("spool drainer for %s failed", self._spool.directory)
            self.halt(f"spool drainer failed: {exc}")
        finally:
            self._finish()

    def _produce(self) -> None:
        if self._halt_reason is not None:
            return
        room = self._window - len(self._in_flight) - len(self._unproduced)
        if room > 0:
            taken = self._spool.read(min(room, _READ_BATCH))
            if taken and self._next_acknowledgement is None:
                self._next_acknowledgement = taken[0].index
            self._unproduced.extend(taken)
        while self._unproduced:
            spooled = self._unproduced[0]
            record = spooled.record
            with self._lock:
                self._in_flight[spooled.index] = record.event_id
            try:
                self._producer.produce(
                    record.topic,
                    record.value,
                    record.key,
                    on_delivery=partial(self._on_delivery, spooled.index),
                )
            except BufferError:  # librdkafka's queue is full; serving reports frees it
                with self._lock:
                    del self._in_flight[spooled.index]
                return
            except KafkaException as exc:
                with self._lock:
                    del self._in_flight[spooled.index]
                error = exc.args[0] if exc.args else None
                if not isinstance(error, KafkaError):
                    error = KafkaError(KafkaError._FAIL, str(exc))
                self._report(record.event_id, record.key, error)
                self.halt(f"librdkafka refused event {record.event_id!r}: {exc}")
                return
            self._unproduced.popleft()

    def _acknowledge(self) -> None:
        with self._lock:
            if self._next_acknowledgement is None:
                return
            start = next_index = self._next_acknowledgement
            while next_index in self._delivered:
                self._delivered.remove(next_index)
                next_index += 1
            self._next_acknowledgement = next_index
        if next_index != start:
            self._spool.acknowledge(next_index)
            self._acknowledged_since_commit += next_index - start

    def _on_delivery(self, index: int, error: KafkaError | None, message: Any) -> None:
        with self._lock:
            event_id = self._in_flight.pop(index, "?")
            if error is not None and error.code() in _PURGED:
                return  # we purged it at stop: it is still in the spool
            if error is None:
                self._delivered.add(index)
        self._report(event_id, message.key() if message is not None else None, error)
        if error is not None:
            self.halt(f"event {event_id!r} was not delivered: {error.name()}: {error.str()}")

    def _finish(self) -> None:
        try:
            if self._in_flight:
                self._producer.purge(in_queue=True, in_flight=True)
                deadline = time.monotonic() + _PURGE_REPORT_WAIT
                while self._in_flight and time.monotonic() < deadline:
                    self._producer.poll(0.05)
            self._acknowledge()
            self._spool.commit()
        except Exception:
            _LOG.exception("spool drainer for %s could not finish cleanly", self._spool.directory)
